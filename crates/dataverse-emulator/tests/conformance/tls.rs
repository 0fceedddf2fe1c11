//! `--tls`: HTTPS with a generated self-signed certificate that clients can trust from the file it writes.

use crate::{config, token_for};
use dataverse_emulator::EmulatorConfig;
use reqwest::StatusCode;

#[tokio::test]
async fn https_with_a_certificate_clients_can_trust() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("emulator.pem");
    let state = dir.path().join("state.db");
    let tls = |state| EmulatorConfig { tls_certificate: Some(certificate.clone()), state: Some(state), ..config() };
    let emulator = tls(state.clone()).start().await.unwrap();
    assert!(emulator.url.starts_with("https://127.0.0.1:"), "{}", emulator.url);
    let pem = std::fs::read(&certificate).expect("the certificate is written");

    let trusting = |pem: &[u8]| {
        reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(pem).unwrap()]).build().unwrap()
    };
    let http = trusting(&pem);
    let token = token_for(&http, &emulator).await;
    let who = http.get(format!("{}WhoAmI", emulator.web_api)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(who.status(), StatusCode::OK);

    // A client that does not trust the certificate is refused, as with any unknown certificate.
    assert!(reqwest::Client::new().get(&emulator.token_url).send().await.is_err());

    // With a state file the certificate survives a restart, so clients keep trusting it.
    emulator.stop().await;
    let emulator = tls(state).start().await.unwrap();
    assert_eq!(std::fs::read(&certificate).unwrap(), pem);
    assert_eq!(token_for(&http, &emulator).await.split('.').count(), 3);
}

/// §12.2: every link an answer carries — `OData-EntityId`, `@odata.context`, `@odata.nextLink`,
/// `@odata.deltaLink` — says `https` under `--tls`, whether the client speaks HTTP/1.1 or HTTP/2.
#[tokio::test]
async fn links_12_2_say_https_to_http1_and_http2_clients_under_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = dir.path().join("emulator.pem");
    let emulator = EmulatorConfig { tls_certificate: Some(certificate.clone()), ..config() }.start().await.unwrap();
    let pem = std::fs::read(&certificate).unwrap();
    let trusting = || reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()]);
    let token = token_for(&trusting().build().unwrap(), &emulator).await;
    for (version, expected, http) in [
        ("HTTP/1.1", reqwest::Version::HTTP_11, trusting().http1_only().build().unwrap()),
        ("HTTP/2", reqwest::Version::HTTP_2, trusting().build().unwrap()),
    ] {
        let send = |method: reqwest::Method, path: &str, prefer: &str| {
            http.request(method, format!("{}{path}", emulator.web_api)).bearer_auth(&token).header("Prefer", prefer)
        };
        for name in ["A", "B"] {
            let created = send(reqwest::Method::POST, "accounts", "return=minimal")
                .json(&serde_json::json!({"name": name}))
                .send()
                .await
                .unwrap();
            assert_eq!(created.version(), expected, "the client speaks {version}");
            let id = created.headers()["odata-entityid"].to_str().unwrap();
            assert!(id.starts_with("https://"), "{version}: OData-EntityId {id}");
        }
        let page: serde_json::Value = send(reqwest::Method::GET, "accounts?$select=name", "odata.maxpagesize=1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for link in ["@odata.context", "@odata.nextLink"] {
            assert!(page[link].as_str().unwrap().starts_with("https://"), "{version}: {link} {}", page[link]);
        }
        let delta: serde_json::Value = send(reqwest::Method::GET, "accounts?$select=name", "odata.track-changes")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let link = delta["@odata.deltaLink"].as_str().unwrap_or_default();
        assert!(link.starts_with("https://"), "{version}: @odata.deltaLink {link}");
    }
}
