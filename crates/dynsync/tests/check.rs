//! `dynsync check` against the emulator, as a user runs it.

use dataverse_emulator::{CostModel, EmulatorConfig};
use tokio::process::Command;

async fn dynsync_check(emulator: &dataverse_emulator::RunningEmulator, secret: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .arg("check")
        .args(["--environment-url", &emulator.url, "--authority", &emulator.url])
        .args(["--tenant-id", &emulator.tenant_id.to_string(), "--client-id", &emulator.client_id.to_string()])
        .env("DYNSYNC_CLIENT_SECRET", secret)
        .output()
        .await
        .expect("dynsync runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_reports_a_working_connection() {
    let emulator = free().start().await.unwrap();
    let (ok, out, err) = dynsync_check(&emulator, emulator.client_secret.expose()).await;
    assert!(ok, "{out}{err}");
    assert!(out.starts_with(&format!("connected to {} as user ", emulator.url)), "{out}");
    assert!(out.contains(&emulator.environment.organization_id.to_string()));
}

#[tokio::test]
async fn check_says_what_to_fix_when_the_secret_is_wrong() {
    let emulator = free().start().await.unwrap();
    let (ok, out, err) = dynsync_check(&emulator, "an-old-secret").await;
    assert!(!ok);
    assert!(err.contains("the client secret is wrong or expired"), "{out}{err}");
    assert!(!err.contains("an-old-secret") && !out.contains("an-old-secret"), "the secret is never echoed");
}

/// The emulator without execution cost, so tests run as fast as the machine allows.
fn free() -> EmulatorConfig {
    EmulatorConfig { cost: CostModel::free(), ..Default::default() }
}
