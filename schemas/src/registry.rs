//! The seam to a Confluent-compatible schema registry.
//!
//! The HTTP client lives in `chitose-runtime` (it needs an HTTP stack);
//! this crate only says what a registry can do, so cores stay network-free.

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached (retry).
    #[error("schema registry at {url}: unreachable: {message}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// The registry answered with an error (Confluent error code).
    #[error(
        "schema registry at {url}: expected success for {what}, found HTTP {status} (error code {code}): {message}"
    )]
    Rejected {
        /// Base URL.
        url: String,
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// Confluent `error_code`.
        code: i64,
        /// Confluent `message`.
        message: String,
    },
    /// The registry answered something that is not its API.
    #[error("schema registry at {url}: expected {expected}, found {found}")]
    Protocol {
        /// Base URL.
        url: String,
        /// What the API promises.
        expected: String,
        /// What came.
        found: String,
    },
}

/// A Confluent-compatible schema registry.
#[async_trait::async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// Registers `schema` (Avro JSON text) under `subject`; returns its id.
    /// Registering an existing schema returns the existing id.
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError>;

    /// The schema text with this id.
    async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError>;
}
