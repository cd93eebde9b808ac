//! Configuration in layers: defaults (in the binary) → TOML file →
//! environment (`CHITOSE_<SECTION>__<KEY>`) → flags. Unknown keys are
//! errors, and every error names the key.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use toml::Value;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: cannot read: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, or a key or value the service does not take.
    #[error("{origin}: {message}")]
    Invalid {
        /// File or environment.
        origin: String,
        /// The TOML/serde message (it names the key).
        message: String,
    },
    /// A value outside what the service accepts.
    #[error("config key {key}: expected {expected}, found {found}")]
    Value {
        /// Dotted key.
        key: String,
        /// What is accepted.
        expected: String,
        /// What was given.
        found: String,
    },
}

impl ConfigError {
    /// `Err(Value { .. })`: what every service's `validate` returns for a
    /// value outside what it accepts.
    pub fn value<T>(key: &str, expected: &str, found: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::Value {
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        })
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Sets a dotted key in a table, creating tables on the way; a table value
/// is merged into a table already there (so a `[kafka]` table from
/// `--kafka-config` layers over the service file's). A key under a plain
/// value (`roll_rows.x` when `roll_rows` is a number) is ignored here; the
/// environment goes through [`try_set`], which refuses it.
pub fn set(root: &mut Value, dotted: &str, v: Value) {
    let _ = try_set(root, dotted, v);
}

/// As [`set`], but a path through a plain value is an error naming the
/// part that is not a table (never a panic: the path comes from an
/// environment variable's name).
pub fn try_set(root: &mut Value, dotted: &str, v: Value) -> Result<(), String> {
    let mut cur = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    let mut walked = Vec::new();
    for p in &parts[..parts.len() - 1] {
        if p.is_empty() {
            return Err("expected KEY or SECTION__KEY, found an empty part (a doubled __)".into());
        }
        walked.push(*p);
        let Some(t) = cur.as_table_mut() else {
            return Err(format!(
                "expected {} to be a section with keys, found a single setting",
                walked[..walked.len() - 1].join(".")
            ));
        };
        cur = t
            .entry(p.to_string())
            .or_insert_with(|| Value::Table(Default::default()));
    }
    let Some(t) = cur.as_table_mut() else {
        return Err(format!(
            "expected {} to be a section with keys, found a single setting",
            walked.join(".")
        ));
    };
    let last = parts[parts.len() - 1];
    if last.is_empty() {
        return Err("expected KEY or SECTION__KEY, found an empty part (a doubled __)".into());
    }
    match t.get_mut(last) {
        Some(slot @ Value::Table(_)) if v.is_table() => merge(slot, v),
        Some(Value::Table(_)) => {
            return Err(format!(
                "expected a key inside section {dotted} (SECTION__KEY), found a value for the section itself"
            ));
        }
        _ => {
            t.insert(last.to_string(), v);
        }
    }
    Ok(())
}

fn get<'a>(root: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(root, |v, k| v.get(k))
}

/// Parses an environment value as the type the key already has (from the
/// defaults or the file), so `27` stays a string where a string is wanted;
/// keys that are not there yet (map entries) take strings.
fn env_value(existing: Option<&Value>, raw: &str) -> Value {
    let literal = || {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    match existing {
        Some(Value::Integer(_))
        | Some(Value::Float(_))
        | Some(Value::Boolean(_))
        | Some(Value::Array(_)) => literal().unwrap_or_else(|| Value::String(raw.to_owned())),
        _ => Value::String(raw.to_owned()),
    }
}

/// Loads `T`: defaults, then `file`, then `CHITOSE_<PREFIX>__A__B=…`
/// variables (`A.B`, lower-cased), then `flags` (dotted key, value).
pub fn load<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&str, Value)>,
) -> Result<T, ConfigError> {
    let mut root = Value::try_from(T::default()).map_err(|e| ConfigError::Invalid {
        origin: "defaults".into(),
        message: e.to_string(),
    })?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let v: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            origin: format!("config file {}", path.display()),
            message: toml_message(&text, &e),
        })?;
        // Deserialize the file alone first, so an unknown key is reported
        // against the file, with its line.
        toml::from_str::<T>(&text).map_err(|e| ConfigError::Invalid {
            origin: format!("config file {}", path.display()),
            message: toml_message(&text, &e),
        })?;
        merge(&mut root, Value::Table(v));
    }
    let prefix = format!("CHITOSE_{}__", env_prefix.to_uppercase());
    // Every malformed variable is reported, all at once, by name (never
    // by value: it may be a secret).
    let mut bad = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix(&prefix) {
            let dotted = rest.to_lowercase().replace("__", ".");
            let value = env_value(get(&root, &dotted), &v);
            if let Err(e) = try_set(&mut root, &dotted, value) {
                bad.push(format!("{k}: {e}"));
            }
        }
    }
    if !bad.is_empty() {
        return Err(ConfigError::Invalid {
            origin: "environment".into(),
            message: bad.join("; "),
        });
    }
    for (k, v) in flags {
        set(&mut root, k, v);
    }
    T::deserialize(root).map_err(|e| ConfigError::Invalid {
        origin: "configuration (file, environment and flags)".into(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// A TOML error as `line L column C: message`, without the quoted source
/// line that `toml`'s own rendering shows: that line can hold a password.
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before.len() - start + 1;
            // serde's messages quote the value ("invalid type: string
            // \"…\""): on a secret key's line, say only where.
            let this_line = text[start..].lines().next().unwrap_or("");
            let key = this_line.split('=').next().unwrap_or("");
            if crate::secret::is_secret_key(key) {
                format!(
                    "line {line} column {column}: the value of {} is not valid (not shown: secret)",
                    key.trim()
                )
            } else {
                format!("line {line} column {column}: {message}")
            }
        }
        None => message.to_owned(),
    }
}

/// Renders a config as TOML with every secret value (a key that
/// [`is_secret_key`](crate::secret::is_secret_key) names, at any depth)
/// replaced by `"***"`. Keys ending in `_file`/`_files` hold paths, which
/// are shown.
pub fn print_redacted<T: Serialize>(cfg: &T) -> String {
    let mut v = Value::try_from(cfg).expect("configs serialize");
    fn walk(v: &mut Value, path: &str) {
        if let Value::Table(t) = v {
            for (k, x) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.ends_with("_file") || k.ends_with("_files") {
                    continue;
                }
                if crate::secret::is_secret_key(&p) {
                    *x = match x {
                        Value::Table(inner) => Value::Table(
                            inner
                                .keys()
                                .map(|k| (k.clone(), Value::String("***".into())))
                                .collect(),
                        ),
                        _ => Value::String("***".into()),
                    };
                } else {
                    walk(x, &p);
                }
            }
        }
    }
    walk(&mut v, "");
    toml::to_string_pretty(&v).expect("TOML renders")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        port: u16,
        name: String,
    }

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        inner: Inner,
        tokens: BTreeMap<String, String>,
    }

    fn file(text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "chitose-cfg-{}.toml",
            std::process::id() as u64 * 1000 + text.len() as u64
        ));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn layers_apply_in_order() {
        let p = file("[inner]\nport = 1\nname = \"file\"\n");
        let env = vec![
            ("CHITOSE_X__INNER__PORT".to_string(), "2".to_string()),
            ("CHITOSE_X__TOKENS__27".to_string(), "1234".to_string()),
            ("OTHER".into(), "x".into()),
        ];
        let c: Cfg = load(
            Some(&p),
            "x",
            env,
            vec![("inner.name", Value::String("flag".into()))],
        )
        .unwrap();
        assert_eq!(
            c.inner,
            Inner {
                port: 2,
                name: "flag".into()
            }
        );
        // A numeric-looking value stays a string where strings go.
        assert_eq!(c.tokens["27"], "1234");
    }

    #[test]
    fn unknown_and_wrong_keys_are_named() {
        let p = file("[inner]\nprot = 1\n");
        let e = load::<Cfg>(Some(&p), "x", vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `prot`") && e.contains("line 2"),
            "{e}"
        );
        let env = vec![("CHITOSE_X__INNER__PORT".to_string(), "many".to_string())];
        let e = load::<Cfg>(None, "x", env, vec![]).unwrap_err().to_string();
        assert!(e.contains("invalid type") && e.contains("port"), "{e}");
    }

    #[test]
    fn malformed_variables_are_all_named_at_once_and_never_panic() {
        // On main the first panicked (`expect("tables on the path")`) and
        // the second was ignored without a word.
        let env = vec![
            ("CHITOSE_X__INNER__PORT__X".to_string(), "1".to_string()),
            ("CHITOSE_X__INNER".to_string(), "secret-looking".to_string()),
            ("CHITOSE_X__INNER____NAME".to_string(), "y".to_string()),
        ];
        let e = load::<Cfg>(None, "x", env, vec![]).unwrap_err().to_string();
        for name in [
            "CHITOSE_X__INNER__PORT__X: expected inner.port to be a section",
            "CHITOSE_X__INNER: expected a key inside section inner",
            "CHITOSE_X__INNER____NAME: expected KEY or SECTION__KEY, found an empty part",
        ] {
            assert!(e.contains(name), "{name} in {e}");
        }
        assert!(!e.contains("secret-looking"), "{e}");
    }

    #[test]
    fn secrets_are_hidden() {
        let mut c = Cfg::default();
        c.tokens.insert("27".into(), "s3cr3t-token".into());
        let out = print_redacted(&c);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(out.contains("27") && out.contains("***"), "{out}");
    }

    #[test]
    fn a_toml_error_does_not_quote_the_line() {
        let p = file("[inner]\nname = \"x\"\npassword = \"hunter2\" trailing\n");
        let e = load::<Cfg>(Some(&p), "x", vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }
}
