//! When an ingestion loads: Flow Service's `scheduleParams` (`once`, or every `interval` minutes, hours, days or
//! weeks from `startTime`), validated as Flow Service validates them, plus dynsync's `continuous` mode, which
//! follows the change feed every few seconds.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The shortest interval Flow Service allows for `minute`.
pub const MIN_MINUTES: i64 = 15;
/// How often a continuous flow reads the change feed, when `interval` does not say.
pub const CONTINUOUS_SECONDS: i64 = 5;

/// How often loads come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "every", content = "seconds")]
pub enum Every {
    /// One load, then none.
    Once,
    /// A load at `startTime` and then every interval after it.
    Interval(i64),
    /// A load as soon as the last one ended and this many seconds passed.
    Continuous(i64),
}

/// An ingestion flow's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    pub start: DateTime<Utc>,
    pub every: Every,
}

/// `scheduleParams` as Flow Service takes them: numbers may come as text (`"startTime": "1567411548"`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Json>,
}

fn number(value: &Json) -> Option<i64> {
    match value {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Schedule {
    /// The schedule `params` describe, or every problem with them (field, message). Without `scheduleParams` a
    /// flow loads once, now.
    pub fn from_params(params: Option<&ScheduleParams>, now: DateTime<Utc>) -> Result<Schedule, Vec<(String, String)>> {
        let Some(params) = params else { return Ok(Schedule { start: now, every: Every::Once }) };
        let mut problems = Vec::new();
        let start = match &params.start_time {
            None => now,
            Some(value) => match number(value).and_then(|s| DateTime::from_timestamp(s, 0)) {
                Some(start) => start,
                None => {
                    problems.push((
                        "scheduleParams.startTime".to_string(),
                        format!("{value} is not a time: give seconds since 1970-01-01 UTC (\"1567411548\")"),
                    ));
                    now
                }
            },
        };
        let interval = params.interval.as_ref().map(|v| (v, number(v)));
        let frequency = params.frequency.as_deref().unwrap_or("once");
        let unit = match frequency {
            "once" => None,
            "minute" => Some((60, MIN_MINUTES)),
            "hour" => Some((3_600, 1)),
            "day" => Some((86_400, 1)),
            "week" => Some((604_800, 1)),
            "continuous" => Some((1, 1)),
            other => {
                problems.push((
                    "scheduleParams.frequency".to_string(),
                    format!("'{other}' is not a frequency: use once, minute, hour, day, week or continuous"),
                ));
                None
            }
        };
        let every = match (unit, interval) {
            (None, _) => Every::Once,
            (Some(_), Some((value, None))) => {
                problems.push((
                    "scheduleParams.interval".to_string(),
                    format!("{value} is not a whole number of {frequency}s"),
                ));
                Every::Once
            }
            (Some((_, least)), Some((_, Some(n)))) if n < least => {
                problems.push((
                    "scheduleParams.interval".to_string(),
                    format!("{n} is too short: a {frequency} schedule runs at least every {least} {frequency}s"),
                ));
                Every::Once
            }
            (Some((_, _)), None) if frequency == "continuous" => Every::Continuous(CONTINUOUS_SECONDS),
            (Some(_), None) => {
                problems.push((
                    "scheduleParams.interval".to_string(),
                    format!("a {frequency} schedule needs an interval: how many {frequency}s between loads"),
                ));
                Every::Once
            }
            (Some((1, _)), Some((_, Some(n)))) => Every::Continuous(n),
            (Some((seconds, _)), Some((_, Some(n)))) => Every::Interval(seconds * n),
        };
        if problems.is_empty() { Ok(Schedule { start, every }) } else { Err(problems) }
    }

    /// When the load after one that started at `last_start` and finished at `last_finish` is due; `None` when no
    /// load comes any more. Without a last load, the first is due at the start.
    pub fn next_load(&self, last: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Option<DateTime<Utc>> {
        let Some((last_start, last_finish)) = last else { return Some(self.start) };
        match self.every {
            Every::Once => None,
            Every::Continuous(seconds) => Some(last_finish + Duration::seconds(seconds)),
            Every::Interval(seconds) => {
                // The next slot of start + k × interval after the last load's start: a load that ran late does
                // not shift the ones after it, and missed slots make one load, not several.
                let since = (last_start - self.start).num_seconds().max(0);
                let k = since / seconds + 1;
                Some(self.start + Duration::seconds(k * seconds))
            }
        }
    }

    /// As `scheduleParams`, for the API.
    pub fn to_params(&self) -> Json {
        serde_json::to_value(self.params()).expect("schedule params serialise")
    }

    /// As `scheduleParams`, typed: what a change of the schedule starts from.
    pub fn params(&self) -> ScheduleParams {
        let (frequency, interval) = match self.every {
            Every::Once => ("once", None),
            Every::Continuous(s) => ("continuous", Some(s)),
            Every::Interval(s) if s % 604_800 == 0 => ("week", Some(s / 604_800)),
            Every::Interval(s) if s % 86_400 == 0 => ("day", Some(s / 86_400)),
            Every::Interval(s) if s % 3_600 == 0 => ("hour", Some(s / 3_600)),
            Every::Interval(s) => ("minute", Some(s / 60)),
        };
        ScheduleParams {
            start_time: Some(Json::String(self.start.timestamp().to_string())),
            frequency: Some(frequency.into()),
            interval: interval.map(|n| Json::String(n.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: Json) -> ScheduleParams {
        serde_json::from_value(json).unwrap()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn the_seeds_schedule_reads_as_every_thirty_minutes_from_its_start() {
        let p = params(serde_json::json!({"startTime": "1567411548", "frequency": "minute", "interval": "30"}));
        let s = Schedule::from_params(Some(&p), at(0)).unwrap();
        assert_eq!(s, Schedule { start: at(1_567_411_548), every: Every::Interval(1_800) });
        assert_eq!(s.next_load(None), Some(at(1_567_411_548)));
        // A load that started late keeps the slots: the next is the first slot after it.
        assert_eq!(
            s.next_load(Some((at(1_567_411_548 + 2_000), at(1_567_411_548 + 2_100)))),
            Some(at(1_567_411_548 + 3_600))
        );
        assert_eq!(s.to_params()["frequency"], "minute");
        assert_eq!(s.to_params()["interval"], "30");
    }

    #[test]
    fn every_problem_of_a_schedule_is_reported_at_once() {
        let p = params(serde_json::json!({"startTime": "soon", "frequency": "minute", "interval": 5}));
        let problems = Schedule::from_params(Some(&p), at(0)).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["scheduleParams.startTime", "scheduleParams.interval"]);
        assert!(problems[1].1.contains("at least every 15 minutes"), "{problems:?}");
        let p = params(serde_json::json!({"frequency": "fortnight"}));
        assert!(Schedule::from_params(Some(&p), at(0)).unwrap_err()[0].1.contains("once, minute, hour, day, week"));
        let p = params(serde_json::json!({"frequency": "hour"}));
        assert!(Schedule::from_params(Some(&p), at(0)).unwrap_err()[0].1.contains("needs an interval"));
    }

    #[test]
    fn a_once_schedule_loads_once_and_a_continuous_one_follows_the_last_load() {
        let once = Schedule::from_params(None, at(100)).unwrap();
        assert_eq!(once.next_load(None), Some(at(100)));
        assert_eq!(once.next_load(Some((at(100), at(200)))), None);
        let p = params(serde_json::json!({"frequency": "continuous", "interval": 2}));
        let continuous = Schedule::from_params(Some(&p), at(100)).unwrap();
        assert_eq!(continuous.next_load(Some((at(100), at(150)))), Some(at(152)));
        let p = params(serde_json::json!({"frequency": "continuous"}));
        assert_eq!(Schedule::from_params(Some(&p), at(0)).unwrap().every, Every::Continuous(CONTINUOUS_SECONDS));
    }
}
