//! The executor against the emulator's service protection limits and injected faults.

mod common;

use common::{client, client_with, free, record};
use dataverse::{BulkOperation, BulkOptions, ErrorKind, ExecutorOptions, Query, RecordId, Table};
use dataverse_emulator::{CostModel, EmulatorConfig, Fault, FaultPlan, FaultRule, Limits, When};
use futures::TryStreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn rule(fault: Fault, when: When) -> FaultRule {
    FaultRule { fault, when }
}

#[tokio::test]
async fn twenty_thousand_records_are_written_exactly_once_through_limits_and_faults() {
    let config = EmulatorConfig {
        // Every limit bites: 12 requests and 400 ms of execution per 2 s window, 2 at a time while the
        // hint says 4.
        limits: Limits {
            requests: 12,
            window: Duration::from_secs(2),
            execution_time: Duration::from_millis(400),
            concurrent: 2,
            dop_hint: 4,
            capacity: 8,
        },
        cost: CostModel {
            per_request: Duration::from_millis(10),
            per_record_written: Duration::from_micros(100),
            per_record_read: Duration::ZERO,
        },
        faults: FaultPlan {
            seed: 20_000,
            rules: vec![
                rule(Fault::Unavailable, When::Rate(0.05)),
                rule(Fault::ServerError, When::Rate(0.03)),
                rule(Fault::Drop, When::Rate(0.04)),
                rule(Fault::Slow(Duration::from_millis(200)), When::Rate(0.05)),
                rule(Fault::TokenOutage, When::Requests { first: 2, last: 3 }),
            ],
        },
        token_lifetime: Duration::from_secs(4),
        ..free()
    };
    let emulator = config.start().await.unwrap();
    let client = client_with(&emulator, ExecutorOptions { max_retries: 20, ..Default::default() });
    let contacts = Table::contact();
    let records: Vec<_> = (0..20_000)
        .map(|i| record(json!({"contactid": RecordId::new_v4(), "firstname": format!("p{i}"), "lastname": "Limited"})))
        .collect();

    let report = client
        .write_each(
            BulkOperation::Upsert,
            &contacts,
            &records,
            BulkOptions { chunk_size: 250, chunks_in_flight: 6, ..Default::default() },
        )
        .await;
    let failures: Vec<_> = report.rejected().map(|(i, e)| format!("{i}: {e}")).take(5).collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(report.written(), 20_000);

    let rows: Vec<_> =
        client.query(&Query::new(&contacts).select(&["firstname"]).page_size(5000)).try_collect().await.unwrap();
    let mut by_id: HashMap<String, String> = HashMap::new();
    for row in &rows {
        let previous =
            by_id.insert(row["contactid"].as_str().unwrap().into(), row["firstname"].as_str().unwrap().into());
        assert!(previous.is_none(), "a record is there twice: {row:?}");
    }
    assert_eq!(rows.len(), 20_000);
    for r in &records {
        assert_eq!(by_id.get(r["contactid"].as_str().unwrap()).map(String::as_str), r["firstname"].as_str());
    }

    let m = client.metrics();
    eprintln!("{m:?}");
    assert!(m.throttled_concurrency > 0, "{m:?}");
    assert!(m.throttled_requests + m.throttled_execution_time > 0, "{m:?}");
    assert!(m.transient_failures > 0, "{m:?}");
    assert!(m.retries >= m.throttled() + m.transient_failures, "{m:?}");
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.dop_hint, Some(4));
    assert!(m.concurrency <= 4);
}

#[tokio::test]
async fn a_bad_request_is_never_retried() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    client.who_am_i().await.unwrap();
    let before = client.metrics();
    let e = client.create(&Table::contact(), &record(json!({"lastname": "x".repeat(60)}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Validation);
    let after = client.metrics();
    assert_eq!(after.requests, before.requests + 1);
    assert_eq!(after.retries, before.retries);
}

#[tokio::test]
async fn a_request_limit_pauses_the_whole_client() {
    let limits = Limits { requests: 5, window: Duration::from_secs(2), ..Limits::default() };
    let emulator = EmulatorConfig { limits, ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let calls = (0..20).map(|_| client.who_am_i());
    for result in futures::future::join_all(calls).await {
        result.expect("every call gets through once the window has room");
    }
    let m = client.metrics();
    assert!(m.throttled_requests > 0, "{m:?}");
    // A paused client sends nothing until Retry-After: each time the window fills, only the requests already
    // in flight can be refused (at most one a slot), not every waiting call again and again.
    let windows = 20 / 5;
    assert!(m.throttled_requests <= (windows * m.dop_hint.unwrap()) as u64, "{m:?}");
    assert_eq!(m.concurrency, 4, "budget limits do not shrink concurrency");
}

#[tokio::test]
async fn an_abandoned_write_frees_its_slots() {
    let config = EmulatorConfig {
        faults: FaultPlan { seed: 1, rules: vec![rule(Fault::Slow(Duration::from_secs(30)), When::Every(1))] },
        ..free()
    };
    let emulator = config.start().await.unwrap();
    let client = client(&emulator);
    let records: Vec<_> = (0..100).map(|i| record(json!({"lastname": format!("a{i}")}))).collect();
    let contacts = Table::contact();
    let write = client.write_each(
        BulkOperation::Create,
        &contacts,
        &records,
        BulkOptions { chunk_size: 10, chunks_in_flight: 4, ..Default::default() },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::select! {
        _ = write => panic!("every answer is 30 s away"),
        _ = async {
            while client.metrics().in_flight == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    assert_eq!(client.metrics().in_flight, 0, "dropping the write dropped its requests");
}

#[tokio::test]
async fn every_answer_is_counted_by_status_and_timed() {
    let config = EmulatorConfig {
        faults: FaultPlan {
            seed: 1,
            rules: vec![
                rule(Fault::Unavailable, When::Requests { first: 2, last: 2 }),
                rule(Fault::Drop, When::Requests { first: 4, last: 4 }),
            ],
        },
        ..free()
    };
    let emulator = config.start().await.unwrap();
    let options = ExecutorOptions { initial_backoff: Duration::from_millis(1), ..Default::default() };
    let client = client_with(&emulator, options);
    let contacts = Table::contact();

    client.who_am_i().await.unwrap(); // 1: 200
    let id = client.create(&contacts, &record(json!({"lastname": "Counted"}))).await.unwrap(); // 2: 503, 3: 204
    client.retrieve(&contacts, id, &["lastname"]).await.unwrap(); // 4: dropped, 5: 200
    client.update(&contacts, id, &record(json!({"firstname": "Ada"}))).await.unwrap(); // 6: 204
    client.delete(&contacts, id).await.unwrap(); // 7: 204
    let e = client.retrieve(&contacts, id, &[]).await.unwrap_err(); // 8: 404
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let m = client.metrics();
    assert_eq!(m.responses, [(200, 2), (204, 3), (404, 1), (503, 1)].into(), "{m:?}");
    assert_eq!(m.requests, 8, "{m:?}");
    assert_eq!(m.transient_failures, 2, "the 503 and the dropped connection: {m:?}");
    assert_eq!(m.answered(), m.requests - 1, "a dropped connection has no status: {m:?}");
    assert_eq!(m.latency.count(), m.answered(), "every answered attempt is timed: {m:?}");
    assert_eq!(m.latency.buckets().last(), Some((f64::INFINITY, m.answered())));
    assert!(m.latency.sum() > Duration::ZERO, "{m:?}");
}
