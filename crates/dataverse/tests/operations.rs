//! Every record operation against the emulator: CRUD, queries that page, bulk messages, `$batch`.

mod common;

use common::{client, free, record};
use dataverse::{
    Batch, BulkOperation, BulkOptions, Change, ErrorKind, Filter, Isolation, Operation, OperationOutcome, Order, Query,
    RecordId, RecordKey, Table,
};
use dataverse_emulator::EmulatorConfig;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
async fn records_are_created_read_updated_upserted_and_deleted() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();

    let id = client.create(&contacts, &record(json!({"firstname": "Ada", "lastname": "Lovelace"}))).await.unwrap();
    let read = client.retrieve(&contacts, id, &["firstname", "lastname", "fullname"]).await.unwrap();
    assert_eq!(read["fullname"], "Ada Lovelace");
    assert_eq!(read["contactid"], id.to_string());

    client.update(&contacts, id, &record(json!({"jobtitle": "Analyst"}))).await.unwrap();
    assert_eq!(client.retrieve(&contacts, id, &["jobtitle"]).await.unwrap()["jobtitle"], "Analyst");

    // Update never creates: If-Match: *.
    let missing = RecordId::new_v4();
    let e = client.update(&contacts, missing, &record(json!({"jobtitle": "x"}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(client.retrieve(&contacts, missing, &[]).await.is_err());

    // Upsert creates, then updates.
    client.upsert(&contacts, missing, &record(json!({"lastname": "Byron"}))).await.unwrap();
    client.upsert(&contacts, missing, &record(json!({"firstname": "Annabella"}))).await.unwrap();
    let upserted = client.retrieve(&contacts, missing, &["fullname"]).await.unwrap();
    assert_eq!(upserted["fullname"], "Annabella Byron");

    // A caller-chosen id on create.
    let chosen = RecordId::new_v4();
    let created =
        client.create(&contacts, &record(json!({"contactid": chosen, "lastname": "Somerville"}))).await.unwrap();
    assert_eq!(created, chosen);
    let e = client.create(&contacts, &record(json!({"contactid": chosen, "lastname": "Twin"}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Duplicate);

    let e = client.create(&contacts, &record(json!({"lastname": "X", "new_nothere": 1}))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownProperty("new_nothere".into()));

    client.delete(&contacts, id).await.unwrap();
    assert_eq!(client.retrieve(&contacts, id, &[]).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(client.delete(&contacts, id).await.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_query_streams_every_page() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    for i in 0..57 {
        let last = if i % 3 == 0 { "O'Neil" } else { "Smith" };
        client.create(&contacts, &record(json!({"firstname": format!("n{i:02}"), "lastname": last}))).await.unwrap();
    }
    let all: Vec<_> =
        client.query(&Query::new(&contacts).select(&["firstname"]).page_size(10)).try_collect().await.unwrap();
    assert_eq!(all.len(), 57);
    let distinct: HashSet<_> = all.iter().map(|r| r["contactid"].to_string()).collect();
    assert_eq!(distinct.len(), 57, "no record twice across pages");

    let pages: Vec<_> = client.query_pages(&Query::new(&contacts).page_size(10)).try_collect().await.unwrap();
    assert_eq!(pages.len(), 6);

    let oneils: Vec<_> = client
        .query(
            &Query::new(&contacts)
                .select(&["firstname", "lastname"])
                .filter(Filter::eq("lastname", "o'neil"))
                .order_by("firstname", Order::Descending)
                .page_size(4),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(oneils.len(), 19);
    assert_eq!(oneils[0]["firstname"], "n54");
    assert_eq!(oneils[18]["firstname"], "n00");
}

#[tokio::test]
async fn a_long_paged_read_survives_token_expiry() {
    let emulator = EmulatorConfig { token_lifetime: Duration::from_secs(2), ..free() }.start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let ids: Vec<_> = (0..40).map(|_| RecordId::new_v4()).collect();
    for id in &ids {
        client.upsert(&contacts, *id, &record(json!({"lastname": "Paged"}))).await.unwrap();
    }
    // One record a page, and a pause long enough between pages that the token expires more than once.
    let mut pages = Box::pin(client.query_pages(&Query::new(&contacts).select(&["lastname"]).page_size(1)));
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while let Some(page) = pages.try_next().await.expect("every page reads, whatever the token's age") {
        seen += page.value.len();
        if std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    assert_eq!(seen, 40);
}

#[tokio::test]
async fn bulk_messages_write_in_chunks() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let options = BulkOptions { chunk_size: 400, chunks_in_flight: 3, ..Default::default() };

    let records: Vec<_> =
        (0..1000).map(|i| record(json!({"firstname": format!("c{i}"), "lastname": "Bulk"}))).collect();
    let ids = client.create_multiple(&contacts, &records, options).await.unwrap();
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1000);
    let third = client.retrieve(&contacts, ids[3], &["firstname"]).await.unwrap();
    assert_eq!(third["firstname"], "c3", "ids come back in the order of the records");

    let updates: Vec<_> = ids.iter().map(|id| record(json!({"contactid": id, "jobtitle": "Updated"}))).collect();
    client.update_multiple(&contacts, &updates, options).await.unwrap();
    let updated = Query::new(&contacts).filter(Filter::eq("jobtitle", "Updated")).page_size(5000);
    assert_eq!(client.query(&updated).try_collect::<Vec<_>>().await.unwrap().len(), 1000);

    let fresh: Vec<_> = (0..500)
        .map(|i| record(json!({"contactid": RecordId::new_v4(), "lastname": "Upserted", "firstname": format!("u{i}")})))
        .chain(ids[..100].iter().map(|id| record(json!({"contactid": id, "lastname": "Upserted"}))))
        .collect();
    client.upsert_multiple(&contacts, &fresh, options).await.unwrap();
    let upserted = Query::new(&contacts).filter(Filter::eq("lastname", "Upserted")).page_size(5000);
    assert_eq!(client.query(&upserted).try_collect::<Vec<_>>().await.unwrap().len(), 600);

    // All or nothing per chunk, without isolation.
    let mut bad = records[..10].to_vec();
    bad[4].insert("lastname".into(), json!("x".repeat(60)));
    let e = client.create_multiple(&contacts, &bad, options).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Validation);
}

#[tokio::test]
async fn bad_records_never_fail_their_neighbours() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let mut records: Vec<_> = (0..300)
        .map(|i| record(json!({"contactid": RecordId::new_v4(), "firstname": format!("r{i}"), "lastname": "Good"})))
        .collect();
    records[7].insert("lastname".into(), json!("x".repeat(60)));
    records[150].insert("new_loyaltytier".into(), json!("gold"));
    records[151].insert("new_loyaltytier".into(), json!("silver"));
    records[299].insert("donotemail".into(), json!("perhaps"));

    let runs = [
        (BulkOperation::Upsert, Isolation::Named),
        (BulkOperation::Create, Isolation::Named),
        (BulkOperation::Create, Isolation::Bisect),
    ];
    for (op, isolation) in runs {
        let mut records = records.clone();
        if op == BulkOperation::Create {
            for r in &mut records {
                r.insert("contactid".into(), json!(RecordId::new_v4()));
            }
        }
        let report = client
            .write_each(op, &contacts, &records, BulkOptions { chunk_size: 100, chunks_in_flight: 2, isolation })
            .await;
        assert_eq!(report.written(), 296, "{op:?} {isolation:?}");
        let rejected: Vec<_> = report.rejected().map(|(i, e)| (i, e.kind(), e.to_string())).collect();
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 150, 151, 299], "{rejected:#?}");
        assert_eq!(rejected[0].1, ErrorKind::Validation);
        assert!(rejected[0].2.contains("lastname"), "{}", rejected[0].2);
        assert!(!rejected[0].2.contains("Targets["), "the index in the sub-request would mislead: {}", rejected[0].2);
        assert_eq!(rejected[1].1, ErrorKind::UnknownProperty("new_loyaltytier".into()));
        assert_eq!(rejected[2].1, ErrorKind::UnknownProperty("new_loyaltytier".into()));
        assert!(rejected[3].2.contains("donotemail") || rejected[3].2.contains("Boolean"), "{}", rejected[3].2);
        for (i, outcome) in report.outcomes.iter().enumerate() {
            if let Ok(id) = outcome {
                assert_eq!(id.map(|id| json!(id)), Some(records[i]["contactid"].clone()));
            }
        }
    }
    let everyone: Vec<_> = client.query(&Query::new(&contacts).page_size(5000)).try_collect().await.unwrap();
    assert_eq!(everyone.len(), 3 * 296);
}

#[tokio::test]
async fn a_batch_answers_for_every_operation() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();

    // A change set whose second write refers to the first one's record.
    let mut batch = Batch::new();
    batch.change_set(vec![
        Operation::post("accounts", json!({"name": "Analytical Engines"})).content_id("1"),
        Operation::post("contacts", json!({"lastname": "Babbage", "parentcustomerid_account@odata.bind": "$1"}))
            .content_id("2"),
    ]);
    batch.push(Operation::get("contacts?$select=lastname,_parentcustomerid_value"));
    let outcomes = client.batch(&batch).await.unwrap();
    assert_eq!(outcomes.len(), 3);
    let account =
        outcomes[0].succeeded().expect("the account is created").header("odata-entityid").unwrap().to_string();
    assert!(outcomes[1].succeeded().is_some(), "{outcomes:?}");
    let read: serde_json::Value = outcomes[2].succeeded().unwrap().json().unwrap();
    assert_eq!(read["value"][0]["lastname"], "Babbage");
    assert!(account.contains(read["value"][0]["_parentcustomerid_value"].as_str().unwrap()));

    // A change set with one bad write commits nothing.
    let mut batch = Batch::new();
    batch.change_set(vec![
        Operation::post("contacts", json!({"lastname": "Rolled back"})).content_id("a"),
        Operation::post("contacts", json!({"lastname": "x".repeat(60)})).content_id("b"),
    ]);
    let outcomes = client.batch(&batch).await.unwrap();
    assert_eq!(outcomes[0], OperationOutcome::RolledBack, "{outcomes:?}");
    let OperationOutcome::Failed(error) = &outcomes[1] else { panic!("{outcomes:?}") };
    assert_eq!(error.kind, ErrorKind::Validation);
    let rolled_back = Query::new(&contacts).filter(Filter::eq("lastname", "Rolled back"));
    assert!(client.query(&rolled_back).try_collect::<Vec<_>>().await.unwrap().is_empty());

    // Without continue-on-error the batch stops at the first failure; with it, every operation runs.
    let operations = [
        Operation::post("contacts", json!({"lastname": "First"})),
        Operation::post("contacts", json!({"lastname": "Bad", "new_nothere": 1})),
        Operation::post("contacts", json!({"lastname": "Third"})),
    ];
    let mut stopping = Batch::new();
    let mut continuing = Batch::new().continue_on_error();
    for op in &operations {
        stopping.push(op.clone());
        continuing.push(op.clone());
    }
    let stopped = client.batch(&stopping).await.unwrap();
    assert!(stopped[0].succeeded().is_some());
    assert!(
        matches!(&stopped[1], OperationOutcome::Failed(e) if e.kind == ErrorKind::UnknownProperty("new_nothere".into()))
    );
    assert_eq!(stopped[2], OperationOutcome::NotRun);
    let continued = client.batch(&continuing).await.unwrap();
    assert!(continued[0].succeeded().is_some() && continued[2].succeeded().is_some(), "{continued:?}");
    assert!(matches!(&continued[1], OperationOutcome::Failed(_)));

    let too_many = (0..1001).fold(Batch::new(), |mut b, _| {
        b.push(Operation::get("WhoAmI"));
        b
    });
    assert!(matches!(client.batch(&too_many).await, Err(dataverse::Error::InvalidRequest(_))));
}

#[tokio::test]
async fn changes_stream_as_upserts_and_deletes_and_resume_from_a_token() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let ids: Vec<_> = (0..5).map(|_| RecordId::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        client.upsert(&contacts, *id, &record(json!({"lastname": format!("v{i}")}))).await.unwrap();
    }
    let first: Vec<_> = client.changes(&contacts, &["lastname"], None).try_collect().await.unwrap();
    assert_eq!(first.iter().filter(|c| matches!(c, Change::Upserted(_))).count(), 5);
    let Some(Change::Token(token)) = first.last().cloned() else { panic!("a read ends with its token: {first:?}") };

    client.update(&contacts, ids[0], &record(json!({"lastname": "changed"}))).await.unwrap();
    client.delete(&contacts, ids[1]).await.unwrap();
    let added = client.create(&contacts, &record(json!({"lastname": "added"}))).await.unwrap();
    let next: Vec<_> = client.changes(&contacts, &["lastname"], Some(&token)).try_collect().await.unwrap();
    let upserted: HashSet<_> = next
        .iter()
        .filter_map(|c| match c {
            Change::Upserted(r) => Some(r["contactid"].as_str().unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(upserted, HashSet::from([ids[0].to_string(), added.to_string()]));
    assert!(next.contains(&Change::Deleted(ids[1])));
    assert!(matches!(next.last(), Some(Change::Token(t)) if *t != token));
}

#[tokio::test]
async fn an_expired_change_token_asks_for_a_full_read() {
    let config = EmulatorConfig { change_retention: Duration::from_millis(200), ..free() };
    let emulator = config.start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    client.create(&contacts, &record(json!({"lastname": "old"}))).await.unwrap();
    let first: Vec<_> = client.changes(&contacts, &[], None).try_collect().await.unwrap();
    let Some(Change::Token(token)) = first.last().cloned() else { panic!("{first:?}") };
    // Changes after the token, kept for less time than the token's age by the time it is used.
    client.create(&contacts, &record(json!({"lastname": "new"}))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let error = loop {
        match client.changes(&contacts, &[], Some(&token)).try_collect::<Vec<_>>().await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(changes) => panic!("the token never expired: {changes:?}"),
        }
    };
    assert!(
        matches!(&error, dataverse::Error::ChangeTokenExpired { entity_set, .. } if entity_set == "contacts"),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::ChangeTokenExpired);
    assert!(error.to_string().contains("read the table in full again"), "{error}");
}

#[tokio::test]
async fn a_stream_of_records_is_written_with_bounded_memory() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let records = futures::stream::iter(0..2500).map(|i| {
        let lastname = if i == 1234 { "x".repeat(60) } else { format!("s{i}") };
        record(json!({"contactid": RecordId::new_v4(), "lastname": lastname}))
    });
    let outcomes: Vec<_> = client
        .write_stream(
            BulkOperation::Upsert,
            &contacts,
            records,
            BulkOptions { chunk_size: 300, chunks_in_flight: 2, ..Default::default() },
        )
        .collect()
        .await;
    assert_eq!(outcomes.len(), 2500);
    let mut indices: Vec<_> = outcomes.iter().map(|(i, _)| *i).collect();
    indices.sort();
    assert_eq!(indices, (0..2500).collect::<Vec<_>>());
    let rejected: Vec<_> = outcomes.iter().filter(|(_, o)| o.is_err()).map(|(i, _)| *i).collect();
    assert_eq!(rejected, [1234]);
}

#[tokio::test]
async fn records_are_addressed_by_an_alternate_key() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let key = json!({
        "SchemaName": "new_EmailKey",
        "DisplayName": {"LocalizedLabels": [{"Label": "Email key", "LanguageCode": 1033}]},
        "KeyAttributes": ["emailaddress1"],
    });
    client.send(reqwest::Method::POST, "EntityDefinitions(LogicalName='contact')/Keys", Some(&key)).await.unwrap();

    let ann = RecordKey::alternate([("emailaddress1", "ann o'neil@example.com")]);
    client.upsert(&contacts, ann.clone(), &record(json!({"lastname": "O'Neil"}))).await.unwrap();
    let row = client.retrieve(&contacts, ann.clone(), &["lastname", "emailaddress1"]).await.unwrap();
    assert_eq!(row["lastname"], "O'Neil");
    assert_eq!(row["emailaddress1"], "ann o'neil@example.com");
    client.update(&contacts, ann.clone(), &record(json!({"firstname": "Ann"}))).await.unwrap();

    let kim = RecordKey::alternate([("emailaddress1", "kim@example.com")]);
    let targets = [
        record(json!({"@odata.id": kim.odata_id(&contacts), "lastname": "Kim"})),
        record(json!({"@odata.id": ann.odata_id(&contacts), "lastname": "O'Neil-Smith"})),
    ];
    client.upsert_multiple(&contacts, &targets, BulkOptions::default()).await.unwrap();
    assert_eq!(client.retrieve(&contacts, kim.clone(), &["lastname"]).await.unwrap()["lastname"], "Kim");
    let ann_now = client.retrieve(&contacts, ann.clone(), &["fullname"]).await.unwrap();
    assert_eq!(ann_now["fullname"], "Ann O'Neil-Smith");
    client.delete(&contacts, kim.clone()).await.unwrap();
    assert_eq!(client.retrieve(&contacts, kim, &[]).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// Callers run these on their own tasks: every operation's future must be `Send` and own what it needs.
#[tokio::test]
async fn every_operation_can_run_on_a_spawned_task() {
    let emulator = free().start().await.unwrap();
    let client = client(&emulator);
    let contacts = Table::contact();
    let records = vec![record(json!({"contactid": RecordId::new_v4(), "lastname": "Spawned"}))];
    let (c, t, r) = (client.clone(), contacts.clone(), records.clone());
    let written =
        tokio::spawn(
            async move { c.write_each(BulkOperation::Upsert, &t, &r, BulkOptions::default()).await.written() },
        );
    assert_eq!(written.await.unwrap(), 1);
    let (c, t, r) = (client.clone(), contacts.clone(), records.clone());
    tokio::spawn(async move { c.upsert_multiple(&t, &r, BulkOptions::default()).await }).await.unwrap().unwrap();
    let (c, t) = (client.clone(), contacts.clone());
    let stream = client.write_stream(BulkOperation::Upsert, &t, futures::stream::iter(records), BulkOptions::default());
    assert_eq!(tokio::spawn(stream.collect::<Vec<_>>()).await.unwrap().len(), 1);
    let read = tokio::spawn(c.query(&Query::new(&t)).try_collect::<Vec<_>>());
    assert_eq!(read.await.unwrap().unwrap().len(), 1);
    let changes = tokio::spawn(client.changes(&contacts, &[], None).try_collect::<Vec<_>>());
    assert_eq!(changes.await.unwrap().unwrap().len(), 2, "the row, then the token");
    let c = client.clone();
    let batch = tokio::spawn(async move {
        let mut batch = Batch::new();
        batch.push(Operation::get("WhoAmI"));
        c.batch(&batch).await
    });
    assert!(batch.await.unwrap().unwrap()[0].succeeded().is_some());
    let (c, t) = (client.clone(), contacts.clone());
    let created = tokio::spawn(async move { c.create(&t, &record(json!({"lastname": "Task"}))).await });
    let id = created.await.unwrap().unwrap();
    let c = client.clone();
    tokio::spawn(async move { c.delete(&Table::contact(), id).await }).await.unwrap().unwrap();
}
