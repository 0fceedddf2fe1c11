//! What a rule means, apart from where figures come from and where notices go: a [`Condition`] measures
//! [`Figures`] (the current hour's run and the flow's lag) and says whether it holds; [`transition`] turns that
//! and whether the alert is open into an opening, a resolution or nothing.
//!
//! Why apart: this is the part that decides when a user is told something, so it is a pure function, tested on
//! figures alone. An alert opens once when its condition starts to hold and resolves once when it stops — never
//! at every evaluation in between. A rate counts only once the hour has received the rule's minimum of records,
//! so that one failed record of two does not read as 50 %.

use super::wire::{AlertKind, AlertRule, MeasureUnit};

/// The records an hour must have received before a rate rule counts, unless the rule says otherwise.
pub const DEFAULT_MINIMUM_RECORDS: u64 = 20;

/// A rule's condition, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// A record failed in the current hour's run.
    Failure,
    /// Over `threshold_percent` of the current hour's records failed, once it received `minimum_records`.
    FailureRate { threshold_percent: f64, minimum_records: u64 },
    /// Over `threshold_percent` of the current hour's records were excluded, once it received `minimum_records`.
    ExclusionRate { threshold_percent: f64, minimum_records: u64 },
    /// The flow is over `threshold_seconds` behind.
    Lag { threshold_seconds: u64 },
}

/// What the rules of a flow are measured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// The current hour's run.
    pub received: u64,
    pub excluded: u64,
    pub failed: u64,
    /// How far behind the flow is, in whole seconds: the age of its oldest record waiting, or for a scheduled
    /// ingestion the time since its last load ended.
    pub lag_seconds: u64,
}

/// A condition measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The figure compared with the threshold, in the condition's unit.
    pub value: f64,
    pub holds: bool,
}

/// What an evaluation does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Open,
    Resolve,
    Unchanged,
}

/// An alert closed whose condition holds opens; one open whose condition no longer holds resolves; otherwise
/// nothing happens.
pub fn transition(open: bool, holds: bool) -> Transition {
    match (open, holds) {
        (false, true) => Transition::Open,
        (true, false) => Transition::Resolve,
        _ => Transition::Unchanged,
    }
}

/// `part` of `whole`, in percent; 0 of nothing.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// A percent as a person reads it: `12.5`, `5`, `33.3`.
fn shown(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    format!("{rounded}")
}

impl Condition {
    /// The condition of a rule that passed validation; `None` when a threshold it needs is missing.
    pub fn of(rule: &AlertRule) -> Option<Condition> {
        let minimum_records = rule.minimum_records.unwrap_or(DEFAULT_MINIMUM_RECORDS);
        Some(match rule.kind {
            AlertKind::Failure => Condition::Failure,
            AlertKind::FailureRate => {
                Condition::FailureRate { threshold_percent: rule.threshold_percent?, minimum_records }
            }
            AlertKind::ExclusionRate => {
                Condition::ExclusionRate { threshold_percent: rule.threshold_percent?, minimum_records }
            }
            AlertKind::Lag => Condition::Lag { threshold_seconds: rule.threshold_seconds? },
        })
    }

    /// The rule's name, made of what it checks: the same rule keeps its name (and its open alert) when its
    /// channels change; a changed threshold makes another rule.
    pub fn id(&self) -> String {
        match self {
            Condition::Failure => "failure".to_string(),
            Condition::FailureRate { threshold_percent, minimum_records } => {
                format!("failureRate:{threshold_percent}:{minimum_records}")
            }
            Condition::ExclusionRate { threshold_percent, minimum_records } => {
                format!("exclusionRate:{threshold_percent}:{minimum_records}")
            }
            Condition::Lag { threshold_seconds } => format!("lag:{threshold_seconds}"),
        }
    }

    pub fn kind(&self) -> AlertKind {
        match self {
            Condition::Failure => AlertKind::Failure,
            Condition::FailureRate { .. } => AlertKind::FailureRate,
            Condition::ExclusionRate { .. } => AlertKind::ExclusionRate,
            Condition::Lag { .. } => AlertKind::Lag,
        }
    }

    pub fn unit(&self) -> MeasureUnit {
        match self {
            Condition::Failure => MeasureUnit::Records,
            Condition::FailureRate { .. } | Condition::ExclusionRate { .. } => MeasureUnit::Percent,
            Condition::Lag { .. } => MeasureUnit::Seconds,
        }
    }

    /// The threshold, in the condition's unit; none for a failure (any failed record).
    pub fn threshold(&self) -> Option<f64> {
        match self {
            Condition::Failure => None,
            Condition::FailureRate { threshold_percent, .. } | Condition::ExclusionRate { threshold_percent, .. } => {
                Some(*threshold_percent)
            }
            Condition::Lag { threshold_seconds } => Some(*threshold_seconds as f64),
        }
    }

    /// Whether the condition needs the flow's lag (which costs a query or two), or only its run.
    pub fn needs_lag(&self) -> bool {
        matches!(self, Condition::Lag { .. })
    }

    pub fn measure(&self, figures: &Figures) -> Measurement {
        match *self {
            Condition::Failure => Measurement { value: figures.failed as f64, holds: figures.failed > 0 },
            Condition::FailureRate { threshold_percent, minimum_records } => {
                let value = percent(figures.failed, figures.received);
                Measurement { value, holds: figures.received >= minimum_records && value > threshold_percent }
            }
            Condition::ExclusionRate { threshold_percent, minimum_records } => {
                let value = percent(figures.excluded, figures.received);
                Measurement { value, holds: figures.received >= minimum_records && value > threshold_percent }
            }
            Condition::Lag { threshold_seconds } => {
                Measurement { value: figures.lag_seconds as f64, holds: figures.lag_seconds > threshold_seconds }
            }
        }
    }

    /// One sentence saying what was measured against what, for the notices.
    pub fn summary(&self, figures: &Figures) -> String {
        let measured = self.measure(figures);
        let records = |n: u64| if n == 1 { "1 record".to_string() } else { format!("{n} records") };
        match *self {
            Condition::Failure if measured.holds => {
                format!("{} failed in this hour's run", records(figures.failed))
            }
            Condition::Failure => "no record failed in this hour's run (any failed ones were replayed)".to_string(),
            Condition::FailureRate { threshold_percent, minimum_records }
            | Condition::ExclusionRate { threshold_percent, minimum_records } => {
                let (what, count) = match self.kind() {
                    AlertKind::FailureRate => ("failed", figures.failed),
                    _ => ("were excluded", figures.excluded),
                };
                let rate = format!(
                    "{}% of the {} received this hour {what} ({})",
                    shown(measured.value),
                    records(figures.received),
                    count
                );
                if measured.holds {
                    format!("{rate}, over the {}% threshold", shown(threshold_percent))
                } else if figures.received < minimum_records {
                    format!("{rate}: fewer than the {minimum_records} records the rate counts from")
                } else {
                    format!("{rate}, within the {}% threshold", shown(threshold_percent))
                }
            }
            Condition::Lag { threshold_seconds } if measured.holds => {
                format!("the flow is {} s behind, over the {threshold_seconds} s threshold", figures.lag_seconds)
            }
            Condition::Lag { threshold_seconds } => {
                format!("the flow is {} s behind, within the {threshold_seconds} s threshold", figures.lag_seconds)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(received: u64, excluded: u64, failed: u64) -> Figures {
        Figures { received, excluded, failed, lag_seconds: 0 }
    }

    /// The transitions a condition goes through over a sequence of figures, starting closed.
    fn transitions(condition: Condition, sequence: &[Figures]) -> Vec<Transition> {
        let mut open = false;
        sequence
            .iter()
            .map(|figures| {
                let t = transition(open, condition.measure(figures).holds);
                match t {
                    Transition::Open => open = true,
                    Transition::Resolve => open = false,
                    Transition::Unchanged => {}
                }
                t
            })
            .collect()
    }

    #[test]
    fn an_alert_opens_when_its_condition_starts_resolves_when_it_stops_and_is_quiet_in_between() {
        use Transition::*;
        assert_eq!(transition(false, false), Unchanged);
        assert_eq!(transition(false, true), Open);
        assert_eq!(transition(true, true), Unchanged);
        assert_eq!(transition(true, false), Resolve);
        let sequence = [run(5, 0, 0), run(6, 0, 1), run(9, 0, 3), run(9, 0, 3), run(9, 0, 0), run(9, 0, 0)];
        assert_eq!(
            transitions(Condition::Failure, &sequence),
            [Unchanged, Open, Unchanged, Unchanged, Resolve, Unchanged],
            "one opening, one resolution"
        );
    }

    #[test]
    fn a_failure_rule_fires_on_any_failed_record_and_measures_how_many() {
        let measured = Condition::Failure.measure(&run(100, 0, 2));
        assert_eq!(measured, Measurement { value: 2.0, holds: true });
        assert!(!Condition::Failure.measure(&run(100, 50, 0)).holds);
        assert_eq!(Condition::Failure.summary(&run(100, 0, 1)), "1 record failed in this hour's run");
    }

    #[test]
    fn a_rate_rule_does_not_fire_under_its_minimum_of_records() {
        let rule = Condition::FailureRate { threshold_percent: 10.0, minimum_records: 20 };
        let one_of_two = rule.measure(&run(2, 0, 1));
        assert_eq!(one_of_two, Measurement { value: 50.0, holds: false });
        assert!(rule.summary(&run(2, 0, 1)).contains("fewer than the 20 records"), "{}", rule.summary(&run(2, 0, 1)));
        assert!(!rule.measure(&run(19, 0, 10)).holds, "19 received is still under 20");
        assert!(rule.measure(&run(20, 0, 10)).holds, "20 received counts");
    }

    #[test]
    fn a_rate_rule_fires_only_over_its_threshold() {
        let rule = Condition::ExclusionRate { threshold_percent: 25.0, minimum_records: 20 };
        assert_eq!(rule.measure(&run(40, 10, 0)), Measurement { value: 25.0, holds: false }, "at, not over");
        assert_eq!(rule.measure(&run(40, 11, 0)), Measurement { value: 27.5, holds: true });
        assert!(!rule.measure(&run(40, 0, 30)).holds, "failures are not exclusions");
        assert_eq!(
            rule.summary(&run(40, 11, 0)),
            "27.5% of the 40 records received this hour were excluded (11), over the 25% threshold"
        );
        let failures = Condition::FailureRate { threshold_percent: 0.5, minimum_records: 1 };
        assert!(failures.measure(&run(1_000, 0, 6)).holds && !failures.measure(&run(1_000, 0, 5)).holds);
    }

    #[test]
    fn a_rate_alert_resolves_when_the_rate_falls_or_a_new_hour_has_too_few_records() {
        use Transition::*;
        let rule = Condition::FailureRate { threshold_percent: 10.0, minimum_records: 20 };
        let sequence = [run(30, 0, 6), run(40, 0, 6), run(60, 0, 6), run(3, 0, 3)];
        assert_eq!(transitions(rule, &sequence), [Open, Unchanged, Resolve, Unchanged]);
        let sequence = [run(30, 0, 6), run(3, 0, 3)];
        assert_eq!(transitions(rule, &sequence), [Open, Resolve], "a new hour under the minimum does not count");
    }

    #[test]
    fn a_lag_rule_fires_past_its_threshold_and_resolves_once_the_flow_catches_up() {
        use Transition::*;
        let rule = Condition::Lag { threshold_seconds: 60 };
        let lag = |seconds| Figures { lag_seconds: seconds, ..Figures::default() };
        assert_eq!(
            transitions(rule, &[lag(0), lag(60), lag(61), lag(300), lag(2)]),
            [Unchanged, Unchanged, Open, Unchanged, Resolve]
        );
        assert_eq!(rule.measure(&lag(61)), Measurement { value: 61.0, holds: true });
        assert_eq!(rule.summary(&lag(61)), "the flow is 61 s behind, over the 60 s threshold");
        assert!(rule.needs_lag() && !Condition::Failure.needs_lag());
    }

    #[test]
    fn a_rule_is_named_by_what_it_checks() {
        let rate = AlertRule {
            id: Some("ignored".into()),
            kind: AlertKind::FailureRate,
            threshold_percent: Some(5.0),
            minimum_records: None,
            threshold_seconds: None,
            channels: Default::default(),
        };
        let condition = Condition::of(&rate).unwrap();
        assert_eq!(condition, Condition::FailureRate { threshold_percent: 5.0, minimum_records: 20 });
        assert_eq!(condition.id(), "failureRate:5:20");
        assert_eq!(Condition::Lag { threshold_seconds: 600 }.id(), "lag:600");
        assert_eq!(Condition::ExclusionRate { threshold_percent: 0.5, minimum_records: 1 }.id(), "exclusionRate:0.5:1");
        assert_eq!(Condition::of(&AlertRule { threshold_percent: None, ..rate }), None);
    }
}
