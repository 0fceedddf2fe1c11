//! Crash safety: `dynsync serve` is killed with SIGKILL in the middle of a large activation and started again.
//! Every accepted profile ends up in Dynamics in its latest state, and the run counts each profile once.

use dataverse::{NewColumn, NewColumnType};
use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod common;

use common::{PROCESS_TOKEN, ServeProcess};

const CONTACTS: usize = 6000;
const BASE: &str = "/data/foundation/flowservice";

fn serve(data_dir: &std::path::Path) -> ServeProcess {
    ServeProcess::start(&["--data-dir", data_dir.to_str().unwrap()], &[])
}

/// Profiles received by a flow, as its runs count them (0 while dynsync does not answer).
async fn received(http: &reqwest::Client, dynsync: &ServeProcess, flow: &str) -> u64 {
    let path = format!("{BASE}/runs?property=flowId=={flow}");
    let Ok(runs) = dynsync.call(http, Method::GET, &path, None).await else { return 0 };
    runs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["metrics"]["recordSummary"]["inputRecordCount"].as_u64().unwrap_or(0))
        .sum()
}

use dynsync::demo::emulator_client as dynamics;

fn message(contact: Uuid, status: &str, wave: usize) -> Json {
    json!({"body": {"xdmEntity": {
        "identityMap": {"contactId": [{"id": contact.to_string()}]},
        "person": {"name": {"firstName": format!("Wave{wave}")}},
        "segmentMembership": {"ups": {"seg-gold": {"status": status}}},
    }}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_activation_resumes_without_losing_or_doubling() {
    // Each request costs time, so that the activation is still going when dynsync is killed.
    let cost = CostModel { per_request: Duration::from_millis(150), ..CostModel::free() };
    let emulator = EmulatorConfig { cost, ..Default::default() }.start().await.unwrap();
    let dynamics = dynamics(&emulator);
    dynamics
        .create_column(
            "contact",
            &NewColumn {
                schema_name: "new_Gold".into(),
                display_name: "Gold".into(),
                kind: NewColumnType::String { max_length: 20 },
            },
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for start in (0..CONTACTS).step_by(1000) {
        let targets: Vec<Json> = (start..start + 1000)
            .map(|i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("C{i}")}))
            .collect();
        let body: Json = dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(body["Ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().parse::<Uuid>().unwrap()));
    }

    let data_dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut dynsync = serve(data_dir.path());
    dynsync.ready(&http).await;
    let flow = dynsync.gold_flow(&http, &emulator).await;

    // Two waves: everyone realized, then every third contact exits. The second wave is the latest state.
    let mut messages: Vec<Json> = ids.iter().map(|id| message(*id, "realized", 1)).collect();
    messages.extend(ids.iter().step_by(3).map(|id| message(*id, "exited", 2)));
    let total = messages.len() as u64;
    for chunk in messages.chunks(2000) {
        let receipt = http
            .post(format!("{}/collection/batch/{flow}", dynsync.url))
            .bearer_auth(PROCESS_TOKEN)
            .json(&json!({"messages": chunk}))
            .send()
            .await
            .unwrap();
        assert!(receipt.status().is_success());
    }

    // Kill it once it has handled some profiles, and before it has handled them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let received = received(&http, &dynsync, &flow).await;
        if received > 0 {
            assert!(received < total, "the activation finished before the kill; make it slower");
            break;
        }
        assert!(Instant::now() < deadline, "the activation never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    dynsync.kill(); // SIGKILL

    let mut dynsync = serve(data_dir.path());
    dynsync.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received(&http, &dynsync, &flow).await < total {
        assert!(Instant::now() < deadline, "the activation never finished after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = dynsync.call(&http, Method::GET, &format!("{BASE}/runs?property=flowId=={flow}"), None).await.unwrap();
    let sum = |field: &str| -> u64 {
        runs["items"].as_array().unwrap().iter().map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap()).sum()
    };
    assert_eq!(sum("inputRecordCount"), total, "each accepted profile counted once: {runs}");
    assert_eq!(sum("failedRecordCount") + sum("skippedRecordCount"), 0, "{runs}");

    // Every contact holds its latest state.
    let mut seen = 0;
    let mut next = Some("contacts?$select=contactid,firstname,new_gold".to_string());
    let exited: std::collections::HashSet<Uuid> = ids.iter().step_by(3).copied().collect();
    while let Some(url) = next {
        let page: Json = dynamics.send(Method::GET, &url, None).await.unwrap().json().await.unwrap();
        for row in page["value"].as_array().unwrap() {
            let id: Uuid = row["contactid"].as_str().unwrap().parse().unwrap();
            let (status, name) = if exited.contains(&id) { ("exited", "Wave2") } else { ("realized", "Wave1") };
            assert_eq!(
                (row["new_gold"].as_str(), row["firstname"].as_str()),
                (Some(status), Some(name)),
                "contact {id}"
            );
            seen += 1;
        }
        next = page["@odata.nextLink"].as_str().map(|l| l.split_once("/v9.2/").unwrap().1.to_string());
    }
    assert_eq!(seen, CONTACTS);
    dynsync.kill();
}
