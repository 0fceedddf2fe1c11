//! Activities: `task` and custom activity tables created with `"IsActivity": true` (§10.2), whose rows regard a
//! contact, an account or a lead through `regardingobjectid_<target>_<table>` (§3.3) and all appear in
//! `activitypointers`, the timeline a contact's activities are read from (§4) — created, updated, upserted (§3.6),
//! written in bulk (§6) or in a change set (§5), and deleted (§3.8) with the record they regard. The reference
//! behaviour is Microsoft's: the `task`, `activitypointer` and custom activities documentation.

use crate::{Env, Reply, label};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

fn values(reply: &Reply) -> Vec<Json> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["value"].as_array().expect("a value array").clone()
}

fn subjects(rows: &[Json]) -> Vec<&str> {
    rows.iter().map(|r| r["subject"].as_str().unwrap_or_default()).collect()
}

/// The definition of the custom activity table `new_visit`, as an admin posts it, with the given primary name.
fn visit_definition(primary: &str) -> Json {
    json!({
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "new_Visit",
        "DisplayName": label("Visit"),
        "DisplayCollectionName": label("Visits"),
        "Description": label("A visit to a customer."),
        "OwnershipType": "UserOwned",
        "IsActivity": true,
        "HasActivities": false,
        "HasNotes": true,
        "Attributes": [{
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": primary,
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            "FormatName": {"Value": "Text"},
            "MaxLength": 400,
            "RequiredLevel": {"Value": "None"},
            "DisplayName": label("Subject"),
            "IsPrimaryName": true,
        }],
    })
}

/// Creates `new_visit` with a text column `new_externalid` and an alternate key on it.
async fn visit_table(env: &Env) {
    let reply = env.post("EntityDefinitions", visit_definition("Subject")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    env.add_column(
        "new_visit",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_ExternalId",
               "MaxLength": 100, "DisplayName": label("External id")}),
    )
    .await;
    let key = env
        .post(
            "EntityDefinitions(LogicalName='new_visit')/Keys",
            json!({"SchemaName": "new_ExternalIdKey", "DisplayName": label("External id"),
                   "KeyAttributes": ["new_externalid"]}),
        )
        .await;
    assert_eq!(key.status, StatusCode::NO_CONTENT, "{}", key.text);
}

async fn contact(env: &Env, lastname: &str) -> String {
    env.create("contacts", json!({"lastname": lastname})).await
}

async fn task_regarding(env: &Env, contact: &str, subject: &str) -> String {
    env.create(
        "tasks",
        json!({"subject": subject, "regardingobjectid_contact_task@odata.bind": format!("/contacts({contact})")}),
    )
    .await
}

/// The activities regarding a record, as a timeline reads them.
async fn timeline(env: &Env, regarding: &str) -> Vec<Json> {
    values(
        &env.get(&format!(
            "activitypointers?$select=subject,activitytypecode&$filter=_regardingobjectid_value%20eq%20{regarding}&$orderby=subject"
        ))
        .await,
    )
}

#[tokio::test]
async fn s10_2_a_custom_activity_table_created_with_is_activity_shows_is_activity_and_the_activity_columns() {
    let env = Env::start().await;
    visit_table(&env).await;
    let visit = env
        .get(
            "EntityDefinitions(LogicalName='new_visit')?$select=IsActivity,HasActivities,OwnershipType,EntitySetName,\
             PrimaryIdAttribute,PrimaryNameAttribute",
        )
        .await
        .json();
    assert_eq!(visit["IsActivity"], true, "{visit}");
    assert_eq!(visit["HasActivities"], false);
    assert_eq!(visit["OwnershipType"], "UserOwned");
    assert_eq!(visit["EntitySetName"], "new_visits");
    assert_eq!(
        (visit["PrimaryIdAttribute"].as_str(), visit["PrimaryNameAttribute"].as_str()),
        (Some("activityid"), Some("subject"))
    );
    let columns = values(
        &env.get("EntityDefinitions(LogicalName='new_visit')/Attributes?$select=LogicalName,SchemaName,AttributeType,IsValidForCreate")
            .await,
    );
    let column =
        |name: &str| columns.iter().find(|c| c["LogicalName"] == name).cloned().unwrap_or_else(|| panic!("{name}"));
    for (name, kind) in [
        ("activityid", "Uniqueidentifier"),
        ("subject", "String"),
        ("description", "Memo"),
        ("regardingobjectid", "Lookup"),
        ("activitytypecode", "EntityName"),
        ("scheduledstart", "DateTime"),
        ("scheduledend", "DateTime"),
        ("actualstart", "DateTime"),
        ("actualend", "DateTime"),
        ("prioritycode", "Picklist"),
        ("statecode", "State"),
        ("statuscode", "Status"),
        ("ownerid", "Owner"),
        ("versionnumber", "BigInt"),
        ("new_externalid", "String"),
    ] {
        assert_eq!(column(name)["AttributeType"], kind, "{name}");
    }
    assert_eq!(column("subject")["SchemaName"], "Subject");
    assert_eq!(column("activitytypecode")["IsValidForCreate"], false);
    let regarding = env
        .get("EntityDefinitions(LogicalName='new_visit')/Attributes(LogicalName='regardingobjectid')/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=Targets")
        .await
        .json();
    assert_eq!(regarding["Targets"], json!(["account", "contact", "lead"]));
    assert!(
        env.get("$metadata").await.text.contains("NavigationProperty Name=\"regardingobjectid_contact_new_visit\"")
    );
    // The built-in activity table is one too; activitypointer, which holds every activity, is not.
    let activity_tables =
        values(&env.get("EntityDefinitions?$select=LogicalName&$filter=IsActivity%20eq%20true").await);
    let mut names: Vec<&str> = activity_tables.iter().filter_map(|t| t["LogicalName"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["new_visit", "task"]);
    let pointer = env
        .get("EntityDefinitions(LogicalName='activitypointer')?$select=EntitySetName,ObjectTypeCode,PrimaryIdAttribute,IsActivity")
        .await
        .json();
    assert_eq!(pointer["EntitySetName"], "activitypointers");
    assert_eq!((pointer["ObjectTypeCode"].as_i64(), pointer["IsActivity"].as_bool()), (Some(4200), Some(false)));
    let task = env.get("EntityDefinitions(LogicalName='task')?$select=ObjectTypeCode,IsActivity").await.json();
    assert_eq!((task["ObjectTypeCode"].as_i64(), task["IsActivity"].as_bool()), (Some(4212), Some(true)));
    let contact = env.get("EntityDefinitions(LogicalName='contact')?$select=HasActivities").await.json();
    assert_eq!(contact["HasActivities"], true, "a table activities regard has activities");
}

#[tokio::test]
async fn s10_2_a_table_with_is_activity_whose_primary_attribute_is_not_subject_is_refused() {
    let env = Env::start().await;
    env.post("EntityDefinitions", visit_definition("new_Name")).await.assert_error(
        400,
        "0x8004f126",
        "must have the SchemaName 'Subject'",
    );
    let mut organization_owned = visit_definition("Subject");
    organization_owned["OwnershipType"] = json!("OrganizationOwned");
    env.post("EntityDefinitions", organization_owned).await.assert_error(400, "0x8004f120", "OrganizationOwned");
    let mut with_activities = visit_definition("Subject");
    with_activities["HasActivities"] = json!(true);
    env.post("EntityDefinitions", with_activities).await.assert_error(
        400,
        "0x8004f121",
        "A custom entity defined as an activity must not have a relationship with Activities.",
    );
    assert_eq!(env.get("EntityDefinitions(LogicalName='new_visit')").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn s3_3_a_task_regarding_a_contact_appears_on_the_contacts_timeline_with_activitytypecode_task() {
    let env = Env::start().await;
    let ann = contact(&env, "Ann").await;
    let bob = contact(&env, "Bob").await;
    let call = task_regarding(&env, &ann, "Call Ann back").await;
    task_regarding(&env, &ann, "Send Ann the offer").await;
    task_regarding(&env, &bob, "Call Bob").await;
    let task = env
        .get(&format!("tasks({call})?$select=subject,statecode,statuscode,prioritycode,activitytypecode"))
        .await
        .json();
    assert_eq!(
        (task["statecode"].as_i64(), task["statuscode"].as_i64()),
        (Some(0), Some(2)),
        "Open, Not Started: {task}"
    );
    assert_eq!((task["prioritycode"].as_i64(), task["activitytypecode"].as_str()), (Some(1), Some("task")));
    assert_eq!(task["activityid"], call.as_str());
    let rows = timeline(&env, &ann).await;
    assert_eq!(subjects(&rows), ["Call Ann back", "Send Ann the offer"]);
    assert!(rows.iter().all(|r| r["activitytypecode"] == "task"));
    assert_eq!(rows[0]["activityid"], call.as_str(), "the pointer row has the activity's id");
    // Read back as any lookup is, with the table it points at.
    let reply = env
        .send(
            env.request(Method::GET, &format!("activitypointers({call})?$select=_regardingobjectid_value,subject"))
                .header("Prefer", "odata.include-annotations=\"*\""),
        )
        .await;
    let pointer = reply.json();
    assert_eq!(pointer["_regardingobjectid_value"], ann.as_str(), "{pointer}");
    assert_eq!(pointer["_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "contact");
    assert_eq!(
        pointer["_regardingobjectid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"],
        "regardingobjectid_contact"
    );
    // The usual query options: a filter on the type, an order, a page size with its next link.
    let typed = values(
        &env.get(
            "activitypointers?$select=subject&$filter=activitytypecode%20eq%20'task'&$orderby=subject%20desc&$top=2",
        )
        .await,
    );
    assert_eq!(subjects(&typed), ["Send Ann the offer", "Call Bob"]);
    let page = env
        .send(env.request(Method::GET, "activitypointers?$select=subject").header("Prefer", "odata.maxpagesize=2"))
        .await
        .json();
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let next = values(&env.get(page["@odata.nextLink"].as_str().expect("a next page")).await);
    assert_eq!(next.len(), 1);
}

#[tokio::test]
async fn s3_6_a_custom_activity_upserted_twice_by_its_alternate_key_is_one_row_and_one_activitypointer_row() {
    let env = Env::start().await;
    visit_table(&env).await;
    let ann = contact(&env, "Ann").await;
    let body = |subject: &str| json!({"subject": subject, "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")});
    let first = env.patch("new_visits(new_externalid='V-1')", body("Visit planned")).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT, "{}", first.text);
    assert_eq!(first.header("odata-entityid"), Some(env.api("new_visits(new_externalid='V-1')").as_str()));
    let second = env.patch("new_visits(new_externalid='V-1')", body("Visit done")).await;
    assert_eq!(second.status, StatusCode::NO_CONTENT, "{}", second.text);
    let visits = values(&env.get("new_visits?$select=subject,new_externalid,activitytypecode").await);
    assert_eq!(visits.len(), 1);
    assert_eq!(
        (visits[0]["subject"].as_str(), visits[0]["new_externalid"].as_str()),
        (Some("Visit done"), Some("V-1"))
    );
    assert_eq!(visits[0]["activitytypecode"], "new_visit");
    let pointers = values(&env.get("activitypointers?$select=subject,activitytypecode").await);
    assert_eq!(pointers.len(), 1);
    assert_eq!(pointers[0]["activityid"], visits[0]["activityid"]);
    assert_eq!(
        (pointers[0]["subject"].as_str(), pointers[0]["activitytypecode"].as_str()),
        (Some("Visit done"), Some("new_visit"))
    );
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Visit done"]);
}

#[tokio::test]
async fn s6_1_upsert_multiple_and_create_multiple_of_custom_activities_appear_in_activitypointers() {
    let env = Env::start().await;
    visit_table(&env).await;
    let ann = contact(&env, "Ann").await;
    let visit = |extra: Json| {
        let mut target = json!({"@odata.type": "Microsoft.Dynamics.CRM.new_visit",
                                "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")});
        target.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        target
    };
    let created = env
        .post(
            "new_visits/Microsoft.Dynamics.CRM.CreateMultiple",
            json!({"Targets": [visit(json!({"subject": "A"})), visit(json!({"subject": "B"}))]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let ids = created.json()["Ids"].as_array().unwrap().clone();
    let upserted = env
        .post(
            "new_visits/Microsoft.Dynamics.CRM.UpsertMultiple",
            json!({"Targets": [
                visit(json!({"@odata.id": "new_visits(new_externalid='V-1')", "subject": "C"})),
                visit(json!({"@odata.id": "new_visits(new_externalid='V-2')", "subject": "D"})),
                visit(json!({"activityid": ids[0], "subject": "A, again"})),
            ]}),
        )
        .await;
    assert_eq!(upserted.status, StatusCode::NO_CONTENT, "{}", upserted.text);
    let rows = timeline(&env, &ann).await;
    assert_eq!(subjects(&rows), ["A, again", "B", "C", "D"]);
    assert!(rows.iter().all(|r| r["activitytypecode"] == "new_visit"), "{rows:?}");
    // A bulk request that fails is rolled back whole, pointer rows with it.
    let failed = env
        .post(
            "new_visits/Microsoft.Dynamics.CRM.CreateMultiple",
            json!({"Targets": [visit(json!({"subject": "E"})), visit(json!({"subject": "F".repeat(401)}))]}),
        )
        .await;
    failed.assert_error(400, "0x80044331", "(Targets[1])");
    assert_eq!(values(&env.get("activitypointers?$select=subject").await).len(), 4);
}

#[tokio::test]
async fn s3_5_an_update_of_an_activitys_subject_is_seen_in_activitypointers() {
    let env = Env::start().await;
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let before = env.get(&format!("activitypointers({call})?$select=subject,versionnumber")).await.json();
    let reply = env.patch(&format!("tasks({call})"), json!({"subject": "Call Ann today", "statecode": 1})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let task = env.get(&format!("tasks({call})?$select=subject,statuscode,versionnumber")).await.json();
    let after =
        env.get(&format!("activitypointers({call})?$select=subject,statecode,statuscode,versionnumber")).await.json();
    assert_eq!(after["subject"], "Call Ann today");
    assert_eq!((after["statecode"].as_i64(), task["statuscode"].as_i64()), (Some(1), Some(5)), "Completed: {task}");
    assert_eq!(after["versionnumber"], task["versionnumber"]);
    assert!(after["versionnumber"].as_i64() > before["versionnumber"].as_i64());
    // Single-property writes reach it too.
    let put = env
        .send(
            env.request(Method::PUT, &format!("tasks({call})/description"))
                .json(&json!({"value": "Ask about the offer"})),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text);
    let described = env.get(&format!("activitypointers({call})?$select=description")).await.json();
    assert_eq!(described["description"], "Ask about the offer");
}

/// A `$batch` of one change set holding the given `(method, url, body)` operations.
fn change_set(operations: &[(&str, String, Json)]) -> String {
    let mut out = String::from("--batch_AAA\r\nContent-Type: multipart/mixed; boundary=\"changeset_BBB\"\r\n\r\n");
    for (i, (method, url, body)) in operations.iter().enumerate() {
        out.push_str(&format!(
            "--changeset_BBB\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\n\
             {method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}\r\n",
            i + 1
        ));
    }
    out.push_str("--changeset_BBB--\r\n\r\n--batch_AAA--\r\n");
    out
}

#[tokio::test]
async fn s5_activities_written_in_a_change_set_reach_activitypointers_or_roll_back_with_it() {
    let env = Env::start().await;
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let base = env.emulator.web_api.trim_end_matches('/').to_string();
    let regarding = format!("/contacts({ann})");
    let send = |body: String| {
        env.send(
            env.request(Method::POST, "$batch")
                .header("Content-Type", "multipart/mixed; boundary=\"batch_AAA\"")
                .body(body),
        )
    };
    let failed = send(change_set(&[
        ("PATCH", format!("{base}/tasks({call})"), json!({"subject": "Never seen"})),
        (
            "POST",
            format!("{base}/tasks"),
            json!({"subject": "S".repeat(201), "regardingobjectid_contact_task@odata.bind": &regarding}),
        ),
    ]))
    .await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST, "{}", failed.text);
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Call Ann"], "the change set is rolled back whole");
    let done = send(change_set(&[
        ("PATCH", format!("{base}/tasks({call})"), json!({"subject": "Call Ann again"})),
        (
            "POST",
            format!("{base}/tasks"),
            json!({"subject": "Email Ann", "regardingobjectid_contact_task@odata.bind": &regarding}),
        ),
    ]))
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Call Ann again", "Email Ann"]);
}

#[tokio::test]
async fn s3_8_deleting_an_activity_removes_it_from_activitypointers() {
    let env = Env::start().await;
    visit_table(&env).await;
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let visit = env
        .create("new_visits", json!({"subject": "Visit Ann", "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")}))
        .await;
    assert_eq!(timeline(&env, &ann).await.len(), 2);
    assert_eq!(env.delete(&format!("tasks({call})")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Visit Ann"]);
    env.get(&format!("activitypointers({call})")).await.assert_error(404, "0x80040217", "activitypointer");
    assert_eq!(env.delete(&format!("new_visits({visit})")).await.status, StatusCode::NO_CONTENT);
    assert!(timeline(&env, &ann).await.is_empty());
    // Deleting a custom activity table takes its rows out of activitypointers too.
    env.create("new_visits", json!({"subject": "Visit again", "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")}))
        .await;
    let dropped = env.delete("EntityDefinitions(LogicalName='new_visit')").await;
    assert_eq!(dropped.status, StatusCode::NO_CONTENT, "{}", dropped.text);
    assert!(timeline(&env, &ann).await.is_empty());
}

#[tokio::test]
async fn s3_8_deleting_a_contact_removes_its_activities() {
    let env = Env::start().await;
    visit_table(&env).await;
    let ann = contact(&env, "Ann").await;
    let bob = contact(&env, "Bob").await;
    task_regarding(&env, &ann, "Call Ann").await;
    env.create(
        "new_visits",
        json!({"subject": "Visit Ann", "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")}),
    )
    .await;
    task_regarding(&env, &bob, "Call Bob").await;
    // The regarding relationships say so.
    let relationship = env.get("RelationshipDefinitions(SchemaName='Contact_Tasks')").await.json();
    assert_eq!(
        relationship["ReferencingEntityNavigationPropertyName"], "regardingobjectid_contact_task",
        "{relationship}"
    );
    assert_eq!(relationship["CascadeConfiguration"]["Delete"], "Cascade");
    let custom = env.get("RelationshipDefinitions(SchemaName='contact_new_visits')").await.json();
    assert_eq!(custom["CascadeConfiguration"]["Delete"], "Cascade", "{custom}");
    assert_eq!(env.delete(&format!("contacts({ann})")).await.status, StatusCode::NO_CONTENT);
    assert!(timeline(&env, &ann).await.is_empty());
    assert_eq!(subjects(&values(&env.get("tasks?$select=subject").await)), ["Call Bob"]);
    assert!(values(&env.get("new_visits?$select=subject").await).is_empty());
    assert_eq!(subjects(&values(&env.get("activitypointers?$select=subject").await)), ["Call Bob"]);
}

#[tokio::test]
async fn s3_10_writing_activitypointers_directly_is_refused() {
    let env = Env::start().await;
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let refusal = "does not support entities of type 'activitypointer'";
    env.post("activitypointers", json!({"subject": "Direct"})).await.assert_error(400, "0x80040203", refusal);
    let update = env.patch(&format!("activitypointers({call})"), json!({"subject": "Direct"})).await;
    update.assert_error(400, "0x80040203", "The 'Update' method does not support entities of type 'activitypointer'");
    assert!(update.json()["error"]["message"].as_str().unwrap().contains("tasks"), "it names the table to write");
    env.delete(&format!("activitypointers({call})")).await.assert_error(400, "0x80040203", "The 'Delete' method");
    env.post(
        "activitypointers/Microsoft.Dynamics.CRM.CreateMultiple",
        json!({"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.activitypointer", "subject": "Direct"}]}),
    )
    .await
    .assert_error(400, "0x80040203", "The 'CreateMultiple' method");
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Call Ann"], "nothing changed");
    let filters = values(
        &env.get("sdkmessagefilters?$select=primaryobjecttypecode&$filter=primaryobjecttypecode%20eq%20'activitypointer'%20and%20sdkmessageid/name%20eq%20'Create'")
            .await,
    );
    assert!(filters.is_empty(), "activitypointer takes no Create: {filters:?}");
}

#[tokio::test]
async fn s3_3_a_regarding_bind_to_a_table_that_is_not_a_target_is_refused_with_dataverses_error() {
    let env = Env::start().await;
    let account = env.create("accounts", json!({"name": "Contoso"})).await;
    let user = env.get("WhoAmI").await.json()["UserId"].as_str().unwrap().to_string();
    env.post(
        "tasks",
        json!({"subject": "Call", "regardingobjectid_systemuser_task@odata.bind": format!("/systemusers({user})")}),
    )
    .await
    .assert_error(400, "0x80048d19", "An undeclared property 'regardingobjectid_systemuser_task'");
    env.post(
        "tasks",
        json!({"subject": "Call", "regardingobjectid_contact_task@odata.bind": format!("/accounts({account})")}),
    )
    .await
    .assert_error(
        400,
        "0x80048d19",
        "'regardingobjectid_contact_task' refers to contact records, not to account records",
    );
    env.post("tasks", json!({"subject": "Call", "_regardingobjectid_value": account})).await.assert_error(
        400,
        "0x80048d19",
        "regardingobjectid_account_task@odata.bind",
    );
    // Through the account's own navigation property it is accepted.
    let call = env
        .create(
            "tasks",
            json!({"subject": "Call", "regardingobjectid_account_task@odata.bind": format!("/accounts({account})")}),
        )
        .await;
    assert_eq!(
        env.get(&format!("tasks({call})?$select=_regardingobjectid_value")).await.json()["_regardingobjectid_value"],
        account.as_str()
    );
    assert_eq!(values(&env.get("activitypointers").await).len(), 1);
}

#[tokio::test]
async fn s7_change_tracking_of_activitypointers_sees_activities_change_and_go() {
    let env = Env::start().await;
    let enabled = env
        .send(
            env.request(Method::PUT, "EntityDefinitions(LogicalName='activitypointer')")
                .json(&json!({"ChangeTrackingEnabled": true})),
        )
        .await;
    assert_eq!(enabled.status, StatusCode::NO_CONTENT, "{}", enabled.text);
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let mail = task_regarding(&env, &ann, "Email Ann").await;
    let initial = env
        .send(env.request(Method::GET, "activitypointers?$select=subject").header("Prefer", "odata.track-changes"))
        .await
        .json();
    assert_eq!(initial["value"].as_array().unwrap().len(), 2);
    let delta = initial["@odata.deltaLink"].as_str().expect("a delta link").to_string();
    env.patch(&format!("tasks({call})"), json!({"subject": "Call Ann today"})).await;
    assert_eq!(env.delete(&format!("tasks({mail})")).await.status, StatusCode::NO_CONTENT);
    let changes = values(&env.get(&delta).await);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        (changes[0]["activityid"].as_str(), changes[0]["subject"].as_str()),
        (Some(call.as_str()), Some("Call Ann today"))
    );
    assert_eq!((changes[1]["id"].as_str(), changes[1]["reason"].as_str()), (Some(mail.as_str()), Some("deleted")));
}

#[tokio::test]
async fn bulk_6_5_a_bulk_delete_of_activitypointers_deletes_the_activities_they_stand_for() {
    let env = Env::start().await;
    let ann = contact(&env, "Ann").await;
    let call = task_regarding(&env, &ann, "Call Ann").await;
    let keep = task_regarding(&env, &ann, "Keep me").await;
    let reply = env
        .post(
            "BulkDelete",
            json!({
                "JobName": "Remove calls", "SendEmailNotification": false, "ToRecipients": [], "CCRecipients": [],
                "RecurrencePattern": "", "StartDateTime": "2026-01-01T00:00:00Z",
                "QuerySet": [{
                    "@odata.type": "Microsoft.Dynamics.CRM.QueryExpression",
                    "EntityName": "activitypointer",
                    "ColumnSet": {"AllColumns": false, "Columns": []},
                    "Criteria": {"FilterOperator": "And", "Conditions": [
                        {"AttributeName": "subject", "Operator": "BeginsWith", "Values": [{"Value": "Call", "Type": "System.String"}]}
                    ]},
                }],
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = reply.json()["JobId"].as_str().expect("a job id").to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let row = env.get(&format!("asyncoperations({job})?$select=statecode,statuscode")).await.json();
        if row["statecode"] == 3 {
            assert_eq!(row["statuscode"], 30, "{row}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not complete within 20 s: {row}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(env.get(&format!("tasks({call})")).await.status, StatusCode::NOT_FOUND, "the task went with its row");
    assert_eq!(env.get(&format!("tasks({keep})")).await.status, StatusCode::OK);
    assert_eq!(subjects(&timeline(&env, &ann).await), ["Keep me"]);
}

#[tokio::test]
async fn a_custom_activity_table_stays_one_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = dataverse_emulator::EmulatorConfig { state: Some(dir.path().join("env.db")), ..crate::config() };
    let first = Env::with(config.clone()).await;
    visit_table(&first).await;
    let ann = contact(&first, "Ann").await;
    let visit = first
        .create("new_visits", json!({"subject": "Visit Ann", "regardingobjectid_contact_new_visit@odata.bind": format!("/contacts({ann})")}))
        .await;
    let port: u16 = first.emulator.url.rsplit(':').next().unwrap().parse().unwrap();
    first.emulator.stop().await;

    let second =
        Env::with(dataverse_emulator::EmulatorConfig { listen: ([127, 0, 0, 1], port).into(), ..config }).await;
    assert_eq!(subjects(&timeline(&second, &ann).await), ["Visit Ann"], "pointer rows are kept");
    let updated = second.patch(&format!("new_visits({visit})"), json!({"subject": "Visit Ann again"})).await;
    assert_eq!(updated.status, StatusCode::NO_CONTENT, "{}", updated.text);
    assert_eq!(subjects(&timeline(&second, &ann).await), ["Visit Ann again"], "and still follow their activity");
}
