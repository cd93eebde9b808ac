//! The Confluent-compatible registry client against a small in-test server
//! that speaks the registry's REST API, and Confluent framing end to end.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chitose_ingest::simulate::{Generator, SimConfig};
use chitose_runtime::registry::HttpRegistry;
use chitose_schemas::RawCodec;
use chitose_schemas::canonical::fingerprint;
use chitose_schemas::catalog::{RAW_EVENT, SchemaStore};
use chitose_schemas::registry::{RegistryError, SchemaRegistry};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Registry {
    /// (subject, canonical text) per id; ids start at 1 like Confluent's.
    schemas: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Registry>>;

fn error(status: StatusCode, code: i64, message: &str) -> axum::response::Response {
    (
        status,
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

async fn register(
    State(s): State<Shared>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/vnd.schemaregistry.v1+json")
    {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "wrong content type",
        );
    }
    let Ok(req) = serde_json::from_str::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, 400, "not JSON");
    };
    let Some(text) = req["schema"].as_str() else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    };
    if apache_avro::Schema::parse_str(text).is_err() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
    }
    let canonical = text.to_owned();
    let mut r = s.lock().unwrap();
    // Registering a schema that exists under any subject returns its id.
    let id = match r.schemas.iter().position(|(_, c)| *c == canonical) {
        Some(i) => i + 1,
        None => {
            r.schemas.push((subject, canonical));
            r.schemas.len()
        }
    };
    Json(json!({"id": id})).into_response()
}

async fn by_id(State(s): State<Shared>, Path(id): Path<usize>) -> axum::response::Response {
    let r = s.lock().unwrap();
    match id.checked_sub(1).and_then(|i| r.schemas.get(i)) {
        Some((_, text)) => Json(json!({"schema": text})).into_response(),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}

async fn serve() -> String {
    let app = Router::new()
        .route("/subjects/{subject}/versions", post(register))
        .route("/schemas/ids/{id}", get(by_id))
        .with_state(Shared::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn registers_fetches_and_decodes_confluent_framed_events() {
    let url = serve().await;
    let reg = HttpRegistry::new(&url);
    let store = SchemaStore::embedded();
    let versions = store.versions(RAW_EVENT);
    let subject = "health.raw.27-value";

    let id1 = reg.register(subject, &versions[0].text).await.unwrap();
    // The current version (what the codec writes) and the first.
    let current = versions.last().unwrap();
    let id2 = reg.register(subject, &current.text).await.unwrap();
    assert_ne!(id1, id2);
    assert_eq!(
        reg.register(subject, &current.text).await.unwrap(),
        id2,
        "idempotent registration"
    );

    // What comes back is the same schema: same fingerprint as ours.
    let text = reg.schema_by_id(id2).await.unwrap();
    assert_eq!(fingerprint(&text).unwrap(), current.fingerprint);

    // A consumer learns id → fingerprint from the registry and decodes
    // Confluent-framed messages, old version included.
    let mut codec = RawCodec::new(store.clone());
    for id in [id1, id2] {
        let t = reg.schema_by_id(id).await.unwrap();
        codec.add_confluent_id(id, fingerprint(&t).unwrap());
    }
    let mut g = Generator::new(SimConfig {
        patients: 100,
        ..SimConfig::default()
    })
    .unwrap();
    for _ in 0..100 {
        let ev = g.next_event();
        let mut msg = Vec::new();
        codec.encode_confluent(&ev, id2, &mut msg);
        assert_eq!(
            &msg[..5],
            &[
                0,
                (id2 >> 24) as u8,
                (id2 >> 16) as u8,
                (id2 >> 8) as u8,
                id2 as u8
            ]
        );
        assert_eq!(codec.decode(&msg).unwrap(), ev);
    }
    let mut msg = Vec::new();
    codec.encode_confluent(&g.next_event(), 9999, &mut msg);
    assert_eq!(
        codec.decode(&msg).unwrap_err().to_string(),
        "message header: expected a registered schema id, found 9999"
    );
}

#[tokio::test]
async fn registry_errors_say_what_and_where() {
    let url = serve().await;
    let reg = HttpRegistry::new(&url);
    match reg.schema_by_id(77).await {
        Err(RegistryError::Rejected {
            status: 404,
            code: 40403,
            ..
        }) => {}
        other => panic!("expected a 40403 rejection, found {other:?}"),
    }
    let e = reg
        .register("s", "{not avro")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("POST /subjects/s/versions") && e.contains("42201"),
        "{e}"
    );

    // Nothing listens on this port any more: unreachable, not a panic.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    match HttpRegistry::new(&dead).schema_by_id(1).await {
        Err(RegistryError::Unreachable { url, .. }) => assert_eq!(url, dead),
        other => panic!("expected unreachable, found {other:?}"),
    }
}
