//! dynsync's API end to end, in-process against the emulator, on SQLite and on PostgreSQL: the seed-003 request,
//! destination connections tested on creation, flows validated against the contact table, sandboxes, secrets.

mod common;

use common::{Backend, World, profile, read_contact};
use dataverse::{Client, ClientCredentials, Environment};
use dataverse_emulator::{CostModel, EmulatorConfig, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use uuid::Uuid;

on_both_stores!(
    the_seed_003_request_creates_a_dynamics_connection,
    a_destination_connection_is_tested_when_created,
    flows_are_validated_against_the_contact_table_when_saved,
    resources_of_one_sandbox_are_not_found_in_another,
    secrets_are_never_returned_nor_stored_in_clear,
    stores_opened_together_migrate_once,
    a_connection_signs_in_as_each_app_registration_and_names_the_one_that_fails,
    additional_registrations_are_validated_with_every_problem_named_by_its_place,
    a_flow_writes_every_record_while_one_app_registration_is_refused,
);

async fn the_seed_003_request_creates_a_dynamics_connection(backend: Backend) {
    // Seed 003's request carries only a service URI, a user name and a password: dynsync finds the authority from
    // the environment and signs in with Microsoft's public client app, which this emulator knows.
    let emulator = EmulatorConfig {
        cost: CostModel::free(),
        client_id: Some(dynsync::connection::PUBLIC_CLIENT_ID.parse().unwrap()),
        users: vec![("crm.user@contoso.com".into(), Secret::new("P@ssw0rd!"))],
        ..Default::default()
    };
    let Some(world) = World::start_with(backend, emulator).await else { return };
    let seed_body = |password: &str| {
        json!({
            "name": "Dynamics Connection",
            "description": "connection for Dynamics account",
            "auth": {
                "specName": "Basic Authentication for Dynamics-Online",
                "params": {
                    "serviceUri": world.emulator.url,
                    "username": "crm.user@contoso.com",
                    "password": password
                }
            },
            "connectionSpec": {"id": "38ad80fe-8b06-4938-94f4-d4ee80266b07", "version": "1.0"}
        })
    };
    let reply = world.post("connections", seed_body("P@ssw0rd!")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let body = reply.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "etag"], "Adobe's answer: {{id, etag}}");
    let id = body["id"].as_str().unwrap();

    let connection = &world.get(&format!("connections/{id}")).await.json()["items"][0];
    assert_eq!(connection["name"], "Dynamics Connection");
    assert_eq!(connection["auth"]["specName"], "Basic Authentication for Dynamics-Online");
    assert_eq!(connection["auth"]["params"]["username"], "crm.user@contoso.com");
    assert_eq!(connection["status"], "connected");
    assert!(connection["auth"]["params"].get("password").is_none());

    let reply = world.post("connections", seed_body("wrong")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.detail().contains("the password of crm.user@contoso.com is wrong"), "{}", reply.text);

    // The request exactly as seed 003 prints it, sent by curl, with only the host and the token changed (and its
    // placeholders filled in).
    if let Some(answer) = seed_003_curl(&world).await {
        let keys: Vec<String> = answer.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["id", "etag"], "{answer}");
    }

    // The service principal auth spec: the tenant and the authority are found from the environment too.
    let principal = json!({
        "name": "Dynamics app",
        "auth": {
            "specName": "Service Principal Key Based Authentication",
            "params": {
                "serviceUri": world.emulator.url,
                "servicePrincipalId": world.emulator.client_id.to_string(),
                "servicePrincipalKey": world.emulator.client_secret.expose()
            }
        },
        "connectionSpec": {"id": "38ad80fe-8b06-4938-94f4-d4ee80266b07", "version": "1.0"}
    });
    let reply = world.post("connections", principal).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);

    let specs = world.get("connectionSpecs/38ad80fe-8b06-4938-94f4-d4ee80266b07").await.json();
    let auth_specs: Vec<&str> =
        specs["items"][0]["authSpec"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(auth_specs, ["Basic Authentication for Dynamics-Online", "Service Principal Key Based Authentication"]);
    world.finish().await;
}

/// Seed 003's curl command, character for character.
const SEED_003_CURL: &str = r#"curl -X POST \
    'https://platform.adobe.io/data/foundation/flowservice/connections' \
    -H 'Authorization: Bearer {ACCESS_TOKEN}' \
    -H 'x-api-key: {API_KEY}' \
    -H 'x-gw-ims-org-id: {IMS_ORG}' \
    -H 'x-sandbox-name: {SANDBOX_NAME}' \
    -H 'Content-Type: application/json' \
    -d '{
        "name": "Dynamics Connection",
        "description": "connection for Dynamics account",
        "auth": {
            "specName": "Basic Authentication for Dynamics-Online",
            "params": {
                "serviceUri": "{SERVICE_URI}",
                "username": "{USERNAME}",
                "password": "{PASSWORD}"
            }
        },
        "connectionSpec": {
            "id": "38ad80fe-8b06-4938-94f4-d4ee80266b07",
            "version": "1.0"
        }
    }'"#;

/// Runs seed 003's curl against dynsync; `None` when curl is not installed.
async fn seed_003_curl(world: &World) -> Option<Json> {
    let command = SEED_003_CURL
        .replace("https://platform.adobe.io", &world.service.url)
        .replace("{ACCESS_TOKEN}", &world.service.token)
        .replace("{API_KEY}", "my-api-key")
        .replace("{IMS_ORG}", "0123456789ABCDEF@AdobeOrg")
        .replace("{SANDBOX_NAME}", &world.sandbox)
        .replace("{SERVICE_URI}", &world.emulator.url)
        .replace("{USERNAME}", "crm.user@contoso.com")
        .replace("{PASSWORD}", "P@ssw0rd!");
    let output = match tokio::process::Command::new("sh")
        .args(["-c", &format!("{command} --silent --show-error")])
        .output()
        .await
    {
        Ok(output) if output.status.success() => output,
        Ok(output) if String::from_utf8_lossy(&output.stderr).contains("not found") => {
            eprintln!("curl is not installed: the seed-003 request was sent by reqwest only");
            return None;
        }
        Ok(output) => panic!("curl failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(e) => panic!("sh runs: {e}"),
    };
    Some(
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout))),
    )
}

async fn a_destination_connection_is_tested_when_created(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let secret = world.emulator.client_secret.expose().to_string();

    let reply = world.post("connections", world.destination_body(world.destination_params(&secret))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    let connection = &world.get(&format!("connections/{id}")).await.json()["items"][0];
    assert_eq!(connection["status"], "connected");
    assert_eq!(connection["signedInAs"]["organizationId"], world.emulator.environment.organization_id.to_string());

    // Rotating the secret: new credentials are tested before they replace the old ones.
    let path = format!("connections/{id}");
    let patch = |ops: Json| world.send(Method::PATCH, &path, Some(ops));
    let reply = patch(json!([{"op": "replace", "path": "/auth/params/clientSecret", "value": "abcde~revoked"}])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.detail().contains("keeps its old ones") && reply.detail().contains("client secret is wrong"),
        "{}",
        reply.text
    );
    let reply = patch(json!([
        {"op": "replace", "path": "/auth/params/clientSecret", "value": secret},
        {"op": "replace", "path": "/name", "value": "Contoso Dynamics (rotated)"}
    ]))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let connection = &world.get(&format!("connections/{id}")).await.json()["items"][0];
    assert_eq!(connection["name"], "Contoso Dynamics (rotated)");
    assert_eq!(connection["etag"], reply.json()["etag"]);
    let reply = patch(json!([{"op": "replace", "path": "/connectionSpec/id", "value": "x"}])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let failures: [(&str, Json, &str); 4] = [
        ("wrong secret", world.destination_params("abcde~an-old-secret"), "the client secret is wrong or expired"),
        (
            "unknown tenant",
            json!({"tenantId": "fabrikam.onmicrosoft.com"}),
            "tenant fabrikam.onmicrosoft.com does not exist",
        ),
        (
            "wrong environment URL",
            json!({"environmentUrl": "https://contoso.crm4.dynamics.com"}),
            "check the environment URL",
        ),
        ("unknown app", json!({"clientId": "0b1e8e5c-0000-4000-8000-000000000000"}), "is not registered in tenant"),
    ];
    for (case, change, expected) in failures {
        let mut params = world.destination_params(&secret);
        for (k, v) in change.as_object().unwrap() {
            params[k] = v.clone();
        }
        let reply = world.post("connections", world.destination_body(params)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case}: {}", reply.text);
        assert_eq!(reply.json()["type"], "dynsync:connection-test-failed");
        assert!(reply.detail().contains(expected), "{case}: {}", reply.text);
    }
    let mut missing = world.destination_params(&secret);
    missing.as_object_mut().unwrap().remove("tenantId");
    let reply = world.post("connections", world.destination_body(missing)).await;
    assert!(reply.detail().starts_with("auth.params.tenantId is missing"), "{}", reply.text);
    // Only the working connection was kept.
    assert_eq!(world.get("connections").await.json()["items"].as_array().unwrap().len(), 1);
    world.finish().await;
}

fn flow(target: &str, audiences: Json, mappings: Json) -> Json {
    json!({
        "name": "Loyalty audiences",
        "targetConnectionIds": [target],
        "audiences": audiences,
        "mappings": mappings,
    })
}

fn problems(reply: &common::Reply) -> Vec<Json> {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json()["type"], "dynsync:flow-validation", "{}", reply.text);
    reply.json()["report"]["problems"].as_array().unwrap().clone()
}

async fn flows_are_validated_against_the_contact_table_when_saved(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (_, target) = world.destination("new").await;
    world.add_text_column("cr8a3_Gold", 100).await;
    let identity = json!({"source": "contactId", "target": "contactid"});
    let gold = json!([{"id": "seg-gold", "name": "Gold members", "mappingId": "gold"}]);

    // A missing field: the error names it and the closest columns.
    let reply = world
        .post(
            "flows",
            flow(&target, json!([]), json!([identity, {"source": "person.name.firstName", "target": "firstnme"}])),
        )
        .await;
    let p = problems(&reply);
    assert_eq!(p[0]["field"], "mappings[1].target");
    assert_eq!(p[0]["closest"][0], "firstname");
    assert!(
        reply.detail().contains("flow 'Loyalty audiences'") && reply.detail().contains("firstnme"),
        "{}",
        reply.text
    );

    // A wrong prefix: the audience's column exists under another publisher's prefix.
    let reply = world.post("flows", flow(&target, gold.clone(), json!([identity]))).await;
    let p = problems(&reply);
    assert_eq!(p[0]["field"], "audiences[0].mappingId");
    let message = p[0]["message"].as_str().unwrap();
    assert!(message.contains("contact has no column new_gold"), "{message}");
    assert!(message.contains("cr8a3 rather than new"), "{message}");

    // A type mismatch.
    let reply = world
        .post(
            "flows",
            flow(&target, json!([]), json!([identity, {"source": "person.name.firstName", "target": "birthdate"}])),
        )
        .await;
    let p = problems(&reply);
    assert!(p[0]["message"].as_str().unwrap().contains("birthdate is date only and cannot hold"), "{}", reply.text);

    // The identity is mandatory.
    let p = problems(&world.post("flows", flow(&target, json!([]), json!([]))).await);
    assert!(p[0]["message"].as_str().unwrap().contains("contactId → contactid"));

    // The column is created in Dynamics, behind dynsync's back: the flow is valid now.
    world.add_text_column("new_Gold", 100).await;
    let valid = flow(
        &target,
        gold.clone(),
        json!([identity, {"source": "person.name.firstName", "target": "FirstName"},
               {"source": "personalEmail.address", "target": "emailaddress1"}]),
    );
    let reply = world.post("flows", valid.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    let etag = reply.json()["etag"].as_str().unwrap().to_string();
    let stored = &world.get(&format!("flows/{id}")).await.json()["items"][0];
    assert_eq!(stored["state"], "enabled");
    assert_eq!(stored["statusValues"], json!({"realized": "realized", "existing": "existing", "exited": "exited"}));
    assert_eq!(stored["emptyValues"], "skip");
    assert_eq!(stored["mappings"][1]["target"], "firstname", "stored as the Web API names it");
    assert_eq!(stored["audiences"], gold);

    // An update is validated again, and a bad one changes nothing.
    let mut broken = valid.clone();
    broken["mappings"][1]["target"] = json!("fullname");
    let reply = world.send(Method::PUT, &format!("flows/{id}"), Some(broken)).await;
    assert!(problems(&reply)[0]["message"].as_str().unwrap().contains("read-only"));
    let mut renamed = valid.clone();
    renamed["name"] = json!("Gold to Dynamics");
    renamed["statusValues"] = json!({"realized": "in", "existing": "in", "exited": "out"});
    let reply = world.send(Method::PUT, &format!("flows/{id}"), Some(renamed)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_ne!(reply.json()["etag"], etag);
    let stale = world
        .http
        .put(format!("{}/flows/{id}", world.service.api()))
        .header("Authorization", format!("Bearer {}", world.service.token))
        .header("x-sandbox-name", &world.sandbox)
        .header("If-Match", &etag)
        .body(valid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);

    // Disable, enable, delete.
    let reply = world.send(Method::POST, &format!("flows/{id}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let stored = &world.get(&format!("flows/{id}")).await.json()["items"][0];
    assert_eq!((stored["state"].as_str(), stored["name"].as_str()), (Some("disabled"), Some("Gold to Dynamics")));
    assert_eq!(world.send(Method::POST, &format!("flows/{id}/action?op=enable"), None).await.status, StatusCode::OK);
    assert_eq!(world.get(&format!("flows/{id}")).await.json()["items"][0]["state"], "enabled");
    assert_eq!(world.get(&format!("runs?property=flowId=={id}")).await.json()["items"], json!([]));
    assert_eq!(world.send(Method::DELETE, &format!("flows/{id}"), None).await.status, StatusCode::NO_CONTENT);
    assert_eq!(world.get(&format!("flows/{id}")).await.status, StatusCode::NOT_FOUND);
    world.finish().await;
}

async fn resources_of_one_sandbox_are_not_found_in_another(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (connection, target) = world.destination("new").await;
    let reply =
        world.post("flows", flow(&target, json!([]), json!([{"source": "contactId", "target": "contactid"}]))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow_id = reply.json()["id"].as_str().unwrap().to_string();

    let other = format!("{}-b", world.sandbox);
    for path in [format!("connections/{connection}"), format!("targetConnections/{target}"), format!("flows/{flow_id}")]
    {
        assert_eq!(world.get(&path).await.status, StatusCode::OK, "{path} in its own sandbox");
        let reply = world.send_in(&other, Method::GET, &path, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path} in another sandbox");
        assert!(reply.detail().contains(&format!("in sandbox {other}")), "{}", reply.text);
        assert_eq!(world.send_in(&other, Method::DELETE, &path, None).await.status, StatusCode::NOT_FOUND);
    }
    for list in ["connections", "targetConnections", "flows"] {
        assert_eq!(world.send_in(&other, Method::GET, list, None).await.json()["items"], json!([]));
        assert_eq!(world.get(list).await.json()["items"].as_array().unwrap().len(), 1, "{list}");
    }
    // A target in B cannot use A's connection, nor a flow A's target.
    let reply = world
        .send_in(
            &other,
            Method::POST,
            "targetConnections",
            Some(json!({"name": "x", "baseConnectionId": connection, "params": {"customizationPrefix": "new"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.detail().contains("there is no connection"), "{}", reply.text);
    let reply = world
        .send_in(
            &other,
            Method::POST,
            "flows",
            Some(flow(&target, json!([]), json!([{"source": "contactId", "target": "contactid"}]))),
        )
        .await;
    assert!(problems(&reply)[0]["message"].as_str().unwrap().contains("there is no target connection"));
    assert_eq!(world.get(&format!("runs?property=flowId=={flow_id}")).await.status, StatusCode::OK);
    assert_eq!(
        world.send_in(&other, Method::GET, &format!("runs?property=flowId=={flow_id}"), None).await.status,
        StatusCode::NOT_FOUND
    );

    // Without a sandbox, or without the token, nothing is answered.
    let url = format!("{}/connections", world.service.api());
    let no_sandbox = world.http.get(&url).bearer_auth(&world.service.token).send().await.unwrap();
    assert_eq!(no_sandbox.status(), StatusCode::BAD_REQUEST);
    assert!(no_sandbox.text().await.unwrap().contains("x-sandbox-name"));
    let no_token = world.http.get(&url).header("x-sandbox-name", &world.sandbox).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let wrong =
        world.http.get(&url).bearer_auth("dsk_nope").header("x-sandbox-name", &world.sandbox).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // A connection still used is not deleted.
    assert_eq!(
        world.send(Method::DELETE, &format!("connections/{connection}"), None).await.status,
        StatusCode::CONFLICT
    );
    world.finish().await;
}

async fn secrets_are_never_returned_nor_stored_in_clear(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let secret = world.emulator.client_secret.expose().to_string();
    let mut answers = Vec::new();
    let reply = world.post("connections", world.destination_body(world.destination_params(&secret))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    answers.push(reply.text);
    answers.push(world.get(&format!("connections/{id}")).await.text);
    answers.push(world.get("connections").await.text);
    let wrong = "abcde~a-secret-that-is-wrong-12345678";
    answers.push(world.post("connections", world.destination_body(world.destination_params(wrong))).await.text);
    for answer in &answers {
        assert!(!answer.contains(&secret) && !answer.contains(wrong), "a secret in {answer}");
    }
    assert!(answers[1].contains("clientId"), "the other params are returned: {}", answers[1]);

    let stored = stored_connections(&world, backend).await;
    for (place, text) in &stored {
        assert!(!text.contains(&secret), "the secret in clear in {place}");
    }
    if backend == Backend::Postgres {
        assert_eq!(stored.len(), 1);
        assert!(stored[0].1.contains("v1:"), "sealed: {}", stored[0].1);
    }
    // Restarted on the same store and key, dynsync still opens the secret: checking a flow signs in with it.
    let world = world.restart().await;
    let reply = world
        .post(
            "targetConnections",
            json!({"name": "Contacts", "baseConnectionId": id, "params": {"customizationPrefix": "new"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let target = reply.json()["id"].as_str().unwrap().to_string();
    let reply =
        world.post("flows", flow(&target, json!([]), json!([{"source": "contactId", "target": "contactid"}]))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    world.finish().await;
}

async fn stores_opened_together_migrate_once(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    // Several dynsync processes sharing one database start at once; each opens the store and migrates.
    let url = world.database.as_ref().map(|d| d.url.clone());
    let dir = tempfile::tempdir().unwrap();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let opens = (0..4).map(|_| {
        let url = url.clone();
        let path = dir.path().to_path_buf();
        async move {
            let key = dynsync::secrets::SecretKey::from_base64(key).unwrap();
            dynsync::Store::open(url.as_deref(), &path, key).await
        }
    });
    for store in futures::future::join_all(opens).await {
        let store = store.expect("every process opens the store");
        assert!(store.flows(&"prod".parse().unwrap()).await.unwrap().is_empty());
    }
    world.finish().await;
}

/// The destination params of `world`, with `additionalRegistrations` listing the emulator's other apps, the
/// secret of app number `wrong` (if any) replaced by a wrong one.
fn params_with_registrations(world: &World, wrong: Option<usize>) -> Json {
    let mut params = world.destination_params(world.emulator.client_secret.expose());
    let registrations: Vec<Json> = world
        .emulator
        .applications
        .iter()
        .enumerate()
        .map(|(i, app)| {
            let secret = if Some(i) == wrong { "abcde~a-wrong-secret-xyz" } else { app.client_secret.expose() };
            json!({"clientId": app.client_id.to_string(), "clientSecret": secret})
        })
        .collect();
    params["additionalRegistrations"] = Json::Array(registrations);
    params
}

/// Every secret of the world's emulator, and the wrong one the tests give.
fn every_secret(world: &World) -> Vec<String> {
    let mut secrets: Vec<String> =
        world.emulator.applications.iter().map(|a| a.client_secret.expose().to_string()).collect();
    secrets.push(world.emulator.client_secret.expose().to_string());
    secrets.push("abcde~a-wrong-secret-xyz".into());
    secrets
}

async fn a_connection_signs_in_as_each_app_registration_and_names_the_one_that_fails(backend: Backend) {
    let Some(world) = World::start_with_registrations(backend).await else { return };
    let apps: Vec<String> = world.emulator.applications.iter().map(|a| a.client_id.to_string()).collect();
    let mut answers = Vec::new();
    let spec = world.get(&format!("connectionSpecs/{}", dynsync::specs::DYNAMICS_DESTINATION)).await.json();
    let listed = &spec["items"][0]["authSpec"][0]["spec"]["properties"]["additionalRegistrations"];
    assert_eq!(listed["maxItems"], 16, "the auth spec lists additionalRegistrations: {spec}");

    let reply = world.post("connections", world.destination_body(params_with_registrations(&world, None))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.json()["id"].as_str().unwrap().to_string();
    answers.push(reply.text);
    let got = world.get(&format!("connections/{id}")).await;
    let listed = &got.json()["items"][0]["auth"]["params"]["additionalRegistrations"];
    assert_eq!(listed, &json!([{"clientId": apps[0]}, {"clientId": apps[1]}]), "client ids only: {}", got.text);
    answers.push(got.text);

    // The second app's secret is wrong: the test names it, by client id and place, and the others signed in.
    let reply = world.post("connections", world.destination_body(params_with_registrations(&world, Some(1)))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.json()["type"], "dynsync:connection-test-failed");
    let detail = reply.detail();
    assert!(
        detail
            .contains(&format!("app registration {} (auth.params.additionalRegistrations[1]) does not work", apps[1])),
        "{detail}"
    );
    assert!(detail.contains("client secret is wrong"), "{detail}");
    assert!(detail.contains("fix auth.params.additionalRegistrations[1], or remove it from the list"), "{detail}");
    let signed_in = format!("these signed in: {}, {}", world.emulator.client_id, apps[0]);
    assert!(detail.contains(&signed_in), "{detail}");
    answers.push(reply.text);

    // PATCH replaces the list; new credentials are tested before they are kept.
    let path = format!("connections/{id}");
    let patch = |ops: Json| world.send(Method::PATCH, &path, Some(ops));
    let wrong = params_with_registrations(&world, Some(0))["additionalRegistrations"].clone();
    let reply = patch(json!([{"op": "replace", "path": "/auth/params/additionalRegistrations", "value": wrong}])).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.detail().contains("keeps its old ones") && reply.detail().contains(&apps[0]), "{}", reply.text);
    answers.push(reply.text);
    let only_second =
        json!([{"clientId": apps[1], "clientSecret": world.emulator.applications[1].client_secret.expose()}]);
    let reply =
        patch(json!([{"op": "replace", "path": "/auth/params/additionalRegistrations", "value": only_second}])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let got = world.get(&format!("connections/{id}")).await;
    assert_eq!(got.json()["items"][0]["auth"]["params"]["additionalRegistrations"], json!([{"clientId": apps[1]}]));
    answers.push(got.text);
    // Changing another parameter keeps the stored secrets of the list: the connection still signs in as both.
    let reply = patch(json!([{"op": "replace", "path": "/auth/params/region", "value": "crm"}])).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    answers.push(world.get("connections").await.text);

    for answer in &answers {
        for secret in every_secret(&world) {
            assert!(!answer.contains(&secret), "a secret in {answer}");
        }
    }
    let second_secret = world.emulator.applications[1].client_secret.expose().to_string();
    let stored = stored_connections(&world, backend).await;
    for (place, text) in &stored {
        assert!(!text.contains(&second_secret), "a secret in clear in {place}");
    }
    if backend == Backend::Postgres {
        assert_eq!(stored.len(), 1);
        assert!(stored[0].1.contains("additionalRegistrations[0].clientSecret"), "sealed by place: {}", stored[0].1);
    }
    // Restarted on the same store, dynsync opens the sealed secrets again: a change of a parameter tests the
    // connection, each registration signing in with its stored secret.
    let world = world.restart().await;
    let path = format!("connections/{id}");
    let reply = world.send(
        Method::PATCH,
        &path,
        Some(json!([{"op": "replace", "path": "/auth/params/region", "value": "crm4"}])),
    );
    let reply = reply.await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let got = world.get(&path).await;
    assert_eq!(got.json()["items"][0]["auth"]["params"]["additionalRegistrations"], json!([{"clientId": apps[1]}]));
    world.finish().await;
}

async fn additional_registrations_are_validated_with_every_problem_named_by_its_place(backend: Backend) {
    let Some(world) = World::start_with_registrations(backend).await else { return };
    let main = world.emulator.client_id.to_string();
    let app = world.emulator.applications[0].client_id.to_string();
    let mut params = world.destination_params(world.emulator.client_secret.expose());
    params["additionalRegistrations"] = json!([
        {"clientId": "not-a-guid", "clientSecret": "abcde~s0"},
        {"clientId": main},
        {"clientId": app, "clientSecret": "abcde~s2"},
        {"clientId": app, "clientSecret": "abcde~s3", "tenantId": "x"},
        "a string",
    ]);
    let reply = world.post("connections", world.destination_body(params)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let detail = reply.detail();
    for expected in [
        "auth.params.additionalRegistrations[0].clientId not-a-guid is not a GUID".to_string(),
        "auth.params.additionalRegistrations[1].clientSecret is missing".to_string(),
        format!("auth.params.additionalRegistrations[1].clientId {main} is the connection's clientId"),
        format!(
            "auth.params.additionalRegistrations[3].clientId {app} is given twice (also at auth.params.additionalRegistrations[2])"
        ),
        "auth.params.additionalRegistrations[3].tenantId is not a parameter of an app registration".to_string(),
        "auth.params.additionalRegistrations[4] must be an object".to_string(),
    ] {
        assert!(detail.contains(&expected), "{expected} in {detail}");
    }
    assert!(!detail.contains("abcde~"), "no secret in {detail}");

    let mut params = world.destination_params(world.emulator.client_secret.expose());
    let many: Vec<Json> =
        (0..17).map(|_| json!({"clientId": Uuid::new_v4().to_string(), "clientSecret": "abcde~s"})).collect();
    params["additionalRegistrations"] = Json::Array(many);
    let reply = world.post("connections", world.destination_body(params)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.detail().contains("auth.params.additionalRegistrations has 17 app registrations: at most 16"),
        "{}",
        reply.text
    );
    let mut params = world.destination_params(world.emulator.client_secret.expose());
    params["additionalRegistrations"] = json!({"clientId": app});
    let reply = world.post("connections", world.destination_body(params)).await;
    assert!(reply.detail().contains("auth.params.additionalRegistrations must be a list"), "{}", reply.text);
    assert_eq!(world.get("connections").await.json()["items"], json!([]));
    world.finish().await;
}

async fn a_flow_writes_every_record_while_one_app_registration_is_refused(backend: Backend) {
    let Some(world) = World::start_with_registrations(backend).await else { return };
    let reply = world.post("connections", world.destination_body(params_with_registrations(&world, None))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let connection = reply.json()["id"].as_str().unwrap().to_string();
    let reply = world
        .post(
            "targetConnections",
            json!({"name": "Contacts", "baseConnectionId": connection, "params": {"customizationPrefix": "new"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let target = reply.json()["id"].as_str().unwrap().to_string();
    world.add_text_column("new_Gold", 20).await;
    world.add_text_column("new_Silver", 20).await;
    let flow = world.loyalty_flow(&target, "Loyalty audiences", &[]).await;
    let mut contacts = Vec::new();
    for i in 0..40 {
        contacts.push(world.create_contact(&format!("C{i}")).await);
    }

    // The main app's secret is removed in the tenant and every token revoked: its sign-in is now refused.
    assert!(world.emulator.remove_client_secret(world.emulator.client_secret.expose()));
    world.emulator.revoke_tokens();
    let messages: Vec<Json> =
        contacts.iter().map(|c| profile(&c.to_string(), Some("Loyal"), &[("seg-gold", "realized")])).collect();
    world.stream_all(&flow, messages).await;
    let totals = world.settled(&flow, 40).await;
    assert_eq!((totals.written, totals.failed), (40, 0), "every record is written: {totals:?}");

    // Read back as the first additional app (the main one no longer signs in).
    let app = &world.emulator.applications[0];
    let reader = Client::new(
        Environment::from_url(&world.emulator.url).unwrap(),
        ClientCredentials {
            tenant_id: world.emulator.tenant_id.to_string(),
            client_id: app.client_id.to_string(),
            client_secret: dataverse::Secret::new(app.client_secret.expose()),
            authority: world.emulator.url.clone(),
        },
    );
    for contact in &contacts {
        assert_eq!(read_contact(&reader, contact).await["new_gold"], "realized", "contact {contact}");
    }

    // The refused registration shows on the connection, named by client id, with the fix; the others are in rotation.
    let got = world.get(&format!("connections/{connection}")).await;
    let registrations = got.json()["items"][0]["registrations"].clone();
    let states: Vec<(String, bool)> = registrations
        .as_array()
        .unwrap_or_else(|| panic!("registrations shown: {}", got.text))
        .iter()
        .map(|r| (r["clientId"].as_str().unwrap().to_string(), r["inRotation"].as_bool().unwrap()))
        .collect();
    let mut expected = vec![(world.emulator.client_id.to_string(), false)];
    expected.extend(world.emulator.applications.iter().map(|a| (a.client_id.to_string(), true)));
    assert_eq!(states, expected, "{}", got.text);
    let problem = registrations[0]["problem"].as_str().unwrap();
    assert!(problem.contains("PATCH /connections/{id}"), "{problem}");
    for secret in every_secret(&world) {
        assert!(!got.text.contains(&secret), "a secret in {}", got.text);
    }
    // And in /metrics, as a scraper reads it.
    let scrape = world.http.get(format!("{}/metrics", world.service.url)).send().await.unwrap().text().await.unwrap();
    for (client_id, in_rotation) in expected {
        let sample = format!(
            "dynsync_dataverse_registration_in_rotation{{connection=\"{connection}\",client_id=\"{client_id}\"}} {}",
            u8::from(in_rotation)
        );
        assert!(scrape.lines().any(|line| line == sample), "{sample} in {scrape}");
    }

    // The fix the problem names: a new secret for the main app, given with PATCH, puts it back in rotation.
    let secret = world.emulator.add_client_secret();
    let path = format!("connections/{connection}");
    let change = json!([{"op": "replace", "path": "/auth/params/clientSecret", "value": secret.expose()}]);
    let reply = world.send(Method::PATCH, &path, Some(change)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let got = world.get(&path).await;
    let registrations = got.json()["items"][0]["registrations"].clone();
    let in_rotation: Vec<bool> =
        registrations.as_array().unwrap().iter().map(|r| r["inRotation"].as_bool().unwrap()).collect();
    assert_eq!(in_rotation, [true, true, true], "{}", got.text);
    world.finish().await;
}

/// Where stored connections rest, as text anyone with access to the store reads them, each named by its place:
/// every file of the SQLite store's data directory (the database and its write-ahead log), or every PostgreSQL
/// connection row (its body and its sealed secrets).
async fn stored_connections(world: &World, backend: Backend) -> Vec<(String, String)> {
    match backend {
        Backend::Sqlite => {
            let stored: Vec<(String, String)> = std::fs::read_dir(world.data_dir.path())
                .unwrap()
                .map(|entry| {
                    let path = entry.unwrap().path();
                    (path.display().to_string(), String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned())
                })
                .collect();
            assert!(stored.iter().any(|(place, _)| place.contains("dynsync.db")), "no database file");
            stored
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut db = sqlx::PgConnection::connect(&world.database.as_ref().unwrap().url).await.unwrap();
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT body || secrets FROM connections").fetch_all(&mut db).await.unwrap();
            rows.into_iter().map(|(text,)| ("PostgreSQL".to_string(), text)).collect()
        }
    }
}
