//! §5 Query pages, byte for byte: the exact text a page of rows is answered with — property order, annotations,
//! number and date forms, links — for a query with `$select`, with all columns, ordered and filtered, a tracked
//! read and a delta read, all with `Prefer: odata.include-annotations="*"`. Other tests read pages as JSON values;
//! these pin the bytes clients see, which a JSON value comparison would not notice changing.
//!
//! What differs from run to run is replaced before the comparison: the server's address, the times rows were
//! last written (and their formatted values), the acting user, and delta tokens, which hold the time they were issued.
//! `PIN_PAGES=1` rewrites the expected files from what the emulator answers.

use crate::{Env, Reply};
use reqwest::{Method, StatusCode};
use serde_json::json;

const ANNOTATIONS: &str = "odata.include-annotations=\"*\"";
const ACCOUNT: &str = "7d2f4a3e-0000-4000-8000-000000000001";

/// Three contacts and an account with fixed ids, covering text, choice, yes/no, whole number, currency, date
/// and lookup columns, and a row with most columns empty.
async fn seeded() -> Env {
    let env = Env::start().await;
    let account = json!({"accountid": ACCOUNT, "name": "Contoso \"Ltd\" <é>"});
    assert_eq!(env.post("accounts", account).await.status, StatusCode::NO_CONTENT);
    let contacts = [
        json!({"contactid": "00000000-0000-4000-8000-00000000000c", "firstname": "Zoë", "lastname": "Adams",
               "gendercode": 2, "donotemail": true, "numberofchildren": 1234567, "annualincome": 52000.5,
               "birthdate": "1990-04-12", "parentcustomerid_account@odata.bind": format!("/accounts({ACCOUNT})")}),
        json!({"contactid": "00000000-0000-4000-8000-00000000000a", "lastname": "baker", "annualincome": -0.125,
               "numberofchildren": 3, "description": "line\nbreak\ttab \\ \u{1F600}"}),
        json!({"contactid": "00000000-0000-4000-8000-00000000000b", "lastname": "Carter"}),
    ];
    for mut contact in contacts {
        // Fixes `createdon` (at midnight), so that its value and formatted value are compared too.
        contact["overriddencreatedon"] = json!("2020-04-01");
        let reply = env.post("contacts", contact).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    }
    env
}

async fn get(env: &Env, url: &str, prefer: &str) -> Reply {
    let reply = env.send(env.request(Method::GET, url).header("Prefer", prefer)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
}

/// The page's text with what differs between runs replaced by placeholders.
fn stable(env: &Env, reply: &Reply) -> String {
    let mut text = reply.text.replace(&env.emulator.web_api, "{api}");
    let body = reply.json();
    let rows = body["value"].as_array().cloned().unwrap_or_default();
    let volatile = ["modifiedon", "_createdby_value", "_modifiedby_value", "_ownerid_value"];
    for row in &rows {
        for (key, value) in row.as_object().into_iter().flatten() {
            let property = key.split('@').next().unwrap_or_default();
            if let (true, Some(text_value)) = (volatile.contains(&property), value.as_str()) {
                text = text.replace(&format!("\"{text_value}\""), "\"{volatile}\"");
            }
        }
    }
    if let Some(start) = text.find("$deltatoken=") {
        let end = start + text[start..].find('"').expect("the link ends");
        text.replace_range(start..end, "$deltatoken={token}");
    }
    text
}

fn check(env: &Env, name: &str, reply: &Reply) {
    let actual = stable(env, reply);
    let path = format!("{}/tests/conformance/pages/{name}.json", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("PIN_PAGES").is_some() {
        std::fs::write(&path, &actual).expect("the expected page is written");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; PIN_PAGES=1 writes it"));
    assert_eq!(actual, expected, "the page {name} differs from {path}");
}

#[tokio::test]
async fn s5_a_page_with_select_and_annotations_reads_byte_for_byte() {
    let env = seeded().await;
    let select = "contacts?$select=lastname,firstname,gendercode,donotemail,numberofchildren,annualincome,birthdate,\
                  description,_parentcustomerid_value,contactid,statecode";
    let prefer = format!("odata.maxpagesize=2,{ANNOTATIONS}");
    let first = get(&env, select, &prefer).await;
    check(&env, "select_first", &first);
    let next = first.json()["@odata.nextLink"].as_str().expect("a second page").to_string();
    check(&env, "select_second", &get(&env, &next, &prefer).await);
    check(&env, "select_plain", &get(&env, select, "odata.maxpagesize=2").await);
}

#[tokio::test]
async fn s5_a_page_of_all_columns_reads_byte_for_byte() {
    let env = seeded().await;
    check(&env, "all_columns", &get(&env, "contacts?$count=true", ANNOTATIONS).await);
}

#[tokio::test]
async fn s5_an_ordered_filtered_page_reads_byte_for_byte() {
    let env = seeded().await;
    let url = "contacts?$select=lastname,annualincome&$orderby=lastname desc&$filter=lastname ne 'Nobody'";
    let prefer = format!("odata.maxpagesize=1,{ANNOTATIONS},Microsoft.Dynamics.CRM.totalrecordcount");
    let first = get(&env, url, &prefer).await;
    check(&env, "ordered_first", &first);
    let next = first.json()["@odata.nextLink"].as_str().expect("a second page").to_string();
    check(&env, "ordered_second", &get(&env, &next, &prefer).await);
}

#[tokio::test]
async fn s7_tracked_and_delta_pages_read_byte_for_byte() {
    let env = seeded().await;
    let url = "contacts?$select=firstname,lastname,gendercode,_parentcustomerid_value";
    let prefer = format!("odata.track-changes,odata.maxpagesize=2,{ANNOTATIONS}");
    let first = get(&env, url, &prefer).await;
    check(&env, "tracked_first", &first);
    let next = first.json()["@odata.nextLink"].as_str().expect("a second page").to_string();
    let last = get(&env, &next, &prefer).await;
    check(&env, "tracked_last", &last);
    let delta = last.json()["@odata.deltaLink"].as_str().expect("a delta link").to_string();

    let changed = env.patch("contacts(00000000-0000-4000-8000-00000000000b)", json!({"firstname": "Cy"})).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    let deleted = env.delete("contacts(00000000-0000-4000-8000-00000000000a)").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    check(&env, "delta", &get(&env, &delta, &prefer).await);
}

#[tokio::test]
async fn s5_a_retrieved_row_reads_byte_for_byte() {
    let env = seeded().await;
    let url = "contacts(00000000-0000-4000-8000-00000000000c)?$select=firstname,_parentcustomerid_value,birthdate";
    check(&env, "retrieved", &get(&env, url, ANNOTATIONS).await);
}
