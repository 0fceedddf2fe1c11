//! The throttle-aware request layer every Web API call goes through.
//!
//! Dataverse's service protection limits come in two flavours, and they want different answers:
//! - the **concurrency** limit (`0x80072326`) is refused at once and says "fewer at a time": it is back-pressure,
//!   so the concurrency limit shrinks (AIMD, as Vector's adaptive request concurrency) and the request is retried;
//! - the **request-count** and **execution-time** limits (`0x80072322`, `0x80072321`) say "your budget for this
//!   window is spent, come back in `Retry-After`": any request sent before then is refused too and lengthens the
//!   wait, so the whole client pauses, not just the slot that was refused.
//!
//! The concurrency limit starts at one request, jumps to the server's `x-ms-dop-hint` as soon as an answer
//! carries it, and stays under it (Microsoft: sending more than the hint degrades throughput).
//!
//! Rather than learning the window's limits from 429s, the executor keeps its own account of the window
//! ([`Budget`]): it holds every request while the user's requests or execution time in the window are at their
//! share of the limit, so that the server has no reason to refuse one. And since that account says how much
//! of the window is left, it also sends a few requests beyond the hint ([`ExecutorOptions::burst`]) while the
//! window has room for all that is in flight: time the flow left idle (between batches, while it read) is
//! spent later rather than lost, and the steady rate is the limit's. A 429 still pauses the client for its
//! `Retry-After` (the model was wrong: another client, other limits) and states the limits, which replace the
//! model's.
//!
//! It also counts what it did, for [`Metrics`]: attempts, throttles by limit, retries, answers by HTTP status
//! and a histogram of how long the answered attempts took. Counting costs an atomic add or a short lock, so it
//! is always on.

use crate::backoff::Backoff;
use crate::budget::{Budget, WindowLimits};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
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
    /// Requests sent beyond the concurrency limit while the window has room for all in flight, as a share of
    /// the hint (0.5: two more for a hint of 4). Zero never goes beyond the limit.
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
    /// The window's limits as the executor knows them.
    pub window_limits: WindowLimits,
    /// Answers received, by HTTP status: one per attempt that got an answer, whatever it said (a 429 or 401
    /// that was retried counts too). Attempts that got none (timeouts, dropped connections) are not here: they
    /// are in `transient_failures`.
    pub responses: BTreeMap<u16, u64>,
    /// How long the attempts that got an answer took, from sending the request to the end of the answer's body.
    pub latency: LatencyHistogram,
}

impl Metrics {
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

#[derive(Debug)]
struct Limit {
    limit: usize,
    cap: usize,
    in_flight: usize,
    dop_hint: Option<usize>,
    /// Successes seen at full concurrency since the limit last changed: one limit's worth of them is one
    /// round trip with every slot busy and no back-pressure, which earns one more slot.
    full_successes: usize,
    last_decrease: Option<Instant>,
    /// Smoothed round-trip time, to allow at most one decrease per round trip (a burst of refusals from one
    /// flight of requests is one signal, not many), and to foresee what the requests in flight will spend.
    rtt: Option<Duration>,
    /// Requests allowed beyond `limit` while the window has room: `burst` of the hint.
    burst: usize,
    budget: Budget,
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
    responses: Mutex<BTreeMap<u16, u64>>,
    latency_counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Nanoseconds: a u64 holds 584 years of them.
    latency_sum_nanos: AtomicU64,
}

#[derive(Debug)]
pub struct Executor {
    options: ExecutorOptions,
    limit: Mutex<Limit>,
    freed: Notify,
    pause_until: Mutex<Option<Instant>>,
    counters: Counters,
}

/// A slot among the requests in flight. Dropping it (request done, failed or abandoned) frees the slot, so
/// a cancelled request never leaks one.
#[derive(Debug)]
pub struct Permit<'a> {
    executor: &'a Executor,
    at_full_concurrency: bool,
    /// What the server may have counted for this client when it admits the request: what it spent in the
    /// window, and what was in flight (which may have ended by then).
    counted_at_send: Duration,
    /// When it was sent, and what this client had spent of the window then.
    sent: Instant,
    own_at_send: Duration,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut limit = self.executor.lock_limit();
        limit.in_flight -= 1;
        drop(limit);
        self.executor.freed.notify_waiters();
    }
}

impl Permit<'_> {
    /// A success: records the round trip and may widen the limit.
    pub fn succeeded(&self, rtt: Duration) {
        let mut limit = self.executor.lock_limit();
        limit.rtt = Some(match limit.rtt {
            Some(past) => past.mul_f64(0.6) + rtt.mul_f64(0.4),
            None => rtt,
        });
        if self.at_full_concurrency && limit.limit < limit.cap {
            limit.full_successes += 1;
            if limit.full_successes >= limit.limit {
                limit.limit += 1;
                limit.full_successes = 0;
                drop(limit);
                self.executor.freed.notify_waiters();
            }
        }
    }

    /// The server's `x-ms-ratelimit-time-remaining-xrm-requests` on this request's answer: what remained of the
    /// user's execution time when it was admitted. More counted than this client accounts for is another
    /// client's spending.
    pub fn server_remaining(&self, remaining: Duration) {
        let mut limit = self.executor.lock_limit();
        limit.budget.server_remaining(Instant::now(), remaining, self.counted_at_send, self.sent, self.own_at_send);
    }
}

impl Executor {
    pub fn new(options: ExecutorOptions) -> Self {
        let max = options.max_concurrency.max(1);
        let limit = Limit {
            limit: options.initial_concurrency.clamp(1, max),
            cap: max,
            in_flight: 0,
            dop_hint: None,
            full_successes: 0,
            last_decrease: None,
            rtt: None,
            burst: 0,
            budget: Budget::new(options.window_limits),
        };
        Executor {
            options,
            limit: Mutex::new(limit),
            freed: Notify::new(),
            pause_until: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    pub fn options(&self) -> &ExecutorOptions {
        &self.options
    }

    fn lock_limit(&self) -> std::sync::MutexGuard<'_, Limit> {
        self.limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits out any pause and until the window has room, then for a free slot under the current limit (or a
    /// burst slot, if the window has room for every request in flight).
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            self.wait_for_pause().await;
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let held_until = {
                let mut limit = self.lock_limit();
                let now = Instant::now();
                match limit.budget.hold(now, Duration::ZERO) {
                    Some(until) => Some(until),
                    None => {
                        let typical = limit.rtt.unwrap_or_default();
                        let in_flight = limit.in_flight;
                        // Only while nothing says "fewer at a time": back-pressure shrank the limit below the hint.
                        let burst = limit.limit >= limit.cap
                            && in_flight >= limit.limit
                            && in_flight < limit.limit + limit.burst
                            && limit.budget.hold(now, typical * (in_flight as u32 + 1)).is_none();
                        // What the server said remains is spent: one at a time until it says more.
                        let probing =
                            in_flight > 0 && limit.budget.spent_by_the_server_s_word(now, typical * in_flight as u32);
                        if probing {
                            Some(now + Duration::from_millis(100))
                        } else if in_flight < limit.limit || burst {
                            limit.in_flight += 1;
                            limit.budget.sent(now);
                            let own_at_send = limit.budget.own(now);
                            let counted_at_send = own_at_send + typical * in_flight as u32;
                            let at_full_concurrency = limit.in_flight >= limit.limit;
                            drop(limit);
                            if burst {
                                self.counters.burst_requests.fetch_add(1, Ordering::Relaxed);
                            }
                            // A pause may have begun while this request queued for its slot.
                            if self.paused_until().is_none() {
                                return Permit {
                                    executor: self,
                                    at_full_concurrency,
                                    counted_at_send,
                                    sent: now,
                                    own_at_send,
                                };
                            }
                            self.lock_limit().in_flight -= 1;
                            self.freed.notify_waiters();
                            continue;
                        } else {
                            None
                        }
                    }
                }
            };
            match held_until {
                Some(until) => {
                    self.counters.held.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep_until(until.into()) => {}
                        _ = freed => {}
                    }
                }
                // A burst slot may open as the window frees, without any request ending.
                None => {
                    let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
                }
            }
        }
    }

    /// The most requests the executor sends at once now: its limit, and the burst slots while back-pressure
    /// does not hold the limit under the hint. A caller splitting work into requests makes a multiple of it,
    /// so that no round leaves slots idle.
    pub fn parallelism(&self) -> usize {
        let limit = self.lock_limit();
        limit.limit + if limit.limit >= limit.cap { limit.burst } else { 0 }
    }

    /// An answered request, or one that timed out or lost its connection (the server may have run it): it
    /// spent `took` of the window's execution time.
    pub fn spent(&self, took: Duration) {
        self.lock_limit().budget.ended(Instant::now(), took);
        self.freed.notify_waiters();
    }

    /// The limits a 429's message states replace the model's.
    pub fn learn_limits(&self, message: &str) {
        let mut limit = self.lock_limit();
        if limit.budget.learn(message) {
            tracing::debug!(limits = ?limit.budget.limits(), "the server states its limits");
        }
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

    /// Pauses the whole client: no request starts before `retry_after` from now.
    pub fn pause_for(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut pause = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        if pause.is_none_or(|p| p < until) {
            *pause = Some(until);
        }
    }

    /// Back-pressure (a concurrency refusal, a 5xx, a timeout): shrink the limit, at most once a round trip.
    pub fn back_off(&self) {
        let mut limit = self.lock_limit();
        let now = Instant::now();
        let interval = limit.rtt.unwrap_or(Duration::from_millis(100));
        if limit.last_decrease.is_some_and(|t| now.duration_since(t) < interval) {
            return;
        }
        limit.limit = (limit.limit * 3 / 4).max(1);
        limit.full_successes = 0;
        limit.last_decrease = Some(now);
    }

    /// The server's recommended degree of parallelism: it seeds the limit once and caps it always.
    pub fn observe_dop_hint(&self, hint: usize) {
        let hint = hint.max(1);
        let mut limit = self.lock_limit();
        if limit.dop_hint == Some(hint) {
            return;
        }
        let first = limit.dop_hint.is_none();
        limit.dop_hint = Some(hint);
        limit.cap = hint.min(self.options.max_concurrency.max(1));
        let burst = (hint as f64 * self.options.burst.max(0.0)).round() as usize;
        limit.burst = burst.min(self.options.max_concurrency.saturating_sub(limit.cap));
        if first {
            limit.limit = limit.cap;
        }
        limit.limit = limit.limit.min(limit.cap);
        drop(limit);
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
        let limit = self.lock_limit();
        Metrics {
            requests: c.requests.load(Ordering::Relaxed),
            throttled_requests: c.throttled_requests.load(Ordering::Relaxed),
            throttled_execution_time: c.throttled_execution_time.load(Ordering::Relaxed),
            throttled_concurrency: c.throttled_concurrency.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            transient_failures: c.transient_failures.load(Ordering::Relaxed),
            concurrency: limit.limit,
            in_flight: limit.in_flight,
            dop_hint: limit.dop_hint,
            held: c.held.load(Ordering::Relaxed),
            burst_requests: c.burst_requests.load(Ordering::Relaxed),
            window_limits: limit.budget.limits(),
            responses,
            latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor(max: usize) -> Executor {
        Executor::new(ExecutorOptions { max_concurrency: max, ..Default::default() })
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
        e.back_off();
        assert_eq!(e.metrics().concurrency, 6);
        e.back_off();
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

    #[tokio::test]
    async fn burst_slots_open_beyond_the_hint_only_while_the_window_has_room() {
        let limits =
            WindowLimits { requests: 1000, execution_time: Duration::from_secs(40), window: Duration::from_secs(10) };
        let e = budgeted(limits);
        assert_eq!(acquired(&e, 10).await.len(), 6, "the hint's 4 and half as many again");
        assert_eq!(e.metrics().burst_requests, 2);

        // 36 s of the window's 40 spent: room for the hint's slots, not for more in flight.
        let e = budgeted(limits);
        e.spent(Duration::from_secs(36));
        let permits = acquired(&e, 4).await;
        permits[0].succeeded(Duration::from_secs(1));
        assert_eq!(permits.len(), 4);
        assert_eq!(acquired(&e, 1).await.len(), 0, "4 s more in flight would pass the window's share");
        drop(permits);

        // Back-pressure shrank the limit: no burst until it is back at the hint.
        let e = budgeted(limits);
        e.back_off();
        assert_eq!(acquired(&e, 10).await.len(), 3);
    }

    #[tokio::test]
    async fn a_spent_window_holds_every_request_until_its_oldest_time_leaves_it() {
        let limits =
            WindowLimits { requests: 1000, execution_time: Duration::from_secs(1), window: Duration::from_millis(300) };
        let e = budgeted(limits);
        e.spent(Duration::from_secs(1));
        let started = Instant::now();
        assert_eq!(acquired(&e, 1).await.len(), 0, "the window is spent");
        drop(e.acquire().await);
        assert!(started.elapsed() >= Duration::from_millis(250), "held until the spending left the window");
        assert!(e.metrics().held > 0);
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
}
