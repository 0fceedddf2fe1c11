//! One error type for everything a Dataverse call can end in, classified so that callers decide what to do
//! (retry, wait, fix the mapping, give up) without matching on strings.

use crate::auth::AuthError;
use std::time::Duration;

/// Which service protection limit a throttled request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleLimit {
    /// `0x80072322`: too many requests in the window.
    Requests,
    /// `0x80072321`: too much combined execution time in the window.
    ExecutionTime,
    /// `0x80072326`: too many requests at once.
    Concurrency,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Throttled(ThrottleLimit),
    NotFound,
    /// A column the table does not have (its name).
    UnknownProperty(String),
    Validation,
    Duplicate,
    PreconditionFailed,
    Auth,
    /// Worth retrying: timeouts, 5xx, dropped connections.
    Transient,
    /// A change-tracking token older than the environment keeps changes for: read the table in full again.
    ChangeTokenExpired,
    Other,
}

/// An error answer from the Web API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// Dataverse's `error.code` (`0x80040217`), empty when it gave none.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
    pub kind: ErrorKind,
}

/// The longest wait a `Retry-After` is taken for. Dataverse asks for seconds or minutes (its windows are 300 s);
/// more is a server's mistake, and a wait past what an `Instant` can hold would panic the client's pause.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The property name in "Could not find a property named 'x'" or "The property 'x' does not exist".
fn property_in(message: &str) -> Option<String> {
    for marker in ["Could not find a property named '", "The property '"] {
        if let Some(start) = message.find(marker).map(|i| i + marker.len()) {
            let rest = &message[start..];
            if let Some(end) = rest.find('\'')
                && (marker != "The property '" || rest[end..].starts_with("' does not exist"))
            {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

impl ApiError {
    pub fn classify(status: u16, code: &str, message: &str) -> ErrorKind {
        match (status, code.to_ascii_lowercase().as_str()) {
            (_, "0x80072322") => ErrorKind::Throttled(ThrottleLimit::Requests),
            (_, "0x80072321") => ErrorKind::Throttled(ThrottleLimit::ExecutionTime),
            (_, "0x80072326") => ErrorKind::Throttled(ThrottleLimit::Concurrency),
            (429, _) => ErrorKind::Throttled(ThrottleLimit::Requests),
            (_, "0x80044352") => ErrorKind::ChangeTokenExpired,
            (_, "0x80040237" | "0x80060892") => ErrorKind::Duplicate,
            (_, "0x80060882") | (412, _) => ErrorKind::PreconditionFailed,
            (404, _) => ErrorKind::NotFound,
            (401 | 403, _) => ErrorKind::Auth,
            (408 | 500..=599, _) => ErrorKind::Transient,
            (400, _) => match property_in(message) {
                Some(p) => ErrorKind::UnknownProperty(p),
                None => ErrorKind::Validation,
            },
            _ => ErrorKind::Other,
        }
    }

    /// Reads an error answer: Dataverse's `{"error":{"code","message"}}` body, `REQ_ID` and `Retry-After`.
    pub async fn from_response(response: reqwest::Response) -> ApiError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        Self::from_parts(status, &headers, &body)
    }

    /// Reads an error answer from its parts (a `$batch` part has no `reqwest::Response` of its own).
    pub fn from_parts(status: u16, headers: &reqwest::header::HeaderMap, body: &[u8]) -> ApiError {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let request_id = header("req_id");
        let retry_after = header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|seconds| Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let code = parsed["error"]["code"].as_str().unwrap_or_default().to_string();
        // Only a Dataverse error's own message is repeated: whatever else answered (a proxy, a misnamed host) may
        // have put anything in its body, and a caller may show the message to people who should not see it.
        let message = match parsed["error"]["message"].as_str() {
            Some(message) => clipped(message),
            None => format!(
                "HTTP {status} with {} bytes that are not a Dataverse error{}",
                body.len(),
                header("content-type").map(|t| format!(" ({t})")).unwrap_or_default()
            ),
        };
        ApiError { kind: Self::classify(status, &code, &message), status, code, message, request_id, retry_after }
    }
}

/// The longest error message kept from an answer; Dataverse's own are a sentence or two.
const MAX_MESSAGE_CHARS: usize = 2_000;

fn clipped(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Dataverse answered {} {}: {}", .0.status, .0.code, .0.message)]
    Api(ApiError),
    #[error("could not reach {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("Dataverse answered {url} with a body that is not what the Web API sends: {detail}")]
    UnexpectedBody { url: String, detail: String },
    #[error("no answer from {url} within {timeout:?}: the request was abandoned")]
    Timeout { url: String, timeout: Duration },
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "the change-tracking token for {entity_set} has expired ({}): read the table in full again, then resume from the token that read ends with",
        .api.message
    )]
    ChangeTokenExpired { entity_set: String, api: Box<ApiError> },
}

impl Error {
    /// The Web API's answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            Error::ChangeTokenExpired { api, .. } => Some(api),
            _ => None,
        }
    }

    /// Whether the credentials themselves were refused, so that waiting and trying again cannot help: the
    /// secret, password, tenant, application or environment needs fixing (then
    /// [`Client::set_credentials`](crate::Client::set_credentials)). True for a sign-in the authority refused
    /// ([`AuthError`] that is not [transient](AuthError::is_transient)), and for a 401 from the Web API: the
    /// client answers a first 401 by signing in again and sending once more, so a 401 that reaches the caller
    /// was refused with a freshly issued token too.
    ///
    /// False for a 403, which comes from a sign-in that worked by a user without the privilege (a security
    /// role to grant, not credentials to fix), and for an authority that could not be reached.
    pub fn is_sign_in_refused(&self) -> bool {
        match self {
            Error::Auth(a) => !a.is_transient(),
            Error::Api(e) => e.status == 401,
            _ => false,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Auth(a) if a.is_transient() => ErrorKind::Transient,
            Error::Auth(_) => ErrorKind::Auth,
            Error::Api(e) => e.kind.clone(),
            Error::Transport { .. } | Error::Timeout { .. } => ErrorKind::Transient,
            Error::UnexpectedBody { .. } | Error::InvalidRequest(_) => ErrorKind::Other,
            Error::ChangeTokenExpired { .. } => ErrorKind::ChangeTokenExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_credentials_are_a_refused_sign_in() {
        let wrong_secret = Error::Auth(AuthError::WrongSecret { client_id: "app".into() });
        assert!(wrong_secret.is_sign_in_refused());
        assert!(Error::Auth(AuthError::TokenRefused).is_sign_in_refused());
        let unavailable = AuthError::Unavailable { url: "https://login".into(), detail: "HTTP 503".into() };
        assert!(!Error::Auth(unavailable).is_sign_in_refused(), "waiting fixes an unavailable authority");
        let api = |status| {
            let headers = reqwest::header::HeaderMap::new();
            Error::Api(ApiError::from_parts(status, &headers, br#"{"error":{"code":"0x8004","message":"m"}}"#))
        };
        assert!(api(401).is_sign_in_refused(), "a 401 after the renewal the client always tries");
        assert!(!api(403).is_sign_in_refused(), "a missing privilege is not a refused sign-in");
        assert!(!api(503).is_sign_in_refused());
        assert!(!Error::InvalidRequest("x".into()).is_sign_in_refused());
    }

    #[test]
    fn an_answer_that_is_not_a_dataverse_error_is_described_never_repeated() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("content-type", "text/html".parse().unwrap());
        let error = ApiError::from_parts(500, &headers, b"<h1>internal: db-password=hunter2</h1>");
        assert_eq!(error.message, "HTTP 500 with 38 bytes that are not a Dataverse error (text/html)");
        let long = format!(r#"{{"error":{{"code":"0x1","message":"{}"}}}}"#, "m".repeat(10_000));
        let error = ApiError::from_parts(400, &headers, long.as_bytes());
        assert_eq!(error.message.chars().count(), 2_001, "a Dataverse message is kept, cut short");
    }

    #[test]
    fn a_retry_after_of_centuries_is_capped_so_that_pausing_for_it_is_not_a_panic() {
        // Found by fuzz/run (client_replies): Instant::now() + 1169852274605654717 s overflowed in pause_for.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "001169852274605654717".parse().unwrap());
        let body = br#"{"error":{"code":"0x80072322","message":"Number of requests exceeded the limit"}}"#;
        let error = ApiError::from_parts(429, &headers, body);
        assert_eq!(error.kind, ErrorKind::Throttled(ThrottleLimit::Requests));
        assert_eq!(error.retry_after, Some(MAX_RETRY_AFTER));
        crate::executor::Executor::new(Default::default()).pause_for(error.retry_after.unwrap());
        headers.insert("retry-after", "30".parse().unwrap());
        assert_eq!(ApiError::from_parts(429, &headers, body).retry_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn errors_are_classified_by_code_and_status() {
        assert_eq!(ApiError::classify(429, "0x80072321", ""), ErrorKind::Throttled(ThrottleLimit::ExecutionTime));
        assert_eq!(ApiError::classify(404, "0x80040217", ""), ErrorKind::NotFound);
        assert_eq!(ApiError::classify(412, "0x80040237", ""), ErrorKind::Duplicate);
        assert_eq!(ApiError::classify(503, "", ""), ErrorKind::Transient);
        assert_eq!(ApiError::classify(400, "0x80044352", "Version stamp"), ErrorKind::ChangeTokenExpired);
        assert_eq!(
            ApiError::classify(
                400,
                "0x80060888",
                "Could not find a property named 'new_foo' on type 'Microsoft.Dynamics.CRM.contact'."
            ),
            ErrorKind::UnknownProperty("new_foo".into())
        );
        assert_eq!(
            ApiError::classify(
                400,
                "0x80048d19",
                "... InnerException : Microsoft.OData.ODataException: The property 'new_x' does not exist on type 'Microsoft.Dynamics.CRM.contact'."
            ),
            ErrorKind::UnknownProperty("new_x".into())
        );
        assert_eq!(ApiError::classify(400, "0x80044331", "The length of the 'x' attribute"), ErrorKind::Validation);
    }
}
