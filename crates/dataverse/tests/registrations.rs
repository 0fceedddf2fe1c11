//! The executor against an emulator of several web servers, signed in as several application users: each user
//! has a budget on each server, and the load spreads over all of them.

mod common;

use common::{credentials, record};
use dataverse::{
    AuthError, BulkOperation, BulkOptions, Client, ClientCredentials, Credentials, Environment, ExecutorOptions, Query,
    RecordId, Secret, Table, WindowLimits,
};
use dataverse_emulator::limits::UsagePeak;
use dataverse_emulator::{AppRegistration, CostModel, EmulatorConfig, Limits, RunningEmulator};
use futures::TryStreamExt;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

const CHUNK: usize = 50;

/// Limits that bite within seconds: the execution time binds (a request of 50 records costs 60 ms; 1 s of it
/// per 2 s window is half a request in flight on average), with room in the request count.
fn limits() -> Limits {
    Limits {
        requests: 40,
        window: Duration::from_secs(2),
        execution_time: Duration::from_secs(1),
        concurrent: 52,
        dop_hint: 4,
        // Servers sized for every user: the limits per user, not the server's capacity, are what this tests.
        capacity: 1000,
    }
}

fn cost() -> CostModel {
    CostModel {
        per_request: Duration::from_millis(10),
        per_record_written: Duration::from_millis(1),
        per_record_read: Duration::ZERO,
    }
}

/// The most execution time a user's window on one server may hold: the limit, and what the user had in flight
/// when the server last admitted one — at most the hint, the burst (half the hint) and one probe, each of
/// `longest` (the model's stated margin: Dataverse counts a request's time when it ends).
fn most_allowed(limits: Limits, longest: Duration) -> Duration {
    let in_flight = limits.dop_hint + limits.dop_hint.div_ceil(2) + 1;
    limits.execution_time + longest * in_flight
}

async fn emulator(users: usize, web_servers: usize) -> RunningEmulator {
    let applications = (1..users)
        .map(|i| AppRegistration {
            client_id: Uuid::new_v4(),
            client_secret: dataverse_emulator::Secret::new(format!("secret-{i}-value")),
        })
        .collect();
    let config = EmulatorConfig { limits: limits(), cost: cost(), web_servers, applications, ..Default::default() };
    config.start().await.expect("the emulator starts")
}

fn registration(emulator: &RunningEmulator, app: &AppRegistration, secret: &str) -> Credentials {
    Credentials::ClientSecret(ClientCredentials {
        client_id: app.client_id.to_string(),
        client_secret: Secret::new(secret),
        ..credentials(emulator)
    })
}

fn every_registration(emulator: &RunningEmulator) -> Vec<Credentials> {
    let others = emulator.applications.iter().map(|a| registration(emulator, a, a.client_secret.expose()));
    std::iter::once(Credentials::ClientSecret(credentials(emulator))).chain(others).collect()
}

fn client_of(emulator: &RunningEmulator, registrations: Vec<Credentials>, options: ExecutorOptions) -> Client {
    let environment = Environment::from_url(&emulator.url).unwrap();
    Client::with_registrations(environment, registrations, options).expect("registrations given")
}

fn contacts(count: usize, tag: &str) -> Vec<dataverse::Record> {
    (0..count)
        .map(|i| record(json!({"contactid": RecordId::new_v4(), "firstname": format!("{tag}{i}"), "lastname": tag})))
        .collect()
}

async fn write(client: &Client, records: &[dataverse::Record]) {
    let options = BulkOptions { chunk_size: CHUNK, chunks_in_flight: 96, ..Default::default() };
    let report = client.write_each(BulkOperation::Upsert, &Table::contact(), records, options).await;
    let failures: Vec<_> = report.rejected().map(|(i, e)| format!("{i}: {e}")).take(5).collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.written(), records.len());
}

/// Reads every contact back: each record is there once, as written.
async fn read_back(client: &Client, records: &[dataverse::Record]) {
    let query = Query::new(&Table::contact()).select(&["firstname"]).page_size(5000);
    let rows: Vec<_> = client.query(&query).try_collect().await.unwrap();
    let mut by_id: HashMap<String, String> = HashMap::new();
    for row in &rows {
        let previous =
            by_id.insert(row["contactid"].as_str().unwrap().into(), row["firstname"].as_str().unwrap().into());
        assert!(previous.is_none(), "a record is there twice: {row:?}");
    }
    assert_eq!(rows.len(), records.len());
    for r in records {
        assert_eq!(by_id.get(r["contactid"].as_str().unwrap()).map(String::as_str), r["firstname"].as_str());
    }
}

/// The users who wrote, and on how many servers each.
fn writers(peaks: &[UsagePeak]) -> HashMap<Uuid, HashSet<usize>> {
    let mut writers: HashMap<Uuid, HashSet<usize>> = HashMap::new();
    for peak in peaks.iter().filter(|p| p.admitted > 1) {
        writers.entry(peak.user).or_default().insert(peak.server.0);
    }
    writers
}

#[tokio::test]
async fn every_record_is_written_once_by_one_two_and_four_application_users_on_one_and_three_web_servers() {
    for (users, web_servers) in [(1, 1), (2, 1), (4, 1), (1, 3), (2, 3), (4, 3)] {
        let emulator = emulator(users, web_servers).await;
        let options = ExecutorOptions {
            window_limits: Some(WindowLimits {
                requests: limits().requests,
                execution_time: limits().execution_time,
                window: limits().window,
            }),
            ..Default::default()
        };
        let client = client_of(&emulator, every_registration(&emulator), options);
        let records = contacts(1500 * users * web_servers, &format!("u{users}s{web_servers}-"));
        write(&client, &records).await;
        read_back(&client, &records).await;

        let m = client.metrics();
        let setting = format!("{users} users × {web_servers} servers: {m:?}");
        assert_eq!(m.in_flight, 0, "{setting}");
        assert_eq!(m.web_servers(), web_servers, "the client found every server: {setting}");
        let peaks = emulator.environment.limiter.peaks();
        let writers = writers(&peaks);
        assert_eq!(writers.len(), users, "every user wrote: {setting}");
        assert!(writers.values().all(|servers| servers.len() == web_servers), "on every server: {peaks:?}");
        let longest = cost().of(dataverse_emulator::limits::Work::written(CHUNK));
        for peak in &peaks {
            assert!(peak.requests <= limits().requests, "{peak:?}");
            assert!(peak.execution <= most_allowed(limits(), longest), "beyond the model's margin: {peak:?}");
        }
        // The client knew the limits and kept its own account: the server had no reason to refuse it, but for
        // what it cannot see (a request counted a little later than it was sent).
        let refused = m.throttled_requests + m.throttled_execution_time;
        assert!(refused <= (users * web_servers) as u64, "{refused} refusals: {setting}");
        eprintln!("{users} users × {web_servers} servers: {} requests, {refused} refused", m.requests);
    }
}

#[tokio::test]
async fn a_server_whose_costs_change_mid_run_still_converges() {
    let (users, web_servers) = (2, 3);
    let emulator = emulator(users, web_servers).await;
    // The client starts with Dynamics 365's limits (a thousand times the emulator's) and learns the emulator's
    // from its first 429; halfway, every request starts costing three times as much.
    let client = client_of(&emulator, every_registration(&emulator), ExecutorOptions::default());
    let first = contacts(6000, "before-");
    write(&client, &first).await;
    let learned = client.metrics();
    assert!(learned.throttled_execution_time > 0, "the model was wrong, and a 429 said so: {learned:?}");
    assert_eq!(learned.window_limits.execution_time, limits().execution_time, "{learned:?}");

    let dearer =
        CostModel { per_request: cost().per_request * 3, per_record_written: cost().per_record_written * 3, ..cost() };
    emulator.environment.set_cost(dearer);
    let second = contacts(3000, "after-");
    write(&client, &second).await;
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    read_back(&client, &all).await;

    let m = client.metrics();
    let refused_after = (m.throttled_requests + m.throttled_execution_time)
        - (learned.throttled_requests + learned.throttled_execution_time);
    // What a request costs is measured, not assumed: dearer requests fill the window sooner, and the client holds.
    assert!(refused_after <= (users * web_servers) as u64, "{refused_after} refusals after the change: {m:?}");
    assert!(m.held > learned.held, "{m:?}");
    let longest = dearer.of(dataverse_emulator::limits::Work::written(CHUNK));
    for peak in emulator.environment.limiter.peaks() {
        assert!(peak.execution <= most_allowed(limits(), longest), "beyond the model's margin: {peak:?}");
    }
}

#[tokio::test]
async fn a_registration_whose_secret_is_wrong_is_reported_and_the_others_keep_writing() {
    let emulator = emulator(3, 3).await;
    let mut registrations = every_registration(&emulator);
    let wrong = &emulator.applications[0];
    registrations[1] = registration(&emulator, wrong, "a-wrong-secret-value");
    let client = client_of(&emulator, registrations, ExecutorOptions::default());
    let records = contacts(2000, "wrong-");
    write(&client, &records).await;
    read_back(&client, &records).await;

    let statuses = client.registrations();
    assert_eq!(statuses.len(), 3);
    assert_eq!(statuses[1].name, wrong.client_id.to_string());
    let refused = statuses[1].refused.clone().expect("the wrong secret is reported");
    assert_eq!(refused, AuthError::WrongSecret { client_id: wrong.client_id.to_string() });
    let message = refused.to_string();
    assert!(message.contains(&wrong.client_id.to_string()), "{message}");
    assert!(!message.contains("a-wrong-secret-value") && !message.contains(wrong.client_secret.expose()), "{message}");
    assert!(statuses[0].refused.is_none() && statuses[2].refused.is_none(), "{statuses:?}");
    assert!(!format!("{statuses:?} {client:?}").contains("a-wrong-secret-value"));
    assert_eq!(writers(&emulator.environment.limiter.peaks()).len(), 2, "the two others wrote everything");

    // Its secret replaced, it is back in rotation.
    client.set_registration_credentials(1, registration(&emulator, wrong, wrong.client_secret.expose()));
    assert!(client.registrations().iter().all(|s| s.refused.is_none()));
    let more = contacts(1000, "fixed-");
    write(&client, &more).await;
    assert_eq!(writers(&emulator.environment.limiter.peaks()).len(), 3, "all three wrote");
}

#[tokio::test]
async fn with_every_registration_refused_a_request_fails_with_the_reason() {
    let emulator = emulator(2, 1).await;
    let app = &emulator.applications[0];
    let registrations = vec![
        registration(&emulator, app, "wrong-one"),
        Credentials::ClientSecret(ClientCredentials {
            client_secret: Secret::new("wrong-two"),
            ..credentials(&emulator)
        }),
    ];
    let client = client_of(&emulator, registrations, ExecutorOptions::default());
    let error = client.who_am_i().await.unwrap_err();
    assert!(error.to_string().contains("client secret is wrong"), "{error}");
    assert_eq!(client.registrations().iter().filter(|s| s.refused.is_some()).count(), 1, "the last stays in rotation");
}

/// Tells `to` what `from` spent of each user's budget on each server, as processes sharing a store do.
fn tell(from: &Client, to: &Client) {
    to.set_others_spending(&from.spending());
}

#[tokio::test]
async fn two_clients_of_one_registration_that_tell_each_other_their_spending_stay_within_its_limits_together() {
    // The request count binds: the server's word on execution time says nothing of it, only the other's does.
    let l = Limits { requests: 20, execution_time: Duration::from_secs(1000), ..limits() };
    let emulator = EmulatorConfig { limits: l, cost: cost(), ..Default::default() }.start().await.unwrap();
    let options = ExecutorOptions {
        window_limits: Some(WindowLimits { requests: l.requests, execution_time: l.execution_time, window: l.window }),
        ..Default::default()
    };
    let (a, b) = (
        client_of(&emulator, every_registration(&emulator), options.clone()),
        client_of(&emulator, every_registration(&emulator), options),
    );
    // Each hears of the other before it sends anything, then every 100 ms.
    tell(&a, &b);
    tell(&b, &a);
    let telling = tokio::spawn({
        let (a, b) = (a.clone(), b.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tell(&a, &b);
                tell(&b, &a);
            }
        }
    });
    let (first, second) = (contacts(2000, "a-"), contacts(2000, "b-"));
    tokio::join!(write(&a, &first), write(&b, &second));
    telling.abort();
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    read_back(&a, &all).await;

    let (ma, mb) = (a.metrics(), b.metrics());
    assert!(ma.requests >= 20 && mb.requests >= 20, "both wrote at once: {ma:?} {mb:?}");
    assert!(a.spending().iter().all(|s| s.client_id == emulator.client_id.to_string()));
    // Together, they are one user with twice the requests in flight of one client.
    let longest = cost().of(dataverse_emulator::limits::Work::written(CHUNK));
    let in_flight = l.dop_hint + l.dop_hint.div_ceil(2) + 1;
    for peak in emulator.environment.limiter.peaks() {
        assert!(peak.requests <= l.requests, "{peak:?}");
        assert!(peak.execution <= l.execution_time + longest * (2 * in_flight), "beyond the margin: {peak:?}");
    }
    // What the 1% in reserve (less than one request of 20) cannot absorb of what each sends before the other
    // hears of it. Without telling each other, 9 to 15 were refused over three runs; telling, 1 to 2 over four.
    let refused = [&ma, &mb].iter().map(|m| m.throttled_requests + m.throttled_execution_time).sum::<u64>();
    assert!(refused <= 4, "{refused} refusals: {ma:?} {mb:?}");
    eprintln!("two clients of one user: {} and {} requests, {refused} refused", ma.requests, mb.requests);
}
