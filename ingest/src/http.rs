//! The HTTP source: `POST /v1/events` with NDJSON or a JSON array, and
//! `POST /fhir` with a FHIR R4 Bundle (JP Core; see [`crate::fhir`]).
//!
//! - HTTPS with rustls when `[http.tls]` names a certificate; with a client
//!   CA, every client must also present a certificate it signed (mTLS),
//!   optionally pinned by fingerprint. Plain HTTP is refused beyond
//!   loopback unless `allow_plaintext` says a TLS proxy sits in front.
//! - `Authorization: Bearer <token>`, checked before the body is read
//!   (401 costs the server no body), against hashes bound to this
//!   instance's prefecture ([`crate::token`]) in constant time; the edge
//!   rejects records of another prefecture.
//! - At most `max_concurrent_requests` at once (503 + `Retry-After`
//!   beyond), `max_records_per_request` (413 beyond), a request deadline
//!   (503), and a header/handshake deadline (the connection is dropped).
//! - 202 `{accepted, rejected, errors}` only after the broker acknowledged
//!   every accepted record. Rejected records are listed with their index,
//!   reason and message (never a value); the valid ones are still sent.
//! - 400 when nothing in the body is acceptable, 413 over the size limit.
//! - 503 with `Retry-After` when the broker is unreachable or does not
//!   acknowledge within the deadline: the client retries the whole request.
//!   Records of a failed request may already be in the topic, so a retry
//!   can duplicate them: the sink drops a copy whose `event_id` it saw
//!   within its de-duplication window.

use crate::config::HttpConfig;
use crate::edge::{Edge, EdgeScratch};
use crate::metrics::IngestMetrics;
use crate::producer::RawProducer;
use crate::tls::Tls;
use crate::token::TokenSet;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chitose_runtime::ops::Readiness;
use chitose_runtime::shutdown::Shutdown;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::json::JsonError;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Header naming the HTTP request a record came from.
pub const HEADER_REQUEST: &str = "chitose-source-request";

struct AppState {
    producer: RawProducer,
    prefecture: String,
    edge: Edge,
    tokens: TokenSet,
    metrics: IngestMetrics,
    ready: Readiness,
    ack_deadline: Duration,
    request_timeout: Duration,
    slots: Arc<Semaphore>,
    max_records: usize,
    max_errors: usize,
}

/// Builds the router for the HTTP source of `prefecture`'s hub.
pub fn router(
    cfg: &HttpConfig,
    prefecture: &str,
    tokens: TokenSet,
    producer: RawProducer,
    store: &chitose_schemas::catalog::SchemaStore,
    metrics: IngestMetrics,
    ready: Readiness,
) -> Router {
    let state = Arc::new(AppState {
        producer,
        prefecture: prefecture.to_owned(),
        edge: Edge::new(store, Some(prefecture.to_owned())),
        tokens,
        metrics,
        ready,
        ack_deadline: cfg.ack_deadline,
        request_timeout: cfg.request_timeout,
        slots: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
        max_records: cfg.max_records_per_request,
        max_errors: cfg.max_errors_per_request,
    });
    Router::new()
        .route("/v1/events", post(events))
        .route("/fhir", post(fhir))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Runs before any handler, so before the body is read: the token, then a
/// slot among the concurrent requests, then the request's deadline.
async fn guard(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| s.tokens.verify(t)) {
        s.metrics.refuse("unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "expected Authorization: Bearer <this hub's token>, found none that is known"}),
        );
    }
    let Ok(_slot) = s.slots.clone().try_acquire_owned() else {
        s.metrics.refuse("busy");
        return unavailable("too many requests at once; retry later");
    };
    match tokio::time::timeout(s.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            s.metrics.refuse("timeout");
            unavailable("the request took longer than the deadline; retry it")
        }
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn unavailable(why: &str) -> Response {
    let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, json!({"error": why}));
    r.headers_mut()
        .insert(header::RETRY_AFTER, "5".parse().expect("valid header"));
    r
}

/// Splits a body into records: a JSON array, or NDJSON lines.
fn records(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(body).map_err(|e| {
                format!(
                    "expected a JSON array of records, found invalid JSON at line {} column {}",
                    e.line(),
                    e.column()
                )
            })?;
        Ok(items
            .into_iter()
            .map(|r| r.get().as_bytes().to_vec())
            .collect())
    } else {
        Ok(body
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(<[u8]>::to_vec)
            .collect())
    }
}

/// Records of a request: JSON-form bytes, or why an item could not be one.
type Items = Vec<Result<Vec<u8>, JsonError>>;

async fn events(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&s, &headers, || {
        records(&body).map(|r| r.into_iter().map(Ok).collect())
    })
    .await
}

/// `POST /fhir`: a FHIR R4 Bundle; each mapped entry is a record, indexed
/// by its position in `entry`.
async fn fhir(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let prefecture = s.prefecture.clone();
    let metrics = s.metrics.clone();
    handle(&s, &headers, || {
        crate::fhir::map_bundle(&body, &prefecture)
            .map(|entries| {
                entries
                    .into_iter()
                    .filter_map(|(_, e)| match e {
                        crate::fhir::Entry::Event(v) => {
                            Some(Ok(serde_json::to_vec(&v).expect("serializes")))
                        }
                        crate::fhir::Entry::Rejected(e) => Some(Err(e)),
                        crate::fhir::Entry::Skipped(k) => {
                            metrics.fhir_skipped.with_label_values(&[k.as_str()]).inc();
                            None
                        }
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    })
    .await
}

async fn handle(
    s: &AppState,
    headers: &HeaderMap,
    parse: impl FnOnce() -> Result<Items, String>,
) -> Response {
    let _ = headers;
    let (prefecture, edge) = (&s.prefecture, &s.edge);
    if !s.ready.get() {
        return unavailable("the broker is unreachable; nothing was accepted");
    }
    let recs = match parse() {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"accepted": 0, "rejected": 0, "errors": [{"index": null, "error": e}]}),
            );
        }
    };
    if recs.len() > s.max_records {
        s.metrics.refuse("too_many_records");
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"accepted": 0, "rejected": 0, "errors": [{"index": null, "error": format!(
                "expected at most {} records in one request, found {}; split the request",
                s.max_records,
                recs.len()
            )}]}),
        );
    }
    let now = Timestamp::now();
    let request_id = format!("{prefecture}-{}", now.0);
    let mut errors = Vec::new();
    let mut rejected = 0usize;
    let mut acks = Vec::new();
    let mut scratch = EdgeScratch::default();
    for (i, r) in recs.iter().enumerate() {
        s.metrics.read.inc();
        let verdict = match r {
            Ok(bytes) => edge.accept_with(bytes, now, &mut scratch),
            Err(e) => Err(e.clone()),
        };
        match verdict {
            Ok(message) => {
                let ack = s
                    .producer
                    .send(
                        &scratch.event().patient.local_patient_id,
                        &message,
                        &[(HEADER_REQUEST, request_id.as_bytes())],
                    )
                    .await;
                acks.push(ack);
            }
            Err(e) => {
                s.metrics
                    .rejected
                    .with_label_values(&[e.reason.as_str()])
                    .inc();
                rejected += 1;
                if errors.len() < s.max_errors {
                    errors.push(
                        json!({"index": i, "reason": e.reason.as_str(), "error": e.to_string()}),
                    );
                }
            }
        }
    }
    let accepted = acks.len();
    if accepted == 0 {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"accepted": 0, "rejected": rejected, "errors": errors}),
        );
    }
    let all = futures::future::join_all(acks);
    match tokio::time::timeout(s.ack_deadline, all).await {
        Ok(results) if results.iter().all(Result::is_ok) => answer(
            StatusCode::ACCEPTED,
            json!({"accepted": accepted, "rejected": rejected, "errors": errors}),
        ),
        Ok(_) => {
            // A failed delivery can leave an idempotent producer unable to
            // send again (see RawProducer::reset): start a fresh one.
            if let Err(e) = s.producer.reset() {
                tracing::error!(error = %e, "could not recreate the producer");
            }
            unavailable("the broker did not acknowledge every record; retry the request")
        }
        Err(_) => {
            unavailable("the broker did not acknowledge within the deadline; retry the request")
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until
/// `shutdown`; requests under way are given `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Tls>,
    header_timeout: Duration,
    metrics: IngestMetrics,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let tls = tls.map(Arc::new);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let served = match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), svc);
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    let stream = match tokio::time::timeout(
                        header_timeout,
                        tls.acceptor().accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            // A plaintext client, a wrong or missing
                            // client certificate: the peer's problem.
                            tracing::debug!(%peer, error = %e, "TLS handshake refused");
                            metrics.refuse("tls_handshake");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake too slow");
                            metrics.refuse("tls_handshake");
                            return;
                        }
                    };
                    if !tls.pins().is_empty() {
                        let fingerprint = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| {
                                use sha2::Digest;
                                <[u8; 32]>::from(sha2::Sha256::digest(c.as_ref()))
                            });
                        if !fingerprint.is_some_and(|f| tls.pins().contains(&f)) {
                            tracing::warn!(%peer, "client certificate is not one of this hub's");
                            metrics.refuse("client_certificate");
                            return;
                        }
                    }
                    let conn = http.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still under way after 30 s; closing them");
    }
    Ok(())
}
