//! `--state`: an environment's rows, customizations and credentials survive a restart.

use crate::{Env, label};
use dataverse_emulator::EmulatorConfig;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn data_and_customizations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.db");
    let config = EmulatorConfig { state: Some(path.clone()), ..crate::config() };
    let first = Env::with(config.clone()).await;
    first
        .add_column(
            "contact",
            json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Tier", "MaxLength": 20, "DisplayName": label("Tier")}),
        )
        .await;
    let id = first.create("contacts", json!({"lastname": "Durable", "new_tier": "gold"})).await;
    let deleted = first.create("contacts", json!({"lastname": "Fleeting"})).await;
    assert_eq!(first.delete(&format!("contacts({deleted})")).await.status, StatusCode::NO_CONTENT);
    let updated = first.patch(&format!("contacts({id})"), json!({"firstname": "Dora"})).await;
    assert_eq!(updated.status, StatusCode::NO_CONTENT);
    let before = first.get(&format!("contacts({id})")).await.json();
    let old_token = first.token.clone();
    let client_id = first.emulator.client_id;
    let port: u16 = first.emulator.url.rsplit(':').next().unwrap().parse().unwrap();
    first.emulator.stop().await;

    // The same file and the same address: the same environment.
    let second = Env::with(EmulatorConfig { listen: ([127, 0, 0, 1], port).into(), ..config }).await;
    assert_eq!(second.emulator.client_id, client_id, "generated credentials are kept");
    let after = second.get(&format!("contacts({id})")).await.json();
    assert_eq!(after["fullname"], "Dora Durable");
    assert_eq!(after["new_tier"], "gold");
    assert_eq!(after["@odata.etag"], before["@odata.etag"]);
    assert_eq!(second.get(&format!("contacts({deleted})")).await.status, StatusCode::NOT_FOUND, "deletes are kept too");
    // Tokens issued before the restart still work: the signing key is kept too.
    let reply = second.send(second.http.get(second.api("WhoAmI")).bearer_auth(old_token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // New writes continue the row versions rather than reusing them.
    second.patch(&format!("contacts({id})"), json!({"firstname": "Dot"})).await;
    let newer = second.get(&format!("contacts({id})")).await.json();
    assert_ne!(newer["@odata.etag"], before["@odata.etag"]);
}

#[tokio::test]
async fn rotated_client_secrets_and_revoked_tokens_stay_so_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.db");
    let config = EmulatorConfig { state: Some(path.clone()), ..crate::config() };
    let first = Env::with(config.clone()).await;
    let old_secret = first.emulator.client_secret.clone();
    let new_secret = first.emulator.add_client_secret();
    assert!(first.emulator.remove_client_secret(old_secret.expose()));
    first.emulator.revoke_tokens();
    let old_token = first.token.clone();
    let port: u16 = first.emulator.url.rsplit(':').next().unwrap().parse().unwrap();
    first.emulator.stop().await;

    // The environment starts with the secret that is left; the removed one and the revoked token stay refused.
    let second = Env::with(EmulatorConfig { listen: ([127, 0, 0, 1], port).into(), ..config }).await;
    assert_eq!(second.emulator.client_secret, new_secret, "the first secret that signs in is announced");
    assert_eq!(second.get("WhoAmI").await.status, StatusCode::OK, "the kept secret signs in");
    let reply = second.send(second.http.get(second.api("WhoAmI")).bearer_auth(old_token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let answer = second
        .http
        .post(&second.emulator.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &second.emulator.client_id.to_string()),
            ("client_secret", old_secret.expose()),
            ("scope", &format!("{}/.default", second.emulator.url)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
}
