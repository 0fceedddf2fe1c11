//! Records out to the marketing side (seed 001), end to end: a flow reads Dynamics contacts through the change
//! feed and sends them to a webhook — a real HTTP receiver on loopback that checks every signature — and to a
//! PostgreSQL table, with replacements, And/Or filters, records that stop passing deleted, columns whose updates are
//! not applied, a replay, and a receiver that is down for a while.

mod common;

use common::{Backend, PgDatabase, World, dataset_target, row, rows_when, source_connection, source_of};
use dynsync::dataset::webhook::DeliveredRecord;
use dynsync::demo::receiver::WebhookReceiver;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

const SECRET: &str = "whsec-records-out-test-0001";

/// Every record the receiver took, in the order taken.
fn records(receiver: &WebhookReceiver) -> Vec<DeliveredRecord> {
    receiver.received.records().into_iter().map(|(_, r)| r).collect()
}

/// The records taken once `ready` says they are what the test waits for.
async fn records_when(
    receiver: &WebhookReceiver,
    what: &str,
    ready: impl Fn(&[DeliveredRecord]) -> bool,
) -> Vec<DeliveredRecord> {
    let plain = |r: &[(Instant, DeliveredRecord)]| r.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
    match receiver.records_when(Duration::from_secs(60), |r| ready(&plain(r))).await {
        Some(found) => plain(&found),
        None => panic!("{what}: the webhook has not received it: {:#?}", records(receiver)),
    }
}

/// The last record delivered of `id`.
fn last(records: &[DeliveredRecord], id: Uuid) -> Option<&DeliveredRecord> {
    records.iter().rev().find(|r| r.id == id)
}

async fn create_contact(world: &World, body: Json) -> Uuid {
    let reply = world.dynamics().send(Method::POST, "contacts", Some(&body)).await.unwrap();
    let location = reply.headers()["odata-entityid"].to_str().unwrap().to_string();
    location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap()
}

async fn change(world: &World, id: Uuid, body: Json) {
    let reply = world.dynamics().send(Method::PATCH, &format!("contacts({id})"), Some(&body)).await.unwrap();
    assert!(reply.status().is_success(), "{}", reply.text().await.unwrap());
}

/// A records-out flow of the contact table to `target`, continuous; its id.
async fn records_out(world: &World, connection: &str, target: &str, transformations: Json) -> String {
    let source = source_of(world, connection, "contact").await;
    let reply = world
        .post(
            "flows",
            json!({
                "name": "Contacts to the marketing side",
                "flowSpec": {"id": dynsync::specs::INGESTION_FLOW_SPEC, "version": "1.0"},
                "sourceConnectionIds": [source],
                "targetConnectionIds": [target],
                "transformations": transformations,
                "scheduleParams": {"frequency": "continuous", "interval": 1}
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_string()
}

fn webhook_params(dataset: &str, receiver: &WebhookReceiver) -> Json {
    json!({"dataSetId": dataset, "format": "webhook", "url": receiver.url, "signingSecret": SECRET})
}

async fn records_go_out_replaced_and_filtered_and_a_record_that_stops_passing_is_deleted(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let receiver = WebhookReceiver::start(SECRET).await.unwrap();
    let buyer = create_contact(
        &world,
        json!({"firstname": "Ana", "emailaddress1": "ana@fabrikam.com", "jobtitle": "Buyer", "gendercode": 2}),
    )
    .await;
    let contoso = create_contact(
        &world,
        json!({"firstname": "Ben", "emailaddress1": "ben@CONTOSO.com", "jobtitle": "Engineer", "gendercode": 1}),
    )
    .await;
    let neither = create_contact(&world, json!({"firstname": "Cy", "emailaddress1": "cy@fabrikam.com"})).await;
    let opted_out = create_contact(
        &world,
        json!({"firstname": "Di", "emailaddress1": "di@contoso.com", "donotbulkemail": true, "gendercode": 2}),
    )
    .await;
    let connection = source_connection(&world).await;
    let target = dataset_target(&world, webhook_params("contacts_out", &receiver)).await;
    // The target answers without its secret; a URL with a password in it, a short secret or plain http to a host
    // the operator does not allow are refused, each saying so.
    let shown = world.get(&format!("targetConnections/{target}")).await;
    assert!(!shown.text.contains(SECRET), "{}", shown.text);
    let params = json!({"dataSetId": "x", "format": "webhook", "url": "http://user:pw@marketing.example.com/hook", "signingSecret": "short"});
    let body =
        json!({"name": "Bad", "params": params, "connectionSpec": {"id": dynsync::specs::DATA_LAKE.to_string()}});
    let refused = world.post("targetConnections", body).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    for part in ["user name or password", "signingSecret is 5 characters"] {
        assert!(refused.text.contains(part), "{part}: {}", refused.text);
    }
    assert!(!refused.text.contains("pw@"), "{}", refused.text);
    let transformations = json!([
        {"name": "Copy", "params": {}},
        {"name": "Mapping", "params": {"mappings": [
            {"sourceAttribute": "emailaddress1", "destination": "email"},
            {"sourceAttribute": "firstname"},
            {"sourceAttribute": "jobtitle"},
            {"sourceAttribute": "gendercode", "destination": "gender"},
            {"sourceAttribute": "donotbulkemail"}
        ]}},
        {"name": "Replace", "params": {"replacements": [
            {"column": "jobtitle", "value": "Buyer", "newValue": "Purchasing"},
            {"column": "gender", "value": 2, "newValue": 1}
        ]}},
        {"name": "Filter", "params": {"operator": "and", "deleteFilteredOut": true, "conditions": [
            {"column": "donotbulkemail", "operator": "eq", "value": false},
            {"operator": "or", "conditions": [
                {"column": "email", "operator": "endsWith", "value": "@contoso.com"},
                {"column": "jobtitle", "operator": "eq", "value": "buyer"}
            ]}
        ]}}
    ]);
    let flow = records_out(&world, &connection, &target, transformations).await;
    let records =
        records_when(&receiver, "the full load", |r| last(r, buyer).is_some() && last(r, contoso).is_some()).await;
    assert!(last(&records, neither).is_none() && last(&records, opted_out).is_none(), "{records:#?}");
    let ana = last(&records, buyer).unwrap();
    assert_eq!(ana.values["jobtitle"], "Purchasing", "a replacement swaps the value: {ana:?}");
    assert_eq!((&ana.values["gender"], &ana.values["gender_label"]), (&json!(1), &json!("Male")), "{ana:?}");
    assert_eq!(ana.operation, dynsync::dataset::Operation::Read);

    // Ben leaves contoso: he no longer passes and is deleted. Di opts in again: she passes now. Ana is deleted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    change(&world, contoso, json!({"emailaddress1": "ben@other.example"})).await;
    change(&world, opted_out, json!({"donotbulkemail": false})).await;
    world.dynamics().send(Method::DELETE, &format!("contacts({buyer})"), None).await.unwrap();
    let records = records_when(&receiver, "the changes", |r| {
        last(r, contoso).is_some_and(|b| b.deleted)
            && last(r, opted_out).is_some()
            && last(r, buyer).is_some_and(|a| a.deleted)
    })
    .await;
    let di = last(&records, opted_out).unwrap();
    assert_eq!((&di.values["donotbulkemail"], &di.values["gender"]), (&json!(false), &json!(1)), "{di:?}");
    assert!(last(&records, neither).is_none());
    assert_eq!(receiver.received.bad_signatures.load(Ordering::SeqCst), 0);

    // The dataset's quick look shows what the webhook was sent; the runs count the records left out.
    let rows = rows_when(&world, &target, "the delivered rows", |rows| rows.len() == 3).await;
    assert_eq!(row(&rows, contoso)["deleted"], true, "{rows:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = world.runs(&flow).await;
        let left_out: u64 =
            runs.iter().map(|r| r["metrics"]["recordSummary"]["skippedRecordCount"].as_u64().unwrap_or(0)).sum();
        let grouped = runs
            .iter()
            .flat_map(|r| r["outcomes"].as_array().cloned().unwrap_or_default())
            .any(|o| o["outcome"] == "excluded" && o["code"] == "filtered-out");
        if left_out >= 2 && grouped {
            break;
        }
        assert!(Instant::now() < deadline, "the runs count the records filtered out: {runs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.finish().await;
}

async fn a_column_whose_updates_are_not_applied_keeps_its_first_value_until_a_replay(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let receiver = WebhookReceiver::start(SECRET).await.unwrap();
    let database = PgDatabase::create().await;
    let ana = create_contact(&world, json!({"firstname": "Ana", "emailaddress1": "ana@contoso.com"})).await;
    // Dynamics keeps times to the second: a record made in the second its flow's first load starts reads as made
    // after that load, and its next change as a creation. This one is made a second before.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let connection = source_connection(&world).await;
    let transformations = json!([
        {"name": "Copy", "params": {}},
        {"name": "Mapping", "params": {"mappings": [
            {"sourceAttribute": "firstname"},
            {"sourceAttribute": "emailaddress1", "destination": "email", "applyUpdates": false}
        ]}}
    ]);
    // A dataset of files keeps every version: it cannot keep a first value, and says so.
    let files = dataset_target(&world, json!({"dataSetId": "contacts_files"})).await;
    let source = source_of(&world, &connection, "contact").await;
    let reply = world
        .post(
            "flows",
            json!({"name": "x", "flowSpec": {"id": dynsync::specs::INGESTION_FLOW_SPEC}, "sourceConnectionIds": [source],
                   "targetConnectionIds": [files], "transformations": transformations,
                   "scheduleParams": {"frequency": "continuous"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("transformations[1].params.mappings[1].applyUpdates"), "{}", reply.text);

    let hook = dataset_target(&world, webhook_params("contacts_hook", &receiver)).await;
    let mut flows = vec![records_out(&world, &connection, &hook, transformations.clone()).await];
    let table = match &database {
        Some(database) => {
            let params = json!({"dataSetId": "contacts_kept", "format": "postgres", "connectionString": database.url});
            let target = dataset_target(&world, params).await;
            flows.push(records_out(&world, &connection, &target, transformations.clone()).await);
            Some(target)
        }
        None => None,
    };
    records_when(&receiver, "the first load", |r| last(r, ana).is_some()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    change(&world, ana, json!({"firstname": "Anna", "emailaddress1": "anna@contoso.com"})).await;
    let records = records_when(&receiver, "the update", |r| {
        last(r, ana).is_some_and(|a| a.values.get("firstname") == Some(&json!("Anna")))
    })
    .await;
    let update = last(&records, ana).unwrap();
    assert_eq!(update.operation, dynsync::dataset::Operation::Update);
    assert!(!update.values.contains_key("email"), "an update leaves out a column it does not apply: {update:?}");
    if let Some(table) = &table {
        let rows =
            rows_when(&world, table, "the update", |rows| rows.iter().any(|r| r["values"]["firstname"] == "Anna"))
                .await;
        assert_eq!(row(&rows, ana)["values"]["email"], "ana@contoso.com", "the table keeps the first value");
    }

    // A replay sends every record whole again: the kept column takes Dynamics' value.
    for flow in &flows {
        let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=replay"), None).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    }
    let records = records_when(&receiver, "the replay", |r| {
        last(r, ana).is_some_and(|a| a.values.get("email") == Some(&json!("anna@contoso.com")))
    })
    .await;
    assert_eq!(last(&records, ana).unwrap().operation, dynsync::dataset::Operation::Read);
    if let Some(table) = &table {
        rows_when(&world, table, "the replay", |rows| rows.iter().any(|r| r["values"]["email"] == "anna@contoso.com"))
            .await;
    }
    if let Some(database) = database {
        database.drop_database().await;
    }
    world.finish().await;
}

async fn a_webhook_down_for_a_while_gets_every_change_in_order_per_record(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let receiver = WebhookReceiver::start(SECRET).await.unwrap();
    receiver.received.down.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create_contact(&world, json!({"firstname": format!("P{i}"), "jobtitle": "v0"})).await);
    }
    let connection = source_connection(&world).await;
    let target = dataset_target(&world, webhook_params("contacts_down", &receiver)).await;
    let transformations = json!([
        {"name": "Copy", "params": {}},
        {"name": "Mapping", "params": {"mappings": [{"sourceAttribute": "firstname"}, {"sourceAttribute": "jobtitle"}]}}
    ]);
    records_out(&world, &connection, &target, transformations).await;
    for v in 1..=5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        for id in &ids {
            change(&world, *id, json!({"jobtitle": format!("v{v}")})).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received.attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "dynsync tries the webhook while it is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(records(&receiver).is_empty(), "nothing is taken while the receiver is down");
    receiver.received.down.store(false, Ordering::SeqCst);
    let records = records_when(&receiver, "every change", |r| {
        ids.iter().all(|id| last(r, *id).is_some_and(|p| p.values["jobtitle"] == "v5"))
    })
    .await;
    for id in &ids {
        let versions: Vec<i64> = records.iter().filter(|r| r.id == *id).filter_map(|r| r.version).collect();
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "in order per record: {versions:?}");
    }
    assert!(receiver.received.attempts.load(Ordering::SeqCst) > receiver.received.deliveries());
    world.finish().await;
}

on_both_stores!(
    records_go_out_replaced_and_filtered_and_a_record_that_stops_passing_is_deleted,
    a_column_whose_updates_are_not_applied_keeps_its_first_value_until_a_replay,
    a_webhook_down_for_a_while_gets_every_change_in_order_per_record,
);
