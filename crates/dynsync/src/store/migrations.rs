//! Schema migrations, run at start. Each is plain SQL that SQLite and PostgreSQL both take, applied once and
//! recorded, under a lock so that processes starting together on one PostgreSQL do not collide.

use super::StoreError;
use super::engine::{Engine, Migration};

const MIGRATIONS: &[Migration] = &[(
    "0001_resources",
    &[
        "CREATE TABLE IF NOT EXISTS connections (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, secrets TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS connections_sandbox ON connections (sandbox)",
        "CREATE TABLE IF NOT EXISTS target_connections (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, base_connection_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS target_connections_base ON target_connections (base_connection_id)",
        "CREATE INDEX IF NOT EXISTS target_connections_sandbox ON target_connections (sandbox)",
        "CREATE TABLE IF NOT EXISTS flows (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, target_connection_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS flows_target ON flows (target_connection_id)",
        "CREATE INDEX IF NOT EXISTS flows_sandbox ON flows (sandbox)",
    ],
)];

pub async fn run(engine: &Engine) -> Result<(), StoreError> {
    for version in engine.migrate(MIGRATIONS).await? {
        tracing::info!(version, "applied a store migration");
    }
    Ok(())
}
