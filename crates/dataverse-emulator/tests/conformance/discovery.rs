//! §1.6: the sign-in discovery documents MSAL and azure-identity read before asking for a token.

use crate::Env;
use reqwest::StatusCode;
use serde_json::Value as Json;

async fn get_json(env: &Env, url: &str) -> (StatusCode, Json) {
    let response = env.http.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn auth_1_6_the_openid_configuration_names_this_environments_token_endpoint() {
    let env = Env::start().await;
    let (url, tenant) = (&env.emulator.url, env.emulator.tenant_id);
    let (status, document) = get_json(&env, &format!("{url}/{tenant}/v2.0/.well-known/openid-configuration")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["token_endpoint"], env.emulator.token_url);
    assert_eq!(document["authorization_endpoint"], format!("{url}/{tenant}/oauth2/v2.0/authorize"));
    assert_eq!(document["issuer"], format!("{url}/{tenant}/v2.0"));

    // The endpoint it names gives tokens.
    let token = crate::token_for(&env.http, &env.emulator).await;
    assert_eq!(token.split('.').count(), 3);
    // Its key set is there, and empty: the emulator signs with a key only it holds.
    let (status, keys) = get_json(&env, document["jwks_uri"].as_str().unwrap()).await;
    assert_eq!((status, keys["keys"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));

    // The v1 document and the shared tenants answer too.
    for path in [
        format!("{tenant}/.well-known/openid-configuration"),
        "organizations/v2.0/.well-known/openid-configuration".into(),
    ] {
        let (status, _) = get_json(&env, &format!("{url}/{path}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn auth_1_6_an_unknown_tenant_is_invalid_tenant_with_aadsts90002() {
    let env = Env::start().await;
    let url = format!("{}/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration", env.emulator.url);
    let (status, body) = get_json(&env, &url).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_tenant");
    assert_eq!(body["error_codes"][0], 90002);
}

#[tokio::test]
async fn auth_1_6_instance_discovery_points_at_this_hosts_tenant_discovery_endpoint() {
    let env = Env::start().await;
    let (url, tenant) = (&env.emulator.url, env.emulator.tenant_id);
    let ask = |endpoint: String| {
        env.http
            .get(format!("{url}/common/discovery/instance"))
            .query(&[("api-version", "1.1"), ("authorization_endpoint", endpoint.as_str())])
            .send()
    };
    let answer: Json = ask(format!("{url}/{tenant}/oauth2/v2.0/authorize")).await.unwrap().json().await.unwrap();
    assert_eq!(answer["tenant_discovery_endpoint"], format!("{url}/{tenant}/v2.0/.well-known/openid-configuration"));
    let host = url.trim_start_matches("http://");
    assert_eq!(answer["metadata"][0]["aliases"][0], host);

    // MSAL names the authority's host without its port.
    let portless = format!("http://127.0.0.1/{tenant}/oauth2/v2.0/authorize");
    let answer: Json = ask(portless).await.unwrap().json().await.unwrap();
    assert_eq!(answer["tenant_discovery_endpoint"], format!("{url}/{tenant}/v2.0/.well-known/openid-configuration"));

    // Another authority is not this instance.
    let refused = ask("https://login.example.com/common/oauth2/v2.0/authorize".into()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Json = refused.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["error_codes"][0].as_u64()), (Some("invalid_instance"), Some(50049)));
}
