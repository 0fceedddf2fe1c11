//! §4.8 FetchXML queries (`?fetchXml=`), §4.9 SQL queries (`?sql=`), and §4.10 query options the emulator does not
//! implement, which are refused rather than ignored.

use crate::Env;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::collections::HashSet;

const PAGING: &str =
    "odata.include-annotations=\"Microsoft.Dynamics.CRM.fetchxmlpagingcookie,Microsoft.Dynamics.CRM.morerecords\"";

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Five accounts: name, employees, revenue, and a primary contact for three of them.
async fn accounts(env: &Env) -> Vec<String> {
    let mut contacts = Vec::new();
    for (first, last) in [("Ann", "Lee"), ("Bob", "Ray"), ("Cid", "Roe")] {
        contacts.push(env.create("contacts", json!({"firstname": first, "lastname": last})).await);
    }
    let mut ids = Vec::new();
    for (i, (name, employees, revenue)) in [
        ("Alpha", Some(10), 100.0),
        ("Beta", Some(20), 250.5),
        ("Gamma", None, 0.0),
        ("Delta", Some(40), 75.0),
        ("Epsilon", Some(5), 990.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"name": name, "revenue": revenue});
        if let Some(n) = employees {
            body["numberofemployees"] = json!(n);
        }
        if let Some(contact) = contacts.get(i) {
            body["primarycontactid@odata.bind"] = json!(format!("/contacts({contact})"));
        }
        ids.push(env.create("accounts", body).await);
    }
    ids
}

async fn fetch(env: &Env, set: &str, xml: &str) -> Json {
    let reply = fetch_reply(env, set, xml, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{xml}: {}", reply.text);
    reply.json()
}

async fn fetch_reply(env: &Env, set: &str, xml: &str, prefer: Option<&str>) -> crate::Reply {
    let mut request = env.request(Method::GET, &format!("{set}?fetchXml={}", encode(xml)));
    if let Some(p) = prefer {
        request = request.header("Prefer", p);
    }
    env.send(request).await
}

fn names(body: &Json) -> Vec<String> {
    body["value"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("-").to_string()).collect()
}

async fn fetch_names(env: &Env, inner: &str) -> Vec<String> {
    let xml = format!(
        "<fetch><entity name='account'><attribute name='name'/><order attribute='name'/>{inner}</entity></fetch>"
    );
    names(&fetch(env, "accounts", &xml).await)
}

#[tokio::test]
async fn s4_8_fetchxml_returns_the_attributes_asked_for_in_order_up_to_top() {
    let env = Env::start().await;
    accounts(&env).await;
    let body = fetch(
        &env,
        "accounts",
        "<fetch top='3' no-lock='true'><entity name='account'><attribute name='name'/><attribute name='numberofemployees'/>\
         <order attribute='numberofemployees' descending='true'/></entity></fetch>",
    )
    .await;
    assert!(
        body["@odata.context"].as_str().unwrap().ends_with("/$metadata#accounts(name,numberofemployees)"),
        "{body}"
    );
    let rows = body["value"].as_array().unwrap();
    assert_eq!(names(&body), ["Delta", "Beta", "Alpha"]);
    assert_eq!(rows[0]["numberofemployees"], 40);
    assert!(rows[0]["accountid"].is_string(), "the primary key always comes back");
    assert!(rows[0].get("revenue").is_none(), "only the attributes asked for: {}", rows[0]);
    // Without <attribute>, only the primary key; with <all-attributes/>, every column that has a value.
    let body =
        fetch(&env, "accounts", "<fetch top='1'><entity name='account'><order attribute='name'/></entity></fetch>")
            .await;
    let row = body["value"][0].as_object().unwrap();
    assert!(row.contains_key("accountid") && !row.contains_key("name"), "{row:?}");
    let body = fetch(
        &env,
        "accounts",
        "<fetch top='1'><entity name='account'><all-attributes/><order attribute='name'/></entity></fetch>",
    )
    .await;
    assert_eq!(body["value"][0]["name"], "Alpha");
    assert_eq!(body["value"][0]["revenue"], 100.0);
    assert!(body["value"][0]["_primarycontactid_value"].is_string(), "lookups as _x_value: {}", body["value"][0]);
}

#[tokio::test]
async fn s4_8_fetchxml_filters_with_each_operator_nested_and_or() {
    let env = Env::start().await;
    accounts(&env).await;
    let cond = |attribute: &str, operator: &str, value: &str| {
        format!("<filter><condition attribute='{attribute}' operator='{operator}' value='{value}'/></filter>")
    };
    assert_eq!(fetch_names(&env, &cond("name", "eq", "beta")).await, ["Beta"]);
    assert_eq!(fetch_names(&env, &cond("name", "ne", "Beta")).await, ["Alpha", "Delta", "Epsilon", "Gamma"]);
    assert_eq!(fetch_names(&env, &cond("numberofemployees", "gt", "10")).await, ["Beta", "Delta"]);
    assert_eq!(fetch_names(&env, &cond("numberofemployees", "ge", "10")).await, ["Alpha", "Beta", "Delta"]);
    assert_eq!(fetch_names(&env, &cond("numberofemployees", "lt", "10")).await, ["Epsilon"]);
    assert_eq!(fetch_names(&env, &cond("numberofemployees", "le", "10")).await, ["Alpha", "Epsilon"]);
    assert_eq!(fetch_names(&env, &cond("revenue", "gt", "250")).await, ["Beta", "Epsilon"]);
    assert_eq!(fetch_names(&env, &cond("name", "like", "%ta")).await, ["Beta", "Delta"]);
    assert_eq!(fetch_names(&env, &cond("name", "not-like", "%a")).await, ["Epsilon"]);
    assert_eq!(fetch_names(&env, &cond("name", "begins-with", "ga")).await, ["Gamma"]);
    assert_eq!(fetch_names(&env, &cond("name", "not-begin-with", "e")).await, ["Alpha", "Beta", "Delta", "Gamma"]);
    assert_eq!(fetch_names(&env, &cond("name", "ends-with", "lon")).await, ["Epsilon"]);
    assert_eq!(fetch_names(&env, &cond("name", "not-end-with", "a")).await, ["Epsilon"]);
    let null = "<filter><condition attribute='numberofemployees' operator='null'/></filter>";
    assert_eq!(fetch_names(&env, null).await, ["Gamma"]);
    let not_null = "<filter><condition attribute='primarycontactid' operator='not-null'/></filter>";
    assert_eq!(fetch_names(&env, not_null).await, ["Alpha", "Beta", "Gamma"]);
    let within = "<filter><condition attribute='name' operator='in'><value>Alpha</value><value>delta</value><value>Zeta</value></condition></filter>";
    assert_eq!(fetch_names(&env, within).await, ["Alpha", "Delta"]);
    let without = "<filter><condition attribute='numberofemployees' operator='not-in'><value>10</value><value>20</value></condition></filter>";
    assert_eq!(
        fetch_names(&env, without).await,
        ["Delta", "Epsilon"],
        "null is in no list, and not outside one either"
    );
    let between = "<filter><condition attribute='numberofemployees' operator='between'><value>10</value><value>20</value></condition></filter>";
    assert_eq!(fetch_names(&env, between).await, ["Alpha", "Beta"]);
    let nested = "<filter type='or'><condition attribute='name' operator='eq' value='Gamma'/>\
                  <filter type='and'><condition attribute='numberofemployees' operator='ge' value='20'/>\
                  <condition attribute='revenue' operator='lt' value='100'/></filter></filter>";
    assert_eq!(fetch_names(&env, nested).await, ["Delta", "Gamma"]);
    let two_filters = format!("{}{}", cond("name", "like", "%a%"), cond("numberofemployees", "lt", "30"));
    assert_eq!(fetch_names(&env, &two_filters).await, ["Alpha", "Beta"], "side-by-side filters hold together");
}

#[tokio::test]
async fn s4_8_fetchxml_link_entity_inner_and_outer_returns_alias_columns() {
    let env = Env::start().await;
    accounts(&env).await;
    let link = |link_type: &str, filter: &str| {
        format!(
            "<fetch><entity name='account'><attribute name='name'/><order attribute='name'/>\
             <link-entity name='contact' from='contactid' to='primarycontactid' alias='pc' link-type='{link_type}'>\
             <attribute name='firstname'/>{filter}</link-entity></entity></fetch>"
        )
    };
    let body = fetch(&env, "accounts", &link("inner", "")).await;
    assert_eq!(names(&body), ["Alpha", "Beta", "Gamma"]);
    let firsts: Vec<&str> =
        body["value"].as_array().unwrap().iter().map(|r| r["pc.firstname"].as_str().unwrap()).collect();
    assert_eq!(firsts, ["Ann", "Bob", "Cid"]);
    assert!(body["value"][0].get("pc.contactid").is_none(), "only the link's attributes: {}", body["value"][0]);
    let body = fetch(&env, "accounts", &link("outer", "")).await;
    assert_eq!(names(&body), ["Alpha", "Beta", "Delta", "Epsilon", "Gamma"]);
    assert!(body["value"][1]["pc.firstname"] == "Bob" && body["value"][2].get("pc.firstname").is_none(), "{body}");
    let filter = "<filter><condition attribute='lastname' operator='begins-with' value='R'/></filter>";
    assert_eq!(names(&fetch(&env, "accounts", &link("inner", filter)).await), ["Beta", "Gamma"]);
    assert_eq!(names(&fetch(&env, "accounts", &link("outer", filter)).await).len(), 5, "an outer link keeps every row");
}

#[tokio::test]
async fn s4_8_fetchxml_pages_with_the_paging_cookie_until_morerecords_is_false() {
    let env = Env::start().await;
    let mut created = HashSet::new();
    for i in 0..23 {
        created.insert(
            env.create("accounts", json!({"name": format!("Account {:02}", i % 7), "numberofemployees": i})).await,
        );
    }
    for order in ["", "<order attribute='name' descending='true'/>"] {
        let mut xml =
            format!("<fetch count='5'><entity name='account'><attribute name='name'/>{order}</entity></fetch>");
        let mut seen = Vec::new();
        let mut page = 1;
        loop {
            let reply = fetch_reply(&env, "accounts", &xml, Some(PAGING)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
            let body = reply.json();
            seen.extend(body["value"].as_array().unwrap().iter().map(|r| r["accountid"].as_str().unwrap().to_string()));
            if body["@Microsoft.Dynamics.CRM.morerecords"] == false {
                break;
            }
            assert_eq!(body["@Microsoft.Dynamics.CRM.morerecords"], true, "{body}");
            // As Microsoft's Python SDK does: decode the inner cookie twice and send it back with the next page.
            let cookie = body["@Microsoft.Dynamics.CRM.fetchxmlpagingcookie"].as_str().expect("a paging cookie");
            let document = roxmltree::Document::parse(cookie).unwrap();
            let outer = document.root_element();
            page = outer.attribute("pagenumber").unwrap().parse::<u32>().unwrap();
            let once =
                percent_encoding::percent_decode_str(outer.attribute("pagingcookie").unwrap()).decode_utf8().unwrap();
            let inner = percent_encoding::percent_decode_str(&once).decode_utf8().unwrap().to_string();
            assert!(inner.starts_with("<cookie page=\""), "{inner}");
            let escaped = inner.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
            xml = format!(
                "<fetch count='5' page='{page}' paging-cookie=\"{escaped}\"><entity name='account'><attribute name='name'/>{order}</entity></fetch>"
            );
        }
        assert_eq!(page, 5, "23 rows in pages of 5");
        assert_eq!(seen.len(), 23, "every row exactly once");
        assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), created);
    }
    // Page numbers without a cookie page by position.
    let reply = fetch_reply(
        &env,
        "accounts",
        "<fetch count='10' page='3'><entity name='account'><order attribute='numberofemployees'/><attribute name='numberofemployees'/></entity></fetch>",
        Some(PAGING),
    )
    .await;
    let body = reply.json();
    let employees: Vec<i64> =
        body["value"].as_array().unwrap().iter().map(|r| r["numberofemployees"].as_i64().unwrap()).collect();
    assert_eq!(employees, [20, 21, 22]);
    assert_eq!(body["@Microsoft.Dynamics.CRM.morerecords"], false);
    // Without the Prefer, no annotations.
    let body = fetch(&env, "accounts", "<fetch count='5'><entity name='account'/></fetch>").await;
    assert!(body.get("@Microsoft.Dynamics.CRM.morerecords").is_none() && body["value"].as_array().unwrap().len() == 5);
}

#[tokio::test]
async fn s4_8_fetchxml_returns_the_total_record_count_when_asked() {
    let env = Env::start().await;
    accounts(&env).await;
    let xml = "<fetch count='2' returntotalrecordcount='true'><entity name='account'>\
               <filter><condition attribute='numberofemployees' operator='not-null'/></filter></entity></fetch>";
    let reply = fetch_reply(&env, "accounts", xml, Some("odata.include-annotations=\"*\"")).await;
    let body = reply.json();
    assert_eq!(body["@Microsoft.Dynamics.CRM.totalrecordcount"], 4, "{body}");
    assert_eq!(body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"], false);
    assert_eq!(body["@Microsoft.Dynamics.CRM.morerecords"], true);
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn s4_8_fetchxml_returns_formatted_values_as_odata_queries_do() {
    let env = Env::start().await;
    accounts(&env).await;
    let xml = "<fetch><entity name='account'><attribute name='primarycontactid'/><attribute name='revenue'/>\
               <filter><condition attribute='name' operator='eq' value='Alpha'/></filter></entity></fetch>";
    let reply = fetch_reply(
        &env,
        "accounts",
        xml,
        Some("odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""),
    )
    .await;
    let row = &reply.json()["value"][0];
    assert_eq!(row["_primarycontactid_value@OData.Community.Display.V1.FormattedValue"], "Ann Lee", "{row}");
    assert!(row["revenue@OData.Community.Display.V1.FormattedValue"].is_string(), "{row}");
}

#[tokio::test]
async fn s4_8_fetchxml_wrong_entity_malformed_over_long_and_unsupported_are_refused() {
    let env = Env::start().await;
    accounts(&env).await;
    let reply = fetch_reply(&env, "accounts", "<fetch><entity name='contact'/></fetch>", None).await;
    reply.assert_error(
        400,
        "0x80060888",
        "The fetchXml queries the entity 'contact', but it was sent to the entity set 'accounts'",
    );
    let reply = fetch_reply(&env, "accounts", "<fetch><entity name='account'></fetch>", None).await;
    reply.assert_error(400, "0x80060888", "The fetchXml is not well-formed XML");
    let long = format!("<fetch><entity name='account'>{}</entity></fetch>", "<attribute name='name'/>".repeat(1500));
    let reply = fetch_reply(&env, "accounts", &long, None).await;
    reply.assert_error(400, "0x80060888", "at most 32768");
    let reply = fetch_reply(
        &env,
        "accounts",
        "<fetch><entity name='account'><attribute name='nosuch'/></entity></fetch>",
        None,
    )
    .await;
    reply.assert_error(400, "0x80041103", "'account' entity doesn't contain attribute with Name = 'nosuch'");
    let reply = fetch_reply(&env, "accounts", "<fetch distinct='true'><entity name='account'/></fetch>", None).await;
    reply.assert_error(400, "0x80060888", "distinct='true' is not supported");
    let reply = fetch_reply(
        &env,
        "accounts",
        "<fetch><entity name='account'><filter><condition attribute='createdon' operator='last-x-days' value='3'/></filter></entity></fetch>",
        None,
    )
    .await;
    reply.assert_error(400, "0x80060888", "The condition operator 'last-x-days' is not supported");
    let reply =
        env.get(&format!("accounts?fetchXml={}&$top=1", encode("<fetch><entity name='account'/></fetch>"))).await;
    reply.assert_error(400, "0x80060888", "The query parameter $top cannot be combined with fetchXml");
}

async fn sql(env: &Env, text: &str) -> crate::Reply {
    env.get(&format!("accounts?sql={}", encode(text))).await
}

#[tokio::test]
async fn s4_9_sql_selects_columns_with_top_where_and_order_by() {
    let env = Env::start().await;
    accounts(&env).await;
    let reply = sql(&env, "SELECT TOP 2 name, numberofemployees FROM account WHERE numberofemployees >= 10 ORDER BY numberofemployees DESC").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert!(body["@odata.context"].as_str().unwrap().ends_with("#accounts(name,numberofemployees)"), "{body}");
    assert_eq!(names(&body), ["Delta", "Beta"]);
    assert_eq!(body["value"][0]["numberofemployees"], 40);
    assert!(body["value"][0].get("revenue").is_none());
    for (where_clause, expected) in [
        ("name = 'gamma' OR (numberofemployees < 10 AND NOT name LIKE 'B%')", vec!["Epsilon", "Gamma"]),
        ("numberofemployees IS NULL", vec!["Gamma"]),
        ("numberofemployees IS NOT NULL AND name <> 'Alpha' AND name != 'Beta'", vec!["Delta", "Epsilon"]),
        ("name IN ('Alpha', 'Delta', 'Zeta')", vec!["Alpha", "Delta"]),
        ("name NOT IN ('Alpha', 'Delta')", vec!["Beta", "Epsilon", "Gamma"]),
        ("revenue > 100 AND revenue <= 990", vec!["Beta", "Epsilon"]),
        ("name LIKE '%ta'", vec!["Beta", "Delta"]),
    ] {
        let reply = sql(&env, &format!("SELECT name FROM account WHERE {where_clause} ORDER BY name")).await;
        assert_eq!(reply.status, StatusCode::OK, "{where_clause}: {}", reply.text);
        assert_eq!(names(&reply.json()), expected, "{where_clause}");
    }
}

#[tokio::test]
async fn s4_9_sql_join_group_by_subqueries_and_other_tables_are_refused() {
    let env = Env::start().await;
    accounts(&env).await;
    sql(&env, "SELECT a.name FROM account a JOIN contact c ON a.primarycontactid = c.contactid").await.assert_error(
        400,
        "0x80060888",
        "is not supported by the emulator's SQL",
    );
    sql(&env, "SELECT name FROM account INNER JOIN contact ON primarycontactid = contactid").await.assert_error(
        400,
        "0x80060888",
        "JOIN is not supported",
    );
    sql(&env, "SELECT name FROM account GROUP BY name").await.assert_error(
        400,
        "0x80060888",
        "GROUP BY is not supported",
    );
    sql(&env, "SELECT name FROM account WHERE name IN (SELECT fullname FROM contact)").await.assert_error(
        400,
        "0x80060888",
        "A subquery is not supported",
    );
    sql(&env, "SELECT fullname FROM contact").await.assert_error(
        400,
        "0x80060888",
        "The sql queries the table 'contact'",
    );
    sql(&env, "SELECT nosuch FROM account").await.assert_error(400, "0x80041103", "Name = 'nosuch'");
}

#[tokio::test]
async fn s4_10_unknown_query_options_are_refused_not_ignored() {
    let env = Env::start().await;
    accounts(&env).await;
    env.get("accounts?foo=1").await.assert_error(400, "0x80060888", "The query parameter foo is not supported");
    env.get("accounts?userQuery=00000000-0000-0000-0000-000000000000").await.assert_error(
        400,
        "0x80060888",
        "The query parameter userQuery is not supported",
    );
    env.get(&format!("accounts?fetchXml={}&sql=x", encode("<fetch><entity name='account'/></fetch>")))
        .await
        .assert_error(400, "0x80060888", "fetchXml and sql are two queries");
    let id =
        env.get("accounts?$select=name&$top=1").await.json()["value"][0]["accountid"].as_str().unwrap().to_string();
    env.get(&format!("accounts({id})?fetchXml={}", encode("<fetch><entity name='account'/></fetch>")))
        .await
        .assert_error(400, "0x80060888", "The query parameter fetchXml queries an entity set");
    // Parameter aliases are implemented, and still answered.
    let reply = env.get("accounts?$select=name&$filter=name%20eq%20@p1&@p1='Beta'").await;
    assert_eq!(names(&reply.json()), ["Beta"]);
}

#[tokio::test]
async fn s4_9_sql_results_page_through_next_links_that_keep_the_statement() {
    let env = Env::start().await;
    accounts(&env).await;
    let mut url = format!("accounts?sql={}", encode("SELECT name FROM account WHERE revenue >= 75 ORDER BY name"));
    let mut seen = Vec::new();
    loop {
        let reply = env.send(env.request(Method::GET, &url).header("Prefer", "odata.maxpagesize=2")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let body = reply.json();
        seen.extend(names(&body));
        match body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.contains("sql=") && next.contains("$skiptoken="), "{next}");
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(seen, ["Alpha", "Beta", "Delta", "Epsilon"]);
}
