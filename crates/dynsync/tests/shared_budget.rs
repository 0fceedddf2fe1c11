//! Two dynsync processes on one store, each running a lead intake through the same connection — one application
//! user on one web server — share that user's budget under Dataverse's service protection limits: each counts what
//! the other spent in the window, so that together they stay under the limits rather than each filling them on
//! its own and being refused for what the other sent.
//!
//! The processes are two `Service`s in one test (separate clients, separate process ids, each serving its own
//! API), on one PostgreSQL database or one SQLite file, sharing every 100 ms. The emulator allows 30 requests
//! per 2-second window; the run is about 380 requests, a dozen windows. Each process starts with Dynamics 365's
//! limits (6,000 requests) and learns the emulator's from the first 429 either of them gets (the other hears of it
//! at its next tick), so the first window is overshot by what both have in flight then. After that the margin is
//! the executor's 1% (less than one request here) against what one process sends before the other hears of it.
//! Without sharing, each process fills the window on its own: 6 to 26 requests were refused once both knew the
//! limits, over twelve runs. With it, while each process reported what its window held at the instant of the
//! report, 3 to 5 were in 6 of 32 runs: a report made just after the process's oldest requests had left its window,
//! before their successors went out, told the other of room taken again a moment later. Reporting the most held
//! since the last report: 0 to 1 over twelve.

mod common;

use common::{Backend, LOOPBACK, World};
use dataverse_emulator::limits::Limits;
use dataverse_emulator::{CostModel, EmulatorConfig};
use dynsync::service::LeaseTimings;
use dynsync::{RunningService, Service, ServiceConfig};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The emulator's request limit per window, per user and web server.
const REQUESTS: u32 = 30;
const WINDOW: Duration = Duration::from_secs(2);
/// Leads posted to each intake: about three requests each (find, create, note).
const LEADS: usize = 60;
/// The 429s allowed over the run: when the limits are learned, what both processes have in flight (the hint of 4
/// and 2 burst slots each) is refused, and a few more while the second hears of the first's.
const MOST_REFUSED: u64 = 16;
/// The 429s allowed once both processes know the limits: what one sends before the other hears of it, beyond the
/// 1% each keeps in reserve, now and then.
const MOST_REFUSED_ONCE_LEARNED: u64 = 3;

fn limits() -> Limits {
    Limits { requests: REQUESTS, window: WINDOW, execution_time: Duration::from_secs(3600), ..Limits::default() }
}

fn settings(config: &mut ServiceConfig) {
    config.lease = LeaseTimings { heartbeat: Duration::from_millis(300), ttl: Duration::from_secs(3) };
    config.budget_interval = Duration::from_millis(100);
}

/// A second process on the world's store: its own data directory, the same database and key.
async fn second_process(world: &World) -> (RunningService, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = ServiceConfig::new(data_dir.path());
    config.database_url = Some(match &world.database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}", world.data_dir.path().join("dynsync.db").display()),
    });
    let key = std::fs::read_to_string(world.data_dir.path().join("secret.key")).unwrap();
    config.secret_key = Some(key.trim().to_string());
    config.api_tokens = vec![world.service.token.clone()];
    config.allowed_hosts = LOOPBACK.parse().unwrap();
    settings(&mut config);
    (Service::start(config).await.unwrap(), data_dir)
}

/// The value of one sample of a metric of a process's `/metrics`, matched by name and label text; 0 if absent.
async fn metric(world: &World, service: &RunningService, name: &str, labels: &str) -> f64 {
    let text = world.http.get(format!("{}/metrics", service.url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A lead intake over `target`; its id and its URL with the secret.
async fn intake(world: &World, target: &str, name: &str) -> (String, String) {
    let reply = world
        .post(
            "flows",
            json!({
                "name": name,
                "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC, "version": "1.0"},
                "targetConnectionIds": [target],
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let answer = reply.json();
    (answer["id"].as_str().unwrap().to_string(), answer["intakeUrl"].as_str().unwrap().to_string())
}

fn lead(email: &str) -> Json {
    json!({
        "UserDetails": {"FirstName": "Ana", "LastName": "Lima", "Email": email, "Country": "United States", "Company": "Contoso"},
        "LeadSource": "AzureMarketplace-PLT|contoso.crm",
        "ActionCode": "PLT",
        "OfferTitle": "Contoso crm",
    })
}

/// Two processes on the world's store, each running one lead intake through one connection: the second process
/// (with its data directory), the connection, and the intakes (id and URL), the first process's first.
struct TwoIntakes {
    second: RunningService,
    _second_dir: tempfile::TempDir,
    connection: String,
    intakes: [(String, String); 2],
}

async fn two_intakes(backend: Backend) -> Option<(World, TwoIntakes)> {
    let emulator = EmulatorConfig {
        cost: CostModel { per_request: Duration::from_millis(10), ..CostModel::free() },
        limits: limits(),
        ..Default::default()
    };
    let world = World::start_configured(backend, emulator, settings).await?;
    let (second, _second_dir) = second_process(&world).await;
    let (connection, target) = world.destination("new").await;
    let intakes = [intake(&world, &target, "Marketplace A").await, intake(&world, &target, "Marketplace B").await];
    // One flow has one owner at a time: each process takes one of the two.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut owners = Vec::new();
    loop {
        let mut running = Vec::new();
        for process in [&world.service, &second] {
            running.push(metric(&world, process, "dynsync_flows_running_here", "").await);
        }
        if running == [1.0, 1.0] {
            for (id, _) in &intakes {
                let reply = world.get(&format!("flows/{id}")).await;
                owners.push(reply.json()["items"][0]["runtime"]["owner"].as_str().map(str::to_string));
            }
            break;
        }
        assert!(Instant::now() < deadline, "each process runs one intake: {running:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut intakes = intakes;
    if owners[0] != Some(process_id(&world, &world.service).await) {
        intakes.swap(0, 1);
    }
    Some((world, TwoIntakes { second, _second_dir, connection, intakes }))
}

/// A process's id, as its `/metrics` names it.
async fn process_id(world: &World, service: &RunningService) -> String {
    let text = world.http.get(format!("{}/metrics", service.url)).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("dynsync_flows_running_here{")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

/// The number a process's `dynsync_dataverse_window_limit` gives for `limit` of `connection`.
async fn window_limit(world: &World, process: &RunningService, connection: &str, limit: &str) -> f64 {
    let labels = format!("connection=\"{connection}\",limit=\"{limit}\"");
    metric(world, process, "dynsync_dataverse_window_limit", &labels).await
}

/// Posts `count` leads (`prefix0@contoso.com`, …) to an intake of `process`; the addresses.
async fn post_leads(world: &World, process: &RunningService, url: &str, prefix: &str, count: usize) -> Vec<String> {
    let mut emails = Vec::new();
    for i in 0..count {
        let email = format!("{prefix}{i}@contoso.com");
        let response = world.http.post(format!("{}{url}", process.url)).json(&lead(&email)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", response.text().await.unwrap());
        emails.push(email);
    }
    emails
}

async fn two_processes_writing_as_one_user_share_its_budget(backend: Backend) {
    let Some((world, two)) = two_intakes(backend).await else { return };
    let TwoIntakes { second, connection, intakes, .. } = &two;
    let processes = [&world.service, second];

    let mut expected = BTreeMap::new();
    for ((_, url), (prefix, process)) in intakes.iter().zip([("a", processes[0]), ("b", processes[1])]) {
        for email in post_leads(&world, process, url, prefix, LEADS).await {
            expected.insert(email, 1);
        }
    }
    // Until every lead is handled: the 429s so far once both processes know the limits (a 429 told one, or both).
    let limiter = &world.emulator.environment.limiter;
    let mut refused_once_learned = None;
    let others = format!("connection=\"{connection}\"");
    let mut heard_of_the_other = [0.0f64; 2];
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if refused_once_learned.is_none() {
            let refused = limiter.refused();
            let mut learned = true;
            for process in processes {
                learned &= window_limit(&world, process, connection, "requests").await == f64::from(REQUESTS);
            }
            refused_once_learned = learned.then_some(refused);
        }
        for (heard, process) in heard_of_the_other.iter_mut().zip(processes) {
            *heard = heard.max(metric(&world, process, "dynsync_dataverse_others_requests", &others).await);
        }
        let mut handled = Vec::new();
        for (id, _) in intakes.iter() {
            handled.push(common::Totals::of(&world.runs(id).await).received);
        }
        if handled.iter().all(|h| *h >= LEADS as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "only {handled:?} of {LEADS} leads each handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (id, _) in intakes.iter() {
        let runs = world.runs(id).await;
        let totals = common::Totals::of(&runs);
        assert_eq!((totals.written, totals.failed), (LEADS as u64, 0), "every lead is written: {runs:?}");
    }
    let refused = limiter.refused();
    let learned = refused_once_learned.expect("both processes learned the limits");
    let refused_after = refused - learned;
    let peaks = limiter.peaks();
    let mut sent = Vec::new();
    for process in processes {
        let labels = format!("connection=\"{connection}\"");
        sent.push(metric(&world, process, "dynsync_dataverse_requests_total", &labels).await);
    }
    // Both wrote at once, through the same user.
    assert!(sent.iter().all(|s| *s >= LEADS as f64), "each process sent its intake's requests: {sent:?}");
    let writers: Vec<_> = peaks.iter().filter(|p| p.admitted > 0).collect();
    assert_eq!(writers.len(), 1, "one user on one web server: {peaks:?}");
    assert!(writers[0].requests <= REQUESTS, "{peaks:?}");
    assert!(
        refused <= MOST_REFUSED && refused_after <= MOST_REFUSED_ONCE_LEARNED,
        "{refused} requests refused, {refused_after} once both knew the limits (at most {MOST_REFUSED} and \
         {MOST_REFUSED_ONCE_LEARNED}): the processes did not hold for each other's requests; {sent:?} sent, peaks \
         {peaks:?}"
    );
    assert!(heard_of_the_other.iter().all(|h| *h > 0.0), "each heard of the other's requests: {heard_of_the_other:?}");

    // Every lead is in Dynamics once.
    limiter.set_limits(Limits::default());
    let page: Json = world
        .dynamics()
        .execute(&dataverse::Request::get("leads?$select=emailaddress1"))
        .await
        .unwrap()
        .read_json()
        .unwrap();
    let mut found = BTreeMap::new();
    for lead in page["value"].as_array().unwrap() {
        *found.entry(lead["emailaddress1"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(found, expected, "every lead written once");
    eprintln!(
        "{backend:?}: {sent:?} requests sent by the two processes, {refused} refused, {refused_after} once learned"
    );

    two.second.stop().await;
    world.finish().await;
}

/// One process is refused once and so learns the environment's limits; the other, which has not been refused,
/// counts against them from its next tick on, and writes its own leads with almost no refusal.
async fn a_process_counts_against_the_limits_another_was_told_without_being_refused(backend: Backend) {
    let Some((world, two)) = two_intakes(backend).await else { return };
    let TwoIntakes { second, connection, intakes, .. } = &two;
    let throttled = format!("connection=\"{connection}\",limit=\"requests\"");
    // The second process makes its client of the connection with one lead, far under the limits.
    post_leads(&world, second, &intakes[1].1, "b", 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::Totals::of(&world.runs(&intakes[1].0).await).written < 1 {
        assert!(Instant::now() < deadline, "the second process's lead is written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(window_limit(&world, second, connection, "requests").await, 6000.0, "Dynamics 365's, assumed");

    // The first process fills the window until a 429 tells it the limit.
    post_leads(&world, &world.service, &intakes[0].1, "a", LEADS).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&world, &world.service, "dynsync_dataverse_throttled_total", &throttled).await < 1.0 {
        assert!(Instant::now() < deadline, "the first process is refused once");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while window_limit(&world, second, connection, "requests").await != f64::from(REQUESTS) {
        assert!(Instant::now() < deadline, "the second process takes the limit the first was told");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(window_limit(&world, second, connection, "window_seconds").await, WINDOW.as_secs_f64());
    assert_eq!(
        metric(&world, second, "dynsync_dataverse_throttled_total", &throttled).await,
        0.0,
        "it learned the limit without a 429 of its own"
    );

    // It writes its own leads against them, with the first process still writing.
    post_leads(&world, second, &intakes[1].1, "b-more", LEADS).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let a = common::Totals::of(&world.runs(&intakes[0].0).await).written;
        let b = common::Totals::of(&world.runs(&intakes[1].0).await).written;
        if a >= LEADS as u64 && b > LEADS as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {a} and {b} leads written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = metric(&world, second, "dynsync_dataverse_throttled_total", &throttled).await;
    assert!(
        refused <= MOST_REFUSED_ONCE_LEARNED as f64,
        "{refused} of the second process's requests refused (at most {MOST_REFUSED_ONCE_LEARNED})"
    );
    two.second.stop().await;
    world.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_sqlite_writing_as_one_user_share_its_budget() {
    common::bounded_for(Duration::from_secs(60), two_processes_writing_as_one_user_share_its_budget(Backend::Sqlite))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_postgres_writing_as_one_user_share_its_budget() {
    common::bounded_for(Duration::from_secs(60), two_processes_writing_as_one_user_share_its_budget(Backend::Postgres))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_process_counts_against_the_limits_another_was_told_without_being_refused() {
    common::bounded_for(
        Duration::from_secs(90),
        a_process_counts_against_the_limits_another_was_told_without_being_refused(Backend::Sqlite),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_process_counts_against_the_limits_another_was_told_without_being_refused() {
    common::bounded_for(
        Duration::from_secs(90),
        a_process_counts_against_the_limits_another_was_told_without_being_refused(Backend::Postgres),
    )
    .await;
}
