//! §7 Change tracking: the initial read with `Prefer: odata.track-changes` ending in `@odata.deltaLink`,
//! delta reads of new and changed rows then `$deletedEntity` rows, the options refused while tracking,
//! tables without tracking, the flag in metadata, and expired tokens.

use crate::{Env, Reply, config, label};
use dataverse_emulator::EmulatorConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

async fn tracked(env: &Env, url: &str, page_size: Option<u32>) -> Reply {
    let mut prefer = "odata.track-changes".to_string();
    if let Some(n) = page_size {
        prefer.push_str(&format!(",odata.maxpagesize={n}"));
    }
    env.send(env.request(Method::GET, url).header("Prefer", prefer)).await
}

/// Reads every page from `url`, returning the rows and the final delta link.
async fn read_all(env: &Env, url: &str, page_size: Option<u32>) -> (Vec<Json>, String) {
    let mut rows = Vec::new();
    let mut next = url.to_string();
    loop {
        let reply = tracked(env, &next, page_size).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let body = reply.json();
        rows.extend(body["value"].as_array().unwrap().iter().cloned());
        match (body["@odata.nextLink"].as_str(), body["@odata.deltaLink"].as_str()) {
            (Some(link), None) => next = link.to_string(),
            (None, Some(delta)) => return (rows, delta.to_string()),
            other => panic!("a page has exactly one of nextLink and deltaLink: {other:?}"),
        }
    }
}

fn names(rows: &[Json]) -> Vec<String> {
    rows.iter().filter_map(|r| r["lastname"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn s7_initial_read_pages_and_ends_with_a_delta_link() {
    let env = Env::start().await;
    for name in ["A", "B", "C"] {
        env.create("contacts", json!({"lastname": name})).await;
    }
    let first = tracked(&env, "contacts?$select=lastname", Some(2)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let applied = first.header("preference-applied").unwrap();
    assert!(applied.contains("odata.track-changes"), "{applied}");
    let body = first.json();
    assert!(body["@odata.deltaLink"].is_null(), "only the last page has the delta link");
    assert!(body["@odata.nextLink"].as_str().unwrap().contains("istracking=%22True%22"));

    let (rows, delta) = read_all(&env, "contacts?$select=lastname", Some(2)).await;
    let mut seen = names(&rows);
    seen.sort();
    assert_eq!(seen, ["A", "B", "C"]);
    assert!(delta.starts_with(&env.api("contacts?$select=lastname&$deltatoken=")), "{delta}");
    let token = delta.split("$deltatoken=").nth(1).unwrap();
    assert!(token.contains("%21"), "version!timestamp, encoded: {token}");
}

#[tokio::test]
async fn s7_delta_returns_changes_then_deletions() {
    let env = Env::start().await;
    let kept = env.create("contacts", json!({"lastname": "Kept"})).await;
    let changed = env.create("contacts", json!({"lastname": "Changed"})).await;
    let gone = env.create("contacts", json!({"lastname": "Gone"})).await;
    let (_, delta) = read_all(&env, "contacts?$select=lastname", None).await;

    env.patch(&format!("contacts({changed})"), json!({"lastname": "Changed again"})).await;
    assert_eq!(env.delete(&format!("contacts({gone})")).await.status, StatusCode::NO_CONTENT);
    let added = env.create("contacts", json!({"lastname": "Added"})).await;

    let reply = env.get(&delta).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert!(body["@odata.context"].as_str().unwrap().ends_with("#contacts(lastname)/$delta"), "{body}");
    let values = body["value"].as_array().unwrap();
    assert_eq!(values.len(), 3, "{body}");
    assert_eq!(values[0]["contactid"], changed.as_str());
    assert_eq!(values[0]["lastname"], "Changed again");
    assert_eq!(values[1]["contactid"], added.as_str());
    assert_eq!(values[2]["id"], gone.as_str());
    assert_eq!(values[2]["reason"], "deleted");
    assert!(values[2]["@odata.context"].as_str().unwrap().ends_with("$metadata#contacts/$deletedEntity"));
    assert!(values.iter().all(|v| v["contactid"] != kept.as_str()));

    let next = body["@odata.deltaLink"].as_str().unwrap();
    let quiet = env.get(next).await.json();
    assert_eq!(quiet["value"], json!([]), "no changes since the last token");
    assert!(quiet["@odata.deltaLink"].is_string());
}

#[tokio::test]
async fn s7_delta_reads_page_without_losing_a_change() {
    let env = Env::start().await;
    let (_, delta) = read_all(&env, "contacts?$select=lastname", None).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(env.create("contacts", json!({"lastname": format!("N{i}")})).await);
    }
    env.delete(&format!("contacts({})", ids[0])).await;
    env.delete(&format!("contacts({})", ids[1])).await;
    let (rows, _) = read_all(&env, &delta, Some(2)).await;
    let mut written = names(&rows);
    written.sort();
    assert_eq!(written, ["N2", "N3", "N4", "N5", "N6"]);
    let deleted: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(deleted, [ids[0].as_str(), ids[1].as_str()]);
}

#[tokio::test]
async fn s7_options_refused_while_tracking() {
    let env = Env::start().await;
    for (query, option) in [
        ("contacts?$filter=lastname eq 'x'", "filter"),
        ("contacts?$orderby=lastname", "orderby"),
        ("contacts?$expand=parentcustomerid_account", "expand"),
        ("contacts?$top=5", "top"),
    ] {
        let expected = format!("The \"${option}\" query parameter isn't supported when Change Tracking is enabled.");
        tracked(&env, query, None).await.assert_error(400, "0x80060888", &expected);
    }
}

async fn flag(env: &Env, table: &str) -> Json {
    let url = format!("EntityDefinitions(LogicalName='{table}')?$select=ChangeTrackingEnabled");
    env.get(&url).await.json()["ChangeTrackingEnabled"].clone()
}

#[tokio::test]
async fn s7_tables_without_tracking_and_enabling_it() {
    let env = Env::start().await;
    let reply = env
        .post(
            "EntityDefinitions",
            json!({
                "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
                "SchemaName": "new_Visit",
                "DisplayName": label("Visit"),
                "DisplayCollectionName": label("Visits"),
                "OwnershipType": "UserOwned",
                "HasActivities": false,
                "Attributes": [{
                    "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                    "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 100,
                    "RequiredLevel": {"Value": "None"}, "DisplayName": label("Name")
                }]
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    tracked(&env, "new_visits", None).await.assert_error(
        400,
        "0x80072491",
        "Entity new_visit isn't enabled for change tracking.",
    );
    assert_eq!(flag(&env, "new_visit").await, json!(false));
    let enable = env.send(
        env.request(Method::PUT, "EntityDefinitions(LogicalName='new_visit')")
            .json(&json!({"ChangeTrackingEnabled": true})),
    );
    assert_eq!(enable.await.status, StatusCode::NO_CONTENT);
    assert_eq!(flag(&env, "new_visit").await, json!(true));
    assert_eq!(tracked(&env, "new_visits", None).await.status, StatusCode::OK);
    let listed = env.get("EntityDefinitions?$select=LogicalName&$filter=ChangeTrackingEnabled eq true").await.json();
    let listed: Vec<&str> =
        listed["value"].as_array().unwrap().iter().map(|t| t["LogicalName"].as_str().unwrap()).collect();
    assert!(listed.contains(&"new_visit") && listed.contains(&"contact"), "{listed:?}");

    let disable = env.send(
        env.request(Method::PUT, "EntityDefinitions(LogicalName='new_visit')")
            .json(&json!({"ChangeTrackingEnabled": false})),
    );
    disable.await.assert_error(400, "0x80040203", "cannot be disabled once enabled");
}

#[tokio::test]
async fn s7_an_expired_token_asks_for_a_full_sync() {
    let env = Env::with(EmulatorConfig { change_retention: Duration::from_millis(1500), ..config() }).await;
    let (_, delta) = read_all(&env, "contacts?$select=lastname", None).await;
    assert_eq!(env.get(&delta).await.status, StatusCode::OK, "a fresh token works");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = env.get(&delta).await;
        if reply.status != StatusCode::OK {
            reply.assert_error(
                400,
                "0x80044352",
                "Version stamp associated with the client has expired. Please perform a full sync.",
            );
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn s7_deletions_survive_a_restart_and_rolled_back_ones_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let with_state = || EmulatorConfig { state: Some(state.clone()), ..config() };
    let env = Env::with(with_state()).await;
    let gone = env.create("contacts", json!({"lastname": "Gone"})).await;
    let stays = env.create("contacts", json!({"lastname": "Stays"})).await;
    let (_, delta) = read_all(&env, "contacts?$select=lastname", None).await;
    env.delete(&format!("contacts({gone})")).await;
    // A change set that deletes a row and then fails is rolled back: no deletion to report.
    let batch = format!(
        "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n\
         --c\r\nContent-Type: application/http\r\n\r\nDELETE contacts({stays}) HTTP/1.1\r\n\r\n\r\n\
         --c\r\nContent-Type: application/http\r\n\r\nPOST contacts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{{\"nosuch\":1}}\r\n\
         --c--\r\n\r\n--b--\r\n"
    );
    let reply = env
        .send(env.request(Method::POST, "$batch").header("Content-Type", "multipart/mixed; boundary=b").body(batch))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    env.emulator.stop().await;

    let env = Env::with(with_state()).await;
    // The restarted emulator listens on another port: keep the link's path and query.
    let delta = delta.split_once("/api/data/v9.2/").unwrap().1;
    let body = env.get(delta).await.json();
    let values = body["value"].as_array().unwrap();
    assert_eq!(values.len(), 1, "{body}");
    assert_eq!(values[0]["id"], gone.as_str());
}
