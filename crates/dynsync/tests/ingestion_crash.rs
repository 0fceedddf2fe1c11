//! Crash safety of table ingestion: `dynsync serve` is killed with SIGKILL in the middle of a full load, and
//! started again. The load resumes from its last acknowledged page — it does not start over — and DuckDB reads
//! every contact exactly once in the dataset; the run counts each row once.

use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

mod common;

use common::{ServeProcess, duckdb};

const BASE: &str = "/data/foundation/flowservice";
const CONTACTS: usize = 80_000;

/// The flow's full load run, or `Json::Null` while there is none (or dynsync does not answer).
async fn full_run(http: &reqwest::Client, dynsync: &ServeProcess, flow: &str) -> Json {
    let runs = dynsync.call(http, Method::GET, &format!("{BASE}/runs?property=flowId=={flow}"), None).await;
    let runs = runs.unwrap_or(Json::Null);
    runs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["load"]["loadType"] == "full")
        .cloned()
        .unwrap_or(Json::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_load_killed_midway_resumes_from_its_last_page_and_holds_each_row_once() {
    // Each request costs time, so that the load is between pages when dynsync is killed: 16 pages, read four at
    // once in eight partitions.
    let cost = CostModel { per_request: Duration::from_millis(500), ..CostModel::free() };
    let emulator = EmulatorConfig { cost, ..Default::default() }.start().await.unwrap();
    let dynamics = dynsync::demo::emulator_client(&emulator);
    for start in (0..CONTACTS).step_by(5000) {
        let targets: Vec<Json> = (start..start + 5000)
            .map(|i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("Crash {i}")}))
            .collect();
        dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap();
    }
    let data_dir = tempfile::tempdir().unwrap();
    let args = ["--data-dir", data_dir.path().to_str().unwrap()];
    let http = reqwest::Client::new();
    let mut first = ServeProcess::start(&args, &[]);
    first.ready(&http).await;
    let connection = first
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/connections"),
            Some(json!({
                "name": "Source", "connectionSpec": {"id": dynsync::specs::DYNAMICS_SOURCE.to_string()},
                "auth": {"specName": "Service Principal Key Based Authentication", "params": {
                    "serviceUri": emulator.url, "servicePrincipalId": emulator.client_id.to_string(),
                    "servicePrincipalKey": emulator.client_secret.expose(), "tenantId": emulator.tenant_id.to_string(),
                    "authorityHost": emulator.url}}
            })),
        )
        .await
        .unwrap()["id"]
        .clone();
    let source = first
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/sourceConnections"),
            Some(json!({
                "baseConnectionId": connection, "params": {"tableName": "contact"}
            })),
        )
        .await
        .unwrap()["id"]
        .clone();
    let target = first
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/targetConnections"),
            Some(json!({
                "params": {"dataSetId": "crash"}, "connectionSpec": {"id": dynsync::specs::DATA_LAKE.to_string()}
            })),
        )
        .await
        .unwrap()["id"]
        .clone();
    let flow = first
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/flows"),
            Some(json!({
                "name": "Contacts", "flowSpec": {"id": dynsync::specs::INGESTION_FLOW_SPEC},
                "sourceConnectionIds": [source], "targetConnectionIds": [target],
                "transformations": [{"name": "Mapping", "params": {"mappings": [{"sourceAttribute": "lastname"}]}}]
            })),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Killed once some pages are acknowledged, and before the last.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let run = full_run(&http, &first, &flow).await;
        let written = run["metrics"]["recordSummary"]["outputRecordCount"].as_u64().unwrap_or(0);
        if written >= 5000 {
            assert!(run["load"]["completedAt"].is_null(), "the load ended before the kill: make pages slower ({run})");
            first.kill();
            break written;
        }
        assert!(Instant::now() < deadline, "no page was acknowledged: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut second = ServeProcess::start(&args, &[]);
    second.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let run = loop {
        let run = full_run(&http, &second, &flow).await;
        if run["load"]["completedAt"].is_string() {
            break run;
        }
        assert!(Instant::now() < deadline, "the load did not end after the restart: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Had the load started over, the pages acknowledged before the kill would be counted twice.
    assert_eq!(
        run["metrics"]["recordSummary"]["inputRecordCount"], CONTACTS,
        "each row counted once ({before} before the kill): {run}"
    );
    assert_eq!(run["metrics"]["recordSummary"]["outputRecordCount"], CONTACTS, "{run}");

    let files = data_dir.path().join("datasets/crash/gen-1");
    let sql = format!(
        "SELECT count(*), count(DISTINCT _dynsync_id), count(DISTINCT lastname) FROM read_parquet('{}/*.parquet', union_by_name = true)",
        files.display()
    );
    let counts = duckdb(&sql);
    let expected = Some(CONTACTS.to_string());
    assert_eq!(counts[0], vec![expected.clone(), expected.clone(), expected], "DuckDB reads each contact once");
    second.kill();
}
