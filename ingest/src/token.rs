//! Hub bearer tokens: stored only as hashes bound to one prefecture,
//! compared in constant time.
//!
//! hash = SHA-256("chitose-hub-token" ‖ len ‖ prefecture ‖ len ‖ token):
//! the prefecture is part of what is hashed, so a token made for Kyoto (26)
//! hashes differently in an Osaka (27) instance and is refused there even
//! if an operator pasted Kyoto's hash into Osaka's configuration. Tokens
//! are 256 random bits, so a fast hash is enough (nothing to brute-force).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const DOMAIN: &[u8] = b"chitose-hub-token";

/// The hash of `token` for `prefecture`, as 64 lower-case hex digits.
pub fn hash_hex(prefecture: &str, token: &str) -> String {
    hash(prefecture, token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hash(prefecture: &str, token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    for part in [prefecture.as_bytes(), token.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// A new random token: 32 bytes as 64 hex digits.
pub fn generate() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a token hash could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not 64 hex digits.
    #[error("{origin}: expected a token hash of 64 hexadecimal digits, found {len} characters")]
    NotAHash {
        /// Config key or file.
        origin: String,
        /// Length found (never the value).
        len: usize,
    },
    /// A hash file could not be read.
    #[error("{path}: cannot read the token hash file: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The tokens one ingest instance accepts.
#[derive(Clone)]
pub struct TokenSet {
    prefecture: String,
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenSet({}, {} hashes)",
            self.prefecture,
            self.hashes.len()
        )
    }
}

/// 64 hex digits (a SHA-256) as bytes; None for anything else.
pub(crate) fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_hex(origin: &str, s: &str) -> Result<[u8; 32], TokenError> {
    let s = s.trim();
    hex32(s).ok_or_else(|| TokenError::NotAHash {
        origin: origin.to_owned(),
        len: s.chars().count(),
    })
}

impl TokenSet {
    /// From configured hashes and files of hashes (one per file).
    pub fn load(
        prefecture: &str,
        inline: &[String],
        files: &[std::path::PathBuf],
    ) -> Result<Self, TokenError> {
        let mut hashes = Vec::new();
        for (i, h) in inline.iter().enumerate() {
            hashes.push(parse_hex(&format!("http.token_sha256[{i}]"), h)?);
        }
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|source| TokenError::Read {
                path: f.display().to_string(),
                source,
            })?;
            hashes.push(parse_hex(&f.display().to_string(), &text)?);
        }
        Ok(TokenSet {
            prefecture: prefecture.to_owned(),
            hashes,
        })
    }

    /// Whether `token` is one of this hub's. Every stored hash is compared,
    /// each in constant time, so timing tells nothing about which or how
    /// much matched.
    pub fn verify(&self, token: &str) -> bool {
        let h = hash(&self.prefecture, token);
        let mut ok = subtle::Choice::from(0u8);
        for stored in &self.hashes {
            ok |= stored.ct_eq(&h);
        }
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_its_prefecture() {
        let t = generate();
        assert_eq!(t.len(), 64);
        assert_ne!(t, generate());
        let osaka = TokenSet::load("27", &[hash_hex("27", &t)], &[]).unwrap();
        assert!(osaka.verify(&t));
        assert!(!osaka.verify(&generate()));
        assert!(!osaka.verify(""));
        // Kyoto's hash pasted into Osaka's config: refused.
        let pasted = TokenSet::load("27", &[hash_hex("26", &t)], &[]).unwrap();
        assert!(!pasted.verify(&t));
    }

    #[test]
    fn a_token_instead_of_a_hash_is_refused_without_echo() {
        let e = TokenSet::load("27", &["my-secret-token".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("my-secret"), "{e}");
        assert!(
            e.contains("http.token_sha256[0]") && e.contains("15 characters"),
            "{e}"
        );
    }
}
