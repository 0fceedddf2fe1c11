//! The runtime's own tests, on a real SQLite store (and PostgreSQL when `DYNSYNC_TEST_DATABASE_URL` names one):
//! a job and a sink of the tests' own stand for activation and Dynamics, so that what is checked is the runner,
//! the acknowledgement and the leases alone.

use super::runner::{self, Runner, coalesce, outcomes};
use super::{Decision, Exclusion, Job, Paused, Refusal, Sink, Source, SourceBatch, SourceRecord, StepError, Taken};
use crate::ids::{Etag, FlowId, Sandbox};
use crate::store::{
    Acknowledgement, FailedRecord, FlowRecord, FlowState, Lease, Outcome, ProcessId, RunTally, Store, StoreError,
    hour_of,
};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Records are `key=value`; a record without `=` is excluded. Writes of one key keep the last value.
struct KeyValues;

impl Job for KeyValues {
    type Body = String;
    type Key = u32;
    type Write = String;

    fn decide(&self, record: SourceRecord) -> Decision<u32, String> {
        match record.body.split_once('=') {
            Some((k, v)) if k.parse::<u32>().is_ok() => {
                Decision::Write { key: k.parse().unwrap(), write: v.to_string(), notes: Vec::new() }
            }
            _ => Decision::Exclude(Exclusion {
                code: "no-key",
                message: "the record has no key".into(),
                identity: record.position.clone(),
            }),
        }
    }

    fn fold(&self, earlier: &mut String, later: String) {
        *earlier = later;
    }

    fn uncovered(&self, _failed: String, _written: &String) -> Option<String> {
        None
    }
}

/// A destination that holds what it was given, refuses the keys it is told to, and pauses as often as told.
#[derive(Default)]
struct Memory {
    held: Mutex<BTreeMap<u32, String>>,
    refused: Vec<u32>,
    pauses: Mutex<u32>,
}

impl Sink<u32, String> for Arc<Memory> {
    async fn write(&self, writes: &[(u32, String)]) -> Result<Vec<Result<Taken, Refusal>>, Paused> {
        {
            let mut pauses = self.pauses.lock().unwrap();
            if *pauses > 0 {
                *pauses -= 1;
                return Err(Paused { reason: "the client secret is wrong or expired".into() });
            }
        }
        let mut held = self.held.lock().unwrap();
        Ok(writes
            .iter()
            .map(|(k, v)| {
                if self.refused.contains(k) {
                    Err(Refusal { code: "0x80040217".into(), message: format!("record {k} does not exist") })
                } else {
                    held.insert(*k, v.clone());
                    Ok(Taken::Written)
                }
            })
            .collect())
    }
}

/// A source of fixed records, read a few at a time; the cursor is the index of the next one.
struct Fixed(Vec<String>);

impl Source for Fixed {
    type Body = String;

    async fn read(&self, cursor: Option<&str>, _limit: usize) -> Result<Option<SourceBatch>, StepError> {
        let start: usize = cursor.map_or(0, |c| c.parse().unwrap());
        let end = (start + 3).min(self.0.len());
        if start >= end {
            return Ok(None);
        }
        let records =
            (start..end).map(|i| SourceRecord { position: format!("record {i}"), body: self.0[i].clone() }).collect();
        Ok(Some(SourceBatch { records, cursor: end.to_string(), run: None }))
    }
}

async fn stores() -> Vec<(Store, tempfile::TempDir)> {
    crate::store::test_stores().await
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn records(bodies: &[&str]) -> Vec<SourceRecord> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| SourceRecord { position: format!("record {i}"), body: b.to_string() })
        .collect()
}

#[test]
fn each_record_received_has_exactly_one_outcome() {
    let mut prepared = coalesce(&KeyValues, records(&["1=a", "2=b", "junk", "1=c", "3=d", "2=e"]), "6".into(), None);
    assert_eq!(prepared.tally.received, 6);
    assert_eq!(prepared.tally.excluded, 1);
    assert_eq!(prepared.writes, vec![(1, "c".to_string()), (2, "e".to_string()), (3, "d".to_string())]);
    assert_eq!(prepared.records, vec![2, 2, 1], "each write stands for the records folded into it");
    let refused = Err(Refusal { code: "x".into(), message: "no".into() });
    let (failed, written) = outcomes(
        &mut prepared.tally,
        &prepared.writes,
        &prepared.records,
        vec![Ok(Taken::Written), refused, Ok(Taken::Written)],
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].key, "2");
    assert_eq!(failed[0].payload, "\"e\"", "the failed record keeps the write to replay");
    assert_eq!(written, vec!["1", "3"]);
    let t = &prepared.tally;
    assert_eq!((t.written, t.excluded, t.failed), (3, 1, 2));
    assert!(t.is_balanced(), "{t:?}");
}

/// Acknowledges one record written under `lease`, moving the flow's cursor to `cursor`.
async fn acknowledge_one(store: &Store, lease: &Lease, cursor: &str) -> Result<(), StoreError> {
    let tally = RunTally { received: 1, written: 1, ..RunTally::default() };
    store
        .acknowledge(&Acknowledgement {
            flow: lease.flow,
            lease: Some(lease),
            cursor: Some(cursor),
            hour: hour_of(Utc::now()),
            tally: &tally,
            failed: &[],
            recovered: &[],
            replayed: &[],
        })
        .await
}

#[tokio::test]
async fn an_acknowledgement_under_a_lost_lease_changes_nothing() {
    for (store, _dir) in stores().await {
        let flow = FlowId::new();
        let (first, second) = (ProcessId::new(), ProcessId::new());
        let old = store.claim_flow(flow, first, now_ms(), 60_000).await.unwrap().expect("a free flow is claimed");
        assert!(store.claim_flow(flow, second, now_ms(), 60_000).await.unwrap().is_none(), "a held flow is not");
        // The first owner goes silent; its lease runs out and the second takes the flow.
        store.release_lease(&old, 0).await.unwrap();
        let new = store.claim_flow(flow, second, now_ms(), 60_000).await.unwrap().expect("an expired flow is claimed");
        assert_eq!(new.generation, old.generation + 1);
        assert!(
            matches!(acknowledge_one(&store, &old, "10").await, Err(StoreError::Fenced)),
            "the old owner is fenced off"
        );
        assert_eq!(store.cursor(flow).await.unwrap(), None, "its cursor did not move");
        assert!(store.runs(flow).await.unwrap().is_empty(), "its run did not grow");
        assert!(!store.renew_lease(&old, now_ms() + 60_000).await.unwrap(), "nor can it renew");
        acknowledge_one(&store, &new, "7").await.unwrap();
        assert_eq!(store.cursor(flow).await.unwrap().as_deref(), Some("7"));
        assert_eq!(store.runs(flow).await.unwrap()[0].tally.received, 1);
    }
}

#[tokio::test]
async fn an_owner_s_acknowledgement_after_its_flow_is_disabled_or_deleted_changes_nothing() {
    for (store, _dir) in stores().await {
        let sandbox = Sandbox::try_from("prod".to_string()).unwrap();
        let record = FlowRecord {
            id: FlowId::new(),
            sandbox: sandbox.clone(),
            job: "activation".into(),
            name: "Gold members".into(),
            definition: "{}".into(),
            state: FlowState::Enabled,
            target_connection_id: None,
            etag: Etag::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        store.insert_flow(&record).await.unwrap();
        let flow = record.id;
        let lease = store.claim_flow(flow, ProcessId::new(), now_ms(), 60_000).await.unwrap().expect("claimed");
        acknowledge_one(&store, &lease, "1").await.expect("the owner of an enabled flow acknowledges");

        let disabled = FlowRecord { state: FlowState::Disabled, etag: Etag::new(), ..record.clone() };
        store.update_flow(&disabled, &record.etag).await.unwrap();
        assert!(
            matches!(acknowledge_one(&store, &lease, "2").await, Err(StoreError::Fenced)),
            "the owner of a disabled flow is fenced off"
        );
        assert_eq!(store.cursor(flow).await.unwrap().as_deref(), Some("1"), "its cursor did not move");
        assert_eq!(store.runs(flow).await.unwrap()[0].tally.received, 1, "its run did not grow");

        let enabled = FlowRecord { state: FlowState::Enabled, etag: Etag::new(), ..disabled.clone() };
        store.update_flow(&enabled, &disabled.etag).await.unwrap();
        acknowledge_one(&store, &lease, "2").await.expect("enabled again, the flow acknowledges");
        assert!(store.delete_flow(&sandbox, flow).await.unwrap());
        assert!(
            matches!(acknowledge_one(&store, &lease, "3").await, Err(StoreError::Fenced)),
            "the owner of a deleted flow is fenced off"
        );
        assert_eq!(store.cursor(flow).await.unwrap(), None, "nothing of the deleted flow comes back");
        assert!(store.runs(flow).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_replay_moves_each_replayed_record_within_the_run_it_failed_in() {
    for (store, _dir) in stores().await {
        let flow = FlowId::new();
        let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
        let failed = |key: &str, payload: &str| FailedRecord {
            key: key.into(),
            code: "0x80040217".into(),
            message: "missing".into(),
            payload: payload.into(),
            failed_at: an_hour_ago,
        };
        let mut first = RunTally { received: 4, written: 1, ..RunTally::default() };
        first.count(Outcome::Failed, "0x80040217", "missing", "1", 3);
        let kept = [failed("1", "\"a\""), failed("2", "\"b\""), failed("3", "not json")];
        store
            .acknowledge(&Acknowledgement {
                flow,
                lease: None,
                cursor: Some("3"),
                hour: hour_of(an_hour_ago),
                tally: &first,
                failed: &kept,
                recovered: &[],
                replayed: &[],
            })
            .await
            .unwrap();
        let sink = Arc::new(Memory { refused: vec![2], ..Memory::default() });
        let summary = runner::replay(&store, flow, &KeyValues, &sink).await.unwrap();
        assert_eq!((summary.retried, summary.written, summary.failed), (3, 1, 2));
        assert_eq!(sink.held.lock().unwrap().get(&1).map(String::as_str), Some("a"));
        let mut still: Vec<String> = store.failed_records(flow).await.unwrap().into_iter().map(|f| f.key).collect();
        still.sort();
        assert_eq!(still, vec!["2", "3"], "the refused record and the unreadable one stay; the written one left");
        let runs = store.runs(flow).await.unwrap();
        assert_eq!(runs.len(), 1, "a replay receives nothing, so it makes no run of its own: {runs:?}");
        let run = &runs[0].tally;
        assert_eq!(
            (run.received, run.written, run.excluded, run.failed),
            (4, 2, 0, 2),
            "the written record moved from failed to written in the run it was received in, counted once"
        );
        let group = |code: &str| run.groups.iter().find(|g| g.code == code).map(|g| (g.outcome, g.count));
        assert_eq!(group("replayed"), Some((Outcome::Written, 1)), "{run:?}");
        assert_eq!(group("unreadable-write"), Some((Outcome::Failed, 1)), "{run:?}");
        let refused: u64 = run.groups.iter().filter(|g| g.outcome == Outcome::Failed).map(|g| g.count).sum();
        assert_eq!(refused, run.failed, "the failed groups still add up to the failed count: {run:?}");
        let failed_at = store.failed_records(flow).await.unwrap()[0].failed_at;
        assert_eq!(hour_of(failed_at), hour_of(an_hour_ago), "a record failing again keeps when it failed");
        assert_eq!(store.cursor(flow).await.unwrap().as_deref(), Some("3"), "a replay moves no cursor");
    }
}

#[tokio::test]
async fn the_runner_waits_out_a_refused_sign_in_then_writes_the_last_value_of_each_key() {
    for (store, _dir) in stores().await {
        let flow = FlowId::new();
        let lease = store.claim_flow(flow, ProcessId::new(), now_ms(), 60_000).await.unwrap().unwrap();
        let bodies = ["1=a", "2=b", "junk", "1=c", "3=d", "2=e", "4=f"].map(String::from).to_vec();
        let sink = Arc::new(Memory { refused: vec![4], pauses: Mutex::new(2), ..Memory::default() });
        let runner = Runner {
            store: store.clone(),
            flow,
            lease,
            job: KeyValues,
            source: Fixed(bodies.clone()),
            sink: sink.clone(),
            connection: None,
            wake: Default::default(),
        };
        let task = tokio::spawn(runner.run());
        let deadline = Instant::now() + Duration::from_secs(30);
        let tally = loop {
            let runs = store.runs(flow).await.unwrap();
            let received: u64 = runs.iter().map(|r| r.tally.received).sum();
            if received == bodies.len() as u64 {
                break runs.into_iter().next().unwrap().tally;
            }
            assert!(Instant::now() < deadline, "the runner settles within 30 s: {runs:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        task.abort();
        assert_eq!(*sink.pauses.lock().unwrap(), 0, "the sink paused twice, and the runner waited");
        assert_eq!((tally.written, tally.excluded, tally.failed), (5, 1, 1), "{tally:?}");
        let held = sink.held.lock().unwrap().clone();
        let expected: BTreeMap<u32, String> = [(1, "c"), (2, "e"), (3, "d")].map(|(k, v)| (k, v.to_string())).into();
        assert_eq!(held, expected);
        assert_eq!(store.cursor(flow).await.unwrap().as_deref(), Some("7"));
        let failed = store.failed_records(flow).await.unwrap();
        assert_eq!(failed.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), vec!["4"]);
    }
}

/// Writes are sets of columns: a later write of a key sets its columns over the earlier ones.
struct Columns;

impl Job for Columns {
    type Body = String;
    type Key = u32;
    type Write = BTreeMap<String, String>;

    fn decide(&self, _record: SourceRecord) -> Decision<u32, BTreeMap<String, String>> {
        unreachable!("the test builds its writes itself")
    }

    fn fold(&self, earlier: &mut BTreeMap<String, String>, later: BTreeMap<String, String>) {
        earlier.extend(later);
    }

    fn uncovered(
        &self,
        mut failed: BTreeMap<String, String>,
        written: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<String, String>> {
        failed.retain(|column, _| !written.contains_key(column));
        (!failed.is_empty()).then_some(failed)
    }
}

#[tokio::test]
async fn a_failed_record_keeps_what_later_writes_did_not_set() {
    let columns = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    for (store, _dir) in stores().await {
        let flow = FlowId::new();
        // One step: key 1 gets `write`, which Dynamics takes or refuses; the flow's failed list is reconciled.
        let step = |write: BTreeMap<String, String>, taken: bool| {
            let store = store.clone();
            async move {
                let writes = vec![(1u32, write)];
                let mut tally = RunTally { received: 1, ..RunTally::default() };
                let result = if taken {
                    Ok(Taken::Written)
                } else {
                    Err(Refusal { code: "x".into(), message: "refused".into() })
                };
                let (mut failed, written) = outcomes(&mut tally, &writes, &[1], vec![result]);
                let recovered =
                    runner::reconcile_failed(&store, flow, &Columns, &writes, &mut failed, written).await.unwrap();
                store
                    .acknowledge(&Acknowledgement {
                        flow,
                        lease: None,
                        cursor: None,
                        hour: hour_of(Utc::now()),
                        tally: &tally,
                        failed: &failed,
                        recovered: &recovered,
                        replayed: &[],
                    })
                    .await
                    .unwrap();
                let kept = store.failed_records(flow).await.unwrap();
                kept.first().map(|f| serde_json::from_str::<BTreeMap<String, String>>(&f.payload).unwrap())
            }
        };
        assert_eq!(
            step(columns(&[("gold", "in"), ("birthdate", "bad")]), false).await,
            Some(columns(&[("gold", "in"), ("birthdate", "bad")]))
        );
        assert_eq!(
            step(columns(&[("silver", "out"), ("birthdate", "1990-01-01")]), true).await,
            Some(columns(&[("gold", "in")])),
            "a write that sets other columns leaves the ones it did not set in the failed list"
        );
        assert_eq!(
            step(columns(&[("bronze", "in")]), false).await,
            Some(columns(&[("gold", "in"), ("bronze", "in")])),
            "a record that fails again keeps what it held before"
        );
        assert_eq!(
            step(columns(&[("gold", "in"), ("bronze", "in")]), true).await,
            None,
            "covered in full, it leaves the list"
        );
    }
}
