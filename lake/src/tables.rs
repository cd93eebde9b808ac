//! The lake tables' schemas, from the pseudo contract: each
//! `chitose.pseudo.*` Avro schema becomes the Arrow schema its rows decode
//! to (arrow-avro), and a table's Delta schema is the union of its
//! compatible versions in the types Delta readers share (timestamps in
//! microseconds, UTC; every column nullable).

use arrow_avro::reader::ReaderBuilder;
use arrow_avro::schema::{AvroSchema, Fingerprint, SchemaStore as AvroStore};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chitose_schemas::catalog::SchemaStore;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Table name from a record's full name: `chitose.pseudo.LabResult` → `lab_result`.
pub fn table_of(full_name: &str) -> String {
    let short = full_name.rsplit('.').next().unwrap_or(full_name);
    let mut s = String::new();
    for (i, c) in short.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_lowercase());
    }
    s
}

/// The Arrow schema arrow-avro decodes an Avro schema's records to.
pub fn arrow_schema_of(text: &str, fp: u64) -> Option<SchemaRef> {
    let mut store = AvroStore::new();
    store
        .set(Fingerprint::Rabin(fp), AvroSchema::new(text.to_owned()))
        .ok()?;
    let d = ReaderBuilder::new()
        .with_writer_schema_store(store)
        .with_active_fingerprint(Fingerprint::Rabin(fp))
        .build_decoder()
        .ok()?;
    Some(d.schema())
}

/// Table → its versions' decoded schemas, oldest first.
pub type TableSchemas = BTreeMap<String, Vec<(u32, SchemaRef)>>;

/// Every version of every pseudo table, as decoded: table → (version,
/// schema), oldest first.
pub fn versions(store: &SchemaStore) -> TableSchemas {
    let mut out: BTreeMap<String, Vec<(u32, SchemaRef)>> = BTreeMap::new();
    for e in store
        .iter()
        .filter(|e| e.full_name.starts_with("chitose.pseudo."))
    {
        if let Some(s) = arrow_schema_of(&e.text, e.fingerprint) {
            out.entry(table_of(&e.full_name))
                .or_default()
                .push((e.version, s));
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|(version, _)| *version);
    }
    out
}

/// The type a column has in the lake: timestamps are microseconds in UTC
/// (what Delta's `timestamp` is); every other decoded type is kept.
pub fn lake_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Timestamp(_, Some(_)) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::Timestamp(_, None) => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::Dictionary(_, v) => lake_type(v),
        other => other.clone(),
    }
}

/// A table's lake schema: the columns of every version (newest order
/// first, then columns only older versions have), in lake types, nullable
/// (a new version's column is absent from old files).
pub fn lake_schema(versions: &[(u32, SchemaRef)]) -> Option<SchemaRef> {
    let (_, newest) = versions.last()?;
    let mut fields: Vec<Field> = Vec::new();
    let mut push = |f: &Field| {
        if !fields.iter().any(|x| x.name() == f.name()) {
            fields.push(Field::new(f.name(), lake_type(f.data_type()), true));
        }
    };
    for f in newest.fields() {
        push(f);
    }
    for (_, s) in versions.iter().rev() {
        for f in s.fields() {
            push(f);
        }
    }
    Some(Arc::new(Schema::new(fields)))
}

/// The columns a data file holds: the table's minus its partition columns
/// (Delta keeps partition values in the log).
pub fn physical_schema(logical: &SchemaRef, partition_columns: &[String]) -> SchemaRef {
    Arc::new(Schema::new(
        logical
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .cloned()
            .collect::<Vec<_>>(),
    ))
}

/// Rows in the lake's shape: columns in `target`'s order, cast to its
/// types, absent ones null. Errors name the column.
pub fn conform(
    batch: &arrow_array::RecordBatch,
    target: &SchemaRef,
) -> Result<arrow_array::RecordBatch, String> {
    let n = batch.num_rows();
    let mut cols = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        let col = match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => c.clone(),
            Some(c) => arrow_cast::cast(c, f.data_type()).map_err(|e| {
                format!(
                    "column {}: expected a value castable to {}, found {} ({e})",
                    f.name(),
                    f.data_type(),
                    c.data_type()
                )
            })?,
            None => arrow_array::new_null_array(f.data_type(), n),
        };
        cols.push(col);
    }
    arrow_array::RecordBatch::try_new_with_options(
        target.clone(),
        cols,
        &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| e.to_string())
}
