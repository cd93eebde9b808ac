//! Parquet writers: zstd (Snappy for small files), statistics, dictionaries, a bloom filter on the
//! pseudonym, and row groups streamed into multipart uploads so a file is
//! never held whole in memory.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::arrow::{AsyncArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// Files of fewer rows than this are written with Snappy, not zstd, and
/// chunk statistics only (see [`properties_sized`]).
pub const SMALL_FILE_ROWS: usize = 10_000;

/// Files of fewer rows than this are written without dictionaries (see
/// [`properties_sized`]).
pub const DICTIONARY_ROWS: usize = 1_000;

/// The lake's Parquet settings for files of up to `row_group_rows` rows
/// per row group and any size (zstd, a bloom filter sized for a row group).
pub fn properties(row_group_rows: usize, created_by: &str) -> WriterProperties {
    properties_sized(row_group_rows, usize::MAX, created_by)
}

/// The lake's Parquet settings for a file known to hold `rows` rows.
///
/// Two settings follow the size, because a small file's fixed costs were
/// most of a trickle's CPU (issue 17: ~3 ms per file of ~40 columns):
/// - the codec: parquet-rs sets up a zstd compressor *and* decompressor
///   context per column, and each set-up runs `cpuid` (zstd's BMI2 probe),
///   which traps to the hypervisor on a VM (~10 µs each here). Below
///   [`SMALL_FILE_ROWS`] the file is Snappy (the Delta and Spark default,
///   pure Rust, nothing to set up); such files are short-lived — compaction
///   rewrites them with zstd;
/// - the pseudonym's bloom filter is sized for the rows the file holds,
///   not for a full row group (a 128 k-value filter allocated and folded
///   per file of 30 rows);
/// - below [`SMALL_FILE_ROWS`] a column chunk is one page (parquet-rs
///   starts a page at 20 000 rows or 1 MiB), so a page index would repeat
///   the chunk's statistics: chunk statistics only;
/// - below [`DICTIONARY_ROWS`] no dictionaries: one per column per file
///   is a hash table set up for a few dozen values, and saved nothing at
///   30 rows (sizes below).
///
/// Measured on 34-column lab results, 2 000 files each, CPU per file
/// (docs/benchmarks.md, "Small files"): 30 rows 0.28–0.31 ms
/// with both, 0.19–0.21 ms without (18 147 bytes against 20 130); at
/// 1 000 rows the dictionaries save 10 % of the bytes and cost nothing
/// measurable, so they stay from there.
pub fn properties_sized(row_group_rows: usize, rows: usize, created_by: &str) -> WriterProperties {
    let (compression, statistics) = if rows < SMALL_FILE_ROWS {
        (Compression::SNAPPY, EnabledStatistics::Chunk)
    } else {
        (
            Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")),
            EnabledStatistics::Page,
        )
    };
    let ndv = rows.clamp(1, row_group_rows.max(1)) as u64;
    WriterProperties::builder()
        .set_compression(compression)
        .set_dictionary_enabled(rows >= DICTIONARY_ROWS)
        .set_statistics_enabled(statistics)
        .set_max_row_group_row_count(Some(row_group_rows))
        // Analysts look people up by pseudonym: row groups without it are skipped.
        .set_column_bloom_filter_enabled(ColumnPath::from("pseudonym"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("pseudonym"), 0.01)
        // Sized for what the file holds (at most a row group), not the
        // 1M-value default (1.2 MB allocated up front per open file).
        .set_column_bloom_filter_max_ndv(ColumnPath::from("pseudonym"), ndv)
        .set_created_by(format!("{created_by} {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One Parquet file being written to the object store.
pub struct FileWriter {
    inner: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

impl FileWriter {
    /// Starts a file at `path`; parts of `part_bytes` are uploaded as row
    /// groups fill, two at a time at most.
    pub fn create(
        store: Arc<dyn ObjectStore>,
        path: Path,
        schema: SchemaRef,
        props: WriterProperties,
        part_bytes: usize,
    ) -> Result<Self, parquet::errors::ParquetError> {
        let buf = BufWriter::with_capacity(store, path, part_bytes).with_max_concurrency(2);
        let inner = AsyncArrowWriter::try_new(buf, schema, Some(props))?;
        Ok(FileWriter { inner, rows: 0 })
    }

    /// Appends rows.
    pub async fn write(
        &mut self,
        batch: &RecordBatch,
    ) -> Result<(), parquet::errors::ParquetError> {
        self.rows += batch.num_rows() as u64;
        self.inner.write(batch).await
    }

    /// Writes the open row group out now (memory pressure).
    pub async fn flush_row_group(&mut self) -> Result<(), parquet::errors::ParquetError> {
        self.inner.flush().await
    }

    /// Encoded bytes buffered in the open row group.
    pub fn buffered(&self) -> usize {
        self.inner.in_progress_size()
    }

    /// Bytes handed to the upload so far, plus the open row group.
    pub fn size(&self) -> u64 {
        (self.inner.bytes_written() + self.inner.in_progress_size()) as u64
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finishes the file (footer, last part, upload completed); returns its size.
    pub async fn close(mut self) -> Result<u64, parquet::errors::ParquetError> {
        self.inner.finish().await?;
        Ok(self.inner.bytes_written() as u64)
    }
}

/// A lake file read by ranges: the footer first, then only the column
/// chunks a projection asks for. (parquet's `ParquetObjectReader` is
/// deprecated in favour of implementing [`AsyncFileReader`]; this is that.)
pub struct LakeFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl LakeFile {
    /// A reader of `path`, `size` bytes (from the log: no HEAD request).
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> Self {
        LakeFile { store, path, size }
    }
}

impl AsyncFileReader for LakeFile {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        // One call: object stores coalesce nearby ranges (fewer S3 GETs).
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(&mut *self, size)
                .await?;
            Ok(Arc::new(meta))
        })
    }
}

/// Streams a file's batches, reading only `columns` (those it has; all
/// when `None`).
pub async fn stream(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
    columns: Option<&[String]>,
    batch_rows: usize,
) -> Result<ParquetRecordBatchStream<LakeFile>, crate::LakeError> {
    let perr = |e: ParquetError| crate::LakeError::Parquet {
        path: path.to_string(),
        message: e.to_string(),
    };
    let reader = LakeFile::new(store, path.clone(), size);
    let b = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(perr)?
        .with_batch_size(batch_rows.max(1));
    let b = match columns {
        Some(cols) => {
            let roots: Vec<usize> = b
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| cols.iter().any(|c| c == f.name()))
                .map(|(i, _)| i)
                .collect();
            let mask = ProjectionMask::roots(b.parquet_schema(), roots);
            b.with_projection(mask)
        }
        None => b,
    };
    b.build().map_err(perr)
}

/// Reads a whole file.
pub async fn read_file(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    size: u64,
) -> Result<Vec<RecordBatch>, crate::LakeError> {
    use futures::TryStreamExt;
    let s = stream(store, path, size, None, 64 * 1024).await?;
    s.try_collect()
        .await
        .map_err(|e| crate::LakeError::Parquet {
            path: path.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::ArrowWriter;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn file(rows: usize) -> Bytes {
        let ids: Vec<String> = (0..rows).map(|i| format!("p{i}")).collect();
        let batch = RecordBatch::try_from_iter([(
            "pseudonym",
            Arc::new(arrow_array::StringArray::from(ids)) as arrow_array::ArrayRef,
        )])
        .unwrap();
        let mut w = ArrowWriter::try_new(
            Vec::new(),
            batch.schema(),
            Some(properties_sized(128 * 1024, rows, "test")),
        )
        .unwrap();
        w.write(&batch).unwrap();
        Bytes::from(w.into_inner().unwrap())
    }

    #[test]
    fn small_files_are_snappy_large_ones_zstd_and_both_keep_a_bloom_filter() {
        for (rows, zstd) in [(30, false), (SMALL_FILE_ROWS, true)] {
            let bytes = file(rows);
            let r = SerializedFileReader::new(bytes.clone()).unwrap();
            let col = r.metadata().row_group(0).column(0);
            // Statistics either way (readers skip files by them); a page
            // index only where a chunk can hold more than one page.
            assert!(
                col.statistics()
                    .is_some_and(|s| s.min_bytes_opt().is_some()),
                "{rows} rows: statistics"
            );
            assert_eq!(
                col.column_index_offset().is_some(),
                zstd,
                "{rows} rows: page index"
            );
            assert_eq!(
                col.dictionary_page_offset().is_some(),
                rows >= DICTIONARY_ROWS,
                "{rows} rows: dictionary"
            );
            let got = col.compression();
            assert_eq!(
                matches!(got, Compression::ZSTD(_)),
                zstd,
                "{rows} rows: {got:?}"
            );
            assert_eq!(got == Compression::SNAPPY, !zstd, "{rows} rows: {got:?}");
            assert!(
                col.bloom_filter_offset().is_some(),
                "{rows} rows: bloom filter"
            );
            assert_eq!(r.metadata().file_metadata().num_rows(), rows as i64);
        }
        // The filter is sized for the file: 30 rows take far less than a
        // row group's worth.
        let small = SerializedFileReader::new(file(30)).unwrap();
        let len = small
            .metadata()
            .row_group(0)
            .column(0)
            .bloom_filter_length();
        assert!(len.is_some_and(|l| l < 1024), "{len:?}");
    }
}
