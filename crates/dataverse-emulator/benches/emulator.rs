//! Emulator throughput, against the binary as users run it (a separate process with a `--state` file):
//!
//! - single-record `PATCH` updates per second over keep-alive connections (target ≥ 5,000/s);
//! - rows per second paging through 1,000,000 contacts at 5,000 a page (target ≥ 100,000/s);
//! - records per second with `UpsertMultiple` of 1,000 contacts a request, no execution cost (target ≥ 30,000/s);
//! - with the default cost model and limits, a sequential client's throughput against the README's formula
//!   `N / (cost_per_request + N × cost_per_record_written)` (target: within 10%).
//!
//! `cargo bench -p dataverse-emulator --bench emulator` (set `ROWS`, `PATCHES` or `CONNECTIONS` to change the
//! sizes). Prints each figure and its ratio to the target; `--json FILE` also writes them as JSON.

use dataverse_emulator::records::{Preconditions, WriteKind, WriteRequest, write};
use dataverse_emulator::store::Store;
use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;
use uuid::Uuid;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `rows` contacts straight into a state file, through the same validation the Web API uses.
async fn seed(path: &std::path::Path, rows: usize) -> Vec<Uuid> {
    let store = Store::open(path).await.expect("state file opens");
    let table = store.read().schema.table("contact").expect("contact").clone();
    let caller = Uuid::new_v4();
    let mut ids = Vec::with_capacity(rows);
    for chunk in 0..rows.div_ceil(10_000) {
        let created = store
            .write(|data, journal| {
                let mut created = Vec::new();
                for i in chunk * 10_000..((chunk + 1) * 10_000).min(rows) {
                    let body = json!({
                        "firstname": format!("First{i}"),
                        "lastname": format!("Last{i}"),
                        "emailaddress1": format!("contact{i}@example.com"),
                        "telephone1": "+1 425 555 0100",
                        "jobtitle": "Buyer",
                        "gendercode": 1 + (i % 2) as i64,
                        "numberofchildren": (i % 4) as i64,
                        "address1_city": "Redmond",
                    });
                    let request = WriteRequest {
                        table: &table,
                        key: None,
                        body: body.as_object().unwrap(),
                        kind: WriteKind::Create,
                        preconditions: &Preconditions::default(),
                        caller,
                    };
                    let outcome = write(data, journal, request)?;
                    created.push(outcome.id);
                }
                Ok::<_, dataverse_emulator::error::ApiError>(created)
            })
            .await
            .expect("seed rows are valid");
        ids.extend(created);
    }
    ids
}

struct Server {
    child: Child,
    announcement: Json,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataverse-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the emulator binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("announcement");
    Server { announcement: serde_json::from_str(&line).expect("one JSON line"), child }
}

async fn token(http: &reqwest::Client, a: &Json) -> String {
    let answer: Json = http
        .post(a["token_url"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", a["client_id"].as_str().unwrap()),
            ("client_secret", a["client_secret"].as_str().unwrap()),
            ("scope", &format!("{}/.default", a["url"].as_str().unwrap())),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    target: f64,
}

#[tokio::main]
async fn main() {
    let rows = env_number("ROWS", 1_000_000);
    let patches = env_number("PATCHES", 50_000);
    let connections = env_number("CONNECTIONS", 16);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bench.db");

    let started = Instant::now();
    let ids = seed(&state, rows).await;
    eprintln!("seeded {rows} contacts into {} in {:.1}s", state.display(), started.elapsed().as_secs_f64());

    let started = Instant::now();
    // Raw speed: no execution cost, and limits too high to reach.
    let state_arg = state.to_str().expect("a UTF-8 path");
    let server = start_server(&[
        "--free",
        "--limit-requests",
        "1000000000",
        "--limit-concurrent",
        "100000",
        "--state",
        state_arg,
    ]);
    eprintln!("emulator loaded the state file and started in {:.1}s", started.elapsed().as_secs_f64());
    let a = &server.announcement;
    let web_api = a["web_api"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder().pool_max_idle_per_host(connections).build().unwrap();
    let bearer = format!("Bearer {}", token(&http, a).await);

    // PATCH: `connections` clients, each on its own keep-alive connection, updating distinct contacts.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, bearer, web_api) = (http.clone(), bearer.clone(), web_api.clone());
        let mine: Vec<Uuid> =
            ids.iter().skip(c).step_by(connections).copied().cycle().take(patches / connections).collect();
        tasks.push(tokio::spawn(async move {
            for (n, id) in mine.into_iter().enumerate() {
                let response = http
                    .patch(format!("{web_api}contacts({id})"))
                    .header("Authorization", &bearer)
                    .header("If-Match", "*")
                    .json(&json!({"jobtitle": format!("Buyer {n}"), "numberofchildren": (n % 5) as i64}))
                    .send()
                    .await
                    .expect("answered");
                assert_eq!(response.status(), 204, "{}", response.text().await.unwrap_or_default());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let patch_rate = (patches / connections * connections) as f64 / started.elapsed().as_secs_f64();

    // Paging: every contact at 5,000 a page, following @odata.nextLink.
    let started = Instant::now();
    let mut seen = 0usize;
    let mut next = Some(format!("{web_api}contacts?$select=fullname,emailaddress1,jobtitle,numberofchildren"));
    while let Some(url) = next {
        let page: Json = http
            .get(url)
            .header("Authorization", &bearer)
            .header("Prefer", "odata.maxpagesize=5000")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen += page["value"].as_array().expect("a page").len();
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    let page_rate = seen as f64 / started.elapsed().as_secs_f64();
    assert_eq!(seen, rows, "every contact is read once");

    // UpsertMultiple: 1,000 existing contacts a request, one request after another.
    let requests = env_number("UPSERT_REQUESTS", 50).min(rows / 1000).max(1);
    let started = Instant::now();
    for r in 0..requests {
        let targets: Vec<Json> = ids[r * 1000..((r + 1) * 1000).min(ids.len())]
            .iter()
            .map(|id| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": id, "jobtitle": format!("Upserted {r}")}))
            .collect();
        let response = http
            .post(format!("{web_api}contacts/Microsoft.Dynamics.CRM.UpsertMultiple"))
            .header("Authorization", &bearer)
            .json(&json!({"Targets": targets}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{}", response.text().await.unwrap_or_default());
    }
    let upsert_rate = (requests * 1000) as f64 / started.elapsed().as_secs_f64();
    drop(server);

    // The default cost model and limits: a sequential client against the formula.
    let costed = start_server(&[]);
    let a = &costed.announcement;
    let web_api = a["web_api"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {}", token(&http, a).await);
    let cost = dataverse_emulator::CostModel::default();
    let mut formula = Vec::new();
    for (n, requests) in [(1usize, 60usize), (100, 8)] {
        let started = Instant::now();
        for r in 0..requests {
            let targets: Vec<Json> = (0..n)
                .map(
                    |i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("Costed {r}-{i}")}),
                )
                .collect();
            let response = http
                .post(format!("{web_api}contacts/Microsoft.Dynamics.CRM.CreateMultiple"))
                .header("Authorization", &bearer)
                .json(&json!({"Targets": targets}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let measured = (n * requests) as f64 / started.elapsed().as_secs_f64();
        let predicted = n as f64 / (cost.per_request + cost.per_record_written * n as u32).as_secs_f64();
        formula.push((n, measured, predicted));
    }

    let mut figures = vec![
        Figure {
            name: format!("PATCH, {connections} keep-alive connections, --state"),
            value: patch_rate,
            unit: "updates/s",
            target: 5_000.0,
        },
        Figure {
            name: format!("paging {rows} contacts at 5,000 a page, --state"),
            value: page_rate,
            unit: "rows/s",
            target: 100_000.0,
        },
        Figure {
            name: "UpsertMultiple of 1,000, no cost, --state".into(),
            value: upsert_rate,
            unit: "records/s",
            target: 30_000.0,
        },
    ];
    for (n, measured, predicted) in &formula {
        figures.push(Figure {
            name: format!("sequential, {n} a request, default costs (formula {predicted:.1}/s)"),
            value: *measured,
            unit: "records/s",
            target: *predicted,
        });
    }
    println!("\n{:<64} {:>20} {:>10} {:>8}", "benchmark", "figure", "target", "ratio");
    for f in &figures {
        println!("{:<64} {:>10.1} {:<9} {:>10.1} {:>7.3}x", f.name, f.value, f.unit, f.target, f.value / f.target);
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--json") {
        let path = args.get(i + 1).expect("--json FILE");
        let out: Vec<Json> = figures
            .iter()
            .map(|f| json!({"benchmark": f.name, "value": f.value, "unit": f.unit, "target": f.target, "ratio": f.value / f.target}))
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&out).unwrap()).expect("JSON written");
    }
}
