//! The pure sink core: framed Avro messages → Arrow record batches, split by
//! lake partition, with replays dropped. No Kafka, no object store.
//!
//! Decoding is arrow-avro's streaming [`Decoder`] fed our own schema store
//! (our fingerprints: see `chitose_schemas::canonical` for why they are
//! computed by chitose), so each message goes straight into Arrow columns.

use arrow_array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, SchemaStore as AvroStore};
use arrow_schema::SchemaRef;
use chitose_schemas::catalog::SchemaStore;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why a message cannot be decoded or landed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CoreError {
    /// Not SOE framed.
    #[error(
        "message at offset {offset}: expected a single-object-encoded Avro record (C3 01 + fingerprint), found {found}"
    )]
    Framing {
        /// Kafka offset.
        offset: i64,
        /// What was there.
        found: String,
    },
    /// A Confluent schema id the sink has not mapped to a known schema.
    #[error(
        "message at offset {offset}: expected a registry schema id of a known table schema, found {id}; set registry_url or add the schema to schemas_dir"
    )]
    UnknownSchemaId {
        /// Kafka offset.
        offset: i64,
        /// The registry id.
        id: u32,
    },
    /// A fingerprint the sink has no schema for.
    #[error(
        "message at offset {offset}: expected the fingerprint of a known table schema, found {fingerprint:016x}; add its .avsc to schemas_dir"
    )]
    UnknownSchema {
        /// Kafka offset.
        offset: i64,
        /// The fingerprint.
        fingerprint: u64,
    },
    /// A schema version that cannot share a table with the others.
    #[error(
        "schema {fingerprint:016x} ({name} v{version}) is incompatible with the table: {reason}"
    )]
    Incompatible {
        /// Fingerprint.
        fingerprint: u64,
        /// Record name.
        name: String,
        /// Version.
        version: u32,
        /// Which column and how.
        reason: String,
    },
    /// The Avro body does not decode.
    #[error("message at offset {offset}: {message}")]
    Decode {
        /// Kafka offset.
        offset: i64,
        /// arrow-avro's message (no datum values).
        message: String,
    },
    /// A partition column is missing or null.
    #[error(
        "row at offset {offset}: expected partition column {column} to be a non-null string, found {found}"
    )]
    Partition {
        /// Kafka offset.
        offset: i64,
        /// Column.
        column: String,
        /// What was found.
        found: String,
    },
}

/// One decoded chunk: rows of one schema, with each row's Kafka offset.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The rows.
    pub batch: RecordBatch,
    /// Kafka offset of each row.
    pub offsets: Vec<i64>,
    /// Schema fingerprint of the rows.
    pub fingerprint: u64,
}

/// Table schemas the sink knows, and arrow-avro decoding for them.
pub struct Schemas {
    store: AvroStore,
    /// fingerprint → Ok(()) or why it may not be landed.
    compat: HashMap<u64, Result<(), CoreError>>,
    names: HashMap<u64, (String, u32)>,
    arrow: HashMap<u64, SchemaRef>,
    confluent: HashMap<u32, u64>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("known", &self.names.len())
            .finish()
    }
}

/// Columns two versions of a table disagree on, if any: a column with
/// another type, or a required column one version lacks.
fn incompatibility(a: &SchemaRef, b: &SchemaRef) -> Option<String> {
    for fa in a.fields() {
        match b.field_with_name(fa.name()) {
            Ok(fb) if fb.data_type() != fa.data_type() => {
                return Some(format!(
                    "column {} is {} in one version and {} in another",
                    fa.name(),
                    fa.data_type(),
                    fb.data_type()
                ));
            }
            Err(_) if !fa.is_nullable() => {
                return Some(format!(
                    "required column {} is missing from another version",
                    fa.name()
                ));
            }
            _ => {}
        }
    }
    None
}

impl Schemas {
    /// Every `chitose.pseudo.*` schema in `store`, checked pairwise per table.
    pub fn new(store: &SchemaStore) -> Self {
        let mut avro = AvroStore::new();
        let mut names = HashMap::new();
        let mut arrow: Vec<(u64, String, u32, SchemaRef)> = Vec::new();
        for e in store
            .iter()
            .filter(|e| e.full_name.starts_with("chitose.pseudo."))
        {
            if avro
                .set(
                    Fingerprint::Rabin(e.fingerprint),
                    AvroSchema::new(e.text.clone()),
                )
                .is_ok()
                && let Some(s) = chitose_lake::tables::arrow_schema_of(&e.text, e.fingerprint)
            {
                names.insert(e.fingerprint, (e.full_name.clone(), e.version));
                arrow.push((e.fingerprint, e.full_name.clone(), e.version, s));
            }
        }
        let mut compat = HashMap::new();
        for (fp, name, version, s) in &arrow {
            let mut verdict = Ok(());
            for (ofp, oname, _, os) in &arrow {
                if oname == name
                    && ofp != fp
                    && let Some(reason) = incompatibility(s, os).or_else(|| incompatibility(os, s))
                {
                    // The newer version is the one refused: what is in the
                    // lake already stays readable.
                    let other_version = names[ofp].1;
                    if *version > other_version {
                        verdict = Err(CoreError::Incompatible {
                            fingerprint: *fp,
                            name: name.clone(),
                            version: *version,
                            reason,
                        });
                        break;
                    }
                }
            }
            compat.insert(*fp, verdict);
        }
        Schemas {
            store: avro,
            compat,
            names,
            arrow: arrow.into_iter().map(|(fp, _, _, s)| (fp, s)).collect(),
            confluent: HashMap::new(),
        }
    }

    /// Maps a Confluent registry id to the fingerprint of the same schema.
    pub fn add_confluent_id(&mut self, id: u32, fingerprint: u64) {
        self.confluent.insert(id, fingerprint);
    }

    /// Whether a Confluent id is mapped.
    pub fn knows_confluent_id(&self, id: u32) -> bool {
        self.confluent.contains_key(&id)
    }

    /// A decoder for `batch_size` rows at most.
    pub fn decoder(&self, batch_size: usize) -> Decoder {
        ReaderBuilder::new()
            .with_batch_size(batch_size)
            .with_writer_schema_store(self.store.clone())
            .build_decoder()
            .expect("a store is set")
    }

    /// Whether a fingerprint may be landed.
    pub fn check(&self, fingerprint: u64, offset: i64) -> Result<(), CoreError> {
        match self.compat.get(&fingerprint) {
            Some(v) => v.clone(),
            None => Err(CoreError::UnknownSchema {
                offset,
                fingerprint,
            }),
        }
    }

    /// The Arrow schema of every version of `table` (as files are written),
    /// oldest first.
    pub fn table_versions(&self, table: &str) -> Vec<(u32, SchemaRef)> {
        let mut v: Vec<(u32, SchemaRef)> = self
            .names
            .iter()
            .filter(|(_, (name, _))| table_of(name) == table)
            .filter_map(|(fp, (_, version))| Some((*version, self.arrow.get(fp)?.clone())))
            .collect();
        v.sort_by_key(|(version, _)| *version);
        v
    }

    /// Record name and version of a fingerprint.
    pub fn name(&self, fingerprint: u64) -> Option<&(String, u32)> {
        self.names.get(&fingerprint)
    }
}

/// The fingerprint of an SOE message.
pub fn fingerprint(msg: &[u8], offset: i64) -> Result<u64, CoreError> {
    if msg.len() < 10 || msg[..2] != [0xC3, 0x01] {
        return Err(CoreError::Framing {
            offset,
            found: format!(
                "{} bytes starting {:02x?}",
                msg.len(),
                &msg[..msg.len().min(2)]
            ),
        });
    }
    Ok(u64::from_le_bytes(msg[2..10].try_into().expect("8 bytes")))
}

/// The registry id of a Confluent-framed message, if it is one.
pub fn confluent_id(msg: &[u8]) -> Option<u32> {
    match chitose_schemas::framing::unframe(msg) {
        Ok(chitose_schemas::framing::Framed::Confluent { schema_id, .. }) => Some(schema_id),
        _ => None,
    }
}

/// A Confluent-framed message re-framed as single-object encoding (the
/// decoder reads one framing; the datum is the same).
fn as_soe<'m>(
    schemas: &Schemas,
    msg: &'m [u8],
    offset: i64,
    buf: &'m mut Vec<u8>,
) -> Result<&'m [u8], CoreError> {
    match chitose_schemas::framing::unframe(msg) {
        Ok(chitose_schemas::framing::Framed::Confluent { schema_id, datum }) => {
            let fp = *schemas
                .confluent
                .get(&schema_id)
                .ok_or(CoreError::UnknownSchemaId {
                    offset,
                    id: schema_id,
                })?;
            buf.clear();
            chitose_schemas::framing::put_soe_header(buf, fp);
            buf.extend_from_slice(datum);
            Ok(buf.as_slice())
        }
        _ => Ok(msg),
    }
}

/// Decodes messages (all of one table, offsets increasing) into chunks of
/// one schema each. The first error stops decoding; the chunks before it
/// and the error's offset are returned, so the caller can land what
/// decoded and pause at the bad record.
pub fn decode(
    schemas: &Schemas,
    decoder: &mut Decoder,
    msgs: &[(i64, &[u8])],
) -> (Vec<Chunk>, Option<CoreError>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    let mut current: Option<u64> = None;
    let flush = |decoder: &mut Decoder,
                 offsets: &mut Vec<i64>,
                 fp: Option<u64>,
                 out: &mut Vec<Chunk>|
     -> Result<(), CoreError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let first = offsets[0];
        let batch = decoder
            .flush()
            .map_err(|e| CoreError::Decode {
                offset: first,
                message: e.to_string(),
            })?
            .expect("rows were decoded");
        out.push(Chunk {
            batch,
            offsets: std::mem::take(offsets),
            fingerprint: fp.expect("set with the first row"),
        });
        Ok(())
    };
    let mut reframed = Vec::new();
    // Index of the first message whose row is still in the decoder.
    let mut group_start = 0;
    // After a body error the decoder may hold part of the bad record: the
    // rows before it are decoded again with a fresh decoder and kept (on
    // main they were lost, and the position moved past them).
    let salvage =
        |out: &mut Vec<Chunk>, from: usize, to: usize, fp: Option<u64>, err: CoreError| {
            if to > from {
                let mut fresh = schemas.decoder(to - from);
                let (mut chunks, e) = decode(schemas, &mut fresh, &msgs[from..to]);
                if e.is_some() {
                    return (std::mem::take(out), e);
                }
                debug_assert!(chunks.iter().all(|c| Some(c.fingerprint) == fp));
                out.append(&mut chunks);
            }
            (std::mem::take(out), Some(err))
        };
    for (i, (offset, msg)) in msgs.iter().enumerate() {
        let msg = match as_soe(schemas, msg, *offset, &mut reframed) {
            Ok(m) => m,
            Err(e) => {
                let r = flush(decoder, &mut offsets, current, &mut out);
                return (out, Some(r.err().unwrap_or(e)));
            }
        };
        let fp = match fingerprint(msg, *offset)
            .and_then(|fp| schemas.check(fp, *offset).map(|()| fp))
        {
            Ok(fp) => fp,
            Err(e) => {
                let r = flush(decoder, &mut offsets, current, &mut out);
                return (out, Some(r.err().unwrap_or(e)));
            }
        };
        if current != Some(fp) || decoder.batch_is_full() {
            if let Err(e) = flush(decoder, &mut offsets, current, &mut out) {
                return (out, Some(e));
            }
            current = Some(fp);
            group_start = i;
        }
        match decoder.decode(msg) {
            Ok(n) if n == msg.len() => offsets.push(*offset),
            Ok(n) => {
                let e = CoreError::Decode {
                    offset: *offset,
                    message: format!(
                        "expected one whole record of {} bytes, decoded {n}",
                        msg.len()
                    ),
                };
                return salvage(&mut out, group_start, i, current, e);
            }
            Err(e) => {
                let e = CoreError::Decode {
                    offset: *offset,
                    message: e.to_string(),
                };
                return salvage(&mut out, group_start, i, current, e);
            }
        }
    }
    if let Err(e) = flush(decoder, &mut offsets, current, &mut out) {
        return (out, Some(e));
    }
    (out, None)
}

/// A row's lake partition: one value per partition column (`None`: null,
/// which Delta keeps as a null partition value, so no row is dropped for
/// lack of one).
pub type PartKey = Vec<Option<String>>;

/// Whether a message may be buffered: its framing, a Confluent id the
/// sink has mapped, a known fingerprint of a version that can share the
/// table. Cheap (no body decode): the sink checks every message as it is
/// read and decodes later, in bulk ([`decode`] then finds body errors).
pub fn admit(schemas: &Schemas, msg: &[u8], offset: i64) -> Result<u64, CoreError> {
    let fp = match chitose_schemas::framing::unframe(msg) {
        Ok(chitose_schemas::framing::Framed::Confluent { schema_id, .. }) => *schemas
            .confluent
            .get(&schema_id)
            .ok_or(CoreError::UnknownSchemaId {
                offset,
                id: schema_id,
            })?,
        _ => fingerprint(msg, offset)?,
    };
    schemas.check(fp, offset)?;
    Ok(fp)
}

/// A chunk's partition columns (`prefecture`, `event_month`, then the
/// extra ones) as string arrays. A partition column missing from the
/// table, or not a string, is an error.
pub fn key_columns<'c>(
    chunk: &'c Chunk,
    extra: &[String],
) -> Result<Vec<&'c StringArray>, CoreError> {
    let mut cols: Vec<&StringArray> = Vec::new();
    for name in chitose_lake::layout::PARTITION_COLUMNS
        .into_iter()
        .chain(extra.iter().map(String::as_str))
    {
        let col = chunk
            .batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| CoreError::Partition {
                offset: chunk.offsets[0],
                column: name.to_owned(),
                found: "no string column of that name".into(),
            })?;
        cols.push(col);
    }
    Ok(cols)
}

/// The lake partition of every row (`prefecture`, `event_month`, then the
/// extra columns). A partition column missing from the table is an error.
pub fn partition_keys(chunk: &Chunk, extra: &[String]) -> Result<Vec<PartKey>, CoreError> {
    let cols = key_columns(chunk, extra)?;
    Ok((0..chunk.batch.num_rows())
        .map(|row| {
            cols.iter()
                .map(|col| (!col.is_null(row)).then(|| col.value(row).to_owned()))
                .collect()
        })
        .collect())
}

/// Splits rows by key, keeping only rows where `keep` is true, in order.
/// Returns (key, rows, their offsets).
pub fn split(
    chunk: &Chunk,
    keys: &[PartKey],
    keep: &[bool],
) -> Vec<(PartKey, RecordBatch, Vec<i64>)> {
    let mut groups: BTreeMap<&PartKey, Vec<u32>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        if keep[i] {
            groups.entry(k).or_default().push(i as u32);
        }
    }
    groups
        .into_iter()
        .map(|(k, idx)| {
            let offsets = idx.iter().map(|i| chunk.offsets[*i as usize]).collect();
            let batch = if idx.len() == chunk.batch.num_rows() {
                chunk.batch.clone()
            } else {
                arrow_select::take::take_record_batch(&chunk.batch, &UInt32Array::from(idx))
                    .expect("indices are in range")
            };
            (k.clone(), batch, offsets)
        })
        .collect()
}

/// One lake partition's rows from [`regroup`]: its key, the rows, and
/// where each came from as (batch, row).
pub type Group = (PartKey, RecordBatch, Vec<(usize, usize)>);

/// Rows of several batches grouped by lake partition, in key order: each
/// group's key, its rows (gathered in one pass over every batch, in the
/// batches' order) and where each row came from as (batch, row).
///
/// `keys[i]` are batch `i`'s partition columns ([`key_columns`]); the
/// batches themselves may be another shape of the same rows (the lake's,
/// without the partition columns) as long as they share one schema. A key
/// is looked up without allocating; only a new group allocates.
pub fn regroup(batches: &[RecordBatch], keys: &[Vec<&StringArray>]) -> Vec<Group> {
    debug_assert_eq!(batches.len(), keys.len());
    let mut index: HashMap<Vec<Option<&str>>, usize> = HashMap::new();
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut scratch: Vec<Option<&str>> = Vec::new();
    for (b, cols) in keys.iter().enumerate() {
        for row in 0..batches[b].num_rows() {
            scratch.clear();
            scratch.extend(cols.iter().map(|c| (!c.is_null(row)).then(|| c.value(row))));
            let g = match index.get(scratch.as_slice()) {
                Some(g) => *g,
                None => {
                    index.insert(scratch.clone(), groups.len());
                    groups.push(Vec::new());
                    groups.len() - 1
                }
            };
            groups[g].push((b, row));
        }
    }
    let mut keyed: Vec<(Vec<Option<&str>>, usize)> = index.into_iter().collect();
    keyed.sort();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    keyed
        .into_iter()
        .map(|(k, g)| {
            let rows = std::mem::take(&mut groups[g]);
            let batch = if batches.len() == 1 && rows.len() == batches[0].num_rows() {
                batches[0].clone()
            } else {
                arrow_select::interleave::interleave_record_batch(&refs, &rows)
                    .expect("rows are in range and the batches share a schema")
            };
            (
                k.into_iter().map(|v| v.map(str::to_owned)).collect(),
                batch,
                rows,
            )
        })
        .collect()
}

pub use chitose_lake::tables::table_of;

/// Shared handle.
pub type SharedSchemas = Arc<Schemas>;
