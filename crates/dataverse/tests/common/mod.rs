//! What every end-to-end test needs: an emulator started in-process, and a client signed in to it.
#![allow(dead_code)]

use dataverse::{Client, ClientCredentials, Environment, ExecutorOptions, Secret};
use dataverse_emulator::{CostModel, EmulatorConfig, RunningEmulator};

/// The emulator without execution cost, so tests run as fast as the machine allows.
pub fn free() -> EmulatorConfig {
    EmulatorConfig { cost: CostModel::free(), ..Default::default() }
}

pub fn credentials(emulator: &RunningEmulator) -> ClientCredentials {
    ClientCredentials {
        tenant_id: emulator.tenant_id.to_string(),
        client_id: emulator.client_id.to_string(),
        client_secret: Secret::new(emulator.client_secret.expose()),
        authority: emulator.url.clone(),
    }
}

pub fn client(emulator: &RunningEmulator) -> Client {
    Client::new(Environment::from_url(&emulator.url).unwrap(), credentials(emulator))
}

pub fn client_with(emulator: &RunningEmulator, options: ExecutorOptions) -> Client {
    Client::with_options(Environment::from_url(&emulator.url).unwrap(), credentials(emulator), options)
}

/// A JSON object literal as a record.
pub fn record(value: serde_json::Value) -> dataverse::Record {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("a record is a JSON object, not {other}"),
    }
}
