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
