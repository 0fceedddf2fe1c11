//! `GET /metrics` (Prometheus' text format), `GET /healthz` (the process serves) and `GET /readyz` (its store
//! answers, so it can accept records). None needs a token: they say nothing a scraper or a load balancer should
//! not know, and neither carries credentials.

use super::AppState;
use crate::pipeline::metrics;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match metrics::render(&state.store, &state.supervisor, &state.clients).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the store does not answer: {e}\n")).into_response(),
    }
}

pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the store does not answer: {e}\n")).into_response()
        }
    }
}
