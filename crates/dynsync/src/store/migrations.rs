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
), (
    "0002_activation",
    &[
        // The durable log of accepted profiles, one inlet (flow) each. Sequence numbers are given by the
        // appending transaction, which holds the append lock, so they commit in order on both engines.
        "CREATE TABLE IF NOT EXISTS profile_log (
            seq BIGINT PRIMARY KEY, inlet TEXT NOT NULL, received_at TEXT NOT NULL, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS profile_log_inlet ON profile_log (inlet, seq)",
        // A flow's progress: the last sequence number it acknowledged.
        "CREATE TABLE IF NOT EXISTS flow_progress (flow_id TEXT PRIMARY KEY, acked BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS activation_runs (
            flow_id TEXT NOT NULL, hour TEXT NOT NULL, received BIGINT NOT NULL, activated BIGINT NOT NULL,
            excluded BIGINT NOT NULL, failed BIGINT NOT NULL, PRIMARY KEY (flow_id, hour))",
        "CREATE TABLE IF NOT EXISTS run_outcomes (
            flow_id TEXT NOT NULL, hour TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
            count BIGINT NOT NULL, samples TEXT NOT NULL, PRIMARY KEY (flow_id, hour, outcome, code))",
        "CREATE TABLE IF NOT EXISTS failed_contacts (
            flow_id TEXT NOT NULL, contact_id TEXT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
            patch TEXT NOT NULL, failed_at TEXT NOT NULL, PRIMARY KEY (flow_id, contact_id))",
    ],
), (
    "0003_pipeline",
    &[
        // The log, the cursors, the runs and the failed records belong to every job, not to activation.
        "ALTER TABLE profile_log RENAME TO inlet_log",
        "ALTER TABLE inlet_log RENAME COLUMN inlet TO flow_id",
        "DROP INDEX IF EXISTS profile_log_inlet",
        "CREATE INDEX IF NOT EXISTS inlet_log_flow ON inlet_log (flow_id, seq)",
        // A cursor is text: a log sequence number, or a Dataverse delta token.
        "CREATE TABLE IF NOT EXISTS flow_cursors (flow_id TEXT PRIMARY KEY, cursor TEXT NOT NULL)",
        "INSERT INTO flow_cursors (flow_id, cursor) SELECT flow_id, CAST(acked AS TEXT) FROM flow_progress",
        "DROP TABLE flow_progress",
        "ALTER TABLE activation_runs RENAME TO runs",
        "ALTER TABLE runs RENAME COLUMN activated TO written",
        "ALTER TABLE failed_contacts RENAME TO failed_records",
        "ALTER TABLE failed_records RENAME COLUMN contact_id TO record_key",
        "ALTER TABLE failed_records RENAME COLUMN patch TO payload",
        "ALTER TABLE flows ADD COLUMN job TEXT NOT NULL DEFAULT 'activation'",
        // Deleting a flow now deletes its log; what flows deleted before left behind goes once, here.
        "DELETE FROM inlet_log WHERE flow_id NOT IN (SELECT id FROM flows)",
        // One owner per enabled flow: a lease renewed by heartbeat, and a generation that each new owner
        // increments and each acknowledgement checks.
        "CREATE TABLE IF NOT EXISTS flow_leases (
            flow_id TEXT PRIMARY KEY, owner TEXT NOT NULL, generation BIGINT NOT NULL, expires_at BIGINT NOT NULL,
            status TEXT NOT NULL, detail TEXT NOT NULL)",
        // The processes serving, each with its last heartbeat: flows are shared among the live ones.
        "CREATE TABLE IF NOT EXISTS processes (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL, started_at TEXT NOT NULL)",
    ],
), (
    "0004_inlets_outbox",
    &[
        // The digests of the secrets that open an inlet URL; expires_at 0 = until rotated.
        "CREATE TABLE IF NOT EXISTS inlet_secrets (
            flow_id TEXT NOT NULL, digest TEXT NOT NULL, expires_at BIGINT NOT NULL, PRIMARY KEY (flow_id, digest))",
        // Bodies an inlet refused, kept to be inspected.
        "CREATE TABLE IF NOT EXISTS inlet_rejects (
            id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, received_at TEXT NOT NULL, body TEXT NOT NULL,
            problems TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS inlet_rejects_flow ON inlet_rejects (flow_id, received_at)",
        // Messages to send (a new lead's notification) until the server takes them.
        "CREATE TABLE IF NOT EXISTS outbox (
            id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, payload TEXT NOT NULL, released BIGINT NOT NULL,
            attempts BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL, sent_at TEXT NOT NULL, last_error TEXT NOT NULL,
            created_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (released, sent_at, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS outbox_flow ON outbox (flow_id)",
    ],
), (
    "0005_api_tokens",
    &[
        // Tokens made through the API, by digest; revoked_at '' while the token works.
        "CREATE TABLE IF NOT EXISTS api_tokens (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, roles TEXT NOT NULL,
            sandboxes TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT NOT NULL)",
    ],
), (
    "0006_governance",
    &[
        // Each sandbox's labels and data-usage policies, as one JSON document.
        "CREATE TABLE IF NOT EXISTS governance (
            sandbox TEXT PRIMARY KEY, document TEXT NOT NULL, etag TEXT NOT NULL, updated_at TEXT NOT NULL)",
    ],
), (
    "0007_ingestion",
    &[
        // What an ingestion reads (a table or view of a Dynamics connection) and where it writes (a dataset).
        "CREATE TABLE IF NOT EXISTS source_connections (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, etag TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, base_connection_id TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS source_connections_sandbox ON source_connections (sandbox)",
        "CREATE TABLE IF NOT EXISTS dataset_targets (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, secrets TEXT NOT NULL,
            etag TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS dataset_targets_sandbox ON dataset_targets (sandbox)",
        // Each load of an ingestion flow: its run is the flow's run keyed by the load's start.
        "CREATE TABLE IF NOT EXISTS ingestion_loads (
            flow_id TEXT NOT NULL, started_at TEXT NOT NULL, kind TEXT NOT NULL, generation BIGINT NOT NULL,
            finished_at TEXT NOT NULL, PRIMARY KEY (flow_id, started_at))",
        // The ids each page of a resync saw: what it did not see is marked deleted when it ends.
        "CREATE TABLE IF NOT EXISTS resync_seen (
            flow_id TEXT NOT NULL, load_started TEXT NOT NULL, page TEXT NOT NULL, ids TEXT NOT NULL,
            PRIMARY KEY (flow_id, load_started, page))",
    ],
), (
    "0008_engagement",
    &[
        // A flow's key for checking its sender's signatures, when the sender signs with a shared secret (Mailgun):
        // sealed with the store's key, bound to the flow.
        "CREATE TABLE IF NOT EXISTS signing_keys (flow_id TEXT PRIMARY KEY, sealed TEXT NOT NULL)",
        // The consent ledger (see store/consent.rs): times in milliseconds, so that they order as numbers.
        "CREATE TABLE IF NOT EXISTS consent_changes (
            flow_id TEXT NOT NULL, event_key TEXT NOT NULL, contact_id TEXT NOT NULL, email TEXT NOT NULL,
            opted_out BIGINT NOT NULL, occurred_at BIGINT NOT NULL, side TEXT NOT NULL, source TEXT NOT NULL,
            reason TEXT NOT NULL, applied BIGINT NOT NULL, recorded_at BIGINT NOT NULL,
            PRIMARY KEY (flow_id, event_key))",
        "CREATE INDEX IF NOT EXISTS consent_changes_contact ON consent_changes (contact_id, occurred_at)",
    ],
), (
    "0009_records_out",
    &[
        // What a webhook dataset was sent (see store/delivered.rs): the newest row of each record, and the schema.
        "CREATE TABLE IF NOT EXISTS delivered_records (
            target_id TEXT NOT NULL, generation BIGINT NOT NULL, record_id TEXT NOT NULL, operation TEXT NOT NULL,
            version BIGINT NOT NULL, deleted BIGINT NOT NULL, record_values TEXT NOT NULL, synced_at BIGINT NOT NULL,
            PRIMARY KEY (target_id, generation, record_id))",
        "CREATE TABLE IF NOT EXISTS delivered_schemas (
            target_id TEXT NOT NULL, generation BIGINT NOT NULL, schema TEXT NOT NULL,
            PRIMARY KEY (target_id, generation))",
        // When a replay of an ingestion flow was last asked for: a load started after it reads the table whole.
        "CREATE TABLE IF NOT EXISTS replays (flow_id TEXT PRIMARY KEY, requested_at BIGINT NOT NULL)",
    ],
), (
    "0010_timeline",
    &[
        // Who changed what, when (see store/timeline.rs): kept after the resource is deleted. Times in milliseconds.
        "CREATE TABLE IF NOT EXISTS timeline (
            id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, kind TEXT NOT NULL, resource_id TEXT NOT NULL,
            name TEXT NOT NULL, action TEXT NOT NULL, actor TEXT NOT NULL, at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS timeline_sandbox ON timeline (sandbox, at)",
        "CREATE INDEX IF NOT EXISTS timeline_resource ON timeline (sandbox, resource_id, at)",
    ],
), (
    "0011_alerts",
    &[
        // A flow's alert rules (see store/alerts.rs): a JSON document, and its webhooks' signing secret, sealed.
        "CREATE TABLE IF NOT EXISTS alert_rules (
            flow_id TEXT PRIMARY KEY, sandbox TEXT NOT NULL, rules TEXT NOT NULL, signing_secret TEXT NOT NULL,
            updated_at TEXT NOT NULL)",
        // Whether each rule's alert is open: changed only by a conditional write, so that one process opens it.
        "CREATE TABLE IF NOT EXISTS alert_states (
            flow_id TEXT NOT NULL, rule_id TEXT NOT NULL, open BIGINT NOT NULL, changed_at BIGINT NOT NULL,
            event_id TEXT NOT NULL, PRIMARY KEY (flow_id, rule_id))",
        // Openings and resolutions, the newest kept per flow; times in milliseconds.
        "CREATE TABLE IF NOT EXISTS alert_events (
            id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, rule_id TEXT NOT NULL, at BIGINT NOT NULL, notice TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS alert_events_flow ON alert_events (flow_id, at)",
        // Each event's notice on each channel, until the channel takes it.
        "CREATE TABLE IF NOT EXISTS alert_deliveries (
            id TEXT PRIMARY KEY, event_id TEXT NOT NULL, flow_id TEXT NOT NULL, channel TEXT NOT NULL,
            target TEXT NOT NULL, payload TEXT NOT NULL, attempts BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL,
            sent_at TEXT NOT NULL, last_error TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (sent_at, next_attempt_at)",
        "CREATE INDEX IF NOT EXISTS alert_deliveries_flow ON alert_deliveries (flow_id, created_at)",
    ],
), (
    "0012_lag",
    &[
        // A flow's lag, the largest of each minute (see store/lag.rs): minutes in milliseconds since 1970.
        "CREATE TABLE IF NOT EXISTS lag_samples (
            flow_id TEXT NOT NULL, minute BIGINT NOT NULL, lag_ms BIGINT NOT NULL, waiting BIGINT NOT NULL,
            PRIMARY KEY (flow_id, minute))",
        "CREATE INDEX IF NOT EXISTS lag_samples_minute ON lag_samples (minute)",
    ],
), (
    "0013_budget_spending",
    &[
        // What each process spent of each application user's budget on each web server over Dataverse's window
        // (see store/spending.rs): web_server '' for the server no answer named yet; times in milliseconds.
        "CREATE TABLE IF NOT EXISTS budget_spending (
            process_id TEXT NOT NULL, environment TEXT NOT NULL, client_id TEXT NOT NULL, web_server TEXT NOT NULL,
            requests BIGINT NOT NULL, execution_us BIGINT NOT NULL, reported_at BIGINT NOT NULL,
            PRIMARY KEY (process_id, environment, client_id, web_server))",
        "CREATE INDEX IF NOT EXISTS budget_spending_reported ON budget_spending (reported_at)",
    ],
), (
    "0014_log_rows",
    &[
        // An inlet log row holds what one request accepted: `messages` entries, numbered up to its seq, as a
        // JSON list when there are several (see store/log.rs).
        "ALTER TABLE inlet_log ADD COLUMN messages BIGINT NOT NULL DEFAULT 1",
    ],
), (
    "0015_stated_limits",
    &[
        // The latest limit of each kind a 429 stated for an environment, shared by the processes writing to it
        // (see store/spending.rs): kind 'requests' (a count) or 'execution_time' (limit in milliseconds); the
        // window in seconds; stated_at in milliseconds since 1970.
        "CREATE TABLE IF NOT EXISTS stated_limits (
            environment TEXT NOT NULL, kind TEXT NOT NULL, limit_value BIGINT NOT NULL, window_s BIGINT NOT NULL,
            stated_at BIGINT NOT NULL, PRIMARY KEY (environment, kind))",
    ],
), (
    "0016_inlet_log_sizes",
    &[
        // What a read needs to size its rows and the backlog, in the index: `messages` was added after `body`,
        // so reading it from the table walks the whole body (every overflow page of a large request's row in
        // SQLite) — the log's reads spent most of their time there.
        "CREATE INDEX IF NOT EXISTS inlet_log_sizes ON inlet_log (flow_id, seq, messages, received_at)",
        "DROP INDEX IF EXISTS inlet_log_flow",
    ],
)];

pub async fn run(engine: &Engine) -> Result<(), StoreError> {
    for version in engine.migrate(MIGRATIONS).await? {
        tracing::info!(version, "applied a store migration");
    }
    Ok(())
}
