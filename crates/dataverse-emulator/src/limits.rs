//! Service protection limits and the cost of work, as Dataverse applies them to each user: requests and
//! combined execution time over a sliding window, and concurrent requests. Every request costs execution
//! time from a [`CostModel`] and takes that long to answer, so the best throughput any client can reach is
//! computable from the limits and the costs (see the README).

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

/// Tracks each user's usage against the limits.
#[derive(Debug)]
pub struct Limiter {
    limits: std::sync::RwLock<Limits>,
    users: Mutex<HashMap<Uuid, Usage>>,
    /// Requests refused with a 429 so far, for tests and benchmarks to report.
    refused: std::sync::atomic::AtomicU64,
    /// Requests admitted and not yet answered, of every user.
    running: std::sync::atomic::AtomicU32,
}

/// A request admitted under the limits. Dropping it (when the request ends, or is abandoned) records its
/// execution time and frees its concurrency slot.
pub struct Admission {
    limiter: Arc<Limiter>,
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
        self.limiter.running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let mut users = self.limiter.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(usage) = users.get_mut(&self.user) {
            usage.in_flight = usage.in_flight.saturating_sub(1);
            usage.execution.push_back((Instant::now(), self.cost));
            usage.execution_total += self.cost;
        }
    }
}

fn seconds_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
}

impl Limiter {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Limiter {
            limits: std::sync::RwLock::new(limits),
            users: Mutex::new(HashMap::new()),
            refused: std::sync::atomic::AtomicU64::new(0),
            running: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// How long work of `cost` takes, and counts, with the requests now running: as long as its cost while
    /// the web server runs no more than its capacity, proportionally longer beyond.
    pub fn shared(&self, cost: Duration) -> Duration {
        let running = self.running.load(std::sync::atomic::Ordering::Relaxed);
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

    /// How many requests were refused with a 429.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Admits a request of `user`, or refuses it with the limit it hit. Concurrency is checked at once;
    /// request count and execution time are checked against what already happened, so a burst can
    /// overshoot them a little before they bite — as in Dataverse.
    pub fn admit(self: &Arc<Self>, user: Uuid) -> Result<Admission, Throttled> {
        let now = Instant::now();
        let l = self.limits();
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
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
        usage.in_flight += 1;
        self.running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let remaining_requests = l.requests.saturating_sub(usage.requests.len() as u32);
        let remaining_execution = l.execution_time.saturating_sub(usage.execution_total);
        Ok(Admission { limiter: self.clone(), user, cost: Duration::ZERO, remaining_requests, remaining_execution })
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
        let a = limiter.admit(user).unwrap();
        let _b = limiter.admit(user).unwrap();
        assert_eq!(limiter.admit(user).err().unwrap().code, "0x80072326");
        drop(a);
        assert!(limiter.admit(user).is_ok(), "a finished request frees its slot");
        // Another user has limits of their own.
        assert!(limiter.admit(Uuid::new_v4()).is_ok());
    }

    #[test]
    fn request_count_is_refused_with_a_growing_retry_after() {
        let limiter = Limiter::new(small());
        let user = Uuid::new_v4();
        for _ in 0..3 {
            drop(limiter.admit(user).unwrap());
        }
        let first = limiter.admit(user).err().unwrap();
        assert_eq!(first.code, "0x80072322");
        assert_eq!(first.message, "Number of requests exceeded the limit of 3 over time window of 60 seconds.");
        let second = limiter.admit(user).err().unwrap();
        assert!(second.retry_after > first.retry_after, "{second:?} after {first:?}");
    }

    #[test]
    fn execution_time_is_refused_once_spent() {
        let limiter = Limiter::new(Limits { requests: 100, ..small() });
        let user = Uuid::new_v4();
        let mut a = limiter.admit(user).unwrap();
        a.set_cost(Duration::from_millis(2500));
        drop(a);
        let refused = limiter.admit(user).err().unwrap();
        assert_eq!(refused.code, "0x80072321");
        assert!(
            refused
                .message
                .starts_with("Combined execution time of incoming requests exceeded limit of 2,000  milliseconds")
        );
        assert!(refused.retry_after >= Duration::from_secs(59));
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
