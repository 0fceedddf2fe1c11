//! Table ingestion end to end, the way seed 003 does it: a Dynamics source connection, explore and preview, a
//! source connection of the contact table, a dataset target, a flow with the CRM-to-dataset flow spec; then a full
//! load, changes and deletes in Dynamics, the incremental load, a restart in the middle of a load, and a resync
//! after Dynamics forgot the flow's delta token.

mod common;

use common::{Backend, World, dataset_target, row, rows_when, source_connection, source_of};
use dataverse_emulator::{CostModel, EmulatorConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Contacts created in Dynamics, with a choice and a lookup set on every other one; their ids.
async fn create_contacts(world: &World, count: usize) -> Vec<Uuid> {
    let dynamics = world.dynamics();
    let account = dynamics
        .send(Method::POST, "accounts", Some(&json!({"name": "Contoso"})))
        .await
        .unwrap()
        .headers()["odata-entityid"]
        .to_str()
        .unwrap()
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')')
        .to_string();
    let mut ids = Vec::new();
    for i in 0..count {
        let mut body = json!({"firstname": format!("First{i}"), "lastname": format!("Last{i}"), "emailaddress1": format!("c{i}@example.com")});
        if i % 2 == 0 {
            body["gendercode"] = json!(2);
            body["parentcustomerid_account@odata.bind"] = json!(format!("/accounts({account})"));
        }
        let reply = dynamics.send(Method::POST, "contacts", Some(&body)).await.unwrap();
        let location = reply.headers()["odata-entityid"].to_str().unwrap().to_string();
        ids.push(location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap());
    }
    ids
}

/// The ingestion's resources: source connection, dataset target, flow; their ids.
async fn ingestion_flow(world: &World, connection: &str, dataset: &str, schedule: Json) -> (String, String) {
    let transformations = json!([
        {"name": "Copy", "params": {"deltaColumn": {"name": "modifiedon", "dateFormat": "yyyy-MM-ddTHH:mm:ssZ", "timezone": "UTC"}}},
        {"name": "Mapping", "params": {"mappings": [
            {"sourceAttribute": "contactid", "destination": "contact_id"},
            {"sourceAttribute": "firstname", "destination": "first_name"},
            {"sourceAttribute": "lastname"},
            {"sourceAttribute": "emailaddress1", "destination": "email"},
            {"sourceAttribute": "gendercode", "destination": "gender"},
            {"sourceAttribute": "parentcustomerid", "destination": "company"}
        ]}}
    ]);
    ingestion_flow_with(world, connection, dataset, schedule, transformations).await
}

/// The same, with the flow's own transformations.
async fn ingestion_flow_with(
    world: &World,
    connection: &str,
    dataset: &str,
    schedule: Json,
    transformations: Json,
) -> (String, String) {
    let reply = world.get("flowSpecs?property=name==\"CRMToAEP\"").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let flow_spec = reply.json()["items"][0]["id"].as_str().unwrap().to_string();
    let source = source_of(world, connection, "contact").await;
    let target = dataset_target(world, json!({"dataSetId": dataset})).await;
    let reply = world
        .post(
            "flows",
            json!({
                "name": "Dynamics contacts to a dataset",
                "flowSpec": {"id": flow_spec, "version": "1.0"},
                "sourceConnectionIds": [source],
                "targetConnectionIds": [target],
                "transformations": transformations,
                "scheduleParams": schedule
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    (reply.json()["id"].as_str().unwrap().to_string(), target)
}

async fn explore_and_load_a_table_fully_then_incrementally(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let ids = create_contacts(&world, 30).await;
    let connection = source_connection(&world).await;

    // Explore: tables and views, one table's columns, a preview.
    let reply = world.get(&format!("connections/{connection}/explore?objectType=root")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let objects = reply.json();
    let objects = objects.as_array().unwrap();
    assert!(
        objects.iter().any(|o| o["type"] == "table" && o["path"] == "contact" && o["canPreview"] == true),
        "{objects:?}"
    );
    assert!(objects.iter().any(|o| o["type"] == "view" && o["table"] == "contact"), "views are listed: {objects:?}");
    let reply = world
        .get(&format!("connections/{connection}/explore?objectType=table&object=contact&preview=true&previewCount=5"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let explored = reply.json();
    let columns = explored["schema"]["columns"].as_array().unwrap();
    let firstname = columns.iter().find(|c| c["name"] == "firstname").unwrap();
    assert_eq!(
        (firstname["type"].as_str(), firstname["meta"]["originalType"].as_str()),
        (Some("string"), Some("String"))
    );
    let gender = columns.iter().find(|c| c["name"] == "gendercode").unwrap();
    assert_eq!(gender["type"], "integer");
    assert_eq!(explored["data"].as_array().unwrap().len(), 5, "{explored}");
    let reply = world
        .get(&format!(
            "connections/{connection}/explore?objectType=table&object=contact&preview=true&previewCount=5000"
        ))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a preview is capped: {}", reply.text);
    assert!(reply.detail().contains("1 to 100"), "{}", reply.text);

    // The flow loads the table whole, then follows its changes.
    let (flow, target) =
        ingestion_flow(&world, &connection, "contacts_ds", json!({"frequency": "continuous", "interval": 1})).await;
    let rows = rows_when(&world, &target, "the full load", |rows| rows.len() == 30).await;
    let first = row(&rows, ids[0]);
    assert_eq!(first["operation"], "r");
    assert_eq!(first["values"]["first_name"], "First0");
    assert_eq!(first["values"]["email"], "c0@example.com");
    assert_eq!(first["values"]["gender"], 2);
    assert_eq!(first["values"]["gender_label"], "Female", "a choice comes with its label: {first}");
    assert_eq!(first["values"]["company_table"], "account", "a lookup comes with its table: {first}");
    assert!(first["version"].as_i64().is_some(), "{first}");
    assert_eq!(row(&rows, ids[1])["values"]["company"], Json::Null);

    // Dynamics keeps times to the second: a change in the second the contacts were created in reads as a creation.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dynamics = world.dynamics();
    dynamics
        .send(Method::PATCH, &format!("contacts({})", ids[1]), Some(&json!({"firstname": "Renamed"})))
        .await
        .unwrap();
    dynamics.send(Method::DELETE, &format!("contacts({})", ids[2]), None).await.unwrap();
    let created = world.create_contact("Newcomer").await;
    let rows = rows_when(&world, &target, "the incremental load", |rows| {
        rows.iter().any(|r| r["id"] == created.to_string())
            && rows.iter().any(|r| r["id"] == ids[2].to_string() && r["deleted"] == true)
            && rows.iter().any(|r| r["id"] == ids[1].to_string() && r["values"]["first_name"] == "Renamed")
    })
    .await;
    assert_eq!(row(&rows, ids[1])["operation"], "u");
    assert_eq!(row(&rows, ids[2])["operation"], "d");
    assert_eq!(row(&rows, created)["operation"], "c");
    assert_eq!(rows.len(), 31);

    // A maker adds an option and a contact takes it: its label is read from the options, read again for it.
    let option = json!({"EntityLogicalName": "contact", "AttributeLogicalName": "gendercode", "Value": 3,
                        "Label": {"LocalizedLabels": [{"Label": "Non-binary", "LanguageCode": 1033}]}});
    dynamics.send(Method::POST, "InsertOptionValue", Some(&option)).await.unwrap();
    dynamics.send(Method::PATCH, &format!("contacts({})", ids[3]), Some(&json!({"gendercode": 3}))).await.unwrap();
    let rows = rows_when(&world, &target, "the new option", |rows| {
        rows.iter().any(|r| r["id"] == ids[3].to_string() && r["values"]["gender"] == 3)
    })
    .await;
    let changed = row(&rows, ids[3]);
    assert_eq!(changed["values"]["gender_label"], "Non-binary", "{changed}");

    // The runs: the full load, then the changes (a continuous flow counts them in its run of the hour).
    let changes = |runs: &[Json]| -> u64 {
        runs.iter()
            .filter(|r| r["load"].is_null())
            .map(|r| {
                r["metrics"]["recordSummary"]["deletedRecordCount"].as_u64().unwrap_or(0)
                    + r["metrics"]["recordSummary"]["inputRecordCount"].as_u64().unwrap()
            })
            .sum()
    };
    let runs = world.runs_when(&flow, "the three changes counted", |runs| changes(runs) >= 3).await;
    let full = runs.iter().find(|r| r["load"]["loadType"] == "full").unwrap_or_else(|| panic!("{runs:?}"));
    assert_eq!(full["metrics"]["recordSummary"]["inputRecordCount"], 30, "{full}");
    assert_eq!(full["metrics"]["recordSummary"]["outputRecordCount"], 30, "{full}");
    assert!(full["load"]["completedAt"].is_string(), "{full}");
    world.finish().await;
}

async fn a_flow_resyncs_when_dynamics_forgot_its_delta_token(backend: Backend) {
    let emulator =
        EmulatorConfig { cost: CostModel::free(), change_retention: Duration::from_secs(2), ..Default::default() };
    let Some(world) = World::start_with(backend, emulator).await else { return };
    let ids = create_contacts(&world, 12).await;
    let connection = source_connection(&world).await;
    let (flow, target) =
        ingestion_flow(&world, &connection, "contacts_resync", json!({"frequency": "continuous", "interval": 1})).await;
    rows_when(&world, &target, "the full load", |rows| rows.len() == 12).await;
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=disable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let dynamics = world.dynamics();
    dynamics.send(Method::DELETE, &format!("contacts({})", ids[3]), None).await.unwrap();
    dynamics
        .send(Method::PATCH, &format!("contacts({})", ids[4]), Some(&json!({"lastname": "Changed"})))
        .await
        .unwrap();
    // Longer than the environment keeps changes: the flow's token is forgotten.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reply = world.send(Method::POST, &format!("flows/{flow}/action?op=enable"), None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let rows = rows_when(&world, &target, "the resync", |rows| {
        rows.iter().any(|r| r["id"] == ids[3].to_string() && r["deleted"] == true)
            && rows.iter().any(|r| r["id"] == ids[4].to_string() && r["values"]["lastname"] == "Changed")
    })
    .await;
    assert_eq!(rows.len(), 12);
    let runs = runs_after(&world, &flow, "resync").await;
    let resync = runs.iter().find(|r| r["load"]["loadType"] == "resync").unwrap();
    // Only the changed row is written again, and the deleted one marked.
    assert_eq!(resync["metrics"]["recordSummary"]["outputRecordCount"], 2, "{resync}");
    assert_eq!(resync["metrics"]["recordSummary"]["deletedRecordCount"], 1, "{resync}");
    world.finish().await;
}

async fn a_flow_refuses_what_it_cannot_load_and_says_why(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let connection = source_connection(&world).await;
    let reply = world
        .post("sourceConnections", json!({"baseConnectionId": connection, "params": {"tableName": "contactz"}}))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    assert!(reply.detail().contains("contactz"), "{}", reply.text);
    let reply = world
        .post(
            "targetConnections",
            json!({"params": {"dataSetId": "9 bad name", "format": "csv"}, "connectionSpec": {"id": "c604ff05-7f1a-43c0-8e18-33bf874cb11c"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let problems = reply.json()["report"]["problems"].as_array().unwrap().len();
    assert_eq!(problems, 2, "every problem at once: {}", reply.text);
    world.finish().await;
}

/// A custom table, created as a maker would, without change tracking; the ids of its rows.
async fn visits_table(world: &World, count: usize) -> Vec<Uuid> {
    let dynamics = world.dynamics();
    let label = |text: &str| json!({"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]});
    let table = json!({
        "SchemaName": "new_Visit", "DisplayName": label("Visit"), "DisplayCollectionName": label("Visits"),
        "OwnershipType": "UserOwned", "ChangeTrackingEnabled": false,
        "Attributes": [{"@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata", "SchemaName": "new_Name", "IsPrimaryName": true, "MaxLength": 100}]
    });
    let reply = dynamics.send(Method::POST, "EntityDefinitions", Some(&table)).await.unwrap();
    assert!(reply.status().is_success(), "{}", reply.text().await.unwrap());
    let mut ids = Vec::new();
    for i in 0..count {
        let reply =
            dynamics.send(Method::POST, "new_visits", Some(&json!({"new_name": format!("visit {i}")}))).await.unwrap();
        let location = reply.headers()["odata-entityid"].to_str().unwrap().to_string();
        ids.push(location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap());
    }
    ids
}

async fn a_table_without_change_tracking_loads_by_its_delta_column_and_scans_for_deletes(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let ids = visits_table(&world, 8).await;
    let connection = source_connection(&world).await;
    let source = source_of(&world, &connection, "new_visit").await;
    let target = dataset_target(&world, json!({"dataSetId": "visits"})).await;
    let flow_body = |delta: &str| {
        json!({
            "name": "Visits",
            "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860", "version": "1.0"},
            "sourceConnectionIds": [source], "targetConnectionIds": [target],
            "transformations": [{"name": "Copy", "params": {"deltaColumn": {"name": delta}, "scanIntervalSeconds": 4}}],
            "scheduleParams": {"frequency": "continuous", "interval": 1}
        })
    };
    let reply = world.post("flows", flow_body("new_name")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a delta column is a date and time: {}", reply.text);
    assert!(reply.detail().contains("no change tracking"), "{}", reply.text);
    let reply = world.post("flows", flow_body("modifiedon")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();
    rows_when(&world, &target, "the full load", |rows| rows.len() == 8).await;

    // Dynamics keeps times to the second: a change in the second the rows were created in reads as a creation.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let dynamics = world.dynamics();
    dynamics
        .send(Method::PATCH, &format!("new_visits({})", ids[0]), Some(&json!({"new_name": "moved"})))
        .await
        .unwrap();
    dynamics.send(Method::DELETE, &format!("new_visits({})", ids[1]), None).await.unwrap();
    let rows = rows_when(&world, &target, "the change, then the delete found by a scan", |rows| {
        rows.iter().any(|r| r["id"] == ids[0].to_string() && r["values"]["new_name"] == "moved")
            && rows.iter().any(|r| r["id"] == ids[1].to_string() && r["deleted"] == true)
    })
    .await;
    assert_eq!(row(&rows, ids[0])["operation"], "u");
    assert_eq!(rows.iter().filter(|r| r["deleted"] == false).count(), 7);
    world.runs_when(&flow, "a scan run", |runs| runs.iter().any(|r| r["load"]["loadType"] == "scan")).await;
    world.finish().await;
}

/// A dataset kept in a PostgreSQL table: loaded, changed, read back with SQL; its connection string never shown.
#[tokio::test]
async fn a_postgres_dataset_is_kept_current_by_upsert_and_read_back_with_sql() {
    common::bounded(async {
        let Some(database) = common::PgDatabase::create().await else { return };
        let Some(world) = World::start(Backend::Sqlite).await else { return };
        let ids = create_contacts(&world, 10).await;
        let connection = source_connection(&world).await;
        let source = source_of(&world, &connection, "contact").await;
        let params = json!({"dataSetId": "dynamics_contacts", "format": "postgres", "connectionString": database.url});
        let target = dataset_target(&world, params).await;
        let shown = world.get(&format!("targetConnections/{target}")).await.text;
        assert!(!shown.contains(&database.url) && !shown.contains("connectionString"), "the URL is never shown: {shown}");
        let reply = world
            .post(
                "flows",
                json!({"name": "To PostgreSQL", "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860"},
                       "sourceConnectionIds": [source], "targetConnectionIds": [target],
                       "transformations": [{"name": "Mapping", "params": {"mappings": [
                           {"sourceAttribute": "firstname", "destination": "first_name"}, {"sourceAttribute": "gendercode"}]}}],
                       "scheduleParams": {"frequency": "continuous", "interval": 1}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        rows_when(&world, &target, "the full load", |rows| rows.len() == 10).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let dynamics = world.dynamics();
        dynamics.send(Method::PATCH, &format!("contacts({})", ids[0]), Some(&json!({"firstname": "Changed"}))).await.unwrap();
        dynamics.send(Method::DELETE, &format!("contacts({})", ids[1]), None).await.unwrap();
        rows_when(&world, &target, "the changes", |rows| {
            rows.iter().any(|r| r["id"] == ids[1].to_string() && r["deleted"] == true)
                && rows.iter().any(|r| r["id"] == ids[0].to_string() && r["values"]["first_name"] == "Changed")
        })
        .await;
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        let (live, deleted): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE NOT _dynsync_deleted), count(*) FILTER (WHERE _dynsync_deleted) FROM dynamics_contacts",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((live, deleted), (9, 1));
        let (name, label): (Option<String>, Option<String>) = sqlx::query_as(
            "SELECT first_name, gendercode_label FROM dynamics_contacts WHERE _dynsync_id = $1::uuid",
        )
        .bind(ids[0].to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((name.as_deref(), label.as_deref()), (Some("Changed"), Some("Female")));
        pool.close().await;
        world.finish().await;
        database.drop_database().await;
    })
    .await;
}

/// Disables and enables a flow: its runner starts again, and reads the table's metadata at its next load.
async fn restart_flow(world: &World, flow: &str) {
    for op in ["disable", "enable"] {
        let reply = world.send(Method::POST, &format!("flows/{flow}/action?op={op}"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }
}

async fn a_column_added_in_dynamics_joins_the_dataset_and_a_changed_type_starts_a_new_generation(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let ids = create_contacts(&world, 6).await;
    let connection = source_connection(&world).await;
    // No mapping: every loadable column, under its own name, and those added later.
    let schedule = json!({"frequency": "continuous", "interval": 1});
    let (flow, target) = ingestion_flow_with(&world, &connection, "drift", schedule, json!([])).await;
    rows_when(&world, &target, "the full load", |rows| rows.len() == 6).await;

    // A new text column, filled on one contact: it joins at the next load.
    world.add_text_column("new_Loyalty", 20).await;
    let dynamics = world.dynamics();
    dynamics
        .send(Method::PATCH, &format!("contacts({})", ids[0]), Some(&json!({"new_loyalty": "Gold"})))
        .await
        .unwrap();
    restart_flow(&world, &flow).await;
    let rows = rows_when(&world, &target, "the new column", |rows| {
        rows.iter().any(|r| r["id"] == ids[0].to_string() && r["values"]["new_loyalty"] == "Gold")
    })
    .await;
    assert_eq!(row(&rows, ids[1])["values"]["new_loyalty"], Json::Null, "older rows read the new column as null");

    // The column comes back as a whole number: the next load starts generation 2, read whole.
    let reply = dynamics
        .send(Method::DELETE, "EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='new_loyalty')", None)
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{}", reply.text().await.unwrap());
    let column = dataverse::NewColumn {
        schema_name: "new_Loyalty".into(),
        display_name: "Loyalty".into(),
        kind: dataverse::NewColumnType::Integer { min: 0, max: 100 },
    };
    dynamics.create_column("contact", &column).await.unwrap();
    dynamics.send(Method::PATCH, &format!("contacts({})", ids[0]), Some(&json!({"new_loyalty": 5}))).await.unwrap();
    restart_flow(&world, &flow).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = world.get(&format!("targetConnections/{target}/rows?generation=2")).await;
        if reply.status == StatusCode::OK {
            let rows = reply.json()["rows"].as_array().unwrap().clone();
            if rows.len() == 6 {
                assert_eq!(row(&rows, ids[0])["values"]["new_loyalty"], 5, "{rows:?}");
                assert!(rows.iter().all(|r| r["operation"] == "r"), "generation 2 starts with a full load: {rows:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "no generation 2: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Generation 1 keeps what it had.
    let reply = world.get(&format!("targetConnections/{target}/rows?generation=1")).await;
    assert_eq!(row(reply.json()["rows"].as_array().unwrap(), ids[0])["values"]["new_loyalty"], "Gold");
    world.finish().await;
}

/// A dataset in Azure Blob Storage (Azurite, a real server started by the test), made through the API and read
/// back by pyarrow; the account key is never shown.
#[tokio::test]
async fn an_azure_blob_dataset_is_made_through_the_api_and_read_back_by_pyarrow() {
    common::bounded(async {
        let azurite = common::Azurite::start();
        common::read_dataset(&["azure-container", &azurite.authority, "lake"]);
        let Some(world) = World::start(Backend::Sqlite).await else { return };
        create_contacts(&world, 7).await;
        let connection = source_connection(&world).await;
        let source = source_of(&world, &connection, "contact").await;
        let params = json!({"dataSetId": "contacts", "format": "azureBlob", "account": "devstoreaccount1",
                            "container": "lake", "folderPath": "dynamics", "accessKey": common::AZURITE_KEY,
                            "endpoint": format!("http://{}/devstoreaccount1", azurite.authority)});
        let target = dataset_target(&world, params).await;
        let shown = world.get(&format!("targetConnections/{target}")).await.text;
        assert!(!shown.contains(common::AZURITE_KEY) && shown.contains("\"container\":\"lake\""), "{shown}");
        let reply = world
            .post(
                "flows",
                json!({"name": "To the lake", "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860"},
                       "sourceConnectionIds": [source], "targetConnectionIds": [target]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        rows_when(&world, &target, "the full load", |rows| rows.len() == 7).await;
        let rows = common::read_dataset(&["pyarrow-azure", &azurite.authority, "lake", "dynamics/contacts/gen-1"]);
        assert_eq!(rows.len(), 7, "pyarrow reads the seven contacts from the container");
        world.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_dataset_in_object_storage_refuses_an_endpoint_not_allowed_and_names_what_is_missing() {
    common::bounded(async {
        let Some(world) = World::start(Backend::Sqlite).await else { return };
        let reply = world
            .post(
                "targetConnections",
                json!({"connectionSpec": {"id": "c604ff05-7f1a-43c0-8e18-33bf874cb11c"},
                       "params": {"dataSetId": "contacts", "format": "azureBlob", "accessKey": "secret",
                                  "endpoint": "https://storage.example.com/acct", "bucket": "b"}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        let detail = reply.detail();
        for expected in [
            "params.account is missing",
            "params.container is missing",
            "params.bucket is not a parameter",
            "params.endpoint (https://storage.example.com/acct) cannot be used",
        ] {
            assert!(detail.contains(expected), "{expected}: {detail}");
        }
        assert!(!detail.contains("secret"), "{detail}");
        world.finish().await;
    })
    .await;
}

async fn a_view_is_loaded_whole_each_time_and_rows_that_leave_it_are_deleted(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let ids = create_contacts(&world, 9).await;
    let connection = source_connection(&world).await;
    let path = "explore?objectType=view&object=Active%20Contacts&preview=true&previewCount=3";
    let reply = world.get(&format!("connections/{connection}/{path}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let explored = reply.json();
    let columns = explored["schema"]["columns"].as_array().unwrap();
    assert!(columns.iter().any(|c| c["name"] == "fullname"), "the view's columns: {explored}");
    assert_eq!(explored["data"].as_array().unwrap().len(), 3, "{explored}");
    let reply = world
        .post(
            "sourceConnections",
            json!({"baseConnectionId": connection, "params": {"tableName": "Active Contacts", "entityType": "view"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let source = reply.json()["id"].as_str().unwrap().to_string();
    let reply = world.get(&format!("sourceConnections/{source}")).await;
    assert_eq!(reply.json()["items"][0]["params"]["table"], "contact", "{}", reply.text);
    let target = dataset_target(&world, json!({"dataSetId": "active_contacts"})).await;
    let reply = world
        .post(
            "flows",
            json!({"name": "Active contacts", "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860"},
                   "sourceConnectionIds": [source], "targetConnectionIds": [target],
                   "transformations": [{"name": "Mapping", "params": {"mappings": [
                       {"sourceAttribute": "lastname"}, {"sourceAttribute": "gendercode", "destination": "gender"}]}}],
                   "scheduleParams": {"frequency": "continuous", "interval": 1}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let flow = reply.json()["id"].as_str().unwrap().to_string();
    let rows = rows_when(&world, &target, "the first load", |rows| rows.len() == 9).await;
    assert_eq!(row(&rows, ids[0])["values"]["gender_label"], "Female", "{rows:?}");

    // One contact deactivated (it leaves the view), one renamed.
    let dynamics = world.dynamics();
    dynamics
        .send(Method::PATCH, &format!("contacts({})", ids[2]), Some(&json!({"statecode": 1, "statuscode": 2})))
        .await
        .unwrap();
    dynamics
        .send(Method::PATCH, &format!("contacts({})", ids[3]), Some(&json!({"lastname": "Renamed"})))
        .await
        .unwrap();
    let rows = rows_when(&world, &target, "the next scan of the view", |rows| {
        rows.iter().any(|r| r["id"] == ids[2].to_string() && r["deleted"] == true)
            && rows.iter().any(|r| r["id"] == ids[3].to_string() && r["values"]["lastname"] == "Renamed")
    })
    .await;
    assert_eq!(row(&rows, ids[3])["operation"], "u");
    let written = |runs: &[Json]| -> u64 {
        runs.iter()
            .filter(|r| r["load"]["loadType"] == "scan")
            .map(|r| r["metrics"]["recordSummary"]["outputRecordCount"].as_u64().unwrap())
            .sum()
    };
    let runs = world.runs_when(&flow, "the scan's two rows counted", |runs| written(runs) >= 2).await;
    assert_eq!(written(&runs), 2, "scans write only what changed: the renamed row and the deletion: {runs:?}");
    world.finish().await;
}

/// `count` contacts, a thousand a request.
async fn many_contacts(world: &World, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for start in (0..count).step_by(1000) {
        let targets: Vec<Json> = (start..(start + 1000).min(count))
            .map(|i| {
                json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "firstname": format!("First{i}"),
                       "lastname": format!("Last{i}"), "emailaddress1": format!("c{i}@example.com")})
            })
            .collect();
        let reply = world
            .dynamics()
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap();
        let created: Json = reply.json().await.unwrap();
        ids.extend(created["Ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().parse::<Uuid>().unwrap()));
    }
    ids
}

/// The flow's runs once one of `load_type` has completed.
async fn runs_after(world: &World, flow: &str, load_type: &str) -> Vec<Json> {
    world
        .runs_when(flow, &format!("a {load_type} load completed"), |runs| {
            runs.iter().any(|r| r["load"]["loadType"] == load_type && r["load"]["completedAt"].is_string())
        })
        .await
}

async fn a_tracked_table_is_read_in_partitions_then_followed_from_a_baseline_scan(backend: Backend) {
    let Some(world) = World::start(backend).await else { return };
    let ids = many_contacts(&world, 12_000).await;
    let connection = source_connection(&world).await;
    let (flow, target) =
        ingestion_flow(&world, &connection, "contacts_parts", json!({"frequency": "continuous", "interval": 1})).await;
    // The full load reads each row once, and is shown completed only once each is counted; the baseline scan
    // through change tracking then writes nothing: nothing changed.
    let runs = runs_after(&world, &flow, "full").await;
    let full = runs.iter().find(|r| r["load"]["loadType"] == "full").unwrap();
    assert_eq!(full["metrics"]["recordSummary"]["outputRecordCount"], 12_000, "each row read once: {full}");
    let runs = runs_after(&world, &flow, "scan").await;
    let scan = runs.iter().find(|r| r["load"]["loadType"] == "scan").unwrap();
    assert_eq!(scan["metrics"]["recordSummary"]["outputRecordCount"], 0, "{scan}");
    let rows = rows_when(&world, &target, "the full load", |rows| rows.len() == 1000).await;
    assert!(rows.iter().all(|r| r["operation"] == "r"), "{rows:?}");
    // From its delta token on, changes come as changes.
    let (renamed, deleted) = (Uuid::parse_str(rows[7]["id"].as_str().unwrap()).unwrap(), ids[0]);
    let dynamics = world.dynamics();
    dynamics
        .send(Method::PATCH, &format!("contacts({renamed})"), Some(&json!({"firstname": "Renamed"})))
        .await
        .unwrap();
    dynamics.send(Method::DELETE, &format!("contacts({deleted})"), None).await.unwrap();
    world
        .runs_when(&flow, "the changes come as an update and a deletion", |runs| {
            let changes = runs.iter().filter(|r| r["load"].is_null());
            let (updated, removed) = changes.fold((0, 0), |(u, d), r| {
                let summary = &r["metrics"]["recordSummary"];
                (
                    u + summary["updatedRecordCount"].as_u64().unwrap(),
                    d + summary["deletedRecordCount"].as_u64().unwrap(),
                )
            });
            (updated, removed) == (1, 1)
        })
        .await;
    let rows =
        rows_when(&world, &target, "the rename", |rows| row(rows, renamed)["values"]["first_name"] == "Renamed").await;
    assert_eq!(row(&rows, renamed)["operation"], "u");
    world.finish().await;
}

on_both_stores!(
    a_tracked_table_is_read_in_partitions_then_followed_from_a_baseline_scan,
    a_view_is_loaded_whole_each_time_and_rows_that_leave_it_are_deleted,
    a_column_added_in_dynamics_joins_the_dataset_and_a_changed_type_starts_a_new_generation,
    a_table_without_change_tracking_loads_by_its_delta_column_and_scans_for_deletes,
    explore_and_load_a_table_fully_then_incrementally,
    a_flow_resyncs_when_dynamics_forgot_its_delta_token,
    a_flow_refuses_what_it_cannot_load_and_says_why,
);
