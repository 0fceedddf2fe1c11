//! Email events end to end: an email service's posts into an email events flow, through dynsync, onto the Dynamics
//! timeline (Email event activities regarding contacts, read back through `activitypointers`), with opt-outs on the
//! contact. Each scenario runs on both stores.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Backend, World};
use dataverse_emulator::faults::{Fault, FaultPlan, FaultRule, When};
use dataverse_emulator::{CostModel, EmulatorConfig};
use dynsync::engagement::formats::sendgrid;
use dynsync::engagement::install::{EngagementTables, install};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use uuid::Uuid;

on_both_stores!(
    sendgrid_events_go_on_the_contact_s_timeline_once_however_often_they_are_posted,
    a_post_without_sendgrid_s_signature_or_with_a_wrong_code_is_refused_and_stores_nothing,
    an_event_for_an_unknown_address_is_kept_and_written_by_a_replay_once_the_contact_exists,
    opt_outs_and_re_opt_ins_reach_the_contact_and_follow_up_tasks_are_made,
    a_person_s_consent_change_in_dynamics_is_not_undone_by_an_older_event,
    with_journeys_an_opt_out_is_also_the_address_s_commercial_consent_row,
    events_accepted_while_dynamics_is_down_are_written_once_it_is_back,
    a_flow_is_refused_until_the_email_event_table_is_installed,
    a_mailgun_post_is_taken_only_with_mailgun_s_signature_and_its_key_is_never_shown,
    an_ses_event_through_sns_is_taken_only_with_a_valid_sns_signature,
    an_ses_flow_whose_pinned_sns_certificate_is_not_one_is_refused_naming_its_place,
);

/// SendGrid's signing key in these tests, and the verification key SendGrid would show for it.
fn sendgrid_keys() -> (SigningKey, String) {
    let signing = SigningKey::from_slice(&[42; 32]).unwrap();
    let public = p256::PublicKey::from(signing.verifying_key()).to_public_key_der().unwrap();
    (signing, BASE64.encode(public.as_bytes()))
}

/// A world whose environment has the Email event table for prefix `new`.
async fn installed(backend: Backend, emulator: EmulatorConfig) -> Option<World> {
    let world = World::start_with(backend, emulator).await?;
    let tables = EngagementTables::new("new".parse().unwrap());
    let report = install(&world.dynamics(), &tables).await.unwrap();
    assert!(report.created.contains(&"table new_emailevent".to_string()), "{report:?}");
    let again = install(&world.dynamics(), &tables).await.unwrap();
    assert!(again.created.is_empty(), "a second install creates nothing: {again:?}");
    Some(world)
}

/// An email events flow over a fresh destination; its id and its events URL with the code.
async fn flow(world: &World, provider: &str, extra: Json) -> (String, String) {
    let (_, target) = world.destination("new").await;
    let mut body = json!({
        "name": "Newsletter events",
        "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC, "version": "1.0"},
        "targetConnectionIds": [target],
        "provider": provider,
    });
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let answer = reply.json();
    (answer["id"].as_str().unwrap().to_string(), answer["eventsUrl"].as_str().unwrap().to_string())
}

/// Posts a body to an events URL as the service does, with `headers`.
async fn post(world: &World, url: &str, body: &str, headers: &[(&str, String)]) -> (StatusCode, Json) {
    let mut request = world.http.post(format!("{}{url}", world.service.url)).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.header("content-type", "application/json").send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Json::Null))
}

/// SendGrid's headers for a body signed at `timestamp`.
fn signed(signing: &SigningKey, timestamp: &str, body: &str) -> Vec<(&'static str, String)> {
    let signature: Signature = signing.sign(&[timestamp.as_bytes(), body.as_bytes()].concat());
    vec![
        (sendgrid::SIGNATURE_HEADER, BASE64.encode(signature.to_der().as_bytes())),
        (sendgrid::TIMESTAMP_HEADER, timestamp.to_string()),
    ]
}

async fn create_contact(world: &World, lastname: &str, email: &str) -> Uuid {
    let body = json!({"lastname": lastname, "emailaddress1": email});
    let response = world.dynamics().send(Method::POST, "contacts", Some(&body)).await.unwrap();
    let location = response.headers()["odata-entityid"].to_str().unwrap().to_string();
    location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap()
}

/// A contact's timeline: its activities, oldest first, as `activitypointers` gives them.
async fn timeline(world: &World, contact: Uuid) -> Vec<Json> {
    let path = format!(
        "activitypointers?$select=activityid,subject,activitytypecode,actualend&$filter=_regardingobjectid_value%20eq%20{contact}&$orderby=actualend%20asc"
    );
    let page: Json = world.dynamics().execute(&dataverse::Request::get(path)).await.unwrap().read_json().unwrap();
    page["value"].as_array().unwrap().clone()
}

/// The Email event rows of a contact, with the columns dynsync writes.
async fn email_events(world: &World, contact: Uuid) -> Vec<Json> {
    let path = format!(
        "new_emailevents?$select=subject,new_eventkey,new_eventtype,new_url,new_email,new_campaign&$filter=_regardingobjectid_value%20eq%20{contact}"
    );
    let page: Json = world.dynamics().execute(&dataverse::Request::get(path)).await.unwrap().read_json().unwrap();
    page["value"].as_array().unwrap().clone()
}

async fn contact_consent(world: &World, contact: Uuid) -> (bool, bool) {
    let path = format!("contacts({contact})?$select=donotbulkemail,donotemail");
    let row: Json = world.dynamics().execute(&dataverse::Request::get(path)).await.unwrap().read_json().unwrap();
    (row["donotbulkemail"].as_bool().unwrap(), row["donotemail"].as_bool().unwrap())
}

/// Waits until the contact's timeline has `count` activities.
async fn timeline_of(world: &World, contact: Uuid, count: usize) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = timeline(world, contact).await;
        if rows.len() >= count {
            return rows;
        }
        assert!(Instant::now() < deadline, "only {} of {count} activities on the timeline: {rows:?}", rows.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sendgrid_event(email: &str, event: &str, timestamp: i64, extra: Json) -> Json {
    let mut e = json!({
        "email": email, "timestamp": timestamp, "event": event, "sg_message_id": format!("msg-{email}"),
        "sg_event_id": Uuid::new_v4().to_string(), "campaign": "Spring sale",
    });
    e.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    e
}

fn free() -> EmulatorConfig {
    EmulatorConfig { cost: CostModel::free(), ..Default::default() }
}

async fn sendgrid_events_go_on_the_contact_s_timeline_once_however_often_they_are_posted(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let (signing, verification_key) = sendgrid_keys();
    let (id, url) = flow(&world, "sendgrid", json!({"verificationKey": verification_key})).await;
    let ana = create_contact(&world, "Lima", "Ana@Contoso.com").await;
    let bo = create_contact(&world, "Bo", "bo@fabrikam.com").await;

    let t = 1_764_496_800; // 2025-11-30T10:00:00Z
    let day = json!([
        sendgrid_event("ana@contoso.com", "processed", t, json!({})),
        sendgrid_event("ana@contoso.com", "delivered", t + 5, json!({})),
        sendgrid_event("ana@contoso.com", "open", t + 60, json!({})),
        sendgrid_event("ana@contoso.com", "click", t + 90, json!({"url": "https://contoso.com/sale"})),
        // Bo's contact id passed along by the sender, so his event is his whatever the address.
        sendgrid_event("bo.alias@fabrikam.com", "open", t + 30, json!({"dynsync_contact_id": bo.to_string()})),
        // Not an email address: refused alone, the others are taken.
        sendgrid_event("not-an-address", "open", t, json!({})),
    ])
    .to_string();
    let (status, answer) = post(&world, &url, &day, &signed(&signing, "1764500000", &day)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!((answer["accepted"].as_u64(), answer["refused"].as_u64()), (Some(5), Some(1)), "{answer}");
    assert!(answer["problems"][0].as_str().unwrap().contains("event 5"), "{answer}");

    let rows = timeline_of(&world, ana, 4).await;
    let subjects: Vec<&str> = rows.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(
        subjects,
        ["Sent: Spring sale", "Delivered: Spring sale", "Opened: Spring sale", "Clicked: Spring sale"]
    );
    assert!(rows.iter().all(|r| r["activitytypecode"] == "new_emailevent"), "{rows:?}");
    let events = email_events(&world, ana).await;
    let click = events.iter().find(|e| e["new_url"].is_string()).expect("the click has its link");
    assert_eq!(click["new_url"], "https://contoso.com/sale");
    assert_eq!(click["new_email"], "ana@contoso.com");
    assert_eq!(timeline_of(&world, bo, 1).await.len(), 1);

    // SendGrid posts the same day again (a retry), and the day is replayed: nothing is added.
    for _ in 0..2 {
        let (status, answer) = post(&world, &url, &day, &signed(&signing, "1764500100", &day)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let totals = world.settled(&id, 15).await;
    assert_eq!((totals.received, totals.written, totals.failed), (15, 15, 0), "{totals:?}");
    assert_eq!(timeline(&world, ana).await.len(), 4, "a replayed day adds nothing");
    assert_eq!(timeline(&world, bo).await.len(), 1);
    let rejects = world.get(&format!("flows/{id}/rejects")).await.json();
    assert_eq!(rejects["items"].as_array().unwrap().len(), 3, "each body with a bad event is kept: {rejects}");
    world.finish().await;
}

async fn a_post_without_sendgrid_s_signature_or_with_a_wrong_code_is_refused_and_stores_nothing(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let (signing, verification_key) = sendgrid_keys();
    let (id, url) = flow(&world, "sendgrid", json!({"verificationKey": verification_key})).await;
    create_contact(&world, "Lima", "ana@contoso.com").await;
    let body = json!([sendgrid_event("ana@contoso.com", "open", 1_764_496_800, json!({}))]).to_string();

    let (status, answer) = post(&world, &url, &body, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("signature"), "{answer}");
    let mut tampered = signed(&signing, "1764500000", &body);
    tampered[1].1 = "1764500001".into();
    let (status, answer) = post(&world, &url, &body, &tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let other = SigningKey::from_slice(&[7; 32]).unwrap();
    let (status, _) = post(&world, &url, &body, &signed(&other, "1764500000", &body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong_code = format!("{}?code=evs_wrong", url.split('?').next().unwrap());
    let (status, answer) = post(&world, &wrong_code, &body, &signed(&signing, "1764500000", &body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    let flow = world.get(&format!("flows/{id}")).await.json();
    assert_eq!(flow["items"][0]["backlog"]["events"], 0, "{flow}");
    assert_eq!(world.runs(&id).await.len(), 0, "nothing was received");
    world.finish().await;
}

async fn an_event_for_an_unknown_address_is_kept_and_written_by_a_replay_once_the_contact_exists(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let (id, url) = flow(&world, "dynsync", json!({})).await;
    let body = json!({"events": [{
        "messageId": "m-1", "type": "opened", "occurredAt": "2026-11-30T10:00:00Z", "email": "cy@northwind.com",
        "campaign": "Winter"
    }]})
    .to_string();
    let (status, answer) = post(&world, &url, &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let totals = world.settled(&id, 1).await;
    assert_eq!((totals.written, totals.failed), (0, 1), "{totals:?}");
    let runs = world.runs(&id).await;
    assert!(runs[0].to_string().contains("cy@northwind.com"), "the run names the address: {runs:?}");

    let cy = create_contact(&world, "Cy", "cy@northwind.com").await;
    let reply = world.send(Method::POST, &format!("flows/{id}/action?op=retry-failed"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        (reply.json()["retried"].as_u64(), reply.json()["written"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        reply.text
    );
    let rows = timeline(&world, cy).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["subject"], "Opened: Winter");
    world.finish().await;
}

async fn opt_outs_and_re_opt_ins_reach_the_contact_and_follow_up_tasks_are_made(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let follow_up = json!({"optOutColumns": ["donotbulkemail"], "followUp": {"onClick": true, "onHardBounce": true}});
    let (id, url) = flow(&world, "dynsync", follow_up).await;
    let ana = create_contact(&world, "Lima", "ana@contoso.com").await;
    let bo = create_contact(&world, "Bo", "bo@fabrikam.com").await;
    let event = |email: &str, kind: &str, at: &str| json!({"messageId": format!("m-{email}"), "type": kind, "occurredAt": at, "email": email, "url": "https://contoso.com/x"});
    let first = json!({"events": [
        event("ana@contoso.com", "unsubscribed", "2026-11-30T10:00:00Z"),
        event("bo@fabrikam.com", "clicked", "2026-11-30T10:00:00Z"),
        event("bo@fabrikam.com", "hard-bounce", "2026-11-30T10:05:00Z"),
    ]})
    .to_string();
    assert_eq!(post(&world, &url, &first, &[]).await.0, StatusCode::OK);
    world.settled(&id, 3).await;
    assert_eq!(contact_consent(&world, ana).await, (true, false), "an unsubscribe sets donotbulkemail only");
    assert_eq!(contact_consent(&world, bo).await, (true, false), "a hard bounce opts out");
    let tasks = format!("tasks?$select=subject,scheduledend&$filter=_regardingobjectid_value%20eq%20{bo}");
    let page: Json = world.dynamics().execute(&dataverse::Request::get(tasks)).await.unwrap().read_json().unwrap();
    let mut subjects: Vec<String> =
        page["value"].as_array().unwrap().iter().map(|t| t["subject"].as_str().unwrap().to_string()).collect();
    subjects.sort();
    assert_eq!(subjects.len(), 2, "{page}");
    assert!(subjects[0].starts_with("Find a working email address"), "{subjects:?}");
    assert!(subjects[1].starts_with("Follow up: bo@fabrikam.com clicked https://contoso.com/x"), "{subjects:?}");
    let timeline = timeline(&world, bo).await;
    assert!(timeline.iter().any(|a| a["activitytypecode"] == "task"), "tasks are on the timeline too: {timeline:?}");

    // Ana resubscribes later: the opt-out is cleared.
    let later = json!({"events": [event("ana@contoso.com", "resubscribed", "2026-11-30T11:00:00Z")]}).to_string();
    assert_eq!(post(&world, &url, &later, &[]).await.0, StatusCode::OK);
    world.settled(&id, 4).await;
    assert_eq!(contact_consent(&world, ana).await, (false, false), "a re-opt-in travels too");

    // An unsubscribe older than the resubscribe arrives late: it is recorded, not applied — the newest wins.
    let late = json!({"events": [event("ana@contoso.com", "unsubscribed", "2026-11-30T10:30:00Z")]}).to_string();
    assert_eq!(post(&world, &url, &late, &[]).await.0, StatusCode::OK);
    world.settled(&id, 5).await;
    assert_eq!(contact_consent(&world, ana).await, (false, false), "an older opt-out does not undo a newer opt-in");
    let ledger = world.get(&format!("flows/{id}/consent?contactId={ana}")).await.json();
    let changes = ledger["items"].as_array().unwrap();
    let seen: Vec<(String, bool, bool)> = changes
        .iter()
        .map(|c| {
            (
                c["occurredAt"].as_str().unwrap().to_string(),
                c["optedOut"].as_bool().unwrap(),
                c["applied"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("2026-11-30T11:00:00Z".to_string(), false, true),
            ("2026-11-30T10:30:00Z".to_string(), true, false),
            ("2026-11-30T10:00:00Z".to_string(), true, true),
        ],
        "{ledger}"
    );
    assert!(changes.iter().all(|c| c["side"] == "marketing" && c["source"] == "dynsync"), "{ledger}");
    world.finish().await;
}

async fn a_person_s_consent_change_in_dynamics_is_not_undone_by_an_older_event(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let (id, url) = flow(&world, "dynsync", json!({"optOutColumns": ["donotbulkemail"]})).await;
    let ana = create_contact(&world, "Lima", "ana@contoso.com").await;
    let event = |kind: &str, at: String| json!({"messageId": "m-ana", "type": kind, "occurredAt": at, "email": "ana@contoso.com"});
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let body = json!({"events": [event("unsubscribed", an_hour_ago.clone())]}).to_string();
    assert_eq!(post(&world, &url, &body, &[]).await.0, StatusCode::OK);
    world.settled(&id, 1).await;
    assert_eq!(contact_consent(&world, ana).await, (true, false));

    // A person opts Ana back in, in Dynamics; then a spam complaint from before that arrives, late.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = world
        .dynamics()
        .send(Method::PATCH, &format!("contacts({ana})"), Some(&json!({"donotbulkemail": false})))
        .await
        .unwrap();
    assert!(reply.status().is_success());
    let half_an_hour_ago = (chrono::Utc::now() - chrono::Duration::minutes(30)).to_rfc3339();
    let body = json!({"events": [event("spam-complaint", half_an_hour_ago)]}).to_string();
    assert_eq!(post(&world, &url, &body, &[]).await.0, StatusCode::OK);
    world.settled(&id, 2).await;
    assert_eq!(contact_consent(&world, ana).await, (false, false), "the person's newer opt-in stands");

    // An unsubscribe after the person's change wins.
    let body =
        json!({"events": [event("unsubscribed", (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339())]})
            .to_string();
    assert_eq!(post(&world, &url, &body, &[]).await.0, StatusCode::OK);
    world.settled(&id, 3).await;
    assert_eq!(contact_consent(&world, ana).await, (true, false), "a newer opt-out wins over the person's opt-in");
    let ledger = world.get(&format!("flows/{id}/consent?contactId={ana}")).await.json();
    let sides: Vec<(String, bool, bool)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (c["side"].as_str().unwrap().to_string(), c["optedOut"].as_bool().unwrap(), c["applied"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        sides,
        [
            ("marketing".to_string(), true, true),
            ("dynamics".to_string(), false, true),
            ("marketing".to_string(), true, false),
            ("marketing".to_string(), true, true),
        ],
        "newest first: the late complaint lost to the person's change: {ledger}"
    );
    world.finish().await;
}

async fn with_journeys_an_opt_out_is_also_the_address_s_commercial_consent_row(backend: Backend) {
    let Some(world) = installed(backend, EmulatorConfig { journeys: true, ..free() }).await else { return };
    let (id, url) = flow(&world, "dynsync", json!({"optOutColumns": ["donotbulkemail"]})).await;
    create_contact(&world, "Lima", "ana@contoso.com").await;
    create_contact(&world, "Bo", "bo@fabrikam.com").await;
    let commercial = dataverse_emulator::schema::journeys::purpose_id("Commercial");
    // Journeys already holds Bo's consent (Opted In), under an id of its own.
    let journeys_row = Uuid::new_v4();
    let reply = world
        .dynamics()
        .send(
            Method::PATCH,
            &format!("msdynmkt_contactpointconsent4s({journeys_row})"),
            Some(&json!({"msdynmkt_contactpointvalue": "bo@fabrikam.com", "msdynmkt_contactpointtype": 534_120_000,
                         "msdynmkt_value": 534_120_001, "msdynmkt_source": 534_120_000, "msdynmkt_logicalreason": 534_119_999,
                         "msdynmkt_purposeId@odata.bind": format!("/msdynmkt_purposes({commercial})")})),
        )
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{}", reply.text().await.unwrap());
    let event = |email: &str, kind: &str, at: &str| json!({"messageId": format!("m-{email}"), "type": kind, "occurredAt": at, "email": email});
    let body = json!({"events": [
        event("ana@contoso.com", "unsubscribed", "2026-11-30T10:00:00Z"),
        event("bo@fabrikam.com", "spam-complaint", "2026-11-30T10:00:00Z"),
    ]})
    .to_string();
    assert_eq!(post(&world, &url, &body, &[]).await.0, StatusCode::OK);
    world.settled(&id, 2).await;
    let rows = || async {
        let page: Json = world
            .dynamics()
            .execute(&dataverse::Request::get(
                "msdynmkt_contactpointconsent4s?$select=msdynmkt_contactpointconsent4id,msdynmkt_contactpointvalue,msdynmkt_value,msdynmkt_source,msdynmkt_reason,_msdynmkt_purposeid_value",
            ))
            .await
            .unwrap()
            .read_json()
            .unwrap();
        page["value"].as_array().unwrap().clone()
    };
    let consent = rows().await;
    assert_eq!(consent.len(), 2, "one row per address: {consent:?}");
    let of =
        |rows: &[Json], email: &str| rows.iter().find(|r| r["msdynmkt_contactpointvalue"] == email).cloned().unwrap();
    let ana = of(&consent, "ana@contoso.com");
    assert_eq!(ana["msdynmkt_value"], 534_120_002, "Opted Out: {ana}");
    assert_eq!(ana["msdynmkt_source"], 534_120_007, "an unsubscribe is the list-unsubscribe source: {ana}");
    assert_eq!(ana["_msdynmkt_purposeid_value"], commercial.to_string());
    let bo = of(&consent, "bo@fabrikam.com");
    assert_eq!(bo["msdynmkt_contactpointconsent4id"], journeys_row.to_string(), "Journeys' own row is updated: {bo}");
    assert_eq!(bo["msdynmkt_value"], 534_120_002);
    assert!(bo["msdynmkt_reason"].as_str().unwrap().contains("complaint"), "{bo}");

    // Ana resubscribes: her row says Opted In again; still one row.
    let body = json!({"events": [event("ana@contoso.com", "resubscribed", "2026-11-30T11:00:00Z")]}).to_string();
    assert_eq!(post(&world, &url, &body, &[]).await.0, StatusCode::OK);
    world.settled(&id, 3).await;
    let consent = rows().await;
    assert_eq!(consent.len(), 2, "{consent:?}");
    assert_eq!(of(&consent, "ana@contoso.com")["msdynmkt_value"], 534_120_001, "Opted In");
    world.finish().await;
}

async fn events_accepted_while_dynamics_is_down_are_written_once_it_is_back(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let (id, url) = flow(&world, "dynsync", json!({})).await;
    let ana = create_contact(&world, "Lima", "ana@contoso.com").await;
    // Dynamics answers 503 to everything, and its sign-in is out, for a few seconds.
    world.emulator.faults.inject(FaultPlan {
        seed: 7,
        rules: vec![
            FaultRule {
                fault: Fault::Unavailable,
                when: When::Window { after: Duration::ZERO, lasting: Duration::from_secs(3) },
            },
            FaultRule {
                fault: Fault::TokenOutage,
                when: When::Window { after: Duration::ZERO, lasting: Duration::from_secs(3) },
            },
        ],
    });
    let body = json!({"events": (0..20).map(|i| json!({
        "messageId": format!("m-{i}"), "type": "delivered", "occurredAt": "2026-11-30T10:00:00Z", "email": "ana@contoso.com"
    })).collect::<Vec<_>>()})
    .to_string();
    let (status, answer) = post(&world, &url, &body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let totals = world.settled(&id, 20).await;
    assert_eq!((totals.written, totals.failed), (20, 0), "{totals:?}");
    assert_eq!(timeline(&world, ana).await.len(), 20);
    world.finish().await;
}

async fn a_flow_is_refused_until_the_email_event_table_is_installed(backend: Backend) {
    let Some(world) = World::start_with(backend, free()).await else { return };
    let (_, target) = world.destination("new").await;
    let body = json!({
        "name": "Newsletter events",
        "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC},
        "targetConnectionIds": [target],
        "provider": "sendgrid",
        "optOutColumns": ["donotmail"],
    });
    let reply = world.post("flows", body.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let problems = reply.json()["report"]["problems"].to_string();
    assert!(problems.contains("optOutColumns[0]") && problems.contains("donotemail"), "{problems}");
    assert!(problems.contains("dynsync engagement install"), "{problems}");

    install(&world.dynamics(), &EngagementTables::new("new".parse().unwrap())).await.unwrap();
    let mut fixed = body;
    fixed["optOutColumns"] = json!(["donotemail"]);
    let reply = world.post("flows", fixed).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    world.finish().await;
}

/// A Mailgun webhook body for `recipient`, signed with `key` at `timestamp`.
fn mailgun_body(key: &str, timestamp: i64, event: &str, recipient: &str) -> String {
    use hmac::{Hmac, Mac};
    let token = Uuid::new_v4().simple().to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "signature": {"timestamp": timestamp.to_string(), "token": token, "signature": signature},
        "event-data": {
            "event": event, "timestamp": timestamp as f64 + 0.25, "id": Uuid::new_v4().to_string(), "recipient": recipient,
            "message": {"headers": {"message-id": "20261130.1@mg.contoso.com", "subject": "Winter sale"}},
            "user-variables": {"campaign": "Winter"},
        }
    })
    .to_string()
}

async fn a_mailgun_post_is_taken_only_with_mailgun_s_signature_and_its_key_is_never_shown(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    let (id, url) = flow(&world, "mailgun", json!({"signingKey": key})).await;
    let ana = create_contact(&world, "Lima", "ana@contoso.com").await;
    let now = chrono::Utc::now().timestamp();

    let forged = mailgun_body("not-the-key", now, "opened", "ana@contoso.com");
    let (status, answer) = post(&world, &url, &forged, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let replayed = mailgun_body(key, now - 3600, "opened", "ana@contoso.com");
    let (status, answer) = post(&world, &url, &replayed, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an hour-old signature is a replay: {answer}");
    assert!(answer["detail"].as_str().unwrap().contains("old"), "{answer}");

    let signed = mailgun_body(key, now, "opened", "ana@contoso.com");
    let (status, answer) = post(&world, &url, &signed, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let rows = timeline_of(&world, ana, 1).await;
    assert_eq!(rows[0]["subject"], "Opened: Winter sale");

    let shown = world.get(&format!("flows/{id}")).await;
    assert!(!shown.text.contains("3ax6xnjp"), "the key is never shown: {}", shown.text);
    assert!(shown.json()["items"][0]["signingKey"].as_str().unwrap().contains("stored"), "{}", shown.text);
    world.finish().await;
}

/// An RSA key and a self-signed certificate of it, standing for Amazon SNS's signing certificate.
struct SnsKey {
    pkcs8: Vec<u8>,
    certificate_pem: String,
}

/// RSA keys take a moment to make in a debug build: two for this binary.
static SNS_KEY: LazyLock<SnsKey> = LazyLock::new(SnsKey::generate);
static STRANGER_KEY: LazyLock<SnsKey> = LazyLock::new(SnsKey::generate);

const SNS_CERT_URL: &str =
    "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem";

impl SnsKey {
    fn generate() -> SnsKey {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let key = aws_lc_rs::signature::RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<Pkcs8V1Der>::as_der(&key).unwrap().as_ref().to_vec();
        let signer = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["sns.eu-west-1.amazonaws.com".to_string()]).unwrap();
        SnsKey { certificate_pem: params.self_signed(&signer).unwrap().pem(), pkcs8 }
    }

    /// `text` signed as SNS signs with `version` ("1": SHA-1, else SHA-256), in base64. aws-lc-rs signs with SHA-2
    /// only, so SHA-1 is made from the key's numbers: EMSA-PKCS1-v1_5 (RFC 8017, 9.2), then the private operation.
    fn sign(&self, version: &str, text: &str) -> String {
        use num_bigint::BigUint;
        let signature = if version == "1" {
            const SHA1_DIGEST_INFO: [u8; 15] =
                [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];
            // PrivateKeyInfo { version, algorithm, OCTET STRING { RSAPrivateKey { version, n, e, d, … } } }
            fn element(input: &[u8]) -> (&[u8], &[u8]) {
                let (length, start) = match input[1] {
                    short if short < 0x80 => (short as usize, 2),
                    long => {
                        let count = (long & 0x7f) as usize;
                        (input[2..2 + count].iter().fold(0, |length, &b| length << 8 | b as usize), 2 + count)
                    }
                };
                (&input[start..start + length], &input[start + length..])
            }
            let (info, _) = element(&self.pkcs8);
            let (_, rest) = element(info);
            let (_, rest) = element(rest);
            let (octets, _) = element(rest);
            let (key, _) = element(octets);
            let (_, rest) = element(key);
            let (n, rest) = element(rest);
            let (_, rest) = element(rest);
            let (d, _) = element(rest);
            let (n, d) = (BigUint::from_bytes_be(n), BigUint::from_bytes_be(d));
            let size = n.bits().div_ceil(8) as usize;
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
            let t = [&SHA1_DIGEST_INFO[..], digest.as_ref()].concat();
            let mut encoded = vec![0xff; size];
            encoded[0] = 0;
            encoded[1] = 1;
            encoded[size - t.len() - 1] = 0;
            encoded[size - t.len()..].copy_from_slice(&t);
            let s = BigUint::from_bytes_be(&encoded).modpow(&d, &n).to_bytes_be();
            [vec![0; size - s.len()], s].concat()
        } else {
            let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&self.pkcs8).unwrap();
            let mut signature = vec![0; key.public_modulus_len()];
            let rng = aws_lc_rs::rand::SystemRandom::new();
            key.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, text.as_bytes(), &mut signature).unwrap();
            signature
        };
        BASE64.encode(signature)
    }

    /// An SNS message of `fields`, signed with `version` as AWS documents: the signed keys in byte order, each as
    /// `Key\nValue\n` — a notification's Subject only when it has one.
    fn signed(&self, fields: Json, version: &str) -> Json {
        let keys: &[&str] = match fields["Type"].as_str().unwrap() {
            "Notification" => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
            _ => &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"],
        };
        let text: String =
            keys.iter().filter_map(|key| fields[*key].as_str().map(|value| format!("{key}\n{value}\n"))).collect();
        let mut message = fields;
        message["SignatureVersion"] = json!(version);
        message["Signature"] = json!(self.sign(version, &text));
        message["SigningCertURL"] = json!(SNS_CERT_URL);
        message
    }
}

const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:ses-events";

/// An SES event of `event_type` for `email`, about the "Winter sale" message, with its own part.
fn ses_event(event_type: &str, email: &str, part: (&str, Json)) -> Json {
    let mut event = json!({
        "eventType": event_type,
        "mail": {
            "timestamp": "2026-11-30T10:00:00.000Z", "source": "news@contoso.com",
            "messageId": "0102019a-ses-winter-sale", "destination": [email],
            "commonHeaders": {"subject": "Winter sale"}, "tags": {"campaign": ["Winter"]}
        }
    });
    event[part.0] = part.1;
    event
}

/// An SNS notification carrying `event`, unsigned.
fn sns_notification(event: &Json) -> Json {
    json!({
        "Type": "Notification",
        "MessageId": Uuid::new_v4().to_string(),
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": event.to_string(),
        "Timestamp": "2026-11-30T10:05:00.123Z",
        "UnsubscribeURL": format!("https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={TOPIC}:1"),
    })
}

fn sns_confirmation(message_type: &str) -> Json {
    json!({
        "Type": message_type,
        "MessageId": Uuid::new_v4().to_string(),
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad",
        "TopicArn": TOPIC,
        "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
        "SubscribeURL": format!("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37"),
        "Timestamp": "2026-11-30T09:00:00.000Z",
    })
}

async fn an_ses_event_through_sns_is_taken_only_with_a_valid_sns_signature(backend: Backend) {
    let Some(world) = installed(backend, free()).await else { return };
    let pinned = json!({"snsCertificates": [SNS_KEY.certificate_pem]});
    let (id, url) = flow(&world, "ses", pinned).await;
    let ana = create_contact(&world, "Lima", "ana@contoso.com").await;
    let delivery = ses_event(
        "Delivery",
        "ana@contoso.com",
        ("delivery", json!({"timestamp": "2026-11-30T10:00:05.000Z", "recipients": ["ana@contoso.com"]})),
    );
    let good = SNS_KEY.signed(sns_notification(&delivery), "1");
    let refused = |message: &Json, expected: &str| {
        let (world, url, message, expected) = (&world, &url, message.to_string(), expected.to_string());
        async move {
            let (status, answer) = post(world, url, &message, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{message}: {answer}");
            assert_eq!(answer["type"], "dynsync:unauthorized", "{answer}");
            let detail = answer["detail"].as_str().unwrap();
            assert!(detail.contains(&expected), "'{expected}' is said: {detail}");
        }
    };

    // Anything changed on the way, or signed otherwise, is refused, and nothing is kept.
    let mut tampered = good.clone();
    let open = ses_event("Open", "ana@contoso.com", ("open", json!({"timestamp": "2026-11-30T10:09:00.000Z"})));
    tampered["Message"] = json!(open.to_string());
    refused(&tampered, "matches none of the 1 certificates pinned on the flow").await;
    let mut version = good.clone();
    version["SignatureVersion"] = json!("3");
    refused(&version, "set the topic's SignatureVersion attribute to 1 or 2").await;
    let mut elsewhere = good.clone();
    elsewhere["SigningCertURL"] = json!("https://certs.example.com/SimpleNotificationService-1.pem");
    refused(&elsewhere, "is not an Amazon SNS certificate address").await;
    let mut unsigned = good.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    refused(&unsigned, "has no `Signature`").await;
    refused(&STRANGER_KEY.signed(sns_notification(&delivery), "1"), "pin the one at https://sns.eu-west-1").await;
    let shown = world.get(&format!("flows/{id}")).await.json();
    assert_eq!(shown["items"][0]["backlog"]["events"], 0, "{shown}");
    assert_eq!(shown["items"][0]["rejected"], 0, "a refused post is not kept: {shown}");

    // Signed by SNS, with SHA-1 (version 1) or SHA-256 (version 2): taken, and on Ana's timeline.
    let (status, answer) = post(&world, &url, &good.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let opened = SNS_KEY.signed(sns_notification(&open), "2");
    let (status, answer) = post(&world, &url, &opened.to_string(), &[]).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{answer}");
    let rows = timeline_of(&world, ana, 2).await;
    let subjects: Vec<&str> = rows.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["Delivered: Winter sale", "Opened: Winter sale"]);
    let mut no_subject = sns_notification(&open);
    no_subject.as_object_mut().unwrap().remove("Subject");
    let (status, answer) = post(&world, &url, &SNS_KEY.signed(no_subject, "1").to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK, "a notification without a subject is signed without one: {answer}");

    // SNS raw message delivery carries no signature: the SES event itself is taken on the URL's code alone.
    let click = ses_event(
        "Click",
        "ana@contoso.com",
        ("click", json!({"timestamp": "2026-11-30T10:10:00.000Z", "link": "https://contoso.com/sale"})),
    );
    let (status, answer) = post(&world, &url, &click.to_string(), &[]).await;
    assert_eq!((status, answer["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{answer}");
    let wrong_code = format!("{}?code=evs_wrong", url.split('?').next().unwrap());
    let (status, _) = post(&world, &wrong_code, &click.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "not without the code");
    assert_eq!(timeline_of(&world, ana, 3).await.len(), 3);

    // The subscription's confirmation is answered only when SNS signed it.
    let confirmation = SNS_KEY.signed(sns_confirmation("SubscriptionConfirmation"), "1");
    let (status, answer) = post(&world, &url, &confirmation.to_string(), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("confirmation-needed")), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("Action=ConfirmSubscription"), "{answer}");
    let mut forged = confirmation.clone();
    forged["SubscribeURL"] = json!("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=other");
    refused(&forged, "matches none of the 1 certificates").await;
    refused(&STRANGER_KEY.signed(sns_confirmation("SubscriptionConfirmation"), "2"), "matches none").await;
    let ended = SNS_KEY.signed(sns_confirmation("UnsubscribeConfirmation"), "2");
    let (status, answer) = post(&world, &url, &ended.to_string(), &[]).await;
    assert_eq!((status, answer["status"].as_str()), (StatusCode::OK, Some("unsubscribed")), "{answer}");

    let totals = world.settled(&id, 4).await;
    assert_eq!((totals.received, totals.written, totals.failed), (4, 4, 0), "{totals:?}");
    let shown = world.get(&format!("flows/{id}")).await.json();
    let certificates = &shown["items"][0]["snsCertificates"];
    assert_eq!(certificates[0].as_str(), Some(SNS_KEY.certificate_pem.trim()), "public, so shown: {shown}");

    // Without pinned certificates, a certificate address that is not Amazon SNS's is refused before any fetch.
    let (_, fetching) = flow(&world, "ses", json!({})).await;
    let mut elsewhere = SNS_KEY.signed(sns_notification(&delivery), "1");
    elsewhere["SigningCertURL"] = json!("https://127.0.0.1:1/SimpleNotificationService-1.pem");
    let (status, answer) = post(&world, &fetching, &elsewhere.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("the certificate is not fetched"), "{answer}");
    world.finish().await;
}

async fn an_ses_flow_whose_pinned_sns_certificate_is_not_one_is_refused_naming_its_place(backend: Backend) {
    let Some(world) = World::start_with(backend, free()).await else { return };
    let (_, target) = world.destination("new").await;
    let body = json!({
        "name": "SES events",
        "flowSpec": {"id": dynsync::specs::ENGAGEMENT_EVENTS_FLOW_SPEC},
        "targetConnectionIds": [target],
        "provider": "ses",
        "snsCertificates": [SNS_KEY.certificate_pem, "MIIC…pasted without its lines", SNS_KEY.certificate_pem.replace("CERTIFICATE", "RSA PUBLIC KEY")],
    });
    let reply = world.post("flows", body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let problems = reply.json()["report"]["problems"].as_array().unwrap().clone();
    let fields: Vec<&str> = problems.iter().map(|p| p["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["snsCertificates[1]", "snsCertificates[2]"], "{}", reply.text);
    assert!(problems[0]["message"].as_str().unwrap().contains("-----BEGIN CERTIFICATE-----"), "{}", reply.text);
    assert!(problems[1]["message"].as_str().unwrap().contains("not a CERTIFICATE"), "{}", reply.text);
    assert_eq!(world.get("flows").await.json()["items"].as_array().map(Vec::len), Some(0), "no flow was made");
    world.finish().await;
}
