//! Notes (`annotation`): a built-in table whose polymorphic lookup `objectid` (Regarding) points at a lead, a
//! contact or an account, bound through `objectid_<table>` (§3.3), read back as `_objectid_value` with the
//! regarded table in `objecttypecode`, refused as any lookup to a missing row is (§8), and described by
//! `EntityDefinitions` (§10).

use crate::Env;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;

async fn lead(env: &Env, subject: &str) -> String {
    env.create("leads", json!({"subject": subject, "lastname": "Lee"})).await
}

async fn note_regarding(env: &Env, navigation: &str, target: &str, subject: &str) -> String {
    env.create(
        "annotations",
        json!({"subject": subject, "notetext": format!("{subject}, in full"), format!("{navigation}@odata.bind"): target}),
    )
    .await
}

#[tokio::test]
async fn s3_3_a_note_regarding_a_lead_is_listed_by_its_objectid_value() {
    let env = Env::start().await;
    let lead_id = lead(&env, "Fleet renewal").await;
    let other = lead(&env, "Office move").await;
    note_regarding(&env, "objectid_lead", &format!("/leads({lead_id})"), "First call").await;
    note_regarding(&env, "objectid_lead", &format!("/leads({lead_id})"), "Second call").await;
    note_regarding(&env, "objectid_lead", &format!("/leads({other})"), "Elsewhere").await;

    let reply =
        env.get(&format!("annotations?$filter=_objectid_value%20eq%20{lead_id}&$select=subject,notetext")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["@odata.context"], format!("{}$metadata#annotations(subject,notetext)", env.emulator.web_api));
    let notes = body["value"].as_array().unwrap();
    let mut subjects: Vec<&str> = notes.iter().map(|n| n["subject"].as_str().unwrap()).collect();
    subjects.sort();
    assert_eq!(subjects, ["First call", "Second call"]);
    let first = notes.iter().find(|n| n["subject"] == "First call").unwrap();
    assert_eq!(first["notetext"], "First call, in full");
    let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["@odata.etag", "subject", "notetext", "annotationid"]);
}

#[tokio::test]
async fn s3_3_a_note_reads_the_table_it_regards_as_its_objecttypecode() {
    let env = Env::start().await;
    let lead_id = lead(&env, "Fleet renewal").await;
    let note = env
        .create(
            "annotations",
            json!({
                "subject": "Brochure",
                "objectid_lead@odata.bind": format!("/leads({lead_id})"),
                "isdocument": true,
                "filename": "brochure.txt",
                "mimetype": "text/plain",
                "documentbody": "SGVsbG8sIHdvcmxkIQ==",
            }),
        )
        .await;
    let row = env
        .send(
            env.request(Method::GET, &format!("annotations({note})"))
                .header("Prefer", "odata.include-annotations=\"*\""),
        )
        .await
        .json();
    assert_eq!(row["objecttypecode"], "lead");
    assert_eq!(row["_objectid_value"], lead_id.as_str());
    assert_eq!(row["_objectid_value@OData.Community.Display.V1.FormattedValue"], "Lee");
    assert_eq!(row["_objectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "lead");
    assert_eq!(row["_objectid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"], "objectid_lead");
    assert_eq!(row["filesize"], 13, "the size of the file documentbody holds");
    assert_eq!(row["isdocument"], true);
    assert!(row["_ownerid_value"].is_string() && row["createdon"].is_string());
    assert!(row.get("statecode").is_none(), "notes have no state: {row}");
    // The regarding row through its navigation property, and the type code in a filter.
    let regarding = env.get(&format!("annotations({note})/objectid_lead?$select=subject")).await.json();
    assert_eq!(regarding["subject"], "Fleet renewal");
    let leads = env.get("annotations?$filter=objecttypecode%20eq%20'lead'&$select=subject").await.json();
    assert_eq!(leads["value"].as_array().unwrap().len(), 1);
    // The server sets objecttypecode: a value in the body does not override the lookup.
    let reply = env.patch(&format!("annotations({note})"), json!({"objecttypecode": "account"})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let row = env.get(&format!("annotations({note})?$select=objecttypecode")).await.json();
    assert_eq!(row["objecttypecode"], "lead");
}

#[tokio::test]
async fn s8_a_note_regarding_a_missing_lead_is_refused_as_any_lookup_to_a_missing_row() {
    let env = Env::start().await;
    let missing = "00000000-0000-0000-0000-000000000001";
    let reply = env
        .post("annotations", json!({"subject": "Lost", "objectid_lead@odata.bind": format!("/leads({missing})")}))
        .await;
    reply.assert_error(404, "0x80040217", &format!("Entity 'lead' With Id = {missing} Does Not Exist"));
    let listed = env.get("annotations?$select=subject").await.json();
    assert_eq!(listed["value"], json!([]), "nothing was created");
    // The navigation property names the table it binds to.
    let contact = env.create("contacts", json!({"lastname": "Lee"})).await;
    let reply = env
        .post("annotations", json!({"subject": "Mixed", "objectid_lead@odata.bind": format!("/contacts({contact})")}))
        .await;
    reply.assert_error(400, "0x80048d19", "'objectid_lead' refers to lead records, not to contact records.");
}

#[tokio::test]
async fn s3_3_a_note_regarding_a_contact_works_too() {
    let env = Env::start().await;
    let contact = env.create("contacts", json!({"firstname": "Ann", "lastname": "Lee"})).await;
    let note = note_regarding(&env, "objectid_contact", &format!("/contacts({contact})"), "Met Ann").await;
    let row = env.get(&format!("annotations({note})?$select=objecttypecode,_objectid_value")).await.json();
    assert_eq!(row["objecttypecode"], "contact");
    assert_eq!(row["_objectid_value"], contact.as_str());
    let listed = env.get(&format!("annotations?$filter=_objectid_value%20eq%20{contact}&$select=subject")).await.json();
    assert_eq!(listed["value"][0]["subject"], "Met Ann");
    let regarding = env.get(&format!("annotations({note})/objectid_contact?$select=fullname")).await.json();
    assert_eq!(regarding["fullname"], "Ann Lee");
    // Moving the note to a lead changes its type code; clearing the lookup clears both.
    let lead_id = lead(&env, "Fleet renewal").await;
    let reply = env
        .patch(&format!("annotations({note})"), json!({"objectid_lead@odata.bind": format!("/leads({lead_id})")}))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let row = env.get(&format!("annotations({note})?$select=objecttypecode,_objectid_value")).await.json();
    assert_eq!(
        (row["objecttypecode"].as_str(), row["_objectid_value"].as_str()),
        (Some("lead"), Some(lead_id.as_str()))
    );
    let reply = env.patch(&format!("annotations({note})"), json!({"objectid_lead@odata.bind": null})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let row = env.get(&format!("annotations({note})?$select=objecttypecode,_objectid_value")).await.json();
    assert!(row["objecttypecode"].is_null() && row["_objectid_value"].is_null(), "{row}");
}

#[tokio::test]
async fn s8_2_an_unknown_column_of_a_note_gets_the_unknown_property_error() {
    let env = Env::start().await;
    env.post("annotations", json!({"subject": "X", "new_foo": 1})).await.assert_error(
        400,
        "0x80048d19",
        "The property 'new_foo' does not exist on type 'Microsoft.Dynamics.CRM.annotation'.",
    );
    let message = "Could not find a property named 'new_foo' on type 'Microsoft.Dynamics.CRM.annotation'.";
    env.get("annotations?$select=new_foo").await.assert_error(400, "0x80060888", message);
    env.get("annotations?$filter=new_foo%20eq%201").await.assert_error(400, "0x80060888", message);
    // The lookup column is read as _objectid_value, and bound only through objectid_<table>.
    env.get("annotations?$select=objectid").await.assert_error(400, "0x80060888", "'objectid'");
    env.post("annotations", json!({"objectid@odata.bind": "/leads(00000000-0000-0000-0000-000000000001)"}))
        .await
        .assert_error(400, "0x80048d19", "An undeclared property 'objectid'");
}

#[tokio::test]
async fn s10_2_metadata_lists_the_columns_of_a_note_with_their_types() {
    let env = Env::start().await;
    let table = env
        .get("EntityDefinitions(LogicalName='annotation')?$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,ObjectTypeCode,OwnershipType,ChangeTrackingEnabled")
        .await
        .json();
    assert_eq!(table["EntitySetName"], "annotations");
    assert_eq!(table["PrimaryIdAttribute"], "annotationid");
    assert_eq!(table["PrimaryNameAttribute"], "subject");
    assert_eq!(table["ObjectTypeCode"], 5);
    assert_eq!(table["OwnershipType"], "UserOwned");
    assert_eq!(table["ChangeTrackingEnabled"], false);

    let reply =
        env.get("EntityDefinitions(LogicalName='annotation')/Attributes?$select=LogicalName,AttributeType").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let types: BTreeMap<String, String> = reply.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["LogicalName"].as_str().unwrap().to_string(), a["AttributeType"].as_str().unwrap().to_string()))
        .collect();
    for (column, kind) in [
        ("annotationid", "Uniqueidentifier"),
        ("subject", "String"),
        ("notetext", "Memo"),
        ("isdocument", "Boolean"),
        ("filename", "String"),
        ("mimetype", "String"),
        ("documentbody", "Memo"),
        ("filesize", "Integer"),
        ("objectid", "Lookup"),
        ("objecttypecode", "EntityName"),
        ("ownerid", "Owner"),
        ("createdon", "DateTime"),
        ("modifiedon", "DateTime"),
        ("createdby", "Lookup"),
        ("modifiedby", "Lookup"),
        ("versionnumber", "BigInt"),
    ] {
        assert_eq!(types.get(column).map(String::as_str), Some(kind), "{column} in {types:?}");
    }
    assert!(!types.contains_key("statecode"), "notes have no state");

    let lengths = env
        .get("EntityDefinitions(LogicalName='annotation')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength")
        .await
        .json();
    let length = |name: &str| {
        lengths["value"].as_array().unwrap().iter().find(|a| a["LogicalName"] == name).map(|a| a["MaxLength"].clone())
    };
    assert_eq!(
        (length("subject"), length("filename"), length("mimetype")),
        (Some(json!(500)), Some(json!(255)), Some(json!(256)))
    );
    let regarding = env
        .get("EntityDefinitions(LogicalName='annotation')/Attributes(LogicalName='objectid')/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets")
        .await
        .json();
    let mut targets: Vec<&str> = regarding["Targets"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, ["account", "contact", "lead"]);
    let otc = env
        .get("EntityDefinitions(LogicalName='annotation')/Attributes(LogicalName='objecttypecode')?$select=LogicalName,AttributeType,AttributeTypeName,IsValidForCreate")
        .await
        .json();
    assert_eq!(otc["@odata.type"], "#Microsoft.Dynamics.CRM.EntityNameAttributeMetadata");
    assert_eq!(otc["AttributeTypeName"]["Value"], "EntityNameType");
    assert_eq!(otc["IsValidForCreate"], false, "set by the server from objectid");

    // $metadata binds each navigation property of the lookup to its table's entity set.
    let csdl = env.get("$metadata").await.text;
    for table in ["lead", "contact", "account"] {
        let binding = format!("<NavigationPropertyBinding Path=\"objectid_{table}\" Target=\"{table}s\" />");
        assert!(csdl.contains(&binding), "{binding}");
    }
}
