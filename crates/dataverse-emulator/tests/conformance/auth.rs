//! §1 Authentication: the token endpoint and the Web API's answers to missing, forged and expired tokens.

use crate::{Env, Reply};
use dataverse_emulator::{EmulatorConfig, Secret};
use reqwest::StatusCode;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

async fn token_request(env: &Env, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Json) {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", env.emulator.url);
    let response = env.http.post(url).form(form).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

fn assert_aadsts(answer: &(StatusCode, Json), status: u16, error: &str, code: u64) {
    assert_eq!(answer.0.as_u16(), status, "{}", answer.1);
    assert_eq!(answer.1["error"], error, "{}", answer.1);
    assert_eq!(answer.1["error_codes"][0], code, "{}", answer.1);
    let description = answer.1["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
    assert!(description.contains("\r\nTrace ID: ") && description.contains("\r\nCorrelation ID: "), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(answer.1[field].is_string(), "{field} missing in {}", answer.1);
    }
}

#[tokio::test]
async fn s1_2_client_credentials_grant_has_the_documented_shape() {
    let env = Env::start().await;
    let (tenant, client, secret, scope) = (
        env.emulator.tenant_id.to_string(),
        env.emulator.client_id.to_string(),
        env.emulator.client_secret.expose().to_string(),
        format!("{}/.default", env.emulator.url),
    );
    let (status, body) = token_request(
        &env,
        &tenant,
        &[("grant_type", "client_credentials"), ("client_id", &client), ("client_secret", &secret), ("scope", &scope)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3, "a JWT");
}

#[tokio::test]
async fn s1_4_token_errors_carry_aadsts_codes() {
    let env = Env::start().await;
    let tenant = env.emulator.tenant_id.to_string();
    let client = env.emulator.client_id.to_string();
    let secret = env.emulator.client_secret.expose().to_string();
    let scope = format!("{}/.default", env.emulator.url);
    let cc = |client: &str, secret: &str, scope: &str| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", client.to_string()),
            ("client_secret", secret.to_string()),
            ("scope", scope.to_string()),
        ]
    };
    let ask = |tenant: String, form: Vec<(&'static str, String)>| {
        let env = &env;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token_request(env, &tenant, &pairs).await
        }
    };
    // Wrong secret.
    assert_aadsts(&ask(tenant.clone(), cc(&client, "wrong", &scope)).await, 401, "invalid_client", 7000215);
    // Unknown application.
    assert_aadsts(
        &ask(tenant.clone(), cc("11111111-2222-3333-4444-555555555555", &secret, &scope)).await,
        400,
        "unauthorized_client",
        700016,
    );
    // Unknown tenant.
    assert_aadsts(
        &ask("contoso.onmicrosoft.com".into(), cc(&client, &secret, &scope)).await,
        400,
        "invalid_request",
        90002,
    );
    // A scope that is not a resource.
    assert_aadsts(&ask(tenant.clone(), cc(&client, &secret, "not-a-scope")).await, 400, "invalid_scope", 70011);
    // Client credentials need /.default.
    let delegated = format!("{}/user_impersonation", env.emulator.url);
    assert_aadsts(&ask(tenant.clone(), cc(&client, &secret, &delegated)).await, 400, "invalid_scope", 1002012);
    // Another environment's URL.
    assert_aadsts(
        &ask(tenant.clone(), cc(&client, &secret, "https://contoso.crm.dynamics.com/.default")).await,
        400,
        "invalid_resource",
        500011,
    );
}

#[tokio::test]
async fn s1_3_password_grant_signs_in_users_and_rejects_wrong_passwords() {
    let config =
        EmulatorConfig { users: vec![("ann@contoso.com".into(), Secret::new("Passw0rd!"))], ..crate::config() };
    let env = Env::with(config).await;
    let tenant = env.emulator.tenant_id.to_string();
    let client = env.emulator.client_id.to_string();
    let scope = format!("{}/user_impersonation offline_access", env.emulator.url);
    let form = |password: &'static str| {
        vec![
            ("grant_type", "password"),
            ("client_id", client.as_str()),
            ("username", "ann@contoso.com"),
            ("password", password),
            ("scope", scope.as_str()),
        ]
    };
    assert_aadsts(&token_request(&env, &tenant, &form("nope")).await, 400, "invalid_grant", 50126);
    let (status, body) = token_request(&env, &tenant, &form("Passw0rd!")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["refresh_token"].is_string(), "offline_access gives a refresh token");
    assert_eq!(body["scope"], format!("{}/user_impersonation", env.emulator.url));
    // The user acts as their own systemuser, not as the application user.
    let user_token = body["access_token"].as_str().unwrap();
    let who: Json = env.http.get(env.api("WhoAmI")).bearer_auth(user_token).send().await.unwrap().json().await.unwrap();
    let app: Json = env.get("WhoAmI").await.json();
    assert_ne!(who["UserId"], app["UserId"]);
    let user: Json =
        env.get(&format!("systemusers({})?$select=domainname", who["UserId"].as_str().unwrap())).await.json();
    assert_eq!(user["domainname"], "ann@contoso.com");
    // The refresh token gives a new access token.
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let (status, refreshed) = token_request(
        &env,
        &tenant,
        &[("grant_type", "refresh_token"), ("client_id", &client), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
}

fn assert_challenge(reply: &Reply, env: &Env) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    let challenge = reply.header("www-authenticate").expect("WWW-Authenticate");
    let expected = format!("Bearer authorization_uri={}/{}/oauth2/authorize", env.emulator.url, env.emulator.tenant_id);
    assert!(challenge.starts_with(&expected), "{challenge}");
}

#[tokio::test]
async fn s1_5_missing_and_forged_tokens_are_challenged() {
    let env = Env::start().await;
    let missing = env.send(env.http.get(env.api("WhoAmI"))).await;
    assert_challenge(&missing, &env);
    // The signature's first character changed: all six of its bits count, so the signature is always another
    // (its last character's low bits are padding, and changing them may leave the signature as it was).
    let at = env.token.rfind('.').expect("a token has a signature") + 1;
    let first = env.token.as_bytes()[at];
    let mut forged = env.token.clone();
    forged.replace_range(at..at + 1, if first == b'A' { "B" } else { "A" });
    let reply = env.send(env.http.get(env.api("contacts")).bearer_auth(&forged)).await;
    assert_challenge(&reply, &env);
    // A token for another emulator (another signing key) is refused too.
    let other = Env::start().await;
    let reply = env.send(env.http.get(env.api("contacts")).bearer_auth(&other.token)).await;
    assert_challenge(&reply, &env);
}

#[tokio::test]
async fn s1_5_expired_tokens_are_refused() {
    let config = EmulatorConfig { token_lifetime: Duration::from_secs(1), ..crate::config() };
    let env = Env::with(config).await;
    assert_eq!(env.get("WhoAmI").await.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = env.get("WhoAmI").await;
        if reply.status == StatusCode::UNAUTHORIZED {
            assert_challenge(&reply, &env);
            reply.assert_error(401, "0x8005f101", "requires authentication");
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks for an application token with `secret`.
async fn client_credentials(env: &Env, secret: &str) -> (StatusCode, Json) {
    let (tenant, client, scope) = (
        env.emulator.tenant_id.to_string(),
        env.emulator.client_id.to_string(),
        format!("{}/.default", env.emulator.url),
    );
    token_request(
        env,
        &tenant,
        &[("grant_type", "client_credentials"), ("client_id", &client), ("client_secret", secret), ("scope", &scope)],
    )
    .await
}

async fn who_am_i(env: &Env, token: &str) -> Reply {
    env.send(env.http.get(env.api("WhoAmI")).bearer_auth(token)).await
}

#[tokio::test]
async fn s1_4_a_client_secret_can_be_rotated_without_an_outage() {
    let env = Env::start().await;
    let first = env.emulator.client_secret.expose().to_string();
    let second = env.emulator.add_client_secret();
    assert_ne!(second.expose(), first);
    // Both secrets sign in while the apps move over.
    for secret in [first.as_str(), second.expose()] {
        let (status, body) = client_credentials(&env, secret).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(env.emulator.remove_client_secret(&first), "the first secret was there");
    assert!(!env.emulator.remove_client_secret(&first), "and is there no more");
    // The removed secret is refused as a wrong one; the new one keeps working.
    assert_aadsts(&client_credentials(&env, &first).await, 401, "invalid_client", 7000215);
    let (status, body) = client_credentials(&env, second.expose()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(who_am_i(&env, body["access_token"].as_str().unwrap()).await.status, StatusCode::OK);
    // As in Entra ID, a token the removed secret got stays valid until it expires.
    assert_eq!(who_am_i(&env, &env.token).await.status, StatusCode::OK);
    // Removing the last secret leaves the application with none.
    assert!(env.emulator.remove_client_secret(second.expose()));
    assert_aadsts(&client_credentials(&env, second.expose()).await, 401, "invalid_client", 7000215);
}

#[tokio::test]
async fn s1_5_tokens_issued_before_a_revocation_are_refused_and_new_ones_work() {
    let config =
        EmulatorConfig { users: vec![("ann@contoso.com".into(), Secret::new("Passw0rd!"))], ..crate::config() };
    let env = Env::with(config).await;
    let (tenant, client) = (env.emulator.tenant_id.to_string(), env.emulator.client_id.to_string());
    let scope = format!("{}/user_impersonation offline_access", env.emulator.url);
    let (status, user) = token_request(
        &env,
        &tenant,
        &[
            ("grant_type", "password"),
            ("client_id", &client),
            ("username", "ann@contoso.com"),
            ("password", "Passw0rd!"),
            ("scope", &scope),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(who_am_i(&env, &env.token).await.status, StatusCode::OK);

    env.emulator.revoke_tokens();
    let reply = who_am_i(&env, &env.token).await;
    assert_challenge(&reply, &env);
    reply.assert_error(401, "0x8004a101", "not valid");
    let reply = who_am_i(&env, user["access_token"].as_str().unwrap()).await;
    assert_challenge(&reply, &env);
    // Refresh tokens are revoked too.
    let refresh = user["refresh_token"].as_str().unwrap();
    let refreshed = token_request(
        &env,
        &tenant,
        &[("grant_type", "refresh_token"), ("client_id", &client), ("refresh_token", refresh)],
    )
    .await;
    assert_aadsts(&refreshed, 400, "invalid_grant", 9002313);
    // Signing in again gives a token that works.
    let token = crate::token_for(&env.http, &env.emulator).await;
    assert_eq!(who_am_i(&env, &token).await.status, StatusCode::OK);
}
