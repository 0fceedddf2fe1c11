//! Injected faults over HTTP: each kind shows up as a client sees it, and a plan run twice with the same
//! seed faults the same requests. Bounded in count; everything goes to 127.0.0.1.

use crate::{Env, config, token_for};
use dataverse_emulator::{EmulatorConfig, FaultPlan};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

fn with_faults(seed: u64, rules: &[&str]) -> EmulatorConfig {
    EmulatorConfig { faults: FaultPlan { seed, rules: rules.iter().map(|r| r.parse().unwrap()).collect() }, ..config() }
}

/// What a client saw for each of `n` sequential WhoAmI calls: a status, or "dropped".
async fn outcomes(env: &Env, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        // A fresh connection per request, so a dropped one does not take the next request with it.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let result = http.get(env.api("WhoAmI")).bearer_auth(&env.token).send().await;
        seen.push(match result {
            Ok(response) => response.status().as_u16().to_string(),
            Err(_) => "dropped".to_string(),
        });
    }
    seen
}

#[tokio::test]
async fn faults_by_rate_are_reproducible_from_their_seed() {
    let rules = ["500:rate=0.1", "503:rate=0.1", "drop:rate=0.1"];
    // The token request is not a Web API request, so the Web API numbering starts with the first WhoAmI.
    let first = outcomes(&Env::with(with_faults(42, &rules)).await, 60).await;
    let again = outcomes(&Env::with(with_faults(42, &rules)).await, 60).await;
    let other = outcomes(&Env::with(with_faults(43, &rules)).await, 60).await;
    assert_eq!(first, again, "the same seed faults the same requests");
    assert_ne!(first, other, "another seed faults others");
    for kind in ["200", "500", "503", "dropped"] {
        assert!(first.iter().any(|o| o == kind), "{kind} among {first:?}");
    }
}

#[tokio::test]
async fn faults_by_schedule_hit_the_requests_named() {
    let env = Env::with(with_faults(1, &["503:requests=2-3", "drop:requests=5"])).await;
    assert_eq!(outcomes(&env, 6).await, ["200", "503", "503", "200", "dropped", "200"]);
}

#[tokio::test]
async fn injected_errors_have_dataverse_bodies_and_retry_after() {
    let env = Env::with(with_faults(1, &["500:requests=1", "503:requests=2"])).await;
    let reply = env.get("WhoAmI").await;
    reply.assert_error(500, "0x80040216", "An unexpected error occurred.");
    let reply = env.get("WhoAmI").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(env.get("WhoAmI").await.status, StatusCode::OK);
}

#[tokio::test]
async fn slow_answers_come_late() {
    let env = Env::with(with_faults(1, &["slow=400ms:requests=1"])).await;
    let started = Instant::now();
    assert_eq!(env.get("WhoAmI").await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_token_outage_refuses_sign_in_but_not_the_web_api() {
    // The harness's own sign-in is token request 1; requests 2 and 3 fall in the outage.
    let env = Env::with(with_faults(1, &["token-outage:requests=2-3"])).await;
    let form = [
        ("grant_type", "client_credentials".to_string()),
        ("client_id", env.emulator.client_id.to_string()),
        ("client_secret", env.emulator.client_secret.expose().to_string()),
        ("scope", format!("{}/.default", env.emulator.url)),
    ];
    for _ in 0..2 {
        let response = env.http.post(&env.emulator.token_url).form(&form).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    assert_eq!(env.get("WhoAmI").await.status, StatusCode::OK, "tokens already issued still work");
    assert!(!token_for(&env.http, &env.emulator).await.is_empty(), "sign-in works after the outage");
}
