//! The client against the emulator: sign-in, its errors in plain words, and tokens renewed in long runs.

use dataverse::{
    AuthError, Client, ClientCredentials, Credentials, Environment, Error, ErrorKind, PasswordCredentials, Secret,
};
use dataverse_emulator::{CostModel, EmulatorConfig, RunningEmulator};
use std::time::{Duration, Instant};

fn credentials(emulator: &RunningEmulator) -> ClientCredentials {
    ClientCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        client_secret: Secret::new(emulator.client_secret.expose()),
        authority: emulator.url.clone(),
    }
}

#[tokio::test]
async fn who_am_i_proves_the_connection() {
    let emulator = free().start().await.unwrap();
    let client = Client::new(Environment::from_url(&emulator.url).unwrap(), credentials(&emulator));
    let me = client.who_am_i().await.unwrap();
    assert_eq!(me.organization_id, emulator.environment.organization_id);
}

#[tokio::test]
async fn sign_in_failures_say_what_to_fix() {
    let emulator = free().start().await.unwrap();
    let environment = Environment::from_url(&emulator.url).unwrap();
    let err = |creds: ClientCredentials, env: Environment| async move {
        Client::new(env, creds).who_am_i().await.unwrap_err()
    };

    let mut wrong_secret = credentials(&emulator);
    wrong_secret.client_secret = Secret::new("not-the-secret");
    let e = err(wrong_secret, environment.clone()).await;
    assert!(matches!(&e, Error::Auth(AuthError::WrongSecret { .. })), "{e:?}");
    assert!(e.to_string().starts_with("the client secret is wrong or expired"), "{e}");
    assert!(!format!("{e:?}").contains("not-the-secret"), "secrets stay out of Debug");

    let mut unknown_tenant = credentials(&emulator);
    unknown_tenant.tenant_id = "fabrikam.onmicrosoft.com".into();
    assert!(matches!(err(unknown_tenant, environment.clone()).await, Error::Auth(AuthError::UnknownTenant { .. })));

    let mut unknown_app = credentials(&emulator);
    unknown_app.client_id = "0b1e8e5c-0000-4000-8000-000000000000".into();
    assert!(matches!(err(unknown_app, environment.clone()).await, Error::Auth(AuthError::UnknownApplication { .. })));

    // The right tenant, but another environment's URL.
    let other = Environment::from_url("https://contoso.crm4.dynamics.com").unwrap();
    let e = err(credentials(&emulator), other).await;
    assert!(matches!(&e, Error::Auth(AuthError::WrongEnvironment { .. })), "{e:?}");
    assert!(e.to_string().contains("check the environment URL"));

    // An authority nobody answers at.
    let mut unreachable = credentials(&emulator);
    unreachable.authority = "http://127.0.0.1:9".into();
    let e = err(unreachable, environment).await;
    assert!(matches!(&e, Error::Auth(a) if a.is_transient()), "{e:?}");
}

#[tokio::test]
async fn tokens_are_renewed_during_long_runs() {
    let config = EmulatorConfig { token_lifetime: Duration::from_secs(2), ..free() };
    let emulator = config.start().await.unwrap();
    let client = Client::new(Environment::from_url(&emulator.url).unwrap(), credentials(&emulator));
    let until = Instant::now() + Duration::from_secs(5);
    let mut calls = 0;
    while Instant::now() < until {
        client.who_am_i().await.expect("every call succeeds across token expiry");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(calls > 20);
}

#[tokio::test]
async fn api_errors_are_typed() {
    let emulator = free().start().await.unwrap();
    let client = Client::new(Environment::from_url(&emulator.url).unwrap(), credentials(&emulator));
    let e = client.send(reqwest::Method::GET, "contacts?$select=new_nothere", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownProperty("new_nothere".into()));
    let e =
        client.send(reqwest::Method::GET, "contacts(00000000-0000-0000-0000-000000000001)", None).await.unwrap_err();
    match e {
        Error::Api(api) => {
            assert_eq!(api.kind, ErrorKind::NotFound);
            assert_eq!(api.code, "0x80040217");
            assert!(api.request_id.is_some());
        }
        other => panic!("{other:?}"),
    }
}

fn password(emulator: &RunningEmulator, username: &str, password: &str) -> PasswordCredentials {
    PasswordCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        username: username.into(),
        password: Secret::new(password),
        client_secret: None,
        authority: emulator.url.clone(),
    }
}

#[tokio::test]
async fn a_user_signs_in_with_a_password_and_stays_signed_in() {
    let config = EmulatorConfig {
        users: vec![("ada@contoso.onmicrosoft.com".into(), dataverse_emulator::Secret::new("correct horse"))],
        token_lifetime: Duration::from_secs(2),
        ..free()
    };
    let emulator = config.start().await.unwrap();
    let environment = Environment::from_url(&emulator.url).unwrap();
    let app = Client::new(environment.clone(), credentials(&emulator)).who_am_i().await.unwrap();
    let user = Client::new(environment.clone(), password(&emulator, "ada@contoso.onmicrosoft.com", "correct horse"));
    let me = user.who_am_i().await.unwrap();
    assert_ne!(me.user_id, app.user_id, "the user acts as herself, not as the application user");
    assert!(!format!("{user:?}").contains("correct horse"), "passwords stay out of Debug");

    // Across several token lifetimes, renewed with the refresh token.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(user.who_am_i().await.unwrap().user_id, me.user_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let wrong = Client::new(environment.clone(), password(&emulator, "ada@contoso.onmicrosoft.com", "wrong"));
    let e = wrong.who_am_i().await.unwrap_err();
    assert!(matches!(&e, Error::Auth(AuthError::WrongPassword { username }) if username.starts_with("ada")), "{e:?}");
    let nobody = Client::new(environment, password(&emulator, "bob@contoso.onmicrosoft.com", "x"));
    assert!(matches!(nobody.who_am_i().await.unwrap_err(), Error::Auth(AuthError::UnknownUser { .. })));
}

#[tokio::test]
async fn a_caller_supplied_token_is_used_as_is() {
    let emulator = free().start().await.unwrap();
    let environment = Environment::from_url(&emulator.url).unwrap();
    let form = [
        ("grant_type", "client_credentials".to_string()),
        ("client_id", emulator.client_id.to_string()),
        ("client_secret", emulator.client_secret.expose().to_string()),
        ("scope", format!("{}/.default", emulator.url)),
    ];
    let answer: serde_json::Value =
        reqwest::Client::new().post(&emulator.token_url).form(&form).send().await.unwrap().json().await.unwrap();
    let token = answer["access_token"].as_str().unwrap().to_string();
    let client = Client::new(environment.clone(), Credentials::Token(Secret::new(token.clone())));
    assert_eq!(client.who_am_i().await.unwrap().organization_id, emulator.environment.organization_id);
    assert!(!format!("{client:?}").contains(&token), "tokens stay out of Debug");

    let forged = Client::new(environment, Credentials::Token(Secret::new("eyJhbGciOiJub25lIn0.e30.")));
    let e = forged.who_am_i().await.unwrap_err();
    assert!(matches!(&e, Error::Auth(AuthError::TokenRefused)), "{e:?}");
}

/// The emulator without execution cost, so tests run as fast as the machine allows.
fn free() -> EmulatorConfig {
    EmulatorConfig { cost: CostModel::free(), ..Default::default() }
}

#[tokio::test]
async fn a_refused_token_gets_one_retry_with_a_new_one() {
    // The environment restarts with a new signing key: the cached token is still in date but refused.
    let first = free().start().await.unwrap();
    let client = Client::new(Environment::from_url(&first.url).unwrap(), credentials(&first));
    let me = client.who_am_i().await.unwrap();
    let config = EmulatorConfig {
        listen: first.url.trim_start_matches("http://").parse().unwrap(),
        tenant_id: Some(first.tenant_id),
        client_id: Some(first.client_id),
        client_secret: Some(first.client_secret.clone()),
        ..free()
    };
    first.stop().await;
    let second = config.start().await.unwrap();
    let before = client.metrics();
    let again = client.who_am_i().await.expect("a 401 is answered by signing in again");
    assert_eq!(again.organization_id, second.environment.organization_id);
    assert_ne!(again.organization_id, me.organization_id, "the second environment answered");
    assert!(client.metrics().retries > before.retries);
}

#[tokio::test]
async fn new_credentials_reach_a_running_client_and_its_counters_carry_on() {
    let emulator = free().start().await.unwrap();
    let mut wrong = credentials(&emulator);
    wrong.client_secret = Secret::new("not-the-secret");
    let client = Client::new(Environment::from_url(&emulator.url).unwrap(), wrong.clone());

    let e = client.who_am_i().await.unwrap_err();
    assert!(matches!(&e, Error::Auth(a @ AuthError::WrongSecret { .. }) if !a.is_transient()), "{e:?}");
    assert!(e.is_sign_in_refused(), "waiting cannot fix a wrong secret: {e:?}");
    assert_eq!(client.metrics().requests, 0, "nothing reaches the Web API without a token");

    let clone = client.clone();
    client.set_credentials(credentials(&emulator));
    let me = clone.who_am_i().await.expect("the right secret signs the same client in, clones included");
    assert_eq!(me.organization_id, emulator.environment.organization_id);
    let signed_in = client.metrics();
    assert_eq!(signed_in.requests, 1);
    assert_eq!(signed_in.dop_hint, Some(dataverse_emulator::Limits::default().dop_hint as usize));

    // The token got with the right secret is forgotten along with it.
    client.set_credentials(wrong);
    let e = client.who_am_i().await.unwrap_err();
    assert!(e.is_sign_in_refused(), "{e:?}");

    client.set_credentials(credentials(&emulator));
    client.who_am_i().await.unwrap();
    let m = client.metrics();
    assert_eq!(m.requests, 2, "the counters carry on across credentials: {m:?}");
    assert_eq!(m.responses.get(&200), Some(&2), "{m:?}");
    assert_eq!(m.dop_hint, signed_in.dop_hint, "and so does what the client learnt of the server");
}
