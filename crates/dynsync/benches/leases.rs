//! Flow ownership on PostgreSQL, measured: lease claims and fenced acknowledgements per second, and how long a
//! flow goes unowned after its owner is killed with SIGKILL (the median of `TAKEOVERS` kills, 10 by default).
//!
//! `cargo bench -p dynsync --bench leases` (`-- --json FILE` also writes the figures as JSON). Uses
//! `DYNSYNC_TEST_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/test`, to create a database of its own.

use dataverse_emulator::{CostModel, EmulatorConfig};
use dynsync::store::{Acknowledgement, ProcessId, RunTally, hour_of};
use dynsync::{FlowId, Store};
use reqwest::Method;
use serde_json::{Value as Json, json};
use sqlx::Connection;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";
const BASE: &str = "/data/foundation/flowservice";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn fresh_database() -> (String, String, String) {
    let admin = std::env::var("DYNSYNC_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("dynsync_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL answers");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    (admin, name, url.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(database_url: &str, data_dir: &std::path::Path, key: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("DYNSYNC_DATABASE_URL", database_url)
        .env("DYNSYNC_API_TOKENS", TOKEN)
        .env("DYNSYNC_SECRET_KEY", key)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dynsync starts")
}

async fn runs_the_flow(http: &reqwest::Client, port: u16) -> bool {
    let Ok(reply) = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await else { return false };
    let text = reply.text().await.unwrap_or_default();
    text.lines().any(|l| l.starts_with("dynsync_flows_running_here{") && l.ends_with(" 1"))
}

async fn ready(http: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "dynsync never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let flows = env_number("FLOWS", 2000);
    let takeovers = env_number("TAKEOVERS", 10);
    let (admin, name, url) = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dynsync::secrets::SecretKey::load(None, dir.path()).unwrap();
    let store = Store::open(Some(&url), dir.path(), key).await.unwrap();

    // Claims: one process takes `flows` free flows, one statement each.
    let owner = ProcessId::new();
    let ids: Vec<FlowId> = (0..flows).map(|_| FlowId::new()).collect();
    let started = Instant::now();
    let mut leases = Vec::new();
    for id in &ids {
        leases.push(store.claim_flow(*id, owner, now_ms(), 15_000).await.unwrap().expect("a free flow is claimed"));
    }
    let claims_per_s = flows as f64 / started.elapsed().as_secs_f64();

    // Acknowledgements: each moves a cursor and adds to a run, fenced by its lease; 8 flows at a time, as 8
    // runners of one process would.
    let tally = RunTally { received: 5000, written: 5000, ..RunTally::default() };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in leases.chunks(flows.div_ceil(8)) {
        let store = store.clone();
        let chunk = chunk.to_vec();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            for (i, lease) in chunk.iter().enumerate() {
                let cursor = i.to_string();
                store
                    .acknowledge(&Acknowledgement {
                        flow: lease.flow,
                        lease: Some(lease),
                        cursor: Some(&cursor),
                        hour: hour_of(chrono::Utc::now()),
                        tally: &tally,
                        failed: &[],
                        recovered: &[],
                        replayed: &[],
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acks_per_s = flows as f64 / started.elapsed().as_secs_f64();

    // Takeover: two processes, one flow; kill the owner, time until the other runs the flow; start a new
    // process in the killed one's place, and again.
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await.unwrap();
    let column = dataverse::NewColumn {
        schema_name: "new_Gold".into(),
        display_name: "Gold".into(),
        kind: dataverse::NewColumnType::String { max_length: 20 },
    };
    dynsync::demo::emulator_client(&emulator).create_column("contact", &column).await.unwrap();
    let key64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    };
    let http = reqwest::Client::new();
    let (flow_db_admin, flow_db_name, flow_db) = fresh_database().await;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut ports = [free_port(), free_port()];
    let mut children =
        [serve(&flow_db, dirs[0].path(), &key64, ports[0]), serve(&flow_db, dirs[1].path(), &key64, ports[1])];
    for port in ports {
        ready(&http, port).await;
    }
    let call = |path: String, body: Json| {
        let http = http.clone();
        let port = ports[0];
        async move {
            let reply = http
                .request(Method::POST, format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(TOKEN)
                .header("x-sandbox-name", "prod")
                .json(&body)
                .send()
                .await
                .unwrap();
            let body: Json = reply.json().await.unwrap();
            body["id"].clone()
        }
    };
    let connection = call(format!("{BASE}/connections"), json!({
        "name": "Emulator",
        "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
            "clientId": emulator.client_id.to_string(), "clientSecret": emulator.client_secret.expose(),
            "tenantId": emulator.tenant_id.to_string(), "environmentUrl": emulator.url, "authorityHost": emulator.url}},
        "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"}
    }))
    .await;
    let target = call(
        format!("{BASE}/targetConnections"),
        json!({
            "name": "Contacts", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
            "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"}
        }),
    )
    .await;
    let flow = call(format!("{BASE}/flows"), json!({
        "name": "Takeover", "targetConnectionIds": [target],
        "audiences": [{"id": "seg-gold", "mappingId": "gold"}], "mappings": [{"source": "contactId", "target": "contactid"}, {"source": "person.name.firstName", "target": "firstname"}]
    }))
    .await;
    assert!(flow.is_string(), "the flow is created");
    let mut times = Vec::new();
    for _ in 0..takeovers {
        let deadline = Instant::now() + Duration::from_secs(60);
        let owner = loop {
            if let Some(i) = futures_owner(&http, &ports).await {
                break i;
            }
            assert!(Instant::now() < deadline, "no process runs the flow");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        children[owner].kill().unwrap();
        children[owner].wait().unwrap();
        let killed = Instant::now();
        let other = 1 - owner;
        while !runs_the_flow(&http, ports[other]).await {
            assert!(killed.elapsed() < Duration::from_secs(60), "the flow was never taken over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(killed.elapsed().as_secs_f64());
        ports[owner] = free_port();
        children[owner] = serve(&flow_db, dirs[owner].path(), &key64, ports[owner]);
        ready(&http, ports[owner]).await;
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ttl = dynsync::service::LeaseTimings::default().ttl.as_secs_f64();
    println!("| benchmark | figure | bound | ratio |");
    println!("|---|---|---|---|");
    println!("| lease claims per second (one statement each, PostgreSQL) | {claims_per_s:.0} /s | | |");
    println!("| fenced acknowledgements per second (8 at a time, PostgreSQL) | {acks_per_s:.0} /s | | |");
    println!(
        "| takeover after SIGKILL, median of {} (min {:.1} s, max {:.1} s) | {median:.1} s | 30 s | {:.2}× |",
        times.len(),
        times[0],
        times[times.len() - 1],
        30.0 / median
    );
    println!(
        "(the lease TTL is {ttl} s and the heartbeat {} s: a takeover waits for the lease to expire, then for the next heartbeat)",
        dynsync::service::LeaseTimings::default().heartbeat.as_secs_f64()
    );
    if let Some(path) = json_out {
        let figures = json!({"claims_per_s": claims_per_s, "acks_per_s": acks_per_s, "takeover_median_s": median, "takeover_s": times});
        std::fs::write(path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
    for (admin, name) in [(admin, name), (flow_db_admin, flow_db_name)] {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await;
        }
    }
}

async fn futures_owner(http: &reqwest::Client, ports: &[u16; 2]) -> Option<usize> {
    for (i, port) in ports.iter().enumerate() {
        if runs_the_flow(http, *port).await {
            return Some(i);
        }
    }
    None
}
