//! Crash safety of lead intake: `dynsync serve` is killed with SIGKILL while it writes a burst of leads, and
//! started again. Every accepted lead ends up in Dynamics exactly once — one lead per person, one note per step
//! — the runs count each lead once, and every new lead is announced over SMTP.

use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

mod common;

use common::{ServeProcess, SmtpServer};
use dynsync::demo::emulator_client as dynamics;

const BASE: &str = "/data/foundation/flowservice";
const PEOPLE: usize = 150;

/// The intake's runs added up (zeros while dynsync does not answer).
async fn totals(http: &reqwest::Client, dynsync: &ServeProcess, intake: &str) -> HashMap<&'static str, u64> {
    let path = format!("{BASE}/runs?property=flowId=={intake}");
    let runs = dynsync.call(http, Method::GET, &path, None).await.unwrap_or(Json::Null);
    let mut sums = HashMap::new();
    for field in ["inputRecordCount", "createdRecordCount", "updatedRecordCount", "failedRecordCount"] {
        let sum = runs["items"].as_array().into_iter().flatten();
        sums.insert(field, sum.map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap_or(0)).sum());
    }
    sums
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_intake_resumes_without_losing_or_doubling_a_lead() {
    // Each request costs time, so that the leads are still being written when dynsync is killed.
    let cost = CostModel { per_request: Duration::from_millis(25), ..CostModel::free() };
    let emulator = EmulatorConfig { cost, ..Default::default() }.start().await.unwrap();
    let smtp = SmtpServer::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let config = data_dir.path().join("dynsync.toml");
    std::fs::write(
        &config,
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"dynsync@contoso.com\"\n",
            smtp.port
        ),
    )
    .unwrap();
    let args = ["--data-dir", data_dir.path().to_str().unwrap(), "--config", config.to_str().unwrap()];
    let http = reqwest::Client::new();
    let mut first = ServeProcess::start(&args, &[]);
    first.ready(&http).await;

    let target = first.target(&http, &emulator).await;
    let made = first
        .call(
            &http,
            Method::POST,
            &format!("{BASE}/flows"),
            Some(json!({
                "name": "Marketplace leads", "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC},
                "targetConnectionIds": [target], "notify": "sales@contoso.com"
            })),
        )
        .await
        .unwrap();
    let intake = made["id"].as_str().unwrap().to_string();
    let path = made["intakeUrl"].as_str().unwrap().to_string();

    // Two steps per person, as Partner Center sends them: no header, the secret in the URL.
    for step in ["PLT", "INS"] {
        for n in 0..PEOPLE {
            let lead = json!({
                "UserDetails": {"FirstName": "P", "LastName": format!("{n}"), "Email": format!("p{n}@contoso.com")},
                "LeadSource": format!("AppSource-{step}|contoso.crm"), "OfferTitle": "Contoso CRM"
            });
            let response = http.post(format!("{}{path}", first.url)).json(&lead).send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        }
    }
    let accepted = 2 * PEOPLE as u64;

    // Killed while writing: some leads handled, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while totals(&http, &first, &intake).await["inputRecordCount"] == 0 {
        assert!(Instant::now() < deadline, "the intake never started writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let leads_at_kill = {
        let page: Json = dynamics(&emulator)
            .execute(&dataverse::Request::get("leads?$select=leadid"))
            .await
            .unwrap()
            .read_json()
            .unwrap();
        page["value"].as_array().unwrap().len()
    };
    assert!(leads_at_kill < PEOPLE, "killed before every lead was written ({leads_at_kill})");

    let mut second = ServeProcess::start(&args, &[]);
    second.ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let sums = loop {
        let sums = totals(&http, &second, &intake).await;
        if sums["inputRecordCount"] >= accepted {
            break sums;
        }
        assert!(Instant::now() < deadline, "only {sums:?} of {accepted} handled after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sums["inputRecordCount"], accepted, "each lead counted once: {sums:?}");
    assert_eq!(sums["failedRecordCount"], 0, "{sums:?}");
    assert_eq!(sums["createdRecordCount"] + sums["updatedRecordCount"], accepted, "{sums:?}");

    let dynamics = dynamics(&emulator);
    let leads: Json = dynamics
        .execute(&dataverse::Request::get("leads?$select=leadid,emailaddress1"))
        .await
        .unwrap()
        .read_json()
        .unwrap();
    let leads = leads["value"].as_array().unwrap();
    assert_eq!(leads.len(), PEOPLE, "exactly one lead per person");
    let notes: Json = dynamics
        .execute(&dataverse::Request::get("annotations?$select=_objectid_value"))
        .await
        .unwrap()
        .read_json()
        .unwrap();
    let mut per_lead: HashMap<String, usize> = HashMap::new();
    for note in notes["value"].as_array().unwrap() {
        *per_lead.entry(note["_objectid_value"].as_str().unwrap().to_string()).or_default() += 1;
    }
    for lead in leads {
        assert_eq!(per_lead.get(lead["leadid"].as_str().unwrap()), Some(&2), "two steps, two notes: {lead}");
    }

    // Every new lead announced: a notification may be sent again after a crash, never lost; one claimed by the
    // killed process is sent once its claim has run out.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mail = smtp.messages();
        let silent: Vec<&str> = leads
            .iter()
            .map(|l| l["leadid"].as_str().unwrap())
            .filter(|id| !mail.iter().any(|m| m.contains(id)))
            .collect();
        if silent.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} leads never announced, among them {}", silent.len(), silent[0]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.kill();
}
