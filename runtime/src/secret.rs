//! Secrets: one rule for which configuration keys are secret and one type
//! that holds a secret value. Every `--print-config`, log line and error
//! goes through these, so a new secret property (a SASL mechanism's, an
//! object store's) is hidden everywhere at once instead of in one of
//! several per-service lists.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// Fragments that make a key secret wherever they appear in its name
/// (librdkafka's dotted properties, object_store's snake-case ones, our
/// own): `sasl.password`, `ssl.key.password`, `ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`,
/// `ssl.key.pem`, `aws_secret_access_key`, `aws_session_token`,
/// `azure_storage_sas_key`, `google_service_account_key`, `token_sha256`…
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "secret",
    "token",
    "credential",
    "private",
    "sas_key",
    "account_key",
    "master_key",
    "storage_access_key",
    "service_account_key",
    "key.pem",
    "jaas",
    "oauthbearer.config",
];

/// Whether a configuration key (dotted path or bare name, any case) names
/// a secret whose value must never be printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    // object_store's bare Azure alias `access_key` (the AWS key *id* is not
    // a secret; its secret is `aws_secret_access_key`).
    let last = k.rsplit('.').next().unwrap_or(&k);
    last == "access_key" || SECRET_FRAGMENTS.iter().any(|f| k.contains(f))
}

/// A secret value: its `Debug` and `Display` say `***`, it serializes as
/// `***` (so a config printed through serde never shows it), and the
/// memory is wiped when dropped. Read it with [`Secret::expose`], only
/// where it is handed to the library that needs it.
#[derive(Clone)]
pub struct Secret(SecretString);

/// What a secret is shown as.
pub const REDACTED: &str = "***";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Reads a secret from a file (a mounted Kubernetes Secret, a Docker
    /// secret), without a trailing newline. The error names the file,
    /// never its content.
    pub fn from_file(path: &std::path::Path) -> Result<Self, std::io::Error> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.expose()
            .as_bytes()
            .ct_eq(other.expose().as_bytes())
            .into()
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Replaces what follows `key=` / `key: ` for secret keys in a free-form
/// message (a librdkafka or TOML error that quotes configuration), so an
/// error can be shown whole without its secrets.
pub fn redact_message(message: &str) -> String {
    message
        .lines()
        .map(|line| {
            let lower = line.to_ascii_lowercase();
            if SECRET_FRAGMENTS.iter().any(|f| lower.contains(f)) {
                match line.find(['=', ':']) {
                    Some(i) => format!("{} {REDACTED}", &line[..=i]),
                    None => REDACTED.to_owned(),
                }
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_secret_key_is_recognised() {
        for k in [
            "sasl.password",
            "kafka.properties.sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "aws_secret_access_key",
            "aws_session_token",
            "azure_storage_sas_key",
            "azure_storage_account_key",
            "azure_storage_access_key",
            "azure_storage_master_key",
            "lake_options.access_key",
            "azure_storage_sas_token",
            "google_service_account_key",
            "http.token_sha256",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "bootstrap_servers",
            "ssl.ca.location",
            "ssl.key.location",
            "sasl.username",
            "sasl.mechanism",
            "security.protocol",
            "aws_access_key_id",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn a_secret_never_shows_itself() {
        let s = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2-hunter2");
        let back: Secret = serde_json::from_str("\"hunter2-hunter2\"").unwrap();
        assert_eq!(back, s);
        assert_ne!(Secret::new("other"), s);
    }

    #[test]
    fn messages_lose_secret_values() {
        let m = "line 3: sasl.password = \"hunter2\"\nexpected a string";
        let r = redact_message(m);
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("expected a string"), "{r}");
    }
}
