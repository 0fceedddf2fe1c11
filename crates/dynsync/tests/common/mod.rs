//! What the end-to-end tests share: the emulator and dynsync in-process, on SQLite or on a fresh PostgreSQL
//! database, and a client that speaks to the API as Adobe's clients do.

#![allow(dead_code)]

use dataverse::{Client, NewColumn, NewColumnType};
use dataverse_emulator::{AppRegistration, CostModel, EmulatorConfig, RunningEmulator};
use dynsync::{RunningService, Service, ServiceConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use sqlx::Connection;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs a scenario on SQLite and on PostgreSQL, each test bounded in time.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn sqlite() {
                $crate::common::bounded(super::$name($crate::common::Backend::Sqlite)).await;
            }
            #[tokio::test]
            async fn postgres() {
                $crate::common::bounded(super::$name($crate::common::Backend::Postgres)).await;
            }
        })*
    };
}

pub async fn bounded_for(limit: Duration, test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(limit, test).await.unwrap_or_else(|_| panic!("the test finishes within {limit:?}"));
}

pub async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), test).await.expect("the test finishes within two minutes");
}

/// A fresh PostgreSQL database for one test, dropped when the test ends well.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// `None` when no PostgreSQL answers at the default address and none was configured.
    pub async fn create() -> Option<PgDatabase> {
        let configured = std::env::var("DYNSYNC_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
        let admin_url = configured.clone().unwrap_or_else(|| DEFAULT_POSTGRES.to_string());
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) if configured.is_none() => {
                eprintln!(
                    "PostgreSQL is not at {DEFAULT_POSTGRES} ({e}): this test runs on SQLite only; set DYNSYNC_TEST_DATABASE_URL to run it on PostgreSQL"
                );
                return None;
            }
            Err(e) => panic!("DYNSYNC_TEST_DATABASE_URL does not answer: {e}"),
        };
        let name = format!("dynsync_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Some(PgDatabase { admin_url, name, url: url.to_string() })
    }

    pub async fn drop_database(&self) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
        }
    }
}

/// The emulator, dynsync, and a sandbox of the test's own.
/// The emulators of the tests listen here; dynsync is allowed to sign in to them.
pub const LOOPBACK: &str = "127.0.0.1";

pub struct World {
    pub emulator: RunningEmulator,
    pub service: RunningService,
    pub http: reqwest::Client,
    pub sandbox: String,
    pub data_dir: tempfile::TempDir,
    pub database: Option<PgDatabase>,
}

pub struct Reply {
    pub status: StatusCode,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    pub fn detail(&self) -> String {
        self.json()["detail"].as_str().unwrap_or_default().to_string()
    }
}

impl World {
    /// `None` when the backend is PostgreSQL and none is there to use.
    pub async fn start(backend: Backend) -> Option<World> {
        Self::start_with(backend, EmulatorConfig { cost: CostModel::free(), ..Default::default() }).await
    }

    /// A world whose emulator has two app registrations besides the first (`emulator.applications`), each an
    /// application user of its own.
    pub async fn start_with_registrations(backend: Backend) -> Option<World> {
        let applications = (1..=2)
            .map(|i| AppRegistration {
                client_id: Uuid::new_v4(),
                client_secret: dataverse_emulator::Secret::new(format!("abcde~app-{i}-secret")),
            })
            .collect();
        Self::start_with(backend, EmulatorConfig { cost: CostModel::free(), applications, ..Default::default() }).await
    }

    pub async fn start_with(backend: Backend, emulator: EmulatorConfig) -> Option<World> {
        Self::start_configured(backend, emulator, |_| {}).await
    }

    /// A world whose dynsync is started with `settings` applied.
    pub async fn start_configured(
        backend: Backend,
        emulator: EmulatorConfig,
        settings: impl FnOnce(&mut ServiceConfig),
    ) -> Option<World> {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgDatabase::create().await?),
        };
        let emulator = emulator.start().await.unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = ServiceConfig::new(data_dir.path());
        config.database_url = database.as_ref().map(|d| d.url.clone());
        config.allowed_hosts = LOOPBACK.parse().unwrap();
        settings(&mut config);
        let service = Service::start(config).await.unwrap();
        let sandbox = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Some(World { emulator, service, http: reqwest::Client::new(), sandbox, data_dir, database })
    }

    /// Stops dynsync and starts it again on the same data directory and database.
    pub async fn restart(self) -> World {
        self.restart_with(|_| {}).await
    }

    /// Stops dynsync and starts it again on the same data directory and database, with `settings` applied.
    pub async fn restart_with(self, settings: impl FnOnce(&mut ServiceConfig)) -> World {
        let World { emulator, service, http, sandbox, data_dir, database } = self;
        service.stop().await;
        let mut config = ServiceConfig::new(data_dir.path());
        config.database_url = database.as_ref().map(|d| d.url.clone());
        config.allowed_hosts = LOOPBACK.parse().unwrap();
        settings(&mut config);
        let service = Service::start(config).await.unwrap_or_else(|e| panic!("dynsync starts again: {e}"));
        World { emulator, service, http, sandbox, data_dir, database }
    }

    pub async fn finish(self) {
        self.service.stop().await;
        if let Some(db) = &self.database {
            db.drop_database().await;
        }
    }

    pub async fn send_in(&self, sandbox: &str, method: Method, path: &str, body: Option<Json>) -> Reply {
        self.send_as(&self.service.token, sandbox, method, path, body).await
    }

    /// A request with another token than the operator's.
    pub async fn send_as(&self, token: &str, sandbox: &str, method: Method, path: &str, body: Option<Json>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.service.api()))
            .header("Authorization", format!("Bearer {token}"))
            .header("x-api-key", "dynsync-tests")
            .header("x-gw-ims-org-id", "0123456789ABCDEF@AdobeOrg")
            .header("x-sandbox-name", sandbox);
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        Reply { status: response.status(), text: response.text().await.unwrap() }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Json>) -> Reply {
        self.send_in(&self.sandbox.clone(), method, path, body).await
    }
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Json) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    /// The destination auth params of seed 002, pointed at the emulator.
    pub fn destination_params(&self, secret: &str) -> Json {
        json!({
            "clientId": self.emulator.client_id.to_string(),
            "clientSecret": secret,
            "tenantId": self.emulator.tenant_id.to_string(),
            "environmentUrl": self.emulator.url,
            "authorityHost": self.emulator.url,
        })
    }

    pub fn destination_body(&self, params: Json) -> Json {
        json!({
            "name": "Contoso Dynamics",
            "description": "audiences onto contacts",
            "auth": {"specName": "Dynamics 365 Client Credentials", "params": params},
            "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"}
        })
    }

    /// A tested destination connection and a target over it; their ids.
    pub async fn destination(&self, prefix: &str) -> (String, String) {
        let secret = self.emulator.client_secret.expose().to_string();
        let reply = self.post("connections", self.destination_body(self.destination_params(&secret))).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let connection = reply.json()["id"].as_str().unwrap().to_string();
        let reply = self
            .post(
                "targetConnections",
                json!({
                    "name": "Contacts",
                    "description": "loyalty audiences",
                    "baseConnectionId": connection,
                    "connectionSpec": {"id": dynsync::specs::DYNAMICS_DESTINATION.to_string(), "version": "1.0"},
                    "params": {"customizationPrefix": prefix}
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        (connection, reply.json()["id"].as_str().unwrap().to_string())
    }

    /// A Dataverse client of the emulator, for what an admin does in Dynamics.
    pub fn dynamics(&self) -> Client {
        dynsync::demo::emulator_client(&self.emulator)
    }

    /// Adds a text column to contact, as seed 002's prerequisite asks.
    pub async fn add_text_column(&self, schema_name: &str, max_length: u32) {
        let column = NewColumn {
            schema_name: schema_name.into(),
            display_name: schema_name.into(),
            kind: NewColumnType::String { max_length },
        };
        self.dynamics().create_column("contact", &column).await.unwrap();
    }

    /// Creates a contact in Dynamics, as it exists before any activation; its id.
    pub async fn create_contact(&self, lastname: &str) -> Uuid {
        let response =
            self.dynamics().send(Method::POST, "contacts", Some(&json!({"lastname": lastname}))).await.unwrap();
        let location = response.headers()["odata-entityid"].to_str().unwrap().to_string();
        location.rsplit_once('(').unwrap().1.trim_end_matches(')').parse().unwrap()
    }

    /// The destination connection and a target over it, with the gold and silver columns; their ids.
    pub async fn loyalty_destination(&self) -> (String, String) {
        let ids = self.destination("new").await;
        self.add_text_column("new_Gold", 20).await;
        self.add_text_column("new_Silver", 20).await;
        ids
    }

    /// An enabled flow `name` over `target`: gold and silver, contact id and first name, then `more` mapped; its id.
    pub async fn loyalty_flow(&self, target: &str, name: &str, more: &[(&str, &str)]) -> String {
        let mut mappings = vec![
            json!({"source": "contactId", "target": "contactid"}),
            json!({"source": "person.name.firstName", "target": "firstname"}),
        ];
        mappings.extend(more.iter().map(|(source, target)| json!({"source": source, "target": target})));
        let reply = self
            .post(
                "flows",
                json!({
                    "name": name,
                    "targetConnectionIds": [target],
                    "audiences": [
                        {"id": "seg-gold", "name": "Gold", "mappingId": "gold"},
                        {"id": "seg-silver", "name": "Silver", "mappingId": "silver"}
                    ],
                    "mappings": mappings
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.json()["id"].as_str().unwrap().to_string()
    }

    /// Streams `messages` into a flow's inlet, as Adobe's streaming export does; the receipt.
    pub async fn stream(&self, flow: &str, messages: Vec<Json>) -> Json {
        let response = self
            .http
            .post(format!("{}/collection/batch/{flow}", self.service.url))
            .header("Authorization", format!("Bearer {}", self.service.token))
            .json(&json!({ "messages": messages }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.unwrap()
    }

    /// Streams `messages` into a flow's inlet and checks that every one is accepted; the receipt.
    pub async fn stream_all(&self, flow: &str, messages: Vec<Json>) -> Json {
        let count = messages.len();
        let receipt = self.stream(flow, messages).await;
        assert_eq!(receipt["accepted"], count, "every message is accepted: {receipt}");
        receipt
    }

    /// The flow's runs, as GET /runs answers them.
    pub async fn runs(&self, flow: &str) -> Vec<Json> {
        let reply = self.get(&format!("runs?property=flowId=={flow}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()["items"].as_array().unwrap().clone()
    }

    /// The flow's runs once `ready` says they are what the test waits for: a batch is counted in its run once it is
    /// acknowledged, which may be just after its rows are seen written.
    pub async fn runs_when(&self, flow: &str, what: &str, ready: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let runs = self.runs(flow).await;
            if ready(&runs) {
                return runs;
            }
            assert!(Instant::now() < deadline, "{what}: the runs have not come to it: {runs:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The flow's runs, once every accepted profile has been handled.
    pub async fn settled_runs(&self, flow: &str, accepted: u64) -> Vec<Json> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs(flow).await;
            let received = Totals::of(&runs).received;
            if received >= accepted {
                return runs;
            }
            assert!(Instant::now() < deadline, "only {received} of {accepted} profiles handled: {runs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The flow's runs added up, once every accepted profile has been handled.
    pub async fn settled(&self, flow: &str, accepted: u64) -> Totals {
        Totals::of(&self.settled_runs(flow, accepted).await)
    }
}

/// A flow's runs added up: received, written, excluded, failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub written: u64,
    pub excluded: u64,
    pub failed: u64,
}

impl Totals {
    /// The record summaries of `runs`, added up.
    pub fn of(runs: &[Json]) -> Totals {
        let sum =
            |field: &str| -> u64 { runs.iter().map(|r| r["metrics"]["recordSummary"][field].as_u64().unwrap()).sum() };
        Totals {
            received: sum("inputRecordCount"),
            written: sum("outputRecordCount"),
            excluded: sum("skippedRecordCount"),
            failed: sum("failedRecordCount"),
        }
    }
}

/// A streaming message for a contact in some audiences, with an empty birth date and the first name if given.
pub fn profile(contact: &str, first_name: Option<&str>, memberships: &[(&str, &str)]) -> Json {
    let ups: serde_json::Map<String, Json> =
        memberships.iter().map(|(a, s)| (a.to_string(), json!({"status": s}))).collect();
    let mut entity = json!({
        "identityMap": {"contactId": [{"id": contact, "primary": true}]},
        "segmentMembership": {"ups": ups},
        "person": {"birthDate": ""},
    });
    if let Some(name) = first_name {
        entity["person"]["name"] = json!({"firstName": name});
    }
    json!({"header": {"schemaRef": {"id": "https://ns.adobe.com/contoso/schemas/profile"}}, "body": {"xdmEntity": entity}})
}

/// A contact as Dynamics holds it, read by an admin with `dynamics`.
pub async fn read_contact(dynamics: &Client, id: impl std::fmt::Display) -> Json {
    let response = dynamics
        .send(Method::GET, &format!("contacts({id})?$select=firstname,lastname,birthdate,new_gold,new_silver"), None)
        .await
        .unwrap();
    assert!(response.status().is_success(), "contact {id}: {}", response.status());
    response.json().await.unwrap()
}

/// The API token of the tests' own `dynsync serve` processes.
pub const PROCESS_TOKEN: &str = "process-test-token";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `dynsync serve` process started from the binary, as a user starts it.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl ServeProcess {
    /// `dynsync serve` on a free port of 127.0.0.1, with `args` and `env` added; its log is not kept.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_dynsync"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("DYNSYNC_API_TOKENS", PROCESS_TOKEN)
            .env("DYNSYNC_ALLOWED_HOSTS", LOOPBACK)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dynsync starts");
        ServeProcess { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Waits until the process answers `/readyz`.
    pub async fn ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http.get(format!("{}/readyz", self.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "dynsync at {} never became ready", self.url);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request to the process's API, in sandbox `prod`; an error status is an error.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> reqwest::Result<Json> {
        let mut request = http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(PROCESS_TOKEN)
            .header("x-sandbox-name", "prod");
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await?.error_for_status()?.json().await
    }

    /// Connects the emulator and a target over it; the target's id.
    pub async fn target(&self, http: &reqwest::Client, emulator: &RunningEmulator) -> Json {
        let base = dynsync::api::BASE_PATH;
        let spec = dynsync::specs::DYNAMICS_DESTINATION.to_string();
        let connection = self.call(http, Method::POST, &format!("{base}/connections"), Some(json!({
            "name": "Emulator",
            "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
                "clientId": emulator.client_id.to_string(), "clientSecret": emulator.client_secret.expose(),
                "tenantId": emulator.tenant_id.to_string(), "environmentUrl": emulator.url, "authorityHost": emulator.url}},
            "connectionSpec": {"id": spec, "version": "1.0"}
        })))
        .await
        .unwrap()["id"]
            .clone();
        self.call(
            http,
            Method::POST,
            &format!("{base}/targetConnections"),
            Some(json!({
                "name": "Contacts", "baseConnectionId": connection, "params": {"customizationPrefix": "new"},
                "connectionSpec": {"id": spec, "version": "1.0"}
            })),
        )
        .await
        .unwrap()["id"]
            .clone()
    }

    /// Connects the emulator, a target over it, and a flow of the `seg-gold` audience onto `new_gold` with the
    /// first name mapped; the flow's id.
    pub async fn gold_flow(&self, http: &reqwest::Client, emulator: &RunningEmulator) -> String {
        let base = dynsync::api::BASE_PATH;
        let target = self.target(http, emulator).await;
        self.call(http, Method::POST, &format!("{base}/flows"), Some(json!({
            "name": "Gold", "targetConnectionIds": [target],
            "audiences": [{"id": "seg-gold", "mappingId": "gold"}],
            "mappings": [{"source": "contactId", "target": "contactid"}, {"source": "person.name.firstName", "target": "firstname"}]
        })))
        .await
        .unwrap()["id"]
            .as_str()
            .expect("the flow is created")
            .to_string()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real SMTP server for a test: Python's aiosmtpd, keeping what it receives in a Maildir. It stops with the
/// test.
pub struct SmtpServer {
    pub port: u16,
    maildir: tempfile::TempDir,
    process: std::process::Child,
}

impl SmtpServer {
    /// Starts aiosmtpd on a free port of 127.0.0.1 and waits until it answers.
    pub async fn start() -> SmtpServer {
        let maildir = tempfile::tempdir().unwrap();
        let port = free_port();
        let process = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd answers on port {port} (is it installed? pip install aiosmtpd)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        SmtpServer { port, maildir, process }
    }

    /// dynsync's settings to send through this server.
    pub fn settings(&self) -> dynsync::leads::notify::SmtpSettings {
        dynsync::leads::notify::SmtpSettings::local(self.port, "dynsync@contoso.com")
    }

    /// The messages received, as their raw text.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail").join("new");
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }

    /// Waits until `count` messages are there (or the deadline has passed); the messages.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ------------------------------------------------------------------ readers of datasets nobody here wrote

pub fn readers_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/readers")
}

pub fn found(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The virtual environment with DuckDB and pyarrow, made on first use from the pinned requirements (once, though
/// the tests run in parallel).
pub fn python() -> std::path::PathBuf {
    static MADE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = readers_dir();
    let python = dir.join(".venv/bin/python");
    let ready = |python: &std::path::Path| {
        std::process::Command::new(python)
            .args(["-c", "import duckdb, pyarrow.fs, pyarrow.parquet"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return python;
    }
    assert!(found("python3"), "this test reads datasets with DuckDB and pyarrow and needs Python 3 with venv");
    let venv = std::process::Command::new("python3")
        .args(["-m", "venv", ".venv"])
        .current_dir(&dir)
        .status()
        .expect("python3 runs");
    assert!(venv.success(), "python3 -m venv failed in {}: install python3-venv", dir.display());
    let pip = std::process::Command::new(dir.join(".venv/bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"])
        .current_dir(&dir)
        .status()
        .expect("pip runs");
    assert!(pip.success(), "pip install -r requirements.txt failed in {}", dir.display());
    assert!(ready(&python), "duckdb and pyarrow do not import after installing them in {}", python.display());
    python
}

/// Runs the readers' script (`tests/readers/read_dataset.py`) with `args`; the rows it read, each value as the
/// reader's own text of it.
pub fn read_dataset(args: &[&str]) -> Vec<Vec<Option<String>>> {
    let output = std::process::Command::new(python())
        .arg("read_dataset.py")
        .args(args)
        .current_dir(readers_dir())
        .output()
        .expect("the reader runs");
    assert!(output.status.success(), "the reader failed: {}", String::from_utf8_lossy(&output.stderr));
    let table: Json = serde_json::from_slice(&output.stdout).expect("the reader prints JSON");
    serde_json::from_value(table["rows"].clone()).expect("rows of values")
}

/// Runs `sql` in DuckDB (from the readers' environment); its rows.
pub fn duckdb(sql: &str) -> Vec<Vec<Option<String>>> {
    read_dataset(&["duckdb", sql])
}

/// Azurite, started on a free port of 127.0.0.1 with its data in memory; killed when dropped.
pub struct Azurite {
    child: std::process::Child,
    pub authority: String,
}

impl Azurite {
    pub fn start() -> Azurite {
        for tool in ["node", "npm"] {
            assert!(
                found(tool),
                "this test writes to Azurite from npm and needs Node.js with npm (apt-get install nodejs npm)"
            );
        }
        let dir = readers_dir();
        {
            static INSTALLED: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one_at_a_time = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
            if !dir.join("node_modules/.bin/azurite-blob").exists() {
                let status = std::process::Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir)
                    .status()
                    .expect("npm runs");
                assert!(status.success(), "npm ci failed in {}", dir.display());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(dir.join("node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            // Without telemetry: the tests reach 127.0.0.1 only, and Azurite's start waits on sending it.
            .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"])
            .current_dir(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Azurite starts");
        let mut azurite = Azurite { child, authority: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(90);
        while std::net::TcpStream::connect(&azurite.authority).is_err() {
            if let Some(status) = azurite.child.try_wait().expect("Azurite can be waited for") {
                panic!(
                    "Azurite stopped ({status}): run {} by hand to see why",
                    dir.join("node_modules/.bin/azurite-blob").display()
                );
            }
            assert!(Instant::now() < deadline, "Azurite listens on {} within 90 s", azurite.authority);
            std::thread::sleep(Duration::from_millis(50));
        }
        azurite
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's well-known development key (public, in Microsoft's documentation).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

// ------------------------------------------------------------------------------------------ ingestion resources

/// A Dynamics source connection of the emulator, as seed 003 creates one (service principal); its id.
pub async fn source_connection(world: &World) -> String {
    let body = json!({
        "name": "Dynamics Connection",
        "description": "connection for Dynamics account",
        "auth": {
            "specName": "Service Principal Key Based Authentication",
            "params": {
                "serviceUri": world.emulator.url,
                "servicePrincipalId": world.emulator.client_id.to_string(),
                "servicePrincipalKey": world.emulator.client_secret.expose(),
                "tenantId": world.emulator.tenant_id.to_string(),
                "authorityHost": world.emulator.url,
            }
        },
        "connectionSpec": {"id": "38ad80fe-8b06-4938-94f4-d4ee80266b07", "version": "1.0"}
    });
    let reply = world.post("connections", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_string()
}

/// A source connection of `table`; its id.
pub async fn source_of(world: &World, connection: &str, table: &str) -> String {
    let reply =
        world.post("sourceConnections", json!({"baseConnectionId": connection, "params": {"tableName": table}})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_string()
}

/// A dataset target with `params` (dataSetId, format…); its id.
pub async fn dataset_target(world: &World, params: Json) -> String {
    let body =
        json!({"name": "Dataset", "params": params, "connectionSpec": {"id": "c604ff05-7f1a-43c0-8e18-33bf874cb11c"}});
    let reply = world.post("targetConnections", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.json()["id"].as_str().unwrap().to_string()
}

/// The dataset's current rows, by id, once `ready` says they are what the test waits for.
pub async fn rows_when(world: &World, target: &str, what: &str, ready: impl Fn(&[Json]) -> bool) -> Vec<Json> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = world.get(&format!("targetConnections/{target}/rows?limit=1000")).await;
        if reply.status == StatusCode::OK {
            let rows = reply.json()["rows"].as_array().unwrap().clone();
            if ready(&rows) {
                return rows;
            }
        }
        assert!(Instant::now() < deadline, "{what}: the dataset has not come to it: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn row(rows: &[Json], id: Uuid) -> &Json {
    rows.iter().find(|r| r["id"] == id.to_string()).unwrap_or_else(|| panic!("no row of {id}"))
}
