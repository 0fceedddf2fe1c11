//! The throttle-aware request layer every Web API call goes through.
//!
//! Dataverse's service protection limits come in two flavours, and they want different answers:
//! - the **concurrency** limit (`0x80072326`) is refused at once and says "fewer at a time": it is back-pressure,
//!   so the concurrency limit shrinks (AIMD, as Vector's adaptive request concurrency) and the request is retried;
//! - the **request-count** and **execution-time** limits (`0x80072322`, `0x80072321`) say "your budget for this
//!   window is spent, come back in `Retry-After`": any request sent before then is refused too and lengthens the
//!   wait, so every request of that user to that web server pauses, not just the slot that was refused.
//!
//! The concurrency limit starts at one request, jumps to the server's `x-ms-dop-hint` as soon as an answer
//! carries it, and stays under it (Microsoft: sending more than the hint degrades throughput).
//!
//! Rather than learning the window's limits from 429s, the executor keeps its own account of the window
//! ([`Budget`]): it holds every request while the user's requests or execution time in the window are at their
//! share of the limit, so that the server has no reason to refuse one. And since that account says how much
//! of the window is left, it also sends a few requests beyond the hint ([`ExecutorOptions::burst`]) while the
//! window is under its share, with room for one request's time (an answer the server has counted may not have
//! reached the client yet). Dataverse counts a request's execution time when it ends, and admits a request
//! against the window as it is when it arrives: what is in flight when the window fills lands on top of it, as
//! the server allows, and the next request waits until the window is back under its share. Time the flow left
//! idle (between batches, while it read) is spent later rather than lost, and the rate is the limit's: holding
//! the burst back until the window could also take all in flight left a slot idle each time a request left the
//! window. While the limits are assumed rather than known, a burst goes out only with room for all in flight,
//! lest the environment's own limits be lower. A 429 still pauses the client for its
//! `Retry-After` (the model was wrong: another client, other limits) and states the limits, which replace the
//! model's. Until one does, the server's `x-ms-ratelimit-time-remaining-xrm-requests` is its word on what
//! remains: when that, less what the client spent since, leaves nothing for what is in flight, requests go one
//! at a time, so that the first refusal is one, not every request in flight at once.
//!
//! Other clients of the same user (other processes) spend the same budget. The server's
//! `x-ms-ratelimit-time-remaining-xrm-requests` tells of their execution time, after the fact; processes that
//! can talk tell each other more: each publishes its own spending per user and web server
//! ([`Executor::spending`]) and hands the executor what the others published ([`Executor::set_others_spending`]),
//! which each lane counts as spent beside its own, requests and execution time ([`Budget`]). The executor only
//! keeps the numbers: exchanging them is its caller's business (dynsync shares them through its store), and
//! nothing of it waits under the executor's lock.
//!
//! Dataverse counts the limits **per user and per web server**, so the executor keeps one such account, and
//! one concurrency limit, per *lane*: an application user (an app registration: [`Executor::with_users`])
//! on a web server. A load spread over several app registrations, over several servers, has that many
//! budgets. Web servers are told apart as Azure App Service's load balancer tells them apart: by the
//! `ARRAffinity` cookie each answer sets. The client does not keep one cookie, as a browser would (which pins
//! it to one server); it chooses the server for each request, by sending that server's cookie:
//! - a user's first requests go without a cookie, and the first answer names the server they are counted
//!   on — with one server (and behind a server that sets no cookie) that is the only lane, and everything
//!   behaves as with no lanes at all;
//! - once every slot of a user's known lanes is taken while their windows all have room, one request at a time
//!   goes without a cookie (a *probe*): the balancer gives it to the next server in turn, and an answer from a
//!   server not known yet opens a lane on it, seeded at the hint, for every user — a server is the
//!   environment's, whoever found it. Probing stops once three probes a known server (and a few) came back
//!   from servers already known;
//! - each request goes to the lane that can send whose window is least spent: under its limit first, then a
//!   probe, then a burst slot.
//!
//! Routing by cookie rather than counting each answer where it landed is the simpler account: a request is
//! held or sent by the one budget it is counted in, which the client knows before it sends it. Spreading
//! without cookies would leave the client guessing which server's budget the next request spends, and hold
//! (or be refused) by the fullest. The answer's cookie still decides where a request counts: a server taken
//! out of the farm sends its clients elsewhere, with a new cookie. A 429 for the request count or the
//! execution time pauses that lane (that user on that server) until `Retry-After`; the limits its message
//! states hold for every lane. A user whose sign-in is refused is taken out of rotation ([`Executor::retire`])
//! and the others carry its load.
//!
//! It also counts what it did, for [`Metrics`]: attempts, throttles by limit, retries, answers by HTTP status
//! and a histogram of how long the answered attempts took. Counting costs an atomic add or a short lock, so it
//! is always on.

use crate::backoff::Backoff;
use crate::budget::{Budget, LimitStatement, Spending, StatedLimit, WindowLimits};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// How the executor behaves. The defaults suit a production environment.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Requests in flight before the server's `x-ms-dop-hint` is known.
    pub initial_concurrency: usize,
    /// An upper bound on requests in flight, whatever the hint says.
    pub max_concurrency: usize,
    /// Retries of one request after transient failures (5xx, timeouts, dropped connections). Throttled
    /// requests are retried for as long as it takes, since the server said when to come back.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One attempt that takes longer is abandoned and retried. Bulk requests of 1,000 records can take
    /// minutes on a busy environment (the SDK's own default is 4 minutes).
    pub attempt_timeout: Duration,
    /// Requests sent beyond the concurrency limit while the window is under its share (and, while the limits are
    /// assumed, has room for all in flight), as a share of the hint (0.5: two more for a hint of 4). Zero never
    /// goes beyond the limit.
    pub burst: f64,
    /// The window's limits, if known; `None` assumes Dynamics 365's until a 429 states the environment's.
    pub window_limits: Option<WindowLimits>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            initial_concurrency: 1,
            max_concurrency: 52,
            max_retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(240),
            burst: 0.5,
            window_limits: None,
        }
    }
}

/// A snapshot of what the executor has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Attempts sent, retries included.
    pub requests: u64,
    pub throttled_requests: u64,
    pub throttled_execution_time: u64,
    pub throttled_concurrency: u64,
    /// Attempts that were sent again, for any reason (throttled, transient, token renewal).
    pub retries: u64,
    /// 5xx answers, timeouts and dropped connections.
    pub transient_failures: u64,
    /// The current concurrency limit.
    pub concurrency: usize,
    pub in_flight: usize,
    /// The server's `x-ms-dop-hint`, once seen.
    pub dop_hint: Option<usize>,
    /// Times a request waited for the window to have room, by the executor's own account.
    pub held: u64,
    /// Requests sent beyond the concurrency limit, while the window had room for them.
    pub burst_requests: u64,
    /// Requests sent without affinity, to find more web servers.
    pub probes: u64,
    /// The window's limits as the executor knows them.
    pub window_limits: WindowLimits,
    /// Each user on each web server it knows.
    pub lanes: Vec<LaneMetrics>,
    /// Answers received, by HTTP status: one per attempt that got an answer, whatever it said (a 429 or 401
    /// that was retried counts too). Attempts that got none (timeouts, dropped connections) are not here: they
    /// are in `transient_failures`.
    pub responses: BTreeMap<u16, u64>,
    /// How long the attempts that got an answer took, from sending the request to the end of the answer's body.
    pub latency: LatencyHistogram,
}

/// One application user on one web server, as the executor sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneMetrics {
    /// The user's position among the client's registrations.
    pub user: usize,
    /// The server's `ARRAffinity` id, once an answer named it.
    pub web_server: Option<String>,
    /// The user is out of rotation (its sign-in was refused).
    pub retired: bool,
    pub concurrency: usize,
    pub in_flight: usize,
    /// The larger of the window's requests and execution time, as a share of its limit, in thousandths.
    pub window_share_permille: u32,
    /// What other clients of the user spent in the window, as they reported it or the server said it.
    pub others: Spending,
}

/// What one application user spent on one web server over the window: this client's own
/// ([`Executor::spending`]), or other clients' as they reported it ([`Executor::set_others_spending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneSpending {
    /// The user's position among the client's registrations.
    pub user: usize,
    /// The server's `ARRAffinity` id; `None` for a lane no answer named yet (the only server, as far as known).
    pub web_server: Option<String>,
    pub spending: Spending,
    /// How many clients spent it: one for this client's own; for others', each may send more before it is
    /// heard of again, and takes its part of the room the report leaves.
    pub clients: u32,
}

impl Metrics {
    /// The web servers the executor has found, whatever the user.
    pub fn web_servers(&self) -> usize {
        let servers: std::collections::BTreeSet<_> = self.lanes.iter().filter_map(|l| l.web_server.as_ref()).collect();
        servers.len()
    }

    pub fn throttled(&self) -> u64 {
        self.throttled_requests + self.throttled_execution_time + self.throttled_concurrency
    }

    /// Attempts that got an answer, whatever its status.
    pub fn answered(&self) -> u64 {
        self.responses.values().sum()
    }
}

/// The upper bounds, in seconds, of the [`LatencyHistogram`]'s buckets (a last one, `+Inf`, holds the rest):
/// from a fast read (5 ms) to a bulk write of a thousand records on a busy environment (a minute).
pub const LATENCY_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Request latencies in fixed buckets, as a Prometheus histogram keeps them: enough to print one.
///
/// ```
/// # fn print(metrics: &dataverse::Metrics) {
/// let latency = &metrics.latency;
/// for (le, count) in latency.buckets() {
///     let le = if le.is_infinite() { "+Inf".to_string() } else { le.to_string() };
///     println!("dataverse_request_duration_seconds_bucket{{le=\"{le}\"}} {count}");
/// }
/// println!("dataverse_request_duration_seconds_sum {}", latency.sum().as_secs_f64());
/// println!("dataverse_request_duration_seconds_count {}", latency.count());
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Per bucket, not cumulative: `counts[i]` holds the latencies above `LATENCY_BUCKETS[i - 1]` and up to
    /// `LATENCY_BUCKETS[i]`; the last one those above the last bound.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: Duration,
}

impl LatencyHistogram {
    /// Each bucket's upper bound in seconds (`f64::INFINITY` for the last) and the number of latencies up to it,
    /// cumulative as Prometheus's `le` buckets are: the last count is [`count`](Self::count).
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        bounds.zip(self.counts.iter().scan(0u64, |total, count| {
            *total += count;
            Some(*total)
        }))
    }

    /// The latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// All the latencies recorded, added up.
    pub fn sum(&self) -> Duration {
        self.sum
    }
}

/// The bucket a latency falls in: the first whose upper bound it does not exceed.
fn bucket_of(latency: Duration) -> usize {
    let seconds = latency.as_secs_f64();
    LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(LATENCY_BUCKETS.len())
}

/// Requests sent without affinity (probes, by any user) that must all be answered by servers already known
/// before the client stops looking for more: three a server known, and a few.
fn enough_probes(servers: usize) -> u32 {
    3 * servers as u32 + 4
}

#[derive(Debug)]
struct Limit {
    limit: usize,
    cap: usize,
    in_flight: usize,
    /// Successes seen at full concurrency since the limit last changed: one limit's worth of them is one
    /// round trip with every slot busy and no back-pressure, which earns one more slot.
    full_successes: usize,
    last_decrease: Option<Instant>,
    /// Smoothed round-trip time, to allow at most one decrease per round trip (a burst of refusals from one
    /// flight of requests is one signal, not many), and to foresee what the requests in flight will spend.
    rtt: Option<Duration>,
    /// Requests allowed beyond `limit` while the window is under its share: `burst` of the hint.
    burst: usize,
    budget: Budget,
}

impl Limit {
    fn new(options: &ExecutorOptions, dop_hint: Option<usize>, limits: Option<WindowLimits>) -> Self {
        let max = options.max_concurrency.max(1);
        let mut limit = Limit {
            limit: options.initial_concurrency.clamp(1, max),
            cap: max,
            in_flight: 0,
            full_successes: 0,
            last_decrease: None,
            rtt: None,
            burst: 0,
            budget: Budget::new(limits),
        };
        if let Some(hint) = dop_hint {
            limit.observe_dop_hint(options, hint, true);
        }
        limit
    }

    fn observe_dop_hint(&mut self, options: &ExecutorOptions, hint: usize, first: bool) {
        self.cap = hint.min(options.max_concurrency.max(1));
        let burst = (hint as f64 * options.burst.max(0.0)).round() as usize;
        self.burst = burst.min(options.max_concurrency.saturating_sub(self.cap));
        if first {
            self.limit = self.cap;
        }
        self.limit = self.limit.min(self.cap);
    }

    fn back_off(&mut self, now: Instant) {
        let interval = self.rtt.unwrap_or(Duration::from_millis(100));
        if self.last_decrease.is_some_and(|t| now.duration_since(t) < interval) {
            return;
        }
        self.limit = (self.limit * 3 / 4).max(1);
        self.full_successes = 0;
        self.last_decrease = Some(now);
    }
}

/// One user's requests to one web server: a budget of their own, as Dataverse keeps one per user and server.
#[derive(Debug)]
struct Lane {
    /// The server's `ARRAffinity` id; `None` until an answer names it (and for good, behind a server that
    /// sets no cookie).
    server: Option<String>,
    limit: Limit,
    /// After a 429 for the request count or execution time: this user sends nothing to this server before.
    paused_until: Option<Instant>,
}

/// One application user (an app registration) and the web servers it knows.
#[derive(Debug)]
struct User {
    /// Out of rotation: its sign-in was refused, and other users carry the load.
    retired: bool,
    /// The first is the server the user's first answer named; more are found by probes. Never removed, so
    /// that an index stays valid.
    lanes: Vec<Lane>,
    probe_in_flight: bool,
}

#[derive(Debug)]
struct Lanes {
    users: Vec<User>,
    /// Every web server an answer named, whichever user it answered: a server is the environment's, so each
    /// user gets a lane on it.
    servers: Vec<String>,
    /// Probe answers, of any user, from servers already known since the last new one.
    probes_without_news: u32,
    dop_hint: Option<usize>,
    /// The limits a 429 stated, for lanes found later.
    learned: Option<WindowLimits>,
    /// The latest statement of each limit, this client's own or another's.
    stated: Vec<StatedLimit>,
}

/// What [`Executor::acquire`] found it can do now.
enum Choice {
    Lane {
        user: usize,
        lane: usize,
        burst: bool,
    },
    Probe {
        user: usize,
    },
    /// Nothing: wait for a slot to free, or until this instant (a hold or a pause ends); `held` when the
    /// window's budget (not a slot) is what stops every lane.
    Wait {
        until: Option<Instant>,
        held: bool,
    },
}

impl Lanes {
    fn choose(&mut self, now: Instant) -> Choice {
        // The best of each kind: a slot under a lane's limit, a probe for an unknown server, a burst slot.
        let mut normal: Option<(f64, usize, usize)> = None;
        let mut burst: Option<(f64, usize, usize)> = None;
        let mut probe: Option<usize> = None;
        let mut until: Option<Instant> = None;
        let mut held = false;
        let looking = self.probes_without_news < enough_probes(self.servers.len());
        let sooner = |t: Instant, until: &mut Option<Instant>| *until = Some(until.map_or(t, |u| u.min(t)));
        for (u, user) in self.users.iter_mut().enumerate().filter(|(_, user)| !user.retired) {
            let mut all_have_room = true;
            let mut any_slot = false;
            for (l, lane) in user.lanes.iter_mut().enumerate() {
                if let Some(p) = lane.paused_until.filter(|p| *p > now) {
                    sooner(p, &mut until);
                    all_have_room = false;
                    continue;
                }
                let limit = &mut lane.limit;
                if let Some(t) = limit.budget.hold(now, Duration::ZERO) {
                    held = true;
                    sooner(t, &mut until);
                    all_have_room = false;
                    continue;
                }
                let typical = limit.rtt.unwrap_or_default();
                // What the server said remains is spent: one at a time until it says more.
                if limit.in_flight > 0 && limit.budget.spent_by_the_server_s_word(now, typical * limit.in_flight as u32)
                {
                    held = true;
                    all_have_room = false;
                    continue;
                }
                let room_for_one_more = limit.budget.hold(now, typical * (limit.in_flight as u32 + 1)).is_none();
                all_have_room &= room_for_one_more;
                let share = limit.budget.share(now);
                let better = |best: &Option<(f64, usize, usize)>| best.is_none_or(|(s, _, _)| share < s);
                if limit.in_flight < limit.limit {
                    any_slot = true;
                    if better(&normal) {
                        normal = Some((share, u, l));
                    }
                // Only while nothing says "fewer at a time": back-pressure shrank the limit below the hint. While
                // the limits are assumed, only with room for all in flight; once they are known, with room for one
                // request's time: an answer the server has counted may not have reached the client yet.
                } else if limit.limit >= limit.cap
                    && limit.in_flight < limit.limit + limit.burst
                    && (room_for_one_more || (limit.budget.known() && limit.budget.hold(now, typical).is_none()))
                    && better(&burst)
                {
                    burst = Some((share, u, l));
                }
            }
            let named = user.lanes.first().is_some_and(|lane| lane.server.is_some());
            if named && looking && !user.probe_in_flight && !any_slot && all_have_room && probe.is_none() {
                probe = Some(u);
            }
        }
        match (normal, probe, burst) {
            (Some((_, user, lane)), _, _) => Choice::Lane { user, lane, burst: false },
            (None, Some(user), _) => Choice::Probe { user },
            (None, None, Some((_, user, lane))) => Choice::Lane { user, lane, burst: true },
            (None, None, None) => Choice::Wait { until, held },
        }
    }

    /// A server an answer named: known from now on, with a lane on it for every user. Whether it was new.
    fn learn_server(&mut self, server: &str, options: &ExecutorOptions) -> bool {
        let new = !self.servers.iter().any(|s| s == server);
        if new {
            self.servers.push(server.to_string());
            self.probes_without_news = 0;
            tracing::debug!(server, "a web server more");
        }
        for user in self.users.iter_mut() {
            // A user who has had no answer yet sends its first lane's requests to the first server known.
            if let Some(first) = user.lanes.first_mut().filter(|lane| lane.server.is_none()) {
                first.server = Some(self.servers[0].clone());
            }
            for server in &self.servers {
                if !user.lanes.iter().any(|lane| lane.server.as_deref() == Some(server)) {
                    let limit = Limit::new(options, self.dop_hint, self.learned);
                    user.lanes.push(Lane { server: Some(server.clone()), limit, paused_until: None });
                }
            }
        }
        new
    }

    fn active(&self) -> impl Iterator<Item = &User> {
        let any_active = self.users.iter().any(|u| !u.retired);
        self.users.iter().filter(move |u| !u.retired || !any_active)
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    throttled_requests: AtomicU64,
    throttled_execution_time: AtomicU64,
    throttled_concurrency: AtomicU64,
    retries: AtomicU64,
    transient_failures: AtomicU64,
    held: AtomicU64,
    burst_requests: AtomicU64,
    probes: AtomicU64,
    responses: Mutex<BTreeMap<u16, u64>>,
    latency_counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Nanoseconds: a u64 holds 584 years of them.
    latency_sum_nanos: AtomicU64,
}

#[derive(Debug)]
pub struct Executor {
    options: ExecutorOptions,
    lanes: Mutex<Lanes>,
    freed: Notify,
    pause_until: Mutex<Option<Instant>>,
    counters: Counters,
}

/// A slot among the requests in flight, for one user on one web server. Dropping it (request done, failed or
/// abandoned) frees the slot, so a cancelled request never leaks one.
///
/// The request it stands for goes out as [`user`](Self::user), with [`affinity`](Self::affinity) as its
/// `ARRAffinity` cookie; the server named by its answer's cookie ([`answered_by`](Self::answered_by)) is the one
/// whose budget the rest (time spent, the rate-limit header, a 429) is counted in.
#[derive(Debug)]
pub struct Permit<'a> {
    executor: &'a Executor,
    user: usize,
    /// The lane whose slot this is; `None` for a probe.
    slot: Option<usize>,
    /// The lane the answer is counted in: the slot's, until an answer names another server.
    lane: Option<usize>,
    affinity: Option<String>,
    sent_at: Instant,
    at_full_concurrency: bool,
    /// What the server may have counted for this client when it admits the request: what it spent in the
    /// window, and what was in flight (which may have ended by then).
    counted_at_send: Duration,
    /// What this client had spent of the window when it sent the request.
    own_at_send: Duration,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut lanes = self.executor.lock();
        let user = &mut lanes.users[self.user];
        match self.slot {
            Some(slot) => user.lanes[slot].limit.in_flight -= 1,
            None => user.probe_in_flight = false,
        }
        drop(lanes);
        self.executor.freed.notify_waiters();
    }
}

impl Permit<'_> {
    /// The application user the request goes out as: an index into the executor's users.
    pub fn user(&self) -> usize {
        self.user
    }

    /// The web server to send the request to, as the value of its `ARRAffinity` cookie; `None` sends it
    /// without one (a probe, or before any server named itself).
    pub fn affinity(&self) -> Option<&str> {
        self.affinity.as_deref()
    }

    /// The answer came from the web server its `ARRAffinity` cookie names (`None`: it set none). A server not
    /// known yet gets a budget of its own; a probe's request is counted in it from when it was sent.
    pub fn answered_by(&mut self, server: Option<&str>) {
        let options = &self.executor.options;
        let mut lanes = self.executor.lock();
        let lanes = &mut *lanes;
        let new = match server {
            None => false,
            Some(id) => {
                // The first answer names the server the user's requests have gone to.
                let user = &mut lanes.users[self.user];
                let known = user.lanes.iter().any(|l| l.server.as_deref() == Some(id));
                if let Some(slot) = self.slot.filter(|s| !known && user.lanes[*s].server.is_none()) {
                    user.lanes[slot].server = Some(id.to_string());
                }
                lanes.learn_server(id, options)
            }
        };
        let user = &mut lanes.users[self.user];
        let lane = match server {
            None => self.lane.unwrap_or(0),
            Some(id) => user.lanes.iter().position(|l| l.server.as_deref() == Some(id)).unwrap_or(0),
        };
        if self.slot.is_none() {
            user.lanes[lane].limit.budget.sent(self.sent_at);
            if !new {
                lanes.probes_without_news += 1;
            }
        }
        self.lane = Some(lane);
    }

    fn with_lane<T>(&self, f: impl FnOnce(&mut Lane) -> T) -> T {
        let mut lanes = self.executor.lock();
        let user = &mut lanes.users[self.user];
        let lane = self.lane.or(self.slot).unwrap_or(0).min(user.lanes.len() - 1);
        f(&mut user.lanes[lane])
    }

    /// A success: records the round trip and may widen the limit.
    pub fn succeeded(&self, rtt: Duration) {
        let grew = self.with_lane(|lane| {
            let limit = &mut lane.limit;
            limit.rtt = Some(match limit.rtt {
                Some(past) => past.mul_f64(0.6) + rtt.mul_f64(0.4),
                None => rtt,
            });
            if self.at_full_concurrency && limit.limit < limit.cap {
                limit.full_successes += 1;
                if limit.full_successes >= limit.limit {
                    limit.limit += 1;
                    limit.full_successes = 0;
                    return true;
                }
            }
            false
        });
        if grew {
            self.executor.freed.notify_waiters();
        }
    }

    /// The request was answered, or timed out or lost its connection (the server may have run it): it spent
    /// `took` of its server's window.
    pub fn spent(&self, took: Duration) {
        self.with_lane(|lane| {
            let now = Instant::now();
            lane.limit.budget.ended(now, took);
            lane.limit.budget.answered(self.sent_at, now);
        });
        self.executor.freed.notify_waiters();
    }

    /// The server's `x-ms-ratelimit-time-remaining-xrm-requests` on this request's answer: what remained of the
    /// user's execution time on that server when it was admitted. More counted than this client accounts for
    /// is another client's spending.
    pub fn server_remaining(&self, remaining: Duration) {
        // Only for a request sent on the lane that answered: what a probe or a stray request was counted
        // against is not known.
        if self.slot.is_none() || self.lane != self.slot {
            return;
        }
        self.with_lane(|lane| {
            lane.limit.budget.server_remaining(
                Instant::now(),
                remaining,
                self.counted_at_send,
                self.sent_at,
                self.own_at_send,
            )
        });
    }

    /// Back-pressure from this request's server (a concurrency refusal, a 5xx, a timeout): its lane's limit
    /// shrinks, at most once a round trip.
    pub fn back_off(&self) {
        self.with_lane(|lane| lane.limit.back_off(Instant::now()));
    }

    /// A 429 for the request count or execution time: this user sends nothing more to this server before
    /// `retry_after` from now.
    pub fn pause_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        self.with_lane(|lane| {
            if lane.paused_until.is_none_or(|p| p < until) {
                lane.paused_until = Some(until);
            }
        });
    }
}

impl Executor {
    pub fn new(options: ExecutorOptions) -> Self {
        Self::with_users(options, 1)
    }

    /// An executor for `users` application users (at least one), each with a budget of its own on each web
    /// server.
    pub fn with_users(options: ExecutorOptions, users: usize) -> Self {
        let users = (0..users.max(1))
            .map(|_| User {
                retired: false,
                lanes: vec![Lane {
                    server: None,
                    limit: Limit::new(&options, None, options.window_limits),
                    paused_until: None,
                }],
                probe_in_flight: false,
            })
            .collect();
        let lanes = Lanes {
            users,
            servers: Vec::new(),
            probes_without_news: 0,
            dop_hint: None,
            learned: options.window_limits,
            stated: Vec::new(),
        };
        Executor {
            options,
            lanes: Mutex::new(lanes),
            freed: Notify::new(),
            pause_until: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    pub fn options(&self) -> &ExecutorOptions {
        &self.options
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits out any pause and until some user's window on some server has room, then takes a free slot
    /// there: under that lane's limit, or a probe for a server not known yet, or a burst slot if the window
    /// has room for every request in flight. Of the lanes that can send, the one whose window is least
    /// spent.
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            self.wait_for_pause().await;
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let permit = {
                let mut lanes = self.lock();
                match lanes.choose(now) {
                    Choice::Lane { user, lane, burst } => {
                        let entry = &mut lanes.users[user].lanes[lane];
                        let limit = &mut entry.limit;
                        let typical = limit.rtt.unwrap_or_default();
                        let in_flight = limit.in_flight;
                        limit.in_flight += 1;
                        limit.budget.sent(now);
                        let own_at_send = limit.budget.own(now);
                        let counted_at_send = own_at_send + typical * in_flight as u32;
                        let at_full_concurrency = limit.in_flight >= limit.limit;
                        if burst {
                            self.counters.burst_requests.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Permit {
                            executor: self,
                            user,
                            slot: Some(lane),
                            lane: Some(lane),
                            affinity: entry.server.clone(),
                            sent_at: now,
                            at_full_concurrency,
                            counted_at_send,
                            own_at_send,
                        })
                    }
                    Choice::Probe { user } => {
                        lanes.users[user].probe_in_flight = true;
                        self.counters.probes.fetch_add(1, Ordering::Relaxed);
                        Ok(Permit {
                            executor: self,
                            user,
                            slot: None,
                            lane: None,
                            affinity: None,
                            sent_at: now,
                            at_full_concurrency: false,
                            counted_at_send: Duration::ZERO,
                            own_at_send: Duration::ZERO,
                        })
                    }
                    Choice::Wait { until, held } => Err((until, held)),
                }
            };
            match permit {
                // A pause may have begun while this request queued for its slot.
                Ok(permit) if self.paused_until().is_none() => return permit,
                Ok(permit) => drop(permit),
                Err((until, held)) => {
                    if held {
                        self.counters.held.fetch_add(1, Ordering::Relaxed);
                    }
                    // A burst slot may open as the window frees, without any request ending.
                    let until = until.unwrap_or(now + Duration::from_millis(100));
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = freed => {}
                    }
                }
            }
        }
    }

    /// The most requests the executor sends at once now: over every user in rotation and every server it
    /// knows, its limit, and the burst slots while back-pressure does not hold the limit under the hint. A
    /// caller splitting work into requests makes a multiple of it, so that no round leaves slots idle.
    pub fn parallelism(&self) -> usize {
        let lanes = self.lock();
        let total: usize = lanes
            .active()
            .flat_map(|u| &u.lanes)
            .map(|l| l.limit.limit + if l.limit.limit >= l.limit.cap { l.limit.burst } else { 0 })
            .sum();
        total.max(1)
    }

    /// Takes a user out of rotation (its sign-in was refused): its requests go to the others. The last user in
    /// rotation stays: there is nobody else to send them as, and the caller hears why they fail.
    pub fn retire(&self, user: usize) -> bool {
        let mut lanes = self.lock();
        let others = lanes.users.iter().enumerate().any(|(i, u)| i != user && !u.retired);
        if others {
            lanes.users[user].retired = true;
        }
        drop(lanes);
        self.freed.notify_waiters();
        others
    }

    /// Puts a user back into rotation (its credentials were replaced).
    pub fn reinstate(&self, user: usize) {
        if let Some(u) = self.lock().users.get_mut(user) {
            u.retired = false;
        }
        self.freed.notify_waiters();
    }

    /// The limit a 429's message states replaces the model's, for every user and server: Dataverse applies the
    /// same limits to each.
    pub fn learn_limits(&self, message: &str) {
        if let Some(statement) = LimitStatement::in_message(message) {
            self.take_limit(StatedLimit { statement, at: SystemTime::now() }, false);
        }
    }

    /// A limit another client of the environment was told by a 429 (another process): taken unless this client
    /// holds a later statement of the same limit. Whether it was taken.
    pub fn adopt_limit(&self, stated: StatedLimit) -> bool {
        self.take_limit(stated, true)
    }

    fn take_limit(&self, stated: StatedLimit, unless_later_held: bool) -> bool {
        let mut lanes = self.lock();
        let held = lanes.stated.iter().position(|s| s.statement.same_limit(&stated.statement));
        if unless_later_held && held.is_some_and(|i| lanes.stated[i].at >= stated.at) {
            return false;
        }
        match held {
            Some(i) => lanes.stated[i] = stated,
            None => lanes.stated.push(stated),
        }
        let mut changed = false;
        for lane in lanes.users.iter_mut().flat_map(|u| u.lanes.iter_mut()) {
            changed |= lane.limit.budget.learn(stated.statement);
        }
        let learned = lanes.users[0].lanes[0].limit.budget.limits();
        if changed {
            tracing::debug!(limits = ?learned, "the server states its limits");
        }
        lanes.learned = Some(learned);
        true
    }

    /// The latest statement of each limit this client holds, its own or adopted.
    pub fn stated_limits(&self) -> Vec<StatedLimit> {
        self.lock().stated.clone()
    }

    /// The window the limits are counted over, as the executor knows it.
    pub fn window(&self) -> Duration {
        self.lock().users[0].lanes[0].limit.budget.limits().window
    }

    /// This client's own requests and execution time in the window, per user and web server: what it reports
    /// to the other clients of the same users.
    pub fn spending(&self) -> Vec<LaneSpending> {
        let now = Instant::now();
        let mut lanes = self.lock();
        let mut spending = Vec::new();
        for (user, u) in lanes.users.iter_mut().enumerate() {
            for lane in u.lanes.iter_mut() {
                let own = lane.limit.budget.to_report(now);
                spending.push(LaneSpending { user, web_server: lane.server.clone(), spending: own, clients: 1 });
            }
        }
        spending
    }

    /// What the other clients of these users reported spending in their window, all of it: each lane counts
    /// the reports of its user and server as spent ([`Budget::others_report`]), and a lane no report names
    /// heard that nothing was. A report that names no server is counted on the user's lane that names none,
    /// else on its first lane (the server its first answer named); one for a server this client has not found
    /// is left out: its requests go elsewhere.
    pub fn set_others_spending(&self, reports: &[LaneSpending]) {
        let now = Instant::now();
        let mut lanes = self.lock();
        let mut sums: Vec<Vec<(Spending, u32)>> =
            lanes.users.iter().map(|u| vec![(Spending::default(), 0); u.lanes.len()]).collect();
        for report in reports {
            let Some(user) = lanes.users.get(report.user) else { continue };
            let lane = user
                .lanes
                .iter()
                .position(|l| l.server == report.web_server)
                .or_else(|| report.web_server.is_none().then_some(0));
            if let Some(lane) = lane {
                let (spending, clients) = &mut sums[report.user][lane];
                *spending = *spending + report.spending;
                *clients = clients.saturating_add(report.clients);
            }
        }
        for (user, sums) in lanes.users.iter_mut().zip(sums) {
            for (lane, (spending, clients)) in user.lanes.iter_mut().zip(sums) {
                lane.limit.budget.others_report(now, spending, clients);
            }
        }
        drop(lanes);
        // Less reported than before may leave room.
        self.freed.notify_waiters();
    }

    fn paused_until(&self) -> Option<Instant> {
        let until = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        until.filter(|u| *u > Instant::now())
    }

    async fn wait_for_pause(&self) {
        while let Some(until) = self.paused_until() {
            // A little jitter, so that the requests held back do not all arrive in the same millisecond.
            let jitter = Duration::from_millis(rand::random_range(0..50));
            tokio::time::sleep_until((until + jitter).into()).await;
        }
    }

    /// Pauses the whole client, every user and server: no request starts before `retry_after` from now.
    pub fn pause_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut pause = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        if pause.is_none_or(|p| p < until) {
            *pause = Some(until);
        }
    }

    /// Back-pressure that names no server: every lane's limit shrinks, at most once a round trip each. An
    /// answer's back-pressure is its own server's ([`Permit::back_off`]).
    pub fn back_off(&self) {
        let now = Instant::now();
        for lane in self.lock().users.iter_mut().flat_map(|u| u.lanes.iter_mut()) {
            lane.limit.back_off(now);
        }
    }

    /// The server's recommended degree of parallelism: it seeds each lane's limit once and caps it always.
    pub fn observe_dop_hint(&self, hint: usize) {
        let hint = hint.max(1);
        let mut lanes = self.lock();
        if lanes.dop_hint == Some(hint) {
            return;
        }
        let first = lanes.dop_hint.is_none();
        lanes.dop_hint = Some(hint);
        for lane in lanes.users.iter_mut().flat_map(|u| u.lanes.iter_mut()) {
            lane.limit.observe_dop_hint(&self.options, hint, first);
        }
        drop(lanes);
        self.freed.notify_waiters();
    }

    /// The delay before retry number `retry` (from 1): [`Backoff::delay`] between the options' initial and
    /// maximum backoff.
    pub fn backoff(&self, retry: u32) -> Duration {
        Backoff::delay(self.options.initial_backoff, self.options.max_backoff, retry)
    }

    pub fn count_request(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_transient(&self) {
        self.counters.transient_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt that got an answer: its status, and how long it took.
    pub fn count_answer(&self, status: u16, latency: Duration) {
        let c = &self.counters;
        *c.responses.lock().unwrap_or_else(|e| e.into_inner()).entry(status).or_default() += 1;
        c.latency_counts[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        c.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count_throttle(&self, limit: crate::error::ThrottleLimit) {
        use crate::error::ThrottleLimit::*;
        let counter = match limit {
            Requests => &self.counters.throttled_requests,
            ExecutionTime => &self.counters.throttled_execution_time,
            Concurrency => &self.counters.throttled_concurrency,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> Metrics {
        let c = &self.counters;
        let responses = c.responses.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let latency = LatencyHistogram {
            counts: std::array::from_fn(|i| c.latency_counts[i].load(Ordering::Relaxed)),
            sum: Duration::from_nanos(c.latency_sum_nanos.load(Ordering::Relaxed)),
        };
        let now = Instant::now();
        let mut lanes = self.lock();
        let in_flight = lanes
            .users
            .iter()
            .map(|u| u.lanes.iter().map(|l| l.limit.in_flight).sum::<usize>() + usize::from(u.probe_in_flight))
            .sum();
        let concurrency = lanes.active().flat_map(|u| &u.lanes).map(|l| l.limit.limit).sum();
        let window_limits = lanes.users[0].lanes[0].limit.budget.limits();
        let dop_hint = lanes.dop_hint;
        let per_lane = lanes
            .users
            .iter_mut()
            .enumerate()
            .flat_map(|(user, u)| {
                let retired = u.retired;
                u.lanes.iter_mut().map(move |l| LaneMetrics {
                    user,
                    web_server: l.server.clone(),
                    retired,
                    concurrency: l.limit.limit,
                    in_flight: l.limit.in_flight,
                    window_share_permille: (l.limit.budget.share(now) * 1000.0).round() as u32,
                    others: l.limit.budget.others(now),
                })
            })
            .collect();
        drop(lanes);
        Metrics {
            requests: c.requests.load(Ordering::Relaxed),
            throttled_requests: c.throttled_requests.load(Ordering::Relaxed),
            throttled_execution_time: c.throttled_execution_time.load(Ordering::Relaxed),
            throttled_concurrency: c.throttled_concurrency.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            transient_failures: c.transient_failures.load(Ordering::Relaxed),
            concurrency,
            in_flight,
            dop_hint,
            held: c.held.load(Ordering::Relaxed),
            burst_requests: c.burst_requests.load(Ordering::Relaxed),
            probes: c.probes.load(Ordering::Relaxed),
            window_limits,
            lanes: per_lane,
            responses,
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Back-pressure, as an answer on a slot brings it.
    async fn back_off(e: &Executor) {
        e.acquire().await.back_off();
    }

    /// Execution time spent, as an answer on a slot reports it.
    async fn spend(e: &Executor, took: Duration) {
        e.acquire().await.spent(took);
    }

    fn executor(max: usize) -> Executor {
        Executor::new(ExecutorOptions { max_concurrency: max, ..Default::default() })
    }

    #[test]
    fn a_limit_another_client_was_told_is_taken_unless_a_later_statement_of_it_is_held() {
        let e = executor(52);
        let requests = |limit, at| StatedLimit {
            statement: LimitStatement::Requests { limit, window: Duration::from_secs(10) },
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
        };
        e.learn_limits("Number of requests exceeded the limit of 100 over time window of 10 seconds.");
        let own = e.stated_limits();
        assert_eq!(own.len(), 1);
        assert_eq!(e.metrics().window_limits.requests, 100);
        assert!(!e.adopt_limit(requests(50, 1_000)), "an earlier statement than this client's own is not taken");
        assert_eq!(e.metrics().window_limits.requests, 100);

        let other = executor(52);
        assert!(other.adopt_limit(requests(50, 1_000)));
        assert_eq!(other.metrics().window_limits.requests, 50);
        assert_eq!(other.metrics().window_limits.window, Duration::from_secs(10));
        assert_eq!(
            other.metrics().window_limits.execution_time,
            WindowLimits::default().execution_time,
            "a statement of the request limit leaves the execution time's"
        );
        assert!(!other.adopt_limit(requests(50, 1_000)), "the same statement again changes nothing");
        assert!(other.adopt_limit(requests(80, 2_000)), "a later one replaces it");
        assert_eq!(other.metrics().window_limits.requests, 80);
        assert!(other.adopt_limit(own[0]));
        assert_eq!(other.stated_limits(), own);
    }

    #[tokio::test]
    async fn the_hint_seeds_and_caps_the_limit() {
        let e = executor(52);
        assert_eq!(e.metrics().concurrency, 1);
        e.observe_dop_hint(4);
        assert_eq!(e.metrics().concurrency, 4);
        for _ in 0..100 {
            let permits: Vec<_> = futures::future::join_all((0..4).map(|_| e.acquire())).await;
            for p in &permits {
                p.succeeded(Duration::from_millis(10));
            }
        }
        assert_eq!(e.metrics().concurrency, 4, "never above the hint");
        let small = executor(2);
        small.observe_dop_hint(4);
        assert_eq!(small.metrics().concurrency, 2, "nor above the configured maximum");
    }

    #[tokio::test]
    async fn back_pressure_shrinks_and_successes_grow_the_limit() {
        let e = executor(52);
        e.observe_dop_hint(8);
        back_off(&e).await;
        assert_eq!(e.metrics().concurrency, 6);
        back_off(&e).await;
        assert_eq!(e.metrics().concurrency, 6, "one decrease per round trip");
        for _ in 0..6 {
            let permits: Vec<_> = futures::future::join_all((0..6).map(|_| e.acquire())).await;
            permits.last().unwrap().succeeded(Duration::from_millis(1));
        }
        assert_eq!(e.metrics().concurrency, 7, "one more after a full round at the limit");
    }

    #[tokio::test]
    async fn a_dropped_request_frees_its_slot() {
        let e = executor(1);
        let permit = e.acquire().await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), e.acquire()).await;
        assert!(waiting.is_err(), "the only slot is taken");
        drop(permit);
        let _again = e.acquire().await;
        assert_eq!(e.metrics().in_flight, 1);
    }

    #[test]
    fn answers_are_counted_by_status_and_latency_bucket() {
        let e = executor(4);
        e.count_answer(200, Duration::from_millis(3));
        e.count_answer(200, Duration::from_millis(5));
        e.count_answer(204, Duration::from_millis(70));
        e.count_answer(429, Duration::from_secs(90));
        let m = e.metrics();
        assert_eq!(m.responses, BTreeMap::from([(200, 2), (204, 1), (429, 1)]));
        assert_eq!(m.answered(), 4);
        assert_eq!(m.latency.count(), 4);
        assert_eq!(m.latency.sum(), Duration::from_millis(90_078));
        let buckets: Vec<_> = m.latency.buckets().collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(buckets[0], (0.005, 2), "5 ms is in the 5 ms bucket: a bound is inclusive");
        assert_eq!(buckets[3], (0.05, 2));
        assert_eq!(buckets[4], (0.1, 3), "counts are cumulative");
        assert_eq!(buckets[12], (60.0, 3));
        assert_eq!(buckets[13], (f64::INFINITY, 4), "the last bucket holds everything");
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    fn budgeted(limits: WindowLimits) -> Executor {
        let e = Executor::new(ExecutorOptions { window_limits: Some(limits), ..Default::default() });
        e.observe_dop_hint(4);
        e
    }

    async fn acquired(e: &Executor, count: usize) -> Vec<Permit<'_>> {
        let mut permits = Vec::new();
        for _ in 0..count {
            match tokio::time::timeout(Duration::from_millis(30), e.acquire()).await {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        permits
    }

    /// The hint's four slots taken once `spent` of the window is spent, one of them answered after 1 s (the
    /// round trip the executor then expects of each request in flight).
    async fn at_the_hint_after(e: &Executor, spent: Duration) -> Vec<Permit<'_>> {
        spend(e, spent).await;
        let permits = acquired(e, 4).await;
        assert_eq!(permits.len(), 4);
        permits[0].succeeded(Duration::from_secs(1));
        permits
    }

    #[tokio::test]
    async fn burst_slots_open_beyond_the_hint_while_the_window_is_under_its_share() {
        let limits =
            WindowLimits { requests: 1000, execution_time: Duration::from_secs(40), window: Duration::from_secs(10) };
        let e = budgeted(limits);
        assert_eq!(acquired(&e, 10).await.len(), 6, "the hint's 4 and half as many again");
        assert_eq!(e.metrics().burst_requests, 2);

        // 36 s of the window's 40 spent, the limits known: what is in flight lands on a window the server admitted
        // it to, so the burst slots stay open while the window is under its share.
        let e = budgeted(limits);
        let permits = at_the_hint_after(&e, Duration::from_secs(36)).await;
        assert_eq!(acquired(&e, 3).await.len(), 2, "the burst's two, past 40 s with what is in flight");
        drop(permits);
        // At the share, nothing more.
        spend(&e, Duration::from_secs(4)).await;
        assert_eq!(acquired(&e, 1).await.len(), 0, "40 s of 40 spent");

        // Under the share but without room for one more request's time: the hint's slots, no burst — an answer
        // the server has counted may not have reached the client yet.
        let e = budgeted(limits);
        let _permits = at_the_hint_after(&e, Duration::from_millis(38_700)).await;
        assert_eq!(acquired(&e, 1).await.len(), 0, "38.7 s and a 1 s request pass the window's share");

        // While the limits are assumed (Dynamics 365's, until a 429 states the environment's), a burst slot
        // opens only with room in the window for all in flight: 1,185 s of the 1,200 assumed spent, the hint's
        // slots open, not more.
        let e = executor(52);
        e.observe_dop_hint(4);
        let _permits = at_the_hint_after(&e, Duration::from_secs(1185)).await;
        assert_eq!(acquired(&e, 1).await.len(), 0, "5 s more in flight would pass the window's share");

        // Back-pressure shrank the limit: no burst until it is back at the hint.
        let e = budgeted(limits);
        back_off(&e).await;
        assert_eq!(acquired(&e, 10).await.len(), 3);
    }

    #[tokio::test]
    async fn a_spent_window_holds_every_request_until_its_oldest_time_leaves_it() {
        let limits =
            WindowLimits { requests: 1000, execution_time: Duration::from_secs(1), window: Duration::from_millis(300) };
        let e = budgeted(limits);
        spend(&e, Duration::from_secs(1)).await;
        let started = Instant::now();
        assert_eq!(acquired(&e, 1).await.len(), 0, "the window is spent");
        drop(e.acquire().await);
        assert!(started.elapsed() >= Duration::from_millis(250), "held until the spending left the window");
        assert!(e.metrics().held > 0);
    }

    #[tokio::test]
    async fn requests_other_clients_of_the_user_reported_on_its_server_hold_its_own() {
        let limits =
            WindowLimits { requests: 10, execution_time: Duration::from_secs(1000), window: Duration::from_secs(60) };
        let e = budgeted(limits);
        let mut first = e.acquire().await;
        first.answered_by(Some("a"));
        first.spent(Duration::from_millis(5));
        drop(first);
        let on = |server: Option<&str>, requests: u32| LaneSpending {
            user: 0,
            web_server: server.map(str::to_string),
            spending: Spending { requests, execution_time: Duration::ZERO },
            clients: 1,
        };
        let own = e.spending();
        assert_eq!(own.len(), 1);
        assert_eq!((own[0].web_server.as_deref(), own[0].spending.requests), (Some("a"), 1));
        assert_eq!(own[0].spending.execution_time, Duration::from_millis(5));

        // Another process sent 6 to server a: 2 of the 9 it holds at are left, and it may take one of them.
        e.set_others_spending(&[on(Some("a"), 6)]);
        assert_eq!(e.metrics().lanes[0].others.requests, 6);
        let permits = acquired(&e, 5).await;
        assert_eq!(permits.len(), 1, "one more fits beside the others' 6 and their part of the room");
        drop(permits);
        // Their report on a server this client has not found is not counted here.
        e.set_others_spending(&[on(Some("b"), 9)]);
        assert_eq!(e.metrics().lanes[0].others.requests, 0);
        assert_eq!(acquired(&e, 3).await.len(), 3);
        // A report that names no server is counted on the first.
        e.set_others_spending(&[on(None, 3), on(Some("a"), 2)]);
        assert_eq!(e.metrics().lanes[0].others.requests, 5);
        assert_eq!(acquired(&e, 5).await.len(), 0, "5 of this client's and 5 of the others'");
    }

    #[tokio::test]
    async fn a_pause_holds_every_request() {
        let e = executor(4);
        e.pause_for(Duration::from_secs(60));
        let held = tokio::time::timeout(Duration::from_millis(50), e.acquire()).await;
        assert!(held.is_err(), "no request starts during a pause");
        e.pause_for(Duration::ZERO);
        *e.pause_until.lock().unwrap() = None;
        let _permit = e.acquire().await;
    }

    fn lanes_of(e: &Executor) -> Vec<(usize, Option<String>)> {
        e.metrics().lanes.into_iter().map(|l| (l.user, l.web_server)).collect()
    }

    #[tokio::test]
    async fn a_probe_finds_another_web_server_and_requests_go_to_the_least_spent_window() {
        let e = Executor::new(ExecutorOptions { burst: 0.0, ..Default::default() });
        e.observe_dop_hint(1);
        let mut first = e.acquire().await;
        assert_eq!(first.affinity(), None, "no server is known yet");
        first.answered_by(Some("a"));
        assert_eq!(lanes_of(&e), [(0, Some("a".to_string()))]);
        let mut probe = tokio::time::timeout(Duration::from_millis(50), e.acquire()).await.expect("a probe goes out");
        assert_eq!(probe.affinity(), None, "a probe goes without affinity");
        probe.answered_by(Some("b"));
        assert_eq!(e.metrics().probes, 1);
        assert_eq!(e.metrics().web_servers(), 2);
        first.spent(Duration::from_secs(100));
        drop((first, probe));
        assert_eq!(e.parallelism(), 2, "a slot on each server");
        let next = e.acquire().await;
        assert_eq!(next.affinity(), Some("b"), "b's window is less spent than a's");
        let other = e.acquire().await;
        assert_eq!(other.affinity(), Some("a"));
    }

    #[tokio::test]
    async fn a_probe_answered_by_known_servers_is_counted_there_and_probing_stops() {
        let e = Executor::new(ExecutorOptions { burst: 0.0, ..Default::default() });
        e.observe_dop_hint(1);
        let mut held = e.acquire().await;
        held.answered_by(Some("only"));
        for _ in 0..enough_probes(1) {
            let mut probe = e.acquire().await;
            assert_eq!(probe.affinity(), None);
            probe.answered_by(Some("only"));
        }
        assert_eq!(e.metrics().probes, u64::from(enough_probes(1)));
        let more = tokio::time::timeout(Duration::from_millis(50), e.acquire()).await;
        assert!(more.is_err(), "the only server's slot is taken and there is nothing more to find");
        assert_eq!(lanes_of(&e), [(0, Some("only".to_string()))]);
    }

    #[tokio::test]
    async fn a_web_server_one_user_found_opens_a_lane_on_it_for_every_user() {
        let e = Executor::with_users(Default::default(), 2);
        e.observe_dop_hint(1);
        let mut first = e.acquire().await;
        let finder = first.user();
        first.answered_by(Some("a"));
        drop(first);
        let a = Some("a".to_string());
        assert_eq!(lanes_of(&e), [(0, a.clone()), (1, a)]);
        let other = e.acquire().await;
        assert_ne!(other.user(), finder, "the user whose window is least spent");
        assert_eq!(other.affinity(), Some("a"), "to the server the other user found");
    }

    #[tokio::test]
    async fn a_retired_user_sends_nothing_but_the_last_one_stays() {
        let e = Executor::with_users(Default::default(), 2);
        e.observe_dop_hint(2);
        assert!(e.retire(0));
        let permits: Vec<_> = futures::future::join_all((0..2).map(|_| e.acquire())).await;
        assert!(permits.iter().all(|p| p.user() == 1), "only the user in rotation sends");
        assert_eq!(e.parallelism(), 3, "its hint and burst: {:?}", e.metrics());
        assert!(!e.retire(1), "nobody else is left to send as");
        e.reinstate(0);
        drop(permits);
        let both: Vec<_> = futures::future::join_all((0..4).map(|_| e.acquire())).await;
        assert_eq!(both.iter().filter(|p| p.user() == 0).count(), 2, "each user's slots are used");
    }

    #[tokio::test]
    async fn a_throttle_pauses_its_user_on_its_server_only() {
        let e = Executor::with_users(Default::default(), 2);
        e.observe_dop_hint(1);
        let (a, b) = (e.acquire().await, e.acquire().await);
        assert_ne!(a.user(), b.user());
        let paused = a.user();
        a.pause_for(Duration::from_secs(60));
        drop((a, b));
        for _ in 0..3 {
            let p = tokio::time::timeout(Duration::from_millis(50), e.acquire()).await.expect("the other user sends");
            assert_ne!(p.user(), paused);
        }
    }
}
