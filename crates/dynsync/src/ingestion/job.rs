//! Table ingestion on the pipeline runtime. Its source is the table's change feed ([`Feed`]): one page a batch,
//! or for a full load's partitions the pages that are ready, the links as the cursor. A fed row becomes a
//! [`RowWrite`] keyed by the record's id, so that two changes of a record in one page fold into the newest; the
//! sink is the flow's dataset ([`DatasetSink`]), written a page at a time. The runtime acknowledges a batch — the
//! cursor, the run's counts — only once the dataset holds it, and a page written again after a crash leaves the
//! dataset as once. Runs count rows read, created, updated and deleted apart, one run per scheduled load.

use super::definition::IngestionDefinition;
use super::feed::{Fed, Feed, Schemas};
use super::outbound::{Outbound, Outcome};
use crate::dataset::target::{DatasetFormat, DatasetTarget};
use crate::dataset::{Batch, DatasetRow, DatasetSchema, Destination, Operation};
use crate::ids::{Etag, FlowId, TargetConnectionId};
use crate::pipeline::flow::Flow;
use crate::pipeline::runner::{self, ConnectionRef, Runner};
use crate::pipeline::supervisor::{BoxFuture, FlowContext, JobRunner};
use crate::pipeline::{Clients, Decision, Exclusion, Job, Note, Paused, Refusal, Sink, SourceRecord, StepError, Taken};
use crate::source::SourceConnection;
use crate::store::{Backlog, Store, StoreError};
use chrono::{DateTime, Utc};
use dataverse::Backoff;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub use super::definition::JOB;

/// An ingestion flow.
pub type IngestionFlow = Flow<IngestionDefinition>;

/// One row for the dataset, with the generation, load and page of its batch it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowWrite {
    pub generation: u32,
    pub load: DateTime<Utc>,
    #[serde(default)]
    pub page: u32,
    pub row: DatasetRow,
}

/// An ingestion's job: a fed row becomes a write of its record's id, as the flow's outbound rules make it.
pub struct IngestionJob {
    pub outbound: Outbound,
    pub schemas: Arc<Schemas>,
}

impl Job for IngestionJob {
    type Body = Fed;
    type Key = Uuid;
    type Write = RowWrite;

    fn decide(&self, record: SourceRecord<Fed>) -> Decision<Uuid, RowWrite> {
        match record.body {
            Fed::Row { generation, load, page, row, notes } => {
                let row = match self.outbound.is_none() {
                    true => row,
                    false => match self.outbound.apply(row, &self.schemas.get(generation).unwrap_or_default()) {
                        Outcome::Send(row) => row,
                        Outcome::LeaveOut { code, message } => {
                            return Decision::Exclude(Exclusion { code, message, identity: record.position });
                        }
                    },
                };
                Decision::Write {
                    key: row.id,
                    notes: notes.into_iter().map(|n| Note::new("unreadable-value", n)).collect(),
                    write: RowWrite { generation, load, page, row },
                }
            }
            Fed::Unreadable { message } => {
                Decision::Exclude(Exclusion { code: "unreadable-row", message, identity: record.position })
            }
        }
    }

    /// The later change of a record is what the dataset must hold.
    fn fold(&self, earlier: &mut RowWrite, later: RowWrite) {
        *earlier = later;
    }

    /// A later row of the record supersedes a failed one.
    fn uncovered(&self, _failed: RowWrite, _written: &RowWrite) -> Option<RowWrite> {
        None
    }
}

/// The flow's dataset. A write that fails is tried again, as long as it takes: the dataset is the flow's only
/// destination, and a page is acknowledged only once it holds it. A record the destination refuses alone (a
/// webhook's answer to it) fails, and the others go on.
pub struct DatasetSink {
    pub flow: FlowId,
    pub target: DatasetTarget,
    pub destination: Arc<Destination>,
    pub schemas: Arc<Schemas>,
    /// The columns an update leaves as the destination has them ("apply updates" off).
    pub kept_on_update: Vec<String>,
}

impl DatasetSink {
    /// Writes pages of rows, each of one generation and load, as long as it takes; answers the rows refused, by id.
    async fn write_pages(&self, pages: &[(u32, DateTime<Utc>, Vec<&DatasetRow>)]) -> HashMap<Uuid, String> {
        let schemas: Vec<Arc<DatasetSchema>> =
            pages.iter().map(|(generation, _, _)| self.schemas.get(*generation).unwrap_or_default()).collect();
        let batches: Vec<Batch<'_>> = pages
            .iter()
            .zip(&schemas)
            .map(|((generation, load, rows), schema)| Batch {
                dataset: &self.target.dataset,
                generation: *generation,
                schema,
                load: *load,
                rows,
                kept_on_update: &self.kept_on_update,
            })
            .collect();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            match self.destination.write(&batches).await {
                Ok(refused) => return refused.into_iter().collect(),
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(flow = %self.flow, error = %e, retry_in_ms = wait.as_millis() as u64, "the dataset cannot be written; the pages are kept and written again");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Sink<Uuid, RowWrite> for DatasetSink {
    async fn write(&self, writes: &[(Uuid, RowWrite)]) -> Result<Vec<Result<Taken, Refusal>>, Paused> {
        // Each page of the batch is a page of the write, in order (a file destination names a file by its rows: a
        // page written again after a crash must be the same rows, however the batch around it was gathered).
        let page = |w: &RowWrite| (w.generation, w.load, w.page);
        let pages: Vec<(u32, DateTime<Utc>, Vec<&DatasetRow>)> = writes
            .chunk_by(|(_, a), (_, b)| page(a) == page(b))
            .map(|same| (same[0].1.generation, same[0].1.load, same.iter().map(|(_, w)| &w.row).collect()))
            .collect();
        let refused = self.write_pages(&pages).await;
        Ok(writes
            .iter()
            .map(|(id, w)| {
                if let Some(message) = refused.get(id) {
                    return Err(Refusal { code: "destination-refused".into(), message: message.clone() });
                }
                Ok(match w.row.operation {
                    Operation::Read => Taken::Written,
                    Operation::Create => Taken::Created,
                    Operation::Update => Taken::Updated,
                    Operation::Delete => Taken::Deleted,
                })
            })
            .collect())
    }
}

/// Opens the dataset a target names: Parquet files under `data_dir` or in object storage, its PostgreSQL table, or
/// its webhook (what was delivered kept in `store`).
pub async fn open_destination(
    target: &DatasetTarget,
    data_dir: &std::path::Path,
    store: &Store,
) -> Result<Destination, StepError> {
    use crate::dataset::files::{AzureLocation, FileDestination, FileLocation, S3Location};
    let secret = target.secret.clone();
    Ok(match &target.format {
        DatasetFormat::Parquet => Destination::Files(FileDestination::in_data_dir(data_dir)?),
        DatasetFormat::Postgres => {
            let url = secret.ok_or_else(|| {
                StepError::Definition(format!("dataset target {} has no connection string; create it again", target.id))
            })?;
            Destination::Postgres(crate::dataset::postgres::PostgresDestination::connect(url.expose())?)
        }
        DatasetFormat::Webhook { url } => {
            let secret = secret.ok_or_else(|| {
                StepError::Definition(format!("webhook dataset {} has no signing secret; create it again", target.id))
            })?;
            let webhook = crate::dataset::webhook::WebhookDestination::new(url, secret)
                .map_err(|e| StepError::Definition(format!("webhook dataset {}: {e}", target.id)))?;
            Destination::Webhook(crate::dataset::WebhookDataset { webhook, store: store.clone(), target: target.id })
        }
        DatasetFormat::AzureBlob { account, container, folder_path, endpoint } => {
            Destination::Files(FileDestination::open(FileLocation::Azure(AzureLocation {
                account: account.clone(),
                container: container.clone(),
                prefix: folder_path.clone(),
                access_key: secret,
                endpoint: endpoint.clone(),
            }))?)
        }
        DatasetFormat::S3 { bucket, region, folder_path, access_key_id, endpoint } => {
            Destination::Files(FileDestination::open(FileLocation::S3(S3Location {
                bucket: bucket.clone(),
                region: region.clone(),
                prefix: folder_path.clone(),
                access_key_id: access_key_id.clone(),
                secret_access_key: secret,
                endpoint: endpoint.clone(),
            }))?)
        }
    })
}

/// How many datasets [`OpenDatasets`] keeps open: past it, it starts over.
const OPEN_DATASETS: usize = 64;

/// Datasets opened for quick looks through the API, each as its target was last saved: a look at a PostgreSQL
/// dataset reuses its pool instead of connecting again.
#[derive(Default)]
pub struct OpenDatasets(std::sync::Mutex<std::collections::HashMap<TargetConnectionId, (Etag, Arc<Destination>)>>);

impl OpenDatasets {
    pub async fn open(
        &self,
        target: &DatasetTarget,
        data_dir: &std::path::Path,
        store: &Store,
    ) -> Result<Arc<Destination>, StepError> {
        let kept = self.0.lock().expect("open datasets lock").get(&target.id).cloned();
        if let Some((_, destination)) = kept.filter(|(etag, _)| *etag == target.etag) {
            return Ok(destination);
        }
        let destination = Arc::new(open_destination(target, data_dir, store).await?);
        let mut open = self.0.lock().expect("open datasets lock");
        if open.len() >= OPEN_DATASETS {
            open.clear();
        }
        open.insert(target.id, (target.etag.clone(), destination.clone()));
        Ok(destination)
    }
}

/// What an ingestion flow reads and writes, made ready.
struct Resolved {
    source: SourceConnection,
    target: DatasetTarget,
    connection: ConnectionRef,
    client: dataverse::Client,
}

async fn resolve(store: &Store, clients: &Arc<Clients>, flow: &IngestionFlow) -> Result<Resolved, StepError> {
    let d = &flow.definition;
    let source =
        store.source_connection(&flow.sandbox, d.source_connection_id).await?.ok_or(StepError::NoDestination)?;
    let target = store.dataset_target(&flow.sandbox, d.target_connection_id).await?.ok_or(StepError::NoDestination)?;
    let client = clients.current(store, &flow.sandbox, source.base_connection_id).await?;
    let connection = ConnectionRef {
        store: store.clone(),
        clients: clients.clone(),
        sandbox: flow.sandbox.clone(),
        id: source.base_connection_id,
        environment: client.environment().clone(),
    };
    Ok(Resolved { source, target, connection, client })
}

/// Runs ingestion flows for the supervisor.
pub struct IngestionRunner {
    pub data_dir: PathBuf,
}

impl IngestionRunner {
    async fn run(context: FlowContext, data_dir: PathBuf) -> Result<(), StepError> {
        let flow = IngestionFlow::try_from(&context.flow).map_err(|e| StepError::Definition(e.to_string()))?;
        let ready = runner::until_ready(flow.id, || async {
            let resolved = resolve(&context.store, &context.clients, &flow).await?;
            let destination = open_destination(&resolved.target, &data_dir, &context.store).await?;
            Ok((resolved, destination))
        })
        .await;
        let (resolved, destination) = ready;
        let destination = Arc::new(destination);
        let schemas = Arc::new(Schemas::default());
        let feed = Feed::new(
            context.store.clone(),
            flow.id,
            resolved.client,
            flow.definition.clone(),
            resolved.source.object.clone(),
            resolved.target.dataset.clone(),
            destination.clone(),
            schemas.clone(),
        );
        Runner {
            store: context.store,
            flow: flow.id,
            lease: context.lease,
            job: IngestionJob { outbound: flow.definition.outbound.clone(), schemas: schemas.clone() },
            source: feed,
            sink: DatasetSink {
                flow: flow.id,
                target: resolved.target,
                destination,
                schemas,
                kept_on_update: flow.definition.kept_on_update(),
            },
            connection: Some(resolved.connection),
            wake: context.wake,
        }
        .run()
        .await;
        Ok(())
    }
}

impl JobRunner for IngestionRunner {
    fn name(&self) -> &'static str {
        JOB
    }

    fn run(&self, context: FlowContext) -> BoxFuture<'static, Result<(), StepError>> {
        Box::pin(IngestionRunner::run(context, self.data_dir.clone()))
    }

    /// Dynamics holds an ingestion's backlog: dynsync cannot count it without reading it.
    fn backlog<'a>(&'a self, _store: &'a Store, _flow: FlowId) -> BoxFuture<'a, Result<Backlog, StoreError>> {
        Box::pin(async { Ok(Backlog { records: 0, oldest: None }) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::files::FileDestination;
    use crate::dataset::{ColumnKind, DatasetColumn, DatasetName, DatasetSchema, Value};
    use crate::ids::Etag;

    fn sink(folder: &std::path::Path) -> DatasetSink {
        let schema = DatasetSchema { columns: vec![DatasetColumn { name: "lastname".into(), kind: ColumnKind::Text }] };
        let schemas = Schemas::default();
        schemas.set(1, &schema);
        let dataset = DatasetName::try_from("contacts".to_string()).unwrap();
        let now = Utc::now();
        let target = DatasetTarget {
            id: TargetConnectionId::new(),
            sandbox: "prod".parse().unwrap(),
            name: "Contacts".into(),
            description: String::new(),
            dataset,
            format: DatasetFormat::Parquet,
            secret: None,
            etag: Etag::new(),
            created_at: now,
            updated_at: now,
        };
        let destination = Destination::Files(FileDestination::in_data_dir(folder).unwrap());
        DatasetSink {
            flow: FlowId::new(),
            target,
            destination: Arc::new(destination),
            schemas: Arc::new(schemas),
            kept_on_update: Vec::new(),
        }
    }

    fn write(page: u32, n: u128) -> (Uuid, RowWrite) {
        let row = DatasetRow {
            id: Uuid::from_u128(n),
            operation: Operation::Read,
            version: Some(n as i64),
            values: vec![Value::Text(format!("row {n}"))],
            synced_at: Utc::now(),
        };
        let load = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        (row.id, RowWrite { generation: 1, load, page, row })
    }

    #[tokio::test]
    async fn a_page_gathered_with_another_then_written_alone_after_a_crash_is_the_same_file() {
        let folder = tempfile::tempdir().unwrap();
        let sink = sink(folder.path());
        // Two partitions' pages gathered in one batch; the crash comes before it is acknowledged.
        let gathered = vec![write(0, 1), write(0, 2), write(1, 3), write(1, 4)];
        sink.write(&gathered).await.unwrap();
        // Read again after the restart, the pages come one a batch, the second partition's first.
        sink.write(&[write(0, 3), write(0, 4)]).await.unwrap();
        sink.write(&[write(0, 1), write(0, 2)]).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(folder.path().join("datasets/contacts/gen-1")).unwrap().collect();
        assert_eq!(files.len(), 2, "one file a page, each written twice over itself: {files:?}");
        let Destination::Files(destination) = &*sink.destination else { unreachable!() };
        let (_, rows) = destination.rows(&sink.target.dataset, 1, 10).await.unwrap();
        assert_eq!(rows.len(), 4);
    }
}
