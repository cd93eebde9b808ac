//! The operations endpoint every service serves: `/metrics` (Prometheus
//! text format), `/healthz` (the process is alive) and `/readyz` (it can do
//! its work: for a producer, the broker is reachable).
//!
//! Metric names follow `chitose_<stage>_<what>_<unit>`; labels are bounded
//! sets (prefecture, event_type, outcome, reason), never a patient value.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the service can do its work.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets the state.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    /// Reads it.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Ops {
    registry: Registry,
    ready: Readiness,
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let families = ops.registry.gather();
    match TextEncoder::new().encode(&families, &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    if ops.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The ops routes, to merge into a service's own router or serve alone.
pub fn router(registry: Registry, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, ready })
}

/// Serves the ops routes on `addr` until the process ends; returns the
/// bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(registry, ready);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "ops server stopped");
        }
    });
    Ok(bound)
}
