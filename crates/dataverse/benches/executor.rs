//! How close the executor gets to the best throughput any client can reach: writes contacts with
//! `UpsertMultiple` against the emulator's default cost model, under Dynamics 365's limits scaled down to a
//! 30 s window (a tenth of the requests and of the execution time, so the same rates), and compares
//! records per second with the ceiling from the emulator README:
//! `ceiling = min(min(C, E / W) × N / d, R × N / W)`.
//!
//! `cargo bench -p dataverse --bench executor [-- --json FILE]`; `RECORDS` (default 200,000) and `CHUNK`
//! (default 1,000) change the sizes. At the default sizes the run takes about five minutes; on this
//! project's 2-core machine it wrote 628 records/s against a ceiling of 654 (0.96×), with 8 429s in 208
//! requests.
//!
//! `USERS` and `WEB_SERVERS` (default 1 and 1) run it signed in as that many app registrations against that
//! many web servers, each server sized for its users (a capacity of 8 requests a user, so that the limits per
//! user and server, not the capacity, bind): the ceiling is then `USERS × WEB_SERVERS` times the one-user
//! ceiling. `RECORDS` defaults to 100,000 a user and server. With `USERS=4 WEB_SERVERS=3 RECORDS=2400000` (ten
//! windows, about five minutes) it wrote 7,597 records/s against 7,850 (0.968×), with 9 429s in 2,409 requests,
//! on a quiet 2-core machine; the default 1,200,000 gave 0.926×. The ceiling here is the steady rate; the
//! emulator README's true upper bound adds the overshoot a window allows (what is in flight when it fills).

use dataverse::{
    BulkOptions, Client, ClientCredentials, Credentials, Environment, ExecutorOptions, RecordId, Secret, Table,
};
use dataverse_emulator::{AppRegistration, CostModel, EmulatorConfig, Limits};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json_file = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let users = env_number("USERS", 1).max(1);
    let web_servers = env_number("WEB_SERVERS", 1).max(1);
    let lanes = users * web_servers;
    let records = env_number("RECORDS", if lanes == 1 { 200_000 } else { 100_000 * lanes });
    let chunk = env_number("CHUNK", 1000).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = runtime.block_on(run(records, chunk, users, web_servers));
    let who = match lanes {
        1 => String::new(),
        _ => format!(", {users} users × {web_servers} web servers"),
    };
    let rows = [
        (
            format!("UpsertMultiple of {chunk}, default costs, limits over a 30 s window{who}, {records} contacts"),
            format!("{:.1} records/s", result.records_per_second),
            format!("{:.1} (ceiling)", result.ceiling),
            format!("{:.3}×", result.records_per_second / result.ceiling),
        ),
        ("429s received".into(), result.throttled.to_string(), "-".into(), "-".into()),
        ("web servers the client found".into(), result.web_servers.to_string(), "-".into(), "-".into()),
        ("requests sent (retries included)".into(), result.requests.to_string(), "-".into(), "-".into()),
        ("elapsed".into(), format!("{:.1} s", result.elapsed.as_secs_f64()), "-".into(), "-".into()),
    ];
    println!("| benchmark | figure | target | ratio |");
    println!("|---|---|---|---|");
    for (name, figure, target, ratio) in &rows {
        println!("| {name} | {figure} | {target} | {ratio} |");
    }
    if let Some(path) = json_file {
        let report = json!({
            "benchmark": "executor_upsert_multiple",
            "records": records,
            "chunk": chunk,
            "users": users,
            "web_servers": web_servers,
            "records_per_second": result.records_per_second,
            "ceiling": result.ceiling,
            "ratio": result.records_per_second / result.ceiling,
            "throttled": result.throttled,
            "requests": result.requests,
            "elapsed_seconds": result.elapsed.as_secs_f64(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON")).expect("writing the JSON report");
    }
}

struct Outcome {
    web_servers: usize,
    records_per_second: f64,
    ceiling: f64,
    throttled: u64,
    requests: u64,
    elapsed: Duration,
}

async fn run(records: usize, chunk: usize, users: usize, web_servers: usize) -> Outcome {
    let defaults = Limits::default();
    let limits = Limits {
        requests: defaults.requests / 10,
        window: Duration::from_secs(30),
        execution_time: defaults.execution_time / 10,
        capacity: defaults.capacity * users as u32,
        ..defaults
    };
    let cost = CostModel::default();
    let applications: Vec<_> = (1..users)
        .map(|i| AppRegistration {
            client_id: Uuid::new_v4(),
            client_secret: dataverse_emulator::Secret::new(format!("bench-{i}")),
        })
        .collect();
    let config = EmulatorConfig { limits, cost, web_servers, applications: applications.clone(), ..Default::default() };
    let emulator = config.start().await.expect("the emulator starts");

    // The formula from the emulator README, for one user on one server, times the users and servers: the
    // capacity, sized for the users, does not bind.
    let w = limits.window.as_secs_f64();
    let d = (cost.per_request + cost.per_record_written * chunk as u32).as_secs_f64();
    let n = chunk as f64;
    let in_flight = f64::from(limits.concurrent).min(limits.execution_time.as_secs_f64() / w);
    assert!(in_flight * users as f64 <= f64::from(limits.capacity), "the capacity would bind");
    let one = (in_flight * n / d).min(f64::from(limits.requests) * n / w);
    let ceiling = one * (users * web_servers) as f64;

    let credentials = ClientCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        client_secret: Secret::new(emulator.client_secret.expose()),
        authority: emulator.url.clone(),
    };
    let others = applications.iter().map(|a| {
        Credentials::ClientSecret(ClientCredentials {
            client_id: a.client_id.to_string(),
            client_secret: Secret::new(a.client_secret.expose()),
            ..credentials.clone()
        })
    });
    let registrations: Vec<_> = std::iter::once(Credentials::ClientSecret(credentials.clone())).chain(others).collect();
    let environment = Environment::from_url(&emulator.url).expect("the emulator's URL");
    let client = Client::with_registrations(environment, registrations, ExecutorOptions::default())
        .expect("registrations given");
    // As Microsoft's sample does: one cheap call first, to sign in and learn the recommended parallelism.
    client.who_am_i().await.expect("the emulator answers WhoAmI");

    let contacts = Table::contact();
    let batch: Vec<_> = (0..records)
        .map(|i| {
            let record = json!({
                "contactid": RecordId::new_v4(),
                "firstname": format!("Bench{i}"),
                "lastname": "Executor",
                "emailaddress1": format!("bench{i}@example.com"),
            });
            match record {
                serde_json::Value::Object(map) => map,
                _ => unreachable!(),
            }
        })
        .collect();
    let before = client.metrics();
    let started = Instant::now();
    client
        .upsert_multiple(
            &contacts,
            &batch,
            // Enough for every user's slots on every server (the hint and the burst: 6 each), and more.
            BulkOptions { chunk_size: chunk, chunks_in_flight: 8 * users * web_servers, ..Default::default() },
        )
        .await
        .expect("every chunk is written");
    let elapsed = started.elapsed();
    let after = client.metrics();
    Outcome {
        web_servers: after.web_servers(),
        records_per_second: records as f64 / elapsed.as_secs_f64(),
        ceiling,
        throttled: after.throttled() - before.throttled(),
        requests: after.requests - before.requests,
        elapsed,
    }
}
