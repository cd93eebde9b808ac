//! `chitose ingest` configuration: defaults that work locally, a TOML file,
//! `CHITOSE_INGEST__<SECTION>__<KEY>` environment overrides, and flags.

use crate::simulate::SimConfig;
use chitose_runtime::config::{Problems, Validate};
use chitose_runtime::kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which source feeds the hub's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// NDJSON file drops in a directory.
    #[default]
    Files,
    /// `POST /v1/events`.
    Http,
    /// The synthetic generator.
    Simulate,
    /// An SS-MIX2 standardized storage tree.
    Ssmix2,
}

/// The whole ingest configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// This hub's prefecture (JIS X 0401, two digits).
    pub prefecture: String,
    /// Topic name; `{prefecture}` is replaced.
    pub topic: String,
    /// Partitions when the topic has to be created.
    pub topic_partitions: i32,
    /// Which source runs.
    pub source: SourceKind,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops_listen: std::net::SocketAddr,
    /// Bound on records produced but not yet acknowledged (backpressure).
    pub max_in_flight: usize,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Files source.
    pub files: FilesConfig,
    /// HTTP source.
    pub http: HttpConfig,
    /// Simulate source.
    pub simulate: SimulateConfig,
    /// SS-MIX2 source.
    pub ssmix2: Ssmix2Config,
}

/// Files source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Watched directory; `done/`, `rejects/` and `.chitose/` live inside it.
    pub dir: PathBuf,
    /// How often to look for new files.
    #[serde(with = "chitose_runtime::config::duration")]
    pub poll_interval: std::time::Duration,
    /// Write the checkpoint after this many acknowledged lines.
    pub checkpoint_every_lines: u64,
    /// Stop when the directory has no more files (batch mode, for tests
    /// and one-shot loads) instead of watching.
    pub exit_when_idle: bool,
    /// CSV header mapping; CSV files are read only when it maps columns.
    pub csv: crate::records::CsvConfig,
    /// Days a finished file (`done/`) and a rejects file (`rejects/`) are
    /// kept before they are deleted; 0 keeps them forever. They hold
    /// patients' records: keep them only as long as a hub may ask for a
    /// re-send.
    pub retention_days: u32,
    /// Character encoding of the hub's files: `utf-8` (default), or any
    /// WHATWG label such as `shift_jis` (Windows-31J/CP932, what Japanese
    /// spreadsheets and EHRs write), `euc-jp`, `utf-16le`. A file that
    /// starts with a UTF-16 byte-order mark is read as UTF-16 whatever is
    /// set; a UTF-8 one is skipped.
    pub encoding: String,
}

/// SS-MIX2 source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ssmix2Config {
    /// The storage root (`<root>/<id[0..3]>/<id[3..6]>/<id>/<date>/<type>/<file>`);
    /// only read, never written.
    pub root: PathBuf,
    /// Where the ledger, the queue and its rejects live (patients' data:
    /// owner-only).
    pub state_dir: PathBuf,
    /// The 10-digit medical institution code of the hospital whose storage
    /// this is (messages do not carry it).
    pub facility_code: String,
    /// Messages per queued batch.
    pub batch_messages: usize,
    /// How often to look for new messages.
    #[serde(with = "chitose_runtime::config::duration")]
    pub poll_interval: std::time::Duration,
    /// A file modified less than this long ago is left for a later pass:
    /// the EHR may still be writing it.
    #[serde(with = "chitose_runtime::config::duration")]
    pub min_age: std::time::Duration,
}

impl Default for Ssmix2Config {
    fn default() -> Self {
        Ssmix2Config {
            root: PathBuf::from("./ssmix2"),
            state_dir: PathBuf::from("./ssmix2-state"),
            facility_code: String::new(),
            batch_messages: 1000,
            poll_interval: std::time::Duration::from_secs(5),
            min_age: std::time::Duration::from_secs(2),
        }
    }
}

/// HTTP source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: std::net::SocketAddr,
    /// Request body limit; larger requests get 413.
    pub max_body_bytes: usize,
    /// How long a request waits for the broker's acknowledgements before
    /// answering 503.
    #[serde(with = "chitose_runtime::config::duration")]
    pub ack_deadline: std::time::Duration,
    /// Hashes of the bearer tokens this hub's clients may use
    /// (`chitose ingest token --prefecture NN` makes a token and its hash;
    /// the hash binds the token to the prefecture, so another hub's token
    /// is refused here). The tokens themselves are never stored.
    pub token_sha256: Vec<String>,
    /// Files holding one such hash each (a mounted Secret).
    pub token_sha256_files: Vec<PathBuf>,
    /// HTTPS (and optionally client certificates).
    pub tls: TlsConfig,
    /// Plain HTTP on an address beyond loopback (only behind a
    /// TLS-terminating proxy on the same host).
    pub allow_plaintext: bool,
    /// A request (headers, body, broker acknowledgement) that takes longer
    /// is answered 503.
    #[serde(with = "chitose_runtime::config::duration")]
    pub request_timeout: std::time::Duration,
    /// A client that has not sent its headers (or finished its TLS
    /// handshake) within this time is disconnected (slow-loris).
    #[serde(with = "chitose_runtime::config::duration")]
    pub header_timeout: std::time::Duration,
    /// Requests served at once; more are answered 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Records in one request; more are answered 413.
    pub max_records_per_request: usize,
    /// Errors listed in one answer (the count covers all).
    pub max_errors_per_request: usize,
}

/// HTTPS settings of the HTTP source (rustls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, PEM; TLS is on when set.
    pub cert_file: Option<PathBuf>,
    /// Private key, PEM (mode 0600 or stricter).
    pub key_file: Option<PathBuf>,
    /// CA bundle, PEM: when set, every client must present a certificate
    /// it signed (mTLS), in addition to its token.
    pub client_ca_file: Option<PathBuf>,
    /// SHA-256 (hex) of the client certificates this hub may use; empty =
    /// any the CA signed.
    pub client_cert_sha256: Vec<String>,
    /// How often the certificate and key files are looked at for a change
    /// (a rotated certificate is served to new connections); 0 = never.
    #[serde(with = "chitose_runtime::config::duration")]
    pub reload_interval: std::time::Duration,
}

/// Simulate source settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulateConfig {
    /// Events per second; 0 = as fast as the broker takes them.
    pub rate: f64,
    /// Stop after this many lines; 0 = run until stopped.
    pub events: u64,
    /// The generator.
    pub generator: SimConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            prefecture: "27".into(),
            topic: chitose_runtime::topics::RAW_TEMPLATE.into(),
            topic_partitions: 6,
            source: SourceKind::Files,
            ops_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_in_flight: 20_000,
            kafka: KafkaSettings::default(),
            files: FilesConfig::default(),
            http: HttpConfig::default(),
            simulate: SimulateConfig::default(),
            ssmix2: Ssmix2Config::default(),
        }
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            dir: PathBuf::from("./incoming"),
            poll_interval: std::time::Duration::from_millis(500),
            checkpoint_every_lines: 1_000,
            exit_when_idle: false,
            csv: Default::default(),
            retention_days: 30,
            encoding: "utf-8".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 8 * 1024 * 1024,
            ack_deadline: std::time::Duration::from_secs(10),
            token_sha256: Vec::new(),
            token_sha256_files: Vec::new(),
            tls: TlsConfig::default(),
            allow_plaintext: false,
            request_timeout: std::time::Duration::from_secs(30),
            header_timeout: std::time::Duration::from_secs(10),
            max_concurrent_requests: 64,
            max_records_per_request: 10_000,
            max_errors_per_request: 100,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_cert_sha256: Vec::new(),
            reload_interval: std::time::Duration::from_secs(10),
        }
    }
}

impl Default for SimulateConfig {
    fn default() -> Self {
        SimulateConfig {
            rate: 0.0,
            events: 0,
            generator: SimConfig::default(),
        }
    }
}

impl IngestConfig {
    /// The topic for this hub.
    pub fn topic_name(&self) -> String {
        self.topic.replace("{prefecture}", &self.prefecture)
    }

    fn http_problems(&self, p: &mut Problems) {
        let h = &self.http;
        if h.token_sha256.is_empty() && h.token_sha256_files.is_empty() {
            p.value(
                "http.token_sha256",
                "the hash of at least one bearer token (chitose ingest token --prefecture NN)",
                "none",
            );
        }
        for (i, t) in h.token_sha256.iter().enumerate() {
            if !is_sha256_hex(t) {
                p.value(
                    &format!("http.token_sha256[{i}]"),
                    "64 hexadecimal digits (the token's hash, not the token)",
                    format!("{} characters", t.len()),
                );
            }
        }
        for (i, t) in h.tls.client_cert_sha256.iter().enumerate() {
            if !is_sha256_hex(&t.replace(':', "")) {
                p.value(
                    &format!("http.tls.client_cert_sha256[{i}]"),
                    "a SHA-256 certificate fingerprint (64 hexadecimal digits)",
                    format!("{} characters", t.len()),
                );
            }
        }
        match (&h.tls.cert_file, &h.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                p.value(
                    "http.tls",
                    "both cert_file and key_file, or neither",
                    "only one of them",
                );
            }
            (None, None) => {
                if h.tls.client_ca_file.is_some() {
                    p.value(
                        "http.tls.client_ca_file",
                        "cert_file and key_file as well (client certificates need TLS)",
                        "no server certificate",
                    );
                }
                let loopback = h.listen.ip().is_loopback();
                if !loopback && !h.allow_plaintext {
                    p.value(
                        "http.tls.cert_file",
                        "a certificate for an address beyond loopback \
                         (or allow_plaintext = true behind a TLS proxy on this host)",
                        format!("plain HTTP on {}", h.listen),
                    );
                }
            }
            (Some(_), Some(_)) => {}
        }
        for (key, v) in [
            ("http.max_concurrent_requests", h.max_concurrent_requests),
            ("http.max_records_per_request", h.max_records_per_request),
        ] {
            if v == 0 {
                p.value(key, "at least 1", "0");
            }
        }
        for (key, v) in [
            ("http.request_timeout", h.request_timeout),
            ("http.header_timeout", h.header_timeout),
        ] {
            if v.is_zero() {
                p.value(key, "a duration above zero", "0");
            }
        }
    }

    /// Checks values serde cannot; every problem, each naming its key.
    pub fn validate(&self) -> Result<(), chitose_runtime::config::ConfigError> {
        Validate::validate(self)
    }
}

impl Validate for IngestConfig {
    fn problems(&self, p: &mut Problems) {
        // The CSV mapping is checked here, at start-up, not at a file's
        // first row.
        if let Err(all) = crate::records::CsvMapping::new(&self.files.csv) {
            for message in all.split("; ") {
                p.push(chitose_runtime::config::ConfigError::Invalid {
                    origin: "configuration".to_owned(),
                    message: message.to_owned(),
                });
            }
        }
        let reference = chitose_schemas::reference::Reference::load().expect("shipped tables load");
        if reference.prefecture(&self.prefecture).is_none() {
            p.value(
                "prefecture",
                "a JIS X 0401 code 01-47",
                format!("{:?}", self.prefecture),
            );
        }
        if self.max_in_flight == 0 {
            p.value("max_in_flight", "at least 1", "0".to_owned());
        }
        if self.topic_partitions < 1 {
            p.value(
                "topic_partitions",
                "at least 1",
                self.topic_partitions.to_string(),
            );
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            p.value(
                "kafka.bootstrap_servers",
                "host:port",
                "an empty string".to_owned(),
            );
        }
        if encoding_rs::Encoding::for_label(self.files.encoding.as_bytes()).is_none() {
            p.value(
                "files.encoding",
                "an encoding label such as utf-8, shift_jis, euc-jp or utf-16le",
                format!("{:?}", self.files.encoding),
            );
        }
        if self.source == SourceKind::Http {
            self.http_problems(p);
        }
        if self.source == SourceKind::Ssmix2 {
            let f = &self.ssmix2.facility_code;
            if chitose_schemas::edge::facility_kind(f).is_none() || !f.starts_with(&self.prefecture)
            {
                p.value(
                    "ssmix2.facility_code",
                    "the hospital's 10-digit medical institution code, in this hub's prefecture",
                    if f.is_empty() {
                        "none".to_owned()
                    } else {
                        "another value".to_owned()
                    },
                );
            }
            if self.ssmix2.batch_messages == 0 {
                p.value("ssmix2.batch_messages", "at least 1", "0".to_owned());
            }
        }
        if !(self.simulate.rate >= 0.0 && self.simulate.rate.is_finite()) {
            p.value(
                "simulate.rate",
                "events per second, 0 or more",
                self.simulate.rate.to_string(),
            );
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
