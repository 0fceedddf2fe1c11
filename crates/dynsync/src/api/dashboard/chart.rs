//! The throughput chart of a flow's page: an SVG drawn on the server, one bar per run (an hour), written in green
//! over failed in red, excluded in grey, oldest on the left. No script draws it, so it costs no JavaScript and
//! shows with scripts off; each bar carries its figures as a tooltip and the chart a text summary.

use crate::health::Took;
use crate::store::{HourLag, RunRecord};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// The hours the lag chart spans, as many as the runs shown.
pub const HOURS_SHOWN: i64 = 96;

const WIDTH: u32 = 720;
const HEIGHT: u32 = 160;
/// Room on the left for the scale's label, and below for the first and last hours.
const LEFT: u32 = 48;
const BOTTOM: u32 = 18;

/// The chart of `runs` (newest first, as the store gives them), at most [`crate::api::dashboard`]'s page of runs.
pub fn throughput(runs: &[RunRecord]) -> String {
    if runs.is_empty() {
        return "<p>The chart fills in as the flow runs.</p>".to_string();
    }
    let peak = runs.iter().map(|r| r.tally.received).max().unwrap_or(0).max(1);
    let plot = (WIDTH - LEFT) as f64;
    // A few runs are thin bars on the left, as many are: the scale of time does not change with the count.
    let slot = (plot / runs.len() as f64).min(plot / 48.0);
    let bar = (slot * 0.8).max(1.0);
    let tall = (HEIGHT - BOTTOM) as f64;
    let height = |n: u64| n as f64 / peak as f64 * tall;
    let total: u64 = runs.iter().map(|r| r.tally.written).sum();
    let failed: u64 = runs.iter().map(|r| r.tally.failed).sum();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-summary"><title id="chart-summary">{} runs: {total} records written, {failed} failed; the busiest hour received {peak}</title>"#,
        runs.len()
    );
    let _ = write!(
        svg,
        r#"<text x="0" y="12" class="scale">{peak}</text><text x="0" y="{}" class="scale">0</text>"#,
        HEIGHT - BOTTOM
    );
    for (i, run) in runs.iter().rev().enumerate() {
        let x = LEFT as f64 + i as f64 * slot;
        let t = &run.tally;
        let mut top = tall;
        let _ = write!(
            svg,
            "<g><title>{}: {} received, {} written, {} excluded, {} failed</title>",
            run.hour.format("%Y-%m-%d %H:00 UTC"),
            t.received,
            t.written,
            t.excluded,
            t.failed
        );
        for (count, class) in [(t.written, "w"), (t.excluded, "x"), (t.failed, "f")] {
            if count == 0 {
                continue;
            }
            let h = height(count).max(1.0);
            top -= h;
            let _ = write!(svg, r#"<rect class="{class}" x="{x:.1}" y="{top:.1}" width="{bar:.1}" height="{h:.1}"/>"#);
        }
        svg.push_str("</g>");
    }
    let (first, last) = (runs.last().expect("not empty").hour, runs[0].hour);
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{HEIGHT}" class="scale">{}</text><text x="{WIDTH}" y="{HEIGHT}" class="scale end">{}</text></svg>"#,
        first.format("%m-%d %H:00"),
        last.format("%m-%d %H:00")
    );
    svg
}

/// The lag chart: one bar per hour, the largest lag seen in it (sampled each minute), oldest on the left, over
/// the same 96 hours as the runs.
pub fn lag(hours: &[HourLag], now: DateTime<Utc>) -> String {
    let first = crate::store::hour_of(now) - chrono::Duration::hours(HOURS_SHOWN - 1);
    let hours: Vec<&HourLag> = hours.iter().filter(|h| h.hour >= first).collect();
    if hours.is_empty() {
        return "<p>The lag chart fills in as the flow runs: its lag is sampled each minute.</p>".to_string();
    }
    let peak = hours.iter().map(|h| h.lag).max().unwrap_or_default().max(chrono::Duration::seconds(1));
    let slot = (WIDTH - LEFT) as f64 / HOURS_SHOWN as f64;
    let bar = (slot * 0.8).max(1.0);
    let tall = (HEIGHT - BOTTOM) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="lag-summary"><title id="lag-summary">The largest lag of each hour; the largest of all: {}</title>"#,
        Took(peak)
    );
    let _ = write!(
        svg,
        r#"<text x="0" y="12" class="scale">{}</text><text x="0" y="{}" class="scale">0</text>"#,
        Took(peak),
        HEIGHT - BOTTOM
    );
    for h in hours {
        let x = LEFT as f64 + (h.hour - first).num_hours() as f64 * slot;
        let height = (h.lag.num_milliseconds() as f64 / peak.num_milliseconds() as f64 * tall).max(1.0);
        let _ = write!(
            svg,
            r#"<g><title>{}: largest lag {}, {} waiting at most</title><rect class="l" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{height:.1}"/></g>"#,
            h.hour.format("%Y-%m-%d %H:00 UTC"),
            Took(h.lag),
            h.waiting,
            tall - height
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{HEIGHT}" class="scale">{}</text><text x="{WIDTH}" y="{HEIGHT}" class="scale end">{}</text></svg>"#,
        first.format("%m-%d %H:00"),
        crate::store::hour_of(now).format("%m-%d %H:00")
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FlowId;
    use crate::store::RunTally;

    fn run(hour: i64, written: u64, failed: u64) -> RunRecord {
        RunRecord {
            flow_id: FlowId::new(),
            hour: DateTime::<Utc>::from_timestamp(1_800_000_000 + hour * 3_600, 0).unwrap(),
            tally: RunTally { received: written + failed, written, excluded: 0, failed, groups: Vec::new() },
        }
    }

    #[test]
    fn each_run_is_a_bar_with_its_figures_and_the_chart_says_its_totals() {
        let svg = throughput(&[run(2, 90, 10), run(1, 40, 0)]);
        assert!(svg.contains("2 runs: 130 records written, 10 failed; the busiest hour received 100"), "{svg}");
        assert_eq!(svg.matches(r#"class="w""#).count(), 2);
        assert_eq!(svg.matches(r#"class="f""#).count(), 1);
        assert!(svg.contains("90 written, 0 excluded, 10 failed"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn each_hour_s_largest_lag_is_a_bar_placed_at_its_hour() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000 + 3_600 * 10, 0).unwrap();
        let hour = |ago: i64| crate::store::hour_of(now) - chrono::Duration::hours(ago);
        let hours = [
            HourLag { hour: hour(200), lag: chrono::Duration::seconds(999), waiting: 1 },
            HourLag { hour: hour(2), lag: chrono::Duration::seconds(30), waiting: 4 },
            HourLag { hour: hour(0), lag: chrono::Duration::seconds(120), waiting: 9 },
        ];
        let svg = lag(&hours, now);
        assert_eq!(svg.matches(r#"class="l""#).count(), 2, "an hour older than the chart is left out: {svg}");
        assert!(svg.contains("largest lag 2 min, 9 waiting at most"), "{svg}");
        assert!(svg.contains("the largest of all: 2 min"), "{svg}");
    }

    #[test]
    fn no_run_yet_is_said_in_words() {
        assert!(throughput(&[]).contains("fills in"));
    }
}
