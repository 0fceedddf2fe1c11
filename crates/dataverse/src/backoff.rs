//! Exponential backoff with jitter: the one formula this crate waits by between retries.
//!
//! Retry number `n` (from 1) waits a random delay between half and all of `initial × 2ⁿ⁻¹`, capped at `max`
//! ("equal jitter"). The random half spreads the retries of many requests that failed together, so they do not
//! come back in the same millisecond and fail together again; the fixed half keeps the wait long enough to
//! matter. Until the cap, a delay is never shorter than the one before it: the lowest draw for retry `n + 1` is
//! the highest for retry `n`.
//!
//! [`Backoff`] counts the retries for its owner; [`Backoff::delay`] is the same formula for a caller that counts
//! them itself (the [executor](crate::executor) keeps one count per request, across kinds of failure).

use std::time::Duration;

/// Delays between retries, growing exponentially up to a cap, each one jittered.
///
/// ```
/// use dataverse::Backoff;
/// use std::time::Duration;
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// let first = backoff.next();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// let second = backoff.next();
/// assert!(second >= first && second <= Duration::from_millis(200));
/// backoff.reset();
/// assert_eq!(backoff.attempts(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Starts with delays around `initial` and never waits longer than `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, attempts: 0 }
    }

    /// The delay before the next retry, which it counts.
    #[allow(clippy::should_implement_trait)] // Not an iterator: it never ends, and `reset` starts it over.
    pub fn next(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        Self::delay(self.initial, self.max, self.attempts)
    }

    /// Starts over, after a success: the next delay is around `initial` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Delays handed out since the start or the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before retry number `retry` (from 1; 0 counts as 1): a uniform draw between half and all of
    /// [`ceiling`](Self::ceiling).
    pub fn delay(initial: Duration, max: Duration, retry: u32) -> Duration {
        Self::ceiling(initial, max, retry).mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// The longest delay retry number `retry` can draw: `initial × 2^(retry − 1)`, capped at `max`.
    pub fn ceiling(initial: Duration, max: Duration, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        initial.saturating_mul(factor).min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(15);

    #[test]
    fn delays_grow_until_the_cap() {
        for _ in 0..100 {
            let mut backoff = Backoff::new(INITIAL, MAX);
            let mut previous = Duration::ZERO;
            // 100 ms × 2⁷ = 12.8 s is the last ceiling under the 15 s cap.
            for _ in 0..8 {
                let delay = backoff.next();
                assert!(delay >= previous, "retry {} waited {delay:?} after {previous:?}", backoff.attempts());
                previous = delay;
            }
        }
        assert_eq!(Backoff::ceiling(INITIAL, MAX, 1), INITIAL);
        assert_eq!(Backoff::ceiling(INITIAL, MAX, 4), Duration::from_millis(800));
        assert_eq!(Backoff::ceiling(INITIAL, MAX, 0), INITIAL, "retry 0 counts as the first");
    }

    #[test]
    fn delays_never_exceed_the_cap() {
        let mut backoff = Backoff::new(INITIAL, MAX);
        for _ in 0..1000 {
            let delay = backoff.next();
            assert!(delay <= MAX, "retry {} waited {delay:?}", backoff.attempts());
        }
        assert_eq!(backoff.attempts(), 1000);
        for retry in [9, 31, 32, 1000, u32::MAX] {
            assert_eq!(Backoff::ceiling(INITIAL, MAX, retry), MAX, "retry {retry}");
            let delay = Backoff::delay(INITIAL, MAX, retry);
            assert!(delay >= MAX / 2 && delay <= MAX, "retry {retry} waited {delay:?}");
        }
        assert!(Backoff::delay(Duration::from_secs(60), MAX, 1) <= MAX, "even the first delay is capped");
    }

    #[test]
    fn delays_are_jittered_between_half_and_all_of_the_ceiling() {
        let ceiling = Backoff::ceiling(INITIAL, MAX, 3);
        let draws: Vec<Duration> = (0..200).map(|_| Backoff::delay(INITIAL, MAX, 3)).collect();
        for draw in &draws {
            assert!(*draw >= ceiling / 2 && *draw <= ceiling, "{draw:?} is outside {:?}..={ceiling:?}", ceiling / 2);
        }
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "200 draws gave only {} different delays", distinct.len());
        let (low, high) = draws.iter().partition::<Vec<&Duration>, _>(|d| **d < ceiling.mul_f64(0.75));
        assert!(!low.is_empty() && !high.is_empty(), "the draws spread over the whole range");
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(INITIAL, MAX);
        for _ in 0..10 {
            backoff.next();
        }
        assert!(backoff.next() >= MAX / 2);
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        let first = backoff.next();
        assert!(first <= INITIAL, "the first delay after a reset is {first:?}");
        assert_eq!(backoff.attempts(), 1);
    }
}
