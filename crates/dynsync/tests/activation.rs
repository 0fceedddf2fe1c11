//! Audience activation end to end, against the emulator: profiles streamed in, contacts updated in Dynamics,
//! every identity's outcome in the flow's runs, and failed contacts replayed once their cause is fixed.

mod common;

use common::{Backend, Totals, World, profile, read_contact};
use dataverse_emulator::{CostModel, EmulatorConfig, FaultPlan, Limits};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::Duration;
use uuid::Uuid;

/// The loyalty flow over a new destination, with the birth date mapped too; its id.
async fn loyalty_flow(world: &World) -> String {
    let (_, target) = world.loyalty_destination().await;
    world.loyalty_flow(&target, "Loyalty audiences", &[("person.birthDate", "birthdate")]).await
}

async fn profiles_reach_their_contacts(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let ann = world.create_contact("Ann").await;
    let bob = world.create_contact("Bob").await;
    let absent = Uuid::new_v4();
    let messages = vec![
        profile(&ann.to_string(), Some("Ann"), &[("seg-gold", "realized")]),
        profile(&bob.to_string(), Some("Bob"), &[("seg-gold", "realized"), ("seg-silver", "realized")]),
        // Bob leaves gold: the later update of the same contact wins.
        profile(&bob.to_string(), None, &[("seg-gold", "exited")]),
        json!({"body": {"xdmEntity": {"segmentMembership": {"ups": {"seg-gold": {"status": "realized"}}}}}}),
        profile("not-a-guid", Some("Nobody"), &[("seg-gold", "realized")]),
        profile(&Uuid::new_v4().to_string(), Some("Elsewhere"), &[("seg-other", "realized")]),
        profile(&absent.to_string(), Some("Absent"), &[("seg-silver", "existing")]),
        json!(["not", "a", "profile"]),
    ];
    let receipt = world.stream(&flow, messages).await;
    assert_eq!(receipt["accepted"], 7);
    let refused = &receipt["responses"][7];
    assert_eq!(refused["index"], 7);
    assert!(refused["message"].as_str().unwrap().contains("not a JSON object"), "{refused}");

    let runs = world.settled_runs(&flow, 7).await;
    let run = &runs[0];
    let summary = &run["metrics"]["recordSummary"];
    assert_eq!(summary["inputRecordCount"], 7);
    assert_eq!(summary["outputRecordCount"], 3, "Ann's profile and Bob's two, each with one outcome: {run}");
    assert_eq!(summary["skippedRecordCount"], 3, "no contactId, not a GUID, no mapped audience: {run}");
    assert_eq!(summary["failedRecordCount"], 1, "the contact that does not exist: {run}");
    let outcomes_sum: u64 = ["outputRecordCount", "skippedRecordCount", "failedRecordCount"]
        .iter()
        .map(|f| summary[*f].as_u64().unwrap())
        .sum();
    assert_eq!(outcomes_sum, 7, "each profile has one outcome: {run}");
    let outcomes = run["outcomes"].as_array().unwrap();
    let failed = outcomes.iter().find(|o| o["outcome"] == "failed").expect("a failed group");
    assert_eq!(failed["code"], "0x80040217");
    assert_eq!(failed["samples"], json!([absent.to_string()]));
    for code in ["no-contact-id", "contact-id-not-a-guid", "no-mapped-audience"] {
        assert!(outcomes.iter().any(|o| o["outcome"] == "excluded" && o["code"] == code), "{code} in {outcomes:?}");
    }
    assert!(
        outcomes.iter().any(|o| o["outcome"] == "noted" && o["message"].as_str().unwrap().contains("birthdate")),
        "the empty date is left out and noted: {outcomes:?}"
    );

    let ann_row = read_contact(&world.dynamics(), ann).await;
    assert_eq!(ann_row["new_gold"], "realized");
    assert_eq!(ann_row["firstname"], "Ann");
    assert!(ann_row["new_silver"].is_null());
    let bob_row = read_contact(&world.dynamics(), bob).await;
    assert_eq!(bob_row["new_gold"], "exited", "the exit overwrote the entry");
    assert_eq!(bob_row["new_silver"], "realized");
    assert_eq!(bob_row["firstname"], "Bob", "a later update without the name leaves it");

    // The missing contact is created in Dynamics; replaying the failed contacts writes it.
    let reply = world
        .dynamics()
        .send(Method::PATCH, &format!("contacts({absent})"), Some(&json!({"lastname": "Absent"})))
        .await
        .unwrap();
    assert!(reply.status().is_success());
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=retry-failed"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["activated"], 1, "{}", reply.text);
    assert_eq!(read_contact(&world.dynamics(), absent).await["new_silver"], "existing");
    // The replayed profile was received once: it moves from failed to written in its run, and the sum holds.
    let totals = world.settled(&flow, 7).await;
    assert_eq!((totals.received, totals.written, totals.excluded, totals.failed), (7, 4, 3, 0), "{totals:?}");
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=retry-failed"), None).await;
    assert_eq!(reply.json()["retried"], 0, "nothing is left to replay: {}", reply.text);
    world.finish().await;
}

async fn accepted_profiles_survive_a_restart(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let ann = world.create_contact("Ann").await;
    // Disabled, the flow keeps what it receives in its log.
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    world.stream(&flow, vec![profile(&ann.to_string(), Some("Ann"), &[("seg-gold", "realized")])]).await;
    let world = world.restart().await;
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=enable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    world.settled_runs(&flow, 1).await;
    assert_eq!(read_contact(&world.dynamics(), ann).await["new_gold"], "realized");
    world.finish().await;
}

/// Dynamics throttles, fails and drops connections, and its sign-in goes down for a while: every profile is
/// still written, none fails, and the run counts each once.
async fn throttling_and_faults_lose_nothing(backend: Backend) {
    let faults = FaultPlan {
        seed: 7,
        rules: ["503:rate=0.1", "500:rate=0.05", "drop:rate=0.05", "token-outage:requests=2-4"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect(),
    };
    let emulator =
        EmulatorConfig { cost: CostModel::free(), token_lifetime: Duration::from_secs(5), ..Default::default() };
    let Some(world) = World::start_with(backend, emulator).await else { return };
    let flow = loyalty_flow(&world).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(world.create_contact(&format!("C{i}")).await);
    }
    // The admin's set-up is done: from here on, Dynamics misbehaves, and allows few requests per window.
    world.emulator.faults.inject(faults);
    let limiter = &world.emulator.environment.limiter;
    limiter.set_limits(Limits { requests: 4, window: Duration::from_secs(1), ..Limits::default() });
    let mut messages = Vec::new();
    for round in 0..50 {
        for id in &ids {
            let status = if round % 2 == 0 { "realized" } else { "existing" };
            messages.push(profile(&id.to_string(), Some(&format!("R{round}")), &[("seg-gold", status)]));
        }
    }
    let total = messages.len() as u64;
    // One round at a time, so that the flow has many small batches to write.
    for chunk in messages.chunks(ids.len()) {
        world.stream(&flow, chunk.to_vec()).await;
    }
    let runs = world.settled_runs(&flow, total).await;
    assert!(limiter.refused() > 0, "the flow met the request limit");
    // Dynamics behaves again, for the checks.
    world.emulator.faults.inject(FaultPlan::default());
    limiter.set_limits(Limits::default());
    let totals = Totals::of(&runs);
    assert_eq!(totals.received, total);
    assert_eq!(totals.failed, 0, "{runs:?}");
    assert_eq!(totals.excluded, 0, "{runs:?}");
    for id in &ids {
        let row = read_contact(&world.dynamics(), id).await;
        assert_eq!(
            (row["firstname"].as_str(), row["new_gold"].as_str()),
            (Some("R49"), Some("existing")),
            "contact {id}"
        );
    }
    world.finish().await;
}

/// Senders stream into one inlet at the same time: every batch is accepted and every profile handled once.
async fn concurrent_senders_are_all_accepted(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let flow = loyalty_flow(&world).await;
    let ann = world.create_contact("Ann").await;
    let sends = (0..8).map(|sender| {
        let messages: Vec<Json> = (0..200)
            .map(|i| profile(&ann.to_string(), Some(&format!("S{sender}-{i}")), &[("seg-gold", "realized")]))
            .collect();
        world.stream(&flow, messages)
    });
    for receipt in futures::future::join_all(sends).await {
        assert_eq!(receipt["accepted"], 200, "{receipt}");
    }
    let runs = world.settled_runs(&flow, 1600).await;
    let received = Totals::of(&runs).received;
    assert_eq!(received, 1600);
    world.finish().await;
}

on_both_stores!(
    profiles_reach_their_contacts,
    accepted_profiles_survive_a_restart,
    throttling_and_faults_lose_nothing,
    concurrent_senders_are_all_accepted
);
