//! §6.5: `BulkDelete`, an asynchronous system job that deletes what its queries find.

use crate::Env;
use reqwest::StatusCode;
use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};

fn bulk_delete(entity: &str, criteria: Json) -> Json {
    json!({
        "JobName": "Remove test contacts",
        "SendEmailNotification": false,
        "ToRecipients": [],
        "CCRecipients": [],
        "RecurrencePattern": "",
        "StartDateTime": "2026-01-01T00:00:00Z",
        "QuerySet": [{
            "@odata.type": "Microsoft.Dynamics.CRM.QueryExpression",
            "EntityName": entity,
            "ColumnSet": {"AllColumns": false, "Columns": []},
            "Criteria": criteria,
        }],
    })
}

/// Polls the job until it completes, and returns it.
async fn completed(env: &Env, job: &str) -> Json {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply =
            env.get(&format!("asyncoperations({job})?$select=name,operationtype,statecode,statuscode,message")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let row = reply.json();
        if row["statecode"] == 3 {
            return row;
        }
        assert!(Instant::now() < deadline, "the job did not complete within 20 s: {row}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn bulk_6_5_bulk_delete_deletes_what_its_query_finds_as_a_job_that_completes() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(env.create("contacts", json!({"lastname": format!("Doe{i}"), "numberofchildren": i})).await);
    }
    // What Microsoft's Python SDK sends for a list delete: the ids, with In — and an Or beside it.
    let criteria = json!({
        "FilterOperator": "Or",
        "Conditions": [{
            "AttributeName": "contactid",
            "Operator": "In",
            "Values": ids[..3].iter().map(|id| json!({"Value": id, "Type": "System.Guid"})).collect::<Vec<_>>(),
        }],
        "Filters": [{
            "FilterOperator": "And",
            "Conditions": [
                {"AttributeName": "numberofchildren", "Operator": "GreaterEqual", "Values": [{"Value": 10, "Type": "System.Int32"}]},
                {"AttributeName": "lastname", "Operator": "Like", "Values": [{"Value": "Doe%", "Type": "System.String"}]},
            ],
        }],
    });
    let reply = env.post("BulkDelete", bulk_delete("contact", criteria)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answer = reply.json();
    assert!(
        answer["@odata.context"].as_str().unwrap().ends_with("$metadata#Microsoft.Dynamics.CRM.BulkDeleteResponse")
    );
    let job = answer["JobId"].as_str().expect("a job id").to_string();

    let row = completed(&env, &job).await;
    assert_eq!((row["statuscode"].as_i64(), row["operationtype"].as_i64()), (Some(30), Some(13)), "{row}");
    assert_eq!(row["name"], "Remove test contacts");
    let left: Vec<String> = env.get("contacts?$select=lastname&$orderby=numberofchildren").await.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["lastname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, (3..10).map(|i| format!("Doe{i}")).collect::<Vec<_>>());

    // Its bulk deletion counts what it deleted.
    let operations = env
        .get(&format!(
            "bulkdeleteoperations?$filter=_asyncoperationid_value eq {job}&$select=successcount,failurecount"
        ))
        .await;
    let operation = &operations.json()["value"][0];
    assert_eq!(
        (operation["successcount"].as_i64(), operation["failurecount"].as_i64()),
        (Some(5), Some(0)),
        "{}",
        operations.text
    );
}

#[tokio::test]
async fn bulk_6_5_a_bulk_delete_that_cannot_run_is_refused_whole_before_any_job_starts() {
    let env = Env::start().await;
    env.create("contacts", json!({"lastname": "Kept"})).await;
    let condition = |attribute: &str, operator: &str| json!({"Conditions": [{"AttributeName": attribute, "Operator": operator, "Values": [{"Value": "x", "Type": "System.String"}]}]});
    let cases = [
        (bulk_delete("nosuchtable", condition("lastname", "Equal")), "nosuchtable"),
        (bulk_delete("contact", condition("nosuchcolumn", "Equal")), "nosuchcolumn"),
        (bulk_delete("contact", condition("lastname", "Sounds")), "Sounds"),
        (json!({"JobName": "No query", "QuerySet": []}), "QuerySet"),
        (
            {
                let mut b = bulk_delete("contact", condition("lastname", "Equal"));
                b["RecurrencePattern"] = json!("FREQ=DAILY;");
                b
            },
            "RecurrencePattern",
        ),
    ];
    let mut deep = condition("lastname", "Equal");
    for _ in 0..110 {
        deep = json!({"FilterOperator": "And", "Filters": [deep]});
    }
    let cases = cases.into_iter().chain([(bulk_delete("contact", deep), "recursion limit")]);
    for (body, named) in cases {
        let reply = env.post("BulkDelete", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
        assert!(reply.text.contains(named), "the error names {named}: {}", reply.text);
    }
    assert_eq!(env.get("asyncoperations").await.json()["value"].as_array().map(Vec::len), Some(0), "no job was kept");
    assert_eq!(env.get("contacts").await.json()["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn bulk_6_5_a_condition_on_a_lookup_names_it_by_its_logical_name() {
    let env = Env::start().await;
    let account = env.create("accounts", json!({"name": "Contoso"})).await;
    for name in ["Ann", "Bob"] {
        let body = json!({"lastname": name, "parentcustomerid_account@odata.bind": format!("/accounts({account})")});
        env.create("contacts", body).await;
    }
    env.create("contacts", json!({"lastname": "Cy"})).await;
    let criteria = json!({"Conditions": [
        {"AttributeName": "parentcustomerid", "Operator": "Equal", "Values": [{"Value": account, "Type": "System.Guid"}]},
    ]});
    let reply = env.post("BulkDelete", bulk_delete("contact", criteria)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let row = completed(&env, reply.json()["JobId"].as_str().unwrap()).await;
    assert_eq!(row["statuscode"], 30, "{row}");
    let left = env.get("contacts?$select=lastname").await.json();
    assert_eq!(
        left["value"].as_array().unwrap().iter().map(|c| c["lastname"].clone()).collect::<Vec<_>>(),
        vec![json!("Cy")]
    );
}

#[tokio::test]
async fn bulk_6_5_a_job_the_emulator_stopped_before_it_ran_ends_failed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || dataverse_emulator::EmulatorConfig { state: Some(dir.path().join("state.db")), ..crate::config() };
    let env = Env::with(config()).await;
    env.create("contacts", json!({"lastname": "Kept"})).await;
    let mut body = bulk_delete("contact", json!({"Conditions": []}));
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    body["StartDateTime"] = json!(later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let reply = env.post("BulkDelete", body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = reply.json()["JobId"].as_str().unwrap().to_string();
    let waiting = env.get(&format!("asyncoperations({job})?$select=statecode")).await.json();
    assert_eq!(waiting["statecode"], 0, "scheduled an hour ahead, it waits: {waiting}");
    env.emulator.stop().await;

    let env = Env::with(config()).await;
    let row = completed(&env, &job).await;
    assert_eq!(row["statuscode"], 31, "{row}");
    assert!(row["message"].as_str().unwrap().contains("submit it again"), "{row}");
    assert_eq!(env.get("contacts").await.json()["value"].as_array().map(Vec::len), Some(1), "nothing was deleted");
}
