//! The server loop: accepts connections (plain or TLS), serves the router on them, and applies injected
//! faults before a request reaches the router — including closing a connection without an answer, which
//! only the connection's owner can do.

use crate::faults::{Fault, Faults};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// The error a request's service returns to have its connection closed without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct DroppedByFault;

/// Serves until `stop` fires, then lets requests in flight finish (for up to 10 seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    faults: Arc<Faults>,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, faults, tls, watcher) = (router.clone(), faults.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, router, faults, watcher).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => connection(stream, router, faults, watcher).await,
                    Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after 10 s were cut off");
    }
}

async fn connection<S>(stream: S, router: Router, faults: Arc<Faults>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (router, faults) = (router.clone(), faults.clone());
        async move { answer(router, &faults, request.map(Body::new)).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn answer(router: Router, faults: &Faults, request: Request<Body>) -> Result<Response<Body>, DroppedByFault> {
    let token_endpoint = request.uri().path().contains("/oauth2/");
    match faults.next(token_endpoint) {
        None => {}
        Some(Fault::Drop) => return Err(DroppedByFault),
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::ServerError) => {
            return Ok(fault_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":{"code":"0x80040216","message":"An unexpected error occurred."}}"#,
            ));
        }
        Some(Fault::Unavailable) => {
            return Ok(fault_response(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":{"code":"0x80040216","message":"The service is temporarily unavailable. Try again later."}}"#,
            ));
        }
        Some(Fault::TokenOutage) => {
            return Ok(fault_response(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred. Please try again.","error_codes":[90033]}"#,
            ));
        }
    }
    Ok(router.oneshot(request).await.unwrap_or_else(|never| match never {}))
}

fn fault_response(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, as PEM: (certificate, private key).
pub fn self_signed_certificate() -> anyhow::Result<(String, String)> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// A TLS acceptor for a PEM certificate and key.
pub fn tls_acceptor(certificate_pem: &str, key_pem: &str) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(certificate_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
