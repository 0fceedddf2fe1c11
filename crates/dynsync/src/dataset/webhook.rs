//! A webhook: a dataset's changed records POSTed as JSON to a marketing tool's URL, signed with HMAC-SHA256.
//!
//! A POST carries a [`Delivery`]: the dataset, its generation, and records in the batch's order, each with its
//! id, operation, version, whether it is deleted, when dynsync read it, and its values by column name (as
//! [`value_json`] writes them: decimals and moments as text, so that no digit is lost). An update leaves out the
//! columns whose updates are not applied (they are sent on first load, creation and replay only); a delete
//! carries no values. A batch goes out in chunks of at most [`MAX_RECORDS`] records and about [`MAX_BODY`] bytes
//! (a single record larger than that goes alone), one after another, because the order of a record's changes
//! matters to whoever applies them.
//!
//! Each POST is signed: [`SIGNATURE_HEADER`] is `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! which a receiver checks with [`verify`] (the timestamp bounds how long a captured request can be replayed).
//! [`DELIVERY_HEADER`] is a UUID derived from the body alone, so a chunk sent again — the whole batch is sent again
//! when any chunk of it was not taken — carries the id it had, and the receiver can drop it as already seen.
//!
//! Answers: a 2xx takes the chunk. A receiver that does not answer (within [`REQUEST_TIMEOUT`]) or answers a
//! status about itself rather than about the records — 408, 425, 429, 5xx; 401 and 403 (it does not accept the
//! signature), 404 and 405 (not the receiver's address), a redirect — fails the batch with
//! [`DatasetError::Webhook`], for the caller to send it again later. Any other 4xx is about the records: the chunk
//! is sent again one record at a time, in order, and a record answered so is refused (with the answer), the
//! others delivered.
//!
//! The secret signs and is sent nowhere: redirects are not followed (the records would go to an address nobody
//! gave), and neither the secret nor the signature reach a log or a message.

use super::{Batch, DatasetError, DatasetRow, DatasetSchema, Operation, Value};
use crate::ingestion::explore::value_json;
use crate::secrets::Secret;
use crate::text::clip;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt::{self, Write as _};
use std::ops::Range;
use std::time::Duration;
use uuid::Uuid;

/// The header that carries a POST's signature: `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "Dynsync-Signature";

/// The header that carries a POST's delivery id: a UUID derived from its body, the same when it is sent again.
pub const DELIVERY_HEADER: &str = "Dynsync-Delivery";

/// The most records in one POST.
pub const MAX_RECORDS: usize = 500;

/// The most bytes of body in one POST (1 MiB), unless a single record is larger: it then goes alone.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long a POST may take, answer included, before it counts as not answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes of an answer read, to explain a status: a receiver can answer anything, of any length.
const MAX_ANSWER_READ: usize = 4 * 1024;

/// The most characters of an answer put in a message.
const MAX_ANSWER_SHOWN: usize = 200;

/// The namespace of delivery ids (UUID v5 of the body).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1d_52c4_93b7_4c1e_a0d8_2b95_e7c3_41f6);

/// What one POST carries: records of one generation of a dataset, in the order they changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub dataset: String,
    pub generation: u32,
    pub records: Vec<DeliveredRecord>,
}

/// One record of a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredRecord {
    /// The Dynamics record's id.
    pub id: Uuid,
    /// `c`reate, `u`pdate, `d`elete, or `r`ead by a full load.
    pub operation: Operation,
    /// Dataverse's `versionnumber` of the record as read; `None` for a delete.
    pub version: Option<i64>,
    pub deleted: bool,
    /// When dynsync read the record.
    pub synced_at: DateTime<Utc>,
    /// The record's values by column name: every column of the dataset, but for an update the columns whose
    /// updates are not applied; none for a delete.
    pub values: serde_json::Map<String, serde_json::Value>,
}

/// A webhook a dataset is sent to: its URL and the secret its POSTs are signed with.
pub struct WebhookDestination {
    url: String,
    secret: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDestination").field("url", &self.url).finish_non_exhaustive()
    }
}

/// How a receiver answered one POST.
enum Answer {
    /// A 2xx.
    Taken,
    /// A 4xx about the records: why, to refuse them with.
    Refused(String),
    /// No answer, or one about the receiver: the batch is sent again later.
    Retry(String),
}

impl WebhookDestination {
    /// A destination POSTing to `url` (http or https), signing with `secret`. Errors name what is wrong with the
    /// URL or the secret.
    pub fn new(url: &str, secret: Secret) -> Result<WebhookDestination, String> {
        let parsed = url::Url::parse(url)
            .map_err(|e| format!("'{}' is not a URL ({e}): give the receiver's address, https://…", clip(url, 100)))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "'{}' is a {} URL: a webhook is called over https (or http), give https://…",
                clip(url, 100),
                parsed.scheme()
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("'{}' names no host: give the receiver's address, https://host/path", clip(url, 100)));
        }
        if secret.expose().is_empty() {
            return Err("the signing secret is empty: give the secret the receiver checks signatures with".into());
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dynsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client for webhooks cannot be made: {}", chain(&e)))?;
        Ok(WebhookDestination { url: url.to_string(), secret, http })
    }

    /// The URL records are POSTed to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs the batch's rows, in order, in chunks. Answers the rows the receiver refused one by one, as (record
    /// id, why); the others were taken. An update leaves out the batch's columns kept on update.
    ///
    /// Fails with [`DatasetError::Webhook`] when the receiver did not answer, or answered a status worth trying
    /// again: the caller sends the whole batch again later, chunks taken before included (they carry the same
    /// delivery ids, by which the receiver drops what it already has).
    pub async fn deliver(&self, batch: Batch<'_>) -> Result<Vec<(Uuid, String)>, DatasetError> {
        let failed = |detail: String| DatasetError::Webhook {
            dataset: batch.dataset.to_string(),
            url: self.url.clone(),
            detail: self.scrub(detail),
        };
        let prefix = envelope(batch.dataset.as_str(), batch.generation);
        let mut records = Vec::with_capacity(batch.rows.len());
        for row in batch.rows {
            let encoded = serde_json::to_vec(&record(batch.schema, row, batch.kept_on_update))
                .map_err(|e| failed(format!("record {} cannot be written as JSON: {e}", row.id)))?;
            records.push((row.id, encoded));
        }
        let mut refused = Vec::new();
        for range in chunks(prefix.len(), &records) {
            let chunk = &records[range];
            match self.post(body(&prefix, chunk)).await {
                Answer::Taken => {}
                Answer::Retry(detail) => return Err(failed(detail)),
                Answer::Refused(why) if chunk.len() == 1 => refused.push((chunk[0].0, self.scrub(why))),
                Answer::Refused(why) => {
                    tracing::warn!(
                        dataset = %batch.dataset,
                        url = %self.url,
                        records = chunk.len(),
                        answer = %self.scrub(why),
                        "the webhook refused a chunk of records: sending them one at a time"
                    );
                    for one in chunk.chunks(1) {
                        match self.post(body(&prefix, one)).await {
                            Answer::Taken => {}
                            Answer::Retry(detail) => return Err(failed(detail)),
                            Answer::Refused(why) => refused.push((one[0].0, self.scrub(why))),
                        }
                    }
                }
            }
        }
        for (id, why) in &refused {
            tracing::warn!(dataset = %batch.dataset, url = %self.url, record = %id, "{why}");
        }
        Ok(refused)
    }

    /// POSTs one chunk's body, signed, and says how the receiver answered.
    async fn post(&self, body: Vec<u8>) -> Answer {
        let delivery = delivery_id(&body);
        let signed = signature(self.secret.expose().as_bytes(), Utc::now().timestamp(), &body);
        let sent = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .header(DELIVERY_HEADER, delivery.to_string())
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Answer::Retry(format!(
                    "it did not answer within {} s; the batch is sent again later",
                    REQUEST_TIMEOUT.as_secs()
                ));
            }
            Err(e) => {
                return Answer::Retry(format!(
                    "it could not be reached ({}); check that the URL is right and reachable from dynsync, the \
                     batch is sent again later",
                    chain(&e)
                ));
            }
        };
        let status = response.status();
        if status.is_success() {
            tracing::debug!(url = %self.url, %delivery, "the webhook took a chunk of records");
            return Answer::Taken;
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| clip(l, MAX_ANSWER_SHOWN).into_owned());
        let answer = format!("{}{}", status_text(status), excerpt(response).await);
        match classify(status) {
            Class::Records => {
                Answer::Refused(format!("the webhook answered {answer}; fix the receiver or the record, then replay"))
            }
            Class::Busy => Answer::Retry(format!("it answered {answer}; the batch is sent again later")),
            Class::Signature => Answer::Retry(format!(
                "it answered {answer}; check that the receiver checks signatures with this dataset's signing secret, the batch \
                 is sent again later"
            )),
            Class::Address => Answer::Retry(format!(
                "it answered {answer}; check the dataset's URL (the receiver's address), the batch is sent again later"
            )),
            Class::Redirect => Answer::Retry(format!(
                "it answered {answer}, a redirect to {}; redirects are not followed (the records and their signature go \
                 only to the URL given): give the URL it points to",
                location.as_deref().unwrap_or("(no Location)")
            )),
        }
    }

    /// `text` with the secret replaced by `***`, in case a receiver answered it back.
    fn scrub(&self, text: String) -> String {
        let secret = self.secret.expose();
        if !secret.is_empty() && text.contains(secret) { text.replace(secret, "***") } else { text }
    }
}

/// What a status that is not a 2xx says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// About the records: refuse them.
    Records,
    /// The receiver is busy or failing: 408, 425, 429, 5xx, anything unexpected.
    Busy,
    /// The receiver does not accept dynsync's signature: 401, 403.
    Signature,
    /// Not the receiver's address: 404, 405.
    Address,
    /// A 3xx, which is not followed.
    Redirect,
}

fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        401 | 403 => Class::Signature,
        404 | 405 => Class::Address,
        408 | 425 | 429 => Class::Busy,
        400..=499 => Class::Records,
        300..=399 => Class::Redirect,
        _ => Class::Busy,
    }
}

/// `422 Unprocessable Entity`, or only the code when it has no standard name.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// `: <up to 200 characters of the answer>`, from at most 4 KiB of it read, or `` with no body.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ANSWER_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ANSWER_READ);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() { " (with no body)".to_string() } else { format!(": {}", clip(&text, MAX_ANSWER_SHOWN)) }
}

/// An error and its causes, `: `-separated, without the URL (messages name it once).
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// A row as it is delivered: its values by column name (a row read before a column was added reads it as null),
/// without the columns kept on update for an update, without values for a delete.
fn record(schema: &DatasetSchema, row: &DatasetRow, kept_on_update: &[String]) -> DeliveredRecord {
    let mut values = serde_json::Map::new();
    if row.operation != Operation::Delete {
        for (i, column) in schema.columns.iter().enumerate() {
            if row.operation == Operation::Update && kept_on_update.contains(&column.name) {
                continue;
            }
            let value = row.values.get(i).unwrap_or(&Value::Null);
            values.insert(column.name.clone(), value_json(value, Some(column.kind)));
        }
    }
    DeliveredRecord {
        id: row.id,
        operation: row.operation,
        version: row.version,
        deleted: row.deleted(),
        synced_at: row.synced_at,
        values,
    }
}

/// The start of a body, up to its first record: `{"dataset":…,"generation":…,"records":[`. A body is this, the
/// records `,`-separated, then `]}` — what serde writes for a [`Delivery`].
fn envelope(dataset: &str, generation: u32) -> Vec<u8> {
    let dataset = serde_json::Value::String(dataset.to_string());
    format!(r#"{{"dataset":{dataset},"generation":{generation},"records":["#).into_bytes()
}

/// The body of a chunk of encoded records.
fn body(prefix: &[u8], records: &[(Uuid, Vec<u8>)]) -> Vec<u8> {
    let size = prefix.len() + records.iter().map(|(_, r)| r.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(prefix);
    for (i, (_, record)) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The records of each chunk, in order: at most [`MAX_RECORDS`], and a body of at most [`MAX_BODY`] bytes unless
/// a single record is larger.
fn chunks(prefix: usize, records: &[(Uuid, Vec<u8>)]) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut size = prefix + 2;
    for (i, (_, record)) in records.iter().enumerate() {
        let added = record.len() + usize::from(i > start);
        if i > start && (i - start == MAX_RECORDS || size + added > MAX_BODY) {
            chunks.push(start..i);
            start = i;
            size = prefix + 2 + record.len();
        } else {
            size += added;
        }
    }
    if start < records.len() {
        chunks.push(start..records.len());
    }
    chunks
}

/// The delivery id of a body: the same body, the same id.
fn delivery_id(body: &[u8]) -> Uuid {
    Uuid::new_v5(&DELIVERY_NAMESPACE, body)
}

fn keyed(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature of a body sent at `timestamp` (unix seconds): `t=<timestamp>,v1=<lowercase hex of
/// HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut text = format!("t={timestamp},v1=");
    for byte in keyed(secret, timestamp, body).finalize().into_bytes() {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Checks a [`SIGNATURE_HEADER`] against the body it came with: the MAC must be the secret's over the timestamp
/// and the body (compared in constant time), and the timestamp within `tolerance` seconds of `now`. Several `v1=`
/// are accepted (any one matching), for a secret being changed. The error says which check failed.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance: i64) -> Result<(), String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',').map(str::trim) {
        if let Some(t) = part.strip_prefix("t=") {
            let seconds = t.parse::<i64>().map_err(|_| {
                format!("the signature's timestamp '{}' is not a whole number of seconds since 1970", clip(t, 20))
            })?;
            timestamp = Some(seconds);
        } else if let Some(v1) = part.strip_prefix("v1=") {
            signatures.push(v1);
        }
    }
    let shape = "expected t=<unix seconds>,v1=<hex HMAC-SHA256>";
    let timestamp = timestamp.ok_or_else(|| format!("the signature has no timestamp (t=): {shape}"))?;
    if signatures.is_empty() {
        return Err(format!("the signature has no v1= MAC: {shape}"));
    }
    let mac = keyed(secret, timestamp, body);
    if !signatures.iter().filter_map(|s| from_hex(s)).any(|given| mac.clone().verify_slice(&given).is_ok()) {
        return Err("the signature does not match the body: it was signed with another secret, or the body or \
                    timestamp was changed on the way"
            .into());
    }
    let tolerance = tolerance.max(0).unsigned_abs();
    if now.abs_diff(timestamp) > tolerance {
        return Err(format!(
            "the signature's timestamp is {} s from now, more than the {tolerance} s allowed: a request replayed, or \
             clocks apart (check both hosts' time)",
            now.abs_diff(timestamp)
        ));
    }
    Ok(())
}

/// The bytes of hex text, or `None` when it is not hex.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{ColumnKind, DatasetColumn, DatasetName};
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};

    const SECRET: &str = "whsec-0123456789abcdef";

    /// What the test receiver got in one POST.
    #[derive(Debug, Clone)]
    struct Received {
        signature: String,
        delivery: String,
        content_type: String,
        user_agent: String,
        body: Bytes,
        parsed: Delivery,
    }

    type Answering = dyn Fn(&Delivery) -> (axum::http::StatusCode, String) + Send + Sync;

    struct Shared {
        received: Mutex<Vec<Received>>,
        answer: Box<Answering>,
    }

    /// A receiver on 127.0.0.1, stopped when dropped.
    struct Receiver {
        url: String,
        shared: Arc<Shared>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Receiver {
        fn received(&self) -> Vec<Received> {
            self.shared.received.lock().unwrap().clone()
        }
    }

    async fn take(
        State(shared): State<Arc<Shared>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (axum::http::StatusCode, String) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let parsed: Delivery = serde_json::from_slice(&body).expect("the body is a Delivery");
        let answer = (shared.answer)(&parsed);
        shared.received.lock().unwrap().push(Received {
            signature: header(SIGNATURE_HEADER),
            delivery: header(DELIVERY_HEADER),
            content_type: header("content-type"),
            user_agent: header("user-agent"),
            body,
            parsed,
        });
        answer
    }

    async fn receiver(
        answer: impl Fn(&Delivery) -> (axum::http::StatusCode, String) + Send + Sync + 'static,
    ) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { received: Mutex::new(Vec::new()), answer: Box::new(answer) });
        let app = axum::Router::new().route("/hook", axum::routing::post(take)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url: format!("http://{address}/hook"), shared, task }
    }

    fn taking_all() -> impl Fn(&Delivery) -> (axum::http::StatusCode, String) + Send + Sync + 'static {
        |_| (axum::http::StatusCode::OK, String::new())
    }

    /// A test's body, failed if it takes more than 20 seconds.
    async fn bounded<T>(test: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), test).await.expect("the test finished within 20 s")
    }

    fn destination(url: &str) -> WebhookDestination {
        WebhookDestination::new(url, Secret::new(SECRET)).unwrap()
    }

    fn dataset() -> DatasetName {
        DatasetName::try_from("contacts".to_string()).unwrap()
    }

    fn schema() -> DatasetSchema {
        DatasetSchema {
            columns: vec![
                DatasetColumn { name: "email".into(), kind: ColumnKind::Text },
                DatasetColumn { name: "score".into(), kind: ColumnKind::Decimal { scale: 2 } },
                DatasetColumn { name: "source".into(), kind: ColumnKind::Text },
            ],
        }
    }

    fn row(n: u128, operation: Operation) -> DatasetRow {
        DatasetRow {
            id: Uuid::from_u128(n),
            operation,
            version: (operation != Operation::Delete).then_some(1_000 + n as i64),
            values: vec![
                Value::Text(format!("person{n}@example.com")),
                Value::Decimal(12_345),
                Value::Text("fair".into()),
            ],
            synced_at: DateTime::from_timestamp(1_750_000_000, 0).unwrap(),
        }
    }

    fn batch<'a>(dataset: &'a DatasetName, schema: &'a DatasetSchema, rows: &'a [&'a DatasetRow]) -> Batch<'a> {
        Batch { dataset, generation: 2, schema, load: DateTime::UNIX_EPOCH, rows, kept_on_update: &[] }
    }

    fn ids(received: &[Received]) -> Vec<Uuid> {
        received.iter().flat_map(|r| r.parsed.records.iter().map(|record| record.id)).collect()
    }

    #[tokio::test]
    async fn a_delivery_is_signed_so_that_the_receiver_can_verify_it_and_nothing_else() {
        bounded(async {
            let receiver = receiver(taking_all()).await;
            let (dataset, schema) = (dataset(), schema());
            let rows = [row(1, Operation::Create)];
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let refused = destination(&receiver.url).deliver(batch(&dataset, &schema, &rows)).await.unwrap();
            assert!(refused.is_empty());

            let received = receiver.received();
            let [post] = received.as_slice() else { panic!("one POST: {received:?}") };
            assert_eq!(post.content_type, "application/json");
            assert_eq!(post.user_agent, concat!("dynsync/", env!("CARGO_PKG_VERSION")));
            assert_eq!(post.parsed.dataset, "contacts");
            assert_eq!(post.parsed.generation, 2);
            let t: i64 = post.signature.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
            let now = Utc::now().timestamp();
            assert!((now - t).abs() <= 5, "signed now: {t} against {now}");
            let v1 = post.signature.split_once(",v1=").unwrap().1;
            assert!(v1.len() == 64 && v1.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{v1}");
            assert_eq!(post.signature, signature(SECRET.as_bytes(), t, &post.body));

            assert_eq!(verify(SECRET.as_bytes(), &post.signature, &post.body, now, 300), Ok(()));
            let other = verify(b"another-secret-entirely", &post.signature, &post.body, now, 300).unwrap_err();
            assert!(other.contains("does not match"), "{other}");
            let mut changed = post.body.to_vec();
            changed.extend_from_slice(b" ");
            let changed = verify(SECRET.as_bytes(), &post.signature, &changed, now, 300).unwrap_err();
            assert!(changed.contains("does not match"), "{changed}");
            let stale = verify(SECRET.as_bytes(), &post.signature, &post.body, t + 301, 300).unwrap_err();
            assert!(stale.contains("timestamp") && stale.contains("301 s"), "{stale}");
            let malformed = verify(SECRET.as_bytes(), "v1=abcd", &post.body, now, 300).unwrap_err();
            assert!(malformed.contains("no timestamp"), "{malformed}");
        })
        .await
    }

    #[tokio::test]
    async fn twelve_hundred_rows_arrive_in_three_chunks_in_order() {
        bounded(async {
            let receiver = receiver(taking_all()).await;
            let (dataset, schema) = (dataset(), schema());
            let rows: Vec<DatasetRow> = (0..1_200).map(|n| row(n, Operation::Read)).collect();
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let refused = destination(&receiver.url).deliver(batch(&dataset, &schema, &rows)).await.unwrap();
            assert!(refused.is_empty());

            let received = receiver.received();
            let sizes: Vec<usize> = received.iter().map(|r| r.parsed.records.len()).collect();
            assert_eq!(sizes, [500, 500, 200]);
            assert_eq!(ids(&received), rows.iter().map(|r| r.id).collect::<Vec<_>>());
            let first = &received[0].parsed.records[0];
            assert_eq!(first.values["email"], "person0@example.com");
            assert_eq!(first.values["score"], "123.45", "a decimal travels as exact text");
            assert_eq!(first.operation, Operation::Read);
            assert_eq!(first.version, Some(1_000));
        })
        .await
    }

    #[tokio::test]
    async fn an_update_leaves_out_the_kept_on_update_columns_and_a_delete_has_no_values() {
        bounded(async {
            let receiver = receiver(taking_all()).await;
            let (dataset, schema) = (dataset(), schema());
            let mut short = row(4, Operation::Create);
            short.values.truncate(1);
            let rows = [row(1, Operation::Create), row(2, Operation::Update), row(3, Operation::Delete), short];
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let kept = ["source".to_string()];
            let kept_batch = Batch { kept_on_update: &kept, ..batch(&dataset, &schema, &rows) };
            destination(&receiver.url).deliver(kept_batch).await.unwrap();

            let records = receiver.received().remove(0).parsed.records;
            let columns = |i: usize| records[i].values.keys().cloned().collect::<Vec<_>>();
            assert_eq!(columns(0), ["email", "score", "source"], "a creation carries every column");
            assert_eq!(columns(1), ["email", "score"], "an update leaves out the columns kept on update");
            assert!(records[2].values.is_empty() && records[2].deleted && records[2].version.is_none());
            assert_eq!(records[2].operation, Operation::Delete);
            assert!(!records[1].deleted);
            assert_eq!(records[3].values["score"], serde_json::Value::Null, "a missing value reads as null");
            assert_eq!(records[3].values["source"], serde_json::Value::Null);
        })
        .await
    }

    #[tokio::test]
    async fn a_503_answer_is_an_error_naming_the_status_and_the_answer() {
        bounded(async {
            let receiver =
                receiver(|_| (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down for maintenance".into())).await;
            let (dataset, schema) = (dataset(), schema());
            let rows = [row(1, Operation::Create), row(2, Operation::Create)];
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let error = destination(&receiver.url).deliver(batch(&dataset, &schema, &rows)).await.unwrap_err();
            let DatasetError::Webhook { dataset, url, detail } = &error else { panic!("{error:?}") };
            assert_eq!(dataset, "contacts");
            assert_eq!(url, &receiver.url);
            assert!(detail.contains("503 Service Unavailable") && detail.contains("down for maintenance"), "{detail}");
            assert!(!error.to_string().contains(SECRET));
            assert_eq!(receiver.received().len(), 1, "a retryable answer is not followed by records one at a time");
        })
        .await
    }

    #[tokio::test]
    async fn a_receiver_that_cannot_be_reached_is_an_error_worth_retrying() {
        bounded(async {
            let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/hook", closed.local_addr().unwrap());
            drop(closed);
            let (dataset, schema) = (dataset(), schema());
            let rows = [row(1, Operation::Create)];
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let error = destination(&url).deliver(batch(&dataset, &schema, &rows)).await.unwrap_err();
            let DatasetError::Webhook { detail, .. } = &error else { panic!("{error:?}") };
            assert!(detail.contains("could not be reached"), "{detail}");
            assert!(!error.to_string().contains(SECRET));
        })
        .await
    }

    #[tokio::test]
    async fn a_receiver_that_refuses_one_record_refuses_just_that_one_and_takes_the_others_in_order() {
        bounded(async {
            let bad = Uuid::from_u128(3);
            let receiver = receiver(move |delivery| {
                if delivery.records.iter().any(|r| r.id == bad) {
                    (axum::http::StatusCode::BAD_REQUEST, format!("email of {bad} is not valid"))
                } else {
                    (axum::http::StatusCode::OK, String::new())
                }
            })
            .await;
            let (dataset, schema) = (dataset(), schema());
            let rows: Vec<DatasetRow> = (1..=5).map(|n| row(n, Operation::Create)).collect();
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let refused = destination(&receiver.url).deliver(batch(&dataset, &schema, &rows)).await.unwrap();

            let [(id, why)] = refused.as_slice() else { panic!("one refused: {refused:?}") };
            assert_eq!(*id, bad);
            assert_eq!(
                why,
                &format!(
                    "the webhook answered 400 Bad Request: email of {bad} is not valid; fix the receiver or the \
                     record, then replay"
                )
            );
            let received = receiver.received();
            let sizes: Vec<usize> = received.iter().map(|r| r.parsed.records.len()).collect();
            assert_eq!(sizes, [5, 1, 1, 1, 1, 1], "the chunk, then its records one at a time");
            let taken: Vec<u128> = received[1..].iter().map(|r| r.parsed.records[0].id.as_u128()).collect();
            assert_eq!(taken, [1, 2, 3, 4, 5]);
        })
        .await
    }

    #[tokio::test]
    async fn a_receiver_that_refuses_the_signature_is_an_error_not_a_refusal_of_every_record() {
        bounded(async {
            let receiver = receiver(|_| (axum::http::StatusCode::UNAUTHORIZED, "bad signature".into())).await;
            let (dataset, schema) = (dataset(), schema());
            let rows = [row(1, Operation::Create), row(2, Operation::Create)];
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let error = destination(&receiver.url).deliver(batch(&dataset, &schema, &rows)).await.unwrap_err();
            assert!(error.to_string().contains("401 Unauthorized") && error.to_string().contains("signing secret"));
        })
        .await
    }

    #[tokio::test]
    async fn the_same_batch_delivered_twice_carries_the_same_delivery_ids() {
        bounded(async {
            let receiver = receiver(taking_all()).await;
            let (dataset, schema) = (dataset(), schema());
            let rows: Vec<DatasetRow> = (0..700).map(|n| row(n, Operation::Update)).collect();
            let rows: Vec<&DatasetRow> = rows.iter().collect();
            let webhook = destination(&receiver.url);
            webhook.deliver(batch(&dataset, &schema, &rows)).await.unwrap();
            webhook.deliver(batch(&dataset, &schema, &rows)).await.unwrap();

            let deliveries: Vec<String> = receiver.received().into_iter().map(|r| r.delivery).collect();
            assert_eq!(deliveries.len(), 4);
            assert!(deliveries.iter().all(|d| Uuid::parse_str(d).is_ok()), "{deliveries:?}");
            assert_eq!(deliveries[..2], deliveries[2..]);
            assert_ne!(deliveries[0], deliveries[1], "each chunk has its own id");
        })
        .await
    }

    #[test]
    fn a_chunk_stays_under_a_mebibyte_unless_one_record_is_larger() {
        let prefix = envelope("contacts", 1);
        let record = |n: u128, size: usize| (Uuid::from_u128(n), vec![b'x'; size]);
        let records: Vec<_> = (0..300).map(|n| record(n, 10_000)).chain([record(300, 2 * MAX_BODY)]).collect();
        let chunks = chunks(prefix.len(), &records);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), records.len());
        assert!(chunks.windows(2).all(|w| w[0].end == w[1].start), "in order, none left out: {chunks:?}");
        for (i, chunk) in chunks[..chunks.len() - 1].iter().enumerate() {
            let size = body(&prefix, &records[chunk.clone()]).len();
            assert!(size <= MAX_BODY, "{chunk:?}: {size} bytes");
            let full = i + 2 < chunks.len();
            assert!(!full || size > MAX_BODY - 10_001, "{chunk:?} ends only when the next record does not fit: {size}");
        }
        assert_eq!(chunks.last(), Some(&(300..301)), "a record larger than a chunk goes alone");
    }

    #[test]
    fn a_body_is_what_serde_writes_for_a_delivery() {
        let (dataset, schema) = (dataset(), schema());
        let rows = [row(1, Operation::Create), row(2, Operation::Delete)];
        let records: Vec<DeliveredRecord> = rows.iter().map(|r| record(&schema, r, &[])).collect();
        let encoded: Vec<_> = records.iter().map(|r| (r.id, serde_json::to_vec(r).unwrap())).collect();
        let delivery = Delivery { dataset: dataset.to_string(), generation: 7, records };
        assert_eq!(body(&envelope(dataset.as_str(), 7), &encoded), serde_json::to_vec(&delivery).unwrap());
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_and_the_secret_never_shows() {
        let secret = || Secret::new(SECRET);
        let ftp = WebhookDestination::new("ftp://example.com/hook", secret()).unwrap_err();
        assert!(ftp.contains("ftp") && ftp.contains("https"), "{ftp}");
        let not_a_url = WebhookDestination::new("example.com/hook", secret()).unwrap_err();
        assert!(not_a_url.contains("not a URL"), "{not_a_url}");
        assert!(WebhookDestination::new("https://example.com/hook", Secret::new("")).is_err());
        let webhook = WebhookDestination::new("https://example.com/hook", secret()).unwrap();
        assert_eq!(webhook.url(), "https://example.com/hook");
        let shown = format!("{webhook:?}");
        assert!(shown.contains("https://example.com/hook") && !shown.contains(SECRET), "{shown}");
    }
}
