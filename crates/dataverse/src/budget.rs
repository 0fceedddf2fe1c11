//! Dataverse's sliding window, as the client keeps it: what one application user spent on one web server of
//! the request-count and execution-time limits over the last window, so that the executor sends what fits rather than learning
//! the limits from 429s.
//!
//! Dataverse checks both limits when a request arrives, against what already happened in the window: a request
//! counts when it is admitted, its execution time when it ends (so requests admitted under the limit can take
//! it over, by at most what is in flight). The client mirrors that, erring on the side of having spent more:
//! - a request counts from the moment it is sent (before the server admits it), refused or not, and once
//!   answered, for a window from the end of its answer (after the server admitted it): it never leaves the
//!   client's account of the window before it leaves the server's, so that the request that takes its place
//!   does not reach the server a moment too soon;
//! - its execution time is what the client waited for the answer (more than the server counts: the network is
//!   in it), recorded when the answer ends (after the server recorded it);
//! - a request is held while the window's requests or execution time are at [`SHARE`] of their limit, until
//!   the oldest of them leaves the window.
//!
//! The limits start as Dynamics 365's (6,000 requests and 1,200 s of execution time per 300 s, per user and
//! per web server); a 429 states the environment's own in its message, and they replace them.
//!
//! Other clients of the same user (another process, another tool) spend the same budget. The budget hears of
//! them two ways, and counts the larger (they describe the same others, so adding them would count them twice):
//! - the server's `x-ms-ratelimit-time-remaining-xrm-requests` says what it had counted for the user when it
//!   admitted a request, and what it counted beyond this client's own spending is others' execution time, for a
//!   window — once the limits are known (stated by a 429 or given): against a limit assumed too high, what
//!   remains would read as others' spending. It says nothing of their requests, and only after the fact;
//! - the others' own word ([`Budget::others_report`]): the requests and execution time they counted in their
//!   window, as processes sharing a store publish it to each other. Their requests count as this client's do,
//!   and the report lapses a window after it was made (its maker stopped reporting: what it spent has left the
//!   window by then).
//!
//! What the others send between two reports is not in the last one. Most of it takes the place of what left
//! their window (as this client's own sending does), but room that opens — a client idle for a moment, the
//! window's oldest leaving — would be seen by every client at once, and each would fill it before hearing that
//! the others did. So the room is shared: until the next report, this client takes only its part of it (one of
//! the report's clients and itself) and holds the rest as the others'. The room is what the limit leaves of the
//! others' report and of this client's spending as they last heard of it (its spending at the previous report):
//! that is the room they take their part of, so that the parts add up to it. What remains unseen (reports that
//! cross, what is in flight) is [`SHARE`]'s margin to absorb.
//!
//! A client reports the most it had in its window since its last report ([`Budget::to_report`]), not what it
//! has at that instant: when its oldest requests leave its window it sends their successors within moments, and a
//! report made in between would tell the others of room that is already taken again — each would take its part
//! of it, and be refused for it. A client whose spending truly fell is heard of one report later.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The share of each limit the client spends before it holds requests: the rest absorbs what the server
/// counts that the client cannot see (the requests in flight at another client of the same user, a clock's
/// drift). It can be small: the client already counts more than the server does (a request from when it is
/// sent, its execution time with the network in it), and others' spending from the server's own word. Over
/// ten windows of `UpdateMultiple` of 1,000, 0.99 wrote at 0.955 of the steady rate where 0.97 wrote at 0.918,
/// with the same single 429 (BENCHMARKS.md, write strategies).
pub const SHARE: f64 = 0.99;

/// A web server's limits for one user over its sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimits {
    pub requests: u32,
    pub execution_time: Duration,
    pub window: Duration,
}

impl Default for WindowLimits {
    /// Dynamics 365's: 6,000 requests and 20 minutes of execution time per 5-minute window.
    fn default() -> Self {
        WindowLimits { requests: 6000, execution_time: Duration::from_secs(1200), window: Duration::from_secs(300) }
    }
}

impl WindowLimits {
    /// The limits a 429's message states, over these (a message that states neither leaves them as they are).
    pub fn stated_in(self, message: &str) -> WindowLimits {
        LimitStatement::in_message(message).map_or(self, |statement| self.with(statement))
    }

    /// These limits with what `statement` states in place of theirs.
    pub fn with(self, statement: LimitStatement) -> WindowLimits {
        match statement {
            LimitStatement::Requests { limit, window } => WindowLimits { requests: limit, window, ..self },
            LimitStatement::ExecutionTime { limit, window } => WindowLimits { execution_time: limit, window, ..self },
        }
    }
}

/// One limit as a 429 states it: each message names the one that was exceeded, and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStatement {
    Requests { limit: u32, window: Duration },
    ExecutionTime { limit: Duration, window: Duration },
}

impl LimitStatement {
    /// The limit a 429's message states:
    /// - `Number of requests exceeded the limit of 6000 over time window of 300 seconds.`
    /// - `Combined execution time of incoming requests exceeded limit of 1,200,000  milliseconds over time window
    ///   of 300 seconds. …`
    ///
    /// `None` for any other message (the concurrency limit's names no window), or numbers that cannot be limits.
    pub fn in_message(message: &str) -> Option<LimitStatement> {
        let number_after = |marker: &str| -> Option<u64> {
            let rest = &message[message.find(marker)? + marker.len()..];
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == ',')
                .filter(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        let window = Duration::from_secs(number_after("time window of").filter(|s| *s > 0)?);
        if message.starts_with("Number of requests") {
            let limit = number_after("limit of").and_then(|n| u32::try_from(n).ok())?.max(1);
            Some(LimitStatement::Requests { limit, window })
        } else if message.starts_with("Combined execution time") {
            let limit = Duration::from_millis(number_after("limit of").filter(|ms| *ms > 0)?);
            Some(LimitStatement::ExecutionTime { limit, window })
        } else {
            None
        }
    }

    /// Whether both state the same limit (not necessarily the same value).
    pub fn same_limit(&self, other: &LimitStatement) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// A limit a 429 stated, and when: processes writing to one environment share what each was told, and the latest
/// statement of each limit holds (Dataverse applies the same limits to every user and web server of an
/// environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatedLimit {
    pub statement: LimitStatement,
    pub at: std::time::SystemTime,
}

/// What was spent of one user's budget on one web server over a window: requests sent, and their execution
/// time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spending {
    pub requests: u32,
    pub execution_time: Duration,
}

impl std::ops::Add for Spending {
    type Output = Spending;
    fn add(self, other: Spending) -> Spending {
        Spending {
            requests: self.requests.saturating_add(other.requests),
            execution_time: self.execution_time + other.execution_time,
        }
    }
}

/// What this user spent over the window, by this client's account.
#[derive(Debug)]
pub struct Budget {
    limits: WindowLimits,
    /// When each request was sent, oldest first.
    sent: VecDeque<Instant>,
    /// When each answered request ended, and how long it took, oldest first.
    ended: VecDeque<(Instant, Duration)>,
    spent: Duration,
    /// Execution time the server had counted beyond this client's, and when it said so.
    others: Option<(Instant, Duration)>,
    /// What other clients of the user last reported spending in their window.
    reported: Option<Report>,
    /// This client's own spending when the last report came: what the others heard of it at their next.
    published: Option<(Instant, Spending)>,
    /// The most this client had in its window since the last report came (see [`Budget::to_report`]).
    peak: Spending,
    /// Whether the execution-time limit is the environment's (a 429 stated it, or it was given) rather than
    /// assumed.
    known: bool,
    /// While the limits are assumed: the server's latest word on what remained.
    said: Option<Said>,
}

/// Other clients' report of what they spent in their window: when it came, how many clients it adds up, and what
/// they had heard this client spent (the room is shared from that).
#[derive(Debug, Clone, Copy)]
struct Report {
    at: Instant,
    others: Spending,
    clients: u32,
    own: Spending,
}

/// What the server said remained of the execution time when it admitted a request, and this client's own
/// spending when it sent it: what this client spent since comes off what remained.
#[derive(Debug, Clone, Copy)]
struct Said {
    sent: Instant,
    remaining: Duration,
    own: Duration,
}

impl Budget {
    /// A budget under `limits` as given, or Dynamics 365's until a 429 states the environment's.
    pub fn new(limits: Option<WindowLimits>) -> Self {
        Budget {
            limits: limits.unwrap_or_default(),
            sent: VecDeque::new(),
            ended: VecDeque::new(),
            spent: Duration::ZERO,
            others: None,
            reported: None,
            published: None,
            peak: Spending::default(),
            known: limits.is_some(),
            said: None,
        }
    }

    pub fn limits(&self) -> WindowLimits {
        self.limits
    }

    /// Whether the execution-time limit is the environment's (a 429 stated it, or it was given) rather than
    /// assumed.
    pub fn known(&self) -> bool {
        self.known
    }

    /// Takes the limit a 429 stated; whether the limits changed.
    pub fn learn(&mut self, statement: LimitStatement) -> bool {
        self.known |= matches!(statement, LimitStatement::ExecutionTime { .. });
        let stated = self.limits.with(statement);
        let changed = stated != self.limits;
        self.limits = stated;
        changed
    }

    fn expire(&mut self, now: Instant) {
        let window = self.limits.window;
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            self.sent.pop_front();
        }
        while let Some(&(t, took)) = self.ended.front() {
            if now.duration_since(t) < window {
                break;
            }
            self.ended.pop_front();
            self.spent = self.spent.saturating_sub(took);
        }
        if self.others.is_some_and(|(t, _)| now.duration_since(t) >= window) {
            self.others = None;
        }
        if self.reported.is_some_and(|r| now.duration_since(r.at) >= window) {
            self.reported = None;
        }
    }

    /// Others' spending in the window: their requests as they reported them, and the larger of the execution
    /// time they reported and what the server counted beyond this client's.
    pub fn others(&mut self, now: Instant) -> Spending {
        self.expire(now);
        let reported = self.reported.map(|r| r.others).unwrap_or_default();
        let said = self.others.map_or(Duration::ZERO, |(_, d)| d);
        Spending { requests: reported.requests, execution_time: reported.execution_time.max(said) }
    }

    /// What `clients` other clients of this user on this server reported spending in their window, now: it
    /// replaces their previous report, and lapses a window from now unless another replaces it. No client is
    /// an empty report.
    pub fn others_report(&mut self, now: Instant, spending: Spending, clients: u32) {
        let current = self.to_report(now);
        self.peak = self.own_spending(now);
        let window = self.limits.window;
        // Reports come once a tick, and this client's own went out just before this one came in.
        let heard = self.published.filter(|(t, _)| now.duration_since(*t) < window).map_or(current, |(_, s)| s);
        self.published = Some((now, current));
        self.reported = (clients > 0).then_some(Report { at: now, others: spending, clients, own: heard });
    }

    /// The part of the room the last report left that is the other clients': each of them may take its part
    /// before this client hears of it, as this client may.
    fn reserved(&self) -> Spending {
        let Some(report) = self.reported else { return Spending::default() };
        let (theirs, all) = (report.clients, report.clients.saturating_add(1));
        let most_requests = ((f64::from(self.limits.requests) * SHARE) as u32).max(1);
        let room = most_requests.saturating_sub(report.own.requests.saturating_add(report.others.requests));
        let said = self.others.map_or(Duration::ZERO, |(_, d)| d);
        let spent = report.own.execution_time + report.others.execution_time.max(said);
        let room_time = self.limits.execution_time.mul_f64(SHARE).saturating_sub(spent);
        Spending {
            requests: u32::try_from((u64::from(room) * u64::from(theirs)).div_ceil(u64::from(all))).unwrap_or(room),
            execution_time: room_time.mul_f64(f64::from(theirs) / f64::from(all)),
        }
    }

    /// This client's own requests and execution time in the window.
    pub fn own_spending(&mut self, now: Instant) -> Spending {
        self.expire(now);
        Spending { requests: u32::try_from(self.sent.len()).unwrap_or(u32::MAX), execution_time: self.spent }
    }

    /// What this client reports to the others: the most of its requests and of its execution time it had in its
    /// window since the last report came, so that a moment between its oldest requests leaving and their
    /// successors going out does not read as room.
    pub fn to_report(&mut self, now: Instant) -> Spending {
        let own = self.own_spending(now);
        Spending {
            requests: own.requests.max(self.peak.requests),
            execution_time: own.execution_time.max(self.peak.execution_time),
        }
    }

    /// A request sent now.
    pub fn sent(&mut self, now: Instant) {
        self.expire(now);
        self.sent.push_back(now);
        self.peak.requests = self.peak.requests.max(u32::try_from(self.sent.len()).unwrap_or(u32::MAX));
    }

    /// The request sent at `sent` was answered now: the server admitted it in between, so it counts for a
    /// window from now.
    pub fn answered(&mut self, sent: Instant, now: Instant) {
        self.expire(now);
        if let Some(i) = self.sent.iter().rposition(|t| *t == sent) {
            self.sent.remove(i);
            let at = self.sent.iter().rposition(|t| *t <= now).map_or(0, |p| p + 1);
            self.sent.insert(at, now);
        }
    }

    /// A request answered now, after `took`.
    pub fn ended(&mut self, now: Instant, took: Duration) {
        self.expire(now);
        self.ended.push_back((now, took));
        self.spent += took;
        self.peak.execution_time = self.peak.execution_time.max(self.spent);
    }

    /// Execution time spent in the window: this client's, and others' ([`others`](Self::others)).
    pub fn spent(&mut self, now: Instant) -> Duration {
        let others = self.others(now).execution_time;
        self.spent + others
    }

    /// The server's word on what remained of the execution time when it admitted a request, which this client
    /// sent at `sent`, when it had itself spent `own` and may have been counted for `own_at_send` (`own` and
    /// what it had in flight).
    pub fn server_remaining(
        &mut self,
        now: Instant,
        remaining: Duration,
        own_at_send: Duration,
        sent: Instant,
        own: Duration,
    ) {
        if !self.known {
            if self.said.is_none_or(|said| said.sent <= sent) {
                self.said = Some(Said { sent, remaining, own });
            }
            return;
        }
        self.expire(now);
        let counted = self.limits.execution_time.saturating_sub(remaining);
        let others = counted.saturating_sub(own_at_send);
        self.others = (!others.is_zero()).then_some((now, others));
    }

    /// While the limits are assumed (the server's word on them is all there is): whether what the server last
    /// said remained, less what this client spent since, leaves nothing for `in_flight` more. The executor then
    /// sends one request at a time, until an answer says more remains or a 429 states the limits: several
    /// refused at once would lengthen the wait each refusal asks for.
    pub fn spent_by_the_server_s_word(&mut self, now: Instant, in_flight: Duration) -> bool {
        let Some(said) = self.said.filter(|_| !self.known) else { return false };
        let since = self.own(now).saturating_sub(said.own);
        said.remaining <= since + in_flight
    }

    /// How much of the window is spent: the larger of its requests and execution time (this client's and
    /// others') as a share of their limits.
    pub fn share(&mut self, now: Instant) -> f64 {
        let spent = self.spent(now);
        let others = self.others(now).requests as usize;
        let requests = (self.sent.len() + others) as f64 / f64::from(self.limits.requests.max(1));
        let time = spent.as_secs_f64() / self.limits.execution_time.as_secs_f64().max(1e-9);
        requests.max(time)
    }

    /// This client's own execution time in the window.
    pub fn own(&mut self, now: Instant) -> Duration {
        self.expire(now);
        self.spent
    }

    /// `None` when a request may be sent now with `in_flight` more execution time expected before it ends;
    /// otherwise the instant before which it may not.
    pub fn hold(&mut self, now: Instant, in_flight: Duration) -> Option<Instant> {
        let others = self.others(now) + self.reserved();
        let limits = self.limits;
        let most_requests = ((f64::from(limits.requests) * SHARE) as usize).max(1);
        let most_time = limits.execution_time.mul_f64(SHARE);
        let mut until: Option<Instant> = None;
        let mut later = |t: Instant| until = Some(until.map_or(t, |u| u.max(t)));
        let requests = self.sent.len() + others.requests as usize;
        if requests >= most_requests {
            // This client's oldest requests must leave the window until one more fits beside the others' (and
            // their part of the room).
            match self.sent.get(requests - most_requests) {
                Some(t) => later(*t + limits.window),
                // The others' alone fill it: wait for their next report, or for it to lapse.
                None => later(now + Duration::from_millis(50)),
            }
        }
        let wanted = self.spent + others.execution_time + in_flight;
        if wanted >= most_time {
            // The oldest entries leave the window first: wait until enough of them have.
            let mut over = wanted - most_time;
            let mut free_at = None;
            for (t, took) in &self.ended {
                free_at = Some(*t + limits.window);
                if *took > over {
                    break;
                }
                over -= *took;
            }
            match free_at {
                Some(t) if over < self.spent => later(t),
                // Not even the whole window's own spending makes room (others', or what is in flight): wait
                // for the next answer or the others' share to lapse.
                _ => later(now + Duration::from_millis(50)),
            }
        }
        until.filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(message: &str) -> LimitStatement {
        LimitStatement::in_message(message).unwrap()
    }

    fn small() -> WindowLimits {
        WindowLimits { requests: 100, execution_time: Duration::from_secs(40), window: Duration::from_secs(10) }
    }

    #[test]
    fn a_refusal_s_message_states_the_limits() {
        let limits = WindowLimits::default();
        let time = limits.stated_in(
            "Combined execution time of incoming requests exceeded limit of 40,000  milliseconds over time window of \
             10 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
        );
        assert_eq!(
            time,
            WindowLimits { execution_time: Duration::from_secs(40), window: Duration::from_secs(10), ..limits }
        );
        let requests = time.stated_in("Number of requests exceeded the limit of 200 over time window of 10 seconds.");
        assert_eq!(requests.requests, 200);
        assert_eq!(requests.execution_time, Duration::from_secs(40), "what a message does not state is kept");
        assert_eq!(limits.stated_in("Number of concurrent requests exceeded the limit of 52."), limits);
        assert_eq!(limits.stated_in("limit of ,,, over time window of 0 seconds"), limits);
    }

    #[test]
    fn execution_time_is_held_at_the_share_until_the_oldest_leaves_the_window() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        for i in 0..10 {
            budget.ended(start + Duration::from_secs(i), Duration::from_secs(4));
        }
        let now = start + Duration::from_secs(9);
        assert_eq!(budget.spent(now), Duration::from_secs(40));
        // 40 s spent, 39.6 s allowed: the first 4 s must leave (at 0 + 10 s).
        assert_eq!(budget.hold(now, Duration::ZERO), Some(start + Duration::from_secs(10)));
        // With 4 s in flight, two must leave.
        assert_eq!(budget.hold(now, Duration::from_secs(4)), Some(start + Duration::from_secs(11)));
        let later = start + Duration::from_secs(11);
        assert_eq!(budget.hold(later, Duration::ZERO), None, "two left the window: 32 s spent");
    }

    #[test]
    fn requests_are_held_at_the_share_of_their_count() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        for i in 0..99 {
            budget.sent(start + Duration::from_millis(i * 10));
        }
        let now = start + Duration::from_secs(1);
        assert_eq!(budget.hold(now, Duration::ZERO), Some(start + Duration::from_secs(10)));
        assert_eq!(budget.hold(start + Duration::from_secs(10), Duration::ZERO), None);
    }

    #[test]
    fn what_the_server_counted_beyond_this_client_is_another_s_until_the_window_passes() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        budget.ended(start, Duration::from_secs(5));
        // The server had counted 30 s when this client had spent 5 s.
        budget.server_remaining(start, Duration::from_secs(10), Duration::from_secs(5), start, Duration::from_secs(5));
        assert_eq!(budget.spent(start), Duration::from_secs(30));
        assert!(budget.hold(start, Duration::from_secs(10)).is_some());
        assert_eq!(budget.hold(start, Duration::from_secs(9)), None);
        assert_eq!(budget.spent(start + Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn an_answered_request_counts_for_a_window_from_its_answer() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        for i in 0..99 {
            budget.sent(start + Duration::from_millis(i));
        }
        // The first, answered after 300 ms, is counted by the server from some time before that.
        budget.answered(start, start + Duration::from_millis(300));
        assert_eq!(
            budget.hold(start + Duration::from_secs(1), Duration::ZERO),
            Some(start + Duration::from_millis(10_001)),
            "the second sent is now the first to leave"
        );
        assert_eq!(budget.hold(start + Duration::from_millis(10_001), Duration::ZERO), None);
        assert_eq!(budget.own_spending(start + Duration::from_millis(10_299)).requests, 1);
        assert_eq!(budget.own_spending(start + Duration::from_millis(10_300)).requests, 0);
    }

    #[test]
    fn requests_others_reported_count_as_this_client_s_own() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        for i in 0..40 {
            budget.sent(start + Duration::from_millis(i * 10));
        }
        assert_eq!(budget.hold(start + Duration::from_secs(1), Duration::ZERO), None, "40 of 99 requests");
        // Another process sent 59 in its window: 99 together, the share of 100.
        budget.others_report(start + Duration::from_secs(1), Spending { requests: 59, ..Spending::default() }, 1);
        let now = start + Duration::from_secs(1);
        assert_eq!(budget.hold(now, Duration::ZERO), Some(start + Duration::from_secs(10)), "the oldest must leave");
        assert!((budget.share(now) - 0.99).abs() < 1e-9, "{}", budget.share(now));
        // 70: twelve of this client's must leave for one more to fit, the twelfth sent at 110 ms.
        budget.others_report(now, Spending { requests: 70, ..Spending::default() }, 1);
        assert_eq!(budget.hold(now, Duration::ZERO), Some(start + Duration::from_millis(10_110)));
        // The others' alone fill the window: nothing of this client's leaving makes room.
        budget.others_report(now, Spending { requests: 99, ..Spending::default() }, 1);
        assert!(budget.hold(now, Duration::ZERO).is_some_and(|t| t > now && t < now + Duration::from_secs(1)));
    }

    #[test]
    fn execution_time_others_reported_holds_requests() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        budget.ended(start, Duration::from_secs(5));
        budget.others_report(start, Spending { requests: 1, execution_time: Duration::from_secs(30) }, 1);
        assert_eq!(budget.spent(start), Duration::from_secs(35));
        // Of the 4.6 s left of the 39.6 s allowed, half is the other client's until it is heard of again.
        assert_eq!(budget.hold(start, Duration::from_secs(2)), None, "35 + 2.3 + 2 s");
        assert_eq!(budget.hold(start, Duration::from_secs(3)), Some(start + Duration::from_secs(10)));
        assert_eq!(budget.own_spending(start), Spending { requests: 0, execution_time: Duration::from_secs(5) });
    }

    #[test]
    fn a_client_reports_the_most_it_had_since_its_last_report_so_that_a_refill_does_not_read_as_room() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        for i in 0..60 {
            budget.sent(start + Duration::from_millis(i));
        }
        budget.others_report(start + Duration::from_secs(1), Spending::default(), 1);
        // The sixty leave the window; ten of their successors have gone out when the next report is made.
        let refilling = start + Duration::from_millis(10_100);
        for i in 0..10 {
            budget.sent(refilling + Duration::from_millis(i));
        }
        let now = refilling + Duration::from_millis(20);
        assert_eq!(budget.own_spending(now).requests, 10);
        assert_eq!(budget.to_report(now).requests, 60, "the most since the last report");
        // Once the others heard it, the next report tells what the window holds from then on.
        budget.others_report(now, Spending::default(), 1);
        assert_eq!(budget.to_report(now).requests, 10);
        budget.sent(now + Duration::from_millis(1));
        budget.ended(now + Duration::from_millis(2), Duration::from_secs(3));
        assert_eq!(budget.to_report(now + Duration::from_secs(11)).requests, 11, "until the next report");
        budget.others_report(now + Duration::from_secs(11), Spending::default(), 1);
        assert_eq!(
            budget.to_report(now + Duration::from_secs(11)),
            Spending { requests: 0, execution_time: Duration::ZERO },
            "all of it left the window"
        );
    }

    #[test]
    fn a_report_lapses_a_window_after_it_was_made_unless_another_replaces_it() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        let full = Spending { requests: 99, execution_time: Duration::from_secs(39) };
        budget.others_report(start, full, 1);
        assert!(budget.hold(start + Duration::from_secs(9), Duration::ZERO).is_some());
        assert_eq!(budget.hold(start + Duration::from_secs(10), Duration::ZERO), None, "its maker stopped reporting");
        assert_eq!(budget.others(start + Duration::from_secs(10)), Spending::default());
        let later = start + Duration::from_secs(11);
        budget.others_report(later, full, 1);
        budget.others_report(later + Duration::from_secs(5), Spending { requests: 10, ..Spending::default() }, 1);
        assert_eq!(budget.hold(later + Duration::from_secs(5), Duration::ZERO), None, "the newer report replaced it");
        budget.others_report(later + Duration::from_secs(6), Spending::default(), 1);
        assert_eq!(budget.others(later + Duration::from_secs(6)), Spending::default(), "nothing spent");
    }

    #[test]
    fn the_server_s_word_and_others_report_are_not_added() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(small()));
        // The server counted 20 s beyond this client's; the others say they spent 15 s: the same 20 s.
        budget.server_remaining(start, Duration::from_secs(20), Duration::ZERO, start, Duration::ZERO);
        budget.others_report(start, Spending { requests: 30, execution_time: Duration::from_secs(15) }, 1);
        assert_eq!(budget.others(start), Spending { requests: 30, execution_time: Duration::from_secs(20) });
        assert_eq!(budget.spent(start), Duration::from_secs(20));
        // 20 s the others', and half of the 19.6 s left theirs: 9 s more fit, as they would not with 35 s.
        assert_eq!(budget.hold(start, Duration::from_secs(9)), None);
        // They now say 25 s: more than the server had counted when it last said.
        budget.others_report(start, Spending { requests: 30, execution_time: Duration::from_secs(25) }, 1);
        assert_eq!(budget.spent(start), Duration::from_secs(25));
        assert!(budget.hold(start, Duration::from_secs(9)).is_some(), "25 + 7.3 + 9 s");
    }

    /// Requests sent at `now` until the budget holds one.
    fn sent_until_held(budget: &mut Budget, now: Instant) -> usize {
        let mut sent = 0;
        while budget.hold(now, Duration::ZERO).is_none() && sent < 1000 {
            budget.sent(now);
            sent += 1;
        }
        sent
    }

    #[test]
    fn the_room_a_report_leaves_is_shared_with_the_clients_that_may_take_it_before_the_next() {
        let start = Instant::now();
        let others = Spending { requests: 30, ..Spending::default() };
        let mut budget = Budget::new(Some(small()));
        for _ in 0..20 {
            budget.sent(start);
        }
        // One other client sent 30: 49 of the 99 are left, and 25 of them are its to take.
        budget.others_report(start, others, 1);
        assert_eq!(sent_until_held(&mut budget, start), 24);
        // Two others: two thirds of the room are theirs.
        let mut budget = Budget::new(Some(small()));
        for _ in 0..20 {
            budget.sent(start);
        }
        budget.others_report(start, others, 2);
        assert_eq!(sent_until_held(&mut budget, start), 16);
        // They say the same at the next report, made before they heard of this client's 16: they may have taken
        // their part of the room since, as this client took its own. Nothing more until they have heard.
        let next = start + Duration::from_secs(1);
        budget.others_report(next, others, 2);
        assert_eq!(sent_until_held(&mut budget, next), 0);
        // They have heard, and took none of it: a third of what is left is this client's.
        let after = start + Duration::from_secs(2);
        budget.others_report(after, others, 2);
        assert_eq!(sent_until_held(&mut budget, after), 11);
        // No report, no share: the whole room is this client's.
        let mut budget = Budget::new(Some(small()));
        assert_eq!(sent_until_held(&mut budget, start), 99);
    }

    #[test]
    fn what_remains_is_not_read_as_others_spending_until_the_limits_are_known() {
        let start = Instant::now();
        // Dynamics' 1,200 s assumed, where the environment allows 40 s: 30 s remaining is not 1,170 s spent.
        let mut budget = Budget::new(None);
        budget.server_remaining(start, Duration::from_secs(30), Duration::ZERO, start, Duration::ZERO);
        assert_eq!(budget.spent(start), Duration::ZERO);
        assert!(budget.learn(stated("Number of requests exceeded the limit of 100 over time window of 10 seconds.")));
        budget.server_remaining(start, Duration::from_secs(30), Duration::ZERO, start, Duration::ZERO);
        assert_eq!(budget.spent(start), Duration::ZERO, "a request limit says nothing of the execution time");
        assert!(budget.learn(stated(
            "Combined execution time of incoming requests exceeded limit of 40,000  milliseconds over time window of \
             10 seconds."
        )));
        budget.server_remaining(start, Duration::from_secs(30), Duration::ZERO, start, Duration::ZERO);
        assert_eq!(budget.spent(start), Duration::from_secs(10));
    }

    #[test]
    fn while_the_limits_are_assumed_the_server_s_word_that_nothing_remains_holds_all_but_one_request() {
        let start = Instant::now();
        let mut budget = Budget::new(None);
        // Admitted with 30 s remaining, when this client had spent 2 s.
        budget.ended(start, Duration::from_secs(2));
        budget.server_remaining(start, Duration::from_secs(30), Duration::ZERO, start, Duration::from_secs(2));
        assert!(!budget.spent_by_the_server_s_word(start, Duration::from_secs(20)), "20 s in flight fit in 30");
        assert!(budget.spent_by_the_server_s_word(start, Duration::from_secs(30)));
        // Six requests of 5 s ended since: the server has nothing left, as far as it said.
        let later = start + Duration::from_secs(6);
        for _ in 0..6 {
            budget.ended(later, Duration::from_secs(5));
        }
        assert!(budget.spent_by_the_server_s_word(later, Duration::ZERO));
        // A later answer says more remains (the window moved on).
        budget.server_remaining(later, Duration::from_secs(25), Duration::ZERO, later, Duration::from_secs(32));
        assert!(!budget.spent_by_the_server_s_word(later, Duration::from_secs(20)));
        // An earlier request's answer, arriving late, does not overrule it.
        budget.server_remaining(later, Duration::from_secs(1), Duration::ZERO, start, Duration::from_secs(2));
        assert!(!budget.spent_by_the_server_s_word(later, Duration::from_secs(20)));
        // Once a 429 states the limits, the model decides.
        budget.learn(stated(
            "Combined execution time of incoming requests exceeded limit of 40,000  milliseconds over time window of \
             10 seconds.",
        ));
        assert!(!budget.spent_by_the_server_s_word(later, Duration::from_secs(100)));
    }
}
