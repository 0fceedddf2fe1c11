//! The runtime as an operator sees it: metrics a Prometheus scraper reads, health checks, one process per SQLite
//! data directory, a secret rotated while a flow runs, and the inlet log pruned once its retention has passed.

mod common;

use common::{Backend, Reply, Totals, World, bounded, profile, read_contact};
use dataverse_emulator::{CostModel, EmulatorConfig};
use dynsync::service::LeaseTimings;
use dynsync::{Service, ServiceConfig};
use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use sqlx::Connection;
use std::time::{Duration, Instant};
use uuid::Uuid;

// ---- Helpers ----

/// The flow as GET /flows/{id} answers it.
async fn flow_state(world: &World, flow: &str) -> Json {
    let reply = world.get(&format!("flows/{flow}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["items"][0].clone()
}

/// A GET on the service's root (`/metrics`, `/healthz`, `/readyz`), without a token, as a scraper sends it.
async fn get_unauthenticated(world: &World, path: &str) -> Reply {
    let response = world.http.get(format!("{}{path}", world.service.url)).send().await.unwrap();
    Reply { status: response.status(), text: response.text().await.unwrap() }
}

/// How many entries of a flow's inlet log the store holds (the messages its rows hold), read with SQL beside the
/// service.
async fn inlet_rows(world: &World, flow: &str) -> i64 {
    match &world.database {
        Some(db) => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let count: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(messages), 0) AS BIGINT) FROM inlet_log WHERE flow_id = $1",
            )
            .bind(flow)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            count
        }
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(world.data_dir.path().join("dynsync.db"))
                .busy_timeout(Duration::from_secs(10));
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            let count: i64 = sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(messages), 0) AS BIGINT) FROM inlet_log WHERE flow_id = ?",
            )
            .bind(flow)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
            count
        }
    }
}

// ---- Metrics and health ----

/// The samples of a family whose label `label` is `value`.
fn samples<'a>(scrape: &'a Scrape, metric: &str, label: &str, value: &str) -> Vec<&'a Sample> {
    scrape.samples.iter().filter(|s| s.metric == metric && s.labels.get(label) == Some(value)).collect()
}

/// The one sample of a counter or gauge for `label=value`, as a number.
fn number(scrape: &Scrape, metric: &str, label: &str, value: &str) -> f64 {
    let found = samples(scrape, metric, label, value);
    assert_eq!(found.len(), 1, "one {metric}{{{label}=\"{value}\"}}: {found:?}");
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{metric} is a number, not {other:?}"),
    }
}

async fn metrics_are_scraped_by_a_prometheus_parser(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (connection, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let mut messages = Vec::new();
    for i in 0..5 {
        let id = world.create_contact(&format!("C{i}")).await;
        messages.push(profile(&id.to_string(), Some(&format!("C{i}")), &[("seg-gold", "realized")]));
    }
    // Two left out on purpose: no contactId, and in no audience the flow maps.
    messages.push(json!({"body": {"xdmEntity": {"segmentMembership": {"ups": {"seg-gold": {"status": "realized"}}}}}}));
    messages.push(profile(&Uuid::new_v4().to_string(), Some("Elsewhere"), &[("seg-other", "realized")]));
    let sent = messages.len() as u64;
    world.stream_all(&flow, messages).await;
    let runs = world.settled(&flow, sent).await;
    assert_eq!(runs, Totals { received: 7, written: 5, excluded: 2, failed: 0 }, "the runs count each profile once");

    let reply = get_unauthenticated(&world, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // Every line is a comment, a HELP, a TYPE or a sample the parser understands; every family is typed.
    let mut typed = Vec::new();
    for line in reply.text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Ignored => panic!("a line Prometheus' text format does not have: {line:?}"),
            LineInfo::Type { metric_name, metric_alias, .. } => typed.push(metric_alias.unwrap_or(metric_name)),
            LineInfo::Sample { metric_name, .. } => assert!(
                typed.iter().any(|t| metric_name == t
                    || ["_bucket", "_sum", "_count"].iter().any(|s| metric_name == format!("{t}{s}"))),
                "{metric_name} has a TYPE line before its samples"
            ),
            _ => {}
        }
    }
    let scrape = Scrape::parse(reply.text.lines().map(|l| Ok(l.to_string()))).unwrap();

    let count = |name: &str| number(&scrape, name, "flow", &flow);
    let received = count("dynsync_flow_records_received_total");
    let written = count("dynsync_flow_records_written_total");
    let excluded = count("dynsync_flow_records_excluded_total");
    let failed = count("dynsync_flow_records_failed_total");
    assert_eq!(received, sent as f64, "{}", reply.text);
    assert_eq!(written + excluded + failed, received, "each received record has one outcome: {}", reply.text);
    assert_eq!((written, excluded, failed), (5.0, 2.0, 0.0), "{}", reply.text);
    for name in ["dynsync_flow_records_received_total", "dynsync_flow_records_written_total"] {
        let sample = samples(&scrape, name, "flow", &flow)[0];
        assert!(matches!(sample.value, Value::Counter(_)), "{name} is a counter: {sample:?}");
        assert_eq!(sample.labels.get("sandbox"), Some(world.sandbox.as_str()));
        assert_eq!(sample.labels.get("job"), Some("activation"));
    }
    assert_eq!(count("dynsync_flow_backlog_records"), 0.0, "nothing is left to handle: {}", reply.text);
    assert_eq!(count("dynsync_flow_lag_seconds"), 0.0, "{}", reply.text);
    let owner = samples(&scrape, "dynsync_flow_owner", "flow", &flow);
    assert_eq!(owner.len(), 1, "the flow has one owner: {}", reply.text);
    assert_eq!(owner[0].value, Value::Gauge(1.0), "this process holds the flow's lease: {}", reply.text);
    assert_eq!(owner[0].labels.get("status"), Some("running"));

    let requests = number(&scrape, "dynsync_dataverse_requests_total", "connection", &connection);
    assert!(requests > 0.0, "the flow's writes went through its connection: {}", reply.text);
    let histogram_name = "dynsync_dataverse_request_duration_seconds";
    let histogram = samples(&scrape, histogram_name, "connection", &connection);
    assert_eq!(histogram.len(), 1, "one latency histogram for the connection: {}", reply.text);
    let Value::Histogram(buckets) = &histogram[0].value else {
        panic!("{histogram_name} parses as a histogram: {:?}", histogram[0])
    };
    let infinite = buckets.iter().find(|b| b.less_than.is_infinite()).expect("a +Inf bucket");
    let observed = number(&scrape, &format!("{histogram_name}_count"), "connection", &connection);
    assert_eq!(infinite.count, observed, "the +Inf bucket holds every observation: {}", reply.text);
    assert!(observed > 0.0, "the connection's requests are timed: {}", reply.text);
    assert!(
        buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "buckets are cumulative, in increasing order: {buckets:?}"
    );
    let duration = number(&scrape, &format!("{histogram_name}_sum"), "connection", &connection);
    assert!(duration > 0.0, "{}", reply.text);

    let healthz = get_unauthenticated(&world, "/healthz").await;
    assert_eq!(healthz.status, StatusCode::OK, "{}", healthz.text);
    let readyz = get_unauthenticated(&world, "/readyz").await;
    assert_eq!(readyz.status, StatusCode::OK, "{}", readyz.text);
    world.finish().await;
}

// ---- One process per SQLite data directory ----

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_data_directory_is_refused() {
    bounded(async {
        let data_dir = tempfile::tempdir().unwrap();
        let first = match Service::start(ServiceConfig::new(data_dir.path())).await {
            Ok(service) => service,
            Err(e) => panic!("the first service starts: {e}"),
        };
        let message = match Service::start(ServiceConfig::new(data_dir.path())).await {
            Ok(_) => panic!("a second service on the same SQLite data directory starts"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains("PostgreSQL") || message.contains("database-url"),
            "the refusal says how to run several processes: {message}"
        );
        assert!(message.contains(&data_dir.path().display().to_string()), "it names the data directory: {message}");
        // The first one still serves.
        let reply = reqwest::get(format!("{}/readyz", first.url)).await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let store = data_dir.path().join("dynsync.db");
            let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is its owner's only: {mode:o}", store.display());
            for journal in ["dynsync.db-wal", "dynsync.db-shm"] {
                if let Ok(meta) = std::fs::metadata(data_dir.path().join(journal)) {
                    let mode = meta.permissions().mode() & 0o777;
                    assert_eq!(mode, 0o600, "{journal} is its owner's only, as the store is: {mode:o}");
                }
            }
        }

        first.stop().await;
        let again = match Service::start(ServiceConfig::new(data_dir.path())).await {
            Ok(service) => service,
            Err(e) => panic!("once the first has stopped, a service starts on its data directory: {e}"),
        };
        let reply = reqwest::get(format!("{}/readyz", again.url)).await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        again.stop().await;
    })
    .await;
}

// ---- A rotated secret ----

/// PATCHes a connection's client secret, with the etag it was read with, as an admin would.
async fn patch_secret(world: &World, connection: &str, secret: &str) -> Reply {
    let current = world.get(&format!("connections/{connection}")).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.text);
    let etag = current.json()["items"][0]["etag"].as_str().unwrap().to_string();
    let response = world
        .http
        .patch(format!("{}/connections/{connection}", world.service.api()))
        .header("Authorization", format!("Bearer {}", world.service.token))
        .header("x-api-key", "dynsync-tests")
        .header("x-gw-ims-org-id", "0123456789ABCDEF@AdobeOrg")
        .header("x-sandbox-name", &world.sandbox)
        .header("If-Match", etag)
        .header("Content-Type", "application/json")
        .body(json!([{"op": "replace", "path": "/auth/params/clientSecret", "value": secret}]).to_string())
        .send()
        .await
        .unwrap();
    Reply { status: response.status(), text: response.text().await.unwrap() }
}

async fn a_rotated_secret_reaches_the_running_flow_and_nothing_fails(backend: Backend) {
    // Tokens live 4 s, so dynsync renews them every couple of seconds while the flow runs.
    let emulator =
        EmulatorConfig { cost: CostModel::free(), token_lifetime: Duration::from_secs(4), ..Default::default() };
    let Some(world) = World::start_with(backend, emulator).await else { return };
    let (connection, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(world.create_contact(&format!("C{i}")).await);
    }
    let wave = |n: usize, gold: &str, silver: Option<&str>| -> Vec<Json> {
        ids.iter()
            .map(|id| {
                let mut memberships = vec![("seg-gold", gold)];
                if let Some(s) = silver {
                    memberships.push(("seg-silver", s));
                }
                profile(&id.to_string(), Some(&format!("Wave{n}")), &memberships)
            })
            .collect()
    };
    let first = wave(1, "realized", None);
    let first_count = first.len() as u64;
    world.stream_all(&flow, first).await;
    let runs = world.settled(&flow, first_count).await;
    assert_eq!(runs, Totals { received: first_count, written: first_count, excluded: 0, failed: 0 });
    assert_eq!(read_contact(&world.dynamics(), ids[0]).await["firstname"], "Wave1");

    // The admin rotates the secret in Entra ID: a new one, the old one removed, the tokens revoked.
    let old = world.emulator.client_secret.expose().to_string();
    let new = world.emulator.add_client_secret();
    assert!(world.emulator.remove_client_secret(&old), "the old secret was the application's");
    world.emulator.revoke_tokens();
    // The admin's own client signs in with the new secret, to check what dynsync wrote.
    let admin = world.dynamics();
    admin.set_credentials(dataverse::ClientCredentials {
        client_secret: dataverse::Secret::new(new.expose()),
        ..dynsync::demo::emulator_credentials(&world.emulator)
    });

    let second = wave(2, "exited", Some("realized"));
    let second_count = second.len() as u64;
    world.stream_all(&flow, second).await;

    // The flow cannot sign in: it pauses, keeping the second wave, and fails nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let paused = loop {
        let state = flow_state(&world, &flow).await;
        let totals = Totals::of(&world.runs(&flow).await);
        assert_eq!(totals.failed, 0, "a refused sign-in fails no profile: {totals:?}");
        if state["runtime"]["status"] == "paused" {
            break state;
        }
        assert!(Instant::now() < deadline, "the flow never paused: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let detail = paused["runtime"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("sign-in"), "the pause says why: {paused}");
    assert_eq!(paused["backlog"]["profiles"], second_count, "the second wave waits in the log: {paused}");
    assert_eq!(read_contact(&admin, ids[0]).await["firstname"], "Wave1", "nothing of the second wave is written");

    // The admin gives dynsync the new secret.
    let reply = patch_secret(&world, &connection, new.expose()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let runs = world.settled(&flow, first_count + second_count).await;
    assert_eq!(
        runs,
        Totals { received: first_count + second_count, written: first_count + second_count, excluded: 0, failed: 0 },
        "every profile is written once, none fails"
    );
    for id in &ids {
        let row = read_contact(&admin, id).await;
        assert_eq!(
            (row["firstname"].as_str(), row["new_gold"].as_str(), row["new_silver"].as_str()),
            (Some("Wave2"), Some("exited"), Some("realized")),
            "contact {id} holds the second wave"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = flow_state(&world, &flow).await;
        if state["runtime"]["status"] == "running" {
            assert_eq!(state["runtime"]["detail"], "", "{state}");
            assert_eq!(state["backlog"]["profiles"], 0, "{state}");
            break;
        }
        assert!(Instant::now() < deadline, "the flow does not say it runs again: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.finish().await;
}

// ---- The inlet log's retention ----

/// Acknowledged entries are kept a millisecond; the supervisor ticks often.
fn short_retention(config: &mut ServiceConfig) {
    config.log_retention = Duration::from_millis(1);
    config.lease = LeaseTimings { heartbeat: Duration::from_millis(200), ttl: Duration::from_secs(1) };
}

async fn acknowledged_log_entries_past_the_retention_are_pruned(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let world = world.restart_with(short_retention).await;
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let kept = world.loyalty_flow(&target, "Kept while disabled", &[]).await;
    let reply = world.send(Method::POST, &format!("flows/{kept}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let doomed = world.loyalty_flow(&target, "Deleted", &[]).await;
    let reply = world.send(Method::POST, &format!("flows/{doomed}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    let ann = world.create_contact("Ann").await;
    let messages: Vec<Json> =
        (0..20).map(|i| profile(&ann.to_string(), Some(&format!("A{i}")), &[("seg-gold", "realized")])).collect();
    world.stream_all(&flow, messages.clone()).await;
    world.stream_all(&kept, messages.clone()).await;
    world.stream_all(&doomed, messages).await;
    let before = world.settled(&flow, 20).await;
    assert_eq!(before.received, 20);
    assert_eq!(inlet_rows(&world, &flow).await, 20, "the entries are kept until the next prune");
    assert_eq!(inlet_rows(&world, &kept).await, 20);
    assert_eq!(inlet_rows(&world, &doomed).await, 20);

    // Deleting a flow deletes its log, unacknowledged entries too.
    let reply = world.send(Method::DELETE, &format!("flows/{doomed}"), None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(inlet_rows(&world, &doomed).await, 0, "the deleted flow's log is gone");

    // The supervisor prunes on its first tick: a new start prunes the acknowledged entries.
    let world = world.restart_with(short_retention).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = inlet_rows(&world, &flow).await;
        if rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} acknowledged entries past their retention are still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(inlet_rows(&world, &kept).await, 20, "entries not acknowledged stay, however old");
    let after = Totals::of(&world.runs(&flow).await);
    assert_eq!(after, before, "the runs outlive the log entries they counted");
    assert_eq!(read_contact(&world.dynamics(), ann).await["firstname"], "A19");
    let state = flow_state(&world, &flow).await;
    assert_eq!(state["backlog"]["profiles"], 0, "a pruned log is no backlog: {state}");

    // The disabled flow, enabled, still has all it was sent.
    let reply = world.send(Method::POST, &format!("flows/{kept}/action?op=enable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(world.settled(&kept, 20).await.received, 20);
    world.finish().await;
}

on_both_stores!(
    metrics_are_scraped_by_a_prometheus_parser,
    a_rotated_secret_reaches_the_running_flow_and_nothing_fails,
    acknowledged_log_entries_past_the_retention_are_pruned
);
