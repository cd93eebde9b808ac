//! Configuration in layers: defaults (in the binary) → TOML file →
//! environment (`CHITOSE_<SECTION>__<KEY>`) → flags. Unknown keys are
//! errors, and every error names the key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
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
    /// Every problem found, reported together (file, environment, flags
    /// and the service's own checks), so an operator fixes them in one go.
    #[error("{}", render_many(.0))]
    Many(Vec<ConfigError>),
}

fn render_many(all: &[ConfigError]) -> String {
    let mut out = format!("{} problems with the configuration:", all.len());
    for e in all {
        out.push_str("\n  - ");
        out.push_str(&e.to_string());
    }
    out
}

/// Problems collected while checking a configuration, reported at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    /// A value outside what the service accepts.
    pub fn value(&mut self, key: &str, expected: &str, found: impl Into<String>) {
        self.0.push(ConfigError::Value {
            key: key.into(),
            expected: expected.into(),
            found: found.into(),
        });
    }

    /// Any problem (a `Many` is taken apart).
    pub fn push(&mut self, e: ConfigError) {
        match e {
            ConfigError::Many(all) => self.0.extend(all),
            e => self.0.push(e),
        }
    }

    /// `Ok` when nothing was found; the one problem; or all of them.
    pub fn into_result(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

/// A service configuration's own checks (ranges, paths, combinations),
/// made after it loaded; every problem is reported, not the first.
pub trait Validate {
    /// Adds every problem found to `p`.
    fn problems(&self, p: &mut Problems);

    /// `Ok`, or every problem found.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        self.problems(&mut p);
        p.into_result()
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
/// variables (`A.B`, lower-cased), then `flags` (dotted key, value). Every
/// problem is reported at once: each bad key of the file with its line,
/// each bad variable by name, then what the layers make together.
pub fn load<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&str, Value)>,
) -> Result<T, ConfigError> {
    let mut p = Problems::default();
    let t: Option<T> = load_collecting(file, env_prefix, env, flags, &mut p)?;
    loaded(t, p)
}

/// As [`load`], then the service's own checks on what loaded (bad values
/// set aside for their defaults, so those checks still run): one error
/// listing every problem.
pub fn load_checked<T: DeserializeOwned + Serialize + Default + Validate>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&str, Value)>,
) -> Result<T, ConfigError> {
    let mut p = Problems::default();
    let t: Option<T> = load_collecting(file, env_prefix, env, flags, &mut p)?;
    if let Some(t) = &t {
        t.problems(&mut p);
    }
    loaded(t, p)
}

/// What loaded, unless a problem was found.
fn loaded<T>(t: Option<T>, p: Problems) -> Result<T, ConfigError> {
    p.into_result()?;
    t.ok_or_else(|| ConfigError::Invalid {
        origin: "configuration".into(),
        message: "expected a complete configuration, found one that does not load".into(),
    })
}

/// Whether dotted `path` is `key` or lies inside it.
fn under(path: &str, key: &str) -> bool {
    path == key
        || path
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// A bound on the problems one configuration reports (and on the retries
/// that find them).
const MAX_PROBLEMS: usize = 64;

/// Loads what it can, adding every problem to `p`; an entry with a
/// problem is set aside (its default stands) so the rest is still
/// checked. `Err` only when the defaults themselves do not load.
fn load_collecting<T: DeserializeOwned + Serialize + Default>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
    flags: Vec<(&str, Value)>,
    p: &mut Problems,
) -> Result<Option<T>, ConfigError> {
    let mut root = Value::try_from(T::default()).map_err(|e| ConfigError::Invalid {
        origin: "defaults".into(),
        message: e.to_string(),
    })?;
    if let Some(path) = file {
        match std::fs::read_to_string(path) {
            Err(source) => p.push(ConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
            Ok(text) => {
                if let Some(v) =
                    file_layer::<T>(&text, &format!("config file {}", path.display()), p)
                {
                    merge(&mut root, v);
                }
            }
        }
    }
    let prefix = format!("CHITOSE_{}__", env_prefix.to_uppercase());
    // Every malformed variable is reported, all at once, by name (never
    // by value: it may be a secret).
    let mut from_env: Vec<(String, String)> = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (k, v) in env {
        if let Some(rest) = k.strip_prefix(&prefix) {
            let dotted = rest.to_lowercase().replace("__", ".");
            let value = env_value(get(&root, &dotted), &v);
            match try_set(&mut root, &dotted, value) {
                Ok(()) => from_env.push((dotted, k)),
                Err(e) => p.push(ConfigError::Invalid {
                    origin: "environment".into(),
                    message: format!("{k}: {e}"),
                }),
            }
        }
    }
    let mut from_flags: Vec<String> = Vec::new();
    for (k, v) in flags {
        // A flag overrides the variable for the same key: a problem with
        // it is the flag's.
        from_env.retain(|(dotted, _)| !under(dotted, k));
        from_flags.push(k.to_owned());
        set(&mut root, k, v);
    }
    // What the layers make together; each bad entry is named (by its
    // variable when the environment set it), set aside, and the rest
    // tried again.
    for _ in 0..MAX_PROBLEMS {
        match serde_path_to_error::deserialize::<_, T>(root.clone()) {
            Ok(t) => return Ok(Some(t)),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().message().trim_end().to_owned();
                let var = from_env
                    .iter()
                    .find(|(dotted, _)| under(&path, dotted))
                    .map(|(_, var)| var.clone());
                p.push(match var {
                    Some(var) if crate::secret::is_secret_key(&path) => ConfigError::Invalid {
                        origin: "environment".into(),
                        message: format!("{var}: the value is not valid (not shown: secret)"),
                    },
                    Some(var) => ConfigError::Invalid {
                        origin: "environment".into(),
                        message: format!("{var}: {message}"),
                    },
                    None if from_flags.iter().any(|k| under(&path, k)) => ConfigError::Invalid {
                        origin: "command line".into(),
                        message: format!("the flag for {path}: {message}"),
                    },
                    None => ConfigError::Invalid {
                        origin: "configuration (file, environment and flags)".into(),
                        message: if path.is_empty() || path == "." {
                            message
                        } else {
                            format!("{path}: {message}")
                        },
                    },
                });
                if path.is_empty() || path == "." || !remove_path(&mut root, &path) {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// The file as a layer: every key it has that `T` does not take, or
/// whose value is of the wrong kind, is a problem with its line, and is
/// left out; the rest is returned.
fn file_layer<T: DeserializeOwned>(text: &str, origin: &str, p: &mut Problems) -> Option<Value> {
    let mut doc = match toml::de::DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            p.push(ConfigError::Invalid {
                origin: origin.into(),
                message: toml_message(text, &e),
            });
            return None;
        }
    };
    for _ in 0..MAX_PROBLEMS {
        let Err(mut e) = T::deserialize(toml::de::Deserializer::from(doc.clone())) else {
            break;
        };
        e.set_input(Some(text));
        p.push(ConfigError::Invalid {
            origin: origin.into(),
            message: toml_message(text, &e),
        });
        let span = e.span()?;
        if !remove_spanned(doc.get_mut(), span.start) {
            return None;
        }
    }
    Value::deserialize(toml::de::Deserializer::from(doc)).ok()
}

/// Removes the entry (at any depth) whose key or value holds byte `pos`
/// of the file; false when none does.
fn remove_spanned(t: &mut toml::de::DeTable<'_>, pos: usize) -> bool {
    let covers = |s: std::ops::Range<usize>| s.start <= pos && pos < s.end.max(s.start + 1);
    let mut hit = None;
    for (k, v) in t.iter_mut() {
        if let toml::de::DeValue::Table(inner) = v.get_mut()
            && remove_spanned(inner, pos)
        {
            return true;
        }
        if covers(k.span()) || covers(v.span()) {
            hit = Some(k.clone());
            break;
        }
    }
    match hit {
        Some(k) => t.remove(&k).is_some(),
        None => false,
    }
}

/// Removes a dotted path (as serde_path_to_error prints it) from a table;
/// false when it is not there.
fn remove_path(root: &mut Value, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let mut cur = root;
    for part in &parts[..parts.len() - 1] {
        match cur.get_mut(*part) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    // An index into an array (`files.csv.columns[2]`) removes the array.
    let last = parts[parts.len() - 1];
    let key = last.split('[').next().unwrap_or(last);
    cur.as_table_mut().is_some_and(|t| t.remove(key).is_some())
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
            } else if this_line.contains('=') && !message.contains(key.trim()) {
                // serde names the type, not the key: name it.
                format!("line {line} column {column}: {}: {message}", key.trim())
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

/// Durations in configuration are written with their unit (`"60s"`,
/// `"250ms"`, `"5m"`, `"1h 30m"`), parsed by `humantime`: a bare number of
/// unknown unit is the mistake this prevents (`roll_age = 60` meant as
/// seconds, read as milliseconds). Use as `#[serde(with =
/// "chitose_runtime::config::duration")]` on a `std::time::Duration`.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// What a duration setting looks like, for error messages.
    pub const EXPECTED: &str = "a duration with its unit, such as \"60s\", \"250ms\" or \"5m\"";

    /// Parses `"60s"`-style text.
    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("expected {EXPECTED}, found text that is not one ({e})"))
    }

    /// Renders the way [`parse`] reads it (`1m 30s`, `250ms`).
    pub fn render(d: &Duration) -> String {
        humantime::format_duration(*d).to_string()
    }

    /// serde: as [`render`] writes it.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&render(d))
    }

    /// serde: text as [`parse`] reads it; a bare number is refused (its
    /// unit is unknown) unless it is 0.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
            Fraction(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
            // Zero is zero in every unit ("0 = never" settings).
            Raw::Number(0) => Ok(Duration::ZERO),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "expected {EXPECTED}, found the bare number {n} (which unit?)"
            ))),
            Raw::Fraction(n) => Err(serde::de::Error::custom(format!(
                "expected {EXPECTED}, found the bare number {n} (which unit?)"
            ))),
        }
    }
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

    impl Validate for Cfg {
        fn problems(&self, p: &mut Problems) {
            if self.inner.name.is_empty() {
                p.value("inner.name", "a name", "an empty string");
            }
        }
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
        assert!(
            e.contains("invalid type") && e.contains("CHITOSE_X__INNER__PORT"),
            "{e}"
        );
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
    fn every_problem_of_file_environment_and_checks_is_reported_at_once() {
        // Line 2: wrong type; line 3: unknown key; line 5: unknown
        // section. The name stays empty, so the check fails too.
        let p = file("[inner]\nport = \"eighty\"\nprot = 1\n\n[nope]\nx = 1\n");
        let env = vec![
            ("CHITOSE_Y__INNER__PORT__X".to_string(), "1".to_string()),
            ("CHITOSE_Y__TOKENS".to_string(), "a".to_string()),
            ("CHITOSE_Y__INNER__COLOUR".to_string(), "blue".to_string()),
        ];
        let e = load_checked::<Cfg>(Some(&p), "y", env, vec![]).unwrap_err();
        let ConfigError::Many(all) = &e else {
            panic!("expected every problem, found one: {e}");
        };
        let text = e.to_string();
        for needle in [
            "problems with the configuration",
            "line 2",
            "line 3",
            "unknown field `prot`",
            "line 5",
            "unknown field `nope`",
            "CHITOSE_Y__INNER__PORT__X: expected inner.port to be a section",
            "CHITOSE_Y__TOKENS",
            "CHITOSE_Y__INNER__COLOUR: unknown field `colour`",
            "config key inner.name: expected a name",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(all.len(), 7, "{text}");
        // With the problems gone, the same layers load.
        let p = file("[inner]\nport = 80\nname = \"n\"\n");
        let c = load_checked::<Cfg>(Some(&p), "y", vec![], vec![]).unwrap();
        assert_eq!(c.inner.port, 80);
    }

    #[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Timed {
        #[serde(with = "duration")]
        roll_age: std::time::Duration,
    }

    impl Default for Timed {
        fn default() -> Self {
            Timed {
                roll_age: std::time::Duration::from_secs(60),
            }
        }
    }

    #[test]
    fn durations_take_units_and_refuse_bare_numbers() {
        use std::time::Duration;
        let load_one = |text: &str, env: Vec<(String, String)>| {
            load::<Timed>(Some(&file(text)), "T", env, vec![])
        };
        assert_eq!(
            load_one("roll_age = \"1m 30s\"\n", vec![])
                .unwrap()
                .roll_age,
            Duration::from_secs(90)
        );
        assert_eq!(
            load_one("", vec![("CHITOSE_T__ROLL_AGE".into(), "250ms".into())])
                .unwrap()
                .roll_age,
            Duration::from_millis(250)
        );
        let half = load_one("roll_age = 0.5\n", vec![])
            .unwrap_err()
            .to_string();
        assert!(half.contains("bare number 0.5"), "{half}");
        let bare = load_one("roll_age = 60\n", vec![]).unwrap_err().to_string();
        assert!(
            bare.contains("roll_age") && bare.contains("bare number 60"),
            "{bare}"
        );
        assert!(bare.contains("line 1"), "the file's line: {bare}");
        let typo = load_one(
            "",
            vec![("CHITOSE_T__ROLL_AGE".into(), "60 sec0nds".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            typo.contains("CHITOSE_T__ROLL_AGE") && typo.contains("with its unit"),
            "{typo}"
        );
        // The defaults render the way they parse (`--print-config` output is
        // a valid file).
        let printed = print_redacted(&Timed::default());
        assert!(printed.contains("roll_age = \"1m\""), "{printed}");
        assert_eq!(duration::parse("1m").unwrap(), Duration::from_secs(60));
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
