//! A marketing tool's webhook, as the engagement demo and the records-out tests stand it up: an HTTP server on
//! loopback that checks every delivery's signature with the signing secret, keeps what it takes with when it took
//! it, and answers 503 while it is told it is down.

use crate::dataset::webhook::{DeliveredRecord, Delivery, SIGNATURE_HEADER, verify};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How old a signature's time may be.
const TOLERANCE_SECONDS: i64 = 300;

/// What the receiver saw.
pub struct Received {
    secret: String,
    /// While set, every POST is answered 503.
    pub down: AtomicBool,
    pub attempts: AtomicUsize,
    pub bad_signatures: AtomicUsize,
    deliveries: Mutex<Vec<(Instant, Delivery)>>,
}

impl Received {
    /// Every record taken, with when, in the order taken.
    pub fn records(&self) -> Vec<(Instant, DeliveredRecord)> {
        let deliveries = self.deliveries.lock().expect("deliveries lock");
        deliveries.iter().flat_map(|(at, d)| d.records.iter().map(|r| (*at, r.clone()))).collect()
    }

    pub fn deliveries(&self) -> usize {
        self.deliveries.lock().expect("deliveries lock").len()
    }
}

/// Each record's last value of a yes/no column among records taken (`donotbulkemail`: its consent as the
/// marketing tool last got it).
pub fn latest_flags(records: &[(Instant, DeliveredRecord)], column: &str) -> HashMap<Uuid, bool> {
    let mut held = HashMap::new();
    for (_, r) in records {
        if let Some(flag) = r.values.get(column).and_then(serde_json::Value::as_bool) {
            held.insert(r.id, flag);
        }
    }
    held
}

/// The receiver, serving until dropped.
pub struct WebhookReceiver {
    pub url: String,
    pub received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(state): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.attempts.fetch_add(1, Ordering::SeqCst);
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    let now = chrono::Utc::now().timestamp();
    if verify(state.secret.as_bytes(), signature, &body, now, TOLERANCE_SECONDS).is_err() {
        state.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match serde_json::from_slice::<Delivery>(&body) {
        Ok(delivery) => {
            state.deliveries.lock().expect("deliveries lock").push((Instant::now(), delivery));
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

impl WebhookReceiver {
    /// A receiver at `http://127.0.0.1:<port>/hook`, checking signatures with `secret`.
    pub async fn start(secret: &str) -> std::io::Result<WebhookReceiver> {
        let received = Arc::new(Received {
            secret: secret.to_string(),
            down: AtomicBool::new(false),
            attempts: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            deliveries: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver { url, received, task })
    }

    /// The records taken once `ready` says they are what the caller waits for; `None` past `within`.
    pub async fn records_when(
        &self,
        within: Duration,
        ready: impl Fn(&[(Instant, DeliveredRecord)]) -> bool,
    ) -> Option<Vec<(Instant, DeliveredRecord)>> {
        let deadline = Instant::now() + within;
        loop {
            let records = self.received.records();
            if ready(&records) {
                return Some(records);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
