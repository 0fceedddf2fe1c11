//! Ways of writing to Dynamics, side by side: one `PATCH` per record sent one after another (what most
//! connectors do), the same with a fixed number of requests in flight, `$batch` of 1,000, `UpdateMultiple` of
//! 1,000 sent one after another, dynsync's adaptive executor (with `UpdateMultiple` of 1,000, as
//! activation writes, and with one `PATCH` per record, to compare its 429s with fixed parallelism's), and
//! Microsoft's Python Dataverse SDK (PyPI `powerplatform-dataverse-client`), one call at a time and with 16
//! concurrent callers.
//!
//! The SDK's rows run `bench/dataverse_sdk.py` with the interpreter named by `DATAVERSE_SDK_PYTHON`, which
//! `bench/run strategies` sets after installing the pinned SDK into `bench/.venv`; without it, those rows are
//! skipped with a line saying so. Each caller calls `records.update("contact", ids, changes)` with 1,000 ids
//! (one `UpdateMultiple` request) one call after another, and on a 429 waits the `Retry-After` the SDK hands
//! it and calls again, as the SDK's users must: the SDK retries network errors only. The SDK refuses any
//! URL but `https://`, so its emulator serves TLS with a certificate of its own, trusted through
//! `REQUESTS_CA_BUNDLE`; nothing in the SDK is changed, and its records are read back from the emulator's
//! store rather than through the Web API (the dataverse client trusts the system's roots only).
//!
//! Each strategy gets an emulator of its own (so that one strategy's usage never throttles the next) with the
//! default cost model and Dynamics 365's limits scaled to a 30 s window (a tenth of the requests and of the
//! execution time: the same rates, reached ten times sooner). It updates pre-seeded contacts for
//! `SECONDS_PER_STRATEGY` (60 by default), then lets the requests it has started finish: records per second
//! is the records acknowledged over that whole time. Every acknowledged record is then read back; a record
//! whose column does not hold the value written is lost.
//!
//! The ceiling is the emulator README's: `min(min(C, E / W) × N / d, R × N / W)` with `N` records a request
//! and `d = cost_per_request + N × cost_per_record_written`.
//!
//! `cargo bench -p dataverse --bench strategies [-- --json FILE]`; `FIXED_PARALLELISM` (16) sets the
//! parallelism of the fixed strategy; `STRATEGIES=patch-fixed,adaptive-bulk,sdk-16` runs a subset (keys:
//! patch-sequential, patch-fixed, batch, update-multiple, adaptive-bulk, adaptive-patch, sdk-sequential,
//! sdk-16).
//! On this project's 2-core machine, over 60 s, the adaptive executor wrote 656 records/s against a ceiling of
//! 654 (1.00×) with one 429, where 16 PATCHes in parallel got 32 429s and Microsoft's SDK with 16 callers wrote
//! 619 records/s with 24; over ten windows (300 s) 617 (0.94×, one 429) against the SDK's 566 (123 429s).
//! BENCHMARKS.md has the whole tables.

use bytes::Bytes;
use dataverse::batch::{self, Batch, Operation};
use dataverse::{BulkOperation, BulkOptions, Client, Environment, Query, Record, Table, TokenProvider};
use dataverse_emulator::value::Value;
use dataverse_emulator::{CostModel, EmulatorConfig, Limits, RunningEmulator};
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{credentials, env_number, json_file, seed_contacts};
use uuid::Uuid;

mod support;

/// Dynamics 365's limits with a 30 s window instead of 300 s, and a tenth of the requests and execution time.
fn scaled_limits() -> Limits {
    let defaults = Limits::default();
    Limits {
        requests: defaults.requests / 10,
        window: Duration::from_secs(30),
        execution_time: defaults.execution_time / 10,
        ..defaults
    }
}

/// Limits nobody reaches: for reading back after a run.
fn lifted_limits() -> Limits {
    Limits {
        requests: u32::MAX,
        window: Duration::from_secs(30),
        execution_time: Duration::from_secs(u32::MAX as u64),
        concurrent: u32::MAX,
        dop_hint: 16,
        capacity: u32::MAX,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    PatchSequential,
    PatchFixed,
    BatchSequential,
    UpdateMultipleSequential,
    AdaptiveBulk,
    AdaptivePatch,
    /// Microsoft's Python SDK, `records.update` of `per_request` ids by each of `in_flight` callers.
    PythonSdk,
}

struct Strategy {
    key: &'static str,
    name: String,
    kind: Kind,
    /// Records per request: the `N` of the formula.
    per_request: usize,
    /// Requests in flight at most, as the strategy is written (the adaptive executor: at most the DOP hint).
    in_flight: usize,
}

fn strategies(fixed: usize, dop_hint: usize) -> Vec<Strategy> {
    let s = |key, name: &str, kind, per_request, in_flight| Strategy {
        key,
        name: name.to_string(),
        kind,
        per_request,
        in_flight,
    };
    vec![
        s("patch-sequential", "one PATCH per record, sequential", Kind::PatchSequential, 1, 1),
        s("patch-fixed", &format!("one PATCH per record, {fixed} in parallel"), Kind::PatchFixed, 1, fixed),
        s("batch", "$batch of 1,000 PATCH, sequential", Kind::BatchSequential, 1000, 1),
        s("update-multiple", "UpdateMultiple of 1,000, sequential", Kind::UpdateMultipleSequential, 1000, 1),
        s("adaptive-bulk", "dynsync: adaptive executor, UpdateMultiple of 1,000", Kind::AdaptiveBulk, 1000, dop_hint),
        s("adaptive-patch", "dynsync: adaptive executor, one PATCH per record", Kind::AdaptivePatch, 1, dop_hint),
        s("sdk-sequential", "Microsoft's Python SDK, one call at a time", Kind::PythonSdk, 1000, 1),
        s("sdk-16", "Microsoft's Python SDK, 16 concurrent callers", Kind::PythonSdk, 1000, 16),
    ]
}

/// The README's ceiling for requests of `n` records.
fn ceiling(limits: &Limits, cost: &CostModel, n: usize) -> f64 {
    let w = limits.window.as_secs_f64();
    let d = (cost.per_request + cost.per_record_written * n as u32).as_secs_f64();
    let in_flight = f64::from(limits.concurrent).min(limits.execution_time.as_secs_f64() / w);
    (in_flight * n as f64 / d).min(f64::from(limits.requests) * n as f64 / w)
}

/// What one strategy did.
struct Measured {
    written: usize,
    elapsed: Duration,
    requests: u64,
    throttled: u64,
    /// 429s the client itself counted, where it reports them (the SDK's script).
    client_throttled: Option<u64>,
    lost: usize,
    ceiling: f64,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.written as f64 / self.elapsed.as_secs_f64()
    }
}

/// A client written the way most connectors are: every request on its own, a 429 waited out for the
/// `Retry-After` it names and then sent again, by that request alone; nothing shared between requests but
/// the token.
struct PlainClient {
    http: reqwest::Client,
    web_api: String,
    tokens: TokenProvider,
    requests: AtomicU64,
}

impl PlainClient {
    fn new(emulator: &RunningEmulator) -> Self {
        let environment = Environment::from_url(&emulator.url).expect("the emulator's URL");
        let http = reqwest::Client::new();
        let tokens = TokenProvider::new(http.clone(), credentials(emulator), &environment);
        PlainClient { http, web_api: environment.web_api(), tokens, requests: AtomicU64::new(0) }
    }

    /// Sends until the answer is neither a 429 nor a 5xx; returns the answer's headers and body when it
    /// succeeded.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: (&str, Bytes),
    ) -> Result<(reqwest::header::HeaderMap, Bytes), String> {
        loop {
            let token = self.tokens.token().await.map_err(|e| e.to_string())?;
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.web_api))
                .bearer_auth(token.expose())
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .header("Accept", "application/json")
                .header("Content-Type", body.0)
                .body(body.1.clone());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = match request.send().await {
                Ok(response) => response,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs);
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                tokio::time::sleep(retry_after).await;
                continue;
            }
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            return Ok((headers, body));
        }
    }

    async fn patch(&self, id: Uuid, value: &str) -> bool {
        let body = serde_json::to_vec(&json!({"jobtitle": value})).expect("JSON");
        let path = format!("contacts({id})");
        self.send(Method::PATCH, &path, &[("If-Match", "*")], ("application/json", body.into())).await.is_ok()
    }

    /// Returns how many of the updates succeeded.
    async fn batch(&self, updates: &[(Uuid, String)]) -> usize {
        let mut batch = Batch::new().continue_on_error();
        for (id, value) in updates {
            batch.push(Operation::patch(format!("contacts({id})"), json!({"jobtitle": value})).header("If-Match", "*"));
        }
        let boundary = format!("batch_{}", Uuid::new_v4());
        let root = url::Url::parse(&self.web_api).expect("a URL").path().to_string();
        let body = batch.encode(&boundary, |n| format!("changeset_{boundary}_{n}"), &root);
        let content_type = format!("multipart/mixed; boundary=\"{boundary}\"");
        let headers = [("Prefer", "odata.continue-on-error")];
        let Ok((answer_headers, answer)) =
            self.send(Method::POST, "$batch", &headers, (content_type.as_str(), body.into())).await
        else {
            return 0;
        };
        let content_type = answer_headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let items = batch::parse_response(content_type, &String::from_utf8_lossy(&answer)).unwrap_or_default();
        batch::outcomes(&batch, items).iter().filter(|o| o.succeeded().is_some()).count()
    }

    async fn update_multiple(&self, updates: &[(Uuid, String)]) -> bool {
        let targets: Vec<Json> = updates
            .iter()
            .map(|(id, value)| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": id, "jobtitle": value}))
            .collect();
        let body = serde_json::to_vec(&json!({"Targets": targets})).expect("JSON");
        let path = "contacts/Microsoft.Dynamics.CRM.UpdateMultiple";
        self.send(Method::POST, path, &[], ("application/json", body.into())).await.is_ok()
    }
}

fn jobtitle(value: &str) -> Record {
    match json!({"jobtitle": value}) {
        Json::Object(map) => map,
        _ => unreachable!(),
    }
}

fn update_record(id: Uuid, value: &str) -> Record {
    match json!({"contactid": id, "jobtitle": value}) {
        Json::Object(map) => map,
        _ => unreachable!(),
    }
}

/// Runs one strategy on `updates` until `deadline`: no request starts after it, and the ones started are
/// waited for. Returns the updates acknowledged (by index) and the client-side request count.
async fn write_until(
    strategy: &Strategy,
    emulator: &RunningEmulator,
    updates: &[(Uuid, String)],
    deadline: Instant,
) -> (Vec<usize>, u64) {
    let before = || Instant::now() < deadline;
    let n = strategy.per_request;
    let indexed_chunks = || updates.chunks(n).enumerate().map(move |(c, chunk)| (c * n, chunk));
    match strategy.kind {
        Kind::PatchSequential | Kind::PatchFixed => {
            let client = PlainClient::new(emulator);
            let client = &client;
            let parallelism = strategy.in_flight;
            let done: Vec<usize> = stream::iter(updates.iter().enumerate())
                .take_while(|_| std::future::ready(before()))
                .map(|(i, (id, value))| async move { client.patch(*id, value).await.then_some(i) })
                .buffer_unordered(parallelism)
                .filter_map(std::future::ready)
                .collect()
                .await;
            (done, client.requests.load(Ordering::Relaxed))
        }
        Kind::BatchSequential | Kind::UpdateMultipleSequential => {
            let client = PlainClient::new(emulator);
            let mut done = Vec::new();
            for (start, chunk) in indexed_chunks() {
                if !before() {
                    break;
                }
                let written = match strategy.kind {
                    Kind::BatchSequential => client.batch(chunk).await,
                    _ if client.update_multiple(chunk).await => chunk.len(),
                    _ => 0,
                };
                // A $batch that continues on error answers for each operation; these all succeed or none do.
                done.extend(start..start + written);
            }
            (done, client.requests.load(Ordering::Relaxed))
        }
        Kind::PythonSdk => unreachable!("the SDK's rows are run by python_sdk"),
        Kind::AdaptiveBulk | Kind::AdaptivePatch => {
            let environment = Environment::from_url(&emulator.url).expect("the emulator's URL");
            let client = Client::new(environment, credentials(emulator));
            // As Microsoft's sample does: one cheap call first, to sign in and learn the recommended parallelism.
            client.who_am_i().await.expect("the emulator answers WhoAmI");
            let client = &client;
            let table = Table::contact();
            let table = &table;
            let options = BulkOptions::default();
            let done: Vec<usize> = if strategy.kind == Kind::AdaptiveBulk {
                // Chunk by chunk through `write_each`, as activation writes, so that no chunk starts after the
                // deadline; the executor decides how many are in flight.
                stream::iter(indexed_chunks())
                    .take_while(|_| std::future::ready(before()))
                    .map(|(start, chunk)| async move {
                        let records: Vec<Record> = chunk.iter().map(|(id, v)| update_record(*id, v)).collect();
                        let report = client
                            .write_each(
                                BulkOperation::Update,
                                table,
                                &records,
                                BulkOptions { chunk_size: n, ..options },
                            )
                            .await;
                        report
                            .outcomes
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| o.is_ok())
                            .map(|(i, _)| start + i)
                            .collect::<Vec<_>>()
                    })
                    .buffer_unordered(options.chunks_in_flight)
                    .flat_map(stream::iter)
                    .collect()
                    .await
            } else {
                stream::iter(updates.iter().enumerate())
                    .take_while(|_| std::future::ready(before()))
                    .map(|(i, (id, value))| async move {
                        let changes = jobtitle(value);
                        client.update(table, *id, &changes).await.is_ok().then_some(i)
                    })
                    // Queued here, sent when the executor gives a slot.
                    .buffer_unordered(64)
                    .filter_map(std::future::ready)
                    .collect()
                    .await
            };
            (done, client.metrics().requests)
        }
    }
}

/// Reads every contact's `jobtitle` back through the Web API.
async fn read_back(emulator: &RunningEmulator) -> HashMap<Uuid, String> {
    emulator.environment.limiter.set_limits(lifted_limits());
    let environment = Environment::from_url(&emulator.url).expect("the emulator's URL");
    let client = Client::new(environment, credentials(emulator));
    let query = Query::new(&Table::contact()).select(&["contactid", "jobtitle"]).page_size(5000);
    client
        .query(&query)
        .map_ok(|record| {
            let id = record.get("contactid").and_then(Json::as_str).and_then(|v| v.parse().ok()).unwrap_or_default();
            let value = record.get("jobtitle").and_then(Json::as_str).unwrap_or_default().to_string();
            (id, value)
        })
        .try_collect()
        .await
        .expect("every contact reads back")
}

/// What `bench/dataverse_sdk.py` prints: one JSON line.
#[derive(Deserialize)]
struct SdkReport {
    records: usize,
    /// `(first update, count)` of every call the SDK acknowledged.
    chunks: Vec<(usize, usize)>,
    failed_calls: u64,
    failures: Vec<String>,
    /// Web API requests and 429s, counted by the script from the HTTP answers.
    requests: u64,
    throttled: u64,
    elapsed_seconds: f64,
}

/// The Python script that drives Microsoft's SDK.
fn sdk_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/dataverse_sdk.py")
}

/// Runs `bench/dataverse_sdk.py` with `python` against `emulator` (on HTTPS, its certificate at `certificate`):
/// `strategy.in_flight` callers, `records.update` of `strategy.per_request` contacts a call, for `seconds`.
/// The script writes the same values as the other strategies (`<key>-<index>`), and times itself from
/// before sign-in to its last call's end, as the other strategies are timed from before their client exists.
async fn python_sdk(
    strategy: &Strategy,
    emulator: &RunningEmulator,
    updates: &[(Uuid, String)],
    seconds: f64,
    python: &Path,
    certificate: &Path,
) -> SdkReport {
    let ids_file = certificate.with_file_name("contacts.txt");
    let ids: String = updates.iter().map(|(id, _)| format!("{id}\n")).collect();
    std::fs::write(&ids_file, ids).expect("writing the contact ids for the SDK's script");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(sdk_script())
        .args(["--url", &emulator.url, "--ids"])
        .arg(&ids_file)
        .args(["--callers", &strategy.in_flight.to_string(), "--per-call", &strategy.per_request.to_string()])
        .args(["--seconds", &seconds.to_string(), "--prefix", strategy.key])
        .env("DATAVERSE_TENANT_ID", emulator.tenant_id.to_string())
        .env("DATAVERSE_CLIENT_ID", emulator.client_id.to_string())
        .env("DATAVERSE_CLIENT_SECRET", emulator.client_secret.expose())
        // How a requests user trusts a certificate of their own; the SDK is not changed.
        .env("REQUESTS_CA_BUNDLE", certificate)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| {
        panic!("{} could not start: {e}; DATAVERSE_SDK_PYTHON must name a Python interpreter", python.display())
    });
    // Calls started before the deadline finish, with their retries; a run far beyond that is a fault.
    let limit = Duration::from_secs_f64(seconds * 2.0 + 600.0);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the SDK's script ran over {} s and was stopped", limit.as_secs()))
        .expect("the SDK's script can be waited for");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the SDK's script failed ({}); its output:\n{stdout}", output.status);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("the SDK's script printed {line:?}, not its JSON report: {e}"))
}

/// Reads every contact's `jobtitle` from the emulator's store: for the SDK's rows, whose emulator serves HTTPS
/// with a certificate of its own, which the dataverse client (the system's roots only) does not trust.
fn read_back_from_store(emulator: &RunningEmulator) -> HashMap<Uuid, String> {
    let data = emulator.environment.store.read();
    let text = |value: Option<&Value>| match value {
        Some(Value::Text(text)) => text.clone(),
        _ => String::new(),
    };
    data.rows("contact").iter().map(|(id, row)| (*id, text(row.get("jobtitle")))).collect()
}

async fn measure(strategy: &Strategy, seconds: f64, python: Option<&Path>) -> Measured {
    let limits = scaled_limits();
    let cost = CostModel::default();
    // The SDK refuses any URL but https://: its emulator serves TLS, with a certificate the script trusts.
    let directory = std::env::temp_dir().join(format!("dynsync-strategies-{}", Uuid::new_v4()));
    let certificate = (strategy.kind == Kind::PythonSdk).then(|| {
        std::fs::create_dir_all(&directory).expect("a temporary directory");
        directory.join("emulator.pem")
    });
    let config = EmulatorConfig { limits, cost, tls_certificate: certificate.clone(), ..Default::default() };
    let emulator = config.start().await.expect("the emulator starts");
    // Enough contacts that no strategy runs out: its requests in flight, each as short as it can be, for the
    // whole run, plus one more round.
    let d = (cost.per_request + cost.per_record_written * strategy.per_request as u32).as_secs_f64();
    let rounds = (seconds / d).ceil() as usize + 2;
    let rows = rounds * strategy.in_flight * strategy.per_request;
    let ids = seed_contacts(&emulator, rows).await;
    let updates: Vec<(Uuid, String)> =
        ids.iter().enumerate().map(|(i, id)| (*id, format!("{}-{i}", strategy.key))).collect();

    let (done, requests, elapsed, client_throttled) = if let Some(certificate) = &certificate {
        let python = python.expect("the SDK's rows are selected only with DATAVERSE_SDK_PYTHON");
        let report = python_sdk(strategy, &emulator, &updates, seconds, python, certificate).await;
        let _ = std::fs::remove_dir_all(&directory);
        if report.failed_calls > 0 {
            eprintln!("  {} calls not acknowledged, for example: {:?}", report.failed_calls, report.failures);
        }
        let done: Vec<usize> = report.chunks.iter().flat_map(|&(start, count)| start..start + count).collect();
        assert_eq!(done.len(), report.records, "the SDK's script counts the records of the chunks it reports");
        (done, report.requests, Duration::from_secs_f64(report.elapsed_seconds), Some(report.throttled))
    } else {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let (done, requests) = write_until(strategy, &emulator, &updates, deadline).await;
        (done, requests, started.elapsed(), None)
    };
    let throttled = emulator.environment.limiter.refused();

    let found = if certificate.is_some() { read_back_from_store(&emulator) } else { read_back(&emulator).await };
    let lost = done.iter().filter(|&&i| found.get(&updates[i].0) != Some(&updates[i].1)).count();
    Measured {
        written: done.len(),
        elapsed,
        requests,
        throttled,
        client_throttled,
        lost,
        ceiling: ceiling(&limits, &cost, strategy.per_request),
    }
}

fn main() {
    let json_file = json_file();
    let seconds = std::env::var("SECONDS_PER_STRATEGY").ok().and_then(|v| v.parse().ok()).unwrap_or(60.0);
    let fixed = env_number("FIXED_PARALLELISM", 16).max(1);
    let chosen: Option<Vec<String>> =
        std::env::var("STRATEGIES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let limits = scaled_limits();
    let all = strategies(fixed, limits.dop_hint as usize);
    let mut selected: Vec<&Strategy> =
        all.iter().filter(|s| chosen.as_ref().is_none_or(|c| c.iter().any(|k| k == s.key))).collect();
    let python = std::env::var_os("DATAVERSE_SDK_PYTHON").filter(|v| !v.is_empty()).map(PathBuf::from);
    if python.is_none() && selected.iter().any(|s| s.kind == Kind::PythonSdk) {
        eprintln!(
            "Microsoft's Python SDK rows skipped: `bench/run strategies` installs the SDK from PyPI and runs them \
             (or set DATAVERSE_SDK_PYTHON to a Python that has powerplatform-dataverse-client)."
        );
        selected.retain(|s| s.kind != Kind::PythonSdk);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");

    let mut results = Vec::new();
    for strategy in &selected {
        eprintln!("{}: {seconds} s…", strategy.name);
        let measured = runtime.block_on(measure(strategy, seconds, python.as_deref()));
        eprintln!(
            "  {} records in {:.1} s: {:.1}/s, {} 429s{}, {} lost",
            measured.written,
            measured.elapsed.as_secs_f64(),
            measured.per_second(),
            measured.throttled,
            measured.client_throttled.map_or(String::new(), |n| format!(" ({n} seen by the client)")),
            measured.lost
        );
        results.push((*strategy, measured));
    }
    let baseline = results.iter().find(|(s, _)| s.kind == Kind::PatchSequential).map(|(_, m)| m.per_second());

    let l = limits;
    println!(
        "\nDefault cost model; limits {} requests, {} s execution time per {} s window, {} concurrent, DOP hint {}; \
         {seconds} s per strategy.\n",
        l.requests,
        l.execution_time.as_secs(),
        l.window.as_secs(),
        l.concurrent,
        l.dop_hint
    );
    println!(
        "| strategy | records/s | ceiling | ratio to ceiling | × sequential PATCH | 429s | requests | records written | records lost |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut report = Vec::new();
    for (strategy, m) in &results {
        let speedup = baseline.map(|b| m.per_second() / b);
        println!(
            "| {} | {:.1} | {:.1} | {:.3} | {} | {} | {} | {} | {} |",
            strategy.name,
            m.per_second(),
            m.ceiling,
            m.per_second() / m.ceiling,
            speedup.map_or("-".to_string(), |s| format!("{s:.1}×")),
            m.throttled,
            m.requests,
            m.written,
            m.lost
        );
        report.push(json!({
            "strategy": strategy.key,
            "name": strategy.name,
            "records_per_request": strategy.per_request,
            "records_per_second": m.per_second(),
            "ceiling": m.ceiling,
            "ratio_to_ceiling": m.per_second() / m.ceiling,
            "speedup_over_sequential_patch": speedup,
            "throttled": m.throttled,
            "throttled_seen_by_client": m.client_throttled,
            "requests": m.requests,
            "records_written": m.written,
            "records_lost": m.lost,
            "elapsed_seconds": m.elapsed.as_secs_f64(),
        }));
    }
    if let Some(path) = json_file {
        let report = json!({
            "benchmark": "write_strategies",
            "seconds_per_strategy": seconds,
            "limits": {"requests": l.requests, "window_seconds": l.window.as_secs(),
                       "execution_time_seconds": l.execution_time.as_secs(), "concurrent": l.concurrent,
                       "dop_hint": l.dop_hint},
            "strategies": report,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).expect("JSON")).expect("writing the JSON report");
    }
}
