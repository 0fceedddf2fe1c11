//! Activation against what a careless client or an attacker sends: numbers no column holds, and flows of
//! absurd size. A value outside its column's range is left out and noted, and the contact still gets its
//! audience status; a flow over the caps is refused with one problem, before any of its columns is looked up.

mod common;

use common::{Backend, World};
use dataverse::{NewColumn, NewColumnType};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use uuid::Uuid;

/// A profile of `contact` in the gold audience, with loyalty points and a number of children.
fn loyalty_profile(contact: Uuid, points: Json, children: Option<Json>) -> Json {
    let mut loyalty = json!({"points": points});
    if let Some(children) = children {
        loyalty["children"] = children;
    }
    json!({"body": {"xdmEntity": {
        "identityMap": {"contactId": [{"id": contact.to_string(), "primary": true}]},
        "segmentMembership": {"ups": {"seg-gold": {"status": "realized"}}},
        "loyalty": loyalty,
    }}})
}

/// The numbers a contact holds in Dynamics, and its gold status.
async fn read_numbers(world: &World, contact: Uuid) -> Json {
    let path = format!("contacts({contact})?$select=new_gold,new_points,numberofchildren");
    let response = world.dynamics().send(Method::GET, &path, None).await.unwrap();
    assert!(response.status().is_success(), "contact {contact}: {}", response.status());
    response.json().await.unwrap()
}

async fn numbers_out_of_their_columns_range_are_left_out_and_every_contact_keeps_its_status(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (_, target) = world.destination("new").await;
    world.add_text_column("new_Gold", 20).await;
    // A whole number column as a maker adds it, with Dataverse's default range.
    let points = NewColumn {
        schema_name: "new_Points".into(),
        display_name: "Points".into(),
        kind: NewColumnType::Integer { min: i32::MIN, max: i32::MAX },
    };
    world.dynamics().create_column("contact", &points).await.unwrap();
    let reply = world
        .post(
            "flows",
            json!({
                "name": "Loyalty points",
                "targetConnectionIds": [target],
                "audiences": [{"id": "seg-gold", "name": "Gold", "mappingId": "gold"}],
                "mappings": [
                    {"source": "contactId", "target": "contactid"},
                    {"source": "loyalty.points", "target": "new_points", "sourceType": "integer"},
                    // contact's own column, whose range Dynamics narrows to 0 to 1,000,000,000.
                    {"source": "loyalty.children", "target": "numberofchildren", "sourceType": "integer"}
                ]
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();

    let bad_points = [json!(3e9), json!(1e20), json!(-1e20), json!(12.5)];
    let mut contacts = Vec::new();
    for (i, _) in bad_points.iter().enumerate() {
        contacts.push(world.create_contact(&format!("Bad{i}")).await);
    }
    let good = world.create_contact("Good").await;
    let big_family = world.create_contact("Family").await;
    let mut messages: Vec<Json> =
        contacts.iter().zip(&bad_points).map(|(c, p)| loyalty_profile(*c, p.clone(), None)).collect();
    messages.push(loyalty_profile(good, json!(42), None));
    messages.push(loyalty_profile(big_family, json!(7), Some(json!(2_000_000_000))));
    let count = messages.len() as u64;
    world.stream_all(&flow, messages).await;

    let runs = world.settled_runs(&flow, count).await;
    let totals = common::Totals::of(&runs);
    assert_eq!((totals.written, totals.excluded, totals.failed), (count, 0, 0), "every contact is written: {runs:?}");

    for contact in contacts.iter().chain([&good, &big_family]) {
        assert_eq!(read_numbers(&world, *contact).await["new_gold"], "realized", "contact {contact}");
    }
    for contact in &contacts {
        assert!(read_numbers(&world, *contact).await["new_points"].is_null(), "contact {contact}");
    }
    assert_eq!(read_numbers(&world, good).await["new_points"], 42);
    let family = read_numbers(&world, big_family).await;
    assert_eq!(family["new_points"], 7);
    assert!(family["numberofchildren"].is_null(), "2,000,000,000 is past the column's own maximum: {family}");

    // Notes are grouped by what was left out: values out of range, and a value of the wrong type.
    let outcomes: Vec<&Json> = runs.iter().flat_map(|r| r["outcomes"].as_array().unwrap()).collect();
    let noted = |code: &str| {
        let group = outcomes.iter().find(|o| o["outcome"] == "noted" && o["code"] == code);
        group.unwrap_or_else(|| panic!("a noted group {code} in {outcomes:?}"))
    };
    let (out_of_range, wrong_type) = (noted("out-of-range"), noted("wrong-type"));
    assert_eq!(out_of_range["count"], 4, "three points and one number of children: {outcomes:?}");
    assert_eq!(wrong_type["count"], 1, "12.5 points: {outcomes:?}");
    let int32 = "whole number: -2147483648 to 2147483647";
    let mut expected: Vec<String> = bad_points[..3]
        .iter()
        .map(|p| {
            format!(
                "loyalty.points is {p}, outside the range of the column new_points ({int32}): the column was left as \
                 it is; correct the value in the profile, or map loyalty.points to a column whose range holds it"
            )
        })
        .collect();
    expected.push(
        "loyalty.children is 2000000000, outside the range of the column numberofchildren (whole number: 0 to \
         1000000000): the column was left as it is; correct the value in the profile, or map loyalty.children to \
         a column whose range holds it"
            .into(),
    );
    let message = out_of_range["message"].as_str().unwrap();
    assert!(expected.iter().any(|e| e == message), "{message}\nis none of\n{expected:#?}");
    assert_eq!(
        wrong_type["message"],
        "loyalty.points is 12.5, not a whole number: the column new_points (whole number) was left as it is"
    );
    let sampled = |group: &Json| {
        let mut samples: Vec<String> =
            group["samples"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        samples.sort();
        samples
    };
    let mut left_out: Vec<String> = contacts[..3].iter().chain([&big_family]).map(Uuid::to_string).collect();
    left_out.sort();
    assert_eq!(sampled(out_of_range), left_out, "the contacts whose values were out of range");
    assert_eq!(sampled(wrong_type), vec![contacts[3].to_string()]);
    world.finish().await;
}

async fn a_flow_over_the_caps_is_refused_with_one_problem(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let (_, target) = world.destination("new").await;
    let too_many = dynsync::activation::validation::MAX_MAPPINGS + 1;
    let mut mappings = vec![json!({"source": "contactId", "target": "contactid"})];
    mappings.extend((1..too_many).map(|i| json!({"source": format!("a.b{i}"), "target": format!("new_missing{i}")})));
    let reply = world
        .post(
            "flows",
            json!({"name": "Everything", "targetConnectionIds": [target], "audiences": [], "mappings": mappings}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let problems = reply.json()["report"]["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["field"], "mappings");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("has {too_many} mappings; a flow takes at most {}", too_many - 1)), "{message}");
    world.finish().await;
}

on_both_stores!(
    numbers_out_of_their_columns_range_are_left_out_and_every_contact_keeps_its_status,
    a_flow_over_the_caps_is_refused_with_one_problem
);
