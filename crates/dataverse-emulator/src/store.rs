//! The environment's data: tables and rows in memory, and — with `--state` — a SQLite journal that every
//! change reaches before its request is answered. Many concurrent writes share one SQLite transaction
//! (group commit), so durability costs little throughput.

use crate::schema::{Schema, Table, activities, builtin_tables};
use crate::value::{Row, Value};
use anyhow::Context;
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Row as _, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// The rows of one table, with an index per alternate key and, for change tracking, the rows by version
/// and the rows deleted.
///
/// A row is shared between the id-keyed map and the version index, so that a page read by version (a delta, a
/// full load in ranges of `versionnumber`) reaches each row straight from the index rather than by looking its id
/// up in a tree of a million rows.
#[derive(Debug, Default, Clone)]
pub struct TableRows {
    rows: BTreeMap<Uuid, Arc<Row>>,
    /// Key logical name → the key's values (folded for case) → row id.
    key_index: HashMap<String, HashMap<Vec<String>, Uuid>>,
    /// Row version → the row: the rows changed since a version, in the order they changed.
    by_version: BTreeMap<i64, (Uuid, Arc<Row>)>,
    /// Deletion version → the row deleted.
    pub deleted: BTreeMap<i64, Tombstone>,
}

/// A deleted row, kept for change tracking.
#[derive(Debug, Clone, PartialEq)]
pub struct Tombstone {
    pub id: Uuid,
    pub deleted_on: chrono::DateTime<chrono::Utc>,
}

/// A row taken out of the table: the index no longer holds it (`unindex` runs first), so it is the one copy.
fn unshared(row: Arc<Row>) -> Row {
    Arc::unwrap_or_clone(row)
}

fn row_version(row: &Row) -> Option<i64> {
    match row.get("versionnumber") {
        Some(Value::Int(v)) => Some(*v),
        _ => None,
    }
}

impl TableRows {
    pub fn get(&self, id: &Uuid) -> Option<&Row> {
        self.rows.get(id).map(|row| &**row)
    }

    /// The rows in the table's own order, by id.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Uuid, &Row)> {
        self.rows.iter().map(|(id, row)| (id, &**row))
    }

    /// The rows, by id.
    pub fn values(&self) -> impl Iterator<Item = &Row> {
        self.rows.values().map(|row| &**row)
    }

    /// The rows whose ids are in `ids`, by id.
    pub fn range(&self, ids: (Bound<Uuid>, Bound<Uuid>)) -> impl DoubleEndedIterator<Item = (&Uuid, &Row)> {
        self.rows.range(ids).map(|(id, row)| (id, &**row))
    }

    /// Whether every row is in the version index (rows written before versions were kept, which the Web API never
    /// writes, are not).
    pub fn all_versioned(&self) -> bool {
        self.by_version.len() == self.rows.len()
    }

    /// The rows in the order they were last written, each with its id, from the version index.
    pub fn versions(&self, versions: (Bound<i64>, Bound<i64>)) -> impl DoubleEndedIterator<Item = (&i64, Uuid, &Row)> {
        self.by_version.range(versions).map(|(version, (id, row))| (version, *id, &**row))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The values of one alternate key in a row, or `None` when a part is null (such rows are not keyed).
    pub fn key_values(row: &Row, attributes: &[String]) -> Option<Vec<String>> {
        attributes.iter().map(|a| row.get(a.as_str()).map(Value::key_text)).collect()
    }

    pub fn find_by_key(&self, key_name: &str, values: &[String]) -> Option<Uuid> {
        self.key_index.get(key_name)?.get(values).copied()
    }

    /// The row that already holds `row`'s value for some key, other than `id` itself.
    pub fn key_conflict<'t>(&self, table: &'t Table, id: Uuid, row: &Row) -> Option<&'t crate::schema::AlternateKey> {
        table.keys.iter().find(|key| {
            Self::key_values(row, &key.attributes)
                .and_then(|values| self.find_by_key(&key.logical_name, &values))
                .is_some_and(|other| other != id)
        })
    }

    /// Puts a row; the row it replaces.
    pub fn put(&mut self, table: &Table, id: Uuid, row: Row) -> Option<Row> {
        self.unindex(table, id);
        for key in &table.keys {
            if let Some(values) = Self::key_values(&row, &key.attributes) {
                self.key_index.entry(key.logical_name.clone()).or_default().insert(values, id);
            }
        }
        let row = Arc::new(row);
        if let Some(version) = row_version(&row) {
            self.by_version.insert(version, (id, Arc::clone(&row)));
        }
        self.rows.insert(id, row).map(unshared)
    }

    pub fn remove(&mut self, table: &Table, id: Uuid) -> Option<Row> {
        self.unindex(table, id);
        self.rows.remove(&id).map(unshared)
    }

    fn unindex(&mut self, table: &Table, id: Uuid) {
        let Some(old) = self.rows.get(&id) else {
            return;
        };
        if let Some(version) = row_version(old) {
            self.by_version.remove(&version);
        }
        for key in &table.keys {
            if let (Some(values), Some(index)) =
                (Self::key_values(old, &key.attributes), self.key_index.get_mut(&key.logical_name))
            {
                index.remove(&values);
            }
        }
    }

    /// Drops the index of a key that was deleted.
    pub fn forget_key(&mut self, key_name: &str) {
        self.key_index.remove(key_name);
    }

    /// Builds a new key's index. Fails, naming the values, if two rows already share them.
    pub fn index_key(&mut self, key: &crate::schema::AlternateKey) -> Result<(), Vec<String>> {
        let mut index = HashMap::new();
        for (id, row) in &self.rows {
            if let Some(values) = Self::key_values(row, &key.attributes)
                && index.insert(values.clone(), *id).is_some()
            {
                return Err(values);
            }
        }
        self.key_index.insert(key.logical_name.clone(), index);
        Ok(())
    }
}

/// Everything the environment holds.
#[derive(Debug, Default)]
pub struct Data {
    pub schema: Schema,
    pub tables: HashMap<String, TableRows>,
    /// The last row version handed out; every write takes the next one.
    pub version: i64,
    /// Before-images of the rows changed inside [`Data::atomically`], to put back if it fails.
    undo: Option<Vec<(String, Uuid, Option<Row>)>>,
    /// Whether a state file keeps the changes: a row written is serialized for it only then.
    journaled: bool,
}

impl Data {
    fn new(schema: Schema, journaled: bool) -> Self {
        let tables = schema.tables().map(|t| (t.logical_name.clone(), TableRows::default())).collect();
        Data { schema, tables, version: 0, undo: None, journaled }
    }

    /// An empty environment whose every change is journaled, for tests that count the changes.
    #[cfg(test)]
    pub(crate) fn journaled() -> Data {
        Data { journaled: true, ..Data::default() }
    }

    /// Runs `f` as one unit: if it fails, every row it changed is put back and its journal entries are
    /// dropped, as a Dataverse transaction rolls back. Units do not nest; schema changes are not undone.
    pub fn atomically<T, E>(
        &mut self,
        journal: &mut Vec<Change>,
        f: impl FnOnce(&mut Data, &mut Vec<Change>) -> Result<T, E>,
    ) -> Result<T, E> {
        let journal_start = journal.len();
        let version = self.version;
        let outer = self.undo.replace(Vec::new());
        debug_assert!(outer.is_none(), "atomic units do not nest");
        let result = f(self, journal);
        let undo = self.undo.take().unwrap_or_default();
        if result.is_err() {
            for (table, id, before) in undo.into_iter().rev() {
                let definition = self.schema.table(&table).expect("changed tables exist");
                let rows = self.tables.entry(table).or_default();
                match before {
                    Some(row) => {
                        rows.put(definition, id, row);
                    }
                    None => {
                        rows.remove(definition, id);
                    }
                }
            }
            journal.truncate(journal_start);
            for rows in self.tables.values_mut() {
                rows.deleted.split_off(&(version + 1));
            }
            self.version = version;
        }
        result
    }

    fn remember(&mut self, table: &str, id: Uuid) {
        if let Some(undo) = self.undo.as_mut() {
            let before = self.tables.get(table).and_then(|t| t.get(&id)).cloned();
            undo.push((table.to_string(), id, before));
        }
    }

    pub fn next_version(&mut self) -> i64 {
        self.version += 1;
        self.version
    }

    pub fn rows(&self, table: &str) -> &TableRows {
        self.tables.get(table).expect("every table in the schema has rows")
    }

    /// Puts a row and records the change for the journal. A row of an activity table also puts its
    /// `activitypointer` row, in the same unit (see [`crate::schema::activities`]).
    ///
    /// The row goes to the journal as JSON, serialized here rather than cloned for the journal's writer, and
    /// the row it replaces becomes the undo record as it is: a bulk write of a thousand rows copies none.
    pub fn put_row(&mut self, changes: &mut Vec<Change>, table: &str, id: Uuid, row: Row) {
        let definition = self.schema.table(table).expect("table exists");
        let pointer = definition
            .is_activity
            .then(|| self.schema.table(activities::POINTER))
            .flatten()
            .map(|pointer| activities::pointer_row(pointer, definition, &row));
        if self.journaled {
            let json = serde_json::to_string(&row).expect("rows serialize");
            changes.push(Change::Row { table: table.to_string(), id, json: Some(json) });
        }
        let before = self.tables.entry(table.to_string()).or_default().put(definition, id, row);
        if let Some(undo) = self.undo.as_mut() {
            undo.push((table.to_string(), id, before));
        }
        if let Some(pointer) = pointer {
            self.put_row(changes, activities::POINTER, id, pointer);
        }
    }

    /// Removes a row, and keeps a tombstone with a new version for change tracking. What goes with the row
    /// goes too, in the same unit, each with its own tombstone: an activity's `activitypointer` row, and the
    /// rows whose lookup to it cascades the delete (the activities regarding a contact).
    pub fn remove_row(&mut self, changes: &mut Vec<Change>, table: &str, id: Uuid) -> Option<Row> {
        self.remember(table, id);
        let version = self.next_version();
        let tombstone = Tombstone { id, deleted_on: chrono::Utc::now() };
        let definition = self.schema.table(table).cloned().expect("table exists");
        changes.push(Change::Row { table: table.to_string(), id, json: None });
        changes.push(Change::Tombstone { table: table.to_string(), version, tombstone: tombstone.clone() });
        let rows = self.tables.get_mut(table)?;
        rows.deleted.insert(version, tombstone);
        let removed = rows.remove(&definition, id)?;
        if definition.is_activity && self.tables.get(activities::POINTER).is_some_and(|rows| rows.get(&id).is_some()) {
            self.remove_row(changes, activities::POINTER, id);
        }
        for (referencing, lookup) in self.schema.delete_cascades(table) {
            let children: Vec<Uuid> = self
                .rows(&referencing)
                .rows
                .iter()
                .filter(|(_, row)| {
                    matches!(row.get(lookup.as_str()), Some(Value::Lookup { id: to, table: target }) if *to == id && target == table)
                })
                .map(|(child, _)| *child)
                .collect();
            for child in children {
                // A child a cascade before this one removed is not removed twice.
                if self.rows(&referencing).get(&child).is_some() {
                    self.remove_row(changes, &referencing, child);
                }
            }
        }
        Some(removed)
    }

    /// Adds or replaces a table definition (a custom table, or a table with a new column or key).
    /// A new table gets its standard system views (`savedquery` rows), as Dataverse creates them with it.
    pub fn put_table(&mut self, changes: &mut Vec<Change>, table: Table) {
        changes.push(Change::Table(Box::new(table.clone())));
        self.tables.entry(table.logical_name.clone()).or_default();
        let created = self.schema.table(&table.logical_name).is_none();
        let views = created.then(|| table.clone());
        self.schema.insert(table);
        if let Some(table) = views {
            crate::schema::views::write_views(self, changes, &table);
        }
    }

    /// Removes a table with its rows and tombstones, for good: a table created later with the same name
    /// starts empty.
    pub fn drop_table(&mut self, changes: &mut Vec<Change>, logical_name: &str) {
        crate::schema::views::remove_views(self, changes, logical_name);
        if self.schema.table(logical_name).is_some_and(|t| t.is_activity) {
            // Its rows leave activitypointer as a delete of each would: change tracking sees them go.
            let mirrored: Vec<Uuid> = self
                .rows(activities::POINTER)
                .rows
                .iter()
                .filter(|(_, row)| activities::activity_of(row) == Some(logical_name))
                .map(|(id, _)| *id)
                .collect();
            for id in mirrored {
                self.remove_row(changes, activities::POINTER, id);
            }
        }
        changes.push(Change::DropTable(logical_name.to_string()));
        self.tables.remove(logical_name);
        self.schema.remove(logical_name);
    }

    /// Removes a column's values from every row of a table, as deleting the column does.
    pub fn drop_column(&mut self, changes: &mut Vec<Change>, table: &str, column: &str) {
        let holding: Vec<Uuid> = self
            .tables
            .get(table)
            .map(|rows| rows.rows.iter().filter(|(_, r)| r.contains_key(column)).map(|(id, _)| *id).collect())
            .unwrap_or_default();
        for id in holding {
            if let Some(mut row) = self.tables.get(table).and_then(|rows| rows.get(&id)).cloned() {
                row.remove(column);
                self.put_row(changes, table, id, row);
            }
        }
    }
}

/// One change for the journal.
#[derive(Debug, Clone)]
pub enum Change {
    /// A row's new version as JSON, or `None` for a delete.
    Row {
        table: String,
        id: Uuid,
        json: Option<String>,
    },
    Tombstone {
        table: String,
        version: i64,
        tombstone: Tombstone,
    },
    Table(Box<Table>),
    /// A table deleted, with everything it held.
    DropTable(String),
    Setting {
        key: String,
        value: String,
    },
}

struct Batch {
    changes: Vec<Change>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The writer side of the SQLite journal.
#[derive(Clone)]
struct Journal {
    tx: mpsc::UnboundedSender<Batch>,
}

pub struct Store {
    data: RwLock<Data>,
    journal: Option<Journal>,
    settings: RwLock<HashMap<String, String>>,
}

/// A write that failed to reach the journal: the change is in memory but not on disk.
#[derive(Debug, thiserror::Error)]
#[error("the state file could not be written: {0}")]
pub struct JournalError(String);

impl Store {
    /// An environment that lives in memory only.
    pub fn in_memory() -> Store {
        Store {
            data: RwLock::new(Data::new(Schema::new(builtin_tables()), false)),
            journal: None,
            settings: RwLock::default(),
        }
    }

    /// Opens (or creates) a state file and loads everything in it.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        // Rows are keyed by random GUIDs, so writes land all over the file: a page cache that holds the
        // B-tree's inner pages, memory-mapped reads and rarer checkpoints keep a write to one page or two.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("cache_size", "-262144")
            .pragma("mmap_size", "1073741824")
            .pragma("wal_autocheckpoint", "16384")
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the state file {}", path.display()))?;
        for statement in [
            // An append-only log of row versions (a null `data` is a delete): appends touch a few pages at the
            // end of the file, where updating rows in place under random GUID keys would touch one page each.
            "CREATE TABLE IF NOT EXISTS row_log (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, id TEXT NOT NULL, data TEXT)",
            "CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, data TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tombstones (version INTEGER PRIMARY KEY, tbl TEXT NOT NULL, id TEXT NOT NULL, deleted_on TEXT NOT NULL)",
        ] {
            sqlx::query(statement).execute(&pool).await.context("preparing the state file")?;
        }
        let mut schema = Schema::new(builtin_tables());
        let stored: Vec<(String, String)> = sqlx::query_as("SELECT name, data FROM tables").fetch_all(&pool).await?;
        for (name, json) in stored {
            let table: Table =
                serde_json::from_str(&json).with_context(|| format!("reading the definition of table {name}"))?;
            schema.insert(table);
        }
        let mut data = Data::new(schema, true);
        let mut entries = 0usize;
        {
            let mut log = sqlx::query("SELECT tbl, id, data FROM row_log ORDER BY seq").fetch(&pool);
            while let Some(r) = log.try_next().await? {
                entries += 1;
                let (table, id, json): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
                let id: Uuid = id.parse().with_context(|| format!("reading the row log: '{id}' is not a GUID"))?;
                let Some(definition) = data.schema.table(&table).cloned() else { continue };
                let rows = data.tables.entry(table.clone()).or_default();
                match json {
                    Some(json) => {
                        let row: Row =
                            serde_json::from_str(&json).with_context(|| format!("reading row {id} of {table}"))?;
                        if let Some(Value::Int(v)) = row.get("versionnumber") {
                            data.version = data.version.max(*v);
                        }
                        rows.put(&definition, id, row);
                    }
                    None => {
                        rows.remove(&definition, id);
                    }
                }
            }
        }
        let tombstones: Vec<(i64, String, String, String)> =
            sqlx::query_as("SELECT version, tbl, id, deleted_on FROM tombstones").fetch_all(&pool).await?;
        for (version, table, id, deleted_on) in tombstones {
            let (Ok(id), Ok(deleted_on)) = (id.parse(), chrono::DateTime::parse_from_rfc3339(&deleted_on)) else {
                continue;
            };
            data.version = data.version.max(version);
            if let Some(rows) = data.tables.get_mut(&table) {
                rows.deleted.insert(version, Tombstone { id, deleted_on: deleted_on.to_utc() });
            }
        }
        let live: usize = data.tables.values().map(TableRows::len).sum();
        if entries > 2 * live + 10_000 {
            compact(&pool, &data).await.context("compacting the state file")?;
        }
        let settings: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM settings").fetch_all(&pool).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_journal(pool, rx));
        Ok(Store {
            data: RwLock::new(data),
            journal: Some(Journal { tx }),
            settings: RwLock::new(settings.into_iter().collect()),
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with exclusive access to the data, then waits until its changes are in the journal.
    /// `f` must check everything before it changes anything: an error leaves the data as it was.
    pub async fn write<T, E>(&self, f: impl FnOnce(&mut Data, &mut Vec<Change>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<JournalError>,
    {
        let (result, pending) = {
            let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
            let mut changes = Vec::new();
            let result = f(&mut data, &mut changes);
            // Queued while the lock is held, so the journal sees changes in the order they were made.
            (result, self.enqueue(changes))
        };
        if let Some(done) = pending {
            done.await.map_err(|_| JournalError("the journal writer stopped".into()))?.map_err(JournalError)?;
        }
        result
    }

    fn enqueue(&self, changes: Vec<Change>) -> Option<oneshot::Receiver<Result<(), String>>> {
        let journal = self.journal.as_ref()?;
        if changes.is_empty() {
            return None;
        }
        let (done, wait) = oneshot::channel();
        journal.tx.send(Batch { changes, done }).ok()?;
        Some(wait)
    }

    pub fn setting(&self, key: &str) -> Option<String> {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    /// Keeps a setting (a generated credential, an id) so the environment stays the same across restarts.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), JournalError> {
        self.settings.write().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), value.to_string());
        self.write(|_, changes| {
            changes.push(Change::Setting { key: key.to_string(), value: value.to_string() });
            Ok::<_, JournalError>(())
        })
        .await
    }

    /// Keeps a setting without waiting for the state file, for changes made outside a request (credential
    /// rotation through the in-process handle, which is not async). It reaches the file in order with
    /// everything else; [`Store::flush`] waits until it has.
    pub fn keep_setting(&self, key: &str, value: &str) {
        self.settings.write().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), value.to_string());
        // Nobody waits for this batch: the journal's answer goes nowhere, and a failure is logged by the writer.
        drop(self.enqueue(vec![Change::Setting { key: key.to_string(), value: value.to_string() }]));
    }

    /// Waits until every change queued so far is in the state file (at once without one).
    pub async fn flush(&self) -> Result<(), JournalError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let (done, wait) = oneshot::channel();
        // An empty batch: the writer answers it once everything queued before it is committed.
        if journal.tx.send(Batch { changes: Vec::new(), done }).is_err() {
            return Err(JournalError("the journal writer stopped".into()));
        }
        wait.await.map_err(|_| JournalError("the journal writer stopped".into()))?.map_err(JournalError)
    }
}

async fn write_journal(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<Batch>) {
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        while batches.len() < 1024 {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let result = commit(&pool, &batches).await.map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "writing the state file failed");
        }
        for batch in batches {
            let _ = batch.done.send(result.clone());
        }
    }
}

/// Writes a group of batches in one transaction. Only the last state of each row matters, so rows are
/// coalesced first and then written with multi-row statements: one round trip per few hundred rows.
async fn commit(pool: &SqlitePool, batches: &[Batch]) -> anyhow::Result<()> {
    let mut last: HashMap<(&str, Uuid), Option<&str>> = HashMap::new();
    let mut tables = Vec::new();
    let mut settings = Vec::new();
    let mut tombstones = Vec::new();
    let mut dropped = Vec::new();
    for change in batches.iter().flat_map(|b| &b.changes) {
        match change {
            Change::Row { table, id, json } => {
                last.insert((table.as_str(), *id), json.as_deref());
            }
            Change::Tombstone { table, version, tombstone } => tombstones.push((table, version, tombstone)),
            Change::Table(table) => tables.push(table),
            Change::DropTable(name) => {
                // Whatever the same batches wrote to the table before it was dropped goes with it.
                last.retain(|(t, _), _| *t != name.as_str());
                tables.retain(|t| &t.logical_name != name);
                tombstones.retain(|(t, _, _)| *t != name);
                dropped.push(name);
            }
            Change::Setting { key, value } => settings.push((key, value)),
        }
    }
    let mut tx = pool.begin().await?;
    for name in dropped {
        for statement in [
            "DELETE FROM tables WHERE name = ?",
            "DELETE FROM row_log WHERE tbl = ?",
            "DELETE FROM tombstones WHERE tbl = ?",
        ] {
            sqlx::query(statement).bind(name).execute(&mut *tx).await?;
        }
    }
    for table in tables {
        sqlx::query(
            "INSERT INTO tables (name, data) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET data = excluded.data",
        )
        .bind(&table.logical_name)
        .bind(serde_json::to_string(table)?)
        .execute(&mut *tx)
        .await?;
    }
    for (key, value) in settings {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    for (table, version, tombstone) in tombstones {
        sqlx::query("INSERT OR REPLACE INTO tombstones (version, tbl, id, deleted_on) VALUES (?, ?, ?, ?)")
            .bind(version)
            .bind(table)
            .bind(tombstone.id.to_string())
            .bind(tombstone.deleted_on.to_rfc3339())
            .execute(&mut *tx)
            .await?;
    }
    let entries: Vec<(&str, String, Option<String>)> =
        last.into_iter().map(|((table, id), json)| (table, id.to_string(), json.map(str::to_string))).collect();
    append(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(())
}

/// Appends row versions to the log, a few hundred to a statement.
async fn append(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    entries: &[(&str, String, Option<String>)],
) -> anyhow::Result<()> {
    for chunk in entries.chunks(500) {
        let mut insert = sqlx::QueryBuilder::new("INSERT INTO row_log (tbl, id, data) ");
        insert.push_values(chunk, |mut b, (table, id, json)| {
            b.push_bind(*table).push_bind(id.as_str()).push_bind(json.as_deref());
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Rewrites the log as one entry per live row, when old versions outweigh the rows.
async fn compact(pool: &SqlitePool, data: &Data) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM row_log").execute(&mut *tx).await?;
    let mut entries = Vec::new();
    for (table, rows) in &data.tables {
        for (id, row) in &rows.rows {
            entries.push((table.as_str(), id.to_string(), Some(serde_json::to_string(row)?)));
            if entries.len() == 10_000 {
                append(&mut tx, &entries).await?;
                entries.clear();
            }
        }
    }
    append(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::activities::{POINTER, TYPE_CODE};

    fn data() -> Data {
        Data::new(Schema::new(builtin_tables()), true)
    }

    fn task(data: &mut Data, changes: &mut Vec<Change>, subject: &str, regarding: Option<Uuid>) -> Uuid {
        let id = Uuid::new_v4();
        let mut row = Row::from([
            ("activityid".into(), Value::Guid(id)),
            ("subject".into(), Value::Text(subject.into())),
            (TYPE_CODE.into(), Value::Text("task".into())),
        ]);
        if let Some(contact) = regarding {
            row.insert("regardingobjectid".into(), Value::Lookup { id: contact, table: "contact".into() });
        }
        row.insert("versionnumber".into(), Value::Int(data.next_version()));
        data.put_row(changes, "task", id, row);
        id
    }

    #[test]
    fn an_activity_row_and_its_pointer_row_are_written_and_rolled_back_together() {
        let (mut data, mut changes) = (data(), Vec::new());
        let kept = task(&mut data, &mut changes, "Kept", None);
        let pointer = data.rows(POINTER).get(&kept).expect("the pointer row is there");
        assert_eq!(pointer.get("subject"), Some(&Value::Text("Kept".into())));
        assert_eq!(pointer.get("versionnumber"), data.rows("task").get(&kept).unwrap().get("versionnumber"));
        let failed: Result<(), ()> = data.atomically(&mut changes, |data, changes| {
            task(data, changes, "Rolled back", None);
            Err(())
        });
        assert!(failed.is_err());
        assert_eq!((data.rows("task").len(), data.rows(POINTER).len()), (1, 1));
        data.remove_row(&mut changes, "task", kept);
        assert!(data.rows(POINTER).is_empty());
        assert_eq!(data.rows(POINTER).deleted.len(), 1, "change tracking sees the pointer row go");
    }

    #[test]
    fn deleting_a_contact_deletes_the_activities_regarding_it() {
        let (mut data, mut changes) = (data(), Vec::new());
        let contact = Uuid::new_v4();
        let row = Row::from([("contactid".into(), Value::Guid(contact))]);
        data.put_row(&mut changes, "contact", contact, row);
        task(&mut data, &mut changes, "About the contact", Some(contact));
        let other = task(&mut data, &mut changes, "About nobody", None);
        data.remove_row(&mut changes, "contact", contact);
        assert_eq!(data.rows("task").rows.keys().collect::<Vec<_>>(), [&other]);
        assert_eq!(data.rows(POINTER).rows.keys().collect::<Vec<_>>(), [&other]);
    }
}
