//! Datasets as their readers see them. One scenario — a full load in two batches, one of them written again (a
//! crash before its acknowledgement), an incremental load that adds a column, updates and deletes, then the first
//! batch written once more (older versions arriving late), then a second generation — is written to:
//!
//! - Parquet files in a local folder, read back with DuckDB (`union_by_name`), which must see the right types
//!   and each (id, version) once;
//! - Azurite, Microsoft's Azure Storage emulator (npm, installed into tests/readers/node_modules on first run),
//!   through `object_store`'s Azure client, read back with pyarrow's Azure file system;
//! - PostgreSQL, when `DYNSYNC_TEST_DATABASE_URL` is set, read back with SQL.
//!
//! Needs Python 3 with `venv` (DuckDB and pyarrow, pinned in tests/readers/requirements.txt, are installed into
//! tests/readers/.venv on first run) and Node.js with npm; CI prepares both beforehand (`.ci/run`).

mod common;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use common::{AZURITE_KEY, Azurite, python, readers_dir};
use dynsync::dataset::files::{AzureLocation, FileDestination, FileLocation};
use dynsync::dataset::postgres::PostgresDestination;
use dynsync::dataset::{
    Batch, ColumnKind, DatasetColumn, DatasetName, DatasetRow, DatasetSchema, Destination, Operation, Value,
};
use dynsync::secrets::Secret;
use serde::Deserialize;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A table as a reader saw it: its columns' names and types, and each value as the reader's own text of it.
#[derive(Debug, Deserialize)]
struct ReaderTable {
    columns: Vec<ReaderColumn>,
    rows: Vec<Vec<Option<String>>>,
}

#[derive(Debug, Deserialize)]
struct ReaderColumn {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

impl ReaderTable {
    fn kind(&self, column: &str) -> &str {
        let found = self.columns.iter().find(|c| c.name == column);
        &found.unwrap_or_else(|| panic!("the reader sees a column {column}: {:?}", self.columns)).kind
    }

    fn value<'a>(&'a self, row: &'a [Option<String>], column: &str) -> Option<&'a str> {
        let position = self.columns.iter().position(|c| c.name == column).expect("a known column");
        row[position].as_deref()
    }

    /// The rows of one id and version.
    fn find(&self, id: Uuid, version: Option<i64>) -> Vec<&[Option<String>]> {
        let (id, version) = (id.to_string(), version.map(|v| v.to_string()));
        self.rows
            .iter()
            .filter(|r| {
                self.value(r, "_dynsync_id") == Some(id.as_str())
                    && self.value(r, "_dynsync_version") == version.as_deref()
            })
            .map(Vec::as_slice)
            .collect()
    }
}

/// Runs the reader script; its output as a table.
fn read_with(args: &[&str]) -> ReaderTable {
    let mut child = Command::new(python())
        .arg("read_dataset.py")
        .args(args)
        .current_dir(readers_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the reader starts");
    let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the reader can be waited for") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the reader {args:?} ran over two minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    assert!(status.success(), "the reader {args:?} failed:\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the reader's output is a table ({e}): {out}"))
}

fn column(name: &str, kind: ColumnKind) -> DatasetColumn {
    DatasetColumn { name: name.into(), kind }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x7f3e_0000_0000_4000_8000_0000_0000_0000 + n)
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).unwrap()
}

/// What the scenario wrote, to check readers against.
struct Scenario {
    dataset: DatasetName,
    first: DatasetSchema,
    widened: DatasetSchema,
    first_load: Vec<DatasetRow>,
    incremental: Vec<DatasetRow>,
}

const MODIFIED_MICROS: i64 = 1_770_091_506_789_012; // 2026-02-03 04:05:06.789012 UTC
const BIG_CREDIT: i128 = -12_345_678_901_234_567_890_123_456_789_012_345_678; // 38 digits, scale 4

fn contact(n: u128, version: i64, operation: Operation, extra: Option<&str>) -> DatasetRow {
    let mut values = vec![
        Value::Uuid(id(n)),
        Value::Text(format!("Contact {n} Zoë")),
        Value::Boolean(n.is_multiple_of(2)),
        if n == 5 { Value::Null } else { Value::Integer(n as i32) },
        Value::Double(n as f64 + 0.25),
        Value::Decimal(if n == 1 { BIG_CREDIT } else { 1_000_000 * n as i128 + 1 }),
        Value::Timestamp(at(MODIFIED_MICROS + n as i64)),
        Value::Date(NaiveDate::from_ymd_opt(1980, 5, n as u32).unwrap()),
    ];
    if let Some(title) = extra {
        values.push(Value::Text(title.into()));
    }
    DatasetRow { id: id(n), operation, version: Some(version), values, synced_at: Utc::now() }
}

/// Writes `pages` of generation 1 as one batch.
async fn write_rows(
    destination: &Destination,
    dataset: &DatasetName,
    schema: &DatasetSchema,
    load: DateTime<Utc>,
    pages: &[&[DatasetRow]],
) {
    let pages: Vec<Vec<&DatasetRow>> = pages.iter().map(|rows| rows.iter().collect()).collect();
    let batches: Vec<Batch<'_>> =
        pages.iter().map(|rows| Batch { dataset, generation: 1, schema, load, rows, kept_on_update: &[] }).collect();
    destination.write(&batches).await.unwrap();
}

/// Writes the scenario: load 1 (ids 1–5, versions 101–105) in two batches, the first written twice, the second of
/// two pages; load 2 with a new column `jobtitle`: id 2 updated (v201), id 3 deleted, id 6 created (v202); the first
/// batch once more; and generation 2 where `numberofchildren` became a bigint.
async fn write_scenario(destination: &Destination, dataset: &str) -> Scenario {
    let dataset = DatasetName::try_from(dataset.to_string()).unwrap();
    let first = DatasetSchema {
        columns: vec![
            column("contactid", ColumnKind::Uuid),
            column("fullname", ColumnKind::Text),
            column("donotemail", ColumnKind::Boolean),
            column("numberofchildren", ColumnKind::Integer),
            column("score", ColumnKind::Double),
            column("creditlimit", ColumnKind::Decimal { scale: 4 }),
            column("modifiedon", ColumnKind::Timestamp),
            column("birthdate", ColumnKind::Date),
        ],
    };
    let mut widened = first.clone();
    widened.columns.push(column("jobtitle", ColumnKind::Text));
    let first_load: Vec<DatasetRow> = (1..=5).map(|n| contact(n, 100 + n as i64, Operation::Read, None)).collect();
    let load_1 = Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap();
    let load_2 = Utc.with_ymd_and_hms(2026, 2, 2, 9, 0, 0).unwrap();
    write_rows(destination, &dataset, &first, load_1, &[&first_load[..3]]).await;
    let mut again = first_load[..3].to_vec();
    for row in &mut again {
        row.synced_at = Utc::now();
    }
    write_rows(destination, &dataset, &first, load_1, &[&again]).await;
    write_rows(destination, &dataset, &first, load_1, &[&first_load[3..4], &first_load[4..]]).await;

    let deleted = DatasetRow {
        id: id(3),
        operation: Operation::Delete,
        version: None,
        values: Vec::new(),
        synced_at: Utc::now(),
    };
    let incremental = vec![
        contact(2, 201, Operation::Update, Some("Engineer")),
        deleted,
        contact(6, 202, Operation::Create, Some("Buyer")),
    ];
    write_rows(destination, &dataset, &widened, load_2, &[&incremental]).await;
    write_rows(destination, &dataset, &first, load_1, &[&again]).await;

    let mut second = first.clone();
    second.columns[3].kind = ColumnKind::BigInt;
    let mut row = contact(1, 301, Operation::Read, None);
    row.values[3] = Value::BigInt(5_000_000_000);
    let second_batch =
        Batch { dataset: &dataset, generation: 2, schema: &second, load: load_2, rows: &[&row], kept_on_update: &[] };
    destination.write(&[second_batch]).await.unwrap();
    Scenario { dataset, first, widened, first_load, incremental }
}

/// What `rows()` must answer for generation 1: the newest row of each id, in id order.
async fn check_current_rows(destination: &Destination, scenario: &Scenario) {
    let (schema, rows) = destination.rows(&scenario.dataset, 1, 100).await.unwrap();
    assert_eq!(schema, scenario.widened, "the generation's schema is the widest written");
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=6).map(id).collect::<Vec<_>>());
    let by_id: HashMap<Uuid, &DatasetRow> = rows.iter().map(|r| (r.id, r)).collect();
    let updated = by_id[&id(2)];
    assert_eq!((updated.version, updated.values[8].clone()), (Some(201), Value::Text("Engineer".into())));
    assert!(by_id[&id(3)].deleted(), "the delete wins over the older version");
    let first = by_id[&id(1)];
    assert_eq!(first.values[..8], scenario.first_load[0].values[..], "typed values read back exactly");
    assert_eq!(first.values[8], Value::Null, "a row written before a column was added reads it as null");
    assert_eq!(by_id[&id(6)].values, scenario.incremental[2].values);
    let latest = destination.latest(&scenario.dataset, 1).await.unwrap();
    assert_eq!(latest.len(), 6, "one entry per id: {latest:?}");
    assert_eq!((latest[&id(2)].version, latest[&id(2)].deleted), (Some(201), false));
    assert_eq!((latest[&id(3)].version, latest[&id(3)].deleted), (None, true), "the delete wins");
    assert_eq!(latest[&id(1)].version, Some(101));
    let (_, limited) = destination.rows(&scenario.dataset, 1, 2).await.unwrap();
    assert_eq!(limited.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id(1), id(2)]);
    let (second, rows) = destination.rows(&scenario.dataset, 2, 100).await.unwrap();
    assert_eq!((second.columns[3].kind, rows.len()), (ColumnKind::BigInt, 1));
    assert_eq!(rows[0].values[3], Value::BigInt(5_000_000_000));
}

/// What a reader of generation 1's files must see: every row written once, typed values, the added column.
fn check_files_as_read(table: &ReaderTable, scenario: &Scenario, types: &[(&str, &str)]) {
    for (name, kind) in types {
        assert_eq!(table.kind(name), *kind, "the reader's type of {name}");
    }
    assert_eq!(
        table.rows.len(),
        8,
        "5 rows of the full load and 3 of the incremental one, each once: {:?}",
        table.rows
    );
    for row in scenario.first_load.iter().chain(&scenario.incremental) {
        assert_eq!(table.find(row.id, row.version).len(), 1, "({}, {:?}) is read once", row.id, row.version);
    }
    let first = table.find(id(1), Some(101))[0];
    assert_eq!(table.value(first, "creditlimit"), Some("-1234567890123456789012345678901234.5678"));
    assert_eq!(table.value(first, "contactid"), Some(id(1).to_string().as_str()));
    assert_eq!(table.value(first, "fullname"), Some("Contact 1 Zoë"));
    assert_eq!(table.value(first, "donotemail"), Some("False"));
    assert_eq!(table.value(first, "numberofchildren"), Some("1"));
    assert_eq!(table.value(first, "score"), Some("1.25"));
    assert_eq!(table.value(first, "modifiedon"), Some("2026-02-03 04:05:06.789013+00:00"));
    assert_eq!(table.value(first, "birthdate"), Some("1980-05-01"));
    assert_eq!(table.value(first, "jobtitle"), None, "an older file lacks the added column: null");
    assert_eq!(table.value(first, "_dynsync_op"), Some("r"));
    assert_eq!(table.value(first, "_dynsync_deleted"), Some("False"));
    let fifth = table.find(id(5), Some(105))[0];
    assert_eq!(table.value(fifth, "numberofchildren"), None, "a null stays null");
    assert_eq!(table.value(fifth, "creditlimit"), Some("500.0001"));
    let updated = table.find(id(2), Some(201))[0];
    assert_eq!((table.value(updated, "jobtitle"), table.value(updated, "_dynsync_op")), (Some("Engineer"), Some("u")));
    let deleted = table.find(id(3), None)[0];
    assert_eq!(
        (table.value(deleted, "_dynsync_op"), table.value(deleted, "_dynsync_deleted")),
        (Some("d"), Some("True"))
    );
}

#[tokio::test]
async fn a_local_folder_of_parquet_files_reads_right_in_duckdb() {
    let folder = tempfile::tempdir().unwrap();
    let destination = Destination::Files(FileDestination::in_data_dir(folder.path()).unwrap());
    let scenario = tokio::time::timeout(Duration::from_secs(60), write_scenario(&destination, "contacts"))
        .await
        .expect("the scenario is written within a minute");
    check_current_rows(&destination, &scenario).await;

    let Destination::Files(files) = &destination else { unreachable!("made as files") };
    let manifest = files.manifest(&scenario.dataset).await.unwrap().expect("a manifest");
    let generation = manifest.generation(1).unwrap();
    let per_load: Vec<usize> = generation.loads.iter().map(|l| l.files.len()).collect();
    assert_eq!(per_load, vec![3, 1], "the full load's three files (one written three times) and the incremental one");
    assert_eq!(generation.schema, scenario.widened);
    assert_eq!(manifest.generation(2).unwrap().files().count(), 1);
    assert_ne!(scenario.first, scenario.widened);

    let root = folder.path().join("datasets/contacts");
    let sql = format!(
        "SELECT * FROM read_parquet('{}/gen-1/*.parquet', union_by_name=true) ORDER BY _dynsync_id, _dynsync_version",
        root.display()
    );
    let table = read_with(&["duckdb", &sql]);
    let types = [
        ("contactid", "UUID"),
        ("fullname", "VARCHAR"),
        ("donotemail", "BOOLEAN"),
        ("numberofchildren", "INTEGER"),
        ("score", "DOUBLE"),
        ("creditlimit", "DECIMAL(38,4)"),
        ("modifiedon", "TIMESTAMP WITH TIME ZONE"),
        ("birthdate", "DATE"),
        ("jobtitle", "VARCHAR"),
        ("_dynsync_id", "UUID"),
        ("_dynsync_op", "VARCHAR"),
        ("_dynsync_version", "BIGINT"),
        ("_dynsync_deleted", "BOOLEAN"),
        ("_dynsync_synced_at", "TIMESTAMP WITH TIME ZONE"),
    ];
    check_files_as_read(&table, &scenario, &types);

    let current = read_with(&[
        "duckdb",
        &format!("SELECT numberofchildren FROM read_parquet('{}/gen-2/*.parquet', union_by_name=true)", root.display()),
    ]);
    assert_eq!(
        (current.kind("numberofchildren"), current.rows.clone()),
        ("BIGINT", vec![vec![Some("5000000000".into())]])
    );
}

#[tokio::test]
async fn azure_blob_storage_through_object_store_reads_right_in_pyarrow() {
    let azurite = Azurite::start();
    read_with(&["azure-container", &azurite.authority, "lake"]);
    let location = FileLocation::Azure(AzureLocation {
        account: "devstoreaccount1".into(),
        container: "lake".into(),
        prefix: "dynamics".into(),
        access_key: Some(Secret::new(AZURITE_KEY)),
        endpoint: Some(format!("http://{}/devstoreaccount1", azurite.authority)),
    });
    let destination = Destination::Files(FileDestination::open(location).unwrap());
    let scenario = tokio::time::timeout(Duration::from_secs(60), write_scenario(&destination, "contacts"))
        .await
        .expect("the scenario is written within a minute");
    check_current_rows(&destination, &scenario).await;

    let table = read_with(&["pyarrow-azure", &azurite.authority, "lake", "dynamics/contacts/gen-1"]);
    let types = [
        ("contactid", "extension<arrow.uuid>"),
        ("fullname", "string"),
        ("donotemail", "bool"),
        ("numberofchildren", "int32"),
        ("score", "double"),
        ("creditlimit", "decimal128(38, 4)"),
        ("modifiedon", "timestamp[us, tz=UTC]"),
        ("birthdate", "date32[day]"),
        ("jobtitle", "string"),
        ("_dynsync_version", "int64"),
    ];
    check_files_as_read(&table, &scenario, &types);
}

#[tokio::test]
async fn a_postgresql_table_is_kept_current_by_upsert() {
    let Some(url) = std::env::var("DYNSYNC_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("DYNSYNC_TEST_DATABASE_URL is not set: the PostgreSQL dataset test does not run");
        return;
    };
    let dataset = format!("contacts_{}", Uuid::new_v4().simple());
    let destination = Destination::Postgres(PostgresDestination::connect(&url).unwrap());
    let scenario = tokio::time::timeout(Duration::from_secs(60), write_scenario(&destination, &dataset))
        .await
        .expect("the scenario is written within a minute");
    check_current_rows(&destination, &scenario).await;

    #[derive(sqlx::FromRow, Debug, PartialEq)]
    struct Contact {
        id: String,
        version: Option<i64>,
        deleted: bool,
        op: String,
        fullname: Option<String>,
        jobtitle: Option<String>,
        creditlimit: Option<String>,
        modifiedon: Option<String>,
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let sql = format!(
        "SELECT _dynsync_id::text AS id, _dynsync_version AS version, _dynsync_deleted AS deleted, _dynsync_op AS op, \
         fullname, jobtitle, creditlimit::text AS creditlimit, \
         to_char(modifiedon AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS modifiedon \
         FROM \"{dataset}\" ORDER BY _dynsync_id"
    );
    let contacts: Vec<Contact> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.unwrap();
    assert_eq!(contacts.len(), 6, "one row per id: {contacts:#?}");
    let row = |n: u128| contacts.iter().find(|c| c.id == id(n).to_string()).unwrap();
    assert_eq!(row(1).creditlimit.as_deref(), Some("-1234567890123456789012345678901234.5678"));
    assert_eq!(row(1).modifiedon.as_deref(), Some("2026-02-03 04:05:06.789013"));
    assert_eq!((row(2).version, row(2).jobtitle.as_deref()), (Some(201), Some("Engineer")), "the late v102 lost");
    let deleted = row(3);
    assert_eq!((deleted.deleted, deleted.op.as_str()), (true, "d"));
    assert_eq!(deleted.fullname.as_deref(), Some("Contact 3 Zoë"), "a soft delete keeps the last values");
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = $1 \
         ORDER BY ordinal_position",
    )
    .bind(format!("{dataset}_g2"))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(kinds.contains(&("numberofchildren".into(), "bigint".into())), "{kinds:?}");
    for table in [dataset.clone(), format!("{dataset}_g2")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE \"{table}\""))).execute(&pool).await.unwrap();
    }
}
