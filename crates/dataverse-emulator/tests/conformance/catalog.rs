//! What a reader that ingests Dataverse tables relies on, against an environment with generated tables: §10.2 one
//! `EntityDefinitions` call listing every public table, the attributes of one table with their type-specific
//! properties through casts, §4.11 the public views of every table in `savedqueries`, §7 tracked reads that carry
//! the same annotations and columns as a query on every page and in the delta, and `versionnumber`.

use crate::{Env, Reply, config};
use dataverse_emulator::EmulatorConfig;
use dataverse_emulator::schema::generated::{ROWS_PER_TABLE, generated_tables, row_id};
use dataverse_emulator::schema::{AttributeKind, DateFormat, Table};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

const GENERATED: usize = 60;
/// The tables every environment has: account, activitypointer, annotation, asyncoperation, bulkdeleteoperation,
/// contact, lead, savedquery, systemuser and task.
const BUILT_IN: usize = 10;

async fn with_catalog() -> Env {
    Env::with(EmulatorConfig { generated_tables: GENERATED, ..config() }).await
}

fn value(reply: &Reply) -> Vec<Json> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["value"].as_array().expect("a value array").clone()
}

/// The first generated table with a column the predicate accepts, and that column's logical name.
fn table_with(tables: &[Table], accepts: impl Fn(&AttributeKind) -> bool) -> (&Table, String) {
    tables
        .iter()
        .filter(|t| !t.is_private)
        .find_map(|t| {
            t.attributes.iter().find(|a| a.is_custom && accepts(&a.kind)).map(|a| (t, a.logical_name.clone()))
        })
        .expect("the catalog has such a column")
}

#[tokio::test]
async fn s10_2_one_call_lists_every_public_table_without_attributes() {
    let env = with_catalog().await;
    let tables = value(
        &env.get(
            "EntityDefinitions?$select=LogicalName,DisplayName,EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,\
             ChangeTrackingEnabled,IsPrivate&$filter=IsPrivate%20eq%20false",
        )
        .await,
    );
    let generated = generated_tables(GENERATED);
    let private: Vec<&Table> = generated.iter().filter(|t| t.is_private).collect();
    assert!(!private.is_empty());
    assert_eq!(tables.len(), BUILT_IN + GENERATED - private.len());
    for table in &tables {
        assert_eq!(table["IsPrivate"], false);
        assert!(table.get("Attributes").is_none() && table.get("SchemaName").is_none(), "{table}");
    }
    let first = &generated[0];
    let listed = tables.iter().find(|t| t["LogicalName"] == first.logical_name.as_str()).unwrap();
    assert_eq!(listed["EntitySetName"], first.entity_set_name.as_str());
    assert_eq!(listed["PrimaryIdAttribute"], format!("{}id", first.logical_name));
    assert_eq!(listed["PrimaryNameAttribute"], first.primary_name.as_str());
    assert_eq!(listed["DisplayName"]["UserLocalizedLabel"]["Label"], first.display_name.as_str());
    assert_eq!(listed["ChangeTrackingEnabled"], first.change_tracking_enabled);
    assert!(tables.iter().any(|t| t["ChangeTrackingEnabled"] == false));
    assert!(!tables.iter().any(|t| t["LogicalName"] == private[0].logical_name.as_str()));
    let hidden = value(&env.get("EntityDefinitions?$select=LogicalName&$filter=IsPrivate%20eq%20true").await);
    assert_eq!(hidden.len(), private.len());
}

#[tokio::test]
async fn s10_2_attributes_of_a_generated_table_carry_types_labels_formats_precisions_and_targets() {
    let env = with_catalog().await;
    let generated = generated_tables(GENERATED);
    let attributes = |table: &str, cast: &str, select: &str| {
        format!("EntityDefinitions(LogicalName='{table}')/Attributes/Microsoft.Dynamics.CRM.{cast}?$select={select}")
    };

    let (table, column) = table_with(&generated, |k| *k == AttributeKind::date_only());
    let dates = value(
        &env.get(&attributes(
            &table.logical_name,
            "DateTimeAttributeMetadata",
            "LogicalName,Format,FormatName,DateTimeBehavior",
        ))
        .await,
    );
    let date = dates.iter().find(|a| a["LogicalName"] == column.as_str()).unwrap();
    assert_eq!((&date["Format"], &date["FormatName"]["Value"]), (&json!("DateOnly"), &json!("DateOnly")));
    assert_eq!(date["DateTimeBehavior"]["Value"], "DateOnly");
    let created = dates.iter().find(|a| a["LogicalName"] == "createdon").unwrap();
    assert_eq!(
        (&created["Format"], &created["DateTimeBehavior"]["Value"]),
        (&json!("DateAndTime"), &json!("UserLocal"))
    );

    for (cast, matches) in [
        (
            "DecimalAttributeMetadata",
            (|k: &AttributeKind| matches!(k, AttributeKind::Decimal { .. })) as fn(&AttributeKind) -> bool,
        ),
        ("MoneyAttributeMetadata", |k: &AttributeKind| matches!(k, AttributeKind::Money { .. })),
    ] {
        let (table, column) = table_with(&generated, matches);
        let Some(AttributeKind::Decimal { precision, .. } | AttributeKind::Money { precision, .. }) =
            table.attribute(&column).map(|a| &a.kind)
        else {
            unreachable!("chosen for its type")
        };
        let numbers = value(&env.get(&attributes(&table.logical_name, cast, "LogicalName,Precision")).await);
        let number = numbers.iter().find(|a| a["LogicalName"] == column.as_str()).unwrap();
        assert_eq!(number["Precision"], *precision, "{cast}");
        assert_eq!(number["@odata.type"], format!("#Microsoft.Dynamics.CRM.{cast}"));
    }

    let (table, column) = table_with(
        &generated,
        |k| matches!(k, AttributeKind::Lookup { targets, .. } if targets[0].table.contains('_')),
    );
    let target = table.attribute(&column).unwrap().lookup_targets()[0].table.clone();
    let lookups =
        value(&env.get(&attributes(&table.logical_name, "LookupAttributeMetadata", "LogicalName,Targets")).await);
    let lookup = lookups.iter().find(|a| a["LogicalName"] == column.as_str()).unwrap();
    assert_eq!(lookup["Targets"], json!([target]));

    // Without a cast or $select, every attribute comes with its base and type-specific properties.
    let (table, column) = table_with(&generated, |k| matches!(k, AttributeKind::MultiSelectPicklist { .. }));
    let all = value(&env.get(&format!("EntityDefinitions(LogicalName='{}')/Attributes", table.logical_name)).await);
    let choices = all.iter().find(|a| a["LogicalName"] == column.as_str()).unwrap();
    assert_eq!(
        (&choices["AttributeType"], &choices["AttributeTypeName"]["Value"]),
        (&json!("Virtual"), &json!("MultiSelectPicklistType"))
    );
    assert_eq!(choices["@odata.type"], "#Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata");
    let name = all.iter().find(|a| a["LogicalName"] == table.primary_name.as_str()).unwrap();
    assert_eq!(name["DisplayName"]["UserLocalizedLabel"]["Label"], "Name");
    assert_eq!(name["IsPrimaryName"], true);
    assert!(name["SchemaName"].as_str().unwrap().starts_with(table.logical_name.split('_').next().unwrap()));

    let expanded = env
        .get(&format!(
            "EntityDefinitions(LogicalName='{}')?$select=LogicalName&$expand=Attributes($select=LogicalName,AttributeType,AttributeTypeName,DisplayName)",
            table.logical_name
        ))
        .await
        .json();
    assert_eq!(expanded["Attributes"].as_array().unwrap().len(), table.attributes.len());
}

#[tokio::test]
async fn s4_11_saved_queries_list_the_public_views_of_every_table() {
    let env = with_catalog().await;
    let views = value(
        &env.get("savedqueries?$select=name,returnedtypecode,fetchxml,querytype,isdefault&$filter=querytype%20eq%200")
            .await,
    );
    let all = value(&env.get("EntityDefinitions?$select=LogicalName").await);
    for table in &all {
        let name = table["LogicalName"].as_str().unwrap();
        let own: Vec<&Json> = views.iter().filter(|v| v["returnedtypecode"] == name).collect();
        assert!(own.iter().any(|v| v["isdefault"] == true), "{name} has no default public view");
        for view in own {
            assert_eq!(view["querytype"], 0);
            assert!(view["fetchxml"].as_str().unwrap().contains(&format!("<entity name=\"{name}\">")));
        }
    }
}

/// A tracked read followed to its delta link, every request with the same `Prefer`; the rows and the link.
async fn tracked_read(env: &Env, url: &str, prefer: &str) -> (Vec<Json>, String) {
    let (mut rows, mut next) = (Vec::new(), url.to_string());
    loop {
        let reply = env.send(env.request(Method::GET, &next).header("Prefer", prefer)).await;
        if prefer.contains("include-annotations") {
            assert!(reply.header("preference-applied").unwrap().contains("odata.include-annotations"), "{next}");
        }
        rows.extend(value(&reply));
        let body = reply.json();
        match (body["@odata.nextLink"].as_str(), body["@odata.deltaLink"].as_str()) {
            (Some(link), None) => next = link.to_string(),
            (None, Some(delta)) => return (rows, delta.to_string()),
            other => panic!("a page has exactly one of nextLink and deltaLink: {other:?}"),
        }
    }
}

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const LOOKUP_TABLE: &str = "@Microsoft.Dynamics.CRM.lookuplogicalname";

#[tokio::test]
async fn s7_tracked_reads_carry_formatted_values_and_lookups_on_every_page_and_in_the_delta() {
    let env = Env::start().await;
    let account = env.create("accounts", json!({"name": "Fabrikam"})).await;
    for (name, gender) in [("Ada", 2), ("Bob", 1), ("Cy", 1)] {
        env.create(
            "contacts",
            json!({"lastname": name, "gendercode": gender, "parentcustomerid_account@odata.bind": format!("/accounts({account})")}),
        )
        .await;
    }
    let select = "contacts?$select=lastname,gendercode,_parentcustomerid_value";
    let prefer = "odata.track-changes,odata.maxpagesize=2,odata.include-annotations=\"*\"";
    let (rows, delta) = tracked_read(&env, select, prefer).await;
    assert_eq!(rows.len(), 3);
    let check = |row: &Json| {
        let gender = if row["gendercode"] == 2 { "Female" } else { "Male" };
        assert_eq!(row[format!("gendercode{FORMATTED}")], gender, "{row}");
        assert_eq!(row["_parentcustomerid_value"], account.as_str());
        assert_eq!(row[format!("_parentcustomerid_value{LOOKUP_TABLE}")], "account");
        assert_eq!(row[format!("_parentcustomerid_value{FORMATTED}")], "Fabrikam");
        let mut keys: Vec<&str> =
            row.as_object().unwrap().keys().filter(|k| !k.contains('@')).map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["_parentcustomerid_value", "contactid", "gendercode", "lastname"], "$select holds");
    };
    rows.iter().for_each(check);

    let ada = rows.iter().find(|r| r["lastname"] == "Ada").unwrap()["contactid"].as_str().unwrap().to_string();
    assert_eq!(env.patch(&format!("contacts({ada})"), json!({"gendercode": 1})).await.status, StatusCode::NO_CONTENT);
    let (changed, _) = tracked_read(&env, &delta, "odata.include-annotations=\"*\"").await;
    assert_eq!(changed.len(), 1);
    check(&changed[0]);
    assert_eq!(changed[0][format!("gendercode{FORMATTED}")], "Male");

    // Only the annotations asked for.
    let (rows, _) = tracked_read(
        &env,
        select,
        "odata.track-changes,odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"",
    )
    .await;
    for row in &rows {
        assert!(row[format!("gendercode{FORMATTED}")].is_string());
        assert!(row.get(format!("_parentcustomerid_value{LOOKUP_TABLE}")).is_none(), "{row}");
    }
    let (rows, _) = tracked_read(&env, select, "odata.track-changes").await;
    assert!(rows.iter().all(|r| r.as_object().unwrap().keys().all(|k| !k.contains("@OData.Community"))));
}

#[tokio::test]
async fn s7_rows_carry_versionnumber_when_selected_and_their_version_in_the_etag_always() {
    let env = Env::start().await;
    env.create("contacts", json!({"lastname": "Ada"})).await;
    let tracked = "odata.track-changes";
    let (rows, delta) = tracked_read(&env, "contacts?$select=lastname,versionnumber", tracked).await;
    let version = rows[0]["versionnumber"].as_i64().expect("a version number when selected");
    assert_eq!(rows[0]["@odata.etag"], format!("W/\"{version}\""));

    let (rows, _) = tracked_read(&env, "contacts?$select=lastname", tracked).await;
    assert!(rows[0].get("versionnumber").is_none(), "as Dataverse: only the selected columns");
    assert_eq!(rows[0]["@odata.etag"], format!("W/\"{version}\""));

    let (rows, _) = tracked_read(&env, "contacts", tracked).await;
    assert_eq!(rows[0]["versionnumber"], version, "every column without $select");

    let id = rows[0]["contactid"].as_str().unwrap().to_string();
    env.patch(&format!("contacts({id})"), json!({"lastname": "Ada B."})).await;
    let (changed, _) = tracked_read(&env, &delta, "").await;
    let newer = changed[0]["versionnumber"].as_i64().unwrap();
    assert!(newer > version);
    assert_eq!(changed[0]["@odata.etag"], format!("W/\"{newer}\""));
}

#[tokio::test]
async fn generated_tables_hold_their_rows_and_are_read_and_tracked_like_any_table() {
    let env = with_catalog().await;
    let generated = generated_tables(GENERATED);
    let (table, choice) = table_with(&generated, |k| matches!(k, AttributeKind::Picklist { .. }));
    let reply = env
        .send(
            env.request(Method::GET, &format!("{}?$select={},{choice}", table.entity_set_name, table.primary_name))
                .header("Prefer", "odata.include-annotations=\"*\""),
        )
        .await;
    let rows = value(&reply);
    assert_eq!(rows.len(), ROWS_PER_TABLE);
    let id = row_id(&table.logical_name, 0).to_string();
    let first = rows.iter().find(|r| r[&table.primary_id] == id.as_str()).expect("rows have known ids");
    assert!(first[format!("{choice}{FORMATTED}")].is_string(), "{first}");

    let (dates, column) =
        table_with(&generated, |k| matches!(k, AttributeKind::DateTime { format: DateFormat::DateOnly, .. }));
    let rows = value(&env.get(&format!("{}?$select={column}", dates.entity_set_name)).await);
    let text = rows[0][&column].as_str().unwrap();
    assert_eq!(text.len(), "2024-01-01".len(), "a date only column holds dates: {text}");

    let tracked = generated.iter().find(|t| t.change_tracking_enabled && !t.is_private).unwrap();
    let (rows, _) = tracked_read(&env, &tracked.entity_set_name, "odata.track-changes").await;
    assert_eq!(rows.len(), ROWS_PER_TABLE);
    let untracked = generated.iter().find(|t| !t.change_tracking_enabled).unwrap();
    let refused =
        env.send(env.request(Method::GET, &untracked.entity_set_name).header("Prefer", "odata.track-changes")).await;
    refused.assert_error(400, "0x80072491", "isn't enabled for change tracking");
}

#[tokio::test]
async fn a_restart_with_the_same_catalog_keeps_the_rows_and_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig { state: Some(dir.path().join("env.db")), generated_tables: 10, ..config() };
    let first = Env::with(config.clone()).await;
    let table = &generated_tables(10)[0];
    let id = row_id(&table.logical_name, 0);
    let path = format!("{}({id})", table.entity_set_name);
    let changed = first.patch(&path, json!({ table.primary_name.clone(): "Changed" })).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.text);
    first.emulator.stop().await;
    let second = Env::with(EmulatorConfig { generated_tables: 12, ..config }).await;
    let row = second.get(&format!("{path}?$select={}", table.primary_name)).await.json();
    assert_eq!(row[&table.primary_name], "Changed");
    let tables = value(&second.get("EntityDefinitions?$select=LogicalName").await);
    assert_eq!(tables.len(), BUILT_IN + 12);
    let rows = value(&second.get(&table.entity_set_name).await);
    assert_eq!(rows.len(), ROWS_PER_TABLE);
}
