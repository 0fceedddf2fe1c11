//! dynsync as an attacker or a careless client would use it: oversized and odd requests are refused in the API's
//! error shape, answers stay small whatever was sent, and what is refused leaves nothing behind.

mod common;

use common::{Backend, World, profile};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

/// The loyalty flow over a new destination; its id.
async fn loyalty_flow(world: &World) -> String {
    let (_, target) = world.loyalty_destination().await;
    world.loyalty_flow(&target, "Loyalty audiences", &[]).await
}

/// Posts a raw body to a flow's batch inlet.
async fn post_batch(world: &World, flow: &str, body: Vec<u8>) -> (StatusCode, Json) {
    let response = world
        .http
        .post(format!("{}/collection/batch/{flow}", world.service.url))
        .header("Authorization", format!("Bearer {}", world.service.token))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("an answer in JSON ({e}): {text}")))
}

async fn a_batch_of_a_million_tiny_messages_is_refused_whole_with_a_small_answer(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let mut body = b"{\"messages\":[".to_vec();
    body.extend(std::iter::repeat_n(&b"1,"[..], 1_000_000).flatten());
    body.extend(b"1]}");
    assert!(body.len() < 2 * 1024 * 1024, "the attack fits under the body limit");
    let (status, answer) = post_batch(&world, &flow, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["type"], "dynsync:too-many-messages");
    assert!(answer["detail"].as_str().unwrap().contains("at most 5000 messages"), "{answer}");
    assert_eq!(world.runs(&flow).await.len(), 0, "nothing of a refused batch was accepted");
    world.finish().await;
}

async fn a_full_batch_of_bad_messages_is_answered_message_by_message_with_short_reasons(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let long = "x".repeat(100_000);
    let bad = json!({"body": {"xdmEntity": {"identityMap": {"contactId": [long]}}}});
    let messages: Vec<Json> = std::iter::repeat_n(bad, 15).collect();
    let body = serde_json::to_vec(&json!({ "messages": messages })).unwrap();
    let (status, answer) = post_batch(&world, &flow, body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{answer}");
    let responses = answer["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 15);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert!(r["message"].as_str().unwrap().chars().count() <= 301, "a reason is cut short: {r}");
    }
    let tiny: Vec<Json> = std::iter::repeat_n(json!(1), 5_000).collect();
    let (status, answer) = post_batch(&world, &flow, serde_json::to_vec(&json!({ "messages": tiny })).unwrap()).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "a batch at the limit is read: {}", answer["detail"]);
    assert_eq!(answer["responses"].as_array().unwrap().len(), 5_000);
    assert_eq!(answer["accepted"], 0);
    world.finish().await;
}

async fn a_body_over_the_limit_is_refused_in_the_apis_error_shape(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let big = json!({"messages": [{"body": {"xdmEntity": {"note": "y".repeat(3 * 1024 * 1024)}}}]});
    let (status, answer) = post_batch(&world, &flow, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["type"], "dynsync:too-large");
    assert_eq!(answer["status"], 413);
    assert!(answer["detail"].as_str().unwrap().contains("2 MiB"), "{answer}");
    let reply = world.send(Method::POST, "flows", Some(json!({"name": "x".repeat(3 * 1024 * 1024)}))).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["type"], "dynsync:too-large", "{}", reply.text);
    world.finish().await;
}

async fn odd_headers_get_the_right_answer(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let api = world.service.api();
    let request = |sandbox: &[u8], scheme: &str| {
        world
            .http
            .get(format!("{api}/flows"))
            .header("Authorization", format!("{scheme} {}", world.service.token))
            .header("x-sandbox-name", reqwest::header::HeaderValue::from_bytes(sandbox).unwrap())
    };
    let response = request("pröd".as_bytes(), "Bearer").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let answer: Json = response.json().await.unwrap();
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.contains("is not a sandbox name") && !detail.contains("missing"), "{detail}");
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let response = request(b"prod", scheme).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "the scheme {scheme} is a bearer token's");
    }
    let reply = world.get("runs?property=flowId==a&property=flowId==b").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.json()["detail"].is_string(), "every refusal is in the API's shape: {}", reply.text);
    world.finish().await;
}

async fn a_megabyte_identity_is_kept_short_in_the_runs(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let huge = "z".repeat(1_900_000);
    let ann = world.create_contact("Ann").await;
    world
        .stream_all(
            &flow,
            vec![profile(&huge, Some("Huge"), &[("seg-gold", "realized")]), profile(&ann.to_string(), None, &[])],
        )
        .await;
    let runs = world.settled_runs(&flow, 2).await;
    let text = serde_json::to_string(&runs).unwrap();
    assert!(text.len() < 10_000, "the runs stay small: {} bytes", text.len());
    let excluded = runs[0]["outcomes"].as_array().unwrap().iter().find(|o| o["code"] == "contact-id-not-a-guid");
    let sample = excluded.expect("the huge identity is excluded")["samples"][0].as_str().unwrap().to_string();
    assert!(sample.starts_with("zzz") && sample.ends_with('…') && sample.chars().count() == 129, "{sample}");
    world.finish().await;
}

on_both_stores!(
    a_batch_of_a_million_tiny_messages_is_refused_whole_with_a_small_answer,
    a_full_batch_of_bad_messages_is_answered_message_by_message_with_short_reasons,
    a_body_over_the_limit_is_refused_in_the_apis_error_shape,
    odd_headers_get_the_right_answer,
    a_megabyte_identity_is_kept_short_in_the_runs
);
