//! HTTP client for a Confluent-compatible schema registry.

use async_trait::async_trait;
use chitose_schemas::registry::{RegistryError, SchemaRegistry};
use std::time::Duration;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry at `base_url` (e.g. `http://127.0.0.1:8081`).
#[derive(Debug, Clone)]
pub struct HttpRegistry {
    base_url: String,
    client: reqwest::Client,
}

#[derive(serde::Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(serde::Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(serde::Deserialize)]
struct ErrorResponse {
    error_code: i64,
    message: String,
}

impl HttpRegistry {
    /// A client with a 10 s timeout per request.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpRegistry {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a default HTTP client builds"),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        what: String,
    ) -> Result<T, RegistryError> {
        let url = self.base_url.clone();
        let resp = req
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => (e.error_code, e.message),
                Err(_) => (
                    -1,
                    format!(
                        "a body of {} bytes that is not a registry error",
                        body.len()
                    ),
                ),
            };
            return Err(RegistryError::Rejected {
                url,
                what,
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            url,
            expected: format!("a JSON answer to {what}"),
            found: e.to_string(),
        })
    }
}

#[async_trait]
impl SchemaRegistry for HttpRegistry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let req = self
            .client
            .post(format!("{}/subjects/{}/versions", self.base_url, subject))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.to_string());
        let r: IdResponse = self
            .send(req, format!("POST /subjects/{subject}/versions"))
            .await?;
        Ok(r.id)
    }

    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        let req = self
            .client
            .get(format!("{}/schemas/ids/{id}", self.base_url));
        let r: SchemaResponse = self.send(req, format!("GET /schemas/ids/{id}")).await?;
        Ok(r.schema)
    }
}
