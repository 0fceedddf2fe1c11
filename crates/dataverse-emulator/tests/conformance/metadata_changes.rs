//! §10 Metadata, as Microsoft's Python SDK (`powerplatform-dataverse-client` 1.1.0) and source connectors
//! read and change it: the table properties they list tables by, `RetrieveMetadataChanges` for typed
//! columns, `CreateEntities`, and deleting or updating columns, keys and tables. Requests are shaped as
//! the SDK's `data/_odata.py` sends them.

use crate::{Env, label};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

/// A label as the SDK's `_label` builds it.
fn sdk_label(text: &str, language: u32) -> Json {
    json!({"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [
        {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": text, "LanguageCode": language}
    ]})
}

/// `_get_entity_by_table_schema_name`: the table's definition the SDK works from.
pub async fn sdk_entity(env: &Env, table: &str) -> Json {
    let body = env
        .get(&format!(
            "EntityDefinitions?$select=MetadataId,LogicalName,SchemaName,EntitySetName,PrimaryNameAttribute,PrimaryIdAttribute&$filter=LogicalName%20eq%20'{table}'"
        ))
        .await
        .json();
    body["value"][0].clone()
}

/// `_create_table`: `POST CreateEntities` with the primary name column and the given columns.
pub async fn sdk_create_table(env: &Env, schema_name: &str, columns: Vec<Json>) -> Json {
    let mut attributes = vec![json!({
        "@odata.type": "Microsoft.Dynamics.CRM.ComplexStringAttributeMetadata",
        "SchemaName": "new_Name", "DisplayName": sdk_label("Name", 1033), "RequiredLevel": {"Value": "None"},
        "MaxLength": 200, "FormatName": {"Value": "Text"}, "IsPrimaryName": true,
    })];
    attributes.extend(columns);
    let reply = env
        .post(
            "CreateEntities",
            json!({"Entities": [{
                "@odata.type": "Microsoft.Dynamics.CRM.ComplexEntityMetadata",
                "SchemaName": schema_name,
                "DisplayName": sdk_label(schema_name, 1033),
                "DisplayCollectionName": sdk_label(&format!("{schema_name}s"), 1033),
                "Description": sdk_label(&format!("Custom entity for {schema_name}"), 1033),
                "OwnershipType": "UserOwned", "HasActivities": false, "HasNotes": true, "IsActivity": false,
                "Attributes": attributes,
            }]}),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    sdk_entity(env, &schema_name.to_lowercase()).await
}

#[tokio::test]
async fn metadata_10_2_entity_definitions_say_whether_change_tracking_can_be_enabled() {
    let env = Env::start().await;
    let account = env
        .get("EntityDefinitions(LogicalName='account')?$select=CanChangeTrackingBeEnabled,ChangeTrackingEnabled,IsPrivate")
        .await
        .json();
    assert_eq!(account["CanChangeTrackingBeEnabled"]["Value"], true);
    assert_eq!(account["CanChangeTrackingBeEnabled"]["ManagedPropertyLogicalName"], "canchangetrackingbeenabled");
    assert!(account["CanChangeTrackingBeEnabled"]["CanBeChanged"].is_boolean());
    assert_eq!(account["ChangeTrackingEnabled"], true);
    assert_eq!(account["IsPrivate"], false);
    let table = sdk_create_table(&env, "new_Visit", vec![]).await;
    let visit = env
        .get(&format!(
            "EntityDefinitions({})?$select=CanChangeTrackingBeEnabled,ChangeTrackingEnabled",
            table["MetadataId"].as_str().unwrap()
        ))
        .await
        .json();
    assert_eq!(visit["CanChangeTrackingBeEnabled"]["CanBeChanged"], true, "a custom table's setting can change");
    assert_eq!(visit["ChangeTrackingEnabled"], false);
}

#[tokio::test]
async fn metadata_10_2_entity_definitions_filter_on_is_private_as_the_sdk_lists_tables() {
    let env = Env::start().await;
    // tables.list(): `IsPrivate eq false`, and with a filter `IsPrivate eq false and (<filter>)`.
    let all = env.get("EntityDefinitions?$filter=IsPrivate%20eq%20false").await.json();
    let names: Vec<&str> =
        all["value"].as_array().unwrap().iter().map(|t| t["LogicalName"].as_str().unwrap()).collect();
    for table in ["account", "contact", "lead"] {
        assert!(names.contains(&table), "{table} in {names:?}");
    }
    let one = env
        .get(
            "EntityDefinitions?$filter=IsPrivate eq false and (SchemaName eq 'Account')&$select=LogicalName,SchemaName",
        )
        .await
        .json();
    let value = one["value"].as_array().unwrap();
    assert_eq!(value.len(), 1, "{one}");
    assert_eq!(value[0]["LogicalName"], "account");
    let none = env.get("EntityDefinitions?$filter=IsPrivate%20eq%20true").await.json();
    assert_eq!(none["value"].as_array().unwrap().len(), 0);
}

/// The query `_retrieve_metadata_changes` sends.
fn sdk_metadata_query(table: &str, column: Option<&str>) -> String {
    let mut attribute_query = json!({"Properties": {"PropertyNames": [
        "LogicalName", "SchemaName", "AttributeType", "AttributeTypeName", "MetadataId", "DisplayName",
        "RequiredLevel", "MaxLength", "Format", "FormatName", "MinValue", "MaxValue", "Precision"
    ]}});
    if let Some(column) = column {
        attribute_query["Criteria"] = json!({"Conditions": [{"PropertyName": "LogicalName", "ConditionOperator": "Equals",
            "Value": {"Type": "System.String", "Value": column}}]});
    }
    let query = json!({
        "Properties": {"PropertyNames": ["LogicalName", "Attributes"]},
        "Criteria": {"Conditions": [{"PropertyName": "LogicalName", "ConditionOperator": "Equals",
            "Value": {"Type": "System.String", "Value": table}}]},
        "AttributeQuery": attribute_query,
    });
    let encoded: String = url::form_urlencoded::byte_serialize(query.to_string().as_bytes()).collect();
    format!("RetrieveMetadataChanges(Query=@p1)?@p1={encoded}")
}

#[tokio::test]
async fn metadata_10_5_retrieve_metadata_changes_answers_typed_columns_as_the_sdk_parses_them() {
    let env = Env::start().await;
    env.add_column(
        "contact",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata", "SchemaName": "new_Points", "MinValue": 0, "MaxValue": 1000, "DisplayName": label("Points")}),
    )
    .await;
    let reply = env.get(&sdk_metadata_query("contact", None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let body = reply.json();
    assert!(body["@odata.context"].as_str().unwrap().ends_with("RetrieveMetadataChangesResponse"));
    assert!(body["ServerVersionStamp"].is_string());
    let entities = body["EntityMetadata"].as_array().unwrap();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0]["LogicalName"], "contact");
    assert!(entities[0].get("EntitySetName").is_none(), "only the properties asked for");
    let attributes = entities[0]["Attributes"].as_array().unwrap();
    let column = |name: &str| attributes.iter().find(|a| a["LogicalName"] == name).unwrap().clone();
    let first = column("firstname");
    assert_eq!(first["@odata.type"], "#Microsoft.Dynamics.CRM.StringAttributeMetadata");
    assert_eq!(first["AttributeTypeName"]["Value"], "StringType");
    assert!(first["MaxLength"].is_number());
    assert_eq!(first["DisplayName"]["UserLocalizedLabel"]["Label"], "First Name");
    assert!(first.get("IsCustomAttribute").is_none());
    let points = column("new_points");
    assert_eq!((points["MinValue"].as_i64(), points["MaxValue"].as_i64()), (Some(0), Some(1000)));
    assert!(points.get("MaxLength").is_none(), "a whole number has no MaxLength");
    // get_column(typed=True): the attribute criteria pick one column.
    let one = env.get(&sdk_metadata_query("contact", Some("new_points"))).await.json();
    let attributes = one["EntityMetadata"][0]["Attributes"].as_array().unwrap();
    assert_eq!(attributes.len(), 1);
    assert_eq!(attributes[0]["SchemaName"], "new_Points");
    // A table that does not exist: no EntityMetadata, which the SDK reports as "not found".
    let none = env.get(&sdk_metadata_query("new_nothing", None)).await.json();
    assert_eq!(none["EntityMetadata"].as_array().unwrap().len(), 0);
    env.get("RetrieveMetadataChanges(Query=@p1)").await.assert_error(400, "0x80060888", "@p1");
}

#[tokio::test]
async fn metadata_10_6_create_entities_makes_a_table_usable_for_records_and_a_custom_table_can_be_deleted() {
    let env = Env::start().await;
    let table = sdk_create_table(
        &env,
        "new_Product",
        vec![
            json!({"@odata.type": "Microsoft.Dynamics.CRM.ComplexIntegerAttributeMetadata", "SchemaName": "new_Stock",
                "DisplayName": sdk_label("Stock", 1033), "RequiredLevel": {"Value": "None"}, "Format": "None",
                "MinValue": -2147483648i64, "MaxValue": 2147483647i64}),
            json!({"@odata.type": "Microsoft.Dynamics.CRM.ComplexDecimalAttributeMetadata", "SchemaName": "new_Price",
                "DisplayName": sdk_label("Price", 1033), "RequiredLevel": {"Value": "None"},
                "MinValue": -100000000000.0, "MaxValue": 100000000000.0, "Precision": 2}),
        ],
    )
    .await;
    assert_eq!(table["EntitySetName"], "new_products");
    assert_eq!(table["PrimaryNameAttribute"], "new_name");
    let id = env.create("new_products", json!({"new_name": "Widget", "new_stock": 3, "new_price": 9.5})).await;
    let row = env.get(&format!("new_products({id})")).await.json();
    assert_eq!(row["new_stock"], 3);
    assert!(env.get("$metadata").await.text.contains("EntityType Name=\"new_product\""));
    // tables.delete(): DELETE EntityDefinitions(<MetadataId>) with If-Match: *.
    let table_id = table["MetadataId"].as_str().unwrap();
    let reply =
        env.send(env.request(Method::DELETE, &format!("EntityDefinitions({table_id})")).header("If-Match", "*")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(sdk_entity(&env, "new_product").await.is_null(), "the table is gone");
    assert_eq!(env.get("new_products").await.status, StatusCode::NOT_FOUND);
    assert!(!env.get("$metadata").await.text.contains("new_product"));
    env.delete("EntityDefinitions(LogicalName='account')").await.assert_error(400, "0x80040203", "system table");
}

#[tokio::test]
async fn metadata_10_7_a_deleted_custom_column_is_gone_and_writing_it_fails() {
    let env = Env::start().await;
    env.add_column(
        "contact",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Nickname", "MaxLength": 50, "DisplayName": label("Nickname")}),
    )
    .await;
    let id = env.create("contacts", json!({"lastname": "Old", "new_nickname": "Oldie"})).await;
    // tables.remove_columns(): find the column's MetadataId, then DELETE by both ids.
    let table = crate::metadata_changes::sdk_entity(&env, "contact").await;
    let table_id = table["MetadataId"].as_str().unwrap();
    let found = env
        .get(&format!("EntityDefinitions({table_id})/Attributes?$select=MetadataId,LogicalName,SchemaName,AttributeType&$filter=LogicalName%20eq%20'new_nickname'"))
        .await
        .json();
    let column_id = found["value"][0]["MetadataId"].as_str().unwrap().to_string();
    let reply = env
        .send(
            env.request(Method::DELETE, &format!("EntityDefinitions({table_id})/Attributes({column_id})"))
                .header("If-Match", "*"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let after = env
        .get(&format!(
            "EntityDefinitions({table_id})/Attributes?$select=LogicalName&$filter=LogicalName%20eq%20'new_nickname'"
        ))
        .await
        .json();
    assert_eq!(after["value"].as_array().unwrap().len(), 0);
    env.post("contacts", json!({"lastname": "New", "new_nickname": "x"})).await.assert_error(
        400,
        "0x80048d19",
        "new_nickname",
    );
    assert!(env.get(&format!("contacts({id})")).await.json().get("new_nickname").is_none());
    assert!(!env.get("$metadata").await.text.contains("new_nickname"));
    // System columns stay.
    env.delete("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='firstname')").await.assert_error(
        400,
        "0x80040203",
        "system column",
    );
}

#[tokio::test]
async fn metadata_10_7_a_column_update_is_a_put_of_its_whole_definition_and_merge_labels_keeps_other_languages() {
    let env = Env::start().await;
    env.add_column(
        "contact",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Motto", "MaxLength": 100,
            "DisplayName": {"LocalizedLabels": [{"Label": "Motto", "LanguageCode": 1033}, {"Label": "Devise", "LanguageCode": 1036}]}}),
    )
    .await;
    let table_id =
        crate::metadata_changes::sdk_entity(&env, "contact").await["MetadataId"].as_str().unwrap().to_string();
    let attr_url = format!("EntityDefinitions({table_id})/Attributes(LogicalName='new_motto')");
    // update_column(): learn the type, read the whole definition through the cast, PUT it back changed.
    let existing = env.get(&format!("{attr_url}?$select=MetadataId,SchemaName")).await.json();
    let odata_type = existing["@odata.type"].as_str().unwrap().trim_start_matches('#').to_string();
    let column_id = existing["MetadataId"].as_str().unwrap().to_string();
    let full = env.get(&format!("{attr_url}/{odata_type}")).await.json();
    let mut body: serde_json::Map<String, Json> = full
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("@odata."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    body.insert("@odata.type".into(), json!(odata_type));
    body.insert("MaxLength".into(), json!(300));
    body.insert("DisplayName".into(), sdk_label("Life motto", 1033));
    body.insert("RequiredLevel".into(), json!({"Value": "Recommended"}));
    let put = |body: Json, merge: bool| {
        let mut request =
            env.request(Method::PUT, &format!("EntityDefinitions({table_id})/Attributes({column_id})")).json(&body);
        if merge {
            request = request.header("MSCRM.MergeLabels", "true");
        }
        env.send(request)
    };
    let reply = put(Json::Object(body.clone()), true).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let after = env.get(&format!("{attr_url}/{odata_type}")).await.json();
    assert_eq!(after["MaxLength"], 300);
    assert_eq!(after["RequiredLevel"]["Value"], "Recommended");
    assert_eq!(after["DisplayName"]["UserLocalizedLabel"]["Label"], "Life motto");
    let languages: Vec<(i64, String)> = after["DisplayName"]["LocalizedLabels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["LanguageCode"].as_i64().unwrap(), l["Label"].as_str().unwrap().to_string()))
        .collect();
    assert!(languages.contains(&(1036, "Devise".into())), "merged labels keep French: {languages:?}");
    let long = "x".repeat(250);
    assert_eq!(env.create("contacts", json!({"lastname": "L", "new_motto": long})).await.len(), 36);
    // Without MergeLabels the labels given replace them all.
    let reply = put(Json::Object(body.clone()), false).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let after = env.get(&attr_url).await.json();
    assert_eq!(after["DisplayName"]["LocalizedLabels"].as_array().unwrap().len(), 1);
    // The type cannot change.
    body.insert("@odata.type".into(), json!("Microsoft.Dynamics.CRM.MemoAttributeMetadata"));
    put(Json::Object(body), true).await.assert_error(400, "0x80040203", "cannot be changed");
}

#[tokio::test]
async fn metadata_10_8_a_deleted_alternate_key_no_longer_upserts() {
    let env = Env::start().await;
    env.add_column(
        "contact",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Code", "MaxLength": 20, "DisplayName": label("Code")}),
    )
    .await;
    let table_id =
        crate::metadata_changes::sdk_entity(&env, "contact").await["MetadataId"].as_str().unwrap().to_string();
    // create_alternate_key(): POST …/Keys, then the first GUID in OData-EntityId.
    let reply = env
        .post(
            "EntityDefinitions(LogicalName='contact')/Keys",
            json!({"SchemaName": "new_CodeKey", "KeyAttributes": ["new_code"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let location = reply.header("odata-entityid").unwrap().to_string();
    let keys = env.get("EntityDefinitions(LogicalName='contact')/Keys").await.json();
    let key_id =
        keys["value"].as_array().unwrap().iter().find(|k| k["SchemaName"] == "new_CodeKey").unwrap()["MetadataId"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(location.ends_with(&format!("/EntityDefinitions({table_id})/Keys({key_id})")), "{location}");
    let first_guid = location.split('(').nth(1).unwrap().split(')').next().unwrap();
    assert_eq!(first_guid, table_id, "a client taking the first GUID gets the table's id, as on Dataverse");
    let upsert = |code: &str| {
        env.send(
            env.request(Method::PATCH, &format!("contacts(new_code='{code}')")).json(&json!({"lastname": "Keyed"})),
        )
    };
    assert!(upsert("A-1").await.status.is_success());
    // delete_alternate_key() with that id: no key has it.
    env.delete(&format!("EntityDefinitions(LogicalName='contact')/Keys({first_guid})")).await.assert_error(
        404,
        "0x80040217",
        "Could not find an entity key",
    );
    let reply = env.delete("EntityDefinitions(LogicalName='contact')/Keys(LogicalName='new_codekey')").await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(
        env.get("EntityDefinitions(LogicalName='contact')/Keys").await.json()["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["SchemaName"] == "new_CodeKey")
            .count(),
        0
    );
    let after = upsert("A-2").await;
    assert_eq!(after.status.as_u16(), 400, "{}", after.text);
    // And by its own id.
    env.post(
        "EntityDefinitions(LogicalName='contact')/Keys",
        json!({"SchemaName": "new_CodeKey2", "KeyAttributes": ["new_code"]}),
    )
    .await;
    let keys =
        env.get("EntityDefinitions(LogicalName='contact')/Keys?$filter=SchemaName%20eq%20'new_CodeKey2'").await.json();
    let id = keys["value"][0]["MetadataId"].as_str().unwrap();
    let reply = env.delete(&format!("EntityDefinitions(LogicalName='contact')/Keys({id})")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
}
