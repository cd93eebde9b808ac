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

/// What is wrong between a stage's registry and its list of metric names
/// (`metrics::names::ALL`), for the stage's test: a family served but not
/// listed, a name listed twice, or a lag gauge (which the dashboard and
/// the autoscalers read) not served from start-up. Empty when they agree.
pub fn name_problems(registry: &Registry, names: &[&str]) -> Vec<String> {
    let served: std::collections::BTreeSet<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    let mut out: Vec<String> = served
        .iter()
        .filter(|f| !names.contains(&f.as_str()))
        .map(|f| format!("{f} is served but not in names::ALL"))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for n in names {
        if !seen.insert(*n) {
            out.push(format!("{n} is listed twice"));
        }
        // Gauges fed by librdkafka's statistics exist from start-up: the
        // dashboard and alerts must not see "no data" before the first
        // report (issue 20's scrape-before-statistics failure).
        if (n.contains("consumer_lag") || n.contains("_kafka_")) && !served.contains(*n) {
            out.push(format!("{n} is not served from start-up"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::name_problems;
    use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

    #[test]
    fn name_problems_names_each_kind_of_disagreement() {
        let r = Registry::new();
        let c = IntCounter::new("chitose_x_total", "x").unwrap();
        r.register(Box::new(c)).unwrap();
        let lag =
            IntGaugeVec::new(Opts::new("chitose_x_consumer_lag_records", "l"), &["p"]).unwrap();
        r.register(Box::new(lag.clone())).unwrap();
        // Agreeing (the vec not served yet: it has no series).
        assert!(name_problems(&r, &["chitose_x_total"]).is_empty());
        let p = name_problems(
            &r,
            &[
                "chitose_x_total",
                "chitose_x_total",
                "chitose_x_consumer_lag_records",
            ],
        );
        assert!(p.iter().any(|m| m.contains("listed twice")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("not served from start-up")),
            "{p:?}"
        );
        lag.with_label_values(&["-1"]).set(0);
        let p = name_problems(&r, &["chitose_x_total"]);
        assert!(
            p.iter().any(|m| m.contains("served but not in names::ALL")),
            "{p:?}"
        );
    }
}
