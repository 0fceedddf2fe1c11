//! Injected faults, for resilience tests: 500 and 503 answers, dropped connections, slow answers and
//! token-endpoint outages, by rate or by schedule.
//!
//! Reproducible from a seed: whether request number `n` gets a fault is a pure function of the seed, the
//! rule and `n`, so the same plan run against the same sequence of requests faults the same requests.

use crate::limits::parse_duration;
use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `500 Internal Server Error` with Dataverse's generic error body.
    ServerError,
    /// `503 Service Unavailable`, as during a deployment or failover.
    Unavailable,
    /// The connection is closed without an answer.
    Drop,
    /// The answer comes this much later than it would.
    Slow(Duration),
    /// The token endpoint answers `503 temporarily_unavailable`, as Entra ID does during an outage.
    TokenOutage,
}

impl Fault {
    /// Whether the fault applies to token requests (else to Web API requests).
    pub fn on_token_endpoint(self) -> bool {
        matches!(self, Fault::TokenOutage)
    }
}

/// Which requests a rule hits. Requests are numbered from 1, Web API and token requests separately.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Each request with this probability, drawn from the seed.
    Rate(f64),
    /// Every n-th request.
    Every(u64),
    /// Requests `first..=last`.
    Requests { first: u64, last: u64 },
    /// Every request from `after` the start, for `lasting`.
    Window { after: Duration, lasting: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub fault: Fault,
    pub when: When,
}

/// A seeded set of fault rules. The first rule that hits a request decides its fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    pub rules: Vec<FaultRule>,
}

impl FaultPlan {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A plan being applied to a running emulator. A test may set up its data first and inject faults after:
/// a new plan numbers requests and counts time from when it is set.
#[derive(Debug)]
pub struct Faults {
    active: RwLock<Active>,
    web_api_requests: AtomicU64,
    token_requests: AtomicU64,
}

#[derive(Debug)]
struct Active {
    plan: FaultPlan,
    started: Instant,
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Self {
        Faults {
            active: RwLock::new(Active { plan, started: Instant::now() }),
            web_api_requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
        }
    }

    /// Replaces the plan; requests are numbered from 1 again.
    pub fn inject(&self, plan: FaultPlan) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        *active = Active { plan, started: Instant::now() };
        self.web_api_requests.store(0, Ordering::Relaxed);
        self.token_requests.store(0, Ordering::Relaxed);
    }

    /// Numbers the next request of its kind and says which fault, if any, it gets.
    pub fn next(&self, token_endpoint: bool) -> Option<Fault> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        if active.plan.is_empty() {
            return None;
        }
        let counter = if token_endpoint { &self.token_requests } else { &self.web_api_requests };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        fault_for(&active.plan, n, token_endpoint, active.started.elapsed())
    }

    /// The fault request number `n` gets at `elapsed` since the plan was set.
    pub fn fault_for(&self, n: u64, token_endpoint: bool, elapsed: Duration) -> Option<Fault> {
        fault_for(&self.active.read().unwrap_or_else(|e| e.into_inner()).plan, n, token_endpoint, elapsed)
    }
}

/// The fault request number `n` gets: a pure function of the plan, `n` and the time, for reproducibility.
fn fault_for(plan: &FaultPlan, n: u64, token_endpoint: bool, elapsed: Duration) -> Option<Fault> {
    plan.rules.iter().enumerate().find_map(|(index, rule)| {
        if rule.fault.on_token_endpoint() != token_endpoint {
            return None;
        }
        let hit = match rule.when {
            When::Rate(p) => unit_draw(plan.seed, index as u64, n) < p,
            When::Every(k) => k > 0 && n.is_multiple_of(k),
            When::Requests { first, last } => (first..=last).contains(&n),
            When::Window { after, lasting } => elapsed >= after && elapsed < after + lasting,
        };
        hit.then_some(rule.fault)
    })
}

/// A uniform draw in [0, 1) from (seed, rule, request number): SplitMix64 over their combination.
fn unit_draw(seed: u64, rule: u64, n: u64) -> f64 {
    let mut z = seed ^ rule.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A rule as written on the command line: `FAULT:WHEN`, where FAULT is `500`, `503`, `drop`, `slow=DURATION` or
/// `token-outage`, and WHEN is `rate=P`, `every=N`, `requests=A-B` or `after=DURATION,for=DURATION`.
impl FromStr for FaultRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const USAGE: &str = "write a fault as FAULT:WHEN, for example 503:rate=0.05, drop:every=100, \
                             slow=2s:requests=10-20 or token-outage:after=30s,for=10s";
        let (fault, when) = text.split_once(':').ok_or_else(|| format!("'{text}': {USAGE}"))?;
        let fault = match fault {
            "500" => Fault::ServerError,
            "503" => Fault::Unavailable,
            "drop" => Fault::Drop,
            "token-outage" => Fault::TokenOutage,
            other => match other.strip_prefix("slow=") {
                Some(d) => Fault::Slow(parse_duration(d).map_err(|e| format!("'{text}': {e}"))?),
                None => {
                    return Err(format!(
                        "'{other}' is not a fault; use 500, 503, drop, slow=DURATION or token-outage ({USAGE})"
                    ));
                }
            },
        };
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("'{text}': '{v}' is not a whole number"));
        let when = if let Some(p) = when.strip_prefix("rate=") {
            match p.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => When::Rate(p),
                _ => return Err(format!("'{text}': the rate is a probability from 0 to 1, like 0.05")),
            }
        } else if let Some(k) = when.strip_prefix("every=") {
            When::Every(number(k)?.max(1))
        } else if let Some(range) = when.strip_prefix("requests=") {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            When::Requests { first: number(first)?, last: number(last)? }
        } else if let Some(rest) = when.strip_prefix("after=") {
            let (after, lasting) =
                rest.split_once(",for=").ok_or_else(|| format!("'{text}': a window is after=DURATION,for=DURATION"))?;
            When::Window {
                after: parse_duration(after).map_err(|e| format!("'{text}': {e}"))?,
                lasting: parse_duration(lasting).map_err(|e| format!("'{text}': {e}"))?,
            }
        } else {
            return Err(format!("'{when}' is not a schedule: {USAGE}"));
        };
        Ok(FaultRule { fault, when })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::ServerError => f.write_str("500"),
            Fault::Unavailable => f.write_str("503"),
            Fault::Drop => f.write_str("drop"),
            Fault::Slow(d) => write!(f, "slow={}ms", d.as_millis()),
            Fault::TokenOutage => f.write_str("token-outage"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, rules: &[&str]) -> Faults {
        Faults::new(FaultPlan { seed, rules: rules.iter().map(|r| r.parse().unwrap()).collect() })
    }

    #[test]
    fn the_same_seed_faults_the_same_requests() {
        let outcomes = |seed| {
            let faults = plan(seed, &["503:rate=0.1", "drop:rate=0.05"]);
            (1..=2000).map(|n| faults.fault_for(n, false, Duration::ZERO)).collect::<Vec<_>>()
        };
        assert_eq!(outcomes(7), outcomes(7));
        assert_ne!(outcomes(7), outcomes(8));
        let hits = outcomes(7).iter().filter(|f| **f == Some(Fault::Unavailable)).count();
        assert!((120..=280).contains(&hits), "about 10% of 2000, got {hits}");
    }

    #[test]
    fn schedules_hit_exactly_what_they_name() {
        let faults = plan(1, &["500:requests=3-4", "slow=2s:every=5", "token-outage:after=10s,for=5s"]);
        let web: Vec<_> = (1..=6).map(|n| faults.fault_for(n, false, Duration::ZERO)).collect();
        assert_eq!(
            web,
            [
                None,
                None,
                Some(Fault::ServerError),
                Some(Fault::ServerError),
                Some(Fault::Slow(Duration::from_secs(2))),
                None
            ]
        );
        assert_eq!(faults.fault_for(1, true, Duration::from_secs(9)), None);
        assert_eq!(faults.fault_for(1, true, Duration::from_secs(12)), Some(Fault::TokenOutage));
        assert_eq!(faults.fault_for(1, true, Duration::from_secs(15)), None);
    }

    #[test]
    fn bad_rules_say_how_to_write_them() {
        assert!("teapot:rate=0.1".parse::<FaultRule>().unwrap_err().contains("use 500, 503, drop"));
        assert!("503:rate=3".parse::<FaultRule>().unwrap_err().contains("probability"));
        assert!("503".parse::<FaultRule>().unwrap_err().contains("FAULT:WHEN"));
    }
}
