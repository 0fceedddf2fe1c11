//! The dashboard's runs page, measured: how long dynsync takes to answer a flow's page (its status, chart, newest
//! runs with their outcome groups, failed records and timeline) when the flow has kept `RUNS` runs (10,000 by
//! default, over a year of hours, each with three outcome groups) and 200 failed records; and the flows' list.
//! Each page is asked for `ASKS` times (200) one after the other over loopback, after a warm-up; the figure is the
//! 95th percentile against the target of 50 ms. On SQLite, and on PostgreSQL when `DYNSYNC_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`) answers.
//!
//! `cargo bench -p dynsync --bench dashboard`

use dynsync::ids::Sandbox;
use dynsync::service::{Service, ServiceConfig};
use dynsync::store::{Acknowledgement, FailedRecord, FlowRecord, FlowState, Outcome, RunTally, hour_of};
use dynsync::{FlowId, Store};
use sqlx::Connection;
use std::time::{Duration, Instant};

/// The target p95 of the runs page.
const TARGET: Duration = Duration::from_millis(50);

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Fills a disabled flow (no process runs it: the figures are the page's alone) with `runs` hours of runs.
async fn flow_with_runs(store: &Store, sandbox: &Sandbox, runs: usize) -> FlowId {
    let now = chrono::Utc::now();
    let flow = FlowRecord {
        id: FlowId::new(),
        sandbox: sandbox.clone(),
        job: "activation".into(),
        name: "Loyalty audiences".into(),
        definition: serde_json::to_string(&dynsync::activation::FlowDefinition {
            name: "Loyalty audiences".into(),
            description: String::new(),
            target_connection_ids: vec![dynsync::TargetConnectionId::new()],
            audiences: Vec::new(),
            mappings: Vec::new(),
            status_values: Default::default(),
            empty_values: Default::default(),
        })
        .unwrap(),
        state: FlowState::Disabled,
        target_connection_id: None,
        etag: dynsync::ids::Etag::new(),
        created_at: now,
        updated_at: now,
    };
    store.insert_flow(&flow).await.unwrap();
    let hour = hour_of(now);
    for i in 0..runs {
        let mut tally = RunTally::default();
        tally.count(Outcome::Written, "created", "", "c-1", 4_000);
        tally.count(Outcome::Written, "updated", "", "c-2", 900);
        tally.count(Outcome::Excluded, "no-contact-id", "the profile has no contactId", "p-3", 80);
        tally.count(Outcome::Failed, "0x80040217", "Entity 'contact' With Id = … Does Not Exist", "c-4", 20);
        tally.received = tally.written + tally.excluded + tally.failed;
        let failed: Vec<FailedRecord> = (0..usize::from(i < 200))
            .map(|_| FailedRecord {
                key: uuid::Uuid::new_v4().to_string(),
                code: "0x80040217".into(),
                message: "Entity 'contact' With Id = … Does Not Exist".into(),
                payload: r#"{"new_gold":"realized","firstname":"Ann"}"#.into(),
                failed_at: now,
            })
            .collect();
        let ack = Acknowledgement {
            flow: flow.id,
            lease: None,
            cursor: None,
            hour: hour - chrono::Duration::hours(i as i64),
            tally: &tally,
            failed: &failed,
            recovered: &[],
            replayed: &[],
        };
        store.acknowledge(&ack).await.unwrap();
    }
    flow.id
}

/// p50, p95 and max of `asks` requests of `path`, after 10 unmeasured ones.
async fn timed(http: &reqwest::Client, url: &str, cookie: &str, asks: usize) -> (Duration, Duration, Duration) {
    let ask = || async {
        let response = http.get(url).header("Cookie", cookie).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.bytes().await.unwrap();
    };
    for _ in 0..10 {
        ask().await;
    }
    let mut times = Vec::with_capacity(asks);
    for _ in 0..asks {
        let started = Instant::now();
        ask().await;
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1).min(times.len() - 1)];
    (at(0.5), at(0.95), *times.last().unwrap())
}

async fn measure(engine: &str, database_url: Option<String>, runs: usize, asks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(dir.path());
    config.database_url = database_url;
    let service = Service::start(config).await.unwrap();
    let sandbox: Sandbox = "prod".parse().unwrap();
    let filling = Instant::now();
    let flow = flow_with_runs(&service.store, &sandbox, runs).await;
    let filled = filling.elapsed();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = http
        .post(format!("{}/sign-in", service.url))
        .form(&[("token", service.token.as_str()), ("sandbox", "prod"), ("next", "/flows")])
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let page = format!("{}/flows/{flow}", service.url);
    let (p50, p95, max) = timed(&http, &page, &cookie, asks).await;
    let (l50, l95, _) = timed(&http, &format!("{}/flows", service.url), &cookie, asks).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{engine:<10} runs page, {runs} runs kept ({:.0} s to store them): p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; \
         target {} ms: {:.1}x under it",
        filled.as_secs_f64(),
        ms(p50),
        ms(p95),
        ms(max),
        TARGET.as_millis(),
        TARGET.as_secs_f64() / p95.as_secs_f64()
    );
    println!("{engine:<10} flows' list: p50 {:.1} ms, p95 {:.1} ms", ms(l50), ms(l95));
    service.stop().await;
}

#[tokio::main]
async fn main() {
    let runs = env_number("RUNS", 10_000);
    let asks = env_number("ASKS", 200);
    measure("SQLite", None, runs, asks).await;
    let admin = std::env::var("DYNSYNC_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
        println!("PostgreSQL does not answer at {admin}: measured on SQLite only");
        return;
    };
    let name = format!("dynsync_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    measure("PostgreSQL", Some(url.to_string()), runs, asks).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await.unwrap();
}
