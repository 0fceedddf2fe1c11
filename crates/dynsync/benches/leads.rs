//! Lead intake, measured: how fast a lead is accepted while the intake drains into a throttled Dynamics, and how
//! a large burst with repeats drains.
//!
//! 1. Acceptance latency: leads posted as Partner Center posts them, paced at `RATE` a second (100) for
//!    `SECONDS` (10), while the intake writes them; p50, p99 and the largest, against the 50 ms target.
//! 2. A burst: `LEADS` leads (10,000), `REPEATS` percent of them a second step of a person already sent (30),
//!    posted as fast as they are accepted into an emulator that throttles as Dynamics does (`CostModel::default`,
//!    Dynamics' execution-time and concurrency limits; its request-count limit raised `REQUEST_LIMIT_FACTOR`
//!    times, 10 by default, so that a 10,000-lead burst drains in minutes rather than in the half hour 6,000
//!    requests per 5 minutes would take). Leads created (target: exactly the distinct people), notes, time to
//!    drain, requests sent per lead, and notifications received by a real SMTP server.
//!
//! `cargo bench -p dynsync --bench leads` (`-- --json FILE` also writes the figures as JSON).

use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use dynsync::leads::notify::SmtpSettings;
use dynsync::mailbox::Mailbox;
use dynsync::{Service, ServiceConfig};
use futures::TryStreamExt;
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

const BASE: &str = "/data/foundation/flowservice";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A lead of `person` of a group (`steady`, `burst`): the groups' emails never meet.
fn lead(group: &str, person: usize, action: &str) -> Json {
    json!({
        "UserDetails": {
            "FirstName": format!("First{person}"), "LastName": format!("Last{person}"),
            "Email": format!("{group}{person}@fabrikam.com"), "Company": "Fabrikam", "Country": "US"
        },
        "LeadSource": format!("AzureMarketplace-{action}|contoso.crm"),
        "ActionCode": action,
        "OfferTitle": "Contoso CRM"
    })
}

struct Bench {
    http: reqwest::Client,
    service: dynsync::RunningService,
    intake_url: String,
    intake: String,
}

impl Bench {
    async fn start(
        emulator: &dataverse_emulator::RunningEmulator,
        mailbox: &Mailbox,
        data_dir: &std::path::Path,
    ) -> Bench {
        let mut config = ServiceConfig::new(data_dir);
        config.api_tokens = vec!["bench-token".into()];
        config.allowed_hosts = "127.0.0.1".parse().unwrap();
        config.smtp = Some(SmtpSettings::local(mailbox.port(), "dynsync@contoso.com"));
        let service = Service::start(config).await.unwrap();
        let http = reqwest::Client::new();
        let call = |path: &str, body: Json| {
            let request = http
                .post(format!("{}{BASE}/{path}", service.url))
                .bearer_auth("bench-token")
                .header("x-sandbox-name", "bench")
                .json(&body);
            async move { request.send().await.unwrap().json::<Json>().await.unwrap() }
        };
        let spec = dynsync::specs::DYNAMICS_DESTINATION.to_string();
        let connection = call("connections", json!({
            "name": "Emulator",
            "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
                "clientId": emulator.client_id.to_string(), "clientSecret": emulator.client_secret.expose(),
                "tenantId": emulator.tenant_id.to_string(), "environmentUrl": emulator.url, "authorityHost": emulator.url}},
            "connectionSpec": {"id": spec, "version": "1.0"}
        })).await["id"].clone();
        let target = call(
            "targetConnections",
            json!({
                "name": "Leads", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
                "connectionSpec": {"id": spec, "version": "1.0"}
            }),
        )
        .await["id"]
            .clone();
        let made = call(
            "flows",
            json!({
                "name": "Marketplace leads", "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC},
                "targetConnectionIds": [target], "notify": "sales@contoso.com"
            }),
        )
        .await;
        let intake_url = format!("{}{}", service.url, made["intakeUrl"].as_str().expect("the intake is made"));
        Bench { http, intake: made["id"].as_str().unwrap().to_string(), service, intake_url }
    }

    async fn post(&self, body: &Json) -> Duration {
        let sent = Instant::now();
        let response = self.http.post(&self.intake_url).json(body).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        sent.elapsed()
    }

    /// The intake's runs: received, created, updated, failed.
    async fn totals(&self) -> [u64; 4] {
        let runs: Json = self
            .http
            .get(format!("{}{BASE}/runs?property=flowId=={}", self.service.url, self.intake))
            .bearer_auth("bench-token")
            .header("x-sandbox-name", "bench")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sum = |field: &str| -> u64 {
            runs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap_or(0))
                .sum()
        };
        [sum("inputRecordCount"), sum("createdRecordCount"), sum("updatedRecordCount"), sum("failedRecordCount")]
    }
}

impl Bench {
    /// Requests dynsync sent to Dataverse, as its /metrics counts them.
    async fn requests(&self) -> u64 {
        let text = self.http.get(format!("{}/metrics", self.service.url)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("dynsync_dataverse_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let json_out = std::env::args().skip_while(|a| a != "--json").nth(1);
    let (rate, seconds) = (env_number("RATE", 100), env_number("SECONDS", 10));
    let (leads, repeats) = (env_number("LEADS", 10_000), env_number("REPEATS", 30));
    let factor = env_number("REQUEST_LIMIT_FACTOR", 10) as u32;
    let limits = Limits { requests: Limits::default().requests * factor, ..Limits::default() };
    let emulator = EmulatorConfig { cost: CostModel::default(), limits, ..Default::default() }.start().await.unwrap();
    let mailbox = Mailbox::start().await.unwrap();

    // 1. Acceptance latency at a steady rate, while the intake drains.
    let data_dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&emulator, &mailbox, data_dir.path()).await;
    let mut latencies = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    for n in 0..rate * seconds {
        ticker.tick().await;
        latencies.push(bench.post(&lead("steady", n, "PLT")).await);
    }
    latencies.sort();
    let (p50, p99, max) =
        (percentile(&latencies, 50), percentile(&latencies, 99), latencies.last().unwrap().as_secs_f64() * 1000.0);
    println!(
        "| acceptance latency at {rate} leads/s for {seconds} s | p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms | < 50 ms | {:.2}× the target |",
        p99 / 50.0
    );
    bench.service.stop().await;

    // 2. A burst with repeats into the throttled emulator.
    let data_dir = tempfile::tempdir().unwrap();
    let bench = Bench::start(&emulator, &mailbox, data_dir.path()).await;
    let already_mailed = mailbox.received();
    let people = leads * (100 - repeats) / 100;
    let started = Instant::now();
    for n in 0..leads {
        // The repeats are second steps of people sent earlier in the burst.
        let body = if n < people {
            lead("burst", n, "PLT")
        } else {
            lead("burst", (n - people) * people / (leads - people).max(1), "INS")
        };
        bench.post(&body).await;
    }
    let posted = started.elapsed();
    let totals = loop {
        let totals = bench.totals().await;
        if totals[0] >= leads as u64 {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained = started.elapsed();
    // Dataverse counts at most 5,000 rows with $count: the leads are read, page by page.
    let table = dataverse::Table::lead();
    let query = dataverse::Query::new(&table)
        .select(&["leadid"])
        .filter(dataverse::Filter::starts_with("emailaddress1", "burst"));
    let in_dynamics = dynsync::demo::emulator_client(&emulator)
        .query(&query)
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .unwrap();
    // Notifications are sent while the leads drain; the last ones shortly after.
    let deadline = Instant::now() + Duration::from_secs(120);
    while mailbox.received() < already_mailed + people as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mail = mailbox.received() - already_mailed;
    let requests = bench.requests().await;
    println!(
        "| {leads} leads, {repeats}% repeats, throttled emulator | {in_dynamics} leads in Dynamics ({} created, {} updated, {} failed) | {people} distinct people | {:.2}× |",
        totals[1],
        totals[2],
        totals[3],
        in_dynamics as f64 / people as f64
    );
    println!(
        "| time to drain | {:.1} s (posting took {:.1} s), {:.0} leads/s | | |",
        drained.as_secs_f64(),
        posted.as_secs_f64(),
        leads as f64 / drained.as_secs_f64()
    );
    println!("| Dataverse requests per lead | {:.2} | | |", requests as f64 / leads as f64);
    println!("| notifications received | {mail} | {people} | {:.2}× |", mail as f64 / people as f64);
    if let Some(path) = json_out {
        let figures = json!({
            "acceptance": {"rate": rate, "seconds": seconds, "p50_ms": p50, "p99_ms": p99, "max_ms": max},
            "burst": {"leads": leads, "repeats_percent": repeats, "people": people, "in_dynamics": in_dynamics,
                      "created": totals[1], "updated": totals[2], "failed": totals[3], "drain_s": drained.as_secs_f64(),
                      "requests_per_lead": requests as f64 / leads as f64, "notifications": mail,
                      "request_limit_factor": factor},
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
    bench.service.stop().await;
}
