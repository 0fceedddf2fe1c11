//! Schema migrations, run at start. Each is plain SQL that SQLite and PostgreSQL both take, applied once and
//! recorded; `IF NOT EXISTS` keeps two processes starting together on one PostgreSQL from colliding.

use super::{StoreError, engine::Engine};

const MIGRATIONS: &[(&str, &[&str])] = &[(
    "0001_resources",
    &[
        "CREATE TABLE IF NOT EXISTS connections (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, secrets TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS connections_sandbox ON connections (sandbox)",
        "CREATE TABLE IF NOT EXISTS target_connections (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS target_connections_sandbox ON target_connections (sandbox)",
        "CREATE TABLE IF NOT EXISTS flows (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS flows_sandbox ON flows (sandbox)",
    ],
)];

pub async fn run(engine: &Engine) -> Result<(), StoreError> {
    engine
        .execute(
            "CREATE TABLE IF NOT EXISTS dynsync_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)",
            &[],
        )
        .await?;
    let applied: Vec<String> = engine
        .fetch("SELECT version FROM dynsync_migrations", &[])
        .await?
        .into_iter()
        .filter_map(|mut r| r.pop().flatten())
        .collect();
    for (version, statements) in MIGRATIONS {
        if applied.iter().any(|v| v == version) {
            continue;
        }
        for sql in *statements {
            engine.execute(sql, &[]).await.map_err(|e| match e {
                StoreError::Database(source) => StoreError::Migration { version, source },
                other => other,
            })?;
        }
        engine
            .execute(
                "INSERT INTO dynsync_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                &[(*version).into(), chrono::Utc::now().to_rfc3339().into()],
            )
            .await?;
        tracing::info!(version, "applied a store migration");
    }
    Ok(())
}
