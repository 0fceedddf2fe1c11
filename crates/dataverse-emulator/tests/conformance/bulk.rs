//! §6 Bulk messages: `CreateMultiple`, `UpdateMultiple`, `UpsertMultiple`, all or nothing, and
//! `sdkmessagefilters` answering which tables take them.

use crate::{Env, label};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

fn contact(extra: Json) -> Json {
    let mut target = json!({"@odata.type": "Microsoft.Dynamics.CRM.contact"});
    target.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    target
}

async fn count(env: &Env) -> usize {
    env.get("contacts/$count").await.text.parse().unwrap()
}

#[tokio::test]
async fn s6_1_create_multiple_answers_the_new_ids() {
    let env = Env::start().await;
    let targets: Vec<Json> = (0..3).map(|i| contact(json!({"lastname": format!("Bulk {i}")}))).collect();
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.CreateMultiple", json!({"Targets": targets})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(
        body["@odata.context"],
        format!("{}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", env.emulator.web_api)
    );
    let ids = body["Ids"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    let row = env.get(&format!("contacts({})?$select=lastname", ids[1].as_str().unwrap())).await.json();
    assert_eq!(row["lastname"], "Bulk 1");
}

#[tokio::test]
async fn s6_1_every_target_needs_its_type() {
    let env = Env::start().await;
    let reply = env
        .post(
            "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
            json!({"Targets": [contact(json!({"lastname": "A"})), {"lastname": "B"}]}),
        )
        .await;
    reply.assert_error(400, "0x80040203", "\"@odata.type\": \"Microsoft.Dynamics.CRM.contact\"");
    assert!(reply.json()["error"]["message"].as_str().unwrap().ends_with("(Targets[1])"));
    let wrong = env
        .post(
            "contacts/Microsoft.Dynamics.CRM.CreateMultiple",
            json!({"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.account", "name": "X"}]}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert_eq!(count(&env).await, 0, "nothing is written");
}

#[tokio::test]
async fn s6_2_one_bad_target_rolls_the_whole_request_back() {
    let env = Env::start().await;
    let existing = env.create("contacts", json!({"lastname": "Before"})).await;
    let targets = json!([
        contact(json!({"contactid": existing, "lastname": "Changed"})),
        contact(json!({"lastname": "New one"})),
        contact(json!({"lastname": "L".repeat(51)})),
        contact(json!({"lastname": "Never"})),
    ]);
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json!({"Targets": targets})).await;
    reply.assert_error(400, "0x80044331", "exceeded the maximum allowed length of '50'. (Targets[2])");
    assert_eq!(count(&env).await, 1, "the created row is rolled back");
    let row = env.get(&format!("contacts({existing})?$select=lastname")).await.json();
    assert_eq!(row["lastname"], "Before", "the updated row is rolled back");
    // The same request without the bad target goes through.
    let targets = json!([
        contact(json!({"contactid": existing, "lastname": "Changed"})),
        contact(json!({"lastname": "New one"}))
    ]);
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json!({"Targets": targets})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(reply.text.is_empty(), "UpsertMultiple answers no body");
    assert_eq!(count(&env).await, 2);
}

#[tokio::test]
async fn s6_1_update_multiple_updates_existing_rows_only() {
    let env = Env::start().await;
    let a = env.create("contacts", json!({"lastname": "A"})).await;
    let b = env.create("contacts", json!({"lastname": "B"})).await;
    let reply = env
        .post(
            "contacts/Microsoft.Dynamics.CRM.UpdateMultiple",
            json!({"Targets": [contact(json!({"contactid": a, "jobtitle": "Chef"})), contact(json!({"contactid": b, "jobtitle": "Cook"}))]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(env.get(&format!("contacts({b})?$select=jobtitle")).await.json()["jobtitle"], "Cook");
    let missing = "00000000-0000-0000-0000-0000000000aa";
    let reply = env
        .post(
            "contacts/Microsoft.Dynamics.CRM.UpdateMultiple",
            json!({"Targets": [contact(json!({"contactid": missing, "jobtitle": "X"}))]}),
        )
        .await;
    reply.assert_error(404, "0x80040217", &format!("Entity 'contact' With Id = {missing} Does Not Exist"));
    let reply = env
        .post("contacts/Microsoft.Dynamics.CRM.UpdateMultiple", json!({"Targets": [contact(json!({"jobtitle": "X"}))]}))
        .await;
    reply.assert_error(400, "0x80040203", "UpdateMultiple needs the record's 'contactid'");
}

#[tokio::test]
async fn s6_1_upsert_multiple_by_alternate_key() {
    let env = Env::start().await;
    let key = json!({"SchemaName": "new_EmailKey", "DisplayName": label("Email"), "KeyAttributes": ["emailaddress1"]});
    assert_eq!(env.post("EntityDefinitions(LogicalName='contact')/Keys", key).await.status, StatusCode::NO_CONTENT);
    // Created through the key, the key's value comes from @odata.id.
    let created = contact(json!({"@odata.id": "contacts(emailaddress1='kim@example.com')", "lastname": "Kim"}));
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json!({"Targets": [created]})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let rows = env.get("contacts?$select=lastname,emailaddress1").await.json();
    assert_eq!(rows["value"][0]["emailaddress1"], "kim@example.com");
    // Updated through the key, the key column may be in the body.
    let updated = contact(
        json!({"@odata.id": "contacts(emailaddress1='kim@example.com')", "emailaddress1": "kim@example.com", "lastname": "Kimura"}),
    );
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json!({"Targets": [updated]})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(
        env.get("contacts(emailaddress1='kim@example.com')?$select=lastname").await.json()["lastname"],
        "Kimura"
    );
    // On the create path it may not.
    let both = contact(
        json!({"@odata.id": "contacts(emailaddress1='lee@example.com')", "emailaddress1": "lee@example.com", "lastname": "Lee"}),
    );
    let reply = env.post("contacts/Microsoft.Dynamics.CRM.UpsertMultiple", json!({"Targets": [both]})).await;
    reply.assert_error(
        400,
        "0x80040203",
        "The alternate key column 'emailaddress1' is both in '@odata.id' and in the body",
    );
}

#[tokio::test]
async fn s6_3_bulk_messages_work_on_custom_tables_and_are_listed() {
    let env = Env::start().await;
    let table = json!({
        "SchemaName": "new_Visit", "DisplayName": label("Visit"), "DisplayCollectionName": label("Visits"), "OwnershipType": "UserOwned",
        "Attributes": [{"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 100}]
    });
    assert_eq!(env.post("EntityDefinitions", table).await.status, StatusCode::NO_CONTENT);
    let targets = json!([{"@odata.type": "Microsoft.Dynamics.CRM.new_visit", "new_name": "one"}, {"@odata.type": "Microsoft.Dynamics.CRM.new_visit", "new_name": "two"}]);
    let reply = env.post("new_visits/Microsoft.Dynamics.CRM.CreateMultiple", json!({"Targets": targets})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for table in ["contact", "new_visit"] {
        let query = format!(
            "sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name%20eq%20@message%20and%20primaryobjecttypecode%20eq%20@table&@message='CreateMultiple'&@table='{table}'"
        );
        let filters = env.get(&query).await.json();
        assert_eq!(filters["value"].as_array().unwrap().len(), 1, "{table}: {filters}");
    }
    let none = env.get("sdkmessagefilters?$filter=sdkmessageid/name%20eq%20'CreateMultiple'%20and%20primaryobjecttypecode%20eq%20'nothing'").await.json();
    assert_eq!(none["value"].as_array().unwrap().len(), 0);
}
