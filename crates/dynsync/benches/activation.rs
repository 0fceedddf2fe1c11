//! Audience activation, measured: profiles per second from ingestion to Dynamics, the latency from acceptance
//! to the Dynamics write at a fixed offered load, and dynsync's peak memory.
//!
//! `cargo bench -p dynsync --bench activation` (`PROFILES` sets the size, 1,000,000 by default; `-- --json FILE`
//! also writes the figures as JSON). The emulator runs at zero cost in a process of its own, and so does the load
//! generator — this binary, started again with `--emulator` or `--load` — so that the memory and the CPU measured
//! are dynsync's alone; the other two processes' CPU is reported beside it. The generator writes each batch's body
//! as text, so that it takes as little of the two cores it shares with dynsync as it can.

use dataverse::{Client, ClientCredentials, Environment, NewColumn, NewColumnType, Secret};
use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use dynsync::{Service, ServiceConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const TOKEN: &str = "bench-token";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// dynsync's resident memory high-water mark, in MB.
fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// What the load generator is told on its standard input, as one JSON line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Load {
    inlet: String,
    token: String,
    profiles: usize,
    senders: usize,
    contacts: Vec<Uuid>,
}

/// The body of one batch of the throughput run: profiles `first..end`, as [`message`] shapes them.
fn batch_body(load: &Load, first: usize, end: usize) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity((end - first) * 200 + 16);
    body.push_str("{\"messages\":[");
    for i in first..end {
        if i > first {
            body.push(',');
        }
        let status = if i % 7 == 0 { "exited" } else { "realized" };
        write!(
            body,
            "{{\"body\":{{\"xdmEntity\":{{\"identityMap\":{{\"contactId\":[{{\"id\":\"{}\"}}]}},\
             \"person\":{{\"name\":{{\"firstName\":\"P{i}\"}}}},\
             \"segmentMembership\":{{\"ups\":{{\"seg-gold\":{{\"status\":\"{status}\"}}}}}}}}}}}}",
            load.contacts[i % load.contacts.len()]
        )
        .expect("writing to a string");
    }
    body.push_str("]}");
    body
}

/// The load generator: sends the throughput run's profiles in batches of 1,000 from `senders` tasks, then prints
/// its CPU seconds.
async fn run_load() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let load: std::sync::Arc<Load> = std::sync::Arc::new(serde_json::from_str(&line).unwrap());
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for s in 0..load.senders {
        let (http, load) = (http.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = s * 1000;
            while n < load.profiles {
                let body = batch_body(&load, n, (n + 1000).min(load.profiles));
                let response = http
                    .post(&load.inlet)
                    .bearer_auth(&load.token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                n += load.senders * 1000;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("{}", cpu_seconds("self"));
}

fn message(contact: Uuid, audience: &str, status: &str, name: &str) -> Json {
    json!({"body": {"xdmEntity": {
        "identityMap": {"contactId": [{"id": contact.to_string()}]},
        "person": {"name": {"firstName": name}},
        "segmentMembership": {"ups": {audience: {"status": status}}},
    }}})
}

async fn run_emulator() {
    let limits = Limits { requests: 1_000_000_000, concurrent: 100_000, ..Limits::default() };
    let emulator = EmulatorConfig { cost: CostModel::free(), limits, ..Default::default() }.start().await.unwrap();
    println!("{}", emulator.announcement());
    // Serve until the parent closes stdin.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--emulator") {
        return run_emulator().await;
    }
    if args.iter().any(|a| a == "--load") {
        return run_load().await;
    }
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let profiles = env_number("PROFILES", 1_000_000);
    let contacts = env_number("CONTACTS", 100_000).min(profiles);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--emulator")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let announcement: Json = serde_json::from_str(&line).unwrap();
    let url = announcement["url"].as_str().unwrap().to_string();
    let credentials = ClientCredentials {
        tenant_id: announcement["tenant_id"].as_str().unwrap().into(),
        client_id: announcement["client_id"].as_str().unwrap().into(),
        client_secret: Secret::new(announcement["client_secret"].as_str().unwrap()),
        authority: url.clone(),
    };
    let dynamics = Client::new(Environment::from_url(&url).unwrap(), credentials.clone());
    let column = NewColumn {
        schema_name: "new_Gold".into(),
        display_name: "Gold".into(),
        kind: NewColumnType::String { max_length: 20 },
    };
    dynamics.create_column("contact", &column).await.unwrap();
    let raw = Raw::sign_in(&announcement).await;
    let mut ids = Vec::with_capacity(contacts);
    for start in (0..contacts).step_by(1000) {
        let targets: Vec<Json> = (start..(start + 1000).min(contacts))
            .map(|i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("B{i}")}))
            .collect();
        let body = raw
            .send(
                Method::POST,
                "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
                Some(json!({"Targets": targets})),
                None,
            )
            .await;
        ids.extend(body["Ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().parse::<Uuid>().unwrap()));
    }
    eprintln!("seeded {contacts} contacts");

    let data_dir = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec![TOKEN.into()];
    config.allowed_hosts = "127.0.0.1".parse().unwrap();
    let service = Service::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let api = |method: Method, path: &str| {
        http.request(method, format!("{}/data/foundation/flowservice/{path}", service.url))
            .bearer_auth(TOKEN)
            .header("x-sandbox-name", "bench")
    };
    let id = |j: Json| j["id"].as_str().unwrap().to_string();
    let connection = id(api(Method::POST, "connections")
        .json(&json!({
            "name": "Emulator",
            "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
                "clientId": credentials.client_id, "clientSecret": credentials.client_secret.expose(),
                "tenantId": credentials.tenant_id, "environmentUrl": url, "authorityHost": url}},
            "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    let target = id(api(Method::POST, "targetConnections")
        .json(&json!({"name": "Contacts", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
            "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap());
    let flow = id(api(Method::POST, "flows")
        .json(&json!({"name": "Gold", "targetConnectionIds": [target],
            "audiences": [{"id": "seg-gold", "mappingId": "gold"}],
            "mappings": [{"source": "contactId", "target": "contactid"}, {"source": "person.name.firstName", "target": "firstname"}]}))
        .send().await.unwrap().json().await.unwrap());
    let inlet = format!("{}/collection/batch/{flow}", service.url);
    let handled = || {
        let request = api(Method::GET, &format!("runs?property=flowId=={flow}"));
        async move {
            let runs: Json = request.send().await.unwrap().json().await.unwrap();
            runs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["metrics"]["recordSummary"]["inputRecordCount"].as_u64().unwrap_or(0))
                .sum::<u64>()
        }
    };

    // Throughput: every profile from the first POST to its acknowledged Dynamics write.
    let mut generator = Command::new(std::env::current_exe().unwrap())
        .arg("--load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Load { inlet: inlet.clone(), token: TOKEN.into(), profiles, senders: 4, contacts: ids.clone() };
    // The generator's text is the messages the latency run builds as JSON.
    let written: Json = serde_json::from_str(&batch_body(&load, 6, 8)).unwrap();
    let built: Vec<Json> = (6..8)
        .map(|i| {
            message(ids[i % ids.len()], "seg-gold", if i % 7 == 0 { "exited" } else { "realized" }, &format!("P{i}"))
        })
        .collect();
    assert_eq!(written, json!({"messages": built}));
    let (started, cpu_started, emulator_cpu_started) =
        (Instant::now(), cpu_seconds("self"), cpu_seconds(&child.id().to_string()));
    {
        use std::io::Write;
        let mut stdin = generator.stdin.take().unwrap();
        writeln!(stdin, "{}", serde_json::to_string(&load).unwrap()).unwrap();
    }
    let generator_output = tokio::task::spawn_blocking(move || generator.wait_with_output().unwrap()).await.unwrap();
    assert!(generator_output.status.success(), "the load generator failed");
    let generator_cpu: f64 = String::from_utf8_lossy(&generator_output.stdout).trim().parse().unwrap();
    let accepted_in = started.elapsed();
    while handled().await < profiles as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds("self") - cpu_started;
    let emulator_cpu = cpu_seconds(&child.id().to_string()) - emulator_cpu_started;
    let rate = profiles as f64 / elapsed.as_secs_f64();
    eprintln!(
        "{profiles} profiles accepted in {:.1}s, all written in {:.1}s",
        accepted_in.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // Latency at 1,000 profiles a second: 100 profiles every 100 ms for 10 s, each to a contact of its own with
    // a name of its own; a profile's latency runs from its acceptance to the first delta read (every 100 ms)
    // that shows its contact holding that name.
    let delta_link =
        |page: &Json| page["@odata.deltaLink"].as_str().map(|l| l.split_once("/v9.2/").unwrap().1.to_string());
    let mut next = Some("contacts?$select=firstname".to_string());
    let mut delta = None;
    while let Some(url) = next {
        let page = raw.send(Method::GET, &url, None, Some("odata.track-changes")).await;
        next = page["@odata.nextLink"].as_str().map(|l| l.split_once("/v9.2/").unwrap().1.to_string());
        delta = delta_link(&page).or(delta);
    }
    let mut delta = delta.expect("the last page has a delta link");
    let mut pending: std::collections::HashMap<Uuid, (String, Instant)> = std::collections::HashMap::new();
    let mut latencies = Vec::new();
    let offered = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0usize;
    while offered.elapsed() < Duration::from_secs(10) || !pending.is_empty() {
        tick.tick().await;
        if offered.elapsed() < Duration::from_secs(10) {
            let batch: Vec<(Uuid, String)> =
                (0..100).map(|k| (ids[(sent + k) % ids.len()], format!("L{}", sent + k))).collect();
            sent += 100;
            let messages: Vec<Json> = batch.iter().map(|(c, name)| message(*c, "seg-gold", "realized", name)).collect();
            http.post(&inlet).bearer_auth(TOKEN).json(&json!({"messages": messages})).send().await.unwrap();
            let accepted = Instant::now();
            pending.extend(batch.into_iter().map(|(c, n)| (c, (n, accepted))));
        }
        let page = raw.send(Method::GET, &delta, None, None).await;
        let now = Instant::now();
        for row in page["value"].as_array().into_iter().flatten() {
            let Some(id) = row["contactid"].as_str().and_then(|i| i.parse::<Uuid>().ok()) else { continue };
            if pending.get(&id).is_some_and(|(name, _)| row["firstname"].as_str() == Some(name)) {
                latencies.push(now - pending.remove(&id).expect("pending").1);
            }
        }
        delta = delta_link(&page).expect("a delta link");
    }
    latencies.sort();
    let percentile =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0;
    let (p50, p99) = (percentile(0.50), percentile(0.99));
    let memory = peak_memory_mb();
    let per_100k = |seconds: f64| seconds * 100_000.0 / profiles as f64;
    let cpu_per_100k = per_100k(cpu);

    println!("| benchmark | figure | target | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| {profiles} profiles, ingestion to Dynamics, zero cost | {rate:.0} profiles/s | 20,000 | {:.2}× |",
        rate / 20_000.0
    );
    println!("| latency acceptance → Dynamics at 1,000 profiles/s, p50 | {p50:.0} ms | | |");
    println!(
        "| latency acceptance → Dynamics at 1,000 profiles/s, p99 | {p99:.0} ms | 1,000 | {:.2}× |",
        1000.0 / p99.max(1.0)
    );
    println!("| CPU seconds per 100,000 profiles, dynsync | {cpu_per_100k:.2} s | | |");
    println!("| CPU seconds per 100,000 profiles, the emulator | {:.2} s | | |", per_100k(emulator_cpu));
    println!("| CPU seconds per 100,000 profiles, the load generator | {:.2} s | | |", per_100k(generator_cpu));
    println!("| peak memory, dynsync | {memory:.0} MB | 256 | {:.2}× |", 256.0 / memory.max(1.0));
    if let Some(path) = json_out {
        let figures = json!({"profiles": profiles, "profiles_per_second": rate, "latency_p50_ms": p50, "latency_p99_ms": p99,
            "cpu_seconds_per_100k": cpu_per_100k, "emulator_cpu_seconds_per_100k": per_100k(emulator_cpu),
            "load_generator_cpu_seconds_per_100k": per_100k(generator_cpu), "peak_memory_mb": memory});
        std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
    service.stop().await;
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Plain Web API requests to the emulator, for seeding and reading back.
struct Raw {
    http: reqwest::Client,
    web_api: String,
    token: String,
}

impl Raw {
    async fn sign_in(announcement: &Json) -> Raw {
        let http = reqwest::Client::new();
        let answer: Json = http
            .post(announcement["token_url"].as_str().unwrap())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", announcement["client_id"].as_str().unwrap()),
                ("client_secret", announcement["client_secret"].as_str().unwrap()),
                ("scope", &format!("{}/.default", announcement["url"].as_str().unwrap())),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = answer["access_token"].as_str().unwrap().to_string();
        Raw { http, web_api: announcement["web_api"].as_str().unwrap().to_string(), token }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Json>, prefer: Option<&str>) -> Json {
        let mut request = self.http.request(method, format!("{}{path}", self.web_api)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(prefer) = prefer {
            request = request.header("Prefer", prefer);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }
}

/// CPU time a process (`self`, or a pid) has used, in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}
