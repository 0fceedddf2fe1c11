//! A client of dynsync's own API, for the command line: the same requests a user would send with curl.

use serde_json::{Value as Json, json};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("dynsync does not answer at {url}: {source}; start it with `dynsync serve`, or give --url")]
    Unreachable { url: String, source: reqwest::Error },
    /// The API's own explanation.
    #[error("{0}")]
    Refused(String),
}

pub struct Remote {
    http: reqwest::Client,
    /// `http://host:port`: where the streaming inlets are.
    root: String,
    api: String,
    token: String,
    sandbox: String,
}

impl Remote {
    pub fn new(url: &str, token: &str, sandbox: &str) -> Remote {
        Remote {
            http: reqwest::Client::new(),
            root: url.trim_end_matches('/').to_string(),
            api: format!("{}{}", url.trim_end_matches('/'), crate::api::BASE_PATH),
            token: token.trim().to_string(),
            sandbox: sandbox.to_string(),
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Json>) -> Result<Json, RemoteError> {
        self.send_to(format!("{}/{path}", self.api), method, body).await
    }

    /// Streams profile messages into a flow's inlet; the receipt.
    pub async fn stream(&self, flow: &str, messages: &[Json]) -> Result<Json, RemoteError> {
        let url = format!("{}/collection/batch/{flow}", self.root);
        self.send_to(url, reqwest::Method::POST, Some(&json!({ "messages": messages }))).await
    }

    async fn send_to(&self, url: String, method: reqwest::Method, body: Option<&Json>) -> Result<Json, RemoteError> {
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .header("x-sandbox-name", &self.sandbox)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|source| RemoteError::Unreachable { url: url.clone(), source })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body: Json =
            if text.is_empty() { Json::Null } else { serde_json::from_str(&text).unwrap_or(json!({"detail": text})) };
        if status.is_success() {
            return Ok(body);
        }
        let mut message = body["detail"].as_str().unwrap_or("").to_string();
        if message.is_empty() {
            message = format!("dynsync answered {status}");
        }
        if let Some(problems) = body["report"]["problems"].as_array().filter(|p| !p.is_empty()) {
            message = "the flow was not saved, because it does not fit the contact table:".to_string();
            for p in problems {
                let (field, text) = (p["field"].as_str().unwrap_or(""), p["message"].as_str().unwrap_or(""));
                message.push_str(&format!("\n  {field}: {text}"));
            }
        }
        Err(RemoteError::Refused(message))
    }

    pub async fn get(&self, path: &str) -> Result<Json, RemoteError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Json) -> Result<Json, RemoteError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// The items of a list, or of a get by id.
    pub async fn items(&self, path: &str) -> Result<Vec<Json>, RemoteError> {
        Ok(self.get(path).await?["items"].as_array().cloned().unwrap_or_default())
    }
}
