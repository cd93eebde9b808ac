//! The HTTP source: `POST /v1/events` with NDJSON or a JSON array, and
//! `POST /fhir` with a FHIR R4 Bundle (JP Core; see [`crate::fhir`]).
//!
//! - `Authorization: Bearer <token>`; each token belongs to one prefecture
//!   and may only write that prefecture's records (401 without a known
//!   token, and the edge rejects records of another prefecture).
//! - 202 `{accepted, rejected, errors}` only after the broker acknowledged
//!   every accepted record. Rejected records are listed with their index,
//!   reason and message (never a value); the valid ones are still sent.
//! - 400 when nothing in the body is acceptable, 413 over the size limit.
//! - 503 with `Retry-After` when the broker is unreachable or does not
//!   acknowledge within the deadline: the client retries the whole request.
//!   Records of a failed request may already be in the topic, so a retry
//!   can duplicate them: downstream deduplicates by `event_id`.

use crate::config::HttpConfig;
use crate::edge::Edge;
use crate::metrics::IngestMetrics;
use crate::producer::RawProducer;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chitose_runtime::ops::Readiness;
use chitose_schemas::codec::Timestamp;
use chitose_schemas::json::JsonError;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Header naming the HTTP request a record came from.
pub const HEADER_REQUEST: &str = "chitose-source-request";

struct AppState {
    producer: RawProducer,
    /// token → (prefecture, edge for that prefecture)
    tokens: HashMap<String, (String, Edge)>,
    metrics: IngestMetrics,
    ready: Readiness,
    ack_deadline: Duration,
}

/// Builds the router for the HTTP source.
pub fn router(
    cfg: &HttpConfig,
    producer: RawProducer,
    store: &chitose_schemas::catalog::SchemaStore,
    metrics: IngestMetrics,
    ready: Readiness,
) -> Router {
    let tokens = cfg
        .tokens
        .iter()
        .map(|(pref, tok)| {
            (
                tok.clone(),
                (pref.clone(), Edge::new(store, Some(pref.clone()))),
            )
        })
        .collect();
    let state = Arc::new(AppState {
        producer,
        tokens,
        metrics,
        ready,
        ack_deadline: Duration::from_millis(cfg.ack_deadline_ms),
    });
    Router::new()
        .route("/v1/events", post(events))
        .route("/fhir", post(fhir))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(state)
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
    let Some(prefecture) = authorized(&s, &headers).map(|(p, _)| p.clone()) else {
        return unauthorized();
    };
    handle(&s, &headers, || {
        crate::fhir::map_bundle(&body, &prefecture)
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(_, m)| m.map(|v| serde_json::to_vec(&v).expect("serializes")))
                    .collect()
            })
            .map_err(|e| e.to_string())
    })
    .await
}

fn authorized<'a>(s: &'a AppState, headers: &HeaderMap) -> Option<&'a (String, Edge)> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    token.and_then(|t| s.tokens.get(t))
}

fn unauthorized() -> Response {
    answer(
        StatusCode::UNAUTHORIZED,
        json!({"error": "expected Authorization: Bearer <this hub's token>, found none that is known"}),
    )
}

async fn handle(
    s: &AppState,
    headers: &HeaderMap,
    parse: impl FnOnce() -> Result<Items, String>,
) -> Response {
    let Some((prefecture, edge)) = authorized(s, headers) else {
        return unauthorized();
    };
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
    let now = Timestamp::now();
    let request_id = format!("{prefecture}-{}", now.0);
    let mut errors = Vec::new();
    let mut acks = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        s.metrics.read.inc();
        let verdict = match r {
            Ok(bytes) => edge.accept(bytes, now),
            Err(e) => Err(e.clone()),
        };
        match verdict {
            Ok(a) => {
                let ack = s
                    .producer
                    .send(
                        &a.event.patient.local_patient_id,
                        a.message,
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
                errors
                    .push(json!({"index": i, "reason": e.reason.as_str(), "error": e.to_string()}));
            }
        }
    }
    let accepted = acks.len();
    if accepted == 0 {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"accepted": 0, "rejected": errors.len(), "errors": errors}),
        );
    }
    let all = futures::future::join_all(acks);
    match tokio::time::timeout(s.ack_deadline, all).await {
        Ok(results) if results.iter().all(Result::is_ok) => answer(
            StatusCode::ACCEPTED,
            json!({"accepted": accepted, "rejected": errors.len(), "errors": errors}),
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
