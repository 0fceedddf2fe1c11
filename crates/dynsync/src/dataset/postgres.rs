//! A PostgreSQL table per dataset generation, kept current by upsert: `<dataset>` for generation 1,
//! `<dataset>_g<n>` after, so that a generation started by a changed column type never disturbs the readers of
//! the one before.
//!
//! The table has the mapped columns (text, boolean, integer, bigint, double precision, numeric(38,s),
//! timestamptz, date, uuid), then `_dynsync_id uuid primary key` — the Dynamics record's id, kept apart because
//! a flow need not map the primary key and a table needs one key it can upsert on — and `_dynsync_op`,
//! `_dynsync_version`, `_dynsync_deleted`, `_dynsync_synced_at`. It is created on the first write; a column added
//! to the schema is added to the table (`ADD COLUMN IF NOT EXISTS`).
//!
//! A column whose updates the flow does not apply keeps its value through an update (`_dynsync_op = 'u'`): it is
//! written when the record is first loaded, created or replayed.
//!
//! A row replaces the one kept for its id only if it is newer: a higher version, a full load's or replay's read of
//! the same version, or a delete over an older (or unversioned) row. So an older version never replaces a newer one, and the same batch written again changes
//! nothing. Deletes are soft: the row stays, with its last values, `_dynsync_deleted = true` and op `d`.
//! A batch is one transaction of multi-row statements, each under PostgreSQL's 65,535 parameters.
//!
//! Values are bound as their plain type, or as text cast in SQL (`::uuid`, `::timestamptz`, `::date`,
//! `::numeric`), which keeps decimals exact without a decimal crate and needs no extra sqlx feature.

use super::{
    Batch, ColumnKind, DatasetColumn, DatasetError, DatasetName, DatasetRow, DatasetSchema, Latest, Operation, Value,
};
use super::{DELETED_COLUMN, OPERATION_COLUMN, SYNCED_AT_COLUMN, VERSION_COLUMN};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};
use std::collections::HashMap;
use std::fmt;
use uuid::Uuid;

/// The column that holds the Dynamics record's id: the table's primary key.
pub const ID_COLUMN: &str = "_dynsync_id";

/// The most rows [`PostgresDestination::rows`] returns.
pub const MAX_ROWS: usize = 1_000;

/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMETERS: usize = 65_535;

/// The most rows in one `INSERT`, however few the columns: a statement stays a reasonable size.
const MAX_ROWS_PER_STATEMENT: usize = 1_000;

/// The metadata columns every table has after its mapped columns.
const METADATA_COLUMNS: usize = 5;

/// Datasets as PostgreSQL tables.
pub struct PostgresDestination {
    pool: PgPool,
    location: String,
    /// The mapped columns each table is known to have, so that a table is only altered when a batch brings more.
    known_columns: tokio::sync::Mutex<HashMap<String, usize>>,
}

impl fmt::Debug for PostgresDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDestination").field("location", &self.location).finish_non_exhaustive()
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(a database URL that does not parse)".to_string(),
    }
}

/// The table of a dataset generation: `<dataset>` for generation 1, `<dataset>_g<n>` after.
pub fn table_name(dataset: &DatasetName, generation: u32) -> String {
    match generation {
        0 | 1 => dataset.to_string(),
        n => format!("{dataset}_g{n}"),
    }
}

/// A name quoted for SQL: `"name"`, with any `"` doubled.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_type(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Text => "text".into(),
        ColumnKind::Boolean => "boolean".into(),
        ColumnKind::Integer => "integer".into(),
        ColumnKind::BigInt => "bigint".into(),
        ColumnKind::Double => "double precision".into(),
        ColumnKind::Decimal { scale } => format!("numeric(38,{scale})"),
        ColumnKind::Timestamp => "timestamptz".into(),
        ColumnKind::Date => "date".into(),
        ColumnKind::Uuid => "uuid".into(),
    }
}

impl PostgresDestination {
    /// A destination on the database at `url` (`postgres://user:password@host:port/database`). Connections are
    /// made when first needed: a wrong address or password shows at the first write. Call it within a Tokio
    /// runtime (the pool starts its upkeep task).
    pub fn connect(url: &str) -> Result<PostgresDestination, DatasetError> {
        let location = redact(url);
        let pool = PgPoolOptions::new().max_connections(4).connect_lazy(url).map_err(|e| DatasetError::Postgres {
            dataset: "(any)".into(),
            table: "(any)".into(),
            detail: format!("{location} is not a usable PostgreSQL URL: {}", scrub(&e.to_string(), url)),
        })?;
        Ok(PostgresDestination { pool, location, known_columns: Default::default() })
    }

    /// A destination on an existing pool; `location` names it in messages (no password).
    pub fn with_pool(pool: PgPool, location: impl Into<String>) -> PostgresDestination {
        PostgresDestination { pool, location: location.into(), known_columns: Default::default() }
    }

    /// The database, for messages (its password replaced by `***`).
    pub fn describe(&self) -> &str {
        &self.location
    }

    fn error(&self, dataset: &DatasetName, table: &str, detail: impl fmt::Display) -> DatasetError {
        DatasetError::Postgres {
            dataset: dataset.to_string(),
            table: table.to_string(),
            detail: format!("{detail} (database {})", self.location),
        }
    }

    /// Upserts a batch in one transaction (see the module's opening for which row wins).
    pub async fn write(&self, batch: Batch<'_>) -> Result<(), DatasetError> {
        let table = table_name(batch.dataset, batch.generation);
        let failed = |detail: String| self.error(batch.dataset, &table, detail);
        check(batch.schema, &table).map_err(failed)?;
        let mut known = self.known_columns.lock().await;
        let mut tx = self.pool.begin().await.map_err(|e| failed(format!("no connection: {e}")))?;
        if known.get(&table).is_none_or(|n| *n < batch.schema.columns.len()) {
            for statement in table_statements(&table, batch.schema) {
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| failed(format!("the table cannot be created or given its new columns: {e}")))?;
            }
        }
        for rows in batch.rows.chunks(rows_per_statement(batch.schema.columns.len())) {
            let mut insert = upsert(&table, batch.schema, rows, batch.kept_on_update).map_err(failed)?;
            insert.build().execute(&mut *tx).await.map_err(|e| failed(format!("rows cannot be written: {e}")))?;
        }
        tx.commit().await.map_err(|e| failed(format!("the batch cannot be committed: {e}")))?;
        let count = known.entry(table).or_default();
        *count = (*count).max(batch.schema.columns.len());
        Ok(())
    }

    /// Up to `limit` rows (at most [`MAX_ROWS`]) of a generation's table, deleted ones included, ordered by id;
    /// the schema is read from the table itself.
    pub async fn rows(
        &self,
        dataset: &DatasetName,
        generation: u32,
        limit: usize,
    ) -> Result<(DatasetSchema, Vec<DatasetRow>), DatasetError> {
        let table = table_name(dataset, generation);
        let schema = self.table_schema(dataset, &table).await?;
        let Some(schema) = schema else {
            return Err(DatasetError::NoGeneration { dataset: dataset.to_string(), generation });
        };
        let mut select = String::from("SELECT ");
        for column in &schema.columns {
            select.push_str(&read_expression(&quoted(&column.name), column.kind));
            select.push_str(", ");
        }
        select.push_str(&format!(
            "{id}::text, {op}, {version}, {synced} FROM {table} ORDER BY {id} LIMIT $1",
            id = quoted(ID_COLUMN),
            op = quoted(OPERATION_COLUMN),
            version = quoted(VERSION_COLUMN),
            synced = read_expression(&quoted(SYNCED_AT_COLUMN), ColumnKind::Timestamp),
            table = quoted(&table),
        ));
        let found: Vec<PgRow> = sqlx::query(AssertSqlSafe(select))
            .bind(limit.min(MAX_ROWS) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(dataset, &table, format!("rows cannot be read: {e}")))?;
        let rows = found
            .iter()
            .map(|row| read_row(&schema, row))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.error(dataset, &table, format!("a row cannot be read back: {e}")))?;
        Ok((schema, rows))
    }

    /// The newest row of each id in a generation's table, without values (see [`super::Destination::latest`]).
    pub async fn latest(&self, dataset: &DatasetName, generation: u32) -> Result<HashMap<Uuid, Latest>, DatasetError> {
        let table = table_name(dataset, generation);
        if self.table_schema(dataset, &table).await?.is_none() {
            return Err(DatasetError::NoGeneration { dataset: dataset.to_string(), generation });
        }
        #[derive(sqlx::FromRow)]
        struct Kept {
            id: String,
            version: Option<i64>,
            deleted: bool,
            synced_at: i64,
        }
        let select = format!(
            "SELECT {id}::text AS id, {version} AS version, {deleted} AS deleted, {synced} AS synced_at FROM {table}",
            id = quoted(ID_COLUMN),
            version = quoted(VERSION_COLUMN),
            deleted = quoted(DELETED_COLUMN),
            synced = read_expression(&quoted(SYNCED_AT_COLUMN), ColumnKind::Timestamp),
            table = quoted(&table),
        );
        let mut rows = sqlx::query_as::<_, Kept>(AssertSqlSafe(select)).fetch(&self.pool);
        let mut latest = HashMap::new();
        while let Some(kept) = futures::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(|e| self.error(dataset, &table, format!("rows cannot be read: {e}")))?
        {
            let id = Uuid::parse_str(&kept.id).map_err(|_| self.error(dataset, &table, "an id is not a uuid"))?;
            let synced_at = DateTime::from_timestamp_micros(kept.synced_at)
                .ok_or_else(|| self.error(dataset, &table, "a synced-at is out of range"))?;
            latest.insert(id, Latest { version: kept.version, deleted: kept.deleted, synced_at });
        }
        Ok(latest)
    }

    /// The mapped columns of a table, `None` if it does not exist.
    async fn table_schema(&self, dataset: &DatasetName, table: &str) -> Result<Option<DatasetSchema>, DatasetError> {
        #[derive(sqlx::FromRow)]
        struct TableColumn {
            column_name: String,
            data_type: String,
            numeric_scale: Option<i32>,
        }
        let columns: Vec<TableColumn> = sqlx::query_as(
            "SELECT column_name::text AS column_name, data_type::text AS data_type, numeric_scale::int4 AS numeric_scale \
             FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(dataset, table, format!("its columns cannot be listed: {e}")))?;
        if columns.is_empty() {
            return Ok(None);
        }
        let mut schema = DatasetSchema::default();
        for column in columns.into_iter().filter(|c| !c.column_name.starts_with("_dynsync_")) {
            let kind = match column.data_type.as_str() {
                "text" => ColumnKind::Text,
                "boolean" => ColumnKind::Boolean,
                "integer" => ColumnKind::Integer,
                "bigint" => ColumnKind::BigInt,
                "double precision" => ColumnKind::Double,
                "numeric" => ColumnKind::Decimal { scale: column.numeric_scale.unwrap_or(0).clamp(0, 38) as u8 },
                "timestamp with time zone" => ColumnKind::Timestamp,
                "date" => ColumnKind::Date,
                "uuid" => ColumnKind::Uuid,
                other => {
                    return Err(self.error(
                        dataset,
                        table,
                        format!(
                            "its column {} is of type {other}, which dynsync does not write: was the table changed by hand?",
                            column.column_name
                        ),
                    ));
                }
            };
            schema.columns.push(DatasetColumn { name: column.column_name, kind });
        }
        Ok(Some(schema))
    }
}

/// A URL's password removed from a message.
fn scrub(message: &str, url: &str) -> String {
    match url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_string)) {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

fn check(schema: &DatasetSchema, table: &str) -> Result<(), String> {
    if table.len() > 63 {
        return Err(format!(
            "the table name {table} is longer than PostgreSQL's 63 characters: give the dataset a shorter name"
        ));
    }
    for (i, column) in schema.columns.iter().enumerate() {
        if column.name.starts_with("_dynsync_") {
            return Err(format!("the mapped column {} takes dynsync's prefix _dynsync_: rename it", column.name));
        }
        if column.name.is_empty() || column.name.len() > 63 {
            return Err(format!("the column name '{}' is empty or longer than 63 characters: rename it", column.name));
        }
        if schema.columns[..i].iter().any(|c| c.name == column.name) {
            return Err(format!("the column {} is mapped twice: keep one", column.name));
        }
        if let ColumnKind::Decimal { scale } = column.kind
            && scale > 38
        {
            return Err(format!("the column {} has a scale of {scale}, over 38 digits", column.name));
        }
    }
    Ok(())
}

/// How many rows of `columns` mapped columns one statement takes, under PostgreSQL's parameter limit.
fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMETERS / (columns + METADATA_COLUMNS)).clamp(1, MAX_ROWS_PER_STATEMENT)
}

/// `CREATE TABLE IF NOT EXISTS` with every column, then `ADD COLUMN IF NOT EXISTS` for each mapped column (for a
/// table made by an earlier, narrower schema).
fn table_statements(table: &str, schema: &DatasetSchema) -> Vec<String> {
    let mut columns: Vec<String> =
        schema.columns.iter().map(|c| format!("{} {}", quoted(&c.name), sql_type(c.kind))).collect();
    columns.push(format!("{} uuid PRIMARY KEY", quoted(ID_COLUMN)));
    columns.push(format!("{} text NOT NULL", quoted(OPERATION_COLUMN)));
    columns.push(format!("{} bigint", quoted(VERSION_COLUMN)));
    columns.push(format!("{} boolean NOT NULL", quoted(DELETED_COLUMN)));
    columns.push(format!("{} timestamptz NOT NULL", quoted(SYNCED_AT_COLUMN)));
    let mut statements = vec![format!("CREATE TABLE IF NOT EXISTS {} ({})", quoted(table), columns.join(", "))];
    statements.extend(schema.columns.iter().map(|c| {
        format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}", quoted(table), quoted(&c.name), sql_type(c.kind))
    }));
    statements
}

fn timestamp_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An unscaled decimal as text: `-12345` at scale 2 is `-123.45`.
fn decimal_text(unscaled: i128, scale: u8) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Text of a numeric back to its unscaled value at `scale`.
fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let scale = usize::from(scale);
    if fraction.len() > scale || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{whole}{fraction:0<scale$}");
    let magnitude: i128 = digits.parse().ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// The multi-row upsert of `rows`.
fn upsert(
    table: &str,
    schema: &DatasetSchema,
    rows: &[&DatasetRow],
    kept_on_update: &[String],
) -> Result<QueryBuilder<Postgres>, String> {
    let mut names: Vec<String> = schema.columns.iter().map(|c| quoted(&c.name)).collect();
    names.extend([ID_COLUMN, OPERATION_COLUMN, VERSION_COLUMN, DELETED_COLUMN, SYNCED_AT_COLUMN].map(quoted));
    let mut insert = QueryBuilder::<Postgres>::new(format!("INSERT INTO {} ({}) ", quoted(table), names.join(", ")));
    let mut mismatch = None;
    insert.push_values(rows, |mut tuple, row| {
        for (i, column) in schema.columns.iter().enumerate() {
            let value = row.values.get(i).unwrap_or(&Value::Null);
            let cast = sql_type(column.kind);
            match (column.kind, value) {
                (_, Value::Null) => tuple.push_bind(None::<String>),
                (ColumnKind::Text, Value::Text(s)) => tuple.push_bind(s.clone()),
                (ColumnKind::Boolean, Value::Boolean(b)) => tuple.push_bind(*b),
                (ColumnKind::Integer, Value::Integer(n)) => tuple.push_bind(*n),
                (ColumnKind::BigInt, Value::BigInt(n)) => tuple.push_bind(*n),
                (ColumnKind::Double, Value::Double(x)) => tuple.push_bind(*x),
                (ColumnKind::Decimal { scale }, Value::Decimal(n)) => tuple.push_bind(decimal_text(*n, scale)),
                (ColumnKind::Timestamp, Value::Timestamp(t)) => tuple.push_bind(timestamp_text(*t)),
                (ColumnKind::Date, Value::Date(d)) => tuple.push_bind(d.to_string()),
                (ColumnKind::Uuid, Value::Uuid(u)) => tuple.push_bind(u.to_string()),
                (kind, _) => {
                    mismatch.get_or_insert_with(|| {
                        format!(
                            "record {}: the column {} holds {kind:?} values but the record has {value:?} there: \
                             the mapping and the schema disagree",
                            row.id, column.name
                        )
                    });
                    tuple.push_bind(None::<String>)
                }
            };
            tuple.push_unseparated(format!("::{cast}"));
        }
        tuple.push_bind(row.id.to_string()).push_unseparated("::uuid");
        tuple.push_bind(row.operation.as_str());
        tuple.push_bind(row.version);
        tuple.push_bind(row.deleted());
        tuple.push_bind(timestamp_text(row.synced_at)).push_unseparated("::timestamptz");
    });
    if let Some(mismatch) = mismatch {
        return Err(mismatch);
    }
    let kept = format!("{}.", quoted(table));
    let mut set: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let name = quoted(&c.name);
            // A delete keeps the row's last values: it says the record is gone, not what it held. A column whose
            // updates are not applied keeps its value through an update too.
            let keep = match kept_on_update.contains(&c.name) {
                true => format!(
                    "excluded.{deleted} OR excluded.{op} = 'u'",
                    op = quoted(OPERATION_COLUMN),
                    deleted = quoted(DELETED_COLUMN)
                ),
                false => format!("excluded.{}", quoted(DELETED_COLUMN)),
            };
            format!("{name} = CASE WHEN {keep} THEN {kept}{name} ELSE excluded.{name} END")
        })
        .collect();
    set.extend(
        [OPERATION_COLUMN, VERSION_COLUMN, DELETED_COLUMN, SYNCED_AT_COLUMN]
            .map(|c| format!("{name} = excluded.{name}", name = quoted(c))),
    );
    let (version, deleted, op) = (quoted(VERSION_COLUMN), quoted(DELETED_COLUMN), quoted(OPERATION_COLUMN));
    // A replay reads every row again: the same version read rewrites the row (its kept columns with it).
    insert.push(format!(
        " ON CONFLICT ({id}) DO UPDATE SET {set} \
         WHERE excluded.{version} > {kept}{version} \
         OR (excluded.{op} = 'r' AND excluded.{version} >= {kept}{version}) \
         OR (excluded.{deleted} AND NOT {kept}{deleted} \
             AND (excluded.{version} IS NULL OR {kept}{version} IS NULL OR excluded.{version} >= {kept}{version}))",
        id = quoted(ID_COLUMN),
        set = set.join(", "),
    ));
    Ok(insert)
}

/// How a column is selected so that [`read_row`] can decode it without sqlx's chrono, uuid or decimal support.
fn read_expression(column: &str, kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Timestamp => format!("(extract(epoch from {column}) * 1000000)::int8"),
        ColumnKind::Date => format!("({column} - date '1970-01-01')::int4"),
        ColumnKind::Decimal { .. } | ColumnKind::Uuid => format!("{column}::text"),
        _ => column.to_string(),
    }
}

fn decoding(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(what.to_string().into())
}

fn read_row(schema: &DatasetSchema, row: &PgRow) -> Result<DatasetRow, sqlx::Error> {
    let mut values = Vec::with_capacity(schema.columns.len());
    for (i, column) in schema.columns.iter().enumerate() {
        let value = match column.kind {
            ColumnKind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::Text),
            ColumnKind::Boolean => row.try_get::<Option<bool>, _>(i)?.map(Value::Boolean),
            ColumnKind::Integer => row.try_get::<Option<i32>, _>(i)?.map(Value::Integer),
            ColumnKind::BigInt => row.try_get::<Option<i64>, _>(i)?.map(Value::BigInt),
            ColumnKind::Double => row.try_get::<Option<f64>, _>(i)?.map(Value::Double),
            ColumnKind::Decimal { scale } => match row.try_get::<Option<String>, _>(i)? {
                Some(text) => Some(Value::Decimal(parse_decimal(&text, scale).ok_or_else(|| decoding(&text))?)),
                None => None,
            },
            ColumnKind::Timestamp => match row.try_get::<Option<i64>, _>(i)? {
                Some(micros) => Some(Value::Timestamp(
                    DateTime::from_timestamp_micros(micros).ok_or_else(|| decoding("a timestamp out of range"))?,
                )),
                None => None,
            },
            ColumnKind::Date => match row.try_get::<Option<i32>, _>(i)? {
                Some(days) => Some(Value::Date(
                    NaiveDate::from_ymd_opt(1970, 1, 1)
                        .and_then(|epoch| epoch.checked_add_signed(chrono::Duration::days(days.into())))
                        .ok_or_else(|| decoding("a date out of range"))?,
                )),
                None => None,
            },
            ColumnKind::Uuid => match row.try_get::<Option<String>, _>(i)? {
                Some(text) => Some(Value::Uuid(text.parse().map_err(|_| decoding(&text))?)),
                None => None,
            },
        };
        values.push(value.unwrap_or(Value::Null));
    }
    let n = schema.columns.len();
    let id: String = row.try_get(n)?;
    let operation = match row.try_get::<String, _>(n + 1)?.as_str() {
        "c" => Operation::Create,
        "u" => Operation::Update,
        "d" => Operation::Delete,
        "r" => Operation::Read,
        other => return Err(decoding(&format!("the operation '{other}'"))),
    };
    let synced: i64 = row.try_get(n + 3)?;
    Ok(DatasetRow {
        id: Uuid::parse_str(&id).map_err(|_| decoding(&id))?,
        operation,
        version: row.try_get(n + 2)?,
        values,
        synced_at: DateTime::from_timestamp_micros(synced).ok_or_else(|| decoding("a timestamp out of range"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_travel_as_exact_text_both_ways() {
        for (unscaled, scale, text) in [
            (12345, 2, "123.45"),
            (-12345, 2, "-123.45"),
            (5, 3, "0.005"),
            (-5, 3, "-0.005"),
            (0, 2, "0.00"),
            (42, 0, "42"),
            (99_999_999_999_999_999_999_999_999_999_999_999_999, 10, "9999999999999999999999999999.9999999999"),
        ] {
            assert_eq!(decimal_text(unscaled, scale), text);
            assert_eq!(parse_decimal(text, scale), Some(unscaled), "{text}");
        }
        assert_eq!(parse_decimal("1.5", 3), Some(1500), "PostgreSQL may print fewer digits than the scale");
        assert_eq!(parse_decimal("1.2345", 2), None, "more digits than the scale is not what dynsync wrote");
    }

    #[test]
    fn generations_after_the_first_get_their_own_table() {
        let dataset = DatasetName::try_from("contacts".to_string()).unwrap();
        assert_eq!(table_name(&dataset, 1), "contacts");
        assert_eq!(table_name(&dataset, 3), "contacts_g3");
    }

    #[test]
    fn names_are_quoted_so_that_any_column_name_is_safe() {
        assert_eq!(quoted("first name"), "\"first name\"");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }

    #[tokio::test]
    async fn a_password_never_reaches_a_message() {
        let url = "postgres://dynsync:s3cret@db.example.com:5432/data";
        assert_eq!(redact(url), "postgres://dynsync:***@db.example.com:5432/data");
        assert_eq!(
            scrub("connect to postgres://dynsync:s3cret@db failed", url),
            "connect to postgres://dynsync:***@db failed"
        );
        let destination = PostgresDestination::connect(url).unwrap();
        assert!(!format!("{destination:?}").contains("s3cret"));
        assert!(!destination.describe().contains("s3cret"));
    }

    #[test]
    fn a_statement_stays_under_postgresqls_parameter_limit() {
        let wide = DatasetSchema {
            columns: (0..200).map(|i| DatasetColumn { name: format!("c{i}"), kind: ColumnKind::Text }).collect(),
        };
        let count = rows_per_statement(wide.columns.len());
        let row = DatasetRow {
            id: Uuid::nil(),
            operation: Operation::Read,
            version: Some(1),
            values: vec![Value::Text("x".into()); 200],
            synced_at: DateTime::UNIX_EPOCH,
        };
        let rows = vec![row; count + 1];
        let sql = upsert("contacts", &wide, &rows[..count].iter().collect::<Vec<_>>(), &[]).unwrap().into_string();
        let highest = sql
            .split('$')
            .skip(1)
            .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
            .max();
        assert_eq!(highest, Some(count * 205));
        assert!(count * 205 <= MAX_PARAMETERS && (count + 1) * 205 > MAX_PARAMETERS, "as many rows as fit: {count}");
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused_naming_the_record_and_column() {
        let schema = DatasetSchema { columns: vec![DatasetColumn { name: "age".into(), kind: ColumnKind::Integer }] };
        let row = DatasetRow {
            id: Uuid::from_u128(7),
            operation: Operation::Read,
            version: Some(1),
            values: vec![Value::Text("seven".into())],
            synced_at: DateTime::UNIX_EPOCH,
        };
        let refused = upsert("people", &schema, &[&row], &[]).err().expect("refused");
        assert!(refused.contains("age") && refused.contains(&Uuid::from_u128(7).to_string()), "{refused}");
    }
}
