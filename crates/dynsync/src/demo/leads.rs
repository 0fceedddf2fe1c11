//! `dynsync demo leads`: lead intake from end to end, on the embedded Dataverse emulator, with a real SMTP server
//! the demo starts to read the notifications back.
//!
//! It does what a publisher would: makes a lead intake through the API, gives its URL to "Partner Center" (the
//! demo posts as Partner Center does: no header, the secret in the URL), and then a burst of leads arrives — new
//! people, people taking a second step on the same offer, and one blank lead — while Dynamics is down for a few
//! seconds. It presses Validate, waits until every accepted lead is handled, then reads Dynamics and the mailbox
//! back: one lead per person (plus the test lead), a note per step, one notification per new lead.

use super::{Api, emulator_credentials};
use crate::hosts::AllowedHosts;
use crate::leads::notify::SmtpSettings;
use crate::mailbox::Mailbox;
use crate::service::{Service, ServiceConfig};
use crate::specs::LEAD_INTAKE_FLOW_SPEC;
use anyhow::Context;
use dataverse::Request;
use dataverse_emulator::faults::{Fault, FaultPlan, FaultRule, When};
use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long Dynamics is down while the leads arrive.
const OUTAGE: Duration = Duration::from_secs(5);

/// Runs the demo; `Ok(true)` when Dynamics and the mailbox hold what they should.
pub async fn run(people: usize) -> anyhow::Result<bool> {
    let started = Instant::now();
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await?;
    let credentials = emulator_credentials(&emulator);
    let dynamics = super::emulator_client(&emulator);
    let mailbox = Mailbox::start().await.context("starting the demo's SMTP server")?;
    let data_dir = tempfile::tempdir().context("creating the demo's data directory")?;
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec![format!("demo-{}", Uuid::new_v4().simple())];
    config.smtp = Some(SmtpSettings::local(mailbox.port(), "dynsync@contoso.com"));
    config.allowed_hosts = AllowedHosts::of_urls([emulator.url.as_str()]);
    let service = Service::start(config).await?;
    let api = Api { http: reqwest::Client::new(), service: &service };
    println!(
        "dynsync demo leads: Dynamics 365 at {}, dynsync at {}, SMTP at 127.0.0.1:{}",
        emulator.url,
        service.url,
        mailbox.port()
    );

    // 1. The intake, through the API: its URL is what the publisher pastes into Partner Center.
    let (_, target) = super::connect(&api, &emulator.url, &credentials, "new").await?;
    let made = api
        .call(
            Method::POST,
            "flows",
            Some(json!({
                "name": "Marketplace leads",
                "flowSpec": {"id": LEAD_INTAKE_FLOW_SPEC, "version": "1.0"},
                "targetConnectionIds": [target],
                "dedupWindowDays": 30,
                "notify": "sales@contoso.com; partners@contoso.com",
            })),
        )
        .await?;
    let intake = made["id"].as_str().context("the intake has an id")?.to_string();
    let url = format!("{}{}", service.url, made["intakeUrl"].as_str().context("the intake has a URL")?);
    println!(
        "1. made lead intake {intake}; Partner Center posts to {}?code=…",
        url.split_once('?').map_or(url.as_str(), |p| p.0)
    );

    // 2. Dynamics goes down; a burst of leads arrives meanwhile.
    emulator.faults.inject(FaultPlan {
        seed: 4,
        rules: vec![
            FaultRule { fault: Fault::Unavailable, when: When::Window { after: Duration::ZERO, lasting: OUTAGE } },
            FaultRule { fault: Fault::TokenOutage, when: When::Window { after: Duration::ZERO, lasting: OUTAGE } },
        ],
    });
    let http = reqwest::Client::new();
    let mut steps_of: HashMap<String, usize> = HashMap::new();
    let mut latencies = Vec::new();
    for n in 0..people {
        let email = format!("person{n}@fabrikam{}.com", n % 7);
        // About a third of the people take a second step on the same offer.
        let actions: &[&str] = if n % 3 == 0 { &["PLT", "INS"] } else { &["PLT"] };
        for action in actions {
            let sent = Instant::now();
            let response = http.post(&url).json(&partner_center_lead(n, &email, action)).send().await?;
            latencies.push(sent.elapsed());
            anyhow::ensure!(
                response.status() == reqwest::StatusCode::ACCEPTED,
                "lead {n} was not accepted: {}",
                response.text().await?
            );
            *steps_of.entry(email.clone()).or_default() += 1;
        }
    }
    let blank =
        http.post(&url).json(&json!({"UserDetails": {}, "LeadSource": "AppSource-PLT|contoso.crm"})).send().await?;
    let blank_refused = blank.status() == reqwest::StatusCode::BAD_REQUEST;
    let accepted: usize = steps_of.values().sum();
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    println!(
        "2. while Dynamics was down for {} s: {accepted} leads of {people} people accepted (p99 {:.1} ms), the blank lead {}",
        OUTAGE.as_secs(),
        p99.as_secs_f64() * 1000.0,
        if blank_refused { "refused with 400 and kept for inspection" } else { "NOT refused" }
    );

    // 3. Validate, as Partner Center's button: a test lead through the whole path.
    let report = api.call(Method::POST, &format!("flows/{intake}/action?op=validate"), None).await?;
    println!("3. Validate:");
    for step in report["steps"].as_array().into_iter().flatten() {
        println!(
            "   {:<9} {:<7} {}",
            step["step"].as_str().unwrap_or(""),
            step["status"].as_str().unwrap_or(""),
            step["detail"].as_str().unwrap_or("")
        );
    }
    let validated = report["status"] == "passed";

    // 4. Every accepted lead handled.
    let run = api.wait_for_run(&intake, accepted as u64 + 1, Duration::from_secs(300)).await?;
    let summary = &run["metrics"]["recordSummary"];
    println!(
        "4. run: {} received, {} created, {} updated, {} failed",
        summary["inputRecordCount"],
        summary["createdRecordCount"],
        summary["updatedRecordCount"],
        summary["failedRecordCount"]
    );

    // 5. Dynamics: one lead per person and the test lead, a note per step.
    let page: Json =
        dynamics.execute(&Request::get("leads?$select=leadid,emailaddress1,subject")).await?.read_json()?;
    let leads = page["value"].as_array().cloned().unwrap_or_default();
    let notes: Json = dynamics.execute(&Request::get("annotations?$select=_objectid_value")).await?.read_json()?;
    let mut notes_of: HashMap<String, usize> = HashMap::new();
    for note in notes["value"].as_array().into_iter().flatten() {
        *notes_of.entry(note["_objectid_value"].as_str().unwrap_or("").to_string()).or_default() += 1;
    }
    let mut wrong = Vec::new();
    for lead in &leads {
        let email = lead["emailaddress1"].as_str().unwrap_or("").to_lowercase();
        let id = lead["leadid"].as_str().unwrap_or("");
        let expected = if email.starts_with("msft_test") { 1 } else { steps_of.get(&email).copied().unwrap_or(0) };
        let noted = notes_of.get(id).copied().unwrap_or(0);
        if expected == 0 || noted != expected {
            wrong.push(format!("lead {id} ({email}) has {noted} notes, {expected} expected"));
        }
    }
    println!("5. Dynamics holds {} leads for {people} people and the test lead", leads.len());

    // 6. The mailbox: one notification per new lead.
    let mail = mailbox.wait_for(leads.len(), Duration::from_secs(60)).await;
    let announced =
        leads.iter().filter(|l| mail.iter().any(|m| m.body().contains(l["leadid"].as_str().unwrap_or("-")))).count();
    println!("6. the SMTP server received {} notifications, {announced} naming a lead in Dynamics", mail.len());

    let ok = leads.len() == people + 1
        && wrong.is_empty()
        && blank_refused
        && validated
        && summary["failedRecordCount"] == 0
        && mail.len() == leads.len()
        && announced == leads.len();
    for line in wrong.iter().take(10) {
        println!("   WRONG {line}");
    }
    if ok {
        println!(
            "PASS: {people} people made {people} leads (and the test lead), each step a note, each new lead announced once, through a {} s outage ({:.1} s)",
            OUTAGE.as_secs(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("FAIL: Dynamics or the mailbox does not hold what it should (see above)");
    }
    service.stop().await;
    Ok(ok)
}

fn partner_center_lead(n: usize, email: &str, action: &str) -> Json {
    let country = ["US", "Germany", "fr", "Brasil"][n % 4];
    json!({
        "UserDetails": {
            "FirstName": format!("First{n}"), "LastName": format!("Last{n}"), "Email": email,
            "Phone": format!("+1 617 555 {:04}", n % 10_000), "Country": country,
            "Company": format!("Fabrikam {}", n % 7), "Title": "Buyer"
        },
        "LeadSource": format!("AzureMarketplace-{action}|contoso.crm-suite"),
        "ActionCode": action,
        "OfferTitle": "Contoso CRM Suite",
        "Description": "Sent by dynsync's lead demo"
    })
}
