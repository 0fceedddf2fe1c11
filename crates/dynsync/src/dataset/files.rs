//! Parquet files: the embedded default destination of a dataset, in a folder of the data directory
//! (`<data dir>/datasets`), or in object storage (Azure Blob Storage / ADLS Gen2, S3) through `object_store`.
//!
//! Layout, under the location:
//! ```text
//! <dataset>/manifest.json                  the generations, each with its schema and its files, listed per load
//! <dataset>/gen-<n>/part-<hash>.parquet    one file per write: one row group of a page of rows
//! ```
//! Every file holds the generation's mapped columns as they were when it was written (a later file may have more:
//! read with `union_by_name`), then dynsync's columns `_dynsync_id` (the Dynamics record's id, a UUID: the mapped
//! columns need not include the primary key, and readers need it to keep the newest row of each id),
//! `_dynsync_op`, `_dynsync_version`, `_dynsync_deleted` and `_dynsync_synced_at`. Files are append-only: a
//! reader keeps, per id, the row with the highest version (a delete wins over an older version).
//!
//! Idempotence: a file's name is a hash of the generation and of its rows' ids, operations, versions and values,
//! so the same page written again (a crash before its acknowledgement) replaces the same file, and the manifest
//! lists it once. The file is put first (a local put writes a temporary file and renames it; an object store's
//! put is atomic), then the manifest: a crash between the two leaves an unlisted file that the rewrite lists.
//!
//! Memory: each page of a batch is encoded in memory as one file (5,000 rows is a few MB) and put; nothing is kept
//! across batches but the manifest, read and written once a batch. One writer per dataset at a time (a flow has
//! one owner); within a process, manifest updates are serialised.

use super::{
    Batch, ColumnKind, DatasetColumn, DatasetError, DatasetName, DatasetRow, DatasetSchema, Latest, Operation, Value,
};
use super::{DELETED_COLUMN, OPERATION_COLUMN, SYNCED_AT_COLUMN, VERSION_COLUMN};
use crate::secrets::Secret;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, FixedLenByteArrayType};
use parquet::data_type::{Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::record::Field;
use parquet::schema::types::{ColumnPath, Type as SchemaType, TypePtr};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// The column of a file that holds the Dynamics record's id.
pub const ID_COLUMN: &str = "_dynsync_id";

/// The most rows [`FileDestination::rows`] returns: it is a quick look, and it holds at most this many rows (plus
/// one file being read) in memory however large the generation.
pub const MAX_ROWS: usize = 1_000;

/// The version of the manifest's layout, written in it.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where a [`FileDestination`] keeps its datasets.
#[derive(Debug, Clone)]
pub enum FileLocation {
    /// A folder on this machine (created if missing).
    Folder(PathBuf),
    /// A container of Azure Blob Storage or ADLS Gen2 (or Azurite).
    Azure(AzureLocation),
    /// An S3 bucket (or an S3-compatible store).
    S3(S3Location),
}

/// A container of Azure Blob Storage / ADLS Gen2. Without an access key, credentials come from the environment
/// as `object_store` finds them (`AZURE_*` variables, workload or managed identity, the Azure CLI).
#[derive(Debug, Clone)]
pub struct AzureLocation {
    pub account: String,
    pub container: String,
    /// A folder inside the container (may be empty).
    pub prefix: String,
    pub access_key: Option<Secret>,
    /// The blob service's address when it is not `https://<account>.blob.core.windows.net`, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1` (plain HTTP is then allowed).
    pub endpoint: Option<String>,
}

/// An S3 bucket. Without keys, credentials come from the environment (`AWS_*` variables, instance profile).
#[derive(Debug, Clone)]
pub struct S3Location {
    pub bucket: String,
    pub region: String,
    /// A folder inside the bucket (may be empty).
    pub prefix: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// An S3-compatible service's address (plain HTTP is then allowed).
    pub endpoint: Option<String>,
}

impl FileLocation {
    /// Where the files are, for messages: never a secret.
    pub fn describe(&self) -> String {
        match self {
            FileLocation::Folder(path) => path.display().to_string(),
            FileLocation::Azure(a) => {
                let at = a.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
                format!("az://{}/{}/{}{at}", a.account, a.container, a.prefix.trim_matches('/'))
            }
            FileLocation::S3(s) => {
                let at = s.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
                format!("s3://{}/{}{at}", s.bucket, s.prefix.trim_matches('/'))
            }
        }
    }
}

/// The manifest of a dataset (`<dataset>/manifest.json`): what readers need to find its files without listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetManifest {
    pub format: u32,
    pub dataset: DatasetName,
    pub generations: Vec<GenerationFiles>,
}

/// One generation of a dataset: its schema (the widest written to it: columns are only ever added within a
/// generation) and its files, per load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationFiles {
    pub generation: u32,
    pub schema: DatasetSchema,
    pub loads: Vec<LoadFiles>,
}

/// The files written for one load (a full load or an incremental one), identified by its start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadFiles {
    pub load: DateTime<Utc>,
    pub files: Vec<DataFile>,
}

/// One Parquet file of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataFile {
    /// Relative to the dataset's folder: `gen-<n>/part-<hash>.parquet`.
    pub path: String,
    pub rows: u64,
    /// How many of the generation's mapped columns the file has (the first ones, in order).
    pub columns: usize,
    /// The lowest and highest Dataverse version among its rows (deletes carry none).
    pub min_version: Option<i64>,
    pub max_version: Option<i64>,
    pub written_at: DateTime<Utc>,
}

impl DatasetManifest {
    fn new(dataset: &DatasetName) -> DatasetManifest {
        DatasetManifest { format: MANIFEST_FORMAT, dataset: dataset.clone(), generations: Vec::new() }
    }

    pub fn generation(&self, generation: u32) -> Option<&GenerationFiles> {
        self.generations.iter().find(|g| g.generation == generation)
    }

    fn generation_mut(&mut self, generation: u32) -> Option<&mut GenerationFiles> {
        self.generations.iter_mut().find(|g| g.generation == generation)
    }

    /// Adds the page's generation if it is new and widens its schema by the page's columns; refused when a column
    /// of the page changed its type.
    fn widen(&mut self, page: &Batch<'_>) -> Result<(), String> {
        let position = match self.generations.iter().position(|g| g.generation == page.generation) {
            Some(p) => p,
            None => {
                let added =
                    GenerationFiles { generation: page.generation, schema: page.schema.clone(), loads: Vec::new() };
                let p = self.generations.partition_point(|g| g.generation < page.generation);
                self.generations.insert(p, added);
                p
            }
        };
        let generation = &mut self.generations[position];
        generation.schema = widest(&generation.schema, page.schema).map_err(|detail| {
            format!("generation {}: {detail}; a changed column starts a new generation", page.generation)
        })?;
        Ok(())
    }
}

impl GenerationFiles {
    /// Lists the page's file, at `relative`, under its load: once, however often it was written.
    fn list(&mut self, page: &Batch<'_>, relative: String) {
        let versions = || page.rows.iter().filter_map(|r| r.version);
        let file = DataFile {
            path: relative,
            rows: page.rows.len() as u64,
            columns: page.schema.columns.len(),
            min_version: versions().min(),
            max_version: versions().max(),
            written_at: Utc::now(),
        };
        for load in &mut self.loads {
            load.files.retain(|f| f.path != file.path);
        }
        self.loads.retain(|l| !l.files.is_empty() || l.load == page.load);
        match self.loads.iter_mut().find(|l| l.load == page.load) {
            Some(load) => load.files.push(file),
            None => self.loads.push(LoadFiles { load: page.load, files: vec![file] }),
        }
    }

    pub fn files(&self) -> impl Iterator<Item = &DataFile> {
        self.loads.iter().flat_map(|l| l.files.iter())
    }
}

/// Parquet files of datasets, in a folder or in object storage.
pub struct FileDestination {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    location: String,
    manifest_updates: tokio::sync::Mutex<()>,
}

impl fmt::Debug for FileDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDestination").field("location", &self.location).finish_non_exhaustive()
    }
}

impl FileDestination {
    /// The default: `<data dir>/datasets`.
    pub fn in_data_dir(data_dir: &Path) -> Result<FileDestination, DatasetError> {
        FileDestination::open(FileLocation::Folder(data_dir.join("datasets")))
    }

    /// Files at `location`. Nothing is contacted yet: a wrong key or a missing container shows at the first write.
    pub fn open(location: FileLocation) -> Result<FileDestination, DatasetError> {
        let described = location.describe();
        let failed =
            |detail: String| DatasetError::Files { dataset: "(any)".into(), location: described.clone(), detail };
        let (store, prefix): (Arc<dyn ObjectStore>, &str) = match &location {
            FileLocation::Folder(path) => {
                std::fs::create_dir_all(path).map_err(|e| {
                    failed(format!("the folder cannot be created ({e}): check its parent's permissions"))
                })?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| failed(format!("the folder cannot be opened: {e}")))?;
                (Arc::new(store), "")
            }
            FileLocation::Azure(a) => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_account(&a.account)
                    .with_container_name(&a.container);
                if let Some(key) = &a.access_key {
                    builder = builder.with_access_key(key.expose());
                }
                if let Some(endpoint) = &a.endpoint {
                    builder = builder.with_endpoint(endpoint.clone()).with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder
                    .build()
                    .map_err(|e| failed(format!("the Azure storage settings are not usable: {}", redacted(&e, a))))?;
                (Arc::new(store), a.prefix.as_str())
            }
            FileLocation::S3(s) => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&s.bucket).with_region(&s.region);
                if let Some(id) = &s.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(key) = &s.secret_access_key {
                    builder = builder.with_secret_access_key(key.expose());
                }
                if let Some(endpoint) = &s.endpoint {
                    builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
                }
                let store = builder.build().map_err(|e| failed(format!("the S3 settings are not usable: {e}")))?;
                (Arc::new(store), s.prefix.as_str())
            }
        };
        Ok(FileDestination {
            store,
            root: ObjectPath::from(prefix.trim_matches('/')),
            location: described,
            manifest_updates: tokio::sync::Mutex::new(()),
        })
    }

    /// Where the files are, for messages (no secret).
    pub fn describe(&self) -> &str {
        &self.location
    }

    fn path(&self, dataset: &DatasetName, relative: &str) -> ObjectPath {
        let mut path = self.root.clone();
        for part in std::iter::once(dataset.as_str()).chain(relative.split('/')) {
            path = path.join(part);
        }
        path
    }

    fn error(&self, dataset: &DatasetName, detail: impl Into<String>) -> DatasetError {
        DatasetError::Files { dataset: dataset.to_string(), location: self.location.clone(), detail: detail.into() }
    }

    /// The dataset's manifest, `None` before its first write.
    pub async fn manifest(&self, dataset: &DatasetName) -> Result<Option<DatasetManifest>, DatasetError> {
        let path = self.path(dataset, "manifest.json");
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        }
        .map_err(|e| self.error(dataset, format!("its manifest {path} cannot be read: {e}")))?;
        let manifest = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(
                dataset,
                format!("its manifest {path} is not a dynsync manifest ({e}): restore it or move the dataset aside"),
            )
        })?;
        Ok(Some(manifest))
    }

    /// Writes a batch's pages of one dataset, each page as its file, then the manifest once, listing them all:
    /// read and written again for every page, a manifest that lists a few hundred files would cost as much as the
    /// pages. A page that does not fit its generation's columns refuses the write before any file is put. The same
    /// rows written again replace the same file and stay listed once; an empty page only records its generation
    /// and schema.
    pub async fn write(&self, pages: &[Batch<'_>]) -> Result<(), DatasetError> {
        let Some(dataset) = pages.first().map(|page| page.dataset) else { return Ok(()) };
        assert!(pages.iter().all(|page| page.dataset == dataset), "the pages of one write are of one dataset");
        for page in pages {
            check_schema(page.schema).map_err(|detail| self.error(dataset, detail))?;
        }
        let _serialised = self.manifest_updates.lock().await;
        let mut manifest = self.manifest(dataset).await?.unwrap_or_else(|| DatasetManifest::new(dataset));
        for page in pages {
            manifest.widen(page).map_err(|detail| self.error(dataset, detail))?;
        }
        for page in pages.iter().filter(|page| !page.rows.is_empty()) {
            let relative = format!("gen-{}/{}", page.generation, file_name(page.generation, page.rows));
            let encoded = encode(page.schema, page.rows).map_err(|detail| self.error(dataset, detail))?;
            let path = self.path(dataset, &relative);
            self.store
                .put(&path, PutPayload::from(encoded))
                .await
                .map_err(|e| self.error(dataset, format!("the file {path} cannot be written: {e}")))?;
            manifest
                .generation_mut(page.generation)
                .expect("each page's generation was added above")
                .list(page, relative);
        }
        let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
        let path = self.path(dataset, "manifest.json");
        self.store
            .put(&path, PutPayload::from(text))
            .await
            .map_err(|e| self.error(dataset, format!("its manifest {path} cannot be written: {e}")))?;
        Ok(())
    }

    /// Up to `limit` rows of a generation (at most [`MAX_ROWS`]), the current row of each id, ordered by id:
    /// every file the manifest lists is read in turn, keeping only the lowest ids seen so far, so that memory is
    /// bounded by the limit and one file.
    pub async fn rows(
        &self,
        dataset: &DatasetName,
        generation: u32,
        limit: usize,
    ) -> Result<(DatasetSchema, Vec<DatasetRow>), DatasetError> {
        let limit = limit.min(MAX_ROWS);
        let manifest = self.manifest(dataset).await?;
        let Some(files) = manifest.as_ref().and_then(|m| m.generation(generation)) else {
            return Err(DatasetError::NoGeneration { dataset: dataset.to_string(), generation });
        };
        let mut kept = LowestIds::new(limit);
        for file in files.files() {
            let path = self.path(dataset, &file.path);
            let bytes = match self.store.get(&path).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            }
            .map_err(|e| self.error(dataset, format!("the file {path} listed in its manifest cannot be read: {e}")))?;
            decode(&files.schema, bytes, &mut |row| kept.offer(row))
                .map_err(|detail| self.error(dataset, format!("the file {path}: {detail}")))?;
        }
        Ok((files.schema.clone(), kept.into_rows()))
    }
}

impl FileDestination {
    /// The newest row of each id in a generation, without values (see [`super::Destination::latest`]): only
    /// dynsync's columns of each file are read. Memory grows with the number of ids (some 50 bytes each).
    pub async fn latest(&self, dataset: &DatasetName, generation: u32) -> Result<HashMap<Uuid, Latest>, DatasetError> {
        let manifest = self.manifest(dataset).await?;
        let Some(files) = manifest.as_ref().and_then(|m| m.generation(generation)) else {
            return Err(DatasetError::NoGeneration { dataset: dataset.to_string(), generation });
        };
        let mut newest: HashMap<Uuid, DatasetRow> = HashMap::new();
        for file in files.files() {
            let path = self.path(dataset, &file.path);
            let bytes = match self.store.get(&path).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            }
            .map_err(|e| self.error(dataset, format!("the file {path} listed in its manifest cannot be read: {e}")))?;
            read_latest(bytes, &mut |row| match newest.get_mut(&row.id) {
                Some(kept) if !supersedes(&row, kept) => {}
                Some(kept) => *kept = row,
                None => {
                    newest.insert(row.id, row);
                }
            })
            .map_err(|detail| self.error(dataset, format!("the file {path}: {detail}")))?;
        }
        Ok(newest
            .into_iter()
            .map(|(id, row)| (id, Latest { version: row.version, deleted: row.deleted(), synced_at: row.synced_at }))
            .collect())
    }
}

fn redacted(error: &object_store::Error, location: &AzureLocation) -> String {
    let text = error.to_string();
    match &location.access_key {
        Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "***"),
        _ => text,
    }
}

/// The names a mapped column cannot take, and no name twice.
fn check_schema(schema: &DatasetSchema) -> Result<(), String> {
    let reserved = [ID_COLUMN, OPERATION_COLUMN, VERSION_COLUMN, DELETED_COLUMN, SYNCED_AT_COLUMN];
    for (i, column) in schema.columns.iter().enumerate() {
        if reserved.contains(&column.name.as_str()) {
            return Err(format!(
                "the mapped column {} has the name of a dynsync column: rename it in the mapping",
                column.name
            ));
        }
        if schema.columns[..i].iter().any(|c| c.name == column.name) {
            return Err(format!("the column {} is mapped twice: keep one", column.name));
        }
        if let ColumnKind::Decimal { scale } = column.kind
            && scale > 38
        {
            return Err(format!("the column {} has a scale of {scale}, over the 38 digits of a decimal", column.name));
        }
    }
    Ok(())
}

/// The wider of a generation's recorded schema and a batch's: one must extend the other.
fn widest(recorded: &DatasetSchema, batch: &DatasetSchema) -> Result<DatasetSchema, String> {
    let differing = recorded.columns.iter().zip(&batch.columns).find(|(kept, written)| kept != written);
    if let Some((kept, written)) = differing {
        return Err(format!(
            "the batch has the column {} ({:?}) where the generation has {} ({:?})",
            written.name, written.kind, kept.name, kept.kind
        ));
    }
    Ok(if batch.columns.len() > recorded.columns.len() { batch.clone() } else { recorded.clone() })
}

/// The file a batch becomes: `part-<hash>.parquet`, where the hash covers the generation and each row's id,
/// operation, version and values (trailing nulls dropped, so a row read before a column was added names the same
/// file) — not `synced_at`, which a rewrite changes.
pub fn file_name(generation: u32, rows: &[&DatasetRow]) -> String {
    let mut hash = Sha256::new();
    hash.update(generation.to_le_bytes());
    for row in rows {
        hash.update(row.id.as_bytes());
        hash.update(row.operation.as_str().as_bytes());
        match row.version {
            Some(v) => {
                hash.update([1u8]);
                hash.update(v.to_le_bytes());
            }
            None => hash.update([0u8]),
        }
        let significant = row.values.iter().rposition(|v| *v != Value::Null).map_or(0, |p| p + 1);
        hash.update((significant as u64).to_le_bytes());
        for value in &row.values[..significant] {
            hash_value(&mut hash, value);
        }
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("part-{hex}.parquet")
}

fn hash_value(hash: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hash.update([0]),
        Value::Text(s) => {
            hash.update([1]);
            hash.update((s.len() as u64).to_le_bytes());
            hash.update(s.as_bytes());
        }
        Value::Boolean(b) => hash.update([2, u8::from(*b)]),
        Value::Integer(n) => {
            hash.update([3]);
            hash.update(n.to_le_bytes());
        }
        Value::BigInt(n) => {
            hash.update([4]);
            hash.update(n.to_le_bytes());
        }
        Value::Double(x) => {
            hash.update([5]);
            hash.update(x.to_bits().to_le_bytes());
        }
        Value::Decimal(n) => {
            hash.update([6]);
            hash.update(n.to_le_bytes());
        }
        Value::Timestamp(t) => {
            hash.update([7]);
            hash.update(t.timestamp_micros().to_le_bytes());
        }
        Value::Date(d) => {
            hash.update([8]);
            hash.update(days_since_epoch(*d).to_le_bytes());
        }
        Value::Uuid(u) => {
            hash.update([9]);
            hash.update(u.as_bytes());
        }
    }
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

fn days_since_epoch(date: NaiveDate) -> i32 {
    (date - EPOCH).num_days() as i32
}

/// The Parquet schema of a file: the mapped columns, all optional, then dynsync's columns.
pub fn parquet_schema(schema: &DatasetSchema) -> TypePtr {
    let mut fields: Vec<TypePtr> =
        schema.columns.iter().map(|c| column_type(&c.name, c.kind, Repetition::OPTIONAL)).collect();
    fields.push(column_type(ID_COLUMN, ColumnKind::Uuid, Repetition::REQUIRED));
    fields.push(column_type(OPERATION_COLUMN, ColumnKind::Text, Repetition::REQUIRED));
    fields.push(column_type(VERSION_COLUMN, ColumnKind::BigInt, Repetition::OPTIONAL));
    fields.push(column_type(DELETED_COLUMN, ColumnKind::Boolean, Repetition::REQUIRED));
    fields.push(column_type(SYNCED_AT_COLUMN, ColumnKind::Timestamp, Repetition::REQUIRED));
    Arc::new(SchemaType::group_type_builder("dynsync_dataset").with_fields(fields).build().expect("a valid group"))
}

fn column_type(name: &str, kind: ColumnKind, repetition: Repetition) -> TypePtr {
    let (physical, logical, length, precision, scale) = match kind {
        ColumnKind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String), -1, -1, -1),
        ColumnKind::Boolean => (PhysicalType::BOOLEAN, None, -1, -1, -1),
        ColumnKind::Integer => (PhysicalType::INT32, None, -1, -1, -1),
        ColumnKind::BigInt => (PhysicalType::INT64, None, -1, -1, -1),
        ColumnKind::Double => (PhysicalType::DOUBLE, None, -1, -1, -1),
        ColumnKind::Decimal { scale } => {
            (PhysicalType::FIXED_LEN_BYTE_ARRAY, Some(LogicalType::decimal(scale.into(), 38)), 16, 38, scale.into())
        }
        ColumnKind::Timestamp => {
            (PhysicalType::INT64, Some(LogicalType::timestamp(true, TimeUnit::MICROS)), -1, -1, -1)
        }
        ColumnKind::Date => (PhysicalType::INT32, Some(LogicalType::Date), -1, -1, -1),
        ColumnKind::Uuid => (PhysicalType::FIXED_LEN_BYTE_ARRAY, Some(LogicalType::Uuid), 16, -1, -1),
    };
    let built = SchemaType::primitive_type_builder(name, physical)
        .with_repetition(repetition)
        .with_logical_type(logical)
        .with_length(length)
        .with_precision(precision)
        .with_scale(scale)
        .build()
        .expect("each column kind maps to a valid Parquet type");
    Arc::new(built)
}

/// The largest unscaled value of a 38-digit decimal.
const DECIMAL_MAX: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// A batch as the bytes of one Parquet file of one row group, Snappy-compressed. A column is dictionary-encoded
/// only where its values repeat (a job title, a choice, the operation): building a dictionary of values that
/// are all different (ids, versions, e-mail addresses) costs a hash of each and saves nothing.
pub fn encode(schema: &DatasetSchema, rows: &[&DatasetRow]) -> Result<Vec<u8>, String> {
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(rows.len().max(1)))
        .set_created_by(format!("dynsync {}", env!("CARGO_PKG_VERSION")))
        .set_column_dictionary_enabled(ColumnPath::from(ID_COLUMN), false)
        .set_column_dictionary_enabled(ColumnPath::from(VERSION_COLUMN), false);
    for (index, column) in schema.columns.iter().enumerate() {
        if !repeats(rows.iter().filter_map(|r| r.values.get(index)).filter(|v| **v != Value::Null)) {
            properties = properties.set_column_dictionary_enabled(ColumnPath::from(column.name.as_str()), false);
        }
    }
    let properties = properties.build();
    let mut out = Vec::with_capacity(rows.len() * 64);
    let encoding = |e: parquet::errors::ParquetError| format!("the batch cannot be encoded as Parquet: {e}");
    let mut writer =
        SerializedFileWriter::new(&mut out, parquet_schema(schema), Arc::new(properties)).map_err(encoding)?;
    let mut group = writer.next_row_group().map_err(encoding)?;
    for (index, column) in schema.columns.iter().enumerate() {
        write_mapped(&mut group, column, index, rows)?;
    }
    let ids: Vec<&[u8]> = rows.iter().map(|r| r.id.as_bytes().as_slice()).collect();
    write_column::<FixedLenByteArrayType>(&mut group, &sliced(&ids), None)?;
    let ops: Vec<&[u8]> = rows.iter().map(|r| r.operation.as_str().as_bytes()).collect();
    let ops: Vec<ByteArray> = sliced(&ops);
    write_column::<ByteArrayType>(&mut group, &ops, None)?;
    let versions: Vec<i64> = rows.iter().filter_map(|r| r.version).collect();
    let defined: Vec<i16> = rows.iter().map(|r| i16::from(r.version.is_some())).collect();
    write_column::<Int64Type>(&mut group, &versions, Some(&defined))?;
    let deleted: Vec<bool> = rows.iter().map(|r| r.deleted()).collect();
    write_column::<BoolType>(&mut group, &deleted, None)?;
    let synced: Vec<i64> = rows.iter().map(|r| r.synced_at.timestamp_micros()).collect();
    write_column::<Int64Type>(&mut group, &synced, None)?;
    group.close().map_err(encoding)?;
    writer.close().map_err(encoding)?;
    Ok(out)
}

/// How many of a column's first values are read to judge whether they repeat.
const REPEATS_SAMPLE: usize = 128;

/// Whether at most half of a column's first [`REPEATS_SAMPLE`] values differ: enough repetition for a dictionary
/// to pay. Stops as soon as more than half differ, so a column of distinct values costs a few thousand
/// comparisons a batch.
fn repeats<'v>(values: impl Iterator<Item = &'v Value>) -> bool {
    let mut distinct: Vec<&Value> = Vec::new();
    for value in values.take(REPEATS_SAMPLE) {
        if !distinct.contains(&value) {
            if distinct.len() == REPEATS_SAMPLE / 2 {
                return false;
            }
            distinct.push(value);
        }
    }
    true
}

fn write_column<T: parquet::data_type::DataType>(
    group: &mut SerializedRowGroupWriter<'_, &mut Vec<u8>>,
    values: &[T::T],
    definitions: Option<&[i16]>,
) -> Result<(), String> {
    let encoding = |e: parquet::errors::ParquetError| format!("the batch cannot be encoded as Parquet: {e}");
    let mut column = group.next_column().map_err(encoding)?.expect("one column writer per schema field");
    column.typed::<T>().write_batch(values, definitions, None).map_err(encoding)?;
    column.close().map_err(encoding)
}

/// Byte values cut from one buffer: a column's values are copied once, into one allocation, rather than into one
/// each.
fn sliced<T: From<ByteArray>>(parts: &[impl AsRef<[u8]>]) -> Vec<T> {
    let mut buffer = Vec::with_capacity(parts.iter().map(|p| p.as_ref().len()).sum());
    let mut ends = Vec::with_capacity(parts.len());
    for part in parts {
        buffer.extend_from_slice(part.as_ref());
        ends.push(buffer.len());
    }
    let buffer = Bytes::from(buffer);
    let mut start = 0;
    ends.into_iter()
        .map(|end| T::from(ByteArray::from(buffer.slice(std::mem::replace(&mut start, end)..end))))
        .collect()
}

/// The non-null values of a mapped column, and a definition level per row (1 for a value, 0 for null): a row
/// with fewer values than the schema has columns reads null.
fn gather<'r, T>(
    column: &DatasetColumn,
    index: usize,
    rows: &[&'r DatasetRow],
    convert: impl Fn(&'r Value) -> Option<Result<T, String>>,
) -> Result<(Vec<T>, Vec<i16>), String> {
    let mut values = Vec::with_capacity(rows.len());
    let mut definitions = Vec::with_capacity(rows.len());
    for row in rows {
        match row.values.get(index).unwrap_or(&Value::Null) {
            Value::Null => definitions.push(0),
            value => {
                let converted = convert(value).unwrap_or_else(|| {
                    Err(format!(
                        "the column {} holds {:?} values but record {} has {} there: the mapping and the schema disagree",
                        column.name,
                        column.kind,
                        row.id,
                        value_kind(value)
                    ))
                });
                values.push(converted.map_err(|e| format!("record {}, column {}: {e}", row.id, column.name))?);
                definitions.push(1);
            }
        }
    }
    Ok((values, definitions))
}

fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Text(_) => "text",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) => "an integer",
        Value::BigInt(_) => "a big integer",
        Value::Double(_) => "a double",
        Value::Decimal(_) => "a decimal",
        Value::Timestamp(_) => "a timestamp",
        Value::Date(_) => "a date",
        Value::Uuid(_) => "a uuid",
    }
}

fn write_mapped(
    group: &mut SerializedRowGroupWriter<'_, &mut Vec<u8>>,
    column: &DatasetColumn,
    index: usize,
    rows: &[&DatasetRow],
) -> Result<(), String> {
    macro_rules! column {
        ($parquet:ty, $pattern:pat => $value:expr) => {
            column!($parquet, $pattern => $value; |values| values)
        };
        // Byte values, written as slices of one buffer.
        (bytes $parquet:ty, $pattern:pat => $value:expr) => {
            column!($parquet, $pattern => $value; |values: Vec<_>| sliced(&values))
        };
        ($parquet:ty, $pattern:pat => $value:expr; $finish:expr) => {{
            let (values, definitions) = gather(column, index, rows, |v| match v {
                $pattern => Some($value),
                _ => None,
            })?;
            write_column::<$parquet>(group, &$finish(values), Some(&definitions))
        }};
    }
    match column.kind {
        ColumnKind::Text => column!(bytes ByteArrayType, Value::Text(s) => Ok(s.as_bytes())),
        ColumnKind::Boolean => column!(BoolType, Value::Boolean(b) => Ok(*b)),
        ColumnKind::Integer => column!(Int32Type, Value::Integer(n) => Ok(*n)),
        ColumnKind::BigInt => column!(Int64Type, Value::BigInt(n) => Ok(*n)),
        ColumnKind::Double => column!(DoubleType, Value::Double(x) => Ok(*x)),
        ColumnKind::Decimal { .. } => column!(bytes FixedLenByteArrayType, Value::Decimal(n) => {
            if n.unsigned_abs() > DECIMAL_MAX as u128 {
                Err(format!("the unscaled value {n} has more than 38 digits"))
            } else {
                Ok(n.to_be_bytes())
            }
        }),
        ColumnKind::Timestamp => column!(Int64Type, Value::Timestamp(t) => Ok(t.timestamp_micros())),
        ColumnKind::Date => column!(Int32Type, Value::Date(d) => Ok(days_since_epoch(*d))),
        ColumnKind::Uuid => column!(bytes FixedLenByteArrayType, Value::Uuid(u) => Ok(*u.as_bytes())),
    }
}

/// Where a file's column goes in a row.
#[derive(Clone, Copy)]
enum Slot {
    Mapped(usize, ColumnKind),
    Id,
    Operation,
    Version,
    Deleted,
    SyncedAt,
    /// A column the generation's schema does not know (a file written by something else): skipped.
    Unknown,
}

/// Reads a file written by [`encode`], handing each row to `sink`; columns the file lacks read as null.
pub fn decode(schema: &DatasetSchema, bytes: Bytes, sink: &mut dyn FnMut(DatasetRow)) -> Result<(), String> {
    read_rows(schema, bytes, false, sink)
}

/// Reads a file's rows; with `metadata_only`, only dynsync's columns are decoded (the rows have no values).
fn read_rows(
    schema: &DatasetSchema,
    bytes: Bytes,
    metadata_only: bool,
    sink: &mut dyn FnMut(DatasetRow),
) -> Result<(), String> {
    let reader = SerializedFileReader::new(bytes).map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let file_schema = reader.metadata().file_metadata().schema_descr_ptr();
    let metadata = [ID_COLUMN, OPERATION_COLUMN, VERSION_COLUMN, SYNCED_AT_COLUMN];
    let fields: Vec<TypePtr> = file_schema
        .root_schema()
        .get_fields()
        .iter()
        .filter(|f| !metadata_only || metadata.contains(&f.name()))
        .cloned()
        .collect();
    let projection = match metadata_only {
        true => Some(
            SchemaType::group_type_builder(file_schema.root_schema().name())
                .with_fields(fields.clone())
                .build()
                .map_err(|e| format!("dynsync's columns cannot be selected: {e}"))?,
        ),
        false => None,
    };
    let slots: Vec<Slot> = fields
        .iter()
        .map(|field| match field.name() {
            ID_COLUMN => Slot::Id,
            OPERATION_COLUMN => Slot::Operation,
            VERSION_COLUMN => Slot::Version,
            DELETED_COLUMN => Slot::Deleted,
            SYNCED_AT_COLUMN => Slot::SyncedAt,
            name => schema.position(name).map_or(Slot::Unknown, |i| Slot::Mapped(i, schema.columns[i].kind)),
        })
        .collect();
    let rows = reader.get_row_iter(projection).map_err(|e| format!("its rows cannot be read: {e}"))?;
    for (number, row) in rows.enumerate() {
        let row = row.map_err(|e| format!("row {number} cannot be read: {e}"))?;
        let mut values = vec![Value::Null; schema.columns.len()];
        let (mut id, mut operation, mut version, mut synced_at) = (None, None, None, None);
        for ((name, field), slot) in row.get_column_iter().zip(&slots) {
            let wrong =
                || format!("row {number}: the column {name} holds {field:?}, which dynsync does not write there");
            match (slot, field) {
                (Slot::Mapped(i, kind), field) => values[*i] = value_of(*kind, field).ok_or_else(wrong)?,
                (Slot::Id, Field::Bytes(b)) => id = Some(Uuid::from_slice(b.data()).map_err(|_| wrong())?),
                (Slot::Operation, Field::Str(op)) => {
                    operation = Some(match op.as_str() {
                        "c" => Operation::Create,
                        "u" => Operation::Update,
                        "d" => Operation::Delete,
                        "r" => Operation::Read,
                        _ => return Err(wrong()),
                    })
                }
                (Slot::Version, Field::Long(v)) => version = Some(*v),
                (Slot::Version, Field::Null) | (Slot::Deleted, _) | (Slot::Unknown, _) => {}
                (Slot::SyncedAt, Field::TimestampMicros(t)) => synced_at = DateTime::from_timestamp_micros(*t),
                _ => return Err(wrong()),
            }
        }
        let missing = |what: &str| format!("row {number} has no {what}: the file was not written by dynsync");
        sink(DatasetRow {
            id: id.ok_or_else(|| missing(ID_COLUMN))?,
            operation: operation.ok_or_else(|| missing(OPERATION_COLUMN))?,
            version,
            values,
            synced_at: synced_at.ok_or_else(|| missing(SYNCED_AT_COLUMN))?,
        });
    }
    Ok(())
}

/// Reads only dynsync's columns of a file, handing each row, without values, to `sink`.
fn read_latest(bytes: Bytes, sink: &mut dyn FnMut(DatasetRow)) -> Result<(), String> {
    read_rows(&DatasetSchema::default(), bytes, true, sink)
}

fn value_of(kind: ColumnKind, field: &Field) -> Option<Value> {
    Some(match (kind, field) {
        (_, Field::Null) => Value::Null,
        (ColumnKind::Text, Field::Str(s)) => Value::Text(s.clone()),
        (ColumnKind::Boolean, Field::Bool(b)) => Value::Boolean(*b),
        (ColumnKind::Integer, Field::Int(n)) => Value::Integer(*n),
        (ColumnKind::BigInt, Field::Long(n)) => Value::BigInt(*n),
        (ColumnKind::Double, Field::Double(x)) => Value::Double(*x),
        (ColumnKind::Decimal { .. }, Field::Decimal(d)) => Value::Decimal(unscaled(d.data())?),
        (ColumnKind::Timestamp, Field::TimestampMicros(t)) => Value::Timestamp(DateTime::from_timestamp_micros(*t)?),
        (ColumnKind::Date, Field::Date(days)) => {
            Value::Date(EPOCH.checked_add_signed(chrono::Duration::days((*days).into()))?)
        }
        (ColumnKind::Uuid, Field::Bytes(b)) => Value::Uuid(Uuid::from_slice(b.data()).ok()?),
        (ColumnKind::Uuid, Field::Str(s)) => Value::Uuid(s.parse().ok()?),
        _ => return None,
    })
}

/// A big-endian two's complement integer of up to 16 bytes.
fn unscaled(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(full))
}

/// Whether `candidate` replaces `kept` as the current row of an id: a higher version does; a delete wins over an
/// older version or one it cannot compare with (Dataverse reports deletes without a version); a tie goes to the
/// later write.
pub fn supersedes(candidate: &DatasetRow, kept: &DatasetRow) -> bool {
    match (candidate.version, kept.version) {
        (Some(a), Some(b)) if a != b => a > b,
        (Some(_), Some(_)) | (None, None) => {
            (candidate.deleted(), candidate.synced_at) >= (kept.deleted(), kept.synced_at)
        }
        (None, Some(_)) => candidate.deleted(),
        (Some(_), None) => !kept.deleted(),
    }
}

/// The current rows of the `limit` lowest ids offered (see [`FileDestination::rows`]).
struct LowestIds {
    limit: usize,
    rows: BTreeMap<Uuid, DatasetRow>,
}

impl LowestIds {
    fn new(limit: usize) -> LowestIds {
        LowestIds { limit, rows: BTreeMap::new() }
    }

    fn offer(&mut self, row: DatasetRow) {
        if let Some(kept) = self.rows.get_mut(&row.id) {
            if supersedes(&row, kept) {
                *kept = row;
            }
            return;
        }
        if self.rows.len() < self.limit {
            self.rows.insert(row.id, row);
        } else if self.rows.last_key_value().is_some_and(|(highest, _)| row.id < *highest) {
            self.rows.pop_last();
            self.rows.insert(row.id, row);
        }
    }

    fn into_rows(self) -> Vec<DatasetRow> {
        self.rows.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schema() -> DatasetSchema {
        let column = |name: &str, kind| DatasetColumn { name: name.into(), kind };
        DatasetSchema {
            columns: vec![
                column("fullname", ColumnKind::Text),
                column("donotemail", ColumnKind::Boolean),
                column("numberofchildren", ColumnKind::Integer),
                column("revenue_base", ColumnKind::BigInt),
                column("score", ColumnKind::Double),
                column("creditlimit", ColumnKind::Decimal { scale: 4 }),
                column("modifiedon", ColumnKind::Timestamp),
                column("birthdate", ColumnKind::Date),
                column("parentcustomerid", ColumnKind::Uuid),
            ],
        }
    }

    fn row(n: u128, version: Option<i64>, operation: Operation, values: Vec<Value>) -> DatasetRow {
        DatasetRow {
            id: Uuid::from_u128(n),
            operation,
            version,
            values,
            synced_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        }
    }

    fn full_row(n: u128) -> DatasetRow {
        row(
            n,
            Some(1000 + n as i64),
            Operation::Read,
            vec![
                Value::Text(format!("Contact {n} — Zoë")),
                Value::Boolean(n.is_multiple_of(2)),
                Value::Integer(-3),
                Value::BigInt(i64::MAX),
                Value::Double(0.1),
                Value::Decimal(-99_999_999_999_999_999_999_999_999_999_999_999_999),
                Value::Timestamp(Utc.timestamp_micros(1_767_225_600_123_456).unwrap()),
                Value::Date(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()),
                Value::Uuid(Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            ],
        )
    }

    fn refs(rows: &[DatasetRow]) -> Vec<&DatasetRow> {
        rows.iter().collect()
    }

    fn round_trip(schema: &DatasetSchema, rows: &[&DatasetRow]) -> Vec<DatasetRow> {
        let bytes = encode(schema, rows).expect("the rows encode");
        let mut read = Vec::new();
        decode(schema, Bytes::from(bytes), &mut |row| read.push(row)).expect("the file decodes");
        read
    }

    #[test]
    fn every_column_kind_reads_back_as_written_exactly() {
        let rows = vec![full_row(1), full_row(2)];
        assert_eq!(round_trip(&schema(), &refs(&rows)), rows);
    }

    #[test]
    fn only_columns_whose_values_repeat_are_dictionary_encoded_and_all_read_back() {
        let rows: Vec<DatasetRow> = (0..300).map(full_row).collect();
        let bytes = encode(&schema(), &refs(&rows)).unwrap();
        let reader = SerializedFileReader::new(Bytes::from(bytes.clone())).unwrap();
        let group = reader.metadata().row_group(0);
        let dictionary = |name: &str| {
            let column = group.columns().iter().find(|c| c.column_path().string() == name).unwrap();
            column.dictionary_page_offset().is_some()
        };
        // Every name differs, and every id and version: no dictionary. The same number of children and the same
        // operation on every row: a dictionary.
        assert_eq!([dictionary("fullname"), dictionary(ID_COLUMN), dictionary(VERSION_COLUMN)], [false, false, false]);
        assert_eq!([dictionary("numberofchildren"), dictionary(OPERATION_COLUMN)], [true, true]);
        let mut read = Vec::new();
        decode(&schema(), Bytes::from(bytes), &mut |row| read.push(row)).unwrap();
        assert_eq!(read, rows);
        let mixed = [Value::Integer(1), Value::Integer(2), Value::Integer(1)];
        assert!(repeats(mixed.iter()));
        let distinct: Vec<Value> = (0..REPEATS_SAMPLE as i32).map(Value::Integer).collect();
        assert!(!repeats(distinct.iter()));
        assert!(repeats(distinct[..REPEATS_SAMPLE / 2].iter().chain(&distinct[..REPEATS_SAMPLE / 2])));
    }

    #[test]
    fn decimals_keep_all_38_digits_and_their_sign() {
        let schema = DatasetSchema {
            columns: vec![DatasetColumn { name: "amount".into(), kind: ColumnKind::Decimal { scale: 2 } }],
        };
        let values = [DECIMAL_MAX, -DECIMAL_MAX, 1, -1, 0, 12_345];
        let rows: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| row(i as u128, Some(1), Operation::Read, vec![Value::Decimal(*v)]))
            .collect();
        assert_eq!(round_trip(&schema, &refs(&rows)), rows);
        let parquet = parquet_schema(&schema);
        let amount = &parquet.get_fields()[0];
        assert_eq!(amount.get_physical_type(), PhysicalType::FIXED_LEN_BYTE_ARRAY);
        assert_eq!(amount.get_basic_info().logical_type_ref(), Some(&LogicalType::decimal(2, 38)));
        let too_wide = vec![row(9, Some(1), Operation::Read, vec![Value::Decimal(DECIMAL_MAX + 1)])];
        let refused = encode(&schema, &refs(&too_wide)).unwrap_err();
        assert!(refused.contains("more than 38 digits") && refused.contains("amount"), "{refused}");
    }

    #[test]
    fn timestamps_are_utc_microseconds_and_dates_are_days() {
        let parquet = parquet_schema(&schema());
        let fields = parquet.get_fields();
        let modified = &fields[6];
        assert_eq!(modified.get_physical_type(), PhysicalType::INT64);
        assert_eq!(modified.get_basic_info().logical_type_ref(), Some(&LogicalType::timestamp(true, TimeUnit::MICROS)));
        assert_eq!(fields[7].get_basic_info().logical_type_ref(), Some(&LogicalType::Date));
        assert_eq!(days_since_epoch(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()), 1);
        assert_eq!(days_since_epoch(NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()), -1);
        let uuid = &fields[8];
        assert_eq!(uuid.get_physical_type(), PhysicalType::FIXED_LEN_BYTE_ARRAY);
        assert_eq!(uuid.get_basic_info().logical_type_ref(), Some(&LogicalType::Uuid));
    }

    #[test]
    fn nulls_and_missing_trailing_values_read_as_null() {
        let rows = vec![
            row(1, Some(5), Operation::Update, vec![Value::Null, Value::Boolean(true)]),
            row(2, None, Operation::Delete, vec![]),
        ];
        let read = round_trip(&schema(), &refs(&rows));
        assert_eq!(read[0].values.len(), 9);
        assert_eq!(read[0].values[1], Value::Boolean(true));
        assert!(read[0].values.iter().enumerate().all(|(i, v)| i == 1 || *v == Value::Null));
        assert_eq!(read[1].version, None);
        assert!(read[1].deleted() && read[1].values.iter().all(|v| *v == Value::Null));
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused_naming_the_record_and_column() {
        let rows = vec![row(7, Some(1), Operation::Read, vec![Value::Integer(3)])];
        let refused = encode(&schema(), &refs(&rows)).unwrap_err();
        assert!(refused.contains("fullname") && refused.contains(&Uuid::from_u128(7).to_string()), "{refused}");
    }

    #[test]
    fn the_file_name_depends_on_the_rows_and_generation_only() {
        let rows = vec![full_row(1), full_row(2)];
        let name = file_name(1, &refs(&rows));
        assert!(name.starts_with("part-") && name.ends_with(".parquet") && name.len() == 45, "{name}");
        let mut later = rows.clone();
        later[0].synced_at = Utc::now();
        assert_eq!(file_name(1, &refs(&later)), name, "a rewrite at another time names the same file");
        let mut padded = rows.clone();
        padded[1].values.push(Value::Null);
        assert_eq!(file_name(1, &refs(&padded)), name, "a trailing null is no change");
        assert_ne!(file_name(2, &refs(&rows)), name, "another generation");
        let mut changed = rows.clone();
        changed[1].version = Some(9999);
        assert_ne!(file_name(1, &refs(&changed)), name, "another version");
        changed = rows.clone();
        changed[0].values[0] = Value::Text("Contact 1".into());
        assert_ne!(file_name(1, &refs(&changed)), name, "another value");
    }

    #[test]
    fn newer_versions_win_and_a_delete_wins_over_an_older_version() {
        let v1 = row(1, Some(1), Operation::Read, vec![]);
        let v2 = row(1, Some(2), Operation::Update, vec![]);
        let deleted = row(1, None, Operation::Delete, vec![]);
        assert!(supersedes(&v2, &v1) && !supersedes(&v1, &v2));
        assert!(supersedes(&deleted, &v2) && !supersedes(&v2, &deleted));
        let mut kept = LowestIds::new(2);
        for r in [
            v2.clone(),
            row(3, Some(1), Operation::Read, vec![]),
            v1,
            row(2, Some(1), Operation::Read, vec![]),
            deleted.clone(),
        ] {
            kept.offer(r);
        }
        let rows = kept.into_rows();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert_eq!(rows[0], deleted);
    }

    fn dataset() -> DatasetName {
        DatasetName::try_from("contacts".to_string()).unwrap()
    }

    #[tokio::test]
    async fn a_rewritten_batch_replaces_its_file_and_is_listed_once() {
        let folder = tempfile::tempdir().unwrap();
        let destination = FileDestination::in_data_dir(folder.path()).unwrap();
        let (dataset, schema) = (dataset(), schema());
        let load = Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap();
        let rows = vec![full_row(1), full_row(2)];
        let batch =
            Batch { dataset: &dataset, generation: 1, schema: &schema, load, rows: &refs(&rows), kept_on_update: &[] };
        destination.write(&[batch]).await.unwrap();
        destination.write(&[batch]).await.unwrap();
        let manifest = destination.manifest(&dataset).await.unwrap().expect("a manifest");
        let generation = manifest.generation(1).expect("generation 1");
        let files: Vec<_> = generation.files().collect();
        assert_eq!(files.len(), 1, "{manifest:#?}");
        assert_eq!((files[0].rows, files[0].min_version, files[0].max_version), (2, Some(1001), Some(1002)));
        assert_eq!(generation.loads[0].load, load);
        let on_disk: Vec<_> = std::fs::read_dir(folder.path().join("datasets/contacts/gen-1")).unwrap().collect();
        assert_eq!(on_disk.len(), 1, "one file on disk");
        let (read_schema, read) = destination.rows(&dataset, 1, 10).await.unwrap();
        assert_eq!((read_schema, read), (schema, rows));
    }

    #[tokio::test]
    async fn a_changed_column_type_is_refused_within_a_generation() {
        let folder = tempfile::tempdir().unwrap();
        let destination = FileDestination::in_data_dir(folder.path()).unwrap();
        let (dataset, first) = (dataset(), schema());
        let load = Utc::now();
        let rows = vec![full_row(1)];
        destination
            .write(&[Batch {
                dataset: &dataset,
                generation: 1,
                schema: &first,
                load,
                rows: &refs(&rows),
                kept_on_update: &[],
            }])
            .await
            .unwrap();
        let mut changed = first.clone();
        changed.columns[2].kind = ColumnKind::BigInt;
        let batch = Batch { dataset: &dataset, generation: 1, schema: &changed, load, rows: &[], kept_on_update: &[] };
        let refused = destination.write(&[batch]).await.unwrap_err().to_string();
        assert!(refused.contains("numberofchildren (BigInt)") && refused.contains("new generation"), "{refused}");
        let batch = Batch { dataset: &dataset, generation: 2, schema: &changed, load, rows: &[], kept_on_update: &[] };
        destination.write(&[batch]).await.expect("a new generation takes the changed column");
        let manifest = destination.manifest(&dataset).await.unwrap().unwrap();
        assert_eq!(manifest.generation(2).unwrap().schema, changed);
        assert_eq!(manifest.generation(1).unwrap().schema, first);
    }

    /// The rows of each file the manifest lists in generation 1, and how many files its folder holds.
    async fn files_of(destination: &FileDestination, folder: &Path) -> (Vec<u64>, usize) {
        let manifest = destination.manifest(&dataset()).await.unwrap().expect("a manifest");
        let listed = manifest.generation(1).unwrap().files().map(|f| f.rows).collect();
        (listed, std::fs::read_dir(folder.join("datasets/contacts/gen-1")).unwrap().count())
    }

    #[tokio::test]
    async fn the_pages_of_one_write_are_a_file_each_and_a_page_that_does_not_fit_puts_none() {
        let folder = tempfile::tempdir().unwrap();
        let destination = FileDestination::in_data_dir(folder.path()).unwrap();
        let (dataset, schema) = (dataset(), schema());
        let load = Utc::now();
        let (first, second, third) = (vec![full_row(1), full_row(2)], vec![full_row(3)], vec![full_row(4)]);
        let (first_rows, second_rows, third_rows) = (refs(&first), refs(&second), refs(&third));
        let page = |schema, rows| Batch { dataset: &dataset, generation: 1, schema, load, rows, kept_on_update: &[] };
        destination.write(&[page(&schema, &first_rows), page(&schema, &second_rows)]).await.unwrap();
        assert_eq!(files_of(&destination, folder.path()).await, (vec![2, 1], 2), "a file a page, each listed");

        let mut changed = schema.clone();
        changed.columns[2].kind = ColumnKind::BigInt;
        let pages = [page(&schema, &third_rows), page(&changed, &[])];
        let refused = destination.write(&pages).await.unwrap_err().to_string();
        assert!(refused.contains("numberofchildren (BigInt)"), "{refused}");
        assert_eq!(
            files_of(&destination, folder.path()).await,
            (vec![2, 1], 2),
            "the page before the refused one was not put"
        );
        let (_, read) = destination.rows(&dataset, 1, 10).await.unwrap();
        assert_eq!(read, [first, second].concat());
    }

    #[tokio::test]
    async fn a_generation_never_written_is_reported_as_such() {
        let folder = tempfile::tempdir().unwrap();
        let destination = FileDestination::in_data_dir(folder.path()).unwrap();
        let missing = destination.rows(&dataset(), 1, 10).await.unwrap_err();
        assert!(matches!(missing, DatasetError::NoGeneration { generation: 1, .. }), "{missing}");
    }

    #[test]
    fn an_azure_key_never_reaches_debug_output_or_messages() {
        let location = FileLocation::Azure(AzureLocation {
            account: "acme".into(),
            container: "datasets".into(),
            prefix: "dynamics".into(),
            access_key: Some(Secret::new("c2VjcmV0LWtleS1ieXRlcw==")),
            endpoint: None,
        });
        assert!(!format!("{location:?}").contains("c2VjcmV0"));
        let destination = FileDestination::open(location).unwrap();
        assert!(!format!("{destination:?}").contains("c2VjcmV0"));
        assert_eq!(destination.describe(), "az://acme/datasets/dynamics");
    }
}
