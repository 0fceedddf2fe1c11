//! Scale-out: three `dynsync serve` processes share one PostgreSQL database. Profiles are sent to all three while
//! Dynamics misbehaves; the process running the flow is killed with SIGKILL and not restarted. One of the others
//! takes the flow over, every contact ends in the state of the last profile accepted for it, and the runs count
//! every accepted profile once.
//!
//! Needs PostgreSQL: `DYNSYNC_TEST_DATABASE_URL`, or one at 127.0.0.1:5432 (skipped, with a note, when none).

mod common;

use common::{PROCESS_TOKEN, ServeProcess};

use dataverse::{NewColumn, NewColumnType};
use dataverse_emulator::{CostModel, EmulatorConfig, FaultPlan};
use reqwest::Method;
use serde_json::{Value as Json, json};
use sqlx::Connection;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CONTACTS: usize = 1000;
const WAVES: usize = 30;
const BATCH: usize = 500;
const BASE: &str = "/data/foundation/flowservice";

fn serve(database_url: &str, data_dir: &std::path::Path, secret_key: &str) -> ServeProcess {
    ServeProcess::start(
        &["--lease-heartbeat", "1s", "--lease-ttl", "3s", "--data-dir", data_dir.to_str().unwrap()],
        &[("DYNSYNC_DATABASE_URL", database_url), ("DYNSYNC_SECRET_KEY", secret_key)],
    )
}

/// The value of one sample of a metric from `/metrics`, matched by metric name and label text.
async fn metric(http: &reqwest::Client, url: &str, name: &str, labels: &str) -> Option<f64> {
    let text = http.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn message(contact: Uuid, wave: usize) -> Json {
    let status = if wave.is_multiple_of(2) { "realized" } else { "existing" };
    json!({"body": {"xdmEntity": {
        "identityMap": {"contactId": [{"id": contact.to_string()}]},
        "person": {"name": {"firstName": format!("W{wave}")}},
        "segmentMembership": {"ups": {"seg-gold": {"status": status}}},
    }}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_flow_and_a_killed_owner_loses_nothing() {
    common::bounded_for(Duration::from_secs(600), scale_out()).await;
}

async fn scale_out() {
    let Some(database) = common::PgDatabase::create().await else { return };
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await.unwrap();
    let dynamics = dynsync::demo::emulator_client(&emulator);
    let column = NewColumn {
        schema_name: "new_Gold".into(),
        display_name: "Gold".into(),
        kind: NewColumnType::String { max_length: 20 },
    };
    dynamics.create_column("contact", &column).await.unwrap();
    let mut ids = Vec::new();
    for start in (0..CONTACTS).step_by(1000) {
        let targets: Vec<Json> = (start..(start + 1000).min(CONTACTS))
            .map(|i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("C{i}")}))
            .collect();
        let reply = dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap();
        let body: Json = reply.json().await.unwrap();
        ids.extend(body["Ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().parse::<Uuid>().unwrap()));
    }

    // Three processes, one database, one key for the connection's sealed secret, one API token.
    let key = base64_key();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut processes: Vec<ServeProcess> = dirs.iter().map(|d| serve(&database.url, d.path(), &key)).collect();
    let http = reqwest::Client::new();
    for p in &processes {
        p.ready(&http).await;
    }
    let flow = processes[0].gold_flow(&http, &emulator).await;

    // From here on Dynamics fails some requests and drops some connections.
    let faults = ["503:rate=0.05", "500:rate=0.02", "drop:rate=0.02"];
    world_faults(&emulator, &faults);

    // Waves of profiles, each wave in batches spread over the three processes, sent three at a time.
    let messages: Vec<Json> = (0..WAVES).flat_map(|w| ids.iter().map(move |id| message(*id, w))).collect();
    let batches: Vec<Vec<Json>> = messages.chunks(BATCH).map(<[Json]>::to_vec).collect();
    let total = messages.len() as u64;
    let mut killed: Option<usize> = None;
    let mut accepted = 0u64;
    for (round, group) in batches.chunks(3).enumerate() {
        // Halfway, kill the process that runs the flow, with SIGKILL; it is not started again.
        if killed.is_none() && round >= batches.len() / 6 {
            let owner = owner_of(&http, &processes).await;
            processes[owner].kill();
            killed = Some(owner);
        }
        let live: Vec<&ServeProcess> =
            processes.iter().enumerate().filter(|(i, _)| Some(*i) != killed).map(|(_, p)| p).collect();
        let sends = group.iter().enumerate().map(|(i, batch)| {
            let url = live[(round + i) % live.len()].url.clone();
            let http = http.clone();
            let flow = flow.clone();
            async move {
                let reply = http
                    .post(format!("{url}/collection/batch/{flow}"))
                    .bearer_auth(PROCESS_TOKEN)
                    .json(&json!({"messages": batch}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(reply.status(), 200, "every profile is accepted");
                batch.len() as u64
            }
        });
        accepted += futures::future::join_all(sends).await.into_iter().sum::<u64>();
    }
    assert_eq!(accepted, total);
    let killed = killed.expect("a process was killed");

    // A survivor finishes the flow.
    let survivor = &processes[(killed + 1) % 3];
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let received = metric(&http, &survivor.url, "dynsync_flow_records_received_total", &flow).await;
        if received == Some(total as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "the survivors never finished the flow: {received:?} of {total}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world_faults(&emulator, &[]);
    let runs = survivor.call(&http, Method::GET, &format!("{BASE}/runs?property=flowId=={flow}"), None).await.unwrap();
    let sum = |field: &str| -> u64 {
        runs["items"].as_array().unwrap().iter().map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap()).sum()
    };
    assert_eq!(sum("inputRecordCount"), accepted, "each accepted profile counted once: {runs}");
    assert_eq!(sum("outputRecordCount"), accepted, "{runs}");
    assert_eq!(sum("failedRecordCount") + sum("skippedRecordCount"), 0, "{runs}");
    let survivors: Vec<&ServeProcess> =
        processes.iter().enumerate().filter(|(i, _)| *i != killed).map(|(_, p)| p).collect();
    owner_of(&http, &survivors).await;
    let generation = metric(&http, &survivor.url, "dynsync_flow_owner", "generation=\"1\"").await;
    assert_eq!(generation, None, "the flow changed hands: its lease is past its first generation");

    // The last profile accepted for each contact is the one with the highest log sequence number.
    let mut db = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let rows: Vec<(i64, i64, String)> =
        sqlx::query_as("SELECT seq, messages, body FROM inlet_log WHERE flow_id = $1 ORDER BY seq")
            .bind(&flow)
            .fetch_all(&mut db)
            .await
            .unwrap();
    // A row holds what one request accepted: one message, or a list of them in order.
    let messages: Vec<Json> = rows
        .into_iter()
        .flat_map(|(_, count, body)| {
            let body: Json = serde_json::from_str(&body).unwrap();
            if count == 1 { vec![body] } else { body.as_array().unwrap().clone() }
        })
        .collect();
    assert_eq!(messages.len() as u64, accepted, "the log holds every accepted profile, once");
    let mut last: HashMap<Uuid, (String, String)> = HashMap::new();
    for m in messages {
        let entity = &m["body"]["xdmEntity"];
        let id: Uuid = entity["identityMap"]["contactId"][0]["id"].as_str().unwrap().parse().unwrap();
        let name = entity["person"]["name"]["firstName"].as_str().unwrap().to_string();
        let status = entity["segmentMembership"]["ups"]["seg-gold"]["status"].as_str().unwrap().to_string();
        last.insert(id, (name, status));
    }
    let mut seen = 0;
    let mut next = Some("contacts?$select=contactid,firstname,new_gold".to_string());
    while let Some(url) = next {
        let page: Json = dynamics.send(Method::GET, &url, None).await.unwrap().json().await.unwrap();
        for row in page["value"].as_array().unwrap() {
            let id: Uuid = row["contactid"].as_str().unwrap().parse().unwrap();
            let (name, status) = &last[&id];
            assert_eq!(
                (row["firstname"].as_str(), row["new_gold"].as_str()),
                (Some(name.as_str()), Some(status.as_str())),
                "contact {id} holds the last profile accepted for it"
            );
            seen += 1;
        }
        next = page["@odata.nextLink"].as_str().map(|l| l.split_once("/v9.2/").unwrap().1.to_string());
    }
    assert_eq!(seen, CONTACTS);
    for p in &mut processes {
        p.kill();
    }
    database.drop_database().await;
}

/// Which of the processes runs the flow now (waits until one does).
async fn owner_of<P: std::borrow::Borrow<ServeProcess>>(http: &reqwest::Client, processes: &[P]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, p) in processes.iter().enumerate() {
            if metric(http, &p.borrow().url, "dynsync_flows_running_here", "process").await == Some(1.0) {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no process runs the flow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn world_faults(emulator: &dataverse_emulator::RunningEmulator, rules: &[&str]) {
    emulator.faults.inject(FaultPlan { seed: 11, rules: rules.iter().map(|r| r.parse().unwrap()).collect() });
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}
