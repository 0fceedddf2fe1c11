//! What the write-strategy and read benchmarks share: sizes from the environment, the `--json FILE`
//! argument, seeding, and the emulator's credentials.

use dataverse::{ClientCredentials, Secret};
use dataverse_emulator::RunningEmulator;
use dataverse_emulator::records::{Preconditions, WriteKind, WriteRequest, write};
use serde_json::json;
use uuid::Uuid;

/// A size from the environment; `1_000_000` reads as a million.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// The file after `--json`, if any.
pub fn json_file() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned()
}

/// Writes contacts straight into the emulator's store, through the Web API's own validation: seeding a
/// million rows through the Web API would take longer than the benchmark, and would count against the limits
/// the benchmark is measured under.
pub async fn seed_contacts(emulator: &RunningEmulator, rows: usize) -> Vec<Uuid> {
    let store = &emulator.environment.store;
    let table = store.read().schema.table("contact").expect("the contact table").clone();
    let caller = Uuid::new_v4();
    let mut ids = Vec::with_capacity(rows);
    for start in (0..rows).step_by(10_000) {
        let created = store
            .write(|data, journal| {
                let mut created = Vec::new();
                for i in start..(start + 10_000).min(rows) {
                    let body = json!({
                        "firstname": format!("First{i}"),
                        "lastname": format!("Last{i}"),
                        "emailaddress1": format!("contact{i}@example.com"),
                        "jobtitle": "seeded",
                    });
                    let request = WriteRequest {
                        table: &table,
                        key: None,
                        body: body.as_object().expect("an object"),
                        kind: WriteKind::Create,
                        preconditions: &Preconditions::default(),
                        caller,
                    };
                    created.push(write(data, journal, request)?.id);
                }
                Ok::<_, dataverse_emulator::error::ApiError>(created)
            })
            .await
            .expect("seed rows are valid");
        ids.extend(created);
    }
    ids
}

pub fn credentials(emulator: &RunningEmulator) -> ClientCredentials {
    ClientCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        client_secret: Secret::new(emulator.client_secret.expose()),
        authority: emulator.url.clone(),
    }
}
