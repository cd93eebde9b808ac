//! The schema store: every `.avsc` chitose knows, keyed by fingerprint.
//!
//! The shipped schemas are compiled into the binary, so a worker can always
//! decode what chitose itself wrote; [`SchemaStore::from_dir`] loads a folder
//! of `.avsc` files instead (or as well), for schemas added after a release.

use crate::framing::rabin_fingerprint;
use apache_avro::Schema;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `.avsc` files shipped with chitose: (path under `schemas/avro`, text).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "raw/raw_event.v1.avsc",
        include_str!("../avro/raw/raw_event.v1.avsc"),
    ),
    (
        "raw/raw_event.v2.avsc",
        include_str!("../avro/raw/raw_event.v2.avsc"),
    ),
    (
        "raw/raw_event.v3.avsc",
        include_str!("../avro/raw/raw_event.v3.avsc"),
    ),
    (
        "pseudo/encounter.v1.avsc",
        include_str!("../avro/pseudo/encounter.v1.avsc"),
    ),
    (
        "pseudo/encounter.v2.avsc",
        include_str!("../avro/pseudo/encounter.v2.avsc"),
    ),
    (
        "pseudo/encounter.v3.avsc",
        include_str!("../avro/pseudo/encounter.v3.avsc"),
    ),
    (
        "pseudo/diagnosis.v1.avsc",
        include_str!("../avro/pseudo/diagnosis.v1.avsc"),
    ),
    (
        "pseudo/diagnosis.v2.avsc",
        include_str!("../avro/pseudo/diagnosis.v2.avsc"),
    ),
    (
        "pseudo/diagnosis.v3.avsc",
        include_str!("../avro/pseudo/diagnosis.v3.avsc"),
    ),
    (
        "pseudo/diagnosis.v4.avsc",
        include_str!("../avro/pseudo/diagnosis.v4.avsc"),
    ),
    (
        "pseudo/lab_result.v1.avsc",
        include_str!("../avro/pseudo/lab_result.v1.avsc"),
    ),
    (
        "pseudo/lab_result.v2.avsc",
        include_str!("../avro/pseudo/lab_result.v2.avsc"),
    ),
    (
        "pseudo/lab_result.v3.avsc",
        include_str!("../avro/pseudo/lab_result.v3.avsc"),
    ),
    (
        "pseudo/prescription.v1.avsc",
        include_str!("../avro/pseudo/prescription.v1.avsc"),
    ),
    (
        "pseudo/prescription.v2.avsc",
        include_str!("../avro/pseudo/prescription.v2.avsc"),
    ),
    (
        "pseudo/prescription.v3.avsc",
        include_str!("../avro/pseudo/prescription.v3.avsc"),
    ),
    (
        "pseudo/prescription.v4.avsc",
        include_str!("../avro/pseudo/prescription.v4.avsc"),
    ),
    (
        "pseudo/checkup.v1.avsc",
        include_str!("../avro/pseudo/checkup.v1.avsc"),
    ),
    (
        "pseudo/checkup.v2.avsc",
        include_str!("../avro/pseudo/checkup.v2.avsc"),
    ),
    (
        "pseudo/checkup.v3.avsc",
        include_str!("../avro/pseudo/checkup.v3.avsc"),
    ),
    (
        "pseudo/vaccination.v1.avsc",
        include_str!("../avro/pseudo/vaccination.v1.avsc"),
    ),
    (
        "pseudo/vaccination.v2.avsc",
        include_str!("../avro/pseudo/vaccination.v2.avsc"),
    ),
    (
        "pseudo/vaccination.v3.avsc",
        include_str!("../avro/pseudo/vaccination.v3.avsc"),
    ),
    (
        "pseudo/allergy.v1.avsc",
        include_str!("../avro/pseudo/allergy.v1.avsc"),
    ),
    (
        "pseudo/allergy.v2.avsc",
        include_str!("../avro/pseudo/allergy.v2.avsc"),
    ),
    (
        "pseudo/correction.v1.avsc",
        include_str!("../avro/pseudo/correction.v1.avsc"),
    ),
    (
        "pseudo/correction.v2.avsc",
        include_str!("../avro/pseudo/correction.v2.avsc"),
    ),
];

/// Adds every named type (record, enum, fixed) defined in `s` to `out`,
/// keyed by full name, so `Schema::Ref`s can be resolved. The first
/// definition of a name wins.
pub fn named_types(s: &Schema, out: &mut std::collections::HashMap<String, Schema>) {
    match s {
        Schema::Record(r) => {
            out.entry(r.name.fullname(None))
                .or_insert_with(|| s.clone());
            r.fields.iter().for_each(|f| named_types(&f.schema, out));
        }
        Schema::Enum(e) => {
            out.entry(e.name.fullname(None))
                .or_insert_with(|| s.clone());
        }
        Schema::Fixed(x) => {
            out.entry(x.name.fullname(None))
                .or_insert_with(|| s.clone());
        }
        Schema::Union(u) => u.variants().iter().for_each(|v| named_types(v, out)),
        Schema::Array(a) => named_types(&a.items, out),
        Schema::Map(m) => named_types(&m.types, out),
        _ => {}
    }
}

/// Full name of the raw envelope.
pub const RAW_EVENT: &str = "chitose.raw.RawEvent";

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// Reading a file failed.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The text is not a valid Avro schema.
    #[error("{path}: expected a valid Avro schema, found: {message}")]
    Parse {
        /// File.
        path: String,
        /// apache-avro's message.
        message: String,
    },
    /// A top-level schema without a `chitose.version` integer.
    #[error(
        "{path}: expected a top-level record with an integer \"chitose.version\", found {found}"
    )]
    NoVersion {
        /// File.
        path: String,
        /// What was there.
        found: String,
    },
    /// Two files claim the same name and version.
    #[error("{path}: {name} version {version} is already defined by {other}")]
    Duplicate {
        /// File.
        path: String,
        /// Full name.
        name: String,
        /// Version.
        version: u32,
        /// The other file.
        other: String,
    },
}

/// One schema version.
#[derive(Debug)]
pub struct SchemaEntry {
    /// Full name, e.g. `chitose.raw.RawEvent`.
    pub full_name: String,
    /// `chitose.version`.
    pub version: u32,
    /// CRC-64-AVRO fingerprint of the Parsing Canonical Form.
    pub fingerprint: u64,
    /// Parsed schema.
    pub schema: Schema,
    /// The file's text, as shipped (what a registry is sent).
    pub text: String,
    /// Where it came from.
    pub path: String,
}

/// All known schema versions.
#[derive(Debug, Default, Clone)]
pub struct SchemaStore {
    by_fingerprint: BTreeMap<u64, Arc<SchemaEntry>>,
    by_name: BTreeMap<String, BTreeMap<u32, Arc<SchemaEntry>>>,
}

impl SchemaStore {
    /// The schemas compiled into this binary.
    pub fn embedded() -> Self {
        let mut s = SchemaStore::default();
        for (path, text) in EMBEDDED {
            s.add(path, text)
                .expect("shipped schemas are valid (tested)");
        }
        s
    }

    /// Loads every `*.avsc` below `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, SchemaError> {
        let mut s = SchemaStore::default();
        s.add_dir(dir)?;
        Ok(s)
    }

    /// Adds every `*.avsc` below `dir`.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), SchemaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SchemaError::Io { path, source }
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io(dir))?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                self.add_dir(&p)?;
            } else if p.extension().is_some_and(|e| e == "avsc") {
                let text = std::fs::read_to_string(&p).map_err(io(&p))?;
                self.add(&p.display().to_string(), &text)?;
            }
        }
        Ok(())
    }

    /// Adds one schema text; `path` names it in errors.
    pub fn add(&mut self, path: &str, text: &str) -> Result<Arc<SchemaEntry>, SchemaError> {
        let schema = Schema::parse_str(text).map_err(|e| SchemaError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let Schema::Record(r) = &schema else {
            return Err(SchemaError::NoVersion {
                path: path.to_owned(),
                found: "a schema that is not a record".into(),
            });
        };
        let version = match r.attributes.get("chitose.version") {
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| SchemaError::NoVersion {
                    path: path.to_owned(),
                    found: format!("\"chitose.version\": {v}"),
                })?,
            None => {
                return Err(SchemaError::NoVersion {
                    path: path.to_owned(),
                    found: "no \"chitose.version\"".into(),
                });
            }
        };
        let full_name = r.name.fullname(None);
        if let Some(other) = self.by_name.get(&full_name).and_then(|m| m.get(&version)) {
            return Err(SchemaError::Duplicate {
                path: path.to_owned(),
                name: full_name,
                version,
                other: other.path.clone(),
            });
        }
        let canonical = crate::canonical::canonical_form(text).map_err(|e| SchemaError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let fingerprint = rabin_fingerprint(canonical.as_bytes());
        let entry = Arc::new(SchemaEntry {
            full_name: full_name.clone(),
            version,
            fingerprint,
            schema,
            text: text.to_owned(),
            path: path.to_owned(),
        });
        self.by_fingerprint.insert(fingerprint, entry.clone());
        self.by_name
            .entry(full_name)
            .or_default()
            .insert(version, entry.clone());
        Ok(entry)
    }

    /// The schema with this fingerprint.
    pub fn by_fingerprint(&self, fp: u64) -> Option<&Arc<SchemaEntry>> {
        self.by_fingerprint.get(&fp)
    }

    /// The newest version of a full name.
    pub fn latest(&self, full_name: &str) -> Option<&Arc<SchemaEntry>> {
        self.by_name.get(full_name)?.values().next_back()
    }

    /// Every version of a full name, oldest first.
    pub fn versions(&self, full_name: &str) -> Vec<&Arc<SchemaEntry>> {
        self.by_name
            .get(full_name)
            .map(|m| m.values().collect())
            .unwrap_or_default()
    }

    /// Every schema, by name then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SchemaEntry>> {
        self.by_name.values().flat_map(|m| m.values())
    }

    /// Every full name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_schemas_load_with_distinct_fingerprints() {
        let s = SchemaStore::embedded();
        assert_eq!(s.iter().count(), EMBEDDED.len());
        assert_eq!(s.latest(RAW_EVENT).unwrap().version, 3);
        assert_eq!(s.versions(RAW_EVENT).len(), 3);
        for e in s.iter() {
            assert_eq!(s.by_fingerprint(e.fingerprint).unwrap().path, e.path);
        }
    }

    #[test]
    fn fingerprints_are_rabin_of_the_canonical_form() {
        for e in SchemaStore::embedded().iter() {
            let pcf = crate::canonical::canonical_form(&e.text).unwrap();
            assert_eq!(
                e.fingerprint,
                rabin_fingerprint(pcf.as_bytes()),
                "{}",
                e.path
            );
        }
    }

    #[test]
    fn a_folder_with_a_broken_schema_names_the_file() {
        let dir = std::env::temp_dir().join(format!("chitose-schemas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bad.avsc"), r#"{"type": "record", "name": "X"}"#).unwrap();
        let e = SchemaStore::from_dir(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            e.contains("bad.avsc") && e.contains("expected a valid Avro schema"),
            "{e}"
        );
    }
}
