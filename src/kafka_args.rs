//! The Kafka connection arguments every command that talks to Kafka takes
//! (services and tools alike), so an operator reaches a TLS/SASL listener
//! with the same settings everywhere and never keeps a plaintext one open
//! for the tools.
//!
//! Layers, lowest first: defaults → the command's own config file
//! (services) → `--kafka-config FILE` (its `[kafka]` table; a service's
//! config file works) → `CHITOSE_KAFKA_<PROPERTY>[_FILE]` → `-X KEY=VALUE`
//! → `--bootstrap`.

use anyhow::{Context, Result, bail};
use chitose_runtime::kafka::KafkaSettings;
use clap::Args;
use std::path::PathBuf;
use toml::Value;

/// Kafka connection flags, flattened into every command that needs them.
#[derive(Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port[,host:port]).
    #[arg(long, global = true, env = "CHITOSE_BOOTSTRAP")]
    pub bootstrap: Option<String>,
    /// TOML file whose `[kafka]` table sets the connection (security
    /// protocol, certificates, SASL); a service's config file works.
    #[arg(long, global = true, env = "CHITOSE_KAFKA_CONFIG", value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
    /// A librdkafka property, KEY=VALUE (repeatable), e.g.
    /// `-X security.protocol=ssl -X ssl.ca.location=ca.pem`. Secrets go in
    /// files: `CHITOSE_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka`.
    #[arg(
        long = "kafka-property",
        short = 'X',
        global = true,
        value_name = "KEY=VALUE"
    )]
    pub properties: Vec<String>,
}

impl KafkaArgs {
    /// The `[kafka]` table these arguments and the environment lay over a
    /// service's configuration (empty when none is given).
    pub fn table(&self) -> Result<toml::Table> {
        let mut t = Value::Table(toml::Table::new());
        if let Some(path) = &self.kafka_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--kafka-config {}: cannot read", path.display()))?;
            let file: toml::Table = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "--kafka-config {}: {}",
                    path.display(),
                    chitose_runtime::config::toml_message(&text, &e)
                )
            })?;
            match file.get("kafka") {
                Some(Value::Table(k)) => {
                    chitose_runtime::config::set(&mut t, "kafka", Value::Table(k.clone()))
                }
                Some(_) => bail!(
                    "--kafka-config {}: expected a [kafka] table, found another type",
                    path.display()
                ),
                None => bail!(
                    "--kafka-config {}: expected a [kafka] table, found none",
                    path.display()
                ),
            }
        }
        let env = KafkaSettings::environment_table(std::env::vars()).map_err(errors)?;
        chitose_runtime::config::set(&mut t, "kafka", Value::Table(env));
        let mut props = toml::Table::new();
        for p in &self.properties {
            let Some((k, v)) = p.split_once('=') else {
                bail!("--kafka-property: expected KEY=VALUE, found no '=' in an argument");
            };
            props.insert(k.trim().to_owned(), Value::String(v.to_owned()));
        }
        let mut over = toml::Table::new();
        if !props.is_empty() {
            over.insert("properties".into(), Value::Table(props));
        }
        if let Some(b) = &self.bootstrap {
            over.insert("bootstrap_servers".into(), Value::String(b.clone()));
        }
        chitose_runtime::config::set(&mut t, "kafka", Value::Table(over));
        Ok(match t {
            Value::Table(mut t) => match t.remove("kafka") {
                Some(Value::Table(k)) => k,
                _ => toml::Table::new(),
            },
            _ => toml::Table::new(),
        })
    }

    /// A service's config flag for these arguments: `("kafka", table)`,
    /// merged over the service file's `[kafka]`.
    pub fn flag(&self) -> Result<Option<(&'static str, Value)>> {
        let t = self.table()?;
        Ok((!t.is_empty()).then_some(("kafka", Value::Table(t))))
    }

    /// These arguments but `--bootstrap`, for a child `chitose` process
    /// (which inherits the `CHITOSE_KAFKA_*` environment by itself).
    pub fn child_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &self.kafka_config {
            out.push("--kafka-config".to_owned());
            out.push(f.display().to_string());
        }
        for p in &self.properties {
            out.push("-X".to_owned());
            out.push(p.clone());
        }
        out
    }

    /// Settings for a tool: defaults with these arguments and the
    /// environment over them, secret files read, checked by librdkafka.
    pub fn settings(&self) -> Result<KafkaSettings> {
        let mut k: KafkaSettings = Value::Table(self.table()?)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("kafka settings: {}", e.message()))?;
        prepare(&mut k)?;
        Ok(k)
    }
}

/// Reads secret files and checks the settings; every problem at once.
pub fn prepare(k: &mut KafkaSettings) -> Result<()> {
    k.prepare().map_err(errors)?;
    for key in k.inline_secrets() {
        tracing::warn!(
            property = key,
            "a secret Kafka property is set inline; keep it in a file \
             (kafka.property_files or CHITOSE_KAFKA_<PROPERTY>_FILE)"
        );
    }
    if !k.is_encrypted() && !is_loopback(&k.bootstrap_servers) {
        tracing::warn!(
            protocol = %k.security_protocol(),
            "Kafka traffic is not encrypted: set security.protocol=ssl or sasl_ssl \
             for any broker beyond this machine"
        );
    }
    Ok(())
}

fn is_loopback(bootstrap: &str) -> bool {
    bootstrap.split(',').all(|b| {
        let host = b.trim().rsplit_once(':').map_or(b.trim(), |(h, _)| h);
        matches!(host, "localhost" | "[::1]" | "::1") || host.starts_with("127.")
    })
}

fn errors(errs: Vec<chitose_runtime::kafka::KafkaConfigError>) -> anyhow::Error {
    // A configuration error like any other (exit code 2), every problem
    // listed.
    let mut p = chitose_runtime::config::Problems::default();
    for e in errs {
        p.push(chitose_runtime::config::ConfigError::Invalid {
            origin: "Kafka settings".into(),
            message: e.to_string(),
        });
    }
    match p.into_result() {
        Err(e) => e.into(),
        Ok(()) => anyhow::anyhow!("Kafka settings: expected a problem to report, found none"),
    }
}
