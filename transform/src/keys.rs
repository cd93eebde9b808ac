//! Pseudonym and date-shift keys: loaded from files or the environment,
//! never logged, at least 32 bytes, several at once so keys can rotate.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Shortest key accepted (HMAC-SHA256 wants at least its output size).
pub const MIN_KEY_BYTES: usize = 32;

/// Where keys come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Folder of `<key_id>.key` files (raw bytes, or hex / base64 text).
    pub dir: Option<PathBuf>,
    /// Key id used for new pseudonyms; the others are loaded for rotation.
    pub current: String,
    /// Key id of the date-shift key (profiles with `date_shift.max_days` > 0).
    pub date_shift: String,
    /// Key id of the event-id key: the hub's event id leaves the transform
    /// only as an HMAC under it.
    pub event_id: String,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            dir: Some(PathBuf::from("./keys")),
            current: "pseudonym-2026a".into(),
            date_shift: "date-2026a".into(),
            event_id: "event-2026a".into(),
        }
    }
}

impl KeysConfig {
    /// The key ids a transform needs: (role, id). The date key only when a
    /// profile shifts dates.
    pub fn needed(&self, date_key: bool) -> Vec<(&'static str, &str)> {
        let mut v = vec![("current", self.current.as_str())];
        if date_key {
            v.push(("date_shift", self.date_shift.as_str()));
        }
        v.push(("event_id", self.event_id.as_str()));
        v
    }
}

/// A key problem; never carries key material.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum KeyError {
    /// The current or date key is not loaded.
    #[error(
        "keys.{role}: expected key {id:?} in {where_} (a file {id}.key or env CHITOSE_KEY_{env}), found none; create one with `chitose transform keygen`"
    )]
    Missing {
        /// `current` or `date_shift`.
        role: &'static str,
        /// Key id.
        id: String,
        /// Env var suffix.
        env: String,
        /// Folder searched.
        where_: String,
    },
    /// A key is too short.
    #[error("key {id:?}: expected at least {MIN_KEY_BYTES} bytes, found {len}")]
    TooShort {
        /// Key id.
        id: String,
        /// Its length.
        len: usize,
    },
    /// Two roles share one key, or two ids hold the same bytes: whoever
    /// holds one could then compute the other's values.
    #[error(
        "keys.{role}: expected key {id:?} to differ from key {other:?} ({other_role}), found the same {what}; create a separate key with `chitose transform keygen`"
    )]
    Shared {
        /// Role of the key.
        role: &'static str,
        /// Its id.
        id: String,
        /// The other key's role.
        other_role: &'static str,
        /// The other key's id.
        other: String,
        /// `id` or `bytes`.
        what: &'static str,
    },
    /// A key file cannot be read.
    #[error("key file {path}: {message}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        message: String,
    },
}

/// Loaded keys, by id.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<String, Hmac<Sha256>>,
    current: String,
    date_shift: Option<(String, Hmac<Sha256>)>,
    event_id: (String, Hmac<Sha256>),
    /// The pseudonym keys (the current one and any kept for a rotation:
    /// every key but the date-shift and event-id keys) in id order,
    /// each marked whether it is the current one: every record makes its
    /// linkage pseudonyms under each, so they are listed once here rather
    /// than found by id per record.
    pseudonym: Vec<(bool, Hmac<Sha256>)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: key material never reaches a log.
        f.debug_struct("KeyRing")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

fn env_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Key text → bytes: hex when it is all hex digits, else base64 when it
/// decodes, else the raw bytes.
fn key_bytes(raw: &[u8]) -> Vec<u8> {
    let t = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
    if !t.is_empty() && t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).expect("hex checked"))
            .collect();
    }
    if let Some(b) = base64_decode(t) {
        return b;
    }
    raw.to_vec()
}

fn base64_decode(t: &str) -> Option<Vec<u8>> {
    let t = t.trim_end_matches('=');
    if t.is_empty() || t.len() < 40 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in t.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

impl KeyRing {
    /// Loads every key in `cfg.dir` and every `CHITOSE_KEY_<ID>` in `env`,
    /// then checks the current (and, when `need_date_key`, the date) key.
    pub fn load(
        cfg: &KeysConfig,
        env: impl IntoIterator<Item = (String, String)>,
        need_date_key: bool,
    ) -> Result<KeyRing, KeyError> {
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(dir) = &cfg.dir
            && dir.is_dir()
        {
            let entries = std::fs::read_dir(dir).map_err(|e| KeyError::Read {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "key")
                    && let Some(id) = p.file_stem().and_then(|s| s.to_str())
                {
                    // A key others can read is as good as published.
                    chitose_runtime::private::check_secret_file(&p).map_err(|e| {
                        KeyError::Read {
                            path: p.display().to_string(),
                            message: e.to_string(),
                        }
                    })?;
                    let bytes = std::fs::read(&p).map_err(|e| KeyError::Read {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                    raw.insert(id.to_owned(), key_bytes(&bytes));
                }
            }
        }
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for id in [&cfg.current, &cfg.date_shift, &cfg.event_id] {
            if let Some(v) = env.get(&format!("CHITOSE_KEY_{}", env_name(id))) {
                raw.insert(id.clone(), key_bytes(v.as_bytes()));
            }
        }
        KeyRing::from_bytes(raw, cfg, need_date_key)
    }

    /// From key bytes by id (tests, `chitose up`).
    pub fn from_bytes(
        raw: BTreeMap<String, Vec<u8>>,
        cfg: &KeysConfig,
        need_date_key: bool,
    ) -> Result<KeyRing, KeyError> {
        let where_ = cfg
            .dir
            .as_ref()
            .map_or("the environment".into(), |d| d.display().to_string());
        let missing = |role, id: &str| KeyError::Missing {
            role,
            id: id.to_owned(),
            env: env_name(id),
            where_: where_.clone(),
        };
        let mut keys = BTreeMap::new();
        for (id, k) in &raw {
            if k.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort {
                    id: id.clone(),
                    len: k.len(),
                });
            }
            keys.insert(
                id.clone(),
                Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length"),
            );
        }
        if !keys.contains_key(&cfg.current) {
            return Err(missing("current", &cfg.current));
        }
        let date_shift = match keys.get(&cfg.date_shift) {
            Some(k) => Some((cfg.date_shift.clone(), k.clone())),
            None if need_date_key => return Err(missing("date_shift", &cfg.date_shift)),
            None => None,
        };
        let Some(event_key) = keys.get(&cfg.event_id) else {
            return Err(missing("event_id", &cfg.event_id));
        };
        let event_id = (cfg.event_id.clone(), event_key.clone());
        // Separate keys, separate bytes: the date key must not be one that
        // made pseudonyms (now or before a rotation), and the event-id key
        // neither; otherwise one leaked key undoes two protections.
        let roles = cfg.needed(date_shift.is_some());
        for (i, (role, id)) in roles.iter().enumerate() {
            for (other_role, other) in &roles[..i] {
                if id == other {
                    return Err(KeyError::Shared {
                        role,
                        id: (*id).to_owned(),
                        other_role,
                        other: (*other).to_owned(),
                        what: "id",
                    });
                }
            }
            if *role == "current" {
                continue;
            }
            let mine = &raw[*id];
            if let Some((other, _)) = raw.iter().find(|(o, b)| o.as_str() != *id && *b == mine) {
                let other_role = roles
                    .iter()
                    .find(|(_, r)| *r == other.as_str())
                    .map_or("a pseudonym key", |(r, _)| r);
                return Err(KeyError::Shared {
                    role,
                    id: (*id).to_owned(),
                    other_role,
                    other: other.clone(),
                    what: "bytes",
                });
            }
        }
        let pseudonym = keys
            .iter()
            .filter(|(id, _)| {
                Some(id.as_str()) != date_shift.as_ref().map(|(d, _)| d.as_str())
                    && id.as_str() != event_id.0
            })
            .map(|(id, k)| (*id == cfg.current, k.clone()))
            .collect();
        Ok(KeyRing {
            keys,
            current: cfg.current.clone(),
            date_shift,
            event_id,
            pseudonym,
        })
    }

    /// Id of the key new pseudonyms are made with.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Ids loaded.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// HMAC-SHA256 of `data` under key `id`.
    pub fn mac(&self, id: &str, parts: &[&[u8]]) -> Option<[u8; 32]> {
        Some(mac_with(self.keys.get(id)?, parts))
    }

    /// HMAC under the current key.
    pub fn mac_current(&self, parts: &[&[u8]]) -> [u8; 32] {
        let (_, k) = self
            .pseudonym
            .iter()
            .find(|(current, _)| *current)
            .expect("current key checked at load");
        mac_with(k, parts)
    }

    /// Appends to `out` the HMAC of the parts under every pseudonym key,
    /// the current one only if `with_current`.
    pub fn pseudonym_macs(&self, parts: &[&[u8]], with_current: bool, out: &mut Vec<[u8; 32]>) {
        for (current, k) in &self.pseudonym {
            if with_current || !current {
                out.push(mac_with(k, parts));
            }
        }
    }

    /// HMAC under the date-shift key, when loaded.
    pub fn mac_date(&self, parts: &[&[u8]]) -> Option<[u8; 32]> {
        Some(mac_with(&self.date_shift.as_ref()?.1, parts))
    }

    /// Id of the date-shift key, when loaded.
    pub fn date_id(&self) -> Option<&str> {
        self.date_shift.as_ref().map(|(id, _)| id.as_str())
    }

    /// HMAC under the event-id key.
    pub fn mac_event(&self, parts: &[&[u8]]) -> [u8; 32] {
        mac_with(&self.event_id.1, parts)
    }

    /// Id of the event-id key.
    pub fn event_id_key(&self) -> &str {
        &self.event_id.0
    }
}

/// HMAC-SHA256 of the parts, in order, under `key` (its pads already
/// hashed: a clone, not a key schedule, per message).
fn mac_with(key: &Hmac<Sha256>, parts: &[&[u8]]) -> [u8; 32] {
    let mut m = key.clone();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A fresh random key as hex, for `chitose transform keygen`.
pub fn generate_hex() -> String {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KeysConfig {
        KeysConfig {
            dir: None,
            current: "k1".into(),
            date_shift: "d1".into(),
            event_id: "e1".into(),
        }
    }

    #[test]
    fn refuses_a_missing_or_short_key_and_never_shows_key_material() {
        let e = KeyRing::from_bytes(BTreeMap::new(), &cfg(), false).unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::Missing {
                    role: "current",
                    ..
                }
            ),
            "{e}"
        );
        let short =
            BTreeMap::from([("k1".to_owned(), b"0123456789abcdef0123456789abcde".to_vec())]);
        let e = KeyRing::from_bytes(short, &cfg(), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key \"k1\": expected at least 32 bytes, found 31"
        );
        let ok = BTreeMap::from([
            ("k1".to_owned(), vec![7u8; 32]),
            ("e1".to_owned(), vec![8u8; 32]),
        ]);
        let e = KeyRing::from_bytes(ok.clone(), &cfg(), true).unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::Missing {
                    role: "date_shift",
                    ..
                }
            ),
            "{e}"
        );
        let ring = KeyRing::from_bytes(ok, &cfg(), false).unwrap();
        assert!(!format!("{ring:?}").contains("7, 7"), "{ring:?}");
    }

    #[test]
    fn each_role_has_its_own_key_and_bytes() {
        let k = |b: u8| vec![b; 32];
        // The date key may not be the pseudonym key, under its id or as a copy.
        let same_id = KeysConfig {
            date_shift: "k1".into(),
            ..cfg()
        };
        let e = KeyRing::from_bytes(
            BTreeMap::from([("k1".into(), k(1)), ("e1".into(), k(2))]),
            &same_id,
            true,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                KeyError::Shared {
                    role: "date_shift",
                    what: "id",
                    ..
                }
            ),
            "{e}"
        );
        for (ids, role) in [
            // date key = current key's bytes
            ([("k1", 1), ("d1", 1), ("e1", 3)], "date_shift"),
            // date key = an older pseudonym key's bytes
            ([("old", 2), ("d1", 2), ("e1", 3)], "date_shift"),
            // event key = current key's bytes
            ([("k1", 1), ("d1", 2), ("e1", 1)], "event_id"),
        ] {
            let mut raw: BTreeMap<String, Vec<u8>> =
                ids.iter().map(|(i, b)| ((*i).to_owned(), k(*b))).collect();
            raw.entry("k1".into()).or_insert(k(9));
            let e = KeyRing::from_bytes(raw, &cfg(), true).unwrap_err();
            assert!(
                matches!(&e, KeyError::Shared { role: r, what: "bytes", .. } if *r == role),
                "{e}"
            );
            assert!(!e.to_string().contains("0101"), "{e}");
        }
        let ok = BTreeMap::from([
            ("k1".into(), k(1)),
            ("d1".into(), k(2)),
            ("e1".into(), k(3)),
        ]);
        let ring = KeyRing::from_bytes(ok, &cfg(), true).unwrap();
        assert_eq!(ring.date_id(), Some("d1"));
        assert_eq!(ring.event_id_key(), "e1");
    }

    #[test]
    fn key_files_and_env_load_hex_base64_and_raw() {
        let dir = std::env::temp_dir().join(format!("chitose-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("k1.key"), format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::write(dir.join("old.key"), [9u8; 40]).unwrap();
        let c = KeysConfig {
            dir: Some(dir.clone()),
            ..cfg()
        };
        let env = vec![
            ("CHITOSE_KEY_D1".to_owned(), "cd".repeat(32)),
            ("CHITOSE_KEY_E1".to_owned(), "ef".repeat(32)),
        ];
        // A key file others can read is refused, naming the file.
        {
            use std::os::unix::fs::PermissionsExt;
            let owner = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.join("old.key"), owner).unwrap();
            let open = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(dir.join("k1.key"), open).unwrap();
            let e = KeyRing::load(&c, env.clone(), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("k1.key") && e.contains("chmod 600"), "{e}");
            let owner = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.join("k1.key"), owner).unwrap();
        }
        let ring = KeyRing::load(&c, env, true).unwrap();
        assert_eq!(ring.ids().collect::<Vec<_>>(), ["d1", "e1", "k1", "old"]);
        // Hex was decoded: the MAC equals one keyed with the 32 bytes.
        let direct = KeyRing::from_bytes(
            BTreeMap::from([("k1".into(), vec![0xab; 32]), ("e1".into(), vec![1; 32])]),
            &cfg(),
            false,
        )
        .unwrap()
        .mac_current(&[b"x"]);
        assert_eq!(ring.mac_current(&[b"x"]), direct);
        assert_ne!(ring.mac("old", &[b"x"]).unwrap(), direct);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
