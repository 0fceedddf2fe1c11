//! §4 Queries: `$select`, `$filter`, `$orderby`, `$top`, `$count`, paging, annotations, and the options
//! Dataverse does not support.

use crate::Env;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::collections::HashSet;

async fn people(env: &Env) {
    for (first, last, children, gender) in [
        ("Ann", "Lee", 2, 2),
        ("Bob", "O'Bryan", 0, 1),
        ("Cid", "Smith", 5, 1),
        ("Dee", "smithers", 1, 2),
        ("Eve", "Adams", 3, 2),
    ] {
        env.create(
            "contacts",
            json!({"firstname": first, "lastname": last, "numberofchildren": children, "gendercode": gender, "emailaddress1": format!("{}@example.com", first.to_lowercase())}),
        )
        .await;
    }
    env.create("contacts", json!({"firstname": "Nol", "lastname": "Nobody"})).await;
}

async fn names(env: &Env, query: &str) -> Vec<String> {
    let reply = env.get(&format!("contacts?$select=firstname&{query}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    reply.json()["value"].as_array().unwrap().iter().map(|r| r["firstname"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn s4_2_filter_supports_comparisons_logic_functions_and_null() {
    let env = Env::start().await;
    people(&env).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let q = |f: &str| format!("$filter={}", urlencode(f));
    assert_eq!(sorted(names(&env, &q("numberofchildren gt 1")).await), ["Ann", "Cid", "Eve"]);
    assert_eq!(sorted(names(&env, &q("numberofchildren ge 1 and numberofchildren le 2")).await), ["Ann", "Dee"]);
    assert_eq!(sorted(names(&env, &q("gendercode eq 1 or (numberofchildren eq 3)")).await), ["Bob", "Cid", "Eve"]);
    assert_eq!(sorted(names(&env, &q("not (gendercode eq 2) and numberofchildren ne null")).await), ["Bob", "Cid"]);
    assert_eq!(names(&env, &q("numberofchildren eq null")).await, ["Nol"]);
    // Strings compare case-insensitively; quotes are escaped by doubling.
    assert_eq!(names(&env, &q("lastname eq 'LEE'")).await, ["Ann"]);
    assert_eq!(names(&env, &q("lastname eq 'O''Bryan'")).await, ["Bob"]);
    assert_eq!(sorted(names(&env, &q("startswith(lastname,'SMITH')")).await), ["Cid", "Dee"]);
    assert_eq!(names(&env, &q("endswith(lastname,'ers')")).await, ["Dee"]);
    assert_eq!(sorted(names(&env, &q("contains(emailaddress1,'e@')")).await), ["Dee", "Eve"]);
    // Parameter aliases.
    assert_eq!(names(&env, "$filter=lastname%20eq%20@p1&@p1='Adams'").await, ["Eve"]);
}

#[tokio::test]
async fn s4_2_filter_on_lookups_uses_the_value_property_and_bare_guids() {
    let env = Env::start().await;
    let account = env.create("accounts", json!({"name": "Contoso"})).await;
    env.create("contacts", json!({"firstname": "In", "lastname": "A", "parentcustomerid_account@odata.bind": format!("/accounts({account})")})).await;
    env.create("contacts", json!({"firstname": "Out", "lastname": "B"})).await;
    assert_eq!(names(&env, &format!("$filter=_parentcustomerid_value%20eq%20{account}")).await, ["In"]);
    let reply = env.get(&format!("contacts?$filter=_parentcustomerid_value%20eq%20'{account}'")).await;
    reply.assert_error(400, "0x80060888", "A binary operator with incompatible types was detected. Found operand types 'Edm.Guid' and 'Edm.String' for operator kind 'Equal'.");
}

#[tokio::test]
async fn s4_2_filter_syntax_errors_are_reported() {
    let env = Env::start().await;
    let reply = env.get("contacts?$filter=lastname%20eq%20'O'Bryan'").await;
    reply.assert_error(
        400,
        "0x80060888",
        "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''.",
    );
}

#[tokio::test]
async fn s4_3_orderby_top_and_count() {
    let env = Env::start().await;
    people(&env).await;
    assert_eq!(
        names(&env, "$orderby=lastname&$filter=lastname%20ne%20'Nobody'").await,
        ["Eve", "Ann", "Bob", "Cid", "Dee"]
    );
    assert_eq!(
        names(&env, "$orderby=gendercode%20desc,firstname%20asc").await,
        ["Ann", "Dee", "Eve", "Bob", "Cid", "Nol"]
    );
    assert_eq!(names(&env, "$orderby=numberofchildren%20desc&$top=2").await, ["Cid", "Eve"]);
    let body = env.get("contacts?$select=firstname&$filter=gendercode%20eq%202&$count=true").await.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys[..2], ["@odata.context", "@odata.count"]);
    assert_eq!(body["@odata.count"], 3);
    let count = env.get("contacts/$count").await;
    assert!(count.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(count.text, "6");
}

#[tokio::test]
async fn s4_1_unsupported_options_are_refused() {
    let env = Env::start().await;
    env.get("contacts?$skip=10").await.assert_error(400, "0x80060888", "The query parameter $skip is not supported");
    env.get("contacts?$search=ann").await.assert_error(
        400,
        "0x80060888",
        "The query parameter $search is not supported",
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'(' | b')' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn page(env: &Env, url: &str, size: usize) -> (Vec<String>, Option<String>, Option<String>) {
    let reply = env.send(env.request(Method::GET, url).header("Prefer", format!("odata.maxpagesize={size}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let applied = reply.header("preference-applied").map(str::to_string);
    let body = reply.json();
    let ids = body["value"].as_array().unwrap().iter().map(|r| r["contactid"].as_str().unwrap().to_string()).collect();
    (ids, body["@odata.nextLink"].as_str().map(str::to_string), applied)
}

#[tokio::test]
async fn s4_5_paging_follows_next_links_and_stays_correct_under_inserts() {
    let env = Env::start().await;
    let mut existing = HashSet::new();
    for i in 0..25 {
        existing.insert(env.create("contacts", json!({"lastname": format!("Row {i:02}")})).await);
    }
    let (first, next, applied) = page(&env, "contacts?$select=lastname", 10).await;
    assert_eq!(first.len(), 10);
    assert_eq!(applied.as_deref(), Some("odata.maxpagesize=10"));
    let next = next.expect("a next link");
    assert!(next.starts_with(&format!("{}contacts?", env.emulator.web_api)), "{next}");
    assert!(next.contains("$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22"), "{next}");
    // Rows inserted between pages never make an existing row appear twice or go missing.
    for i in 0..7 {
        env.create("contacts", json!({"lastname": format!("Late {i}")})).await;
    }
    let mut seen: Vec<String> = first;
    let mut link = Some(next);
    let mut pages = 1;
    while let Some(url) = link {
        let (ids, next, _) = page(&env, &url, 10).await;
        seen.extend(ids);
        link = next;
        pages += 1;
        assert!(pages < 10, "paging does not end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    assert!(existing.iter().all(|id| unique.contains(id)), "every row that existed is seen");
}

#[tokio::test]
async fn s4_5_paging_with_orderby_keeps_the_order_across_pages() {
    let env = Env::start().await;
    for i in 0..23 {
        // Repeated last names, so the primary key breaks ties across page boundaries.
        env.create("contacts", json!({"lastname": format!("Name {}", i % 4), "firstname": format!("{i:02}")})).await;
    }
    let mut all = Vec::new();
    let mut url = Some("contacts?$select=lastname,firstname&$orderby=lastname%20desc".to_string());
    while let Some(u) = url {
        let reply = env.send(env.request(Method::GET, &u).header("Prefer", "odata.maxpagesize=5")).await;
        let body = reply.json();
        all.extend(body["value"].as_array().unwrap().iter().map(|r| r["lastname"].as_str().unwrap().to_string()));
        url = body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(all.len(), 23);
    let mut expected = all.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(all, expected);
}

#[tokio::test]
async fn s4_5_page_sizes_over_5000_are_refused() {
    let env = Env::start().await;
    let reply = env.send(env.request(Method::GET, "contacts").header("Prefer", "odata.maxpagesize=5001")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn s4_6_formatted_values_come_only_when_asked() {
    let env = Env::start().await;
    let id = env
        .create("accounts", json!({"name": "Contoso", "numberofemployees": 9500, "revenue": 100000, "industrycode": 1, "donotpostalmail": false}))
        .await;
    let plain = env.get(&format!("accounts({id})?$select=numberofemployees")).await.json();
    assert!(plain.get("numberofemployees@OData.Community.Display.V1.FormattedValue").is_none());
    let reply = env
        .send(
            env.request(
                Method::GET,
                &format!("accounts({id})?$select=numberofemployees,revenue,industrycode,donotpostalmail,statecode"),
            )
            .header("Prefer", "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""),
        )
        .await;
    assert_eq!(
        reply.header("preference-applied"),
        Some("odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"")
    );
    let row = reply.json();
    let formatted = |p: &str| row[format!("{p}@OData.Community.Display.V1.FormattedValue")].clone();
    assert_eq!(formatted("numberofemployees"), "9,500");
    assert_eq!(formatted("revenue"), "$100,000.00");
    assert_eq!(formatted("industrycode"), "Accounting");
    assert_eq!(formatted("donotpostalmail"), "Allow");
    assert_eq!(formatted("statecode"), "Active");
    // The annotation comes just before its property.
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    let at = keys.iter().position(|k| *k == "numberofemployees").unwrap();
    assert_eq!(keys[at - 1], "numberofemployees@OData.Community.Display.V1.FormattedValue");
    let _: &Json = &row;
}
