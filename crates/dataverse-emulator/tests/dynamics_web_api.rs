//! A Dataverse client library nobody here wrote — DynamicsWebApi, from npm — against the emulator:
//! create, queries with paging, formatted values, update, upsert, delete and errors, checked as Dynamics 365
//! answers them (tests/clients/dynamics-web-api/client.test.mjs). Needs Node.js 18+ and npm.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn found(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

#[test]
fn dynamics_web_api_gets_what_dynamics_would_answer() {
    for tool in ["node", "npm"] {
        assert!(
            found(tool),
            "this test runs DynamicsWebApi from npm and needs Node.js 18+ with npm: install them \
             (apt-get install nodejs npm, or from nodejs.org) and run the tests again"
        );
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/dynamics-web-api");
    if !dir.join("node_modules/dynamics-web-api").exists() {
        let status =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).status().expect("npm runs");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let mut child = Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .env("DATAVERSE_EMULATOR_BIN", env!("CARGO_BIN_EXE_dataverse-emulator"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the DynamicsWebApi test ran over 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "DynamicsWebApi against the emulator failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
