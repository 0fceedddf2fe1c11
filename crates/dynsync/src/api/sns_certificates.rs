//! The Amazon SES inlet's signature gate: each Amazon SNS message is checked with the signing certificate it names,
//! fetched from AWS and kept in memory, or with the certificates pinned on the flow.
//!
//! The contract:
//! - [`check_ses`] lets a body through only when it is no SNS envelope (an SES event sent by raw message delivery,
//!   which carries no signature and is opened by the URL's code alone) or an envelope whose signature verifies
//!   ([`Envelope`]). A flow with pinned certificates (`snsCertificates`) checks against them and fetches nothing.
//! - Otherwise the certificate at the message's `SigningCertURL` — checked to be one of Amazon SNS's own addresses
//!   before anything else — is fetched over HTTPS: the inlet's only network call, given [`FETCH_TIMEOUT`], its body
//!   capped at [`MAX_CERTIFICATE_BYTES`], redirects not followed. It must be within its dates when used. It is kept
//!   per address for [`KEPT_FOR`], at most [`MAX_KEPT`] addresses (SNS signs with one certificate per region at a
//!   time), so the inlet does not reach AWS at every request.
//! - A signature that does not verify, or a certificate out of its dates, is answered 401 `unauthorized` and
//!   logged, and nothing is kept (SNS does not post a message again after a 4xx). A certificate that cannot be
//!   fetched is answered 502 `sns-certificate-unavailable`: SNS counts a 5xx a failed delivery and posts the message
//!   again (by default three times, 20 s apart; the subscription's delivery policy can allow up to an hour).
//!
//! Why a client of its own rather than `AppState::http`: that one waits without limit, and SNS waits about 15 s for
//! an answer before counting the delivery failed; a stalled fetch gives up well before.

use super::ApiError;
use crate::engagement::definition::EventsFlow;
use crate::engagement::formats::sns::{CertificateError, Envelope, SigningCertificate};
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use url::Url;

/// How long a certificate fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest certificate read: SNS's are under 2 KiB.
pub const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// How long a fetched certificate is kept.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// How many certificate addresses are kept at most; the oldest goes first.
pub const MAX_KEPT: usize = 16;

/// The certificates fetched from Amazon SNS, shared by the inlet's requests.
#[derive(Default)]
pub struct SnsCertificates {
    /// Made at the first fetch: most services have no SES flow, or pin their certificates.
    http: OnceLock<reqwest::Client>,
    kept: Mutex<Kept>,
}

impl SnsCertificates {
    /// The certificate at `url`, kept or fetched.
    async fn certificate(&self, url: &Url) -> Result<Arc<SigningCertificate>, FetchError> {
        if let Some(certificate) = self.kept.lock().expect("SNS certificates lock").get(url, Instant::now()) {
            return Ok(certificate);
        }
        let http = self.http.get_or_init(|| {
            reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .https_only(true)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("dynsync/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("the HTTP client for Amazon SNS certificates builds")
        });
        let certificate = Arc::new(fetch(http, url).await?);
        self.kept.lock().expect("SNS certificates lock").put(url.clone(), certificate.clone(), Instant::now());
        Ok(certificate)
    }

    fn forget(&self, url: &Url) {
        self.kept.lock().expect("SNS certificates lock").0.remove(url);
    }
}

/// Refuses an SES flow's post whose Amazon SNS signature does not verify (see the module's contract).
pub async fn check_ses(certificates: &SnsCertificates, flow: &EventsFlow, body: &[u8]) -> Result<(), ApiError> {
    let definition = &flow.definition;
    let unauthorized = |detail: String| {
        tracing::warn!(flow = %flow.id, detail = %detail, "an Amazon SNS message is refused");
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    };
    // A body that is not JSON is no envelope: the format's reading refuses it, saying why.
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return Ok(()) };
    let Some(envelope) = Envelope::read(&value).map_err(|e| unauthorized(e.to_string()))? else { return Ok(()) };
    // Decided by what the flow holds, not by what reads of it, so that a pinned flow never fetches.
    if !definition.sns_certificates.is_empty() {
        return envelope.verify_pinned(&definition.sns_certificates()).map_err(|e| unauthorized(e.to_string()));
    }
    let url = &envelope.certificate_url;
    let certificate = certificates.certificate(url).await.map_err(|e| {
        tracing::warn!(flow = %flow.id, url = %url, error = %e, "an Amazon SNS signing certificate cannot be fetched");
        ApiError::new(StatusCode::BAD_GATEWAY, "sns-certificate-unavailable", e.to_string())
    })?;
    if let Err(e) = certificate.check_dates(Utc::now()) {
        certificates.forget(url);
        return Err(unauthorized(format!("the Amazon SNS signing certificate at {url} {e}")));
    }
    envelope.verify(&certificate).map_err(|e| unauthorized(e.to_string()))
}

/// The certificates fetched, by address, with when.
#[derive(Default)]
struct Kept(HashMap<Url, (Instant, Arc<SigningCertificate>)>);

impl Kept {
    fn get(&self, url: &Url, now: Instant) -> Option<Arc<SigningCertificate>> {
        let (fetched, certificate) = self.0.get(url)?;
        (now.saturating_duration_since(*fetched) < KEPT_FOR).then(|| certificate.clone())
    }

    /// Keeps a certificate fetched `now`, after dropping those kept too long and, when full, the oldest.
    fn put(&mut self, url: Url, certificate: Arc<SigningCertificate>, now: Instant) {
        self.0.retain(|_, (fetched, _)| now.saturating_duration_since(*fetched) < KEPT_FOR);
        if !self.0.contains_key(&url)
            && self.0.len() >= MAX_KEPT
            && let Some(oldest) = self.0.iter().min_by_key(|(_, (fetched, _))| *fetched).map(|(url, _)| url.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(url, (now, certificate));
    }
}

/// Fetches and reads the certificate at `url`.
async fn fetch(http: &reqwest::Client, url: &Url) -> Result<SigningCertificate, FetchError> {
    let unreachable =
        |e: reqwest::Error| FetchError::Unreachable { url: url.clone(), why: e.without_url().to_string() };
    let mut response = http.get(url.clone()).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(FetchError::Status { url: url.clone(), status: response.status().as_u16() });
    }
    if response.content_length().is_some_and(|length| length > MAX_CERTIFICATE_BYTES as u64) {
        return Err(FetchError::TooLarge { url: url.clone() });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_CERTIFICATE_BYTES {
            return Err(FetchError::TooLarge { url: url.clone() });
        }
    }
    SigningCertificate::from_pem(&body).map_err(|reason| FetchError::Unreadable { url: url.clone(), reason })
}

/// Where to turn when AWS's certificate cannot be had, for messages.
const FETCH_FIX: &str = "the message is not taken, and Amazon SNS posts it again later; check that this machine \
                         reaches Amazon SNS over HTTPS, or pin the certificate on the flow (snsCertificates) where it \
                         cannot";

/// An Amazon SNS signing certificate that could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the Amazon SNS signing certificate at {url} cannot be fetched ({why}): {FETCH_FIX}")]
    Unreachable { url: Url, why: String },
    #[error(
        "the Amazon SNS signing certificate at {url} cannot be fetched (the server answered HTTP {status}): {FETCH_FIX}"
    )]
    Status { url: Url, status: u16 },
    #[error(
        "the Amazon SNS signing certificate at {url} is over {MAX_CERTIFICATE_BYTES} bytes, far more than a \
         certificate: it is not read; {FETCH_FIX}"
    )]
    TooLarge { url: Url },
    #[error("the Amazon SNS signing certificate at {url} {reason}; {FETCH_FIX}")]
    Unreadable { url: Url, reason: CertificateError },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engagement::formats::sns::tests::KEY;
    use axum::Router;
    use axum::routing::get;

    #[test]
    fn certificates_are_kept_a_day_and_the_oldest_goes_when_sixteen_are_kept() {
        let certificate = Arc::new(KEY.certificate());
        let url = |i: usize| Url::parse(&format!("https://sns.us-east-1.amazonaws.com/c-{i}.pem")).unwrap();
        let start = Instant::now();
        let mut kept = Kept::default();
        for i in 0..MAX_KEPT {
            kept.put(url(i), certificate.clone(), start + Duration::from_secs(i as u64));
        }
        let later = start + Duration::from_secs(100);
        assert!((0..MAX_KEPT).all(|i| kept.get(&url(i), later).is_some()));
        kept.put(url(MAX_KEPT), certificate.clone(), later);
        assert_eq!(kept.0.len(), MAX_KEPT);
        assert!(kept.get(&url(0), later).is_none(), "the oldest went");
        assert!(kept.get(&url(1), later).is_some() && kept.get(&url(MAX_KEPT), later).is_some());
        kept.put(url(1), certificate.clone(), later);
        assert_eq!(kept.0.len(), MAX_KEPT, "fetching a kept address again drops nothing");

        let tomorrow = start + KEPT_FOR + Duration::from_secs(50);
        assert!(kept.get(&url(2), tomorrow).is_none(), "kept a day at most");
        assert!(kept.get(&url(MAX_KEPT), tomorrow).is_some());
        kept.put(url(99), certificate, tomorrow);
        let mut left: Vec<&str> = kept.0.keys().map(Url::path).collect();
        left.sort();
        assert_eq!(left, ["/c-1.pem", "/c-16.pem", "/c-99.pem"], "those kept too long are dropped");
    }

    #[tokio::test]
    async fn a_certificate_is_fetched_and_read_and_each_failure_says_what_to_do() {
        let pem = KEY.certificate_pem.clone();
        let app = Router::new()
            .route("/good.pem", get(move || async move { pem }))
            .route("/missing.pem", get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }))
            .route("/huge.pem", get(|| async { "A".repeat(MAX_CERTIFICATE_BYTES + 1) }))
            .route("/html.pem", get(|| async { "<html>maintenance</html>" }))
            .route(
                "/endless.pem",
                get(|| async {
                    let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![b'A'; 1024]));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let url = |path: &str| Url::parse(&format!("http://{address}/{path}")).unwrap();
        let http = reqwest::Client::new();

        assert_eq!(fetch(&http, &url("good.pem")).await.unwrap(), KEY.certificate());
        let missing = fetch(&http, &url("missing.pem")).await.unwrap_err();
        assert!(matches!(missing, FetchError::Status { status: 404, .. }), "{missing}");
        assert!(missing.to_string().contains("pin the certificate on the flow (snsCertificates)"), "{missing}");
        for path in ["huge.pem", "endless.pem"] {
            let err = fetch(&http, &url(path)).await.unwrap_err();
            assert!(matches!(err, FetchError::TooLarge { .. }), "{path}: {err}");
        }
        let html = fetch(&http, &url("html.pem")).await.unwrap_err();
        assert!(matches!(html, FetchError::Unreadable { reason: CertificateError::NotPem { .. }, .. }), "{html}");
        server.abort();
        let gone = fetch(&http, &Url::parse("http://127.0.0.1:9/c.pem").unwrap()).await.unwrap_err();
        assert!(matches!(gone, FetchError::Unreachable { .. }), "{gone}");
    }
}
