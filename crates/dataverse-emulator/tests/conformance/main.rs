//! Conformance of the emulator with Dataverse, over HTTP. Each test names the section of
//! `shared/reference/dataverse-web-api.md` whose behaviour it checks.

mod activities;
mod annotations;
mod auth;
mod batch;
mod bulk;
mod bulk_delete;
mod catalog;
mod changes;
mod consent;
mod discovery;
mod faults;
mod fetchxml;
mod limits;
mod metadata;
mod metadata_changes;
mod pages;
mod query;
mod records;
mod relationships;
mod state;
mod tls;
mod validation;
mod views;

use dataverse_emulator::{CostModel, EmulatorConfig, RunningEmulator};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value as Json, json};

/// A started emulator with a client that holds a token for its application user.
pub struct Env {
    pub emulator: RunningEmulator,
    pub http: reqwest::Client,
    pub token: String,
}

/// A response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts a Dataverse error: status, `error.code`, and the message (whole, or a part of it).
    pub fn assert_error(&self, status: u16, code: &str, message_part: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}", self.text);
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(message_part), "message {message:?} lacks {message_part:?}");
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::with(config()).await
    }

    pub async fn with(config: EmulatorConfig) -> Env {
        let emulator = config.start().await.expect("emulator starts");
        let http = reqwest::Client::new();
        let token = token_for(&http, &emulator).await;
        Env { emulator, http, token }
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}{}", self.emulator.web_api, path)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let url = if path.starts_with("http") { path.to_string() } else { self.api(path) };
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0")
            .header("Accept", "application/json")
    }

    pub async fn send(&self, builder: RequestBuilder) -> Reply {
        let response = builder.send().await.expect("request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body reads");
        Reply { status, headers, text }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Json) -> Reply {
        self.send(self.request(Method::POST, path).json(&body)).await
    }

    pub async fn patch(&self, path: &str, body: Json) -> Reply {
        self.send(self.request(Method::PATCH, path).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Creates a row and returns its id, read from `OData-EntityId`.
    pub async fn create(&self, set: &str, body: Json) -> String {
        let reply = self.post(set, body).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
        let location = reply.header("odata-entityid").expect("OData-EntityId").to_string();
        location.rsplit_once('(').unwrap().1.trim_end_matches(')').to_string()
    }

    /// Adds a custom column to a table, as an admin does.
    pub async fn add_column(&self, table: &str, definition: Json) {
        let reply = self.post(&format!("EntityDefinitions(LogicalName='{table}')/Attributes"), definition).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
    }
}

pub async fn token_for(http: &reqwest::Client, emulator: &RunningEmulator) -> String {
    token_as(http, emulator, emulator.client_id, &emulator.client_secret).await
}

/// A token for the app registration `client_id`, signed in with the client credentials grant.
pub async fn token_as(
    http: &reqwest::Client,
    emulator: &RunningEmulator,
    client_id: uuid::Uuid,
    client_secret: &dataverse_emulator::Secret,
) -> String {
    let answer: Json = http
        .post(&emulator.token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &client_id.to_string()),
            ("client_secret", client_secret.expose()),
            ("scope", &format!("{}/.default", emulator.url)),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().expect("a token").to_string()
}

/// The emulator as these tests run it: Dynamics 365's limits, but no execution cost, so that each test
/// is as fast as the machine allows.
pub fn config() -> EmulatorConfig {
    EmulatorConfig { cost: CostModel::free(), ..Default::default() }
}

/// A label as metadata bodies carry it.
pub fn label(text: &str) -> Json {
    json!({"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]})
}
