//! §3 Records: create, retrieve, update, upsert, delete, preconditions, lookups and single properties;
//! §12 headers and envelopes.

use crate::Env;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

#[tokio::test]
async fn s3_2_create_answers_204_with_the_entity_url() {
    let env = Env::start().await;
    let reply = env.post("contacts", json!({"firstname": "Ann", "lastname": "Lee"})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    let location = reply.header("odata-entityid").unwrap();
    assert!(location.starts_with(&format!("{}contacts(", env.emulator.web_api)), "{location}");
    // §12.1: every response carries OData-Version and a request id.
    assert_eq!(reply.header("odata-version"), Some("4.0"));
    assert!(reply.header("req_id").is_some());
}

#[tokio::test]
async fn s3_2_create_with_representation_answers_201_with_the_row() {
    let env = Env::start().await;
    let reply = env
        .send(
            env.request(Method::POST, "contacts?$select=fullname,emailaddress1")
                .header("Prefer", "return=representation")
                .json(&json!({"firstname": "Ann", "lastname": "Lee", "emailaddress1": "ann@example.com"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.header("preference-applied"), Some("return=representation"));
    assert!(reply.header("odata-entityid").is_none());
    assert!(reply.header("content-type").unwrap().starts_with("application/json; odata.metadata=minimal"));
    let body = reply.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["@odata.context", "@odata.etag", "fullname", "emailaddress1", "contactid"]);
    assert_eq!(
        body["@odata.context"],
        format!("{}$metadata#contacts(fullname,emailaddress1)/$entity", env.emulator.web_api)
    );
    assert_eq!(body["fullname"], "Ann Lee", "fullname is computed");
}

#[tokio::test]
async fn s3_4_retrieve_returns_every_column_with_server_set_values() {
    let env = Env::start().await;
    let id = env.create("contacts", json!({"lastname": "Lee"})).await;
    let row = env.get(&format!("contacts({id})")).await;
    assert_eq!(row.status, StatusCode::OK);
    let row = row.json();
    assert_eq!(row["@odata.context"], format!("{}$metadata#contacts/$entity", env.emulator.web_api));
    assert_eq!(row["contactid"], id.as_str());
    assert_eq!(row["statecode"], 0);
    assert_eq!(row["statuscode"], 1);
    assert_eq!(row["donotemail"], false);
    assert_eq!(row["followemail"], true);
    assert!(row["firstname"].is_null(), "unset columns are null");
    let created = row["createdon"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "second precision, UTC: {created}");
    let who: Json = env.get("WhoAmI").await.json();
    assert_eq!(row["_ownerid_value"], who["UserId"]);
    assert_eq!(row["_createdby_value"], who["UserId"]);
    assert_eq!(row["@odata.etag"], format!("W/\"{}\"", row["versionnumber"]));
}

#[tokio::test]
async fn s3_5_update_changes_the_row_and_its_etag() {
    let env = Env::start().await;
    let id = env.create("contacts", json!({"firstname": "Ann", "lastname": "Lee"})).await;
    let before = env.get(&format!("contacts({id})")).await.json();
    let reply = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("If-Match", "*")
                .json(&json!({"lastname": "Smith"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let after = env.get(&format!("contacts({id})")).await.json();
    assert_eq!(after["fullname"], "Ann Smith");
    assert_ne!(after["@odata.etag"], before["@odata.etag"]);
    assert_eq!(after["createdon"], before["createdon"]);
    // With return=representation an update answers 200.
    let reply = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})?$select=lastname"))
                .header("Prefer", "return=representation")
                .json(&json!({"lastname": "Jones"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["lastname"], "Jones");
    assert!(reply.header("etag").unwrap().starts_with("W/\""));
}

#[tokio::test]
async fn s3_6_upsert_creates_then_updates_and_honours_preconditions() {
    let env = Env::start().await;
    let id = "5f2d2e2a-1111-4a4a-9b9b-000000000001";
    // Update-only on a missing row: 404.
    let reply = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("If-Match", "*")
                .json(&json!({"lastname": "X"})),
        )
        .await;
    reply.assert_error(404, "0x80040217", &format!("Entity 'contact' With Id = {id} Does Not Exist"));
    // Upsert creates with the id in the URL.
    let reply = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("Prefer", "return=representation")
                .json(&json!({"lastname": "New"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.json()["contactid"], id);
    // Then updates it.
    let reply = env.patch(&format!("contacts({id})"), json!({"lastname": "Again"})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.header("odata-entityid").unwrap(), format!("{}contacts({id})", env.emulator.web_api));
    // Create-only on an existing row: 412.
    let reply = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("If-None-Match", "*")
                .json(&json!({"lastname": "No"})),
        )
        .await;
    reply.assert_error(412, "0x80040237", "A record with matching key values already exists.");
    // POST with an id that exists: 412 as well.
    let reply = env.post("contacts", json!({"contactid": id, "lastname": "Dup"})).await;
    reply.assert_error(412, "0x80040237", "A record with matching key values already exists.");
}

#[tokio::test]
async fn s3_9_stale_etags_are_refused_and_current_ones_accepted() {
    let env = Env::start().await;
    let id = env.create("contacts", json!({"lastname": "Lee"})).await;
    let etag = env.get(&format!("contacts({id})")).await.json()["@odata.etag"].as_str().unwrap().to_string();
    let ok = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("If-Match", &etag)
                .json(&json!({"lastname": "A"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let stale = env
        .send(
            env.request(Method::PATCH, &format!("contacts({id})"))
                .header("If-Match", &etag)
                .json(&json!({"lastname": "B"})),
        )
        .await;
    stale.assert_error(
        412,
        "0x80060882",
        "The version of the existing record doesn't match the RowVersion property provided.",
    );
    let stale_delete =
        env.send(env.request(Method::DELETE, &format!("contacts({id})")).header("If-Match", &etag)).await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    // §3.4: a conditional GET with the current etag is 304.
    let current = env.get(&format!("contacts({id})")).await.json()["@odata.etag"].as_str().unwrap().to_string();
    let not_modified =
        env.send(env.request(Method::GET, &format!("contacts({id})")).header("If-None-Match", &current)).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn s3_8_delete_removes_the_row() {
    let env = Env::start().await;
    let id = env.create("contacts", json!({"lastname": "Gone"})).await;
    assert_eq!(env.delete(&format!("contacts({id})")).await.status, StatusCode::NO_CONTENT);
    env.get(&format!("contacts({id})")).await.assert_error(
        404,
        "0x80040217",
        &format!("Entity 'contact' With Id = {id} Does Not Exist"),
    );
    env.delete(&format!("contacts({id})")).await.assert_error(404, "0x80040217", "Does Not Exist");
}

#[tokio::test]
async fn s3_7_alternate_keys_address_rows_once_defined() {
    let env = Env::start().await;
    // No key is defined by default.
    let reply = env.get("contacts(emailaddress1='ann@example.com')").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let key = json!({"SchemaName": "new_EmailKey", "DisplayName": crate::label("Email key"), "KeyAttributes": ["emailaddress1"]});
    let reply = env.post("EntityDefinitions(LogicalName='contact')/Keys", key).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    // Upsert by key creates the row with the key's value copied in.
    let reply = env.patch("contacts(emailaddress1='O''Neil@example.com')", json!({"lastname": "O'Neil"})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(reply.header("odata-entityid").unwrap().ends_with("contacts(emailaddress1='O''Neil@example.com')"));
    // Keys match case-insensitively, as Dataverse's indexes do.
    let row = env.get("contacts(emailaddress1='o''neil@example.com')?$select=emailaddress1,lastname").await;
    assert_eq!(row.status, StatusCode::OK, "{}", row.text);
    assert_eq!(row.json()["emailaddress1"], "O'Neil@example.com");
    // A second row with the same key value violates the key.
    let reply = env.post("contacts", json!({"lastname": "Twin", "emailaddress1": "o'neil@example.com"})).await;
    reply.assert_error(412, "0x80060892", "Entity Key new_EmailKey violated");
    // Not found by key.
    env.get("contacts(emailaddress1='nobody@example.com')").await.assert_error(404, "0x80060891", "does not exist");
}

#[tokio::test]
async fn s3_3_lookups_are_bound_by_navigation_property() {
    let env = Env::start().await;
    let account = env.create("accounts", json!({"name": "Contoso"})).await;
    let contact = env
        .create(
            "contacts",
            json!({"lastname": "Lee", "parentcustomerid_account@odata.bind": format!("/accounts({account})")}),
        )
        .await;
    let row = env
        .send(
            env.request(Method::GET, &format!("contacts({contact})?$select=_parentcustomerid_value"))
                .header("Prefer", "odata.include-annotations=\"*\""),
        )
        .await
        .json();
    assert_eq!(row["_parentcustomerid_value"], account.as_str());
    assert_eq!(row["_parentcustomerid_value@OData.Community.Display.V1.FormattedValue"], "Contoso");
    assert_eq!(
        row["_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"],
        "parentcustomerid_account"
    );
    assert_eq!(row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "account");
    // The related row through the navigation property.
    let related = env.get(&format!("contacts({contact})/parentcustomerid_account?$select=name")).await.json();
    assert_eq!(related["name"], "Contoso");
    // The lookup column's own name is not a navigation property.
    let reply = env
        .post("contacts", json!({"lastname": "X", "parentcustomerid@odata.bind": format!("/accounts({account})")}))
        .await;
    reply.assert_error(
        400,
        "0x80048d19",
        "An undeclared property 'parentcustomerid' which only has property annotations",
    );
    // A binding to a row that does not exist.
    let missing = "00000000-0000-0000-0000-000000000001";
    let reply = env
        .post(
            "contacts",
            json!({"lastname": "X", "parentcustomerid_account@odata.bind": format!("accounts({missing})")}),
        )
        .await;
    reply.assert_error(404, "0x80040217", &format!("Entity 'account' With Id = {missing} Does Not Exist"));
    // Clearing with null.
    let reply = env.patch(&format!("contacts({contact})"), json!({"parentcustomerid_account@odata.bind": null})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(env.get(&format!("contacts({contact})")).await.json()["_parentcustomerid_value"].is_null());
}

#[tokio::test]
async fn s3_5_single_properties_are_read_written_and_cleared() {
    let env = Env::start().await;
    let id = env.create("contacts", json!({"lastname": "Lee", "jobtitle": "Chef"})).await;
    let reply = env.get(&format!("contacts({id})/jobtitle")).await;
    assert_eq!(
        reply.json(),
        json!({"@odata.context": format!("{}$metadata#contacts({id})/jobtitle", env.emulator.web_api), "value": "Chef"})
    );
    let reply =
        env.send(env.request(Method::PUT, &format!("contacts({id})/jobtitle")).json(&json!({"value": "Owner"}))).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(env.get(&format!("contacts({id})/jobtitle")).await.json()["value"], "Owner");
    assert_eq!(env.delete(&format!("contacts({id})/jobtitle")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(&format!("contacts({id})/jobtitle")).await.status,
        StatusCode::NO_CONTENT,
        "a null property answers 204"
    );
}

#[tokio::test]
async fn s12_4_who_am_i_answers_get_only() {
    let env = Env::start().await;
    let reply = env.get("WhoAmI").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(
        body["@odata.context"],
        format!("{}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse", env.emulator.web_api)
    );
    for field in ["BusinessUnitId", "UserId", "OrganizationId"] {
        assert!(body[field].as_str().is_some_and(|s| s.len() == 36), "{field}");
    }
    assert!(reply.header("x-ms-dop-hint").is_some());
    let post = env.post("WhoAmI", json!({})).await;
    post.assert_error(404, "", "No HTTP resource was found that matches the request URI");
}

#[tokio::test]
async fn s3_state_and_status_stay_consistent() {
    let env = Env::start().await;
    let id = env.create("leads", json!({"subject": "Interested", "lastname": "Kim"})).await;
    let row = env.get(&format!("leads({id})?$select=statecode,statuscode")).await.json();
    assert_eq!((row["statecode"].as_i64(), row["statuscode"].as_i64()), (Some(0), Some(1)));
    // Setting only the status reason moves the state with it.
    env.patch(&format!("leads({id})"), json!({"statuscode": 4})).await;
    let row = env.get(&format!("leads({id})?$select=statecode,statuscode")).await.json();
    assert_eq!((row["statecode"].as_i64(), row["statuscode"].as_i64()), (Some(2), Some(4)));
    // A status reason of another state is refused.
    let reply = env.patch(&format!("leads({id})"), json!({"statecode": 0, "statuscode": 3})).await;
    reply.assert_error(400, "0x80040203", "is not a valid status code");
}

#[tokio::test]
async fn a_lead_holds_its_address_and_lead_source_and_starts_open_and_new() {
    let env = Env::start().await;
    let id = env
        .create(
            "leads",
            json!({
                "subject": "Contact me — Contoso CRM", "firstname": "Ana", "lastname": "Lima",
                "emailaddress1": "ana@contoso.com", "companyname": "Contoso", "jobtitle": "CTO",
                "address1_city": "São Paulo", "address1_country": "Brazil", "leadsourcecode": 8
            }),
        )
        .await;
    let row = env
        .send(
            env.request(
                Method::GET,
                &format!("leads({id})?$select=address1_city,address1_country,leadsourcecode,statecode,statuscode"),
            )
            .header("Prefer", "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""),
        )
        .await
        .json();
    assert_eq!(row["address1_city"], "São Paulo");
    assert_eq!(row["address1_country"], "Brazil");
    assert_eq!(row["leadsourcecode@OData.Community.Display.V1.FormattedValue"], "Web");
    assert_eq!(row["statecode@OData.Community.Display.V1.FormattedValue"], "Open");
    assert_eq!(row["statuscode@OData.Community.Display.V1.FormattedValue"], "New");
    env.post("leads", json!({"subject": "S", "lastname": "L", "leadsourcecode": 42})).await.assert_error(
        400,
        "0x8004431a",
        "outside the valid range",
    );
}
