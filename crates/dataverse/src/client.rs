//! The Web API client: every request carries a fresh token, and a 401 gets one retry with a new one.

use crate::auth::{ClientCredentials, TokenProvider};
use crate::environment::Environment;
use crate::error::{ApiError, Error};
use reqwest::{Method, Response};
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// Who the client acts as, from `WhoAmI`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WhoAmI {
    pub user_id: Uuid,
    pub business_unit_id: Uuid,
    pub organization_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    environment: Environment,
    tokens: Arc<TokenProvider>,
    pub(crate) metadata: Arc<crate::metadata::MetadataCache>,
}

impl Client {
    pub fn new(environment: Environment, credentials: ClientCredentials) -> Self {
        let http = reqwest::Client::new();
        let tokens = Arc::new(TokenProvider::new(http.clone(), credentials, &environment));
        Client { http, environment, tokens, metadata: Default::default() }
    }

    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// Sends a request to a Web API path (relative to `…/api/data/v9.2/`) and returns the response when it
    /// succeeded, or the typed error when it did not.
    pub async fn send(&self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Response, Error> {
        let url = format!("{}{}", self.environment.web_api(), path);
        for attempt in 0..2 {
            let token = self.tokens.token().await?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .header("Accept", "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|source| Error::Transport { url: url.clone(), source })?;
            if response.status().is_success() {
                return Ok(response);
            }
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                // The token may have been revoked or expired early: sign in again, once.
                self.tokens.invalidate().await;
                continue;
            }
            return Err(Error::Api(ApiError::from_response(response).await));
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// `WhoAmI`: the cheapest call that proves the credentials and the environment work together.
    pub async fn who_am_i(&self) -> Result<WhoAmI, Error> {
        let response = self.send(Method::GET, "WhoAmI", None).await?;
        let url = response.url().to_string();
        response.json().await.map_err(|e| Error::UnexpectedBody { url, detail: e.to_string() })
    }
}
