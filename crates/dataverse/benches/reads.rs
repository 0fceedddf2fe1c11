//! Reads, as table ingestion does them: a full load of the contact table through the client's query stream
//! at 5,000 rows a page, and a delta of 10% changed rows through its change-tracking stream.
//!
//! The emulator runs in-process at zero cost with its limits lifted, so the figures are the client's and the
//! emulator's work on this machine: what a real environment adds is its cost per row read (100 µs in the
//! default cost model) and the network.
//!
//! `cargo bench -p dataverse --bench reads [-- --json FILE]`; `ROWS` (1,000,000) sets the table's size and
//! `CHANGED_PERCENT` (10) the share of rows changed before the delta.
//! On this project's 2-core machine: 206,000 rows/s for the full load, 53,000 rows/s for the delta
//! (BENCHMARKS.md).

use dataverse::{BulkOptions, Change, Client, Environment, Query, Record, Table};
use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use support::{credentials, env_number, json_file, seed_contacts};

mod support;

const COLUMNS: &[&str] = &["contactid", "firstname", "lastname", "emailaddress1", "jobtitle", "modifiedon"];

struct Figure {
    key: &'static str,
    name: String,
    rows: usize,
    elapsed: Duration,
}

impl Figure {
    fn per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64()
    }
}

/// Reads a change-tracking stream to its end; returns the rows that changed and the token to resume from.
async fn read_changes(
    client: &Client,
    table: &Table,
    since: Option<&dataverse::DeltaToken>,
) -> (usize, dataverse::DeltaToken) {
    let mut changes = std::pin::pin!(client.changes(table, COLUMNS, since));
    let mut rows = 0;
    while let Some(change) = changes.next().await {
        match change.expect("the change-tracking stream reads") {
            Change::Upserted(_) | Change::Deleted(_) => rows += 1,
            Change::Token(token) => return (rows, token),
        }
    }
    panic!("the change-tracking stream ended without a token");
}

async fn run(rows: usize, changed_percent: usize) -> Vec<Figure> {
    let limits = Limits {
        requests: u32::MAX,
        execution_time: Duration::from_secs(u32::MAX as u64),
        concurrent: u32::MAX,
        ..Limits::default()
    };
    let config = EmulatorConfig { limits, cost: CostModel::free(), ..Default::default() };
    let emulator = config.start().await.expect("the emulator starts");
    eprintln!("seeding {rows} contacts…");
    let ids = seed_contacts(&emulator, rows).await;
    let client = Client::new(Environment::from_url(&emulator.url).expect("the emulator's URL"), credentials(&emulator));
    client.who_am_i().await.expect("the emulator answers WhoAmI");
    let table = Table::contact();
    let mut figures = Vec::new();

    eprintln!("full load through the query stream…");
    let started = Instant::now();
    let query = Query::new(&table).select(COLUMNS).page_size(5000);
    let read = client.query(&query).try_fold(0usize, |n, _| async move { Ok(n + 1) }).await.expect("the query reads");
    assert_eq!(read, rows, "the full load reads every contact");
    let name = format!("full load, query stream, {rows} contacts, 5,000 a page");
    figures.push(Figure { key: "full_load_query", name, rows: read, elapsed: started.elapsed() });

    // Change tracking starts with a read of every row, which ends in the token the delta reads from.
    eprintln!("full load through change tracking…");
    let started = Instant::now();
    let (read, token) = read_changes(&client, &table, None).await;
    assert_eq!(read, rows, "the first change-tracking read returns every contact");
    let name = format!("full load, change-tracking stream (first read, gives the token), {rows} contacts");
    figures.push(Figure { key: "full_load_changes", name, rows: read, elapsed: started.elapsed() });

    let step = (100 / changed_percent.clamp(1, 100)).max(1);
    let changed: Vec<Record> = ids
        .iter()
        .step_by(step)
        .map(|id| match json!({"contactid": id, "jobtitle": "changed"}) {
            Json::Object(map) => map,
            _ => unreachable!(),
        })
        .collect();
    eprintln!("updating {} contacts…", changed.len());
    client.update_multiple(&table, &changed, BulkOptions::default()).await.expect("the updates are written");

    eprintln!("delta through change tracking…");
    let started = Instant::now();
    let (read, _) = read_changes(&client, &table, Some(&token)).await;
    assert_eq!(read, changed.len(), "the delta returns every changed contact and only those");
    let name = format!("delta, change-tracking stream, {read} changed of {rows} contacts");
    figures.push(Figure { key: "delta_changes", name, rows: read, elapsed: started.elapsed() });
    figures
}

fn main() {
    let json_file = json_file();
    let rows = env_number("ROWS", 1_000_000).max(1);
    let changed_percent = env_number("CHANGED_PERCENT", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let figures = runtime.block_on(run(rows, changed_percent));

    println!("\nEmulator in-process, zero cost, limits lifted.\n");
    println!("| read | rows | seconds | rows/s |");
    println!("|---|---|---|---|");
    for f in &figures {
        println!("| {} | {} | {:.2} | {:.0} |", f.name, f.rows, f.elapsed.as_secs_f64(), f.per_second());
    }
    if let Some(path) = json_file {
        let figures: Vec<Json> = figures
            .iter()
            .map(|f| {
                json!({"read": f.key, "name": f.name, "rows": f.rows, "seconds": f.elapsed.as_secs_f64(),
                       "rows_per_second": f.per_second()})
            })
            .collect();
        let report =
            json!({"benchmark": "reads", "rows": rows, "changed_percent": changed_percent, "figures": figures});
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON")).expect("writing the JSON report");
    }
}
