//! §10 Metadata: the service document, `$metadata`, `EntityDefinitions` and attributes with casts, and
//! customization — custom columns of each type and custom tables that behave as built-in ones.

use crate::{Env, label};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

#[tokio::test]
async fn s4_1_service_document_lists_the_entity_sets() {
    let env = Env::start().await;
    let body = env.get("").await.json();
    assert_eq!(body["@odata.context"], format!("{}$metadata", env.emulator.web_api));
    let names: Vec<&str> = body["value"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for set in ["accounts", "contacts", "leads", "systemusers"] {
        assert!(names.contains(&set), "{set} in {names:?}");
    }
}

#[tokio::test]
async fn s10_1_metadata_is_valid_csdl_with_every_table() {
    let env = Env::start().await;
    let reply = env.get("$metadata").await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = roxmltree::Document::parse(&reply.text).expect("well-formed XML");
    let schema = doc.descendants().find(|n| n.has_tag_name("Schema")).unwrap();
    assert_eq!(schema.attribute("Namespace"), Some("Microsoft.Dynamics.CRM"));
    assert_eq!(schema.attribute("Alias"), Some("mscrm"));
    let contact =
        schema.children().find(|n| n.has_tag_name("EntityType") && n.attribute("Name") == Some("contact")).unwrap();
    assert_eq!(contact.attribute("BaseType"), Some("mscrm.crmbaseentity"));
    let key = contact.descendants().find(|n| n.has_tag_name("PropertyRef")).unwrap();
    assert_eq!(key.attribute("Name"), Some("contactid"));
    let property =
        |name: &str| contact.children().find(|n| n.has_tag_name("Property") && n.attribute("Name") == Some(name));
    assert_eq!(property("firstname").unwrap().attribute("Type"), Some("Edm.String"));
    assert_eq!(property("birthdate").unwrap().attribute("Type"), Some("Edm.Date"));
    assert_eq!(property("_parentcustomerid_value").unwrap().attribute("Type"), Some("Edm.Guid"));
    let nav = contact
        .children()
        .find(|n| n.has_tag_name("NavigationProperty") && n.attribute("Name") == Some("parentcustomerid_account"))
        .unwrap();
    assert_eq!(nav.attribute("Type"), Some("mscrm.account"));
    // Every navigation property's type is declared.
    let types: Vec<&str> =
        schema.children().filter(|n| n.has_tag_name("EntityType")).filter_map(|n| n.attribute("Name")).collect();
    for nav in doc.descendants().filter(|n| n.has_tag_name("NavigationProperty")) {
        let target = nav.attribute("Type").unwrap().trim_start_matches("mscrm.");
        assert!(types.contains(&target), "{target}");
    }
    let sets = doc.descendants().filter(|n| n.has_tag_name("EntitySet")).count();
    assert_eq!(sets, types.len() - 1, "one entity set per table");
    // annotations=true adds change tracking support per entity set.
    let annotated = env.get("$metadata?annotations=true").await.text;
    assert!(annotated.contains("Org.OData.Capabilities.V1.ChangeTracking"));
}

#[tokio::test]
async fn s10_2_entity_definitions_answer_select_filter_and_expand() {
    let env = Env::start().await;
    let body = env.get("EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=LogicalName%20eq%20'contact'").await.json();
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["EntitySetName"], "contacts");
    assert_eq!(value[0]["PrimaryIdAttribute"], "contactid");
    assert!(value[0]["MetadataId"].is_string(), "MetadataId is always returned");
    assert!(value[0].get("DisplayName").is_none());
    let one = env
        .get("EntityDefinitions(LogicalName='account')?$select=DisplayName,IsOptimisticConcurrencyEnabled")
        .await
        .json();
    assert_eq!(one["DisplayName"]["UserLocalizedLabel"]["Label"], "Account");
    assert_eq!(one["DisplayName"]["LocalizedLabels"][0]["LanguageCode"], 1033);
    let expanded = env
        .get("EntityDefinitions(LogicalName='contact')?$select=LogicalName&$expand=Attributes($select=LogicalName;$filter=IsCustomAttribute%20eq%20false)")
        .await
        .json();
    let attributes = expanded["Attributes"].as_array().unwrap();
    assert!(attributes.iter().any(|a| a["LogicalName"] == "emailaddress1"));
    env.get("EntityDefinitions?$select=Nonsense").await.assert_error(400, "0x80060888", "'Nonsense'");
}

#[tokio::test]
async fn s10_2_attributes_answer_casts_and_type_filters() {
    let env = Env::start().await;
    let strings = env
        .get("EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength")
        .await
        .json();
    let firstname = strings["value"].as_array().unwrap().iter().find(|a| a["LogicalName"] == "firstname").unwrap();
    assert_eq!(firstname["MaxLength"], 50);
    assert_eq!(firstname["@odata.type"], "#Microsoft.Dynamics.CRM.StringAttributeMetadata");
    // Type-specific properties need the cast.
    env.get("EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName,MaxLength").await.assert_error(
        400,
        "0x80060888",
        "Could not find a property named 'MaxLength' on type 'Microsoft.Dynamics.CRM.AttributeMetadata'.",
    );
    let picklists = env
        .get("EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName&$filter=AttributeType%20eq%20Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'")
        .await
        .json();
    let names: Vec<&str> =
        picklists["value"].as_array().unwrap().iter().map(|a| a["LogicalName"].as_str().unwrap()).collect();
    assert!(names.contains(&"gendercode") && !names.contains(&"firstname"), "{names:?}");
    let required = env
        .get("EntityDefinitions(LogicalName='contact')/Attributes?$select=LogicalName&$filter=RequiredLevel/Value%20eq%20Microsoft.Dynamics.CRM.AttributeRequiredLevel'ApplicationRequired'")
        .await
        .json();
    assert_eq!(
        required["value"].as_array().unwrap().iter().map(|a| a["LogicalName"].clone()).collect::<Vec<_>>(),
        [json!("lastname")]
    );
    let gender = env
        .get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='gendercode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet")
        .await
        .json();
    let options = gender["OptionSet"]["Options"].as_array().unwrap();
    assert_eq!(options[1]["Value"], 2);
    assert_eq!(options[1]["Label"]["UserLocalizedLabel"]["Label"], "Female");
}

#[tokio::test]
async fn an_option_inserted_into_a_choice_column_is_then_accepted_and_shown() {
    let env = Env::start().await;
    env.post("leads", json!({"subject": "S", "lastname": "L", "leadsourcecode": 100000000})).await.assert_error(
        400,
        "0x8004431a",
        "outside the valid range",
    );
    let label = |text: &str| json!({"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]});
    let body =
        json!({"EntityLogicalName": "lead", "AttributeLogicalName": "leadsourcecode", "Label": label("Marketplace")});
    let reply = env.post("InsertOptionValue", body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["NewOptionValue"], 100000000);
    let again = env.post("InsertOptionValue", body).await;
    assert_eq!(again.json()["NewOptionValue"], 100000001, "the next free value");
    env.create("leads", json!({"subject": "S", "lastname": "L", "leadsourcecode": 100000000})).await;
    let column = env
        .get("EntityDefinitions(LogicalName='lead')/Attributes(LogicalName='leadsourcecode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet")
        .await
        .json();
    let labels: Vec<&str> = column["OptionSet"]["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Label"]["UserLocalizedLabel"]["Label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"Marketplace"), "{labels:?}");
    let duplicate = json!({"EntityLogicalName": "lead", "AttributeLogicalName": "leadsourcecode", "Value": 8, "Label": label("Web")});
    assert_eq!(env.post("InsertOptionValue", duplicate).await.status, StatusCode::BAD_REQUEST);
    let not_choice = json!({"EntityLogicalName": "lead", "AttributeLogicalName": "subject", "Label": label("X")});
    assert_eq!(env.post("InsertOptionValue", not_choice).await.status, StatusCode::BAD_REQUEST);

    // Deleted, the option is refused again; a value that is not there cannot be deleted.
    let delete = json!({"EntityLogicalName": "lead", "AttributeLogicalName": "leadsourcecode", "Value": 100000000});
    assert_eq!(env.post("DeleteOptionValue", delete.clone()).await.status, StatusCode::NO_CONTENT);
    env.post("leads", json!({"subject": "S", "lastname": "L", "leadsourcecode": 100000000})).await.assert_error(
        400,
        "0x8004431a",
        "outside the valid range",
    );
    assert_eq!(env.post("DeleteOptionValue", delete).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn s10_3_custom_columns_of_each_type_behave_as_built_in_ones() {
    let env = Env::start().await;
    let columns = [
        json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_LoyaltyId", "MaxLength": 10, "FormatName": {"Value": "Text"}, "DisplayName": label("Loyalty id"), "RequiredLevel": {"Value": "None"}}),
        json!({"@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata", "SchemaName": "new_Points", "MinValue": 0, "MaxValue": 1000, "DisplayName": label("Points")}),
        json!({"@odata.type": "Microsoft.Dynamics.CRM.BooleanAttributeMetadata", "SchemaName": "new_Vip", "DisplayName": label("VIP"),
               "OptionSet": {"TrueOption": {"Value": 1, "Label": label("VIP")}, "FalseOption": {"Value": 0, "Label": label("Regular")}}}),
        json!({"@odata.type": "Microsoft.Dynamics.CRM.DateTimeAttributeMetadata", "SchemaName": "new_JoinedOn", "Format": "DateOnly", "DisplayName": label("Joined on")}),
        json!({"@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata", "SchemaName": "cr8a3_Tier", "DisplayName": label("Tier"),
               "OptionSet": {"IsGlobal": false, "OptionSetType": "Picklist", "Options": [{"Label": label("Gold")}, {"Label": label("Silver")}]}}),
    ];
    for column in columns {
        let reply = env.post("EntityDefinitions(LogicalName='contact')/Attributes", column).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
        let location = reply.header("odata-entityid").unwrap();
        assert!(location.contains("/EntityDefinitions(") && location.contains(")/Attributes("), "{location}");
    }
    let id = env
        .create("contacts", json!({"lastname": "Vip", "new_loyaltyid": "L-1", "new_points": 10, "new_vip": true, "new_joinedon": "2024-02-29", "cr8a3_tier": 100000001}))
        .await;
    let row = env
        .send(
            env.request(
                reqwest::Method::GET,
                &format!("contacts({id})?$select=new_loyaltyid,new_points,new_vip,new_joinedon,cr8a3_tier"),
            )
            .header("Prefer", "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\""),
        )
        .await
        .json();
    assert_eq!(row["new_loyaltyid"], "L-1");
    assert_eq!(row["new_vip@OData.Community.Display.V1.FormattedValue"], "VIP");
    assert_eq!(row["cr8a3_tier@OData.Community.Display.V1.FormattedValue"], "Silver");
    assert_eq!(row["new_joinedon"], "2024-02-29");
    // Their validation is the same as for built-in columns.
    env.post("contacts", json!({"lastname": "X", "new_loyaltyid": "L-123456789"})).await.assert_error(
        400,
        "0x80044331",
        "'new_loyaltyid'",
    );
    env.post("contacts", json!({"lastname": "X", "cr8a3_tier": 3})).await.assert_error(
        400,
        "0x8004431a",
        "'cr8a3_tier'",
    );
    env.post("contacts", json!({"lastname": "X", "new_points": 1001})).await.assert_error(
        400,
        "0x8004431a",
        "'new_points'",
    );
    // They are queryable and described in metadata.
    let found = env
        .get("contacts?$select=lastname&$filter=new_vip%20eq%20true%20and%20cr8a3_tier%20eq%20100000001")
        .await
        .json();
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    let meta = env.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='new_loyaltyid')?$select=SchemaName,IsCustomAttribute").await.json();
    assert_eq!(meta["SchemaName"], "new_LoyaltyId");
    assert_eq!(meta["IsCustomAttribute"], true);
    assert!(env.get("$metadata").await.text.contains("<Property Name=\"cr8a3_tier\" Type=\"Edm.Int32\""));
    // A column without a publisher prefix, or with a taken name, is refused.
    let reply = env
        .post(
            "EntityDefinitions(LogicalName='contact')/Attributes",
            json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "Tier"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("customization prefix"));
    let again = env
        .post(
            "EntityDefinitions(LogicalName='contact')/Attributes",
            json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_LoyaltyId"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn s10_3_custom_tables_get_an_entity_set_and_standard_columns() {
    let env = Env::start().await;
    let table = json!({
        "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
        "SchemaName": "new_BankAccount",
        "DisplayName": label("Bank Account"),
        "DisplayCollectionName": label("Bank Accounts"),
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
    let definition = env.get("EntityDefinitions(LogicalName='new_bankaccount')?$select=EntitySetName,PrimaryIdAttribute,PrimaryNameAttribute,IsCustomEntity").await.json();
    assert_eq!(definition["EntitySetName"], "new_bankaccounts");
    assert_eq!(definition["PrimaryIdAttribute"], "new_bankaccountid");
    assert_eq!(definition["PrimaryNameAttribute"], "new_name");
    env.add_column(
        "new_bankaccount",
        json!({"@odata.type": "Microsoft.Dynamics.CRM.IntegerAttributeMetadata", "SchemaName": "new_Balance"}),
    )
    .await;
    let id = env.create("new_bankaccounts", json!({"new_name": "Main", "new_balance": 42})).await;
    let row: Json = env.get(&format!("new_bankaccounts({id})")).await.json();
    assert_eq!(row["new_balance"], 42);
    assert_eq!(row["statecode"], 0);
    assert!(row["_ownerid_value"].is_string());
    let listed = env.get("new_bankaccounts?$filter=new_name%20eq%20'main'").await.json();
    assert_eq!(listed["value"].as_array().unwrap().len(), 1);
}
