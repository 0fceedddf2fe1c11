//! dynsync as an attacker or a careless client would use it: oversized and odd requests are refused in the API's
//! error shape, answers stay small whatever was sent, and what is refused leaves nothing behind.

mod common;

use common::{Backend, World, profile};
use dynsync::hosts::AllowedHosts;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// A server of the attacker's, or an internal service: it keeps every request it gets and answers each with
/// `status` and `body`.
struct Listener {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start(status: &'static str, body: &'static str) -> Listener {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // A request is read until the client pauses: enough for a form post of a few hundred bytes.
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buffer)).await
                    {
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buffer[..n]);
                    }
                    kept.lock().unwrap().push(String::from_utf8_lossy(&request).into_owned());
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Listener { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

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

async fn moving_where_a_connection_signs_in_takes_its_secret_again(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (connection, _) = world.destination("new").await;
    let attacker = Listener::start("400 Bad Request", "{}").await;
    let moves = [
        json!([{"op": "replace", "path": "/auth/params/authorityHost", "value": attacker.url}]),
        json!([{"op": "replace", "path": "/auth/params/environmentUrl", "value": attacker.url}]),
    ];
    for patch in moves {
        let reply = world.send(Method::PATCH, &format!("connections/{connection}"), Some(patch)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        assert!(reply.detail().contains("give /auth/params/clientSecret again"), "{}", reply.text);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(attacker.requests(), Vec::<String>::new(), "the stored secret went nowhere");
    // Given again, the secret goes to the new place: the one given, never the stored one.
    let patch = json!([
        {"op": "replace", "path": "/auth/params/authorityHost", "value": attacker.url},
        {"op": "replace", "path": "/auth/params/clientSecret", "value": "typed-again"},
    ]);
    let reply = world.send(Method::PATCH, &format!("connections/{connection}"), Some(patch)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "the attacker's server signs nobody in: {}", reply.text);
    let requests = attacker.requests();
    assert!(requests.iter().any(|r| r.contains("client_secret=typed-again")), "{requests:?}");
    let stored = world.emulator.client_secret.expose().to_string();
    assert!(requests.iter().all(|r| !r.contains(&stored)), "the stored secret never left: {requests:?}");
    // A change of name alone needs no secret.
    let rename = json!([{"op": "replace", "path": "/name", "value": "Renamed"}]);
    let reply = world.send(Method::PATCH, &format!("connections/{connection}"), Some(rename)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    world.finish().await;
}

async fn a_connection_reaches_only_microsofts_clouds_and_the_hosts_the_operator_allows(backend: Backend) {
    let Some(mut world) = World::start(backend).await else { return };
    let internal = Listener::start("500 Internal Server Error", "<h1>db-password=hunter2</h1>").await;
    // Allowed on loopback, an internal service answers with its own error: it is not repeated.
    let mut params = world.destination_params(world.emulator.client_secret.expose());
    params["authorityHost"] = json!(internal.url);
    let reply = world.post("connections", world.destination_body(params.clone())).await;
    assert!(reply.status.is_client_error() || reply.status.is_server_error(), "{}", reply.text);
    assert!(!reply.text.contains("hunter2"), "an answer that is not Dataverse's is never echoed: {}", reply.text);
    let asked = internal.requests().len();
    assert!(asked >= 1, "the authority was asked for a token (and again, as it said it was down)");
    params["authorityHost"] = json!(world.emulator.url);
    params["environmentUrl"] = json!(internal.url);
    // With only the emulator allowed, another host is refused before anything is sent to it.
    let allowed = AllowedHosts::of_urls([world.emulator.url.as_str()]);
    world = world.restart_with(|config| config.allowed_hosts = allowed).await;
    let reply = world.post("connections", world.destination_body(params.clone())).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.detail().contains("auth.params.environmentUrl") && reply.detail().contains("allowed_hosts"),
        "{}",
        reply.text
    );
    params["environmentUrl"] = json!(world.emulator.url);
    params["authorityHost"] = json!("http://169.254.169.254");
    let reply = world.post("connections", world.destination_body(params.clone())).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.detail().contains("auth.params.authorityHost"), "{}", reply.text);
    assert_eq!(internal.requests().len(), asked, "nothing more reached the internal service");
    params["authorityHost"] = json!(world.emulator.url);
    let reply = world.post("connections", world.destination_body(params)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "the allowed emulator still connects: {}", reply.text);
    world.finish().await;
}

/// A token made by the operator; its id and the token.
async fn token(world: &World, name: &str, roles: &[&str], sandboxes: Json) -> (String, String) {
    let reply = world.post("tokens", json!({"name": name, "roles": roles, "sandboxes": sandboxes})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let made = reply.json();
    assert!(made["token"].as_str().unwrap().starts_with("dst_"), "{made}");
    (made["id"].as_str().unwrap().to_string(), made["token"].as_str().unwrap().to_string())
}

/// Streams one profile with `token`; the status.
async fn stream_as(world: &World, token: &str, flow: &str) -> StatusCode {
    let contact = Uuid::new_v4().to_string();
    world
        .http
        .post(format!("{}/collection/batch/{flow}", world.service.url))
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({"messages": [profile(&contact, None, &[("seg-gold", "realized")])]}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn each_token_does_what_its_roles_allow_in_its_sandboxes_only(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (connection, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let here = json!([world.sandbox]);
    let (_, viewer) = token(&world, "dashboards", &["view"], here.clone()).await;
    let (_, activator) = token(&world, "ci", &["activate"], here.clone()).await;
    let (_, manager) = token(&world, "admins", &["manage"], here).await;
    let (elsewhere_id, elsewhere) = token(&world, "dev team", &["manage", "activate"], json!(["dev"])).await;
    let sandbox = world.sandbox.clone();
    let as_ = |token: &str, method: Method, path: &str, body: Option<Json>| {
        let (token, sandbox, path) = (token.to_string(), sandbox.clone(), path.to_string());
        let world = &world;
        async move { world.send_as(&token, &sandbox, method, &path, body).await }
    };
    let rename = json!([{"op": "replace", "path": "/name", "value": "Renamed"}]);
    let disable = format!("flows/{flow}/action?op=disable");

    // Viewing: reads, and nothing else.
    assert_eq!(as_(&viewer, Method::GET, &format!("flows/{flow}"), None).await.status, StatusCode::OK);
    assert_eq!(as_(&viewer, Method::GET, "runs", None).await.status, StatusCode::OK);
    let reply = as_(&viewer, Method::PATCH, &format!("connections/{connection}"), Some(rename.clone())).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(reply.detail().contains("takes the manage role"), "{}", reply.text);
    let reply = as_(&viewer, Method::POST, &disable, None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(reply.detail().contains("takes the activate role"), "{}", reply.text);
    assert_eq!(stream_as(&world, &viewer, &flow).await, StatusCode::FORBIDDEN);

    // Activating: runs flows and sends data, changes no definition.
    assert_eq!(stream_as(&world, &activator, &flow).await, StatusCode::OK);
    assert_eq!(as_(&activator, Method::POST, &disable, None).await.status, StatusCode::OK);
    let enable = format!("flows/{flow}/action?op=enable");
    assert_eq!(as_(&activator, Method::POST, &enable, None).await.status, StatusCode::OK);
    let reply = as_(&activator, Method::DELETE, &format!("flows/{flow}"), None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    let reply = as_(&activator, Method::GET, "tokens", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "only the operator's tokens manage tokens: {}", reply.text);

    // Managing: definitions, not data.
    let reply = as_(&manager, Method::PATCH, &format!("connections/{connection}"), Some(rename)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(stream_as(&world, &manager, &flow).await, StatusCode::FORBIDDEN);

    // Another sandbox's token: refused here, and this sandbox's inlet is unknown to it.
    let reply = as_(&elsewhere, Method::GET, "flows", None).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(reply.detail().contains("may act in sandbox dev only"), "{}", reply.text);
    assert_eq!(stream_as(&world, &elsewhere, &flow).await, StatusCode::NOT_FOUND);
    let reply = world.send_as(&elsewhere, "dev", Method::GET, &format!("flows/{flow}"), None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);

    // The list never shows a token; a revoked one stops at once.
    let list = world.get("tokens").await;
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 4);
    assert!(![&viewer, &activator, &manager, &elsewhere].iter().any(|t| list.text.contains(t.as_str())));
    assert_eq!(
        world.send(Method::DELETE, &format!("tokens/{elsewhere_id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    let reply = world.send_as(&elsewhere, "dev", Method::GET, "flows", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(stream_as(&world, &activator, &flow).await, StatusCode::OK, "the others keep working");
    world.finish().await;
}

async fn a_flow_exporting_a_field_a_policy_denies_is_refused_when_saved_or_enabled(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (_, target) = world.loyalty_destination().await;
    let flow = world.loyalty_flow(&target, "Loyalty", &[("person.birthDate", "birthdate")]).await;
    let governance = json!({
        "labels": {"person.birthDate": ["S1"], "segmentMembership.ups.seg-silver": ["C5"]},
        "policies": [
            {"name": "No sensitive data to Dynamics", "deny": ["S1"], "targetConnectionIds": [target]},
            {"name": "No interest-based audiences", "deny": ["C5"]}
        ]
    });
    let reply = world.send(Method::PUT, "governance", Some(governance.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answer = reply.json();
    let listed = &answer["flowsInViolation"][0];
    assert_eq!(listed["id"], json!(flow), "the answer names the flow the new policies refuse: {answer}");
    assert_eq!(listed["problems"].as_array().unwrap().len(), 2, "{answer}");

    // Enabling again is refused, naming the field, the label and the policy.
    assert_eq!(world.send(Method::POST, &format!("flows/{flow}/action?op=disable"), None).await.status, StatusCode::OK);
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=enable"), None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json()["type"], "dynsync:policy-violation");
    let detail = reply.detail();
    assert!(detail.contains("mappings[2].source: person.birthDate carries the label S1"), "{detail}");
    assert!(detail.contains("policy 'No sensitive data to Dynamics'"), "{detail}");
    assert!(detail.contains("audiences[1].id: segmentMembership.ups.seg-silver carries the label C5"), "{detail}");

    // Saving a flow without the denied fields works; with them, it is refused.
    let body = |mappings: Json, audiences: Json| json!({"name": "Gold only", "targetConnectionIds": [target], "audiences": audiences, "mappings": mappings});
    let gold = json!([{"id": "seg-gold", "mappingId": "gold"}]);
    let identity = json!([{"source": "contactId", "target": "contactid"}]);
    let reply = world.post("flows", body(identity.clone(), gold.clone())).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let with_birth_date =
        json!([{"source": "contactId", "target": "contactid"}, {"source": "person.birthDate", "target": "birthdate"}]);
    let reply = world.post("flows", body(with_birth_date, gold)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);

    // The document is replaced whole, guarded by its etag, and checked.
    let etag = answer["etag"].as_str().unwrap().to_string();
    let stale = world
        .http
        .put(format!("{}/governance", world.service.api()))
        .header("Authorization", format!("Bearer {}", world.service.token))
        .header("x-sandbox-name", &world.sandbox)
        .header("If-Match", "\"stale\"")
        .json(&json!({"labels": {}, "policies": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let reply = world.send(Method::PUT, "governance", Some(json!({"policies": [{"name": "", "deny": []}]}))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json()["report"]["problems"].as_array().unwrap().len(), 2, "{}", reply.text);
    let read = world.get("governance").await.json();
    assert_eq!(read["etag"], json!(etag), "a refused change keeps the document");
    assert_eq!(read["policies"], governance["policies"]);
    world.finish().await;
}

on_both_stores!(
    a_flow_exporting_a_field_a_policy_denies_is_refused_when_saved_or_enabled,
    each_token_does_what_its_roles_allow_in_its_sandboxes_only,
    moving_where_a_connection_signs_in_takes_its_secret_again,
    a_connection_reaches_only_microsofts_clouds_and_the_hosts_the_operator_allows,
    a_batch_of_a_million_tiny_messages_is_refused_whole_with_a_small_answer,
    a_full_batch_of_bad_messages_is_answered_message_by_message_with_short_reasons,
    a_body_over_the_limit_is_refused_in_the_apis_error_shape,
    odd_headers_get_the_right_answer,
    a_megabyte_identity_is_kept_short_in_the_runs
);
