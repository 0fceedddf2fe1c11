//! `dynsync demo`: audience activation from end to end, on the embedded Dataverse emulator (or a real
//! environment), checked field by field.
//!
//! It does what an admin and a marketer would: creates the audience columns on contact, seeds contacts,
//! connects dynsync to the environment, sets up a target and a flow through the API, streams profile updates
//! for three audiences — entries, exits, and a few bad profiles — waits for the flow to handle them, prints
//! the run, then reads every contact back from Dynamics and compares it with what it should hold.

pub mod engagement;
pub mod ingestion;
pub mod leads;
pub mod receiver;

use crate::hosts::AllowedHosts;
use crate::service::{RunningService, Service, ServiceConfig};
use crate::specs::DYNAMICS_DESTINATION;
use anyhow::{Context, bail, ensure};
use dataverse::{Client, ClientCredentials, Environment, Secret, Table};
use dataverse::{NewColumn, NewColumnType};
use dataverse_emulator::{CostModel, EmulatorConfig, RunningEmulator};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The three audiences of the demo: (audience id, name, column).
const AUDIENCES: [(&str, &str, &str); 3] = [
    ("a1f0c3e2-0001-4000-8000-000000000001", "Gold members", "gold"),
    ("a1f0c3e2-0002-4000-8000-000000000002", "Lapsed buyers", "lapsed"),
    ("a1f0c3e2-0003-4000-8000-000000000003", "Newsletter", "newsletter"),
];

/// Where the demo runs.
pub enum DemoTarget {
    /// A new in-memory emulator.
    Emulator,
    /// A real environment: its URL and an app registration that may create columns and contacts.
    Dynamics { environment_url: String, tenant_id: String, client_id: String, client_secret: Secret, authority: String },
}

pub struct DemoOptions {
    pub target: DemoTarget,
    pub contacts: usize,
    pub seed: u64,
}

/// What a contact should hold once every update is applied.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    firstname: Option<String>,
    statuses: HashMap<&'static str, &'static str>,
}

/// Runs the demo; `Ok(true)` when every contact holds what it should.
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let started = Instant::now();
    let (_emulator, environment_url, credentials) = environment(&options.target).await?;
    let dynamics = Client::new(Environment::from_url(&environment_url)?, credentials.clone());
    let data_dir = tempfile::tempdir().context("creating the demo's data directory")?;
    let mut config = ServiceConfig::new(data_dir.path());
    config.api_tokens = vec![format!("demo-{}", Uuid::new_v4().simple())];
    config.allowed_hosts = AllowedHosts::of_urls([environment_url.as_str(), credentials.authority.as_str()]);
    let service = Service::start(config).await?;
    let api = Api { http: reqwest::Client::new(), service: &service };
    println!("dynsync demo: Dynamics 365 at {environment_url}, dynsync at {}", service.url);

    // 1. The admin creates the audience columns on contact.
    let prefix = "new";
    for (_, name, column) in AUDIENCES {
        let column = NewColumn {
            schema_name: format!("{prefix}_{}", capitalize(column)),
            display_name: name.to_string(),
            kind: NewColumnType::String { max_length: 20 },
        };
        if let Err(e) = dynamics.create_column("contact", &column).await {
            // On a real environment the columns may be there from an earlier run.
            println!("  column {}: {e}", column.schema_name);
        }
    }
    println!("1. created the audience columns new_gold, new_lapsed and new_newsletter on contact");

    // 2. Contacts exist in Dynamics before any activation.
    let ids = seed_contacts(&dynamics, options.contacts).await?;
    println!("2. seeded {} contacts", ids.len());

    // 3. Connection, target and flow, through dynsync's API.
    let (connection, target) = connect(&api, &environment_url, &credentials, prefix).await?;
    let audiences: Vec<Json> =
        AUDIENCES.iter().map(|(id, name, column)| json!({"id": id, "name": name, "mappingId": column})).collect();
    let flow = api
        .post(
            "flows",
            json!({
                "name": "Demo audiences", "targetConnectionIds": [target], "audiences": audiences,
                "mappings": [
                    {"source": "contactId", "target": "contactid"},
                    {"source": "person.name.firstName", "target": "firstname"},
                ],
            }),
        )
        .await?;
    println!("3. connected dynsync (connection {connection}), target {target}, flow {flow}");

    // 4. Profile updates: entries, then exits and changes for some, and a few bad profiles.
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut expected: HashMap<Uuid, Expected> = HashMap::new();
    let mut messages = Vec::new();
    for id in &ids {
        let mut memberships = Vec::new();
        for (audience, _, column) in AUDIENCES {
            if rng.random_bool(0.5) {
                memberships.push((audience, column, "realized"));
            }
        }
        if memberships.is_empty() {
            memberships.push((AUDIENCES[2].0, AUDIENCES[2].2, "realized"));
        }
        let name = format!("First{}", rng.random_range(0..1000));
        messages.push(message(&id.to_string(), Some(&name), &memberships));
        let e = expected.entry(*id).or_default();
        e.firstname = Some(name);
        e.statuses.extend(memberships.iter().map(|(_, c, s)| (*c, *s)));
    }
    for id in &ids {
        if !rng.random_bool(0.3) {
            continue;
        }
        let (audience, _, column) = AUDIENCES[rng.random_range(0..3)];
        messages.push(message(&id.to_string(), None, &[(audience, column, "exited")]));
        expected.get_mut(id).expect("seeded").statuses.insert(column, "exited");
    }
    let bad = [
        json!({"body": {"xdmEntity": {"segmentMembership": {"ups": {AUDIENCES[0].0: {"status": "realized"}}}}}}),
        message("not-a-guid", Some("Nobody"), &[(AUDIENCES[0].0, "gold", "realized")]),
        message(&Uuid::new_v4().to_string(), Some("Ghost"), &[(AUDIENCES[1].0, "lapsed", "realized")]),
        message(&ids[0].to_string(), Some("Elsewhere"), &[("some-other-audience", "other", "realized")]),
        json!("not a profile"),
    ];
    messages.extend(bad);
    let mut accepted = 0u64;
    for chunk in messages.chunks(1000) {
        let receipt = api.stream(&flow, chunk).await?;
        accepted += receipt["accepted"].as_u64().unwrap_or(0);
    }
    println!(
        "4. streamed {} profile updates for 3 audiences ({} accepted, {} refused at the door)",
        messages.len(),
        accepted,
        messages.len() as u64 - accepted
    );

    // 5. Wait until the flow has handled every accepted profile.
    let run = api.wait_for_run(&flow, accepted, Duration::from_secs(600)).await?;
    print_run(&run);

    // 6. Read every contact back from Dynamics.
    let (checked, wrong) = verify(&dynamics, &expected).await?;
    println!("6. read {checked} contacts back from Dynamics");
    for line in wrong.iter().take(10) {
        println!("   WRONG {line}");
    }
    let summary = &run["metrics"]["recordSummary"];
    let counts_right = summary["failedRecordCount"] == 1 && summary["skippedRecordCount"] == 3;
    let ok = wrong.is_empty() && checked == expected.len() && counts_right;
    if ok {
        println!(
            "PASS: all {checked} contacts hold the statuses and names they should; the 3 excluded and 1 failed profiles are reported ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "FAIL: {} of {} contacts differ from what they should hold{}",
            wrong.len(),
            expected.len(),
            if counts_right { "" } else { "; the run's excluded/failed counts are not 3 and 1" }
        );
    }
    service.stop().await;
    Ok(ok)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn message(contact: &str, first_name: Option<&str>, memberships: &[(&str, &str, &str)]) -> Json {
    let ups: serde_json::Map<String, Json> =
        memberships.iter().map(|(a, _, s)| (a.to_string(), json!({"status": s}))).collect();
    let mut entity = json!({
        "identityMap": {"contactId": [{"id": contact, "primary": true}]},
        "segmentMembership": {"ups": ups},
    });
    if let Some(name) = first_name {
        entity["person"] = json!({"name": {"firstName": name}});
    }
    json!({"header": {"schemaRef": {"id": "https://ns.adobe.com/demo/schemas/profile"}}, "body": {"xdmEntity": entity}})
}

/// The application user's credentials of an emulator, with the emulator as the sign-in authority.
pub fn emulator_credentials(emulator: &RunningEmulator) -> ClientCredentials {
    ClientCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        client_secret: Secret::new(emulator.client_secret.expose()),
        authority: emulator.url.clone(),
    }
}

/// A client of an emulator, signed in as its application user.
pub fn emulator_client(emulator: &RunningEmulator) -> Client {
    Client::new(
        Environment::from_url(&emulator.url).expect("an emulator's URL is an environment URL"),
        emulator_credentials(emulator),
    )
}

async fn environment(target: &DemoTarget) -> anyhow::Result<(Option<RunningEmulator>, String, ClientCredentials)> {
    Ok(match target {
        DemoTarget::Emulator => {
            let emulator = EmulatorConfig { cost: CostModel::free(), ..Default::default() }.start().await?;
            let credentials = emulator_credentials(&emulator);
            let url = emulator.url.clone();
            (Some(emulator), url, credentials)
        }
        DemoTarget::Dynamics { environment_url, tenant_id, client_id, client_secret, authority } => (
            None,
            environment_url.clone(),
            ClientCredentials {
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                authority: authority.clone(),
            },
        ),
    })
}

/// A connection to the environment and a target over it, made through dynsync's API; their ids.
async fn connect(
    api: &Api<'_>,
    environment_url: &str,
    credentials: &ClientCredentials,
    prefix: &str,
) -> anyhow::Result<(String, String)> {
    let connection = api
        .post(
            "connections",
            json!({
                "name": "Demo Dynamics 365",
                "auth": {"specName": "Dynamics 365 Client Credentials", "params": {
                    "clientId": credentials.client_id, "clientSecret": credentials.client_secret.expose(),
                    "tenantId": credentials.tenant_id, "environmentUrl": environment_url,
                    "authorityHost": credentials.authority,
                }},
                "connectionSpec": {"id": DYNAMICS_DESTINATION.to_string(), "version": "1.0"},
            }),
        )
        .await?;
    let target = api
        .post(
            "targetConnections",
            json!({
                "name": "Demo Dynamics", "baseConnectionId": connection,
                "connectionSpec": {"id": DYNAMICS_DESTINATION.to_string(), "version": "1.0"},
                "params": {"customizationPrefix": prefix},
            }),
        )
        .await?;
    Ok((connection, target))
}

pub(super) async fn seed_contacts(dynamics: &Client, count: usize) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(count);
    for start in (0..count).step_by(1000) {
        let targets: Vec<Json> = (start..(start + 1000).min(count))
            .map(|i| json!({"@odata.type": "Microsoft.Dynamics.CRM.contact", "lastname": format!("Demo {i}")}))
            .collect();
        let response = dynamics
            .send(Method::POST, "contacts/Microsoft.Dynamics.CRM.CreateMultiple", Some(&json!({"Targets": targets})))
            .await?;
        let body: Json = response.json().await?;
        let created = body["Ids"].as_array().context("CreateMultiple answered without Ids")?;
        ids.extend(created.iter().filter_map(|i| i.as_str()?.parse::<Uuid>().ok()));
    }
    ensure!(ids.len() == count, "{} contacts were created instead of {count}", ids.len());
    Ok(ids)
}

/// Reads every contact the demo wrote to and compares it with what it should hold.
async fn verify(dynamics: &Client, expected: &HashMap<Uuid, Expected>) -> anyhow::Result<(usize, Vec<String>)> {
    let columns: Vec<String> = AUDIENCES.iter().map(|(_, _, c)| format!("new_{c}")).collect();
    let mut select = vec!["contactid".to_string(), "firstname".to_string()];
    select.extend(columns);
    let select: Vec<&str> = select.iter().map(String::as_str).collect();
    let mut rows = std::pin::pin!(dynamics.query(&dataverse::Query::new(&Table::contact()).select(&select)));
    let (mut checked, mut wrong) = (0, Vec::new());
    while let Some(row) = rows.try_next().await? {
        let row = Json::Object(row);
        let Some(id) = row["contactid"].as_str().and_then(|i| i.parse::<Uuid>().ok()) else { continue };
        let Some(should) = expected.get(&id) else { continue };
        checked += 1;
        let mut differences = Vec::new();
        if row["firstname"].as_str() != should.firstname.as_deref() {
            differences.push(format!("firstname is {} instead of {:?}", row["firstname"], should.firstname));
        }
        for (_, _, column) in AUDIENCES {
            let holds = row[format!("new_{column}")].as_str();
            let wanted = should.statuses.get(column).copied();
            if holds != wanted {
                differences.push(format!("new_{column} is {holds:?} instead of {wanted:?}"));
            }
        }
        if !differences.is_empty() {
            wrong.push(format!("contact {id}: {}", differences.join(", ")));
        }
    }
    Ok((checked, wrong))
}

fn print_run(run: &Json) {
    let summary = &run["metrics"]["recordSummary"];
    println!("5. the flow's run:");
    println!("   profiles received   {}", summary["inputRecordCount"]);
    println!("   profiles activated  {}", summary["outputRecordCount"]);
    println!("   excluded            {}", summary["skippedRecordCount"]);
    println!("   failed              {}", summary["failedRecordCount"]);
    println!("   activation rate     {:.1}%", run["metrics"]["activationRate"].as_f64().unwrap_or(0.0) * 100.0);
    for outcome in run["outcomes"].as_array().into_iter().flatten() {
        println!(
            "   {:<9} {:<24} {:>6}  {}  e.g. {}",
            outcome["outcome"].as_str().unwrap_or_default(),
            outcome["code"].as_str().unwrap_or_default(),
            outcome["count"],
            outcome["message"].as_str().unwrap_or_default(),
            outcome["samples"][0].as_str().unwrap_or_default()
        );
    }
}

/// dynsync's API as the demo's user calls it.
struct Api<'s> {
    http: reqwest::Client,
    service: &'s RunningService,
}

impl Api<'_> {
    fn request(&self, method: Method, url: String) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.service.token)
            .header("x-api-key", "dynsync-demo")
            .header("x-sandbox-name", "demo")
    }

    /// Creates a resource; its id.
    async fn post(&self, resource: &str, body: Json) -> anyhow::Result<String> {
        let answer = self.call(Method::POST, resource, Some(body)).await?;
        Ok(answer["id"].as_str().context("the answer has an id")?.to_string())
    }

    /// Calls the API; the answer, or an error with its detail.
    async fn call(&self, method: Method, resource: &str, body: Option<Json>) -> anyhow::Result<Json> {
        let mut request = self.request(method.clone(), format!("{}/{resource}", self.service.api()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let answer: Json = response.json().await?;
        if !status.is_success() {
            bail!("{method} {resource} failed ({status}): {}", answer["detail"].as_str().unwrap_or_default());
        }
        Ok(answer)
    }

    async fn stream(&self, flow: &str, messages: &[Json]) -> anyhow::Result<Json> {
        let url = format!("{}/collection/batch/{flow}", self.service.url);
        let response = self.request(Method::POST, url).json(&json!({ "messages": messages })).send().await?;
        ensure!(response.status().is_success(), "streaming profiles failed: {}", response.status());
        Ok(response.json().await?)
    }

    /// The flow's runs, added up, once they have handled `accepted` profiles (a demo that crosses the hour
    /// has two runs).
    async fn wait_for_run(&self, flow: &str, accepted: u64, within: Duration) -> anyhow::Result<Json> {
        let deadline = Instant::now() + within;
        loop {
            let url = format!("{}/runs?property=flowId=={flow}", self.service.api());
            let runs: Json = self.request(Method::GET, url).send().await?.json().await?;
            let runs = runs["items"].as_array().cloned().unwrap_or_default();
            let total = |field: &str| -> u64 {
                runs.iter().filter_map(|r| r["metrics"]["recordSummary"][field].as_u64()).sum()
            };
            let handled = total("inputRecordCount");
            if handled >= accepted {
                let decided = total("outputRecordCount") + total("skippedRecordCount") + total("failedRecordCount");
                return Ok(json!({
                    "metrics": {
                        "recordSummary": {
                            "inputRecordCount": handled,
                            "outputRecordCount": total("outputRecordCount"),
                            "skippedRecordCount": total("skippedRecordCount"),
                            "failedRecordCount": total("failedRecordCount"),
                            "createdRecordCount": total("createdRecordCount"),
                            "updatedRecordCount": total("updatedRecordCount"),
                        },
                        "activationRate": total("outputRecordCount") as f64 / decided.max(1) as f64,
                    },
                    "outcomes": runs.iter().flat_map(|r| r["outcomes"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>(),
                }));
            }
            ensure!(Instant::now() < deadline, "the flow handled {handled} of {accepted} profiles in {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
