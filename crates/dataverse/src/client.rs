//! The Web API client: every request goes through the [`Executor`] (throttling, retries, concurrency),
//! carries a fresh token, and gets one retry with a new token after a 401.

use crate::auth::{AuthError, Credentials, TokenProvider};
use crate::environment::Environment;
use crate::error::{ApiError, Error, ErrorKind, ThrottleLimit};
use crate::executor::{Executor, ExecutorOptions, Metrics};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Who the client acts as, from `WhoAmI`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WhoAmI {
    pub user_id: Uuid,
    pub business_unit_id: Uuid,
    pub organization_id: Uuid,
}

/// One Web API request, kept whole so that it can be sent again.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    /// A path relative to the Web API root (`contacts(…)`), or an absolute URL (an `@odata.nextLink`).
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<(String, Bytes)>,
    /// Whether sending it twice does no harm. A request that is not is only sent again when the server
    /// surely did not act on it (refused by a limit, unavailable, connection never made).
    pub idempotent: bool,
    /// A `$batch` that stops at a failure answers 400 with every answer in a multipart body: that is a
    /// reply to read, not an error.
    pub multipart_answer: bool,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("body_bytes", &self.body.as_ref().map(|(_, b)| b.len()))
            .finish_non_exhaustive()
    }
}

impl Request {
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        let idempotent = method != Method::POST;
        Request { method, target: target.into(), headers: Vec::new(), body: None, idempotent, multipart_answer: false }
    }

    pub fn get(target: impl Into<String>) -> Self {
        Request::new(Method::GET, target)
    }

    pub fn json(mut self, body: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
        self.body = Some(("application/json".into(), Bytes::from(bytes)));
        self
    }

    pub fn body(mut self, content_type: impl Into<String>, body: impl Into<Bytes>) -> Self {
        self.body = Some((content_type.into(), body.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// A successful answer, read in full (so that a connection dropped mid-body is retried like any other).
#[derive(Debug, Clone)]
pub struct Reply {
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn read_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::UnexpectedBody { url: self.url.clone(), detail: e.to_string() })
    }

    /// As `reqwest::Response::json`, for callers written against it: the body is already read.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        self.read_json()
    }

    /// As `reqwest::Response::text`.
    pub async fn text(self) -> Result<String, Error> {
        Ok(String::from_utf8_lossy(&self.body).into_owned())
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Inner {
    http: reqwest::Client,
    environment: Environment,
    tokens: TokenProvider,
    executor: Executor,
}

/// A client for one environment. Cheap to clone: clones share the credentials and token cache, the concurrency
/// limit, the pause after a throttle and the counters.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    pub(crate) metadata: Arc<crate::metadata::MetadataCache>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("environment", &self.inner.environment)
            .field("tokens", &self.inner.tokens)
            .field("metrics", &self.metrics())
            .finish()
    }
}

/// What one failed attempt calls for.
enum Next {
    Fail(Error),
    RetryAfter(Duration),
}

impl Client {
    pub fn new(environment: Environment, credentials: impl Into<Credentials>) -> Self {
        Self::with_options(environment, credentials, ExecutorOptions::default())
    }

    pub fn with_options(
        environment: Environment,
        credentials: impl Into<Credentials>,
        options: ExecutorOptions,
    ) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(options.max_concurrency.max(1))
            .build()
            .expect("the HTTP client builds with its default TLS settings");
        let tokens = TokenProvider::new(http.clone(), credentials, &environment);
        let inner = Inner { http, environment, tokens, executor: Executor::new(options) };
        Client { inner: Arc::new(inner), metadata: Default::default() }
    }

    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// Replaces the credentials the next sign-in uses (a rotated client secret, another account) and forgets
    /// the token and refresh token got with the old ones, so that no request goes out on them from now on.
    /// Everything else stays, in this client and its clones: the concurrency limit, a pause after a throttle,
    /// the counters of [`metrics`](Self::metrics) and the metadata cache. A request already in flight finishes
    /// with the token it was sent with.
    pub fn set_credentials(&self, credentials: impl Into<Credentials>) {
        self.inner.tokens.set_credentials(credentials);
    }

    /// The most requests the client sends at once now ([`crate::executor::Executor::parallelism`]).
    pub fn parallelism(&self) -> usize {
        self.inner.executor.parallelism()
    }

    /// Requests, throttles by kind, retries, answers by status, latencies and the current concurrency.
    pub fn metrics(&self) -> Metrics {
        self.inner.executor.metrics()
    }

    /// Sends a request to a Web API path (relative to `…/api/data/v9.2/`) and returns the answer when it
    /// succeeded, or the typed error when it did not.
    pub async fn send(&self, method: Method, path: &str, body: Option<&serde_json::Value>) -> Result<Reply, Error> {
        let mut request = Request::new(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.execute(&request).await
    }

    fn url_of(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else {
            format!("{}{}", self.inner.environment.web_api(), target)
        }
    }

    /// Sends a request through the executor: waits out pauses, takes a slot, retries what is worth
    /// retrying. Dropping the future abandons the request and frees its slot.
    pub async fn execute(&self, request: &Request) -> Result<Reply, Error> {
        let executor = &self.inner.executor;
        let url = self.url_of(&request.target);
        let mut transient_retries = 0u32;
        let mut renewed_token = false;
        loop {
            let next = {
                let permit = executor.acquire().await;
                let token = match self.inner.tokens.token().await {
                    Ok(token) => token,
                    // An authority that answers "temporarily unavailable" is waited for; one that cannot be
                    // reached at all is most often a wrong authority URL, which the caller should hear at once.
                    Err(e @ AuthError::Unavailable { .. }) if transient_retries < executor.options().max_retries => {
                        tracing::debug!(error = %e, "the sign-in service is unavailable; retrying");
                        transient_retries += 1;
                        drop(permit);
                        executor.count_retry();
                        tokio::time::sleep(executor.backoff(transient_retries)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut builder = self
                    .inner
                    .http
                    .request(request.method.clone(), &url)
                    .bearer_auth(token.expose())
                    .header("OData-MaxVersion", "4.0")
                    .header("OData-Version", "4.0")
                    .header("Accept", "application/json");
                for (name, value) in &request.headers {
                    builder = builder.header(*name, value);
                }
                if let Some((content_type, body)) = &request.body {
                    builder = builder.header("Content-Type", content_type.as_str()).body(body.clone());
                }
                let started = Instant::now();
                executor.count_request();
                let timeout = executor.options().attempt_timeout;
                let answer = tokio::time::timeout(timeout, async {
                    let response = builder.send().await?;
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                })
                .await;
                if !matches!(&answer, Ok(Ok((status, _, _))) if *status == StatusCode::TOO_MANY_REQUESTS) {
                    // A refused request costs no execution time; any other may have run, whatever came back.
                    executor.spent(started.elapsed());
                }
                match answer {
                    Err(_) => {
                        executor.count_transient();
                        executor.back_off();
                        if !request.idempotent {
                            return Err(Error::Timeout { url, timeout });
                        }
                        self.transient(&mut transient_retries, Error::Timeout { url: url.clone(), timeout })
                    }
                    Ok(Err(source)) => {
                        executor.count_transient();
                        executor.back_off();
                        // Only a connection never made is surely not acted on.
                        let safe = request.idempotent || source.is_connect();
                        let error = Error::Transport { url: url.clone(), source };
                        if !safe {
                            return Err(error);
                        }
                        self.transient(&mut transient_retries, error)
                    }
                    Ok(Ok((status, headers, body))) => {
                        executor.count_answer(status.as_u16(), started.elapsed());
                        if let Some(hint) = headers
                            .get("x-ms-dop-hint")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<usize>().ok())
                        {
                            executor.observe_dop_hint(hint);
                        }
                        if let Some(remaining_ms) = headers
                            .get("x-ms-ratelimit-time-remaining-xrm-requests")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<f64>().ok())
                            .filter(|ms| (0.0..1e12).contains(ms))
                        {
                            permit.server_remaining(Duration::from_secs_f64(remaining_ms / 1000.0));
                        }
                        let multipart = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with("multipart/mixed"));
                        if status.is_success() || (request.multipart_answer && multipart) {
                            permit.succeeded(started.elapsed());
                            return Ok(Reply { url, status, headers, body });
                        }
                        if status == StatusCode::UNAUTHORIZED && !renewed_token {
                            // The token may have been revoked or expired early: sign in again, once.
                            renewed_token = true;
                            self.inner.tokens.invalidate().await?;
                            executor.count_retry();
                            continue;
                        }
                        let error = ApiError::from_parts(status.as_u16(), &headers, &body);
                        self.after_error(error, request, &mut transient_retries)
                    }
                }
            };
            match next {
                Next::Fail(error) => return Err(error),
                Next::RetryAfter(delay) => {
                    executor.count_retry();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn transient(&self, retries: &mut u32, error: Error) -> Next {
        let executor = &self.inner.executor;
        if *retries >= executor.options().max_retries {
            return Next::Fail(error);
        }
        *retries += 1;
        tracing::debug!(%error, retry = *retries, "retrying after a transient failure");
        Next::RetryAfter(executor.backoff(*retries))
    }

    fn after_error(&self, error: ApiError, request: &Request, transient_retries: &mut u32) -> Next {
        let executor = &self.inner.executor;
        match error.kind {
            ErrorKind::Throttled(limit) => {
                executor.count_throttle(limit);
                executor.learn_limits(&error.message);
                let retry_after = error.retry_after.unwrap_or(Duration::from_secs(1));
                match limit {
                    ThrottleLimit::Concurrency => {
                        // Too many at once: fewer slots, and this request alone waits a little.
                        executor.back_off();
                        Next::RetryAfter(executor.backoff(1).max(retry_after.min(Duration::from_secs(1))))
                    }
                    ThrottleLimit::Requests | ThrottleLimit::ExecutionTime => {
                        // The window's budget is spent: nobody sends until it has room again.
                        tracing::debug!(?limit, ?retry_after, "throttled: pausing the client");
                        executor.pause_for(retry_after);
                        Next::RetryAfter(Duration::ZERO)
                    }
                }
            }
            ErrorKind::Transient => {
                executor.count_transient();
                executor.back_off();
                // A 500 may come after the work was done; a 503 comes from a server that did not take it.
                if !request.idempotent && error.status != 503 {
                    return Next::Fail(Error::Api(error));
                }
                self.transient(transient_retries, Error::Api(error))
            }
            _ => Next::Fail(Error::Api(error)),
        }
    }

    /// `WhoAmI`: the cheapest call that proves the credentials and the environment work together.
    pub async fn who_am_i(&self) -> Result<WhoAmI, Error> {
        self.execute(&Request::get("WhoAmI")).await?.read_json()
    }
}
