//! `dynsync demo ingestion`: table ingestion from end to end, on the embedded Dataverse emulator, read back by
//! DuckDB — a reader nobody here wrote.
//!
//! It does what a data engineer would with seed 003: connects Dynamics as a source, explores the environment's
//! tables and views, previews the contact table, creates a source connection, a Parquet dataset and a flow that
//! follows the table's changes; waits for the full load; then changes, deletes and creates contacts in Dynamics,
//! waits for the incremental load, and reads the dataset's Parquet files with DuckDB: every contact once per
//! version, the newest row of each one as Dynamics holds it, the deleted ones marked deleted.

use super::Api;
use crate::hosts::AllowedHosts;
use crate::service::{Service, ServiceConfig};
use crate::specs::{DATA_LAKE, DYNAMICS_SOURCE, INGESTION_FLOW_SPEC};
use anyhow::{Context, bail, ensure};
use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The DuckDB the demo reads the dataset with, from PyPI.
pub const DUCKDB: &str = "duckdb==2.0.1";

/// Tables the demo's environment has besides the standard ones.
const GENERATED_TABLES: usize = 300;

/// The dataset's name.
const DATASET: &str = "dynamics_contacts";

/// Runs the demo with `contacts` contacts; `Ok(true)` when DuckDB reads what Dynamics holds.
pub async fn run(contacts: usize) -> anyhow::Result<bool> {
    let started = Instant::now();
    // A few hundred tables, as a real environment has, so that discovery is real.
    let emulator = EmulatorConfig { cost: CostModel::free(), generated_tables: GENERATED_TABLES, ..Default::default() }
        .start()
        .await?;
    let dynamics = super::emulator_client(&emulator);
    let data_dir = tempfile::tempdir().context("creating the demo's data directory")?;
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec![format!("demo-{}", Uuid::new_v4().simple())];
    config.allowed_hosts = AllowedHosts::of_urls([emulator.url.as_str()]);
    let service = Service::start(config).await?;
    let api = Api { http: reqwest::Client::new(), service: &service };
    println!("dynsync demo ingestion: Dynamics 365 at {}, dynsync at {}", emulator.url, service.url);
    let python = reader().await?;

    // 1. Contacts in Dynamics, before anything is loaded.
    let ids = super::seed_contacts(&dynamics, contacts).await?;
    println!("1. {} contacts are in Dynamics", ids.len());

    // 2. The source connection, and what it sees.
    let connection = api
        .post(
            "connections",
            json!({
                "name": "Dynamics source",
                "auth": {"specName": "Service Principal Key Based Authentication", "params": {
                    "serviceUri": emulator.url, "servicePrincipalId": emulator.client_id.to_string(),
                    "servicePrincipalKey": emulator.client_secret.expose(), "tenantId": emulator.tenant_id.to_string(),
                    "authorityHost": emulator.url,
                }},
                "connectionSpec": {"id": DYNAMICS_SOURCE.to_string(), "version": "1.0"},
            }),
        )
        .await?;
    let root = api.call(Method::GET, &format!("connections/{connection}/explore?objectType=root"), None).await?;
    let objects = root.as_array().context("explore answers a list")?;
    let tables = objects.iter().filter(|o| o["type"] == "table").count();
    let views = objects.iter().filter(|o| o["type"] == "view").count();
    let contact = api
        .call(
            Method::GET,
            &format!("connections/{connection}/explore?objectType=table&object=contact&preview=true&previewCount=3"),
            None,
        )
        .await?;
    let columns = contact["schema"]["columns"].as_array().context("contact's columns")?.len();
    println!("2. explored: {tables} tables and {views} system views; contact has {columns} loadable columns");
    for row in contact["data"].as_array().context("a preview")? {
        println!("   preview: {} ({}), created {}", row["lastname"], row["contactid"], row["createdon"]);
    }

    // 3. Source connection, dataset, flow, through the API.
    let source = api
        .post(
            "sourceConnections",
            json!({"baseConnectionId": connection, "data": {"format": "tabular"},
                   "params": {"tableName": "contact", "primaryKey": "contactid"},
                   "connectionSpec": {"id": DYNAMICS_SOURCE.to_string(), "version": "1.0"}}),
        )
        .await?;
    let target = api
        .post(
            "targetConnections",
            json!({"name": "Contacts", "params": {"dataSetId": DATASET},
                   "connectionSpec": {"id": DATA_LAKE.to_string(), "version": "1.0"}}),
        )
        .await?;
    let flow = api
        .post(
            "flows",
            json!({
                "name": "Dynamics contacts",
                "flowSpec": {"id": INGESTION_FLOW_SPEC, "version": "1.0"},
                "sourceConnectionIds": [source], "targetConnectionIds": [target],
                "transformations": [{"name": "Mapping", "params": {"mappings": [
                    {"sourceAttribute": "contactid", "destination": "contact_id"},
                    {"sourceAttribute": "firstname", "destination": "first_name"},
                    {"sourceAttribute": "lastname", "destination": "last_name"},
                    {"sourceAttribute": "emailaddress1", "destination": "email"},
                ]}}],
                "scheduleParams": {"frequency": "continuous", "interval": "1"},
            }),
        )
        .await?;
    println!("3. source connection {source}, dataset {DATASET} (target {target}), flow {flow}: continuous");

    // 4. The full load.
    let full = wait_for(&api, &flow, "the full load", |runs| {
        runs.iter().find(|r| r["load"]["loadType"] == "full" && r["load"]["completedAt"].is_string()).cloned()
    })
    .await?;
    println!(
        "4. full load: {} rows in {} ms",
        full["metrics"]["recordSummary"]["outputRecordCount"], full["load"]["durationSummary"]["durationMs"]
    );

    // 5. Changes in Dynamics: renames, deletes, newcomers.
    let changed = (contacts / 20).max(1);
    let deleted = (contacts / 50).max(1);
    let created = (contacts / 100).max(1);
    let mut expected_names: HashMap<Uuid, String> = HashMap::new();
    for id in ids.iter().take(changed) {
        let name = format!("Renamed {}", &id.simple().to_string()[..6]);
        dynamics.send(Method::PATCH, &format!("contacts({id})"), Some(&json!({"firstname": name}))).await?;
        expected_names.insert(*id, name);
    }
    let gone: Vec<Uuid> = ids.iter().skip(changed).take(deleted).copied().collect();
    for id in &gone {
        dynamics.send(Method::DELETE, &format!("contacts({id})"), None).await?;
    }
    let newcomers = super::seed_contacts(&dynamics, created).await?;
    println!("5. in Dynamics: renamed {changed}, deleted {deleted}, created {created} contacts");
    let changes = (changed + deleted + created) as u64;
    // Read by the incremental loads, or by the baseline scan after the full load when it starts after them.
    wait_for(&api, &flow, "the incremental loads", |runs| {
        let seen: u64 = runs
            .iter()
            .filter(|r| r["load"]["loadType"] != "full")
            .map(|r| r["metrics"]["recordSummary"]["inputRecordCount"].as_u64().unwrap_or(0))
            .sum();
        (seen >= changes).then_some(Json::from(seen))
    })
    .await?;
    println!("6. the incremental loads read the {changes} changes");

    // 7. DuckDB reads the dataset's files.
    let files = data_dir.path().join("datasets").join(DATASET).join("gen-1");
    let glob = format!("{}/*.parquet", files.display());
    let sql = format!(
        "WITH rows AS (SELECT * FROM read_parquet('{glob}', union_by_name = true)), \
         newest AS (SELECT * FROM rows QUALIFY row_number() OVER (PARTITION BY _dynsync_id \
                    ORDER BY _dynsync_deleted DESC, _dynsync_version DESC NULLS FIRST) = 1) \
         SELECT (SELECT count(*) FROM rows), (SELECT count(*) FROM (SELECT DISTINCT _dynsync_id, _dynsync_version, _dynsync_op FROM rows)), \
                (SELECT count(*) FROM newest WHERE NOT _dynsync_deleted), (SELECT count(*) FROM newest WHERE _dynsync_deleted)"
    );
    let counts: Vec<(i64, i64, i64, i64)> = duckdb(&python, &sql).await?;
    let Some(&(rows, distinct, live, dead)) = counts.first() else { bail!("DuckDB answered no counts") };
    let names: Vec<(String, Option<String>)> = duckdb(
        &python,
        &format!(
            "SELECT CAST(_dynsync_id AS VARCHAR), first_name FROM read_parquet('{glob}', union_by_name = true) \
             QUALIFY row_number() OVER (PARTITION BY _dynsync_id ORDER BY _dynsync_deleted DESC, _dynsync_version DESC NULLS FIRST) = 1"
        ),
    )
    .await?;
    println!(
        "7. DuckDB reads {rows} rows: {distinct} distinct (id, version, operation), {live} live contacts, {dead} deleted"
    );

    let mut problems = Vec::new();
    let should_live = (contacts - deleted + created) as i64;
    if distinct != rows {
        problems.push(format!("{} rows are written twice", rows - distinct));
    }
    if live != should_live {
        problems.push(format!("{live} live contacts instead of {should_live}"));
    }
    if dead != deleted as i64 {
        problems.push(format!("{dead} deleted contacts instead of {deleted}"));
    }
    let newest: HashMap<String, Option<String>> = names.into_iter().map(|r| (r.0, r.1)).collect();
    for (id, name) in &expected_names {
        if newest.get(&id.to_string()).cloned().flatten().as_deref() != Some(name.as_str()) {
            problems.push(format!("contact {id} reads {:?} instead of {name}", newest.get(&id.to_string())));
        }
    }
    for id in &newcomers {
        if !newest.contains_key(&id.to_string()) {
            problems.push(format!("the new contact {id} is not in the dataset"));
        }
    }
    service.stop().await;
    if problems.is_empty() {
        println!("PASS ({:.1} s)", started.elapsed().as_secs_f64());
        Ok(true)
    } else {
        for p in problems.iter().take(20) {
            println!("  {p}");
        }
        println!("FAIL: {} problems", problems.len());
        Ok(false)
    }
}

/// Polls the flow's runs until `ready` finds what it waits for, for at most two minutes.
async fn wait_for(
    api: &Api<'_>,
    flow: &str,
    what: &str,
    ready: impl Fn(&[Json]) -> Option<Json>,
) -> anyhow::Result<Json> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = api.call(Method::GET, &format!("runs?property=flowId=={flow}"), None).await?;
        let runs = runs["items"].as_array().cloned().unwrap_or_default();
        if let Some(found) = ready(&runs) {
            return Ok(found);
        }
        ensure!(Instant::now() < deadline, "{what} did not end within two minutes: {runs:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A Python that has DuckDB: `DYNSYNC_PYTHON`, or a virtual environment in the user's cache made for it.
async fn reader() -> anyhow::Result<PathBuf> {
    if let Some(python) = std::env::var_os("DYNSYNC_PYTHON") {
        return Ok(PathBuf::from(python));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .context("HOME is not set: set DYNSYNC_PYTHON to a Python that has duckdb")?;
    let venv = cache.join("dynsync").join("duckdb-venv");
    let python = venv.join("bin").join("python");
    let has_duckdb = |python: PathBuf| async move {
        tokio::process::Command::new(python)
            .args(["-c", "import duckdb"])
            .output()
            .await
            .is_ok_and(|o| o.status.success())
    };
    if has_duckdb(python.clone()).await {
        return Ok(python);
    }
    println!("   making a Python environment with {DUCKDB} in {} (once)", venv.display());
    let made = tokio::process::Command::new("python3").arg("-m").arg("venv").arg(&venv).status().await;
    ensure!(
        made.is_ok_and(|s| s.success()),
        "python3 -m venv failed: install Python 3 with venv (apt-get install python3-venv)"
    );
    let installed = tokio::process::Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", DUCKDB])
        .status()
        .await;
    ensure!(
        installed.is_ok_and(|s| s.success()),
        "pip could not install {DUCKDB}: set DYNSYNC_PYTHON to a Python that has duckdb"
    );
    Ok(python)
}

#[derive(Deserialize)]
struct Answer {
    rows: Vec<Vec<Json>>,
}

/// Runs `sql` in DuckDB; its rows, as JSON values.
async fn duckdb<T: serde::de::DeserializeOwned>(python: &Path, sql: &str) -> anyhow::Result<Vec<T>> {
    const SCRIPT: &str = "import duckdb, json, sys\n\
        c = duckdb.connect()\n\
        r = c.sql(sys.argv[1]).fetchall()\n\
        json.dump({'rows': [[v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for v in row] for row in r]}, sys.stdout)\n";
    let output = tokio::process::Command::new(python).args(["-c", SCRIPT, sql]).output().await?;
    if !output.status.success() {
        bail!("DuckDB failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let answer: Answer = serde_json::from_slice(&output.stdout)?;
    answer
        .rows
        .into_iter()
        .map(|row| serde_json::from_value(Json::Array(row)).context("DuckDB's row reads as expected"))
        .collect()
}
