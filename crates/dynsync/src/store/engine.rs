//! The two database engines behind one small interface: statements with `$1…` parameters, rows read into typed
//! structs by column name.
//! Everything is stored as text (ids, JSON bodies, RFC 3339 times), which both engines hold alike.

use super::StoreError;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, postgres::PgConnectOptions};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A migration: its version, and statements both engines take.
pub type Migration = (&'static str, &'static [&'static str]);

const MIGRATIONS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS dynsync_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

pub enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A statement parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(String),
    Int(i64),
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

/// Binds parameters to a query of either engine.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(t) => query.bind(t.clone()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }};
}

/// A statement that must change at least one row for its transaction to commit: the fencing check of an
/// acknowledgement.
pub struct Guard {
    pub sql: &'static str,
    pub args: Vec<Arg>,
}

/// Rows both engines can read into: every typed row of the store.
pub trait Row:
    for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin
{
}
impl<T> Row for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin
{
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Arg::Text(value)
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(value.to_string())
    }
}

/// SQLite numbers parameters `?1`; PostgreSQL `$1`. Only the store's own constant statements come here.
fn for_sqlite(sql: &'static str) -> String {
    sql.replace('$', "?")
}

impl Engine {
    pub async fn connect(url: &str) -> Result<Engine, StoreError> {
        let open = |source| StoreError::Open { location: redact(url), source };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(open)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(open)?;
            Ok(Engine::Postgres(pool))
        } else {
            let options = SqliteConnectOptions::from_str(url).map_err(open)?.create_if_missing(true);
            Self::sqlite(options, url).await
        }
    }

    pub async fn sqlite_file(path: &Path) -> Result<Engine, StoreError> {
        // Readable by its owner only: it holds the flows, the log and sealed secrets. SQLite gives its journal
        // files the database file's permissions.
        create_private_file(path)
            .map_err(|e| StoreError::Open { location: path.display().to_string(), source: sqlx::Error::Io(e) })?;
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
        Self::sqlite(options, &path.display().to_string()).await
    }

    async fn sqlite(options: SqliteConnectOptions, location: &str) -> Result<Engine, StoreError> {
        let options = options.journal_mode(SqliteJournalMode::Wal).busy_timeout(Duration::from_secs(10));
        // Turning a new file to WAL takes an exclusive lock that SQLite does not wait for: a process opening the
        // file while another one migrates it is told "database is locked" at once, and tries again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut backoff = dataverse::Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            match SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await {
                Ok(pool) => return Ok(Engine::Sqlite(pool)),
                Err(source) if is_busy(&source) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(source) => return Err(StoreError::Open { location: location.to_string(), source }),
            }
        }
    }

    pub fn kind(&self) -> DatabaseKind {
        match self {
            Engine::Sqlite(_) => DatabaseKind::Sqlite,
            Engine::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    /// Applies the migrations not applied yet, in one transaction that holds the migration lock (an advisory lock
    /// on PostgreSQL, the write lock on SQLite), so that processes starting together apply each once. Returns the
    /// versions it applied.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<Vec<&'static str>, StoreError> {
        macro_rules! migrate_in {
            ($tx:expr, $insert:expr) => {{
                let tx = &mut $tx;
                sqlx::query(MIGRATIONS_TABLE).execute(&mut **tx).await?;
                let applied: Vec<String> =
                    sqlx::query_scalar("SELECT version FROM dynsync_migrations").fetch_all(&mut **tx).await?;
                let mut done = Vec::new();
                for (version, statements) in migrations {
                    if applied.iter().any(|v| v == version) {
                        continue;
                    }
                    for sql in *statements {
                        sqlx::query(*sql)
                            .execute(&mut **tx)
                            .await
                            .map_err(|source| StoreError::Migration { version, source })?;
                    }
                    sqlx::query($insert)
                        .bind(*version)
                        .bind(chrono::Utc::now().to_rfc3339())
                        .execute(&mut **tx)
                        .await?;
                    done.push(*version);
                }
                done
            }};
        }
        Ok(match self {
            Engine::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let done = migrate_in!(tx, "INSERT INTO dynsync_migrations (version, applied_at) VALUES (?1, ?2)");
                tx.commit().await?;
                done
            }
            Engine::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7245120)").execute(&mut *tx).await?;
                let done = migrate_in!(tx, "INSERT INTO dynsync_migrations (version, applied_at) VALUES ($1, $2)");
                tx.commit().await?;
                done
            }
        })
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&self, sql: &'static str, args: &[Arg]) -> Result<u64, StoreError> {
        Ok(match self {
            Engine::Sqlite(pool) => {
                let query = bind_all!(sqlx::query(AssertSqlSafe(for_sqlite(sql))), args);
                query.execute(pool).await?.rows_affected()
            }
            Engine::Postgres(pool) => {
                let query = bind_all!(sqlx::query(sql), args);
                query.execute(pool).await?.rows_affected()
            }
        })
    }

    /// Appends a row of `messages` entries to an inlet log, numbered after the last one (the row takes the
    /// numbers up to its `seq`). On PostgreSQL the append lock makes appends commit in the order they are
    /// numbered, so a reader never passes a number a slower writer has yet to commit.
    pub async fn append_log(
        &self,
        lock: i64,
        inlet: &str,
        received_at: &str,
        messages: i64,
        body: &str,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO inlet_log (seq, flow_id, received_at, messages, body)
             SELECT COALESCE(MAX(seq), 0) + $1, $2, $3, $1, $4 FROM inlet_log";
        match self {
            Engine::Sqlite(pool) => {
                let insert = sqlx::query(AssertSqlSafe(for_sqlite(INSERT)));
                insert.bind(messages).bind(inlet).bind(received_at).bind(body).execute(pool).await?;
            }
            Engine::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock).execute(&mut *tx).await?;
                sqlx::query(INSERT).bind(messages).bind(inlet).bind(received_at).bind(body).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Runs statements in one transaction: all of them, or none. A `guard` runs first and must change a row, or
    /// nothing is written and the answer is `StoreError::Fenced`.
    pub async fn transaction(
        &self,
        guard: Option<&Guard>,
        statements: &[(&'static str, Vec<Arg>)],
    ) -> Result<(), StoreError> {
        macro_rules! run_in {
            ($tx:expr, $sql:expr) => {{
                if let Some(guard) = guard {
                    let changed = bind_all!(sqlx::query($sql(guard.sql)), &guard.args).execute(&mut *$tx).await?;
                    if changed.rows_affected() == 0 {
                        return Err(StoreError::Fenced);
                    }
                }
                for (sql, args) in statements {
                    bind_all!(sqlx::query($sql(sql)), args).execute(&mut *$tx).await?;
                }
                $tx.commit().await?;
            }};
        }
        match self {
            Engine::Sqlite(pool) => {
                // The guard is a write, so it takes the write lock: its answer holds until the commit.
                let mut tx = pool.begin().await?;
                run_in!(tx, |sql: &'static str| AssertSqlSafe(for_sqlite(sql)));
            }
            Engine::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                run_in!(tx, |sql: &'static str| sql);
            }
        }
        Ok(())
    }

    /// Runs a query and reads each row into `T` by column name.
    pub async fn fetch_as<T: Row>(&self, sql: &'static str, args: &[Arg]) -> Result<Vec<T>, StoreError> {
        Ok(match self {
            Engine::Sqlite(pool) => {
                bind_all!(sqlx::query_as::<_, T>(AssertSqlSafe(for_sqlite(sql))), args).fetch_all(pool).await?
            }
            Engine::Postgres(pool) => bind_all!(sqlx::query_as::<_, T>(sql), args).fetch_all(pool).await?,
        })
    }
}

/// Whether SQLite said the database is locked (`SQLITE_BUSY`).
fn is_busy(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("5"))
}

/// Creates an empty file readable and writable by its owner only, unless it exists.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
