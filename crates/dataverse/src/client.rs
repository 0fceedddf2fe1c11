//! The Web API client: every request goes through the [`Executor`] (throttling, retries, concurrency),
//! carries a fresh token, and gets one retry with a new token after a 401.
//!
//! A client may sign in as several app registrations ([`Client::with_registrations`]), each an application user
//! of its own with its own budget under Dataverse's limits: the executor sends each request as the user (and
//! to the web server) whose window has most room. A registration whose sign-in is refused (a wrong or expired
//! secret, an app removed) is taken out of rotation, logged with its client id and kept in
//! [`Client::registrations`] with the reason, while the others carry its load; with none left, the request
//! fails with that reason. Records a request creates are owned by the application user it went out as.

use crate::auth::{AuthError, Credentials, TokenProvider};
use crate::budget::{Spending, StatedLimit};
use crate::environment::Environment;
use crate::error::{ApiError, Error, ErrorKind, ThrottleLimit};
use crate::executor::{Executor, ExecutorOptions, LaneSpending, Metrics, Permit};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most of a body's stated `Content-Length` reserved before it arrives: a larger body still reads whole,
/// growing as it comes, but a header alone never reserves more than this.
const RESERVED_BODY: u64 = 64 * 1024 * 1024;

/// A response's body, read into one buffer as it arrives (sized by its `Content-Length`): each chunk is copied
/// once and let go, rather than all kept until the last and then copied together — a page of thousands of rows
/// is held once, not twice, while it is read.
async fn body_of(mut response: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let reserved = response.content_length().unwrap_or(0).min(RESERVED_BODY);
    let mut body = Vec::with_capacity(reserved as usize);
    while let Some(chunk) = response.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

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

    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        let bytes = serde_json::to_vec(body).expect("a request body serializes");
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

/// One app registration (or person) the client signs in as.
struct Registration {
    tokens: TokenProvider,
    /// Who it is, for messages and for other clients of the same user: its client id (the user name for the
    /// password grant). Never a secret. Replaced with the credentials.
    name: std::sync::Mutex<String>,
    /// Why its sign-in was refused, while it is out of rotation.
    refused: std::sync::Mutex<Option<AuthError>>,
}

impl Registration {
    fn new(http: &reqwest::Client, credentials: Credentials, environment: &Environment) -> Self {
        Registration {
            name: std::sync::Mutex::new(credentials.who().to_string()),
            tokens: TokenProvider::new(http.clone(), credentials, environment),
            refused: std::sync::Mutex::new(None),
        }
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, Option<AuthError>> {
        self.refused.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One of the client's registrations, as [`Client::registrations`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// The app registration's client id (the user name for the password grant).
    pub name: String,
    /// Why its sign-in was refused, if it was: it is out of rotation until its credentials are replaced.
    pub refused: Option<AuthError>,
}

/// What one application user spent on one web server over the window, named as every client of the environment
/// names them: the app registration's client id (the user name for the password grant) and the server's
/// `ARRAffinity` id (`None`: no answer named one yet — the only server, as far as the client knows). Processes
/// that write as the same users exchange these to share their budget ([`Client::spending`],
/// [`Client::set_others_spending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpending {
    pub client_id: String,
    pub web_server: Option<String>,
    pub spending: Spending,
    /// How many clients spent it (one for this client's own): each of them may send more before it is heard of
    /// again, and takes its part of the room the report leaves.
    pub clients: u32,
}

/// The `ARRAffinity` cookie's value in an answer's `Set-Cookie`: the web server that answered.
fn affinity_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|cookie| cookie.split(';').next()?.trim().split_once('='))
        .find(|(name, _)| *name == "ARRAffinity")
        .map(|(_, value)| value.trim())
}

struct Inner {
    http: reqwest::Client,
    environment: Environment,
    registrations: Vec<Registration>,
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
            .field("registrations", &self.inner.registrations.iter().map(|r| &r.tokens).collect::<Vec<_>>())
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
        Self::build(environment, vec![credentials.into()], options)
    }

    /// A client that signs in as each of these app registrations (each an application user with its own
    /// budget under the limits) and spreads its requests over them. At least one is needed.
    pub fn with_registrations(
        environment: Environment,
        registrations: impl IntoIterator<Item = Credentials>,
        options: ExecutorOptions,
    ) -> Result<Self, Error> {
        let registrations: Vec<Credentials> = registrations.into_iter().collect();
        if registrations.is_empty() {
            return Err(Error::InvalidRequest(
                "a client needs at least one app registration to sign in as: give its credentials".into(),
            ));
        }
        Ok(Self::build(environment, registrations, options))
    }

    fn build(environment: Environment, registrations: Vec<Credentials>, options: ExecutorOptions) -> Self {
        let users = registrations.len();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(options.max_concurrency.max(1) * users)
            .build()
            .expect("the HTTP client builds with its default TLS settings");
        let registrations = registrations.into_iter().map(|c| Registration::new(&http, c, &environment)).collect();
        let inner = Inner { http, environment, registrations, executor: Executor::with_users(options, users) };
        Client { inner: Arc::new(inner), metadata: Default::default() }
    }

    /// Each registration the client signs in as, in the order given, and why it is out of rotation if it is.
    pub fn registrations(&self) -> Vec<RegistrationStatus> {
        let registrations = &self.inner.registrations;
        registrations.iter().map(|r| RegistrationStatus { name: r.name(), refused: r.refused().clone() }).collect()
    }

    pub fn environment(&self) -> &Environment {
        &self.inner.environment
    }

    /// Replaces the credentials the next sign-in uses (a rotated client secret, another account) and forgets
    /// the token and refresh token got with the old ones, so that no request goes out on them from now on.
    /// Everything else stays, in this client and its clones: the concurrency limit, a pause after a throttle,
    /// the counters of [`metrics`](Self::metrics) and the metadata cache. A request already in flight finishes
    /// with the token it was sent with.
    ///
    /// With several registrations, this replaces the first one's ([`set_registration_credentials`](Self::set_registration_credentials)).
    pub fn set_credentials(&self, credentials: impl Into<Credentials>) {
        self.set_registration_credentials(0, credentials);
    }

    /// Replaces the credentials of registration number `index` (from 0, in the order given), and puts it back
    /// into rotation if its sign-in had been refused. An index past the last changes nothing.
    pub fn set_registration_credentials(&self, index: usize, credentials: impl Into<Credentials>) {
        let Some(registration) = self.inner.registrations.get(index) else { return };
        let credentials = credentials.into();
        *registration.name.lock().unwrap_or_else(|e| e.into_inner()) = credentials.who().to_string();
        registration.tokens.set_credentials(credentials);
        *registration.refused() = None;
        self.inner.executor.reinstate(index);
    }

    /// The most requests the client sends at once now ([`crate::executor::Executor::parallelism`]).
    pub fn parallelism(&self) -> usize {
        self.inner.executor.parallelism()
    }

    /// Requests, throttles by kind, retries, answers by status, latencies and the current concurrency.
    pub fn metrics(&self) -> Metrics {
        self.inner.executor.metrics()
    }

    /// The window Dataverse counts the limits over, as the client knows it (Dynamics 365's 300 s until a 429
    /// states the environment's).
    pub fn window(&self) -> Duration {
        self.inner.executor.window()
    }

    /// The latest statement of each limit this client holds: from its own 429s, or adopted from another client's
    /// ([`Client::adopt_limits`]).
    pub fn stated_limits(&self) -> Vec<StatedLimit> {
        self.inner.executor.stated_limits()
    }

    /// Limits other clients of this environment were told by 429s (other processes): each replaces the model's
    /// unless this client holds a later statement of the same limit, so that a client need not be refused to
    /// learn what another already was. How many were taken.
    pub fn adopt_limits(&self, stated: &[StatedLimit]) -> usize {
        stated.iter().filter(|s| self.inner.executor.adopt_limit(**s)).count()
    }

    /// This client's own requests and execution time over the window, per application user and web server.
    pub fn spending(&self) -> Vec<UserSpending> {
        let registrations = &self.inner.registrations;
        self.inner
            .executor
            .spending()
            .into_iter()
            .map(|lane| UserSpending {
                client_id: registrations[lane.user].name(),
                web_server: lane.web_server,
                spending: lane.spending,
                clients: lane.clients,
            })
            .collect()
    }

    /// What other clients writing as this client's users (other processes) reported spending in their window:
    /// the requests and execution time each user's lane on each server counts as spent beside its own, in
    /// place of any earlier report, until a window has passed. A user or server none of them names spent
    /// nothing, as far as they know.
    pub fn set_others_spending(&self, others: &[UserSpending]) {
        let registrations = &self.inner.registrations;
        let lanes: Vec<LaneSpending> = others
            .iter()
            .flat_map(|other| {
                registrations.iter().enumerate().filter(|(_, r)| r.name() == other.client_id).map(|(user, _)| {
                    LaneSpending {
                        user,
                        web_server: other.web_server.clone(),
                        spending: other.spending,
                        clients: other.clients,
                    }
                })
            })
            .collect();
        self.inner.executor.set_others_spending(&lanes);
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
                let mut permit = executor.acquire().await;
                let registration = &self.inner.registrations[permit.user()];
                let token = match registration.tokens.token().await {
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
                    // A registration refused for good: the others carry on, if there are others.
                    Err(e) if !e.is_transient() && executor.retire(permit.user()) => {
                        tracing::warn!(
                            registration = %registration.name(),
                            error = %e,
                            "sign-in refused: this app registration is out of rotation, the others carry its requests"
                        );
                        *registration.refused() = Some(e);
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
                if let Some(server) = permit.affinity() {
                    builder = builder.header(reqwest::header::COOKIE, format!("ARRAffinity={server}"));
                }
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
                    let body = body_of(response).await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                })
                .await;
                if let Ok(Ok((_, headers, _))) = &answer {
                    // The server that answered is the one whose budget the request counts in.
                    permit.answered_by(affinity_of(headers));
                }
                if !matches!(&answer, Ok(Ok((status, _, _))) if *status == StatusCode::TOO_MANY_REQUESTS) {
                    // A refused request costs no execution time; any other may have run, whatever came back.
                    permit.spent(started.elapsed());
                }
                match answer {
                    Err(_) => {
                        executor.count_transient();
                        permit.back_off();
                        if !request.idempotent {
                            return Err(Error::Timeout { url, timeout });
                        }
                        self.transient(&mut transient_retries, Error::Timeout { url: url.clone(), timeout })
                    }
                    Ok(Err(source)) => {
                        executor.count_transient();
                        permit.back_off();
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
                            registration.tokens.invalidate().await?;
                            executor.count_retry();
                            continue;
                        }
                        let error = ApiError::from_parts(status.as_u16(), &headers, &body);
                        self.after_error(error, request, &permit, &mut transient_retries)
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

    fn after_error(
        &self,
        error: ApiError,
        request: &Request,
        permit: &Permit<'_>,
        transient_retries: &mut u32,
    ) -> Next {
        let executor = &self.inner.executor;
        match error.kind {
            ErrorKind::Throttled(limit) => {
                executor.count_throttle(limit);
                executor.learn_limits(&error.message);
                let retry_after = error.retry_after.unwrap_or(Duration::from_secs(1));
                match limit {
                    ThrottleLimit::Concurrency => {
                        // Too many at once: fewer slots, and this request alone waits a little.
                        permit.back_off();
                        Next::RetryAfter(executor.backoff(1).max(retry_after.min(Duration::from_secs(1))))
                    }
                    ThrottleLimit::Requests | ThrottleLimit::ExecutionTime => {
                        // The window's budget is spent: nothing more goes to this server as this user until it
                        // has room again.
                        tracing::debug!(?limit, ?retry_after, "throttled: pausing this user on this server");
                        permit.pause_for(retry_after);
                        Next::RetryAfter(Duration::ZERO)
                    }
                }
            }
            ErrorKind::Transient => {
                executor.count_transient();
                permit.back_off();
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
