//! §9 Service protection limits, pushed past over HTTP: the 429s with their codes, messages and
//! `Retry-After`, the rate-limit headers, and recovery once the window moves on. Bounded in count and
//! time; everything goes to the emulator on 127.0.0.1.

use crate::{Env, Reply};
use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

fn limited(limits: Limits, cost: CostModel) -> EmulatorConfig {
    EmulatorConfig { limits, cost, ..Default::default() }
}

fn small_limits() -> Limits {
    Limits {
        requests: 10,
        window: Duration::from_secs(2),
        execution_time: Duration::from_secs(60),
        concurrent: 52,
        dop_hint: 3,
        capacity: 8,
    }
}

fn retry_after(reply: &Reply) -> u64 {
    reply.header("retry-after").expect("Retry-After on a 429").parse().expect("whole seconds")
}

/// Polls until a request succeeds again, within a deadline.
async fn recovers(env: &Env, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if env.get("WhoAmI").await.status == StatusCode::OK {
            return;
        }
        assert!(Instant::now() < deadline, "the limit never lifted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn s9_1_request_count_limit() {
    let env = Env::with(limited(small_limits(), CostModel::free())).await;
    let mut first_refusal = None;
    for _ in 0..15 {
        let reply = env.get("WhoAmI").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            first_refusal = Some(reply);
            break;
        }
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ms-dop-hint"), Some("3"));
        assert!(reply.header("x-ms-ratelimit-burst-remaining-xrm-requests").is_some());
    }
    let refusal = first_refusal.expect("the 11th request is refused");
    refusal.assert_error(
        429,
        "0x80072322",
        "Number of requests exceeded the limit of 10 over time window of 2 seconds.",
    );
    let first_wait = retry_after(&refusal);
    assert!((1..=2).contains(&first_wait), "{first_wait}");
    // Pushing on makes the wait longer.
    let again = env.get("WhoAmI").await;
    assert!(retry_after(&again) > first_wait);
    recovers(&env, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn s9_1_execution_time_limit() {
    let limits = Limits { requests: 1000, execution_time: Duration::from_millis(300), ..small_limits() };
    let cost = CostModel { per_request: Duration::from_millis(100), ..CostModel::free() };
    let env = Env::with(limited(limits, cost)).await;
    let mut refused = None;
    for _ in 0..10 {
        let started = Instant::now();
        let reply = env.get("WhoAmI").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(reply);
            break;
        }
        assert!(started.elapsed() >= Duration::from_millis(100), "a request takes as long as it costs");
    }
    let refused = refused.expect("the execution time runs out");
    refused.assert_error(
        429,
        "0x80072321",
        "Combined execution time of incoming requests exceeded limit of 300  milliseconds over time window of 2 seconds.",
    );
    assert!(retry_after(&refused) >= 1);
    recovers(&env, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn s9_1_concurrency_limit_refuses_at_once() {
    let limits = Limits { concurrent: 2, requests: 1000, ..small_limits() };
    let cost = CostModel { per_request: Duration::from_millis(400), ..CostModel::free() };
    let env = Env::with(limited(limits, cost)).await;
    let replies = futures::future::join_all((0..6).map(|_| env.get("WhoAmI"))).await;
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!(ok + refused.len(), 6);
    assert!(ok >= 2, "the requests within the limit are served ({ok})");
    assert!(!refused.is_empty(), "the others are refused");
    for reply in refused {
        reply.assert_error(429, "0x80072326", "Number of concurrent requests exceeded the limit of 2.");
    }
    recovers(&env, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn s9_2_requests_beyond_the_web_server_s_capacity_take_and_count_proportionally_longer() {
    let limits = Limits { capacity: 2, requests: 1000, execution_time: Duration::from_secs(60), ..small_limits() };
    let cost = CostModel { per_request: Duration::from_millis(200), ..CostModel::free() };
    let env = Env::with(limited(limits, cost)).await;
    // Within the capacity, a request takes its cost.
    let two = futures::future::join_all((0..2).map(|_| timed(&env))).await;
    assert!(two.iter().all(|d| *d >= Duration::from_millis(200)), "{two:?}");
    // Six at once share a capacity of two: the last admitted takes three times its cost, and the server counts
    // it so (the window's remaining time falls by more than six costs).
    let before = env.get("WhoAmI").await;
    let six = futures::future::join_all((0..6).map(|_| timed(&env))).await;
    let slowest = six.iter().max().copied().unwrap_or_default();
    assert!(slowest >= Duration::from_millis(550), "beyond the capacity a request is slower: {six:?}");
    let after = env.get("WhoAmI").await;
    let remaining = |reply: &Reply| -> f64 {
        reply.header("x-ms-ratelimit-time-remaining-xrm-requests").expect("the header").parse().expect("milliseconds")
    };
    let counted = remaining(&before) - remaining(&after);
    assert!(counted > 6.0 * 200.0 + 200.0, "six requests sharing the server count more than six costs: {counted} ms");
}

async fn timed(env: &Env) -> Duration {
    let started = Instant::now();
    let reply = env.get("WhoAmI").await;
    assert_eq!(reply.status, StatusCode::OK);
    started.elapsed()
}
