//! The feed an ingestion reads: a Dynamics table one page at a time, the page's link as the flow's cursor — so a
//! process killed in the middle of a million-row full load resumes from the last page acknowledged, not from the
//! start.
//!
//! A table with change tracking is read through it: the first load reads every row, and ends with a delta token;
//! each later load reads the rows created, changed and deleted since. A table without it is read by its delta
//! column (`modifiedon` unless the flow names another): each load reads the rows modified since the newest one
//! seen, and once a day (as the flow says) a *scan* reads the table whole and marks deleted the rows it did not see again. A delta
//! token Dynamics no longer keeps (`0x80044352`) starts a *resync*, a scan of a tracked table. Scans and resyncs
//! write only the rows whose version changed, so the dataset holds each `(id, version)` once.
//!
//! A system view is read whole at each load, through its FetchXML (asking also for the id, the version and the
//! columns the flow maps), page by page with its paging cookie: a scan, so rows that changed are written and rows
//! that left the view are marked deleted.
//!
//! A full load of a tracked table is read in *partitions*, ranges of `versionnumber`, several at once: Dynamics
//! counts each request's execution time, and a single paging stream uses a quarter of what its limits allow.
//! (Every row has a version, unlike a creation time a bulk import gives thousands of rows alike; a row changed
//! during the load may move out of the range it was in, and the baseline scan then reads it.)
//! Change tracking reads a table only as one stream, so a delta token comes from a *baseline* scan through it
//! after the partitions: it writes only the rows that changed meanwhile and marks deleted those that left.
//!
//! At the start of each load the table's metadata is read again: a column added in Dynamics joins the dataset, a
//! column whose type changed starts a new dataset generation with a full load. So are its choices' options, whose
//! labels the dataset keeps beside their values; a record with a value they lack has them read again.

use super::definition::IngestionDefinition;
use super::read_ahead::{self, PagesAhead};
use super::schedule::Every;
use super::shape::{Fields, TableShape};
use crate::dataset::{DatasetName, DatasetRow, DatasetSchema, Destination, Latest, Operation};
use crate::ids::FlowId;
use crate::pipeline::{Source, SourceBatch, SourceRecord, StepError};
use crate::source::SourceObject;
use crate::store::{Load, LoadKind, Store};
use chrono::{DateTime, SubsecRound, Utc};
use dataverse::{ChangeLink, ChangePageItem, DeltaToken, Filter, Order, PageNext, PageReply, Query, Record, Table};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Rows asked for per page.
pub const PAGE_SIZE: u32 = 5000;

/// How many ranges of `versionnumber` a full load of a tracked table is read in, and how many of them at once (a
/// page of 5,000 rows at Dataverse's default cost takes 615 ms of the 1,200 s of execution time its window allows
/// in 300 s: four in flight). More ranges than are read at once keep them all busy when the rows are uneven.
pub const PARTITIONS: usize = 8;
pub const PARTITIONS_IN_FLIGHT: usize = 4;

/// How long a continuous flow's incremental loads go on with the table's shape before reading its metadata again:
/// a column added in Dynamics joins the dataset within this time.
pub const SHAPE_REFRESH: Duration = Duration::from_secs(60);

/// How long after reading a table's choice labels a page of a full load read in partitions with a value they lack
/// (an option added in Dynamics since) has them read again for the pages after it. (A page read as one stream has
/// them read before its rows are, whenever one of its values lacks one and is not known to be absent.)
pub const LABELS_REFRESH: Duration = Duration::from_secs(10);

/// Where a flow is in its loads: its cursor, kept as JSON text by the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedCursor {
    pub generation: u32,
    /// The generation's columns so far.
    pub schema: DatasetSchema,
    pub load: LoadMark,
    pub at: Position,
    /// A table without change tracking: the newest delta column value seen, and the rows seen at it.
    #[serde(default)]
    pub watermark: Option<Watermark>,
    /// A table without change tracking: when it was last read whole.
    #[serde(default)]
    pub last_scan: Option<DateTime<Utc>>,
}

/// The load under way, or the last one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadMark {
    pub started: DateTime<Utc>,
    pub kind: LoadKind,
    /// When the load before it started: a row created since is a creation, one created before a change.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Whether the table is read through change tracking.
    pub tracked: bool,
}

/// The newest delta column value a table without change tracking was read to, and the rows at that value (read
/// again by the next load, which starts at it, and left out then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub at: DateTime<Utc>,
    pub ids: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Position {
    /// Reading a load: the next page is at this link.
    Reading { link: String },
    /// Reading a full load in ranges of `versionnumber`, each where it is.
    Partitioned { parts: Vec<Partition> },
    /// A scan read every page: once the last is written (`written`), rows it did not see are marked deleted.
    Sweeping { resume: Resume, written: bool },
    /// The load is complete: recorded finished once its last batch is written (`written`).
    Loaded {
        resume: Resume,
        finished: DateTime<Utc>,
        #[serde(default = "already_written")]
        written: bool,
    },
}

/// A cursor kept before loads waited for their last batch: it was written.
fn already_written() -> bool {
    true
}

impl Position {
    /// A load read to its end, its last batch still to be written.
    fn loaded(resume: Resume) -> Position {
        Position::Loaded { resume, finished: Utc::now(), written: false }
    }
}

/// A range of a table's rows by `versionnumber`, and how far it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    /// Rows at or above this version (all the lower ones when `None`)…
    pub from: Option<i64>,
    /// …and below this (all the higher ones when `None`).
    pub until: Option<i64>,
    pub at: PartitionAt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "at")]
pub enum PartitionAt {
    Start,
    Next { link: String },
    Done,
}

/// Where the next load starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "from")]
pub enum Resume {
    /// A tracked table read in partitions: a baseline scan through change tracking gets its delta token.
    Baseline,
    /// The changes since this delta token.
    Token { token: DeltaToken },
    /// The rows modified since the cursor's watermark.
    Watermark,
    /// A view: each load reads it whole.
    View,
}

/// A record as the feed gives it to the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Fed {
    /// A dataset row of a generation, and what could not be read of it. `page` numbers the pages of a batch that
    /// gathers several (a full load's partitions): each page is written apart, so that a page written again after
    /// a crash is the same write however its batch was gathered.
    Row { generation: u32, load: DateTime<Utc>, page: u32, row: DatasetRow, notes: Vec<String> },
    /// A record that cannot be a row (it has no id): reported in the run.
    Unreadable { message: String },
}

impl Fed {
    fn record(self, position: String) -> SourceRecord<Fed> {
        SourceRecord { position, body: self }
    }

    /// The row as read on the batch's page `n`.
    fn on_page(self, n: u32) -> Fed {
        match self {
            Fed::Row { generation, load, row, notes, .. } => Fed::Row { generation, load, page: n, row, notes },
            unreadable => unreadable,
        }
    }
}

/// What the feed and the sink share: each generation's schema as it grew.
#[derive(Default)]
pub struct Schemas {
    by_generation: Mutex<HashMap<u32, Arc<DatasetSchema>>>,
}

impl Schemas {
    pub fn set(&self, generation: u32, schema: &DatasetSchema) {
        self.by_generation.lock().expect("schemas lock").insert(generation, Arc::new(schema.clone()));
    }

    /// A generation's schema, shared: the job reads it for every row.
    pub fn get(&self, generation: u32) -> Option<Arc<DatasetSchema>> {
        self.by_generation.lock().expect("schemas lock").get(&generation).cloned()
    }
}

/// The newest row of each id a dataset held when a scan started.
type Kept = HashMap<Uuid, Latest>;

/// The table as a load reads it: its shape, its Web API name, whether Dynamics tracks its changes.
#[derive(Clone)]
struct Reading {
    generation: u32,
    shape: TableShape,
    table: Table,
    tracked: bool,
    /// A view's FetchXML, asking also for the columns the flow needs.
    view: Option<String>,
    read_at: Instant,
}

/// A page read, whichever way.
struct PageRead {
    items: Vec<ChangePageItem>,
    next: Next,
}

enum Next {
    More(String),
    Done(Resume),
}

/// The feed of one ingestion flow.
pub struct Feed {
    pub store: Store,
    pub flow: FlowId,
    pub client: dataverse::Client,
    pub definition: IngestionDefinition,
    pub object: SourceObject,
    pub dataset: DatasetName,
    pub destination: Arc<Destination>,
    pub schemas: Arc<Schemas>,
    /// The table as last read from its metadata.
    reading: Mutex<Option<Reading>>,
    /// When its choices' labels were last read.
    labels_read: Mutex<Option<Instant>>,
    /// During a scan, the dataset's rows as they were when it started.
    before_scan: Mutex<Option<(DateTime<Utc>, Arc<Kept>)>>,
    /// The last load recorded finished, so that it is recorded once.
    recorded: Mutex<Option<DateTime<Utc>>>,
    /// A partitioned load's readers, by the generation and load they read for and the link (or first query) of
    /// the page each gives next.
    ahead: Mutex<Readers>,
}

/// A partitioned load's readers, by (generation, load started, the target of the page each gives next).
type Readers = HashMap<(u32, DateTime<Utc>, String), PagesAhead<Vec<SourceRecord<Fed>>>>;

fn cursor_text(cursor: &FeedCursor) -> String {
    serde_json::to_string(cursor).expect("a cursor serializes")
}

impl Feed {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        flow: FlowId,
        client: dataverse::Client,
        definition: IngestionDefinition,
        object: SourceObject,
        dataset: DatasetName,
        destination: Arc<Destination>,
        schemas: Arc<Schemas>,
    ) -> Feed {
        Feed {
            store,
            flow,
            client,
            definition,
            object,
            dataset,
            destination,
            schemas,
            reading: Mutex::new(None),
            labels_read: Mutex::new(None),
            before_scan: Mutex::new(None),
            recorded: Mutex::new(None),
            ahead: Mutex::new(HashMap::new()),
        }
    }

    fn continuous(&self) -> bool {
        matches!(self.definition.schedule.every, Every::Continuous(_))
    }

    /// The table now, for a generation whose schema is `schema`: the same generation grown by new columns, or the
    /// next generation when a column changed type.
    async fn read_table(&self, generation: u32, schema: &DatasetSchema) -> Result<Reading, StepError> {
        let name = self.object.table();
        self.client.invalidate_table(name);
        let definition =
            self.client.table(name).await.map_err(|error| StepError::Metadata { table: "source", error })?;
        let view = match &self.object {
            SourceObject::Table { .. } => None,
            SourceObject::View { view, view_id, table, .. } => {
                let views = self.client.system_views(Some(table)).await;
                let views = views.map_err(|error| StepError::Metadata { table: "source", error })?;
                let found = views.into_iter().find(|v| v.id.parse::<Uuid>().ok() == Some(*view_id));
                Some(found.ok_or_else(|| {
                    StepError::Definition(format!("the view '{view}' ({view_id}) of {table} is gone from Dynamics"))
                })?)
            }
        };
        // A view's columns, unless the flow names its own.
        let mappings = match (&view, self.definition.columns.is_empty()) {
            (Some(view), true) => view
                .columns()
                .into_iter()
                .filter(|c| definition.column(c).is_some_and(super::shape::loadable))
                .map(|c| super::shape::ColumnMapping::new(c.clone(), c))
                .collect(),
            _ => self.definition.columns.clone(),
        };
        let shape =
            TableShape::new(&definition, self.object.primary_key(), &mappings, "mappings").map_err(|problems| {
                let listed: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect();
                StepError::Definition(format!("the {name} table no longer fits the flow: {}", listed.join("; ")))
            })?;
        let (generation, shape) = match shape.grown_from(schema) {
            Some(grown) => (generation, grown),
            None => (generation + 1, shape),
        };
        shape
            .read_labels(&self.client, &definition)
            .await
            .map_err(|error| StepError::Metadata { table: "source", error })?;
        *self.labels_read.lock().expect("labels lock") = Some(Instant::now());
        let view = match view {
            None => None,
            Some(view) => {
                let columns = shape.columns_read();
                let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
                let fetch = dataverse::fetch::with_attributes(&view.fetch_xml, &columns, PAGE_SIZE)
                    .map_err(|e| StepError::Definition(format!("the view '{}' cannot be read: {e}", view.name)))?;
                Some(fetch)
            }
        };
        let table = Table {
            logical_name: definition.logical_name.clone(),
            entity_set: definition.entity_set_name.clone(),
            primary_id: shape.primary_key.clone(),
        };
        let tracked = definition.change_tracking && view.is_none();
        let reading = Reading { generation, shape, table, tracked, view, read_at: Instant::now() };
        self.schemas.set(reading.generation, &reading.shape.schema);
        *self.reading.lock().expect("reading lock") = Some(reading.clone());
        Ok(reading)
    }

    /// Reads the choice labels of `reading` again: every copy of its shape, the pages read ahead too, takes them.
    async fn relabel(&self, reading: &Reading) -> Result<(), StepError> {
        *self.labels_read.lock().expect("labels lock") = Some(Instant::now());
        let metadata = |error| StepError::Metadata { table: "source", error };
        let definition = self.client.table(self.object.table()).await.map_err(metadata)?;
        reading.shape.read_labels(&self.client, &definition).await.map_err(metadata)
    }

    /// The table as the load of `cursor` reads it: as last read when that fits, else read again. `None` when a
    /// column changed type meanwhile: the flow starts a new generation.
    async fn reading_for(&self, cursor: &FeedCursor) -> Result<Option<Reading>, StepError> {
        let kept = self.reading.lock().expect("reading lock").clone();
        if let Some(r) = kept.filter(|r| r.generation == cursor.generation && r.shape.schema == cursor.schema) {
            return Ok(Some(r));
        }
        let reading = self.read_table(cursor.generation, &cursor.schema).await?;
        Ok((reading.generation == cursor.generation).then_some(reading))
    }

    /// The query a table without change tracking is read with: from `since` on its delta column, oldest first.
    fn query(&self, reading: &Reading, since: Option<DateTime<Utc>>) -> Query {
        let delta = self.definition.delta_column.as_str();
        let mut select = reading.shape.select();
        if !select.iter().any(|s| s == delta) {
            select.push(delta.to_string());
        }
        let select: Vec<&str> = select.iter().map(String::as_str).collect();
        let mut query = Query::new(&reading.table)
            .select(&select)
            .order_by(delta, Order::Ascending)
            .order_by(&reading.shape.primary_key, Order::Ascending)
            .page_size(PAGE_SIZE)
            .annotated();
        if let Some(since) = since {
            query = query.filter(Filter::ge(delta, since));
        }
        query
    }

    /// Starts a load of `kind` after `previous` (the first load, without one): reads the table's metadata (a
    /// continuous flow's incremental loads reuse it for a minute), and records the load.
    async fn start_load(&self, previous: Option<&FeedCursor>, kind: LoadKind) -> Result<FeedCursor, StepError> {
        let (generation, schema) = previous.map_or((1, DatasetSchema::default()), |c| (c.generation, c.schema.clone()));
        let kept = self.reading.lock().expect("reading lock").clone().filter(|r| {
            kind == LoadKind::Incremental
                && self.continuous()
                && r.read_at.elapsed() < SHAPE_REFRESH
                && r.generation == generation
                && r.shape.schema == schema
        });
        let reading = match kept {
            Some(r) => r,
            None => self.read_table(generation, &schema).await?,
        };
        let started = Utc::now().trunc_subsecs(0);
        let resume = previous.and_then(|c| match &c.at {
            Position::Loaded { resume, .. } | Position::Sweeping { resume, .. } => Some(resume.clone()),
            Position::Reading { .. } | Position::Partitioned { .. } => None,
        });
        let new_generation = reading.generation != generation;
        // A first load, a new generation, a table whose tracking was turned on or off: the table is read whole. A
        // view is read whole at each load, as a scan: what changed is written, what left the view is deleted.
        let kind = match (previous, &resume) {
            (None, _) => LoadKind::Full,
            _ if new_generation => LoadKind::Full,
            _ if reading.view.is_some() => LoadKind::Scan,
            (Some(_), Some(Resume::Baseline)) if reading.tracked => LoadKind::Scan,
            (Some(_), Some(Resume::Baseline)) => LoadKind::Full,
            (Some(_), Some(Resume::Token { .. })) if !reading.tracked => LoadKind::Full,
            (Some(_), Some(Resume::Watermark)) if reading.tracked => LoadKind::Full,
            (Some(c), _) if !reading.tracked && kind == LoadKind::Incremental => {
                let scanned = c.last_scan.unwrap_or(c.load.started);
                let every = chrono::Duration::seconds(self.definition.scan_seconds);
                if started - scanned >= every { LoadKind::Scan } else { LoadKind::Incremental }
            }
            _ => kind,
        };
        let select: Vec<String> = reading.shape.select();
        let select: Vec<&str> = select.iter().map(String::as_str).collect();
        let watermark = previous.and_then(|c| c.watermark.clone()).filter(|_| !new_generation);
        let link = match (kind, &resume, reading.tracked) {
            _ if reading.view.is_some() => reading.view.clone().expect("a view's query"),
            (LoadKind::Incremental, Some(Resume::Token { token }), true) => {
                // The token goes on with the shape's columns now: a column added since joins.
                with_select(&ChangeLink::from(token.clone()), &select).0
            }
            (_, _, true) => ChangeLink::initial(&reading.table, &select).0,
            (LoadKind::Incremental, _, false) => self.query(&reading, watermark.as_ref().map(|w| w.at)).path(),
            (_, _, false) => self.query(&reading, None).path(),
        };
        let last_scan = match kind {
            LoadKind::Full | LoadKind::Scan => Some(started),
            _ => previous.and_then(|c| c.last_scan),
        };
        let at = match kind == LoadKind::Full && reading.tracked {
            true => self.partitions(&reading).await?.map(|parts| Position::Partitioned { parts }),
            false => None,
        };
        let cursor = FeedCursor {
            generation: reading.generation,
            schema: reading.shape.schema.clone(),
            load: LoadMark { started, kind, since: previous.map(|c| c.load.started), tracked: reading.tracked },
            at: at.unwrap_or(Position::Reading { link }),
            watermark,
            last_scan,
        };
        if self.records_load(kind) {
            let load =
                Load { flow: self.flow, started_at: started, kind, generation: reading.generation, finished_at: None };
            self.store.record_load(&load).await?;
        }
        Ok(cursor)
    }

    /// Whether a load is a run of its own. A continuous flow's incremental loads come every few seconds: they are
    /// counted in the flow's run of the hour, as a streaming flow's records are.
    fn records_load(&self, kind: LoadKind) -> bool {
        !(kind == LoadKind::Incremental && self.continuous())
    }

    /// The run a batch of `cursor`'s load counts in.
    fn run_of(&self, cursor: &FeedCursor) -> Option<DateTime<Utc>> {
        self.records_load(cursor.load.kind).then_some(cursor.load.started)
    }

    fn batch(&self, records: Vec<SourceRecord<Fed>>, cursor: &FeedCursor) -> SourceBatch<Fed> {
        SourceBatch { records, cursor: cursor_text(cursor), run: self.run_of(cursor) }
    }

    async fn record_finished(&self, cursor: &FeedCursor, finished: DateTime<Utc>) -> Result<(), StepError> {
        let recorded = *self.recorded.lock().expect("recorded lock") == Some(cursor.load.started);
        if !self.records_load(cursor.load.kind) || recorded {
            return Ok(());
        }
        let load = Load {
            flow: self.flow,
            started_at: cursor.load.started,
            kind: cursor.load.kind,
            generation: cursor.generation,
            finished_at: Some(finished),
        };
        self.store.record_load(&load).await?;
        *self.recorded.lock().expect("recorded lock") = Some(cursor.load.started);
        Ok(())
    }

    async fn read_page(
        &self,
        cursor: &FeedCursor,
        reading: &Reading,
        link: &str,
    ) -> Result<PageRead, dataverse::Error> {
        if reading.view.is_some() {
            // A view's position is the FetchXML of its next page.
            let page = self.client.fetch_page(&reading.table, link).await?;
            let next = page.next.map_or(Next::Done(Resume::View), Next::More);
            return Ok(PageRead { items: page.records.into_iter().map(ChangePageItem::Upserted).collect(), next });
        }
        if cursor.load.tracked {
            let page = self.client.changes_page(&reading.table, &ChangeLink(link.to_string()), PAGE_SIZE).await?;
            let next = match page.next {
                PageNext::More(link) => Next::More(link.0),
                PageNext::Done(token) => Next::Done(Resume::Token { token }),
            };
            return Ok(PageRead { items: page.changes, next });
        }
        let query = self.query(reading, None);
        let page = self.client.query_page(&query, Some(link)).await?;
        let next = page.next_link.map_or(Next::Done(Resume::Watermark), Next::More);
        Ok(PageRead { items: page.value.into_iter().map(ChangePageItem::Upserted).collect(), next })
    }

    /// The rows of one page from `link`, and the cursor after it.
    async fn page(&self, cursor: FeedCursor, link: &str) -> Result<SourceBatch<Fed>, StepError> {
        let Some(reading) = self.reading_for(&cursor).await? else {
            return self.new_generation(&cursor).await;
        };
        let page = match self.read_page(&cursor, &reading, link).await {
            Ok(page) => page,
            Err(dataverse::Error::ChangeTokenExpired { .. }) if cursor.load.kind == LoadKind::Incremental => {
                tracing::warn!(flow = %self.flow, table = %reading.shape.table, "Dynamics no longer keeps the changes since the flow's last load: it resyncs the table");
                let resync = self.start_load(Some(&cursor), LoadKind::Resync).await?;
                return Box::pin(self.first_page(resync)).await;
            }
            Err(error) => return Err(StepError::Metadata { table: "source", error }),
        };
        // A value without a label: its option may have been added since the labels were read. Those still without
        // one are absent from the options, and not read again for each page.
        let unlabelled: Vec<&Record> = page
            .items
            .iter()
            .filter_map(|i| match i {
                ChangePageItem::Upserted(record) if reading.shape.lacks_labels(record) => Some(record),
                _ => None,
            })
            .collect();
        if !unlabelled.is_empty() {
            self.relabel(&reading).await?;
            unlabelled.into_iter().for_each(|record| reading.shape.confirm_absent(record));
        }
        let scanning = matches!(cursor.load.kind, LoadKind::Resync | LoadKind::Scan);
        let before = match scanning {
            true => Some(self.before_scan(&cursor).await?),
            false => None,
        };
        let synced_at = Utc::now();
        let (generation, load) = (cursor.generation, cursor.load.started);
        let mut watermark = cursor.watermark.clone();
        let mut records = Vec::with_capacity(page.items.len());
        let mut seen = Vec::new();
        for item in page.items {
            let (row, notes) = match item {
                ChangePageItem::Upserted(record) => {
                    let read_before =
                        !cursor.load.tracked && self.advance(&mut watermark, &record, &reading.shape.primary_key);
                    if read_before && cursor.load.kind == LoadKind::Incremental {
                        // Read by the last load, at the value this one starts from.
                        continue;
                    }
                    let operation = match (cursor.load.kind, &before) {
                        (LoadKind::Full, _) => Operation::Read,
                        // A scan knows what the dataset held: a row it lacked is new, one it held has changed.
                        (_, Some(before)) => match reading.shape.id_of(&record).and_then(|id| before.get(&id)) {
                            Some(kept) if !kept.deleted => Operation::Update,
                            _ => Operation::Create,
                        },
                        (_, None) if reading.shape.created_since(&record, cursor.load.since) => Operation::Create,
                        (_, None) => Operation::Update,
                    };
                    match reading.shape.row(&record, operation, synced_at) {
                        Ok(read) => read,
                        Err(message) => {
                            let position = format!("a row of {}", reading.shape.table);
                            records.push(Fed::Unreadable { message }.record(position));
                            continue;
                        }
                    }
                }
                ChangePageItem::Deleted(id) => (reading.shape.deleted(id.0, synced_at), Vec::new()),
            };
            if let Some(before) = &before {
                seen.push(row.id);
                if before.get(&row.id).is_some_and(|l| !l.deleted && l.version == row.version && l.version.is_some()) {
                    // A scan writes only what changed: this version is in the dataset already.
                    continue;
                }
            }
            let position = row.id.to_string();
            records.push(Fed::Row { generation, load, page: 0, row, notes }.record(position));
        }
        if scanning {
            self.store.record_resync_seen(self.flow, load, link, &seen).await?;
        }
        let at = match page.next {
            Next::More(link) => Position::Reading { link },
            Next::Done(resume) if scanning => Position::Sweeping { resume, written: false },
            Next::Done(resume) => Position::loaded(resume),
        };
        let next = FeedCursor { at, schema: reading.shape.schema.clone(), watermark, ..cursor };
        Ok(self.batch(records, &next))
    }

    /// A column changed type since `cursor`'s load started: the flow loads a new dataset generation, from its
    /// first page.
    async fn new_generation(&self, cursor: &FeedCursor) -> Result<SourceBatch<Fed>, StepError> {
        tracing::warn!(flow = %self.flow, table = self.object.table(), "a column changed type: the flow loads a new dataset generation");
        let next = self.start_load(Some(cursor), LoadKind::Full).await?;
        Box::pin(self.first_page(next)).await
    }

    async fn first_page(&self, cursor: FeedCursor) -> Result<SourceBatch<Fed>, StepError> {
        match cursor.at.clone() {
            Position::Reading { link } => self.page(cursor, &link).await,
            Position::Partitioned { parts } => self.partitioned(cursor, parts).await,
            _ => unreachable!("a load starts reading"),
        }
    }

    /// The ranges of `versionnumber` a full load of the table is read in; `None` when one stream does as well
    /// (a table that fits in a page).
    async fn partitions(&self, reading: &Reading) -> Result<Option<Vec<Partition>>, StepError> {
        let edge = |order| async move {
            let query = Query::new(&reading.table)
                .select(&[reading.shape.primary_key.as_str(), "versionnumber"])
                .order_by("versionnumber", order)
                .count()
                .page_size(1);
            let page = self.client.query_page(&query, None).await;
            let page = page.map_err(|error| StepError::Metadata { table: "source", error })?;
            Ok::<_, StepError>((page.value.first().and_then(|r| reading.shape.version(r)), page.count.unwrap_or(0)))
        };
        let ((lowest, rows), (highest, _)) = futures::try_join!(edge(Order::Ascending), edge(Order::Descending))?;
        let (Some(lowest), Some(highest)) = (lowest, highest) else { return Ok(None) };
        if rows < u64::from(PAGE_SIZE) {
            return Ok(None);
        }
        let span = highest - lowest;
        let count = (PARTITIONS as i64).min(span);
        if count < 2 {
            return Ok(None);
        }
        let bounds = (1..count).map(|k| lowest + span / count * k);
        let mut parts = Vec::with_capacity(count as usize);
        let mut from = None;
        for until in bounds.map(Some).chain([None]) {
            parts.push(Partition { from, until, at: PartitionAt::Start });
            from = until;
        }
        Ok(Some(parts))
    }

    /// The query of one partition: its range of `versionnumber`, in that order, so that each page is the next
    /// stretch of the version index (as change tracking reads it) rather than the range sorted again by id.
    fn partition_query(&self, reading: &Reading, part: &Partition) -> Query {
        let select = reading.shape.select();
        let select: Vec<&str> = select.iter().map(String::as_str).collect();
        let mut query = Query::new(&reading.table)
            .select(&select)
            .order_by("versionnumber", Order::Ascending)
            .page_size(PAGE_SIZE)
            .annotated();
        let range =
            [part.from.map(|f| Filter::ge("versionnumber", f)), part.until.map(|u| Filter::lt("versionnumber", u))];
        if let Some(filter) = range.into_iter().flatten().reduce(Filter::and) {
            query = query.filter(filter);
        }
        query
    }

    /// A partition's query, and the target of its next page: its link, or the query itself at the start.
    fn partition_target(&self, reading: &Reading, part: &Partition) -> (Query, String) {
        let query = self.partition_query(reading, part);
        let target = match &part.at {
            PartitionAt::Next { link } => link.clone(),
            PartitionAt::Start | PartitionAt::Done => query.path(),
        };
        (query, target)
    }

    /// The pages of up to [`PARTITIONS_IN_FLIGHT`] partitions read ahead, as one batch: as soon as one is there,
    /// with the others that come within [`read_ahead::GATHER`].
    async fn partitioned(&self, cursor: FeedCursor, mut parts: Vec<Partition>) -> Result<SourceBatch<Fed>, StepError> {
        let Some(reading) = self.reading_for(&cursor).await? else {
            return self.new_generation(&cursor).await;
        };
        let reading = &reading;
        let active = |parts: &[Partition]| -> Vec<usize> {
            (0..parts.len()).filter(|&i| parts[i].at != PartitionAt::Done).take(PARTITIONS_IN_FLIGHT).collect()
        };
        let load = (cursor.generation, cursor.load.started);
        let key = |target: String| (load.0, load.1, target);
        let start = |query: &Query, target: String| {
            let shape = reading.shape.clone();
            PagesAhead::start(&self.client, query, target, move |reply| rows_read(&shape, load, reply))
        };
        // Each partition read now, by its reader if one is ahead at its position; a reader elsewhere (a batch read
        // again after a failed write) is dropped.
        let mut readers = std::mem::take(&mut *self.ahead.lock().expect("read-ahead lock"));
        let (mut now, mut targets) = (Vec::new(), Vec::new());
        for i in active(&parts) {
            let (query, target) = self.partition_target(reading, &parts[i]);
            let reader = readers.remove(&key(target.clone()));
            now.push(reader.unwrap_or_else(|| start(&query, target.clone())));
            targets.push((i, query, target));
        }
        drop(readers);
        let ready = read_ahead::ready(&mut now).await;
        let mut records = Vec::new();
        let mut readers: Vec<Option<_>> = now.into_iter().map(Some).collect();
        for (n, (k, ahead)) in ready.into_iter().enumerate() {
            let (i, query, target) = &targets[k];
            let ahead = match ahead {
                Some(ahead) => ahead,
                // Its task ended without a page: read it here.
                None => {
                    readers[k] = None;
                    let reply = self.client.query_reply(query, Some(target)).await;
                    reply.and_then(|reply| {
                        let rows = rows_read(&reading.shape, load, &reply)?;
                        Ok(read_ahead::Ahead { rows, next: reply.next_link()? })
                    })
                }
            };
            let ahead = ahead.map_err(|error| StepError::Metadata { table: "source", error })?;
            parts[*i].at = match ahead.next {
                Some(link) => PartitionAt::Next { link },
                None => {
                    readers[k] = None;
                    PartitionAt::Done
                }
            };
            let page = u32::try_from(n).expect("a batch gathers a few pages");
            records.extend(ahead.rows.into_iter().map(|r| SourceRecord { body: r.body.on_page(page), ..r }));
        }
        // A value without a label: the pages read next take the labels read again.
        let labels_read = *self.labels_read.lock().expect("labels lock");
        if reading.shape.missed_labels() && labels_read.is_none_or(|at| at.elapsed() >= LABELS_REFRESH) {
            self.relabel(reading).await?;
        }
        // Each reader kept by where its partition is now; a partition that starts in place of one that ended
        // starts reading now too.
        let mut ahead = HashMap::new();
        for ((i, _, _), reader) in targets.iter().zip(readers) {
            if let Some(reader) = reader {
                ahead.insert(key(self.partition_target(reading, &parts[*i]).1), reader);
            }
        }
        for i in active(&parts) {
            let (query, target) = self.partition_target(reading, &parts[i]);
            ahead.entry(key(target.clone())).or_insert_with(|| start(&query, target));
        }
        *self.ahead.lock().expect("read-ahead lock") = ahead;
        let at = match parts.iter().all(|p| p.at == PartitionAt::Done) {
            true => Position::loaded(Resume::Baseline),
            false => Position::Partitioned { parts },
        };
        let next = FeedCursor { at, schema: reading.shape.schema.clone(), ..cursor };
        Ok(self.batch(records, &next))
    }

    /// Moves the watermark over a record of a table without change tracking; whether the last load read it
    /// already (it is at the watermark this load starts from, and among the rows seen there).
    fn advance(&self, watermark: &mut Option<Watermark>, record: &Record, primary_key: &str) -> bool {
        let at = record
            .get(&self.definition.delta_column)
            .and_then(Json::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let id = record.get(primary_key).and_then(Json::as_str).and_then(|t| Uuid::parse_str(t).ok());
        let (Some(at), Some(id)) = (at, id) else { return false };
        match watermark {
            Some(w) if w.at == at && w.ids.contains(&id) => true,
            Some(w) if w.at == at => {
                w.ids.push(id);
                false
            }
            Some(w) if w.at > at => false,
            _ => {
                *watermark = Some(Watermark { at, ids: vec![id] });
                false
            }
        }
    }

    /// The dataset's rows as they were when the scan started (read again after a restart: rows this scan wrote
    /// since carry their new versions, so they are not written again either).
    async fn before_scan(&self, cursor: &FeedCursor) -> Result<Arc<Kept>, StepError> {
        if let Some((started, rows)) = &*self.before_scan.lock().expect("scan lock")
            && *started == cursor.load.started
        {
            return Ok(rows.clone());
        }
        let rows = Arc::new(self.destination.latest(&self.dataset, cursor.generation).await?);
        *self.before_scan.lock().expect("scan lock") = Some((cursor.load.started, rows.clone()));
        Ok(rows)
    }

    /// After a scan's last page is written: the rows it did not see again are marked deleted.
    async fn sweep(&self, cursor: FeedCursor, resume: Resume) -> Result<SourceBatch<Fed>, StepError> {
        let Some(reading) = self.reading_for(&cursor).await? else {
            return self.new_generation(&cursor).await;
        };
        let now = self.destination.latest(&self.dataset, cursor.generation).await?;
        let seen = self.store.resync_seen(self.flow, cursor.load.started).await?;
        let synced_at = Utc::now();
        let (generation, load) = (cursor.generation, cursor.load.started);
        let records = now
            .iter()
            .filter(|(id, latest)| !latest.deleted && !seen.contains(*id))
            .map(|(id, _)| {
                let row = reading.shape.deleted(*id, synced_at);
                Fed::Row { generation, load, page: 0, row, notes: Vec::new() }.record(id.to_string())
            })
            .collect();
        self.store.forget_resync_seen(self.flow).await?;
        *self.before_scan.lock().expect("scan lock") = None;
        let next = FeedCursor { at: Position::loaded(resume), ..cursor };
        Ok(self.batch(records, &next))
    }
}

impl Source for Feed {
    type Body = Fed;

    async fn read(&self, cursor: Option<&str>, _limit: usize) -> Result<Option<SourceBatch<Fed>>, StepError> {
        let cursor = match cursor {
            None => {
                if self.definition.schedule.next_load(None).is_some_and(|due| due > Utc::now()) {
                    return Ok(None);
                }
                self.start_load(None, LoadKind::Full).await?
            }
            Some(text) => serde_json::from_str::<FeedCursor>(text)
                .map_err(|e| StepError::Definition(format!("the flow's cursor cannot be read ({e})")))?,
        };
        match cursor.at.clone() {
            Position::Reading { .. } | Position::Partitioned { .. } => self.first_page(cursor).await.map(Some),
            Position::Sweeping { resume, written: false } => {
                // A barrier: the runtime writes a batch only after the one before it, so by the time this empty
                // batch is written, the scan's last page is in the dataset.
                let next = FeedCursor { at: Position::Sweeping { resume, written: true }, ..cursor };
                Ok(Some(self.batch(Vec::new(), &next)))
            }
            Position::Sweeping { resume, written: true } => self.sweep(cursor, resume).await.map(Some),
            Position::Loaded { resume, finished, written: false } if self.records_load(cursor.load.kind) => {
                // The same barrier: the load is recorded finished only once its last batch is counted in its run
                // (the runtime reads a batch ahead, while the one before it is still being written).
                let next = FeedCursor { at: Position::Loaded { resume, finished, written: true }, ..cursor };
                Ok(Some(self.batch(Vec::new(), &next)))
            }
            Position::Loaded { finished, .. } => {
                self.record_finished(&cursor, finished).await?;
                // A replay asked for since the last load started: the table is read whole, every row sent again.
                let replay = self.store.replay_requested(self.flow).await?;
                if replay.is_some_and(|at| at > cursor.load.started) {
                    let next = self.start_load(Some(&cursor), LoadKind::Full).await?;
                    return self.first_page(next).await.map(Some);
                }
                match self.definition.schedule.next_load(Some((cursor.load.started, finished))) {
                    Some(due) if due <= Utc::now() => {
                        let next = self.start_load(Some(&cursor), LoadKind::Incremental).await?;
                        self.first_page(next).await.map(Some)
                    }
                    _ => Ok(None),
                }
            }
        }
    }
}

/// A page of a full load as the job takes it: each record a row of the load (its generation, and when it started),
/// or why it cannot be one.
fn rows_read(
    shape: &TableShape,
    (generation, load): (u32, DateTime<Utc>),
    reply: &PageReply,
) -> Result<Vec<SourceRecord<Fed>>, dataverse::Error> {
    let synced_at = Utc::now();
    let fed = |fields: Fields<'_>| match shape.row_of(fields, Operation::Read, synced_at) {
        Ok((row, notes)) => {
            let position = row.id.to_string();
            Fed::Row { generation, load, page: 0, row, notes }.record(position)
        }
        Err(message) => Fed::Unreadable { message }.record(format!("a row of {}", shape.table)),
    };
    Ok(reply.rows_with(&shape.page_fields())?.into_iter().map(fed).collect())
}

/// `link` with its `$select` replaced by `select`.
fn with_select(link: &ChangeLink, select: &[&str]) -> ChangeLink {
    let Some((path, query)) = link.0.split_once('?') else {
        return ChangeLink(format!("{}?$select={}", link.0, select.join(",")));
    };
    let mut options: Vec<String> =
        query.split('&').filter(|o| !o.starts_with("$select=") && !o.is_empty()).map(str::to_string).collect();
    options.insert(0, format!("$select={}", select.join(",")));
    ChangeLink(format!("{path}?{}", options.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_link_goes_on_with_the_columns_of_now() {
        let link =
            ChangeLink("https://x/api/data/v9.2/contacts?$select=firstname&$deltatoken=12%2101%2f01%2f2026".into());
        assert_eq!(
            with_select(&link, &["firstname", "lastname"]).0,
            "https://x/api/data/v9.2/contacts?$select=firstname,lastname&$deltatoken=12%2101%2f01%2f2026"
        );
    }
}
