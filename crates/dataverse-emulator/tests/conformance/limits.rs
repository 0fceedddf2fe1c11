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

/// The web server an answer came from, by the `ARRAffinity` cookie it sets.
fn web_server(reply: &Reply) -> String {
    let cookie = reply.header("set-cookie").expect("every answer sets the affinity cookie");
    let (pair, attributes) = cookie.split_once(';').expect("a cookie with attributes");
    assert!(attributes.contains("Path=/"), "{cookie}");
    pair.strip_prefix("ARRAffinity=").expect("the ARRAffinity cookie").to_string()
}

async fn get_on(env: &Env, server: &str) -> Reply {
    env.send(env.request(reqwest::Method::GET, "WhoAmI").header("Cookie", format!("ARRAffinity={server}"))).await
}

fn on_three_servers(limits: Limits) -> EmulatorConfig {
    EmulatorConfig { web_servers: 3, ..limited(limits, CostModel::free()) }
}

#[tokio::test]
async fn s9_1_the_arr_affinity_cookie_pins_a_client_to_one_web_server() {
    let env = Env::with(on_three_servers(Limits { requests: 1000, ..small_limits() })).await;
    let first = env.get("WhoAmI").await;
    let server = web_server(&first);
    assert_eq!(server.len(), 64, "an id as Azure App Service's: {server}");
    let mut remaining = Vec::new();
    for _ in 0..6 {
        let reply = get_on(&env, &server).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(web_server(&reply), server, "the cookie's server answers");
        remaining.push(reply.header("x-ms-ratelimit-burst-remaining-xrm-requests").unwrap().parse::<u32>().unwrap());
    }
    // One server counts them all: what remains falls by one a request.
    assert!(remaining.windows(2).all(|w| w[1] + 1 == w[0]), "{remaining:?}");
    // An id no server has is answered by one of them, which says which.
    let stray = get_on(&env, "0000").await;
    assert_eq!(stray.status, StatusCode::OK);
    assert_eq!(web_server(&stray).len(), 64);
}

#[tokio::test]
async fn s9_1_without_the_cookie_requests_are_spread_over_the_web_servers() {
    let env = Env::with(on_three_servers(Limits { requests: 1000, ..small_limits() })).await;
    let mut servers = Vec::new();
    for _ in 0..9 {
        let reply = env.get("WhoAmI").await;
        assert_eq!(reply.status, StatusCode::OK);
        servers.push(web_server(&reply));
    }
    let distinct: std::collections::HashSet<_> = servers.iter().collect();
    assert_eq!(distinct.len(), 3, "{servers:?}");
    for server in &distinct {
        assert_eq!(servers.iter().filter(|s| s == server).count(), 3, "in turn: {servers:?}");
    }
    let one = Env::with(limited(small_limits(), CostModel::free())).await;
    let a = web_server(&one.get("WhoAmI").await);
    assert_eq!(web_server(&one.get("WhoAmI").await), a, "a single server answers everything");
}

#[tokio::test]
async fn s9_1_three_web_servers_give_a_user_three_budgets() {
    // 10 requests per window and server: 30 over three servers, and the 11th on any one is refused.
    let env = Env::with(on_three_servers(small_limits())).await;
    let mut servers = std::collections::HashSet::new();
    while servers.len() < 3 {
        servers.insert(web_server(&env.get("WhoAmI").await));
        assert!(servers.len() <= 3);
    }
    let servers: Vec<String> = servers.into_iter().collect();
    let started = Instant::now();
    for server in &servers {
        let mut served = 0;
        loop {
            let reply = get_on(&env, server).await;
            if reply.status == StatusCode::TOO_MANY_REQUESTS {
                reply.assert_error(429, "0x80072322", "exceeded the limit of 10 over time window of 2 seconds");
                assert_eq!(web_server(&reply), *server, "the refusal says whose budget is spent");
                break;
            }
            assert_eq!(reply.status, StatusCode::OK);
            served += 1;
            assert!(served <= 10, "no server serves more than its limit");
        }
        assert!(served >= 7, "each server has its own budget: {served} served on {server}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "all within one window");
}

#[tokio::test]
async fn s9_1_each_app_registration_is_an_application_user_with_a_budget_of_its_own() {
    let other = dataverse_emulator::AppRegistration {
        client_id: uuid::Uuid::new_v4(),
        client_secret: dataverse_emulator::Secret::new("an0ther-s3cret"),
    };
    let config = EmulatorConfig { applications: vec![other.clone()], ..limited(small_limits(), CostModel::free()) };
    let env = Env::with(config).await;
    let other_token = crate::token_as(&env.http, &env.emulator, other.client_id, &other.client_secret).await;
    let as_other = || env.send(env.http.get(env.api("WhoAmI")).bearer_auth(&other_token));
    let first_user = env.get("WhoAmI").await.json()["UserId"].clone();
    let other_user = as_other().await.json()["UserId"].clone();
    assert_ne!(first_user, other_user, "each registration acts as its own application user");
    let user: serde_json::Value =
        env.get(&format!("systemusers({})?$select=applicationid", other_user.as_str().unwrap())).await.json();
    assert_eq!(user["applicationid"], other.client_id.to_string());
    // The first user spends its window; the other still has its own.
    while env.get("WhoAmI").await.status != StatusCode::TOO_MANY_REQUESTS {}
    assert_eq!(as_other().await.status, StatusCode::OK);
    // A wrong secret names the registration, never a secret.
    let refused = env
        .http
        .post(&env.emulator.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &other.client_id.to_string()),
            ("client_secret", env.emulator.client_secret.expose()),
            ("scope", &format!("{}/.default", env.emulator.url)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let text = refused.text().await.unwrap();
    assert!(text.contains("AADSTS7000215") && text.contains(&other.client_id.to_string()), "{text}");
    assert!(!text.contains(env.emulator.client_secret.expose()) && !text.contains("an0ther-s3cret"), "{text}");
}
