//! The `dataverse-emulator` binary as scripts use it: one JSON line on stdout, logs on stderr, credentials
//! kept in the state file, a clean stop on SIGTERM.

use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(args: &[&str]) -> (Child, Json) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dataverse-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    match serde_json::from_str(&line) {
        Ok(announcement) => (child, announcement),
        Err(e) => {
            let _ = child.kill();
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("not one JSON line ({e}): {line:?}\nstderr: {stderr}")
        }
    }
}

fn stop(mut child: Child) -> String {
    // SIGTERM, then wait for the process to end by itself.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the emulator did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut rest = String::new();
    child.stdout.take().unwrap().read_to_string(&mut rest).unwrap();
    rest
}

fn password_token(a: &Json, user: &str, password: &str) -> Json {
    let client = reqwest::blocking::Client::new();
    client
        .post(a["token_url"].as_str().unwrap())
        .form(&[
            ("grant_type", "password"),
            ("client_id", a["client_id"].as_str().unwrap()),
            ("username", user),
            ("password", password),
            ("scope", &format!("{}/user_impersonation", a["url"].as_str().unwrap())),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn prints_one_json_line_and_keeps_its_credentials_in_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("env.db");
    let state = state.to_str().unwrap();
    let (child, a) = start(&["--listen", "127.0.0.1:0", "--state", state, "--user", "ann@contoso.com:Passw0rd!"]);
    for field in ["url", "web_api", "token_url", "tenant_id", "client_id", "client_secret"] {
        assert!(a[field].is_string(), "{field} in {a}");
    }
    assert_eq!(a["web_api"], format!("{}/api/data/v9.2/", a["url"].as_str().unwrap()));
    assert!(password_token(&a, "ann@contoso.com", "Passw0rd!")["access_token"].is_string());
    assert_eq!(stop(child), "", "nothing but the one line goes to stdout");

    let (child, again) = start(&["--state", state, "--user", "ann@contoso.com:Passw0rd!"]);
    for field in ["tenant_id", "client_id", "client_secret"] {
        assert_eq!(again[field], a[field], "{field} is kept");
    }
    stop(child);
}

#[test]
fn refuses_a_malformed_user_flag() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_dataverse-emulator")).args(["--user", "no-password"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--user takes NAME:PASSWORD"));
}

#[test]
fn generated_tables_are_listed_as_entity_definitions() {
    let (child, a) = start(&["--free", "--generated-tables", "25"]);
    let client = reqwest::blocking::Client::new();
    let token: Json = client
        .post(a["token_url"].as_str().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", a["client_id"].as_str().unwrap()),
            ("client_secret", a["client_secret"].as_str().unwrap()),
            ("scope", &format!("{}/.default", a["url"].as_str().unwrap())),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tables: Json = client
        .get(format!("{}EntityDefinitions?$select=LogicalName,IsCustomEntity", a["web_api"].as_str().unwrap()))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let custom = tables["value"].as_array().unwrap().iter().filter(|t| t["IsCustomEntity"] == true).count();
    assert_eq!(custom, 25);
    stop(child);
}
