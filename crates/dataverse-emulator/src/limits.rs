//! Service protection limits and the cost of work, as Dataverse applies them to each user on each web
//! server: requests and combined execution time over a sliding window, and concurrent requests. Every request
//! costs execution time from a [`CostModel`] and takes that long to answer, so the best throughput any client
//! can reach is computable from the limits and the costs (see the README).
//!
//! An environment runs on one or more web servers behind a load balancer, as Dataverse does on Azure App
//! Service. Each server counts every user's usage on its own and has its own capacity: a user whose requests
//! spread over three servers has three budgets. The balancer pins a client to a server by the
//! `ARRAffinity` cookie it hands out with every answer; a request without it (or with an id no server has)
//! goes to the next server in turn.

use crate::value::group_thousands;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The limits of one web server, per user. Defaults are Dynamics 365's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub requests: u32,
    pub window: Duration,
    pub execution_time: Duration,
    pub concurrent: u32,
    /// The degree of parallelism the server recommends in `x-ms-dop-hint`.
    pub dop_hint: u32,
    /// Requests the web server runs at full speed at once, whoever sends them. Beyond it they share it: with
    /// twice as many in flight each takes twice as long, and counts twice the execution time. Microsoft warns
    /// that sending more parallel requests than `x-ms-dop-hint` recommends degrades performance; this is how
    /// the emulator makes bursting cost what it costs.
    pub capacity: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 6000,
            window: Duration::from_secs(300),
            execution_time: Duration::from_secs(1200),
            concurrent: 52,
            dop_hint: 4,
            capacity: 8,
        }
    }
}

/// What a request costs in execution time: a base, plus a cost per record written and per record read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    pub per_request: Duration,
    pub per_record_written: Duration,
    pub per_record_read: Duration,
}

impl Default for CostModel {
    /// Fitted to Microsoft's published measurements of a Dataverse environment: 491 single-record creates
    /// a minute sent one after another (about 122 ms each), and 8,241 records a minute with CreateMultiple
    /// of 100 (about 0.73 s each) — a base of 115 ms and 6 ms per record written.
    fn default() -> Self {
        CostModel {
            per_request: Duration::from_millis(115),
            per_record_written: Duration::from_millis(6),
            per_record_read: Duration::from_micros(100),
        }
    }
}

impl CostModel {
    /// Work without cost: every request answers as fast as the machine allows.
    pub fn free() -> Self {
        CostModel { per_request: Duration::ZERO, per_record_written: Duration::ZERO, per_record_read: Duration::ZERO }
    }

    pub fn of(&self, work: Work) -> Duration {
        self.per_request + self.per_record_written * work.written + self.per_record_read * work.read
    }
}

/// The records a request wrote and read; handlers attach it to their response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    pub written: u32,
    pub read: u32,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, other: Work) -> Work {
        Work { written: self.written + other.written, read: self.read + other.read }
    }
}

impl Work {
    pub fn written(n: usize) -> Self {
        Work { written: n as u32, read: 0 }
    }
    pub fn read(n: usize) -> Self {
        Work { written: 0, read: n as u32 }
    }
}

/// A request refused by a limit: the 429 Dataverse answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Throttled {
    pub code: &'static str,
    pub message: String,
    pub retry_after: Duration,
}

#[derive(Debug, Default)]
struct Usage {
    requests: VecDeque<Instant>,
    execution: VecDeque<(Instant, Duration)>,
    execution_total: Duration,
    in_flight: u32,
    /// Requests refused in a row: each one lengthens the next `Retry-After`, as Dataverse does with clients
    /// that keep pushing.
    refused_in_a_row: u32,
    /// Requests admitted so far, and the most the window ever held (see [`UsagePeak`]).
    admitted: u64,
    peak_requests: u32,
    peak_execution: Duration,
}

/// What one user did on one web server: requests admitted, and the most requests and execution time its
/// window ever held — which a client that keeps its own account of the window keeps under the limits, but
/// for the execution time of what it had in flight when the window was nearly spent (Dataverse, as the
/// emulator, counts a request's time when it ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePeak {
    pub server: WebServerIndex,
    pub user: Uuid,
    pub admitted: u64,
    pub requests: u32,
    pub execution: Duration,
}

impl Usage {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self.requests.front().is_some_and(|t| now.duration_since(*t) >= window) {
            self.requests.pop_front();
        }
        while let Some((t, cost)) = self.execution.front().copied() {
            if now.duration_since(t) < window {
                break;
            }
            self.execution.pop_front();
            self.execution_total = self.execution_total.saturating_sub(cost);
        }
    }
}

/// One web server: every user's usage on it, and the requests it runs.
#[derive(Debug)]
struct WebServer {
    /// What its `ARRAffinity` cookie carries: 64 hexadecimal digits, as Azure App Service's.
    id: String,
    users: Mutex<HashMap<Uuid, Usage>>,
    /// Requests admitted and not yet answered, of every user.
    running: std::sync::atomic::AtomicU32,
}

/// A web server of the environment, by its position (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WebServerIndex(pub usize);

/// Tracks each user's usage against the limits, on each web server.
#[derive(Debug)]
pub struct Limiter {
    limits: std::sync::RwLock<Limits>,
    servers: Vec<WebServer>,
    /// Requests refused with a 429 so far, on every server, for tests and benchmarks to report.
    refused: std::sync::atomic::AtomicU64,
    /// The next server a request without affinity goes to.
    next: std::sync::atomic::AtomicUsize,
}

/// A request admitted under the limits. Dropping it (when the request ends, or is abandoned) records its
/// execution time and frees its concurrency slot.
pub struct Admission {
    limiter: Arc<Limiter>,
    server: WebServerIndex,
    user: Uuid,
    cost: Duration,
    pub remaining_requests: u32,
    pub remaining_execution: Duration,
}

impl Admission {
    /// The execution time to record for the request.
    pub fn set_cost(&mut self, cost: Duration) {
        self.cost = cost;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let server = &self.limiter.servers[self.server.0];
        server.running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let mut users = server.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(usage) = users.get_mut(&self.user) {
            usage.in_flight = usage.in_flight.saturating_sub(1);
            usage.execution.push_back((Instant::now(), self.cost));
            usage.execution_total += self.cost;
            usage.peak_execution = usage.peak_execution.max(usage.execution_total);
        }
    }
}

fn seconds_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

impl Limiter {
    /// One web server.
    pub fn new(limits: Limits) -> Arc<Self> {
        Self::with_web_servers(limits, 1, Uuid::nil())
    }

    /// `count` web servers (at least one), each with these limits and capacity of its own. Their ids derive
    /// from `environment` and their position, so that a client's affinity cookie stays valid across restarts.
    pub fn with_web_servers(limits: Limits, count: usize, environment: Uuid) -> Arc<Self> {
        use sha2::Digest;
        let servers = (0..count.max(1))
            .map(|i| WebServer {
                id: format!("{:x}", sha2::Sha256::digest(format!("{environment}/web-server/{i}"))),
                users: Mutex::new(HashMap::new()),
                running: std::sync::atomic::AtomicU32::new(0),
            })
            .collect();
        Arc::new(Limiter {
            limits: std::sync::RwLock::new(limits),
            servers,
            refused: std::sync::atomic::AtomicU64::new(0),
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// How many web servers the environment runs on.
    pub fn web_servers(&self) -> usize {
        self.servers.len()
    }

    /// The id a server's `ARRAffinity` cookie carries.
    pub fn web_server_id(&self, server: WebServerIndex) -> &str {
        &self.servers[server.0].id
    }

    /// The server a request goes to: the one its `ARRAffinity` cookie names, else the next in turn.
    pub fn route(&self, affinity: Option<&str>) -> WebServerIndex {
        if let Some(i) = affinity.and_then(|id| self.servers.iter().position(|s| s.id.eq_ignore_ascii_case(id))) {
            return WebServerIndex(i);
        }
        let next = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WebServerIndex(next % self.servers.len())
    }

    /// How long work of `cost` takes, and counts, on `server` with the requests now running there: as long as
    /// its cost while the web server runs no more than its capacity, proportionally longer beyond.
    pub fn shared(&self, server: WebServerIndex, cost: Duration) -> Duration {
        let running = self.servers[server.0].running.load(std::sync::atomic::Ordering::Relaxed);
        let capacity = self.limits().capacity.max(1);
        match running > capacity {
            true => cost.mul_f64(f64::from(running) / f64::from(capacity)),
            false => cost,
        }
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the limits of a running emulator: a test sets up its data first, then tightens them.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Every user's usage on every web server so far.
    pub fn peaks(&self) -> Vec<UsagePeak> {
        let mut peaks = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            let users = server.users.lock().unwrap_or_else(|e| e.into_inner());
            peaks.extend(users.iter().map(|(user, usage)| UsagePeak {
                server: WebServerIndex(i),
                user: *user,
                admitted: usage.admitted,
                requests: usage.peak_requests,
                execution: usage.peak_execution,
            }));
        }
        peaks
    }

    /// How many requests were refused with a 429, on every server.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Admits a request of `user` on `server`, or refuses it with the limit it hit there. Concurrency is
    /// checked at once; request count and execution time are checked against what already happened, so a
    /// burst can overshoot them a little before they bite — as in Dataverse.
    pub fn admit(self: &Arc<Self>, server: WebServerIndex, user: Uuid) -> Result<Admission, Throttled> {
        let now = Instant::now();
        let l = self.limits();
        let web_server = &self.servers[server.0];
        let mut users = web_server.users.lock().unwrap_or_else(|e| e.into_inner());
        let usage = users.entry(user).or_default();
        usage.expire(now, l.window);
        let refusal = if usage.in_flight >= l.concurrent {
            Some(Throttled {
                code: "0x80072326",
                message: format!("Number of concurrent requests exceeded the limit of {}.", l.concurrent),
                retry_after: Duration::from_secs(1),
            })
        } else if usage.requests.len() as u32 >= l.requests {
            let oldest = *usage.requests.front().expect("the window is full");
            Some(Throttled {
                code: "0x80072322",
                message: format!(
                    "Number of requests exceeded the limit of {} over time window of {} seconds.",
                    l.requests,
                    l.window.as_secs()
                ),
                retry_after: seconds_up(l.window.saturating_sub(now.duration_since(oldest))),
            })
        } else if usage.execution_total >= l.execution_time {
            // Wait until enough execution time has left the window to get back under the limit.
            let mut freed = Duration::ZERO;
            let excess = usage.execution_total - l.execution_time;
            let mut until = now;
            for (t, cost) in &usage.execution {
                freed += *cost;
                until = *t + l.window;
                if freed > excess {
                    break;
                }
            }
            Some(Throttled {
                code: "0x80072321",
                message: format!(
                    "Combined execution time of incoming requests exceeded limit of {}  milliseconds over time window of {} seconds. \
                     Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                    group_thousands(&l.execution_time.as_millis().to_string()),
                    l.window.as_secs()
                ),
                retry_after: seconds_up(until.saturating_duration_since(now)),
            })
        } else {
            None
        };
        if let Some(mut throttled) = refusal {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            usage.refused_in_a_row += 1;
            if throttled.code != "0x80072326" {
                let penalty = Duration::from_secs(u64::from(usage.refused_in_a_row.saturating_sub(1)));
                throttled.retry_after = (throttled.retry_after + penalty).min(l.window * 2);
            }
            return Err(throttled);
        }
        usage.refused_in_a_row = 0;
        usage.requests.push_back(now);
        usage.admitted += 1;
        usage.peak_requests = usage.peak_requests.max(usage.requests.len() as u32);
        usage.in_flight += 1;
        web_server.running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let remaining_requests = l.requests.saturating_sub(usage.requests.len() as u32);
        let remaining_execution = l.execution_time.saturating_sub(usage.execution_total);
        Ok(Admission {
            limiter: self.clone(),
            server,
            user,
            cost: Duration::ZERO,
            remaining_requests,
            remaining_execution,
        })
    }
}

/// Reads `300s`, `5m`, `250ms`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("'{text}' is not a duration: write it as 300s, 5m, 250ms or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" | "µs" => value / 1_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("'{text}' has an unknown unit '{unit}': use ms, s, m, h or d")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("'{text}' is not a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: WebServerIndex = WebServerIndex(0);

    fn small() -> Limits {
        Limits {
            requests: 3,
            window: Duration::from_secs(60),
            execution_time: Duration::from_secs(2),
            concurrent: 2,
            dop_hint: 1,
            capacity: 8,
        }
    }

    #[test]
    fn concurrency_is_refused_at_once() {
        let limiter = Limiter::new(small());
        let user = Uuid::new_v4();
        let a = limiter.admit(ONE, user).unwrap();
        let _b = limiter.admit(ONE, user).unwrap();
        assert_eq!(limiter.admit(ONE, user).err().unwrap().code, "0x80072326");
        drop(a);
        assert!(limiter.admit(ONE, user).is_ok(), "a finished request frees its slot");
        // Another user has limits of their own.
        assert!(limiter.admit(ONE, Uuid::new_v4()).is_ok());
    }

    #[test]
    fn request_count_is_refused_with_a_growing_retry_after() {
        let limiter = Limiter::new(small());
        let user = Uuid::new_v4();
        for _ in 0..3 {
            drop(limiter.admit(ONE, user).unwrap());
        }
        let first = limiter.admit(ONE, user).err().unwrap();
        assert_eq!(first.code, "0x80072322");
        assert_eq!(first.message, "Number of requests exceeded the limit of 3 over time window of 60 seconds.");
        let second = limiter.admit(ONE, user).err().unwrap();
        assert!(second.retry_after > first.retry_after, "{second:?} after {first:?}");
    }

    #[test]
    fn execution_time_is_refused_once_spent() {
        let limiter = Limiter::new(Limits { requests: 100, ..small() });
        let user = Uuid::new_v4();
        let mut a = limiter.admit(ONE, user).unwrap();
        a.set_cost(Duration::from_millis(2500));
        drop(a);
        let refused = limiter.admit(ONE, user).err().unwrap();
        assert_eq!(refused.code, "0x80072321");
        assert!(
            refused
                .message
                .starts_with("Combined execution time of incoming requests exceeded limit of 2,000  milliseconds")
        );
        assert!(refused.retry_after >= Duration::from_secs(59));
    }

    #[test]
    fn each_web_server_counts_a_user_s_requests_on_its_own() {
        let limiter = Limiter::with_web_servers(small(), 3, Uuid::new_v4());
        let user = Uuid::new_v4();
        let spread: Vec<_> = (0..6).map(|_| limiter.route(None)).collect();
        assert_eq!(spread.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2], "in turn without affinity");
        let second = WebServerIndex(1);
        assert_eq!(limiter.route(Some(limiter.web_server_id(second))), second, "the cookie pins");
        assert_eq!(limiter.route(Some("not-a-server")), WebServerIndex(0), "an unknown id is spread");
        for _ in 0..3 {
            drop(limiter.admit(second, user).unwrap());
        }
        assert_eq!(limiter.admit(second, user).err().unwrap().code, "0x80072322");
        assert!(limiter.admit(WebServerIndex(2), user).is_ok(), "another server has its own count");
        let ids: std::collections::HashSet<_> = (0..3).map(|i| limiter.web_server_id(WebServerIndex(i))).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|id| id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5 minutes").is_err());
    }

    #[test]
    fn cost_adds_up() {
        let cost = CostModel::default().of(Work { written: 100, read: 0 });
        assert_eq!(cost, Duration::from_millis(715));
    }
}
