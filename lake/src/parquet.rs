//! Parquet writers: zstd, statistics, dictionaries, a bloom filter on the
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

/// The lake's Parquet settings.
pub fn properties(row_group_rows: usize, created_by: &str) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows))
        // Analysts look people up by pseudonym: row groups without it are skipped.
        .set_column_bloom_filter_enabled(ColumnPath::from("pseudonym"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("pseudonym"), 0.01)
        // Sized for a row group, not the 1M-value default (1.2 MB allocated
        // up front per open file).
        .set_column_bloom_filter_max_ndv(ColumnPath::from("pseudonym"), row_group_rows as u64)
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
