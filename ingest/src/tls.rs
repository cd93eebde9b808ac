//! HTTPS for the HTTP source: rustls with the server certificate re-read
//! when its files change (cert-manager and the like rotate them in place),
//! optional client certificates (mTLS) and per-hub certificate pins.

use crate::config::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Why the HTTPS settings could not be used. Messages name the file and
/// the problem, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} {path}: {message}")]
    File {
        /// Config key.
        key: &'static str,
        /// File.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The private key is readable by others.
    #[error("http.tls.key_file: {0}")]
    Permission(#[from] chitose_runtime::private::PermissionError),
    /// rustls refused the certificate, key or CA.
    #[error("http.tls: {0}")]
    Rustls(String),
}

fn file_err(key: &'static str, path: &Path, message: String) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect())
        .map_err(|e| file_err(key, path, format!("expected PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            key,
            path,
            "expected PEM certificates, found none".into(),
        ));
    }
    Ok(certs)
}

/// The server identity from the two files, checked: the key readable by
/// its owner only, and matching the certificate.
fn load_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs("http.tls.cert_file", cert)?;
    chitose_runtime::private::check_secret_file(key)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        file_err(
            "http.tls.key_file",
            key,
            format!("expected a PEM private key: {e}"),
        )
    })?;
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| {
        TlsError::Rustls(format!(
            "certificate and key do not make a server identity: {e}"
        ))
    })
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Serves the certificate of `cert`/`key`, looking at the files' times at
/// most once per `every`; a changed pair that does not load (half-written,
/// mismatched) is logged and the current identity kept.
#[derive(Debug)]
struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    every: Option<Duration>,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    identity: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingIdentity {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(every) = self.every
            && st.checked.elapsed() >= every
        {
            st.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != st.stamps {
                st.stamps = stamps;
                match load_identity(&self.cert, &self.key, &self.provider) {
                    Ok(id) => {
                        st.identity = Arc::new(id);
                        tracing::info!(cert = %self.cert.display(), "HTTPS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "changed HTTPS certificate not loaded; serving the previous one");
                    }
                }
            }
        }
        st.identity.clone()
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration and the client certificate pins.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    pins: Vec<[u8; 32]>,
}

impl Tls {
    /// From `[http.tls]`; `None` when no certificate is configured.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) else {
            return Ok(None);
        };
        // The ring provider, named explicitly: the workspace links both of
        // rustls's providers (object_store brings aws-lc-rs), and rustls
        // will not guess between them.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = load_identity(cert, key, &provider)?;
        let resolver = ReloadingIdentity {
            cert: cert.clone(),
            key: key.clone(),
            every: (!cfg.reload_interval.is_zero()).then_some(cfg.reload_interval),
            provider: provider.clone(),
            state: Mutex::new(Loaded {
                identity: Arc::new(identity),
                stamps: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &cfg.client_ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs("http.tls.client_ca_file", ca)? {
                    roots
                        .add(c)
                        .map_err(|e| file_err("http.tls.client_ca_file", ca, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(resolver));
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Validated as 64 hex digits (colons allowed) at start-up.
        let pins = cfg
            .client_cert_sha256
            .iter()
            .filter_map(|h| crate::token::hex32(&h.replace(':', "")))
            .collect();
        Ok(Some(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            pins,
        }))
    }

    /// Accepts TLS connections with this configuration.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// SHA-256 fingerprints of the client certificates this hub may use;
    /// empty = any the CA signed.
    pub fn pins(&self) -> &[[u8; 32]] {
        &self.pins
    }
}
