//! §4.11 System views: each table's views in `savedqueries`, with their FetchXML and grid layout, and running a
//! view with `GET {set}?savedQuery={savedqueryid}`.

use crate::{Env, label};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The views of a table with the given `querytype`, as clients list them.
async fn views(env: &Env, table: &str, query_type: i32) -> Vec<Json> {
    let filter = encode(&format!("returnedtypecode eq '{table}' and querytype eq {query_type}"));
    let reply = env
        .get(&format!(
            "savedqueries?$select=name,savedqueryid,querytype,fetchxml,layoutxml,isdefault,isquickfindquery,returnedtypecode&$filter={filter}&$orderby=name"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["value"].as_array().unwrap().clone()
}

async fn view_id(env: &Env, table: &str, name: &str) -> String {
    let found = views(env, table, 0).await;
    let view = found.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no view {name}: {found:?}"));
    view["savedqueryid"].as_str().unwrap().to_string()
}

/// Five contacts by last name; the one named `Dee` is deactivated.
async fn contacts(env: &Env) {
    for (first, last) in [("Eve", "Eck"), ("Bea", "Bay"), ("Dan", "Dee"), ("Al", "Ash"), ("Cy", "Cole")] {
        let id = env
            .create(
                "contacts",
                json!({"firstname": first, "lastname": last, "emailaddress1": format!("{first}@example.com")}),
            )
            .await;
        if last == "Dee" {
            let reply = env.patch(&format!("contacts({id})"), json!({"statecode": 1, "statuscode": 2})).await;
            assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
        }
    }
}

fn full_names(body: &Json) -> Vec<String> {
    body["value"].as_array().unwrap().iter().map(|r| r["fullname"].as_str().unwrap_or("-").to_string()).collect()
}

#[tokio::test]
async fn s4_11_a_tables_views_are_listed_with_their_fetchxml_and_layout() {
    let env = Env::start().await;
    let public = views(&env, "contact", 0).await;
    let names: Vec<&str> = public.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Active Contacts", "All Contacts"]);
    let active = &public[0];
    assert_eq!(active["isdefault"], true);
    assert_eq!(active["returnedtypecode"], "contact");
    let fetch = active["fetchxml"].as_str().unwrap();
    assert!(fetch.contains("<entity name=\"contact\">"), "{fetch}");
    assert!(fetch.contains("<attribute name=\"fullname\" />"), "{fetch}");
    assert!(fetch.contains("<condition attribute=\"statecode\" operator=\"eq\" value=\"0\" />"), "{fetch}");
    assert!(fetch.contains("<order attribute=\"fullname\" descending=\"false\" />"), "{fetch}");
    let layout = active["layoutxml"].as_str().unwrap();
    assert!(layout.starts_with("<grid name=\"resultset\" object=\"2\" jump=\"fullname\""), "{layout}");
    assert!(layout.contains("<row name=\"result\" id=\"contactid\"><cell name=\"fullname\""), "{layout}");

    let quick_find = views(&env, "contact", 4).await;
    assert_eq!(quick_find.len(), 1);
    assert_eq!(quick_find[0]["name"], "Quick Find Active Contacts");
    assert_eq!(quick_find[0]["isquickfindquery"], true);
    let lookup = views(&env, "contact", 64).await;
    assert_eq!(lookup.len(), 1);
    assert_eq!(lookup[0]["name"], "Contact Lookup View");
    // Every built-in table has its views, and their ids are the same in every environment.
    assert_eq!(views(&env, "account", 0).await[0]["name"], "Active Accounts");
    let other = Env::start().await;
    assert_eq!(view_id(&other, "contact", "Active Contacts").await, active["savedqueryid"].as_str().unwrap());
    // A view is a row like any other.
    let id = active["savedqueryid"].as_str().unwrap();
    let row = env.get(&format!("savedqueries({id})?$select=name,querytype,statecode")).await.json();
    assert_eq!(row["name"], "Active Contacts");
    assert_eq!(row["querytype"], 0);
    assert_eq!(row["statecode"], 0);
}

#[tokio::test]
async fn s4_11_running_the_active_view_returns_active_rows_in_the_views_order_with_its_columns() {
    let env = Env::start().await;
    contacts(&env).await;
    let id = view_id(&env, "contact", "Active Contacts").await;
    let reply = env.get(&format!("contacts?savedQuery={id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert_eq!(full_names(&body), ["Al Ash", "Bea Bay", "Cy Cole", "Eve Eck"]);
    assert!(body["@odata.context"].as_str().unwrap().contains("$metadata#contacts("), "{body}");
    let first = body["value"][0].as_object().unwrap();
    assert_eq!(first["emailaddress1"], "Al@example.com");
    assert!(first.contains_key("contactid"));
    assert!(!first.contains_key("firstname"), "only the view's columns: {first:?}");
    assert!(body.get("@odata.nextLink").is_none());

    let all = view_id(&env, "contact", "All Contacts").await;
    let body = env.get(&format!("contacts?savedQuery={all}")).await.json();
    assert_eq!(full_names(&body), ["Al Ash", "Bea Bay", "Cy Cole", "Dan Dee", "Eve Eck"]);
}

#[tokio::test]
async fn s4_11_a_view_pages_with_odata_maxpagesize_and_next_links_that_keep_the_view() {
    let env = Env::start().await;
    contacts(&env).await;
    let id = view_id(&env, "contact", "Active Contacts").await;
    let mut url = format!("contacts?savedQuery={id}");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let reply = env.send(env.request(Method::GET, &url).header("Prefer", "odata.maxpagesize=2")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.header("preference-applied"), Some("odata.maxpagesize=2"));
        let body = reply.json();
        assert!(body["value"].as_array().unwrap().len() <= 2);
        seen.extend(full_names(&body));
        pages += 1;
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains(&format!("savedQuery={id}")) && next.contains("$skiptoken="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, ["Al Ash", "Bea Bay", "Cy Cole", "Eve Eck"]);
    // A view goes with no other query option than its own next link's $skiptoken.
    env.get(&format!("contacts?savedQuery={id}&$top=1")).await.assert_error(
        400,
        "0x80060888",
        "The query parameter $top cannot be combined with savedQuery",
    );
}

#[tokio::test]
async fn s4_11_a_custom_table_gets_its_views_when_it_is_created() {
    let env = Env::start().await;
    let table = json!({
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "new_Project",
        "DisplayName": label("Project"),
        "DisplayCollectionName": label("Projects"),
        "OwnershipType": "UserOwned",
        "HasActivities": false,
        "HasNotes": false,
        "Attributes": [{
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 100, "DisplayName": label("Name")
        }]
    });
    let reply = env.post("EntityDefinitions", table).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let public = views(&env, "new_project", 0).await;
    let names: Vec<&str> = public.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Active Projects", "All Projects"]);
    assert_eq!(views(&env, "new_project", 4).await[0]["name"], "Quick Find Active Projects");
    assert_eq!(views(&env, "new_project", 64).await[0]["name"], "Project Lookup View");
    for name in ["Zeta", "Alpha", "Mu"] {
        env.create("new_projects", json!({"new_name": name})).await;
    }
    let id = public[0]["savedqueryid"].as_str().unwrap();
    let body = env.get(&format!("new_projects?savedQuery={id}")).await.json();
    let got: Vec<&str> = body["value"].as_array().unwrap().iter().map(|r| r["new_name"].as_str().unwrap()).collect();
    assert_eq!(got, ["Alpha", "Mu", "Zeta"]);
    // Deleting the table deletes its views.
    let reply = env
        .send(env.request(Method::DELETE, "EntityDefinitions(LogicalName='new_project')").header("If-Match", "*"))
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    env.get(&format!("savedqueries({id})")).await.assert_error(404, "0x80040217", "Does Not Exist");
}

#[tokio::test]
async fn s4_11_an_unknown_view_is_not_found_and_another_tables_view_is_refused() {
    let env = Env::start().await;
    env.get("contacts?savedQuery=00000000-0000-0000-0000-000000000001").await.assert_error(
        404,
        "0x80040217",
        "Entity 'savedquery' With Id = 00000000-0000-0000-0000-000000000001 Does Not Exist",
    );
    env.get("contacts?savedQuery=Active%20Contacts").await.assert_error(
        400,
        "0x80060888",
        "savedQuery takes the savedqueryid (a GUID) of a system view",
    );
    let accounts_view = view_id(&env, "account", "Active Accounts").await;
    env.get(&format!("contacts?savedQuery={accounts_view}")).await.assert_error(
        400,
        "0x80040203",
        &format!("returns 'account' rows, but it was run on the entity set 'contacts' of 'contact': run it with GET accounts?savedQuery={accounts_view}"),
    );
}

#[tokio::test]
async fn s4_11_user_query_is_still_refused_there_are_no_personal_views() {
    let env = Env::start().await;
    env.get("contacts?userQuery=00000000-0000-0000-0000-000000000001").await.assert_error(
        400,
        "0x80060888",
        "The query parameter userQuery is not supported by the emulator: it keeps no personal views",
    );
}

#[tokio::test]
async fn s4_11_views_survive_a_restart_with_the_same_ids_and_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = dataverse_emulator::EmulatorConfig { state: Some(dir.path().join("env.db")), ..crate::config() };
    let first = Env::with(config.clone()).await;
    let reply = first
        .post(
            "CreateEntities",
            json!({"Entities": [{
                "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
                "SchemaName": "new_Ticket",
                "DisplayName": label("Ticket"),
                "DisplayCollectionName": label("Tickets"),
                "OwnershipType": "UserOwned",
                "HasActivities": false,
                "HasNotes": false,
                "Attributes": [{
                    "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                    "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 100, "DisplayName": label("Name")
                }]
            }]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let contact_view = view_id(&first, "contact", "Active Contacts").await;
    let ticket_view = view_id(&first, "new_ticket", "Active Tickets").await;
    let count = |body: Json| body["value"].as_array().unwrap().len();
    let before = count(first.get("savedqueries?$select=name").await.json());
    first.emulator.stop().await;

    let second = Env::with(config).await;
    assert_eq!(view_id(&second, "contact", "Active Contacts").await, contact_view);
    assert_eq!(view_id(&second, "new_ticket", "Active Tickets").await, ticket_view);
    assert_eq!(count(second.get("savedqueries?$select=name").await.json()), before);
}
