//! Table ingestion, measured: a full load of contacts into a Parquet dataset at zero cost (rows per second, and
//! dynsync's peak memory), and a full load at Dataverse's default read cost against the best any client can do.
//!
//! `cargo bench -p dynsync --bench ingestion` (`ROWS` sets the zero-cost size, 1,000,000 by default;
//! `COSTED_ROWS` the costed one, 400,000 — long enough for the partitions' steady state; `-- --json FILE` also writes the figures as JSON). The emulator runs in a
//! process of its own — this binary, started again with `--emulator` — so that the memory measured is dynsync's.
//!
//! The ceiling at the default cost: a page of 5,000 rows costs 115 ms + 5,000 × 100 µs = 615 ms of execution
//! time, and the limit of 1,200 s per 300 s window lets 4 run at once: 4 × 5,000 / 0.615 s ≈ 32,520 rows/s.

use dataverse::{Client, ClientCredentials, Environment, Secret};
use dataverse_emulator::{CostModel, EmulatorConfig, Limits};
use dynsync::{Service, ServiceConfig};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token";
const PAGE: f64 = 5000.0;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// This process's resident memory high-water mark, in MB.
fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The emulator process: `--emulator <state file> <free|default>`.
async fn run_emulator(state: PathBuf, costed: bool) {
    let (cost, limits) = match costed {
        true => (CostModel::default(), Limits::default()),
        false => (CostModel::free(), Limits { requests: 1_000_000_000, concurrent: 100_000, ..Limits::default() }),
    };
    let emulator = EmulatorConfig { cost, limits, state: Some(state), ..Default::default() }.start().await.unwrap();
    println!("{}", emulator.announcement());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
}

/// CPU seconds (user and system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

struct Emulator {
    child: Child,
    url: String,
    announcement: Json,
}

impl Emulator {
    fn start(state: &std::path::Path, costed: bool) -> Emulator {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--emulator")
            .arg(state)
            .arg(if costed { "default" } else { "free" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let announcement: Json = serde_json::from_str(&line).unwrap();
        Emulator { child, url: announcement["url"].as_str().unwrap().to_string(), announcement }
    }

    fn client(&self) -> Client {
        Client::new(Environment::from_url(&self.url).unwrap(), self.credentials())
    }

    fn credentials(&self) -> ClientCredentials {
        ClientCredentials {
            tenant_id: self.announcement["tenant_id"].as_str().unwrap().into(),
            client_id: self.announcement["client_id"].as_str().unwrap().into(),
            client_secret: Secret::new(self.announcement["client_secret"].as_str().unwrap()),
            authority: self.url.clone(),
        }
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Creates `count` contacts with a dozen columns filled, a thousand a request.
async fn seed(dynamics: &Client, count: usize) {
    for start in (0..count).step_by(1000) {
        let targets: Vec<Json> = (start..(start + 1000).min(count))
            .map(|i| {
                json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "firstname": format!("First{i}"),
                       "lastname": format!("Last{i}"), "emailaddress1": format!("c{i}@example.com"),
                       "telephone1": format!("+33 1 {i:08}"), "jobtitle": "Buyer", "gendercode": 1 + (i % 2) as i64,
                       "birthdate": "1990-04-12", "annualincome": 52000.5, "numberofchildren": (i % 4) as i64,
                       "donotemail": i % 7 == 0, "description": "A contact of the ingestion benchmark"})
            })
            .collect();
        dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap();
    }
}

/// Loads the emulator's contact table into a Parquet dataset through dynsync; rows per second of the full load.
async fn full_load(emulator: &Emulator, rows: usize) -> f64 {
    let data_dir = tempfile::tempdir().unwrap();
    let (service, _, rate) = load(emulator, rows, data_dir.path(), json!({"frequency": "once"})).await;
    service.stop().await;
    rate
}

/// Starts dynsync on `data_dir`, and a flow of the contact table with `schedule`; once its full load is done,
/// dynsync, the flow's id, and the full load's rows per second.
async fn load(
    emulator: &Emulator,
    rows: usize,
    data_dir: &std::path::Path,
    schedule: Json,
) -> (dynsync::RunningService, String, f64) {
    let mut config = ServiceConfig::new(data_dir);
    config.api_tokens = vec![TOKEN.into()];
    config.allowed_hosts = "127.0.0.1".parse().unwrap();
    let service = Service::start(config).await.unwrap();
    let http = reqwest::Client::new();
    let api = |method: Method, path: &str, body: Option<Json>| {
        let mut request = http
            .request(method, format!("{}/{path}", service.api()))
            .bearer_auth(TOKEN)
            .header("x-sandbox-name", "bench");
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Json = response.json().await.unwrap();
            assert!(status.is_success(), "{status}: {body}");
            body
        }
    };
    let credentials = emulator.credentials();
    let connection = api(
        Method::POST,
        "connections",
        Some(json!({"name": "Source", "connectionSpec": {"id": "38ad80fe-8b06-4938-94f4-d4ee80266b07"},
            "auth": {"specName": "Service Principal Key Based Authentication", "params": {
                "serviceUri": emulator.url, "servicePrincipalId": credentials.client_id,
                "servicePrincipalKey": credentials.client_secret.expose(), "tenantId": credentials.tenant_id,
                "authorityHost": emulator.url}}})),
    )
    .await["id"]
        .clone();
    let source = api(
        Method::POST,
        "sourceConnections",
        Some(json!({"baseConnectionId": connection, "params": {"tableName": "contact"}})),
    )
    .await["id"]
        .clone();
    let target = api(
        Method::POST,
        "targetConnections",
        Some(json!({"params": {"dataSetId": "contacts"}, "connectionSpec": {"id": "c604ff05-7f1a-43c0-8e18-33bf874cb11c"}})),
    )
    .await["id"]
        .clone();
    let started = Instant::now();
    let flow = api(
        Method::POST,
        "flows",
        Some(json!({"name": "Contacts", "flowSpec": {"id": "14518937-270c-4525-bdec-c2ba7cce3860"},
                     "sourceConnectionIds": [source], "targetConnectionIds": [target],
                     "transformations": [{"name": "Mapping", "params": {"mappings": [
                         {"sourceAttribute": "firstname"}, {"sourceAttribute": "lastname"}, {"sourceAttribute": "emailaddress1"},
                         {"sourceAttribute": "telephone1"}, {"sourceAttribute": "jobtitle"}, {"sourceAttribute": "gendercode"},
                         {"sourceAttribute": "birthdate"}, {"sourceAttribute": "annualincome"}, {"sourceAttribute": "numberofchildren"},
                         {"sourceAttribute": "donotemail"}, {"sourceAttribute": "description"}, {"sourceAttribute": "createdon"}]}}],
                     "scheduleParams": schedule})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    loop {
        let runs = api(Method::GET, &format!("runs?property=flowId=={flow}"), None).await;
        let done = runs["items"].as_array().unwrap().iter().find(|r| r["load"]["completedAt"].is_string()).cloned();
        if let Some(run) = done {
            let read = run["metrics"]["recordSummary"]["outputRecordCount"].as_u64().unwrap();
            assert_eq!(read as usize, rows, "the full load wrote every row: {run}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (service, flow, rows as f64 / elapsed)
}

/// Changes per minute in the freshness measurement, and for how long.
const CHANGES_PER_MINUTE: usize = 10_000;
const CHANGING: Duration = Duration::from_secs(60);

/// Continuous mode at 10,000 changes a minute: how long from each change in Dynamics to its row in the dataset
/// (the time the dataset's file holding it was written); the p50 and p95, in seconds.
async fn freshness(emulator: &Emulator, contacts: usize) -> (f64, f64, usize) {
    let dynamics = emulator.client();
    seed(&dynamics, contacts).await;
    let ids: Vec<String> = {
        let page: Json = dynamics
            .send(Method::GET, &format!("contacts?$select=contactid&$top={contacts}"), None)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["value"].as_array().unwrap().iter().map(|r| r["contactid"].as_str().unwrap().to_string()).collect()
    };
    let data_dir = tempfile::tempdir().unwrap();
    let (service, _flow, _) =
        load(emulator, contacts, data_dir.path(), json!({"frequency": "continuous", "interval": "1"})).await;
    // Changes in batches every 100 ms, each contact's first name the time of its change.
    let per_tick = CHANGES_PER_MINUTE / 600;
    let started = Instant::now();
    let mut sent = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < CHANGING {
        ticker.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        let targets: Vec<Json> = (0..per_tick)
            .map(|i| {
                let id = &ids[(sent + i) % ids.len()];
                json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "contactid": id, "firstname": format!("t{now}")})
            })
            .collect();
        dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.UpdateMultiple", Some(&json!({"Targets": targets})))
            .await
            .unwrap();
        sent += per_tick;
    }
    // Let the last changes land, then read the dataset's files and when each was written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    service.stop().await;
    let files = dynsync::dataset::files::FileDestination::in_data_dir(data_dir.path()).unwrap();
    let name: dynsync::dataset::DatasetName = "contacts".to_string().try_into().unwrap();
    let manifest = files.manifest(&name).await.unwrap().unwrap();
    let generation = manifest.generation(1).unwrap();
    let first_name = generation.schema.position("firstname").unwrap();
    let mut lags = Vec::new();
    for file in generation.files() {
        let bytes = std::fs::read(data_dir.path().join("datasets/contacts").join(&file.path)).unwrap();
        let written = file.written_at.timestamp_millis();
        dynsync::dataset::files::decode(&generation.schema, bytes.into(), &mut |row| {
            if let Some(dynsync::dataset::Value::Text(t)) = row.values.get(first_name)
                && let Some(changed) = t.strip_prefix('t').and_then(|m| m.parse::<i64>().ok())
                && row.operation != dynsync::dataset::Operation::Read
            {
                lags.push((written - changed) as f64 / 1000.0);
            }
        })
        .unwrap();
    }
    lags.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| {
        lags.get(((lags.len() as f64 * q) as usize).min(lags.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.95), lags.len())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--emulator") {
        return run_emulator(PathBuf::from(&args[i + 1]), args[i + 2] == "default").await;
    }
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    let rows = env_number("ROWS", 1_000_000);
    let costed_rows = env_number("COSTED_ROWS", 400_000);
    let states = tempfile::tempdir().unwrap();

    // Zero cost: how fast dynsync itself goes, and how much memory it takes.
    let free_state = states.path().join("free.json");
    let emulator = Emulator::start(&free_state, false);
    seed(&emulator.client(), rows).await;
    eprintln!("{rows} contacts created in the emulator; the full load starts");
    let before = peak_memory_mb();
    let (own_cpu, emulator_cpu) = (cpu_seconds("self"), cpu_seconds(&emulator.child.id().to_string()));
    let rate = full_load(&emulator, rows).await;
    let peak = peak_memory_mb();
    let (own_cpu, emulator_cpu) =
        (cpu_seconds("self") - own_cpu, cpu_seconds(&emulator.child.id().to_string()) - emulator_cpu);
    println!(
        "  CPU during the load: dynsync {own_cpu:.1} s ({:.2} s per 100,000 rows), the emulator {emulator_cpu:.1} s",
        own_cpu * 100_000.0 / rows as f64
    );
    emulator.stop();
    println!(
        "full load at zero cost: {rows} contacts, {rate:.0} rows/s (target 200,000: {:.2}×), peak memory {peak:.0} MB \
         (target < 200 MB: {:.2}×; {before:.0} MB before the load)",
        rate / 200_000.0,
        peak / 200.0
    );

    // Dataverse's default read cost, seeded at zero cost and served again from the same state at the default.
    let costed_state = states.path().join("costed.json");
    let seeding = Emulator::start(&costed_state, false);
    seed(&seeding.client(), costed_rows).await;
    seeding.stop();
    let emulator = Emulator::start(&costed_state, true);
    let cost = CostModel::default();
    let page_seconds = (cost.per_request + cost.per_record_read * PAGE as u32).as_secs_f64();
    let limits = Limits::default();
    let in_flight = (limits.execution_time.as_secs_f64() / limits.window.as_secs_f64()).floor();
    let ceiling = in_flight * PAGE / page_seconds;
    let costed = full_load(&emulator, costed_rows).await;
    emulator.stop();
    println!(
        "full load at the default read cost: {costed_rows} contacts, {costed:.0} rows/s; the ceiling is {ceiling:.0} rows/s \
         ({in_flight} pages of {PAGE} in flight, {page_seconds:.3} s each): {:.2}× of it (target 0.9×)",
        costed / ceiling
    );
    // Continuous mode under a steady stream of changes.
    let fresh_state = states.path().join("fresh.json");
    let emulator = Emulator::start(&fresh_state, false);
    let (p50, p95, measured) = freshness(&emulator, 10_000).await;
    emulator.stop();
    println!(
        "freshness in continuous mode at {CHANGES_PER_MINUTE} changes a minute for {} s: {measured} changes, p50 {p50:.2} s, \
         p95 {p95:.2} s from the change in Dynamics to its row in the dataset (target 30 s: {:.2}×)",
        CHANGING.as_secs(),
        p95 / 30.0
    );
    if let Some(path) = json_out {
        let figures = json!({"rows": rows, "rows_per_second": rate, "peak_memory_mb": peak,
            "costed_rows": costed_rows, "costed_rows_per_second": costed, "costed_ceiling": ceiling,
            "freshness_p50_s": p50, "freshness_p95_s": p95, "freshness_changes": measured});
        std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap()).unwrap();
    }
}
