//! Parquet dataset writes, measured: 1,000,000 rows of a 20-column contact-like schema (`DATASET_ROWS` to change
//! it) written to a temporary folder in batches of 5,000, as table ingestion writes pages. Prints rows per second
//! and the process's peak resident memory (VmHWM), against the targets: at least 200,000 rows/s, under 200 MB.
//! The rows of a batch are made just before it is written, so the peak is what the writer holds, not the input.
//!
//! `cargo bench -p dynsync --bench datasets`

use chrono::{Duration as Days, NaiveDate, TimeZone, Utc};
use dynsync::dataset::files::FileDestination;
use dynsync::dataset::{Batch, ColumnKind, DatasetColumn, DatasetName, DatasetRow, DatasetSchema, Operation, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

const BATCH: usize = 5_000;
const TARGET_ROWS_PER_SECOND: f64 = 200_000.0;
const TARGET_PEAK_MB: f64 = 200.0;

fn schema() -> DatasetSchema {
    let kinds = [
        ("contactid", ColumnKind::Uuid),
        ("firstname", ColumnKind::Text),
        ("lastname", ColumnKind::Text),
        ("fullname", ColumnKind::Text),
        ("emailaddress1", ColumnKind::Text),
        ("telephone1", ColumnKind::Text),
        ("jobtitle", ColumnKind::Text),
        ("address1_city", ColumnKind::Text),
        ("address1_country", ColumnKind::Text),
        ("donotemail", ColumnKind::Boolean),
        ("donotphone", ColumnKind::Boolean),
        ("numberofchildren", ColumnKind::Integer),
        ("statecode", ColumnKind::Integer),
        ("versionnumber", ColumnKind::BigInt),
        ("score", ColumnKind::Double),
        ("creditlimit", ColumnKind::Decimal { scale: 4 }),
        ("createdon", ColumnKind::Timestamp),
        ("modifiedon", ColumnKind::Timestamp),
        ("birthdate", ColumnKind::Date),
        ("parentcustomerid", ColumnKind::Uuid),
    ];
    DatasetSchema { columns: kinds.into_iter().map(|(name, kind)| DatasetColumn { name: name.into(), kind }).collect() }
}

fn contact(n: u64) -> DatasetRow {
    let id = Uuid::from_u64_pair(0x5eed, n);
    let epoch = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let cities = ["Lyon", "Paris", "Seattle", "London", "Berlin"];
    let values = vec![
        Value::Uuid(id),
        Value::Text(format!("First{n}")),
        Value::Text(format!("Last{}", n % 9_973)),
        Value::Text(format!("First{n} Last{}", n % 9_973)),
        Value::Text(format!("contact{n}@example.com")),
        Value::Text(format!("+33 1 {:08}", n % 100_000_000)),
        if n.is_multiple_of(3) { Value::Null } else { Value::Text("Buyer".into()) },
        Value::Text(cities[(n % 5) as usize].into()),
        Value::Text("France".into()),
        Value::Boolean(n.is_multiple_of(2)),
        Value::Boolean(n.is_multiple_of(7)),
        Value::Integer((n % 5) as i32),
        Value::Integer(0),
        Value::BigInt(1_000_000 + n as i64),
        Value::Double(n as f64 / 3.0),
        Value::Decimal(i128::from(n) * 10_000 + 1_234),
        Value::Timestamp(epoch + Days::seconds(n as i64)),
        Value::Timestamp(epoch + Days::seconds(n as i64 * 2)),
        Value::Date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + Days::days((n % 20_000) as i64)),
        Value::Uuid(Uuid::from_u64_pair(0xacc0, n % 1_000)),
    ];
    DatasetRow { id, operation: Operation::Read, version: Some(1_000_000 + n as i64), values, synced_at: Utc::now() }
}

/// The process's peak resident set, in MB, from /proc/self/status.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("DATASET_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let folder = tempfile::tempdir().expect("a temporary folder");
    let destination = FileDestination::in_data_dir(folder.path()).expect("the folder opens");
    let dataset = DatasetName::try_from("contacts".to_string()).expect("a valid name");
    let schema = schema();
    let load = Utc::now();
    let (mut writing, mut written) = (Duration::ZERO, 0u64);
    while written < total {
        let rows: Vec<DatasetRow> = (written..(written + BATCH as u64).min(total)).map(contact).collect();
        let started = Instant::now();
        destination
            .write(&[Batch {
                dataset: &dataset,
                generation: 1,
                schema: &schema,
                load,
                rows: &rows.iter().collect::<Vec<_>>(),
                kept_on_update: &[],
            }])
            .await
            .expect("the batch is written");
        writing += started.elapsed();
        written += rows.len() as u64;
    }
    let rate = written as f64 / writing.as_secs_f64();
    let bytes: u64 = walk(&folder.path().join("datasets/contacts/gen-1"));
    let peak = peak_rss_mb();
    println!("parquet dataset write: {written} rows of {} columns in batches of {BATCH}", schema.columns.len());
    println!(
        "  {rate:.0} rows/s (writing only: {:.2} s; target >= {TARGET_ROWS_PER_SECOND:.0}, ratio {:.2})",
        writing.as_secs_f64(),
        rate / TARGET_ROWS_PER_SECOND
    );
    match peak {
        Some(mb) => {
            println!("  peak RSS {mb:.1} MB (target < {TARGET_PEAK_MB:.0} MB, ratio {:.2})", mb / TARGET_PEAK_MB)
        }
        None => println!("  peak RSS unknown: /proc/self/status is not readable here"),
    }
    println!("  {:.1} MB of Parquet, {:.1} bytes per row", bytes as f64 / 1e6, bytes as f64 / written as f64);
}

fn walk(folder: &std::path::Path) -> u64 {
    std::fs::read_dir(folder)
        .map(|entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}
