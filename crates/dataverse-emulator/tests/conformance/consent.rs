//! Customer Insights – Journeys' consent tables, there only when the app's solution is installed
//! (`EmulatorConfig::journeys`, `--with-journeys`): `msdynmkt_contactpointconsent4` with its columns and option
//! values in metadata (§10), consent rows bound to a purpose through `msdynmkt_purposeId@odata.bind` (§3.3) and read
//! back with formatted values (§4.6), an opt-out seen through change tracking (§7), and the refusals (§8). The
//! reference behaviour is Microsoft's entity reference for `msdynmkt_contactpointconsent4`, `msdynmkt_purpose` and
//! `msdynmkt_topic`, and the Customer Insights – Journeys consent documentation.

use crate::{Env, Reply, config};
use dataverse_emulator::EmulatorConfig;
use dataverse_emulator::schema::journeys;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

const FORMATTED: &str = "@OData.Community.Display.V1.FormattedValue";
const EMAIL: i64 = 534_120_000;
const PURPOSE_CONSENT: i64 = 534_120_000;
const OPTED_IN: i64 = 534_120_001;
const OPTED_OUT: i64 = 534_120_002;
const ONE_CLICK_UNSUBSCRIBE: i64 = 534_120_007;

async fn with_journeys() -> Env {
    Env::with(EmulatorConfig { journeys: true, ..config() }).await
}

fn values(reply: &Reply) -> Vec<Json> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json()["value"].as_array().expect("a value array").clone()
}

/// The id of a purpose, found by name as a client finds it.
async fn purpose(env: &Env, name: &str) -> String {
    let rows = values(
        &env.get(&format!("msdynmkt_purposes?$select=msdynmkt_name&$filter=msdynmkt_name%20eq%20'{name}'")).await,
    );
    assert_eq!(rows.len(), 1, "one {name} purpose: {rows:?}");
    rows[0]["msdynmkt_purposeid"].as_str().unwrap().to_string()
}

/// Records the consent of an email address for a purpose, as Microsoft's consent flow writes it.
async fn consent(env: &Env, address: &str, purpose: &str, value: i64) -> String {
    env.create(
        "msdynmkt_contactpointconsent4s",
        json!({
            "msdynmkt_contactpointvalue": address,
            "msdynmkt_contactpointtype": EMAIL,
            "msdynmkt_contactpointconsenttype": PURPOSE_CONSENT,
            "msdynmkt_value": value,
            "msdynmkt_logicalreason": 534_119_999,
            "msdynmkt_reason": "dynsync",
            "msdynmkt_purposeId@odata.bind": format!("/msdynmkt_purposes({purpose})"),
        }),
    )
    .await
}

/// A choice column's options of the consent table, as (value, label).
async fn options(env: &Env, column: &str) -> Vec<(i64, String)> {
    let body = env
        .get(&format!(
            "EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/Attributes(LogicalName='{column}')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet"
        ))
        .await
        .json();
    body["OptionSet"]["Options"]
        .as_array()
        .unwrap_or_else(|| panic!("{column}: {body}"))
        .iter()
        .map(|o| {
            (o["Value"].as_i64().unwrap(), o["Label"]["UserLocalizedLabel"]["Label"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn s8_2_an_environment_without_journeys_has_no_consent_tables() {
    let env = Env::start().await;
    for set in ["msdynmkt_contactpointconsent4s", "msdynmkt_purposes", "msdynmkt_topics"] {
        env.get(set).await.assert_error(404, "0x8006088a", &format!("Resource not found for the segment '{set}'."));
    }
    env.get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')").await.assert_error(
        404,
        "0x80040217",
        "Could not find an entity with the key LogicalName='msdynmkt_contactpointconsent4'.",
    );
    let metadata = env.get("$metadata").await.text;
    assert!(!metadata.contains("msdynmkt_"), "the service document names no consent table");
    let listed = values(&env.get("EntityDefinitions?$select=LogicalName").await);
    assert!(listed.iter().all(|t| !t["LogicalName"].as_str().unwrap().starts_with("msdynmkt_")));
}

#[tokio::test]
async fn s10_2_with_journeys_the_consent_table_shows_its_columns_option_values_and_lookups() {
    let env = with_journeys().await;
    let table = env
        .get(
            "EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')?$select=SchemaName,EntitySetName,\
             PrimaryIdAttribute,PrimaryNameAttribute,OwnershipType,ChangeTrackingEnabled",
        )
        .await
        .json();
    assert_eq!(table["SchemaName"], "msdynmkt_contactpointconsent4", "{table}");
    assert_eq!(table["EntitySetName"], "msdynmkt_contactpointconsent4s");
    assert_eq!(table["PrimaryIdAttribute"], "msdynmkt_contactpointconsent4id");
    assert_eq!(table["PrimaryNameAttribute"], "msdynmkt_contactpointvalue");
    assert_eq!(
        (table["OwnershipType"].as_str(), table["ChangeTrackingEnabled"].as_bool()),
        (Some("UserOwned"), Some(true))
    );

    let columns = values(
        &env.get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/Attributes?$select=LogicalName,SchemaName,AttributeType,RequiredLevel")
            .await,
    );
    let column =
        |name: &str| columns.iter().find(|c| c["LogicalName"] == name).cloned().unwrap_or_else(|| panic!("{name}"));
    for (name, kind, required) in [
        ("msdynmkt_contactpointconsent4id", "Uniqueidentifier", "SystemRequired"),
        ("msdynmkt_contactpointvalue", "String", "ApplicationRequired"),
        ("msdynmkt_contactpointtype", "Picklist", "ApplicationRequired"),
        ("msdynmkt_contactpointconsenttype", "Picklist", "None"),
        ("msdynmkt_value", "Picklist", "ApplicationRequired"),
        ("msdynmkt_purposeid", "Lookup", "ApplicationRequired"),
        ("msdynmkt_topicid", "Lookup", "None"),
        ("msdynmkt_source", "Picklist", "ApplicationRequired"),
        ("msdynmkt_logicalreason", "Picklist", "ApplicationRequired"),
        ("msdynmkt_reason", "String", "None"),
        ("ownerid", "Owner", "SystemRequired"),
        ("createdon", "DateTime", "None"),
        ("modifiedon", "DateTime", "None"),
        ("versionnumber", "BigInt", "None"),
        ("statecode", "State", "SystemRequired"),
        ("statuscode", "Status", "None"),
    ] {
        assert_eq!(
            (column(name)["AttributeType"].as_str(), column(name)["RequiredLevel"]["Value"].as_str()),
            (Some(kind), Some(required)),
            "{name}"
        );
    }
    assert_eq!(column("msdynmkt_purposeid")["SchemaName"], "msdynmkt_purposeId");
    let lengths = values(
        &env.get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength")
            .await,
    );
    let length = |name: &str| lengths.iter().find(|c| c["LogicalName"] == name).map(|c| c["MaxLength"].clone());
    assert_eq!((length("msdynmkt_contactpointvalue"), length("msdynmkt_reason")), (Some(json!(400)), Some(json!(500))));

    let labelled = |pairs: &[(i64, &str)]| pairs.iter().map(|(v, l)| (*v, l.to_string())).collect::<Vec<_>>();
    assert_eq!(
        options(&env, "msdynmkt_contactpointtype").await,
        labelled(&[
            (534_120_000, "Email"),
            (534_120_001, "Text Message"),
            (534_120_002, "Custom"),
            (534_120_003, "Voice")
        ])
    );
    assert_eq!(
        options(&env, "msdynmkt_contactpointconsenttype").await,
        labelled(&[(534_120_000, "Purpose"), (534_120_001, "Topic")])
    );
    assert_eq!(
        options(&env, "msdynmkt_value").await,
        labelled(&[(534_120_000, "Not Set"), (534_120_001, "Opted In"), (534_120_002, "Opted Out")])
    );
    let sources = options(&env, "msdynmkt_source").await;
    assert_eq!(
        (sources[0].clone(), sources[4].clone(), sources[7].clone()),
        (
            (534_120_000, "Internal".to_string()),
            (534_120_004, "Preference Center".to_string()),
            (534_120_007, "Email - list-unsubscribe".to_string())
        )
    );
    let reasons = options(&env, "msdynmkt_logicalreason").await;
    assert!(reasons.contains(&(ONE_CLICK_UNSUBSCRIBE, "Opt-out - One-click unsubscribe".to_string())), "{reasons:?}");

    let purpose = env
        .get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/Attributes(LogicalName='msdynmkt_purposeid')/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=Targets")
        .await
        .json();
    assert_eq!(purpose["Targets"], json!(["msdynmkt_purpose"]));
    let metadata = env.get("$metadata").await.text;
    for navigation in ["msdynmkt_purposeId", "msdynmkt_topicId"] {
        assert!(metadata.contains(&format!("NavigationProperty Name=\"{navigation}\"")), "{navigation}");
    }
    let relationships = values(
        &env.get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/ManyToOneRelationships?$select=SchemaName,ReferencedEntity,ReferencingEntityNavigationPropertyName")
            .await,
    );
    let named = |schema_name: &str| relationships.iter().find(|r| r["SchemaName"] == schema_name).cloned();
    let to_purpose = named("msdynmkt_msdynmkt_contactpointconsent4_purposeId_m").expect("the purpose relationship");
    assert_eq!(to_purpose["ReferencingEntityNavigationPropertyName"], "msdynmkt_purposeId");
    assert!(named("msdynmkt_msdynmkt_contactpointconsent4_topicId_msd").is_some(), "{relationships:?}");
    let keys = values(&env.get("EntityDefinitions(LogicalName='msdynmkt_contactpointconsent4')/Keys").await);
    assert!(keys.is_empty(), "Microsoft documents no alternate key on consent: {keys:?}");
}

#[tokio::test]
async fn s4_6_a_consent_bound_to_the_commercial_purpose_reads_back_with_its_formatted_values() {
    let env = with_journeys().await;
    let purposes = values(
        &env.get(
            "msdynmkt_purposes?$select=msdynmkt_name,msdynmkt_type,msdynmkt_enforcementmodel&$orderby=msdynmkt_name",
        )
        .await,
    );
    let names: Vec<&str> = purposes.iter().map(|p| p["msdynmkt_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Commercial", "Transactional"], "the default compliance profile's purposes");
    assert_eq!(
        (purposes[0]["msdynmkt_type"].as_i64(), purposes[0]["msdynmkt_enforcementmodel"].as_i64()),
        (Some(534_120_000), Some(534_120_001))
    );
    assert_eq!(purposes[1]["msdynmkt_enforcementmodel"], 534_120_002, "transactional messages are not checked");
    let commercial = purpose(&env, "Commercial").await;
    assert_eq!(commercial, journeys::purpose_id("Commercial").to_string());

    let id = consent(&env, "ann@example.com", &commercial, OPTED_IN).await;
    let reply = env
        .send(
            env.request(Method::GET, &format!("msdynmkt_contactpointconsent4s({id})"))
                .header("Prefer", "odata.include-annotations=\"*\""),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let row = reply.json();
    let formatted = |p: &str| row[format!("{p}{FORMATTED}")].clone();
    assert_eq!(row["msdynmkt_contactpointvalue"], "ann@example.com");
    assert_eq!((row["msdynmkt_value"].as_i64(), formatted("msdynmkt_value")), (Some(OPTED_IN), json!("Opted In")));
    assert_eq!(formatted("msdynmkt_contactpointtype"), "Email");
    assert_eq!(formatted("msdynmkt_contactpointconsenttype"), "Purpose");
    assert_eq!(formatted("msdynmkt_logicalreason"), "No reasons");
    assert_eq!(
        (row["msdynmkt_source"].as_i64(), formatted("msdynmkt_source")),
        (Some(534_120_000), json!("Internal")),
        "the default source"
    );
    assert_eq!(formatted("statecode"), "Active");
    assert_eq!(row["_msdynmkt_purposeid_value"], commercial.as_str());
    assert_eq!(formatted("_msdynmkt_purposeid_value"), "Commercial");
    assert_eq!(row["_msdynmkt_purposeid_value@Microsoft.Dynamics.CRM.lookuplogicalname"], "msdynmkt_purpose");
    assert!(row["_msdynmkt_topicid_value"].is_null() && row["_ownerid_value"].is_string());

    // The consent of a contact point for a purpose, found as Microsoft's consent flow finds it, and the purpose
    // through its navigation property.
    let found = values(
        &env.get(&format!(
            "msdynmkt_contactpointconsent4s?$select=msdynmkt_value&$filter=msdynmkt_contactpointvalue%20eq%20'ANN@example.com'%20and%20_msdynmkt_purposeid_value%20eq%20{commercial}"
        ))
        .await,
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["msdynmkt_contactpointconsent4id"], id.as_str());
    let bound =
        env.get(&format!("msdynmkt_contactpointconsent4s({id})/msdynmkt_purposeId?$select=msdynmkt_name")).await.json();
    assert_eq!(bound["msdynmkt_name"], "Commercial");
}

#[tokio::test]
async fn s7_an_opt_out_appears_in_the_consent_tables_changes() {
    let env = with_journeys().await;
    let commercial = purpose(&env, "Commercial").await;
    let ann = consent(&env, "ann@example.com", &commercial, OPTED_IN).await;
    consent(&env, "bob@example.com", &commercial, OPTED_IN).await;
    let initial = env
        .send(
            env.request(Method::GET, "msdynmkt_contactpointconsent4s?$select=msdynmkt_contactpointvalue,msdynmkt_value,msdynmkt_logicalreason")
                .header("Prefer", "odata.track-changes"),
        )
        .await;
    assert_eq!(values(&initial).len(), 2);
    assert!(initial.header("preference-applied").unwrap().contains("odata.track-changes"));
    let delta = initial.json()["@odata.deltaLink"].as_str().expect("a delta link").to_string();

    let opt_out = env
        .patch(
            &format!("msdynmkt_contactpointconsent4s({ann})"),
            json!({"msdynmkt_value": OPTED_OUT, "msdynmkt_logicalreason": ONE_CLICK_UNSUBSCRIBE, "msdynmkt_source": 534_120_007}),
        )
        .await;
    assert_eq!(opt_out.status, StatusCode::NO_CONTENT, "{}", opt_out.text);

    let changes = env.get(&delta).await;
    assert_eq!(changes.status, StatusCode::OK, "{}", changes.text);
    let body = changes.json();
    assert!(body["@odata.context"].as_str().unwrap().ends_with("/$delta"), "{body}");
    let rows = body["value"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "only Ann's consent changed: {body}");
    assert_eq!(rows[0]["msdynmkt_contactpointconsent4id"], ann.as_str());
    assert_eq!(
        (rows[0]["msdynmkt_value"].as_i64(), rows[0]["msdynmkt_logicalreason"].as_i64()),
        (Some(OPTED_OUT), Some(ONE_CLICK_UNSUBSCRIBE))
    );
    let quiet = env.get(body["@odata.deltaLink"].as_str().unwrap()).await.json();
    assert_eq!(quiet["value"], json!([]));
}

#[tokio::test]
async fn s8_5_a_consent_without_a_purpose_is_refused_as_a_missing_required_column() {
    let env = with_journeys().await;
    let without = json!({"msdynmkt_contactpointvalue": "ann@example.com", "msdynmkt_contactpointtype": EMAIL, "msdynmkt_value": OPTED_IN});
    env.post("msdynmkt_contactpointconsent4s", without.clone()).await.assert_error(
        400,
        "0x80040203",
        "msdynmkt_purposeid is a required column of msdynmkt_contactpointconsent4",
    );
    // Nor through the bulk message, nor by clearing the purpose of a consent that has one.
    let mut target = without.clone();
    target["@odata.type"] = json!("Microsoft.Dynamics.CRM.msdynmkt_contactpointconsent4");
    env.post("msdynmkt_contactpointconsent4s/Microsoft.Dynamics.CRM.CreateMultiple", json!({"Targets": [target]}))
        .await
        .assert_error(400, "0x80040203", "msdynmkt_purposeid is a required column");
    let commercial = purpose(&env, "Commercial").await;
    let id = consent(&env, "ann@example.com", &commercial, OPTED_IN).await;
    env.patch(&format!("msdynmkt_contactpointconsent4s({id})"), json!({"msdynmkt_purposeId@odata.bind": null}))
        .await
        .assert_error(400, "0x80040203", "msdynmkt_purposeid is a required column");
    // The navigation property is named with a capital I; the column's own name is not one.
    let mut lower_case = without.clone();
    lower_case["msdynmkt_purposeid@odata.bind"] = json!(format!("/msdynmkt_purposes({commercial})"));
    env.post("msdynmkt_contactpointconsent4s", lower_case).await.assert_error(
        400,
        "0x80048d19",
        "An undeclared property 'msdynmkt_purposeid'",
    );
    // A purpose that does not exist, and a status outside the option set.
    let mut missing = without.clone();
    missing["msdynmkt_purposeId@odata.bind"] = json!("/msdynmkt_purposes(4a7b2c0e-0000-4000-8000-00000000abcd)");
    env.post("msdynmkt_contactpointconsent4s", missing).await.assert_error(404, "0x80040217", "msdynmkt_purpose");
    let mut out_of_range = without;
    out_of_range["msdynmkt_purposeId@odata.bind"] = json!(format!("/msdynmkt_purposes({commercial})"));
    out_of_range["msdynmkt_value"] = json!(1);
    env.post("msdynmkt_contactpointconsent4s", out_of_range).await.assert_error(
        400,
        "0x8004431a",
        "The value 1 of 'msdynmkt_value' on record of type 'msdynmkt_contactpointconsent4' is outside the valid range.",
    );
    let rows = values(&env.get("msdynmkt_contactpointconsent4s?$select=msdynmkt_contactpointvalue").await);
    assert_eq!(rows.len(), 1, "only the consent with a purpose was kept: {rows:?}");
}

#[tokio::test]
async fn s10_2_installed_consent_tables_stay_with_the_state_file_and_are_installed_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let env = Env::with(EmulatorConfig { journeys: true, state: Some(state.clone()), ..config() }).await;
    let commercial = purpose(&env, "Commercial").await;
    let id = consent(&env, "ann@example.com", &commercial, OPTED_OUT).await;
    env.emulator.stop().await;

    for journeys in [true, false] {
        let env = Env::with(EmulatorConfig { journeys, state: Some(state.clone()), ..config() }).await;
        assert_eq!(values(&env.get("msdynmkt_purposes?$select=msdynmkt_name").await).len(), 2, "journeys: {journeys}");
        let row = env.get(&format!("msdynmkt_contactpointconsent4s({id})?$select=msdynmkt_value")).await.json();
        assert_eq!(row["msdynmkt_value"], OPTED_OUT);
        env.emulator.stop().await;
    }
}
