//! The worst requests the API's caps allow, measured on a real `dynsync serve` process: its peak memory
//! (VmHWM) after each kind of request is sent `PARALLEL` (4) at a time for `ROUNDS` (5) rounds, against the
//! 256 MB target, and how long a one-profile batch waits meanwhile.
//!
//! 1. A body of 1,000,000 tiny messages (under the 2 MiB body limit, over the 5,000-message cap): refused.
//! 2. 5,000 messages that are not profiles: each answered with its reason.
//! 3. 5,000 profiles of about 400 bytes (2 MiB): accepted, logged and written to the emulator.
//! 4. One message of 2 MiB less a little, a single string.
//!
//! `cargo bench -p dynsync --bench requests` (`-- --json FILE` also writes the figures as JSON). `DYNSYNC_BIN`
//! names another `dynsync` binary to measure (an earlier build, for a before/after in one run).

use dataverse_emulator::{CostModel, EmulatorConfig};
use serde_json::{Value as Json, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";
const BASE: &str = "/data/foundation/flowservice";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The peak resident memory of a process, in MB.
fn peak_memory_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Served {
    child: Child,
    url: String,
    _data_dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(http: &reqwest::Client) -> Served {
    let binary = std::env::var("DYNSYNC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_dynsync").to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data_dir = tempfile::tempdir().unwrap();
    let child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir", data_dir.path().to_str().unwrap()])
        .env("DYNSYNC_API_TOKENS", TOKEN)
        .env("DYNSYNC_ALLOWED_HOSTS", "127.0.0.1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dynsync starts");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "dynsync answers within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Served { child, url, _data_dir: data_dir }
}

async fn call(http: &reqwest::Client, url: &str, path: &str, body: Json) -> Json {
    let response = http
        .post(format!("{url}{BASE}/{path}"))
        .bearer_auth(TOKEN)
        .header("x-sandbox-name", "prod")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

fn profile(contact: uuid::Uuid, i: usize) -> Json {
    json!({"body": {"xdmEntity": {
        "identityMap": {"contactId": [{"id": contact.to_string()}]},
        "person": {"name": {"firstName": format!("First name of profile {i:>150}")}},
        "segmentMembership": {"ups": {"seg-gold": {"status": "realized"}}}
    }}})
}

#[tokio::main]
async fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    let (parallel, rounds) = (env_number("PARALLEL", 4), env_number("ROUNDS", 5));
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await.unwrap();
    let http = reqwest::Client::new();
    let served = serve(&http).await;
    let pid = served.child.id();
    let connection = call(&http, &served.url, "connections", json!({
        "name": "Emulator", "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string()},
        "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
            "clientId": emulator.client_id.to_string(), "clientSecret": emulator.client_secret.expose(),
            "tenantId": emulator.tenant_id.to_string(), "environmentUrl": emulator.url, "authorityHost": emulator.url}}
    }))
    .await;
    let target = call(
        &http,
        &served.url,
        "targetConnections",
        json!({
            "name": "Contacts", "baseConnectionId": connection["id"], "params": {"customizationPrefix": "new"},
            "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string()}
        }),
    )
    .await;
    let client = dynsync::demo::emulator_client(&emulator);
    let column = dataverse::NewColumn {
        schema_name: "new_Gold".into(),
        display_name: "Gold".into(),
        kind: dataverse::NewColumnType::String { max_length: 20 },
    };
    client.create_column("contact", &column).await.unwrap();
    let contacts: Vec<uuid::Uuid> = futures::future::join_all((0..50).map(|i| {
        let client = &client;
        async move {
            let reply = client
                .send(reqwest::Method::POST, "contacts", Some(&json!({"lastname": format!("C{i}")})))
                .await
                .unwrap();
            let location = reply.headers["odata-entityid"].to_str().unwrap().to_string();
            location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap()
        }
    }))
    .await;
    let flow = call(&http, &served.url, "flows", json!({
        "name": "Gold", "targetConnectionIds": [target["id"]],
        "audiences": [{"id": "seg-gold", "mappingId": "gold"}],
        "mappings": [{"source": "contactId", "target": "contactid"}, {"source": "person.name.firstName", "target": "firstname"}]
    }))
    .await;
    let inlet = format!("{}/collection/batch/{}", served.url, flow["id"].as_str().unwrap());
    let idle = peak_memory_mb(pid);

    let mut tiny = b"{\"messages\":[".to_vec();
    tiny.extend(std::iter::repeat_n(&b"1,"[..], 1_000_000).flatten());
    tiny.extend(b"1]}");
    let not_profiles: Vec<Json> = (0..5_000).map(|i| json!({"note": format!("not a profile {i:>380}")})).collect();
    let profiles: Vec<Json> = (0..5_000).map(|i| profile(contacts[i % contacts.len()], i)).collect();
    let one_string = serde_json::to_vec(&json!({"messages": ["x".repeat(2 * 1024 * 1024 - 100)]})).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("1,000,000 tiny messages (refused)", tiny),
        ("5,000 messages that are not profiles", serde_json::to_vec(&json!({ "messages": not_profiles })).unwrap()),
        ("5,000 profiles, 2 MiB", serde_json::to_vec(&json!({ "messages": profiles })).unwrap()),
        ("one 2 MiB string", one_string),
    ];

    println!("dynsync under the worst requests its caps allow, {parallel} at a time, {rounds} rounds each");
    println!("idle after set-up: {idle:.0} MB peak\n");
    println!("| request | body | answer | peak memory | target | ratio | one-profile batch meanwhile, max |");
    println!("|---|---|---|---|---|---|---|");
    let mut figures = Vec::new();
    for (name, body) in &cases {
        let mut answer_bytes = 0usize;
        let mut statuses = std::collections::BTreeSet::new();
        let mut worst_small = Duration::ZERO;
        for _ in 0..rounds {
            let sends = (0..parallel).map(|_| {
                let (http, inlet, body) = (http.clone(), inlet.clone(), body.clone());
                async move {
                    let response = http
                        .post(&inlet)
                        .bearer_auth(TOKEN)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    (status, response.bytes().await.unwrap().len())
                }
            });
            let small = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let started = Instant::now();
                let response = http
                    .post(&inlet)
                    .bearer_auth(TOKEN)
                    .json(&json!({"messages": [profile(contacts[0], 0)]}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                started.elapsed()
            };
            let (answers, waited) = tokio::join!(futures::future::join_all(sends), small);
            worst_small = worst_small.max(waited);
            for (status, bytes) in answers {
                statuses.insert(status);
                answer_bytes = answer_bytes.max(bytes);
            }
        }
        let peak = peak_memory_mb(pid);
        let statuses: Vec<String> = statuses.iter().map(u16::to_string).collect();
        println!(
            "| {name} | {:.1} MB | {} ({:.0} KB) | {peak:.0} MB | 256 MB | {:.2}× | {:.0} ms |",
            body.len() as f64 / 1_048_576.0,
            statuses.join(", "),
            answer_bytes as f64 / 1024.0,
            peak / 256.0,
            worst_small.as_secs_f64() * 1000.0
        );
        figures.push(
            json!({"request": name, "body_bytes": body.len(), "statuses": statuses, "answer_bytes": answer_bytes,
            "peak_memory_mb": peak, "small_batch_max_ms": worst_small.as_secs_f64() * 1000.0}),
        );
    }
    if let Some(path) = json_out {
        std::fs::write(
            path,
            serde_json::to_string_pretty(
                &json!({"parallel": parallel, "rounds": rounds, "idle_mb": idle, "cases": figures}),
            )
            .unwrap(),
        )
        .unwrap();
    }
}
