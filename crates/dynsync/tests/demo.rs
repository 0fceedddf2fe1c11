//! The README's main command, `dynsync demo`, run as a user runs it: it must pass on a fresh machine.

use std::process::Command;

mod common;

#[test]
fn the_demo_passes_on_the_embedded_emulator() {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["demo", "--contacts", "1500"])
        .output()
        .expect("dynsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("PASS: all 1500 contacts hold the statuses and names they should"), "{stdout}");
    assert!(stdout.contains("excluded            3") && stdout.contains("failed              1"), "{stdout}");
}

#[test]
fn the_lead_demo_passes_through_an_outage_with_every_lead_announced() {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["demo", "leads", "--people", "60"])
        .output()
        .expect("dynsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("PASS: 60 people made 60 leads (and the test lead)"), "{stdout}");
    assert!(stdout.contains("4. run: 81 received, 61 created, 20 updated, 0 failed"), "{stdout}");
    assert!(stdout.contains("the SMTP server received 61 notifications, 61 naming a lead"), "{stdout}");
}

#[test]
fn the_engagement_demo_puts_a_day_of_sendgrid_events_on_the_timelines_once_each() {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["demo", "engagement", "--people", "100"])
        .output()
        .expect("dynsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // 100 sends, 98 deliveries, 2 hard bounces, 49 opens, 19 clicks, 3 unsubscribes, a complaint, a resubscribe,
    // and the unknown address: one body, posted twice.
    assert!(stdout.contains("4. run: 548 received, 546 written, 2 failed"), "{stdout}");
    assert!(
        stdout.contains(
            "5. Dynamics: 273 email events on 100 timelines, 5 contacts opted out (1 resubscribed), 19 follow-up tasks"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "6. records out: 100 contacts sent to the webhook, signed; 20 opt-outs made in Dynamics reached it"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("PASS: a day of 274 SendGrid events"), "{stdout}");
}

#[test]
fn the_ingestion_demo_loads_changes_and_reads_the_dataset_back_with_duckdb() {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["demo", "ingestion", "--contacts", "3000"])
        .env("DYNSYNC_PYTHON", common::python())
        .output()
        .expect("dynsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("4. full load: 3000 rows"), "{stdout}");
    assert!(
        stdout.contains(
            "7. DuckDB reads 3240 rows: 3240 distinct (id, version, operation), 2970 live contacts, 60 deleted"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("PASS"), "{stdout}");
}
