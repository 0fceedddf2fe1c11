//! Lead intake end to end: Partner Center's posts into an intake, through dynsync, into Dynamics leads and notes,
//! with the notification read back from a real SMTP server (aiosmtpd). Each scenario runs on both stores.

mod common;

use common::{Backend, SmtpServer, World};
use dataverse_emulator::faults::{Fault, FaultPlan, FaultRule, When};
use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

on_both_stores!(
    leads_reach_dynamics_once_per_person_with_a_note_per_step,
    a_wrong_secret_is_refused_and_stores_nothing,
    leads_accepted_while_dynamics_is_down_are_written_once_it_is_back,
    a_lead_is_matched_to_the_account_of_its_email_domain,
    validate_follows_a_test_lead_to_dynamics_and_to_the_notification,
    a_lead_dynamics_refuses_is_kept_and_written_by_a_replay_once_fixed,
    an_intake_signed_in_as_a_user_with_a_password_writes_its_leads,
);

/// An intake over a fresh destination, notifying `notify`; its id and its URL with the secret.
async fn intake(world: &World, extra: Json) -> (String, String) {
    let (_, target) = world.destination("new").await;
    let mut body = json!({
        "name": "Marketplace leads",
        "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC, "version": "1.0"},
        "targetConnectionIds": [target],
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let answer = reply.json();
    (answer["id"].as_str().unwrap().to_string(), answer["intakeUrl"].as_str().unwrap().to_string())
}

/// A world whose dynsync sends notifications to a real SMTP server.
async fn with_smtp(backend: Backend) -> Option<(SmtpServer, World)> {
    let smtp = SmtpServer::start().await;
    let settings = smtp.settings();
    let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() };
    let world = World::start_configured(backend, emulator, |c| c.smtp = Some(settings)).await?;
    Some((smtp, world))
}

/// Posts a lead to an intake URL as Partner Center does: no header, the secret in the URL.
async fn post_lead(world: &World, url: &str, body: &Json) -> (StatusCode, Json) {
    let response = world.http.post(format!("{}{url}", world.service.url)).json(body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Json::Null))
}

fn partner_center(email: &str, action: &str, offer: &str) -> Json {
    json!({
        "UserDetails": {
            "FirstName": "Ana", "LastName": "Lima", "Email": email, "Phone": "+1 617 555 0100",
            "Country": "United States", "Company": "Contoso", "Title": "CTO"
        },
        "LeadSource": format!("AzureMarketplace-{action}|contoso.{offer}"),
        "ActionCode": action,
        "OfferTitle": format!("Contoso {offer}"),
        "Description": "Interested in a trial"
    })
}

/// Leads in Dynamics, with the columns the tests read.
async fn leads(world: &World) -> Vec<Json> {
    let path = "leads?$select=leadid,subject,emailaddress1,firstname,lastname,address1_country,leadsourcecode,_parentaccountid_value";
    let page: Json = world.dynamics().execute(&dataverse::Request::get(path)).await.unwrap().read_json().unwrap();
    page["value"].as_array().unwrap().clone()
}

async fn notes_of(world: &World, lead: &str) -> Vec<Json> {
    let path = format!("annotations?$filter=_objectid_value%20eq%20{lead}&$select=subject,notetext");
    let page: Json = world.dynamics().execute(&dataverse::Request::get(path)).await.unwrap().read_json().unwrap();
    page["value"].as_array().unwrap().clone()
}

/// The intake's runs added up, once `accepted` leads are handled.
async fn settled(world: &World, intake: &str, accepted: u64) -> Json {
    let runs = world.settled_runs(intake, accepted).await;
    let sum =
        |field: &str| -> u64 { runs.iter().map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap()).sum() };
    json!({
        "received": sum("inputRecordCount"), "written": sum("outputRecordCount"),
        "created": sum("createdRecordCount"), "updated": sum("updatedRecordCount"), "failed": sum("failedRecordCount"),
    })
}

async fn leads_reach_dynamics_once_per_person_with_a_note_per_step(backend: Backend) {
    let Some((smtp, world)) = with_smtp(backend).await else { return };
    let (id, url) = intake(&world, json!({"notify": "sales@contoso.com; partners@contoso.com"})).await;

    // Contact me, then Get it now (lower-case userDetails, as some posts have), for the same person and offer.
    let contact_me = partner_center("ana@contoso.com", "PLT", "crm");
    let mut get_it_now = partner_center("Ana@Contoso.com", "INS", "crm");
    let details = get_it_now.as_object_mut().unwrap().remove("UserDetails").unwrap();
    get_it_now["userDetails"] = details;
    let other = partner_center("bo@fabrikam.com", "PLT", "crm");
    for body in [&contact_me, &get_it_now, &other] {
        let (status, answer) = post_lead(&world, &url, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert!(answer["id"].is_string(), "{answer}");
    }
    // A blank lead is refused with what is wrong, and kept to be inspected.
    let (status, answer) = post_lead(&world, &url, &json!({"UserDetails": {}, "LeadSource": "AppSource"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("kept as rejected"), "{answer}");
    let rejects = world.get(&format!("flows/{id}/rejects")).await.json();
    assert_eq!(rejects["items"].as_array().unwrap().len(), 1, "{rejects}");
    assert!(rejects["items"][0]["body"].as_str().unwrap().contains("AppSource"));

    let totals = settled(&world, &id, 3).await;
    assert_eq!(totals, json!({"received": 3, "written": 3, "created": 2, "updated": 1, "failed": 0}), "{totals}");
    let mut leads = leads(&world).await;
    leads.sort_by_key(|l| l["emailaddress1"].as_str().unwrap().to_lowercase());
    assert_eq!(leads.len(), 2, "one lead per person: {leads:?}");
    assert_eq!(leads[0]["emailaddress1"], "Ana@Contoso.com", "the later step's values win");
    assert_eq!(leads[0]["subject"], "Install — Contoso crm", "the later step's topic");
    assert_eq!(leads[0]["address1_country"], "United States");
    assert_eq!(leads[0]["leadsourcecode"], 8, "Web");
    let notes = notes_of(&world, leads[0]["leadid"].as_str().unwrap()).await;
    assert_eq!(notes.len(), 2, "a note per step: {notes:?}");
    assert_eq!(notes_of(&world, leads[1]["leadid"].as_str().unwrap()).await.len(), 1);

    // Each new lead is announced once, to both addresses, with what the sales team needs.
    let mail = smtp.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(mail.len(), 2, "{mail:?}");
    let ana = mail.iter().find(|m| m.to_lowercase().contains("ana@contoso.com")).expect("Ana's lead is announced");
    assert!(
        ana.contains("X-RcptTo: sales@contoso.com, partners@contoso.com")
            || ana.contains("X-RcptTo: sales@contoso.com,partners@contoso.com"),
        "{ana}"
    );
    assert!(ana.contains("Contoso"), "{ana}");
    assert!(ana.contains(leads[0]["leadid"].as_str().unwrap()), "the lead's id: {ana}");
    // The intake records them sent once the server has answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    let flow = loop {
        let flow = world.get(&format!("flows/{id}")).await.json();
        if flow["items"][0]["notifications"]["sent"] == 2 || Instant::now() > deadline {
            break flow;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(flow["items"][0]["notifications"]["sent"], 2, "{flow}");
    assert!(!flow.to_string().contains("lis_"), "the intake's secret is never shown again: {flow}");
    world.finish().await;
}

async fn a_wrong_secret_is_refused_and_stores_nothing(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (id, url) = intake(&world, json!({})).await;
    let wrong = format!("{}?code=lis_{}", url.split_once('?').unwrap().0, "0".repeat(64));
    let (status, answer) = post_lead(&world, &wrong, &partner_center("ana@contoso.com", "PLT", "crm")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _) = post_lead(&world, &format!("/leads/{id}"), &partner_center("a@b.co", "PLT", "crm")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no code and no token");
    let flow = world.get(&format!("flows/{id}")).await.json();
    assert_eq!(flow["items"][0]["backlog"]["leads"], 0, "{flow}");
    assert_eq!(flow["items"][0]["rejected"], 0, "{flow}");

    // A rotated secret opens the intake; the previous one still does, for the week the sender needs to move.
    let rotated = world.send(Method::POST, &format!("flows/{id}/action?op=rotate-secret"), None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text);
    let new_url = rotated.json()["intakeUrl"].as_str().unwrap().to_string();
    assert_ne!(new_url, url);
    for url in [&new_url, &url] {
        let (status, answer) = post_lead(&world, url, &partner_center("ana@contoso.com", "PLT", "crm")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    assert_eq!(settled(&world, &id, 2).await["written"], 2);
    world.finish().await;
}

async fn leads_accepted_while_dynamics_is_down_are_written_once_it_is_back(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (id, url) = intake(&world, json!({})).await;
    // Dynamics answers 503 to everything, and its sign-in is out, for a few seconds.
    world.emulator.faults.inject(FaultPlan {
        seed: 7,
        rules: vec![
            FaultRule {
                fault: Fault::Unavailable,
                when: When::Window { after: Duration::ZERO, lasting: Duration::from_secs(4) },
            },
            FaultRule {
                fault: Fault::TokenOutage,
                when: When::Window { after: Duration::ZERO, lasting: Duration::from_secs(4) },
            },
        ],
    });
    let people = 20;
    for n in 0..people {
        for action in ["PLT", "INS"] {
            let (status, answer) =
                post_lead(&world, &url, &partner_center(&format!("p{n}@contoso.com"), action, "crm")).await;
            assert_eq!(status, StatusCode::ACCEPTED, "accepted while Dynamics is down: {answer}");
        }
    }
    let totals = settled(&world, &id, 2 * people).await;
    assert_eq!(totals["failed"], 0, "{totals}");
    assert_eq!(totals["written"], 2 * people, "{totals}");
    let leads = leads(&world).await;
    assert_eq!(leads.len() as u64, people, "exactly one lead per person");
    for lead in &leads {
        assert_eq!(notes_of(&world, lead["leadid"].as_str().unwrap()).await.len(), 2, "{lead}");
    }
    world.finish().await;
}

async fn a_lead_is_matched_to_the_account_of_its_email_domain(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let dynamics = world.dynamics();
    let account = json!({"name": "Fabrikam", "emailaddress1": "info@fabrikam.com"});
    let response = dynamics.send(Method::POST, "accounts", Some(&account)).await.unwrap();
    let location = response.headers()["odata-entityid"].to_str().unwrap().to_string();
    let account_id = location.rsplit_once('(').unwrap().1.trim_end_matches(')').to_string();
    let (id, url) = intake(&world, json!({"matchAccountsByDomain": true})).await;
    for email in ["bo@fabrikam.com", "someone@gmail.com"] {
        let (status, answer) = post_lead(&world, &url, &partner_center(email, "PLT", "crm")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    settled(&world, &id, 2).await;
    let leads = leads(&world).await;
    let of =
        |email: &str| leads.iter().find(|l| l["emailaddress1"] == email).unwrap()["_parentaccountid_value"].clone();
    assert_eq!(of("bo@fabrikam.com"), account_id.as_str());
    assert_eq!(of("someone@gmail.com"), Json::Null, "a free-mail domain says nothing of the company");
    world.finish().await;
}

async fn validate_follows_a_test_lead_to_dynamics_and_to_the_notification(backend: Backend) {
    let Some((smtp, world)) = with_smtp(backend).await else { return };
    let (id, _) = intake(&world, json!({"notify": "sales@contoso.com"})).await;
    let started = Instant::now();
    let reply = world.send(Method::POST, &format!("flows/{id}/action?op=validate"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["status"], "passed", "{report}");
    let steps: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["accepted", "written", "notified"], "{report}");
    let lead_id = report["steps"][1]["leadId"].as_str().unwrap();
    let leads = leads(&world).await;
    let test_lead = leads.iter().find(|l| l["leadid"] == lead_id).expect("the test lead is in Dynamics");
    assert!(test_lead["subject"].as_str().unwrap().starts_with("Test lead"), "marked as a test lead: {test_lead}");
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("[Test]"), "{}", mail[0]);
    assert!(started.elapsed() < Duration::from_secs(60));
    world.finish().await;
}

async fn a_lead_dynamics_refuses_is_kept_and_written_by_a_replay_once_fixed(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    // The intake writes a lead source of the admin's, Marketplace, which must be an option when it is saved.
    let (_, target) = world.destination("new").await;
    let body = json!({
        "name": "Marketplace leads", "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC},
        "targetConnectionIds": [target], "columns": {"leadSourceCode": 100000000}
    });
    let refused = world.post("flows", body.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(refused.detail().contains("100000000 is not an option"), "{}", refused.text);
    assert!(refused.detail().contains("8 Web"), "the options there are: {}", refused.text);
    let option = json!({"EntityLogicalName": "lead", "AttributeLogicalName": "leadsourcecode", "Value": 100000000,
                        "Label": {"LocalizedLabels": [{"Label": "Marketplace", "LanguageCode": 1033}]}});
    world.dynamics().send(Method::POST, "InsertOptionValue", Some(&option)).await.unwrap();
    let made = world.post("flows", body).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let (id, url) =
        (made.json()["id"].as_str().unwrap().to_string(), made.json()["intakeUrl"].as_str().unwrap().to_string());

    // Later the option is deleted by mistake: Dynamics refuses the leads, which are kept with its reason.
    let delete = json!({"EntityLogicalName": "lead", "AttributeLogicalName": "leadsourcecode", "Value": 100000000});
    world.dynamics().send(Method::POST, "DeleteOptionValue", Some(&delete)).await.unwrap();
    let (status, answer) = post_lead(&world, &url, &partner_center("ana@contoso.com", "PLT", "crm")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let totals = settled(&world, &id, 1).await;
    assert_eq!(totals["failed"], 1, "{totals}");
    let runs = world.runs(&id).await;
    let outcome = runs[0]["outcomes"].as_array().unwrap().iter().find(|o| o["outcome"] == "failed").unwrap().clone();
    assert_eq!(outcome["code"], "0x8004431a", "Dynamics' code: {outcome}");
    assert!(outcome["message"].as_str().unwrap().contains("leadsourcecode"), "{outcome}");
    assert!(leads(&world).await.is_empty());

    // The admin adds the option back; the replay writes the lead, once.
    world.dynamics().send(Method::POST, "InsertOptionValue", Some(&option)).await.unwrap();
    let replay = world.send(Method::POST, &format!("flows/{id}/action?op=retry-failed"), None).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text);
    assert_eq!(replay.json()["written"], 1, "{}", replay.text);
    let again = world.send(Method::POST, &format!("flows/{id}/action?op=retry-failed"), None).await;
    assert_eq!(again.json()["retried"], 0, "nothing is left to replay: {}", again.text);
    let leads = leads(&world).await;
    assert_eq!(leads.len(), 1, "{leads:?}");
    assert_eq!(leads[0]["leadsourcecode"], 100000000);
    assert_eq!(notes_of(&world, leads[0]["leadid"].as_str().unwrap()).await.len(), 1);
    world.finish().await;
}

async fn an_intake_signed_in_as_a_user_with_a_password_writes_its_leads(backend: Backend) {
    let users = vec![("sales@contoso.com".to_string(), dataverse_emulator::Secret::new("Passw0rd!"))];
    let emulator = EmulatorConfig { cost: CostModel::free(), users, ..Default::default() };
    let Some(world) = World::start_with(backend, emulator).await else { return };
    let spec = dynsync::specs::DYNAMICS_DESTINATION.to_string();
    let connection = world
        .post(
            "connections",
            json!({
                "name": "Sales user",
                "auth": {"specName": "Basic Authentication for Dynamics-Online", "params": {
                    "serviceUri": world.emulator.url, "username": "sales@contoso.com", "password": "Passw0rd!",
                    "clientId": world.emulator.client_id.to_string(), "authorityHost": world.emulator.url,
                }},
                "connectionSpec": {"id": spec, "version": "1.0"}
            }),
        )
        .await;
    assert_eq!(connection.status, StatusCode::CREATED, "{}", connection.text);
    assert!(!connection.text.contains("Passw0rd!"));
    let connection = connection.json()["id"].as_str().unwrap().to_string();
    let target = world
        .post(
            "targetConnections",
            json!({"name": "Leads", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
                   "connectionSpec": {"id": spec, "version": "1.0"}}),
        )
        .await;
    assert_eq!(target.status, StatusCode::CREATED, "{}", target.text);
    let reply = world
        .post(
            "flows",
            json!({"name": "Leads", "flowSpec": {"id": dynsync::specs::LEAD_INTAKE_FLOW_SPEC},
                   "targetConnectionIds": [target.json()["id"]]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let (id, url) =
        (reply.json()["id"].as_str().unwrap().to_string(), reply.json()["intakeUrl"].as_str().unwrap().to_string());
    let (status, answer) = post_lead(&world, &url, &partner_center("ana@contoso.com", "PLT", "crm")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(settled(&world, &id, 1).await["created"], 1);
    assert_eq!(leads(&world).await.len(), 1);
    world.finish().await;
}
