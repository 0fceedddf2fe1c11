//! §10 Metadata: `RelationshipDefinitions` and a table's relationships — every lookup column is a
//! one-to-many relationship; relationships are created (a lookup with its one-to-many relationship, a
//! many-to-many one) and deleted as Microsoft's Python SDK (`data/_relationships.py`) does it, and they
//! survive a restart.

use crate::metadata_changes::{sdk_create_table, sdk_entity};
use crate::{Env, label};
use dataverse_emulator::EmulatorConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};

fn values(body: &Json) -> Vec<Json> {
    body["value"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn metadata_10_9_relationship_definitions_list_the_one_to_many_relationship_of_every_lookup() {
    let env = Env::start().await;
    let all = env.get("RelationshipDefinitions").await.json();
    let contact_account = values(&all)
        .into_iter()
        .find(|r| r["SchemaName"] == "account_contact_parentcustomerid")
        .expect("contact.parentcustomerid → account is a relationship");
    assert_eq!(contact_account["@odata.type"], "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata");
    assert_eq!(contact_account["RelationshipType"], "OneToManyRelationship");
    assert_eq!(contact_account["ReferencedEntity"], "account", "each item shows its derived type's properties");
    // The cast segment shows the one-to-many properties, and filters on them.
    let cast = env
        .get("RelationshipDefinitions/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata?$select=SchemaName,ReferencedEntity,ReferencedAttribute,ReferencingEntity,ReferencingAttribute,ReferencingEntityNavigationPropertyName,CascadeConfiguration&$filter=ReferencingEntity%20eq%20'contact'")
        .await
        .json();
    let r = values(&cast)
        .into_iter()
        .find(|r| r["ReferencingAttribute"] == "parentcustomerid" && r["ReferencedEntity"] == "account")
        .unwrap();
    assert_eq!(r["ReferencedAttribute"], "accountid");
    assert_eq!(r["ReferencingEntityNavigationPropertyName"], "parentcustomerid_account");
    assert_eq!(r["CascadeConfiguration"]["Delete"], "RemoveLink");
    assert!(r.get("@odata.type").is_none(), "the declared type needs no annotation");
    env.get("RelationshipDefinitions?$filter=ReferencedEntity%20eq%20'account'").await.assert_error(
        400,
        "0x80060888",
        "ReferencedEntity",
    );
    let typed = env
        .get("RelationshipDefinitions?$filter=RelationshipType%20eq%20Microsoft.Dynamics.CRM.RelationshipType'ManyToManyRelationship'")
        .await
        .json();
    assert!(values(&typed).is_empty());
    // One by SchemaName or by MetadataId.
    let id = contact_account["MetadataId"].as_str().unwrap();
    let by_name = env.get("RelationshipDefinitions(SchemaName='account_contact_parentcustomerid')").await.json();
    assert_eq!(by_name["MetadataId"], id);
    assert_eq!(by_name["ReferencingEntity"], "contact");
    let by_id = env
        .get(&format!("RelationshipDefinitions({id})/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata"))
        .await
        .json();
    assert_eq!(by_id["SchemaName"], "account_contact_parentcustomerid");
    env.get("RelationshipDefinitions(SchemaName='new_nothing')").await.assert_error(404, "0x80040217", "new_nothing");
    // A table's relationships, as list_table_relationships() reads them.
    let account_id = sdk_entity(&env, "account").await["MetadataId"].as_str().unwrap().to_string();
    let one_to_many = env
        .get(&format!("EntityDefinitions({account_id})/OneToManyRelationships?$select=SchemaName,ReferencingEntity"))
        .await
        .json();
    assert!(values(&one_to_many).iter().any(|r| r["ReferencingEntity"] == "contact"));
    let many_to_one = env.get(&format!("EntityDefinitions({account_id})/ManyToOneRelationships")).await.json();
    assert!(values(&many_to_one).iter().all(|r| r["ReferencingEntity"] == "account"));
    assert!(values(&many_to_one).iter().any(|r| r["ReferencingAttribute"] == "primarycontactid"));
    let many_to_many = env.get(&format!("EntityDefinitions({account_id})/ManyToManyRelationships")).await.json();
    assert!(values(&many_to_many).is_empty());
}

/// `create_lookup_field()`: the body `_create_one_to_many_relationship` posts.
fn sdk_lookup(referencing: &str, lookup: &str, referenced: &str) -> Json {
    json!({
        "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "SchemaName": format!("{referenced}_{referencing}_{lookup}"),
        "ReferencedEntity": referenced,
        "ReferencingEntity": referencing,
        "ReferencedAttribute": format!("{referenced}id"),
        "CascadeConfiguration": {"Assign": "NoCascade", "Delete": "RemoveLink", "Merge": "NoCascade",
            "Reparent": "NoCascade", "Share": "NoCascade", "Unshare": "NoCascade"},
        "Lookup": {
            "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "SchemaName": lookup, "AttributeType": "Lookup", "AttributeTypeName": {"Value": "LookupType"},
            "DisplayName": {"@odata.type": "Microsoft.Dynamics.CRM.Label", "LocalizedLabels": [
                {"@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel", "Label": "Account", "LanguageCode": 1033}]},
            "RequiredLevel": {"Value": "None", "CanBeChanged": true, "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"},
        },
    })
}

fn id_in(location: &str) -> String {
    location.rsplit_once('(').unwrap().1.trim_end_matches(')').to_string()
}

#[tokio::test]
async fn metadata_10_10_a_lookup_created_through_a_relationship_binds_and_goes_with_it() {
    let env = Env::start().await;
    sdk_create_table(&env, "new_Order", vec![]).await;
    let reply = env.post("RelationshipDefinitions", sdk_lookup("new_order", "new_AccountId", "account")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let relationship_id = id_in(reply.header("odata-entityid").unwrap());
    let relationship = env.get("RelationshipDefinitions(SchemaName='account_new_order_new_AccountId')").await.json();
    assert_eq!(relationship["MetadataId"], relationship_id);
    assert_eq!(relationship["ReferencingAttribute"], "new_accountid");
    assert_eq!(relationship["ReferencingEntityNavigationPropertyName"], "new_AccountId");
    assert_eq!(relationship["IsCustomRelationship"], true);
    let column =
        env.get("EntityDefinitions(LogicalName='new_order')/Attributes(LogicalName='new_accountid')").await.json();
    assert_eq!(column["AttributeType"], "Lookup");
    assert_eq!(column["Targets"], json!(["account"]));
    assert!(
        env.get("$metadata").await.text.contains("NavigationProperty Name=\"new_AccountId\" Type=\"mscrm.account\"")
    );
    // Records bind through the lookup's navigation property.
    let account = env.create("accounts", json!({"name": "Contoso"})).await;
    let order = env
        .create("new_orders", json!({"new_name": "O-1", "new_AccountId@odata.bind": format!("/accounts({account})")}))
        .await;
    let row = env.get(&format!("new_orders({order})?$select=_new_accountid_value")).await.json();
    assert_eq!(row["_new_accountid_value"], account);
    // The relationship appears on both tables.
    let account_id = sdk_entity(&env, "account").await["MetadataId"].as_str().unwrap().to_string();
    let one_to_many = env.get(&format!("EntityDefinitions({account_id})/OneToManyRelationships")).await.json();
    assert!(values(&one_to_many).iter().any(|r| r["SchemaName"] == "account_new_order_new_AccountId"));
    // The table it refers to is protected while it exists; its lookup is deleted with it.
    env.delete("EntityDefinitions(LogicalName='new_order')/Attributes(LogicalName='new_accountid')")
        .await
        .assert_error(400, "0x80040203", "RelationshipDefinitions");
    let again = env.post("RelationshipDefinitions", sdk_lookup("new_order", "new_AccountId", "account")).await;
    again.assert_error(400, "0x80047013", "already exists");
    let reply = env
        .send(
            env.request(Method::DELETE, &format!("RelationshipDefinitions({relationship_id})")).header("If-Match", "*"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert_eq!(
        env.get("RelationshipDefinitions(SchemaName='account_new_order_new_AccountId')").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.get("EntityDefinitions(LogicalName='new_order')/Attributes(LogicalName='new_accountid')").await.status,
        StatusCode::NOT_FOUND
    );
    env.post("new_orders", json!({"new_name": "O-2", "new_AccountId@odata.bind": format!("/accounts({account})")}))
        .await
        .assert_error(400, "0x80048d19", "new_AccountId");
    // System relationships stay.
    env.delete("RelationshipDefinitions(SchemaName='account_contact_parentcustomerid')").await.assert_error(
        400,
        "0x80040203",
        "system relationship",
    );
}

#[tokio::test]
async fn metadata_10_11_many_to_many_relationships_are_kept_and_associating_through_them_is_refused() {
    let env = Env::start().await;
    sdk_create_table(&env, "new_Project", vec![]).await;
    let body = json!({
        "@odata.type": "Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata",
        "SchemaName": "new_contact_project", "Entity1LogicalName": "contact", "Entity2LogicalName": "new_project",
        "IntersectEntityName": "new_contact_project",
    });
    let reply = env.post("RelationshipDefinitions", body.clone()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    let id = id_in(reply.header("odata-entityid").unwrap());
    let found = env.get("RelationshipDefinitions?$filter=SchemaName%20eq%20'new_contact_project'").await.json();
    let found = &values(&found)[0];
    assert_eq!(found["@odata.type"], "#Microsoft.Dynamics.CRM.ManyToManyRelationshipMetadata");
    assert_eq!(found["MetadataId"], id);
    let project_id = sdk_entity(&env, "new_project").await["MetadataId"].as_str().unwrap().to_string();
    let listed = env.get(&format!("EntityDefinitions({project_id})/ManyToManyRelationships")).await.json();
    assert_eq!(values(&listed)[0]["Entity1LogicalName"], "contact");
    assert_eq!(values(&listed)[0]["Entity2NavigationPropertyName"], "new_contact_project");
    env.post("RelationshipDefinitions", body).await.assert_error(400, "0x80047013", "already exists");
    // The emulator keeps no intersect rows: associating through the relationship is refused by name.
    let contact = env.create("contacts", json!({"lastname": "Member"})).await;
    let project = env.create("new_projects", json!({"new_name": "P"})).await;
    let reply = env
        .post(
            &format!("contacts({contact})/new_contact_project/$ref"),
            json!({"@odata.id": env.api(&format!("new_projects({project})"))}),
        )
        .await;
    reply.assert_error(501, "0x80040203", "new_contact_project");
    // A table in a many-to-many relationship of another table is protected until it is deleted.
    env.delete("EntityDefinitions(LogicalName='new_project')").await.assert_error(
        400,
        "0x80040203",
        "new_contact_project",
    );
    let reply = env.delete(&format!("RelationshipDefinitions({id})")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    assert!(
        values(&env.get(&format!("EntityDefinitions({project_id})/ManyToManyRelationships")).await.json()).is_empty()
    );
    assert_eq!(env.delete("EntityDefinitions(LogicalName='new_project')").await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn metadata_10_12_relationships_and_deletions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.db");
    let config = EmulatorConfig { state: Some(path.clone()), ..crate::config() };
    let first = Env::with(config.clone()).await;
    sdk_create_table(&first, "new_Order", vec![]).await;
    sdk_create_table(&first, "new_Gone", vec![]).await;
    first.create("new_gones", json!({"new_name": "lost"})).await;
    let reply = first.post("RelationshipDefinitions", sdk_lookup("new_order", "new_AccountId", "account")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    first
        .add_column("contact", json!({"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Temp", "DisplayName": label("Temp")}))
        .await;
    first.create("contacts", json!({"lastname": "T", "new_temp": "kept?"})).await;
    assert_eq!(
        first.delete("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='new_temp')").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(first.delete("EntityDefinitions(LogicalName='new_gone')").await.status, StatusCode::NO_CONTENT);
    let port: u16 = first.emulator.url.rsplit(':').next().unwrap().parse().unwrap();
    first.emulator.stop().await;

    let second = Env::with(EmulatorConfig { listen: ([127, 0, 0, 1], port).into(), ..config }).await;
    let relationship = second.get("RelationshipDefinitions(SchemaName='account_new_order_new_AccountId')").await;
    assert_eq!(relationship.status, StatusCode::OK, "{}", relationship.text);
    let account = second.create("accounts", json!({"name": "Fabrikam"})).await;
    second
        .create("new_orders", json!({"new_name": "O", "new_AccountId@odata.bind": format!("/accounts({account})")}))
        .await;
    assert_eq!(
        second.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='new_temp')").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(sdk_entity(&second, "new_gone").await.is_null());
    // A table created again under the dropped name starts empty.
    sdk_create_table(&second, "new_Gone", vec![]).await;
    assert!(values(&second.get("new_gones").await.json()).is_empty());
}

#[tokio::test]
async fn metadata_10_10_a_relationship_promising_a_cascade_the_emulator_does_not_apply_is_refused() {
    let env = Env::start().await;
    sdk_create_table(&env, "new_Order", vec![]).await;
    let mut body = sdk_lookup("new_order", "new_AccountId", "account");
    body["CascadeConfiguration"] = json!({"Delete": "Restrict"});
    env.post("RelationshipDefinitions", body).await.assert_error(
        400,
        "0x80040203",
        "CascadeConfiguration.Delete 'Restrict'",
    );
    // Nothing was created.
    let columns = env.get("EntityDefinitions(LogicalName='new_order')/Attributes?$select=LogicalName").await.json();
    assert!(values(&columns).iter().all(|c| c["LogicalName"] != "new_accountid"), "{columns}");
}
