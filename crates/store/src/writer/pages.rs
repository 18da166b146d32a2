//! Parquet column chunks of the hook columns, encoded here instead of by arrow-rs.
//!
//! A hook column is a non-null `FixedSizeList<f32|f16, width>`: in Parquet a leaf
//! `<hook>.list.item` with max repetition and definition level 1. arrow-rs computes
//! both levels value by value and, for `Float16`, wraps every value in its own
//! `Bytes`; here one chunk of rows becomes one data page (v1) in one pass:
//!
//! - repetition levels (RLE): per row a run of one 0 and a run of `width - 1` 1s;
//! - definition levels (RLE): one run of 1s (no list and no value is null);
//! - values: BYTE_STREAM_SPLIT (byte `j` of every value, then byte `j + 1`, …);
//! - the page compressed with zstd; no statistics.
//!
//! The result is the same column as arrow-rs writes with the store's settings, in
//! a file any Parquet reader reads (pyarrow, the store's reader).
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use half::f16;
use parquet::basic::{Compression, Encoding, EncodingMask, ZstdLevel};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

/// The values of one hook over a chunk of rows, row-major: (rows * width,)
pub(super) enum HookValues<'a> {
    /// 4 bytes per value.
    F32(&'a [f32]),
    /// 2 bytes per value.
    F16(&'a [f16]),
}

impl HookValues<'_> {
    fn len(&self) -> usize {
        match self {
            HookValues::F32(v) => v.len(),
            HookValues::F16(v) => v.len(),
        }
    }
}

/// Encodes hook column chunks, reusing its buffers and zstd context from chunk to chunk.
pub(super) struct HookEncoder {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    /// The uncompressed page: levels, then values.
    raw: Vec<u8>,
    /// The compressed page, lent to parquet as `Bytes`.
    compressed: Arc<Vec<u8>>,
    /// The column chunk (page header and compressed page), lent to the caller as `Bytes`.
    chunk: Arc<Vec<u8>>,
}

/// A buffer lent out as [`Bytes`] ([`Bytes::from_owner`]) and taken back for the next
/// page once every `Bytes` of it is dropped: no fresh (page-faulting) megabytes per page.
struct Lent(Arc<Vec<u8>>);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The buffer behind `buf`, emptied: the same one when no `Bytes` holds it any more.
fn take_back(buf: &mut Arc<Vec<u8>>) -> &mut Vec<u8> {
    if Arc::get_mut(buf).is_none() {
        *buf = Arc::default();
    }
    let vec = Arc::make_mut(buf); // unique now: never copies
    vec.clear();
    vec
}

impl HookEncoder {
    /// An encoder compressing with zstd at `level`.
    pub fn new(level: i32) -> Result<HookEncoder> {
        let compressor =
            zstd::bulk::Compressor::new(level).map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(HookEncoder {
            level,
            compressor,
            raw: Vec::new(),
            compressed: Arc::default(),
            chunk: Arc::default(),
        })
    }

    /// Encode `values` (rows of `width` values) as a column chunk of the leaf `descr`:
    /// its bytes (one page: header and compressed data, starting at offset 0) and
    /// what [`parquet::file::writer::SerializedRowGroupWriter::append_column`] needs.
    pub fn encode(
        &mut self,
        descr: &ColumnDescPtr,
        values: HookValues<'_>,
        width: usize,
    ) -> Result<(Bytes, ColumnCloseResult)> {
        if descr.max_rep_level() != 1 || descr.max_def_level() != 1 {
            return Err(ParquetError::General(format!(
                "column {} has levels (rep {}, def {}); a non-null FixedSizeList leaf has (1, 1)",
                descr.path(),
                descr.max_rep_level(),
                descr.max_def_level()
            )));
        }
        let n = values.len();
        if width == 0 || !n.is_multiple_of(width) {
            return Err(ParquetError::General(format!(
                "column {}: {n} values are not whole rows of width {width}",
                descr.path()
            )));
        }
        let rows = n / width;
        let num_values = u32::try_from(n)
            .map_err(|_| ParquetError::General(format!("{n} values in one page")))?;
        self.raw.clear();
        // Repetition levels: length-prefixed RLE runs (bit width 1: one byte per value).
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; 4]);
        if width == 1 {
            rle_run(&mut self.raw, rows, 0);
        } else {
            let mut row = Vec::with_capacity(8);
            rle_run(&mut row, 1, 0);
            rle_run(&mut row, width - 1, 1);
            for _ in 0..rows {
                self.raw.extend_from_slice(&row);
            }
        }
        set_length(&mut self.raw, start)?;
        // Definition levels: every value is present.
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; 4]);
        rle_run(&mut self.raw, n, 1);
        set_length(&mut self.raw, start)?;
        byte_stream_split(&values, &mut self.raw);

        let compressed = take_back(&mut self.compressed);
        compressed.reserve(zstd::zstd_safe::compress_bound(self.raw.len()));
        self.compressor
            .compress_to_buffer(&self.raw, compressed)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        let page = Page::DataPage {
            buf: Bytes::from_owner(Lent(self.compressed.clone())),
            num_values,
            encoding: Encoding::BYTE_STREAM_SPLIT,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let chunk = take_back(&mut self.chunk);
        chunk.reserve(page.buffer().len() + 64);
        let mut sink = TrackedWrite::new(chunk);
        let spec = SerializedPageWriter::new(&mut sink)
            .write_page(CompressedPage::new(page, self.raw.len()))?;
        sink.flush()?;
        drop(sink);
        let bytes = Bytes::from_owner(Lent(self.chunk.clone()));
        let zstd = ZstdLevel::try_new(self.level)?;
        let metadata = ColumnChunkMetaData::builder(descr.clone())
            .set_compression(Compression::ZSTD(zstd))
            .set_encodings_mask(EncodingMask::new_from_encodings(
                [Encoding::RLE, Encoding::BYTE_STREAM_SPLIT].iter(),
            ))
            .set_total_compressed_size(to_i64(spec.compressed_size)?)
            .set_total_uncompressed_size(to_i64(spec.uncompressed_size)?)
            .set_num_values(i64::from(num_values))
            .set_data_page_offset(0)
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: None,
        };
        Ok((bytes, close))
    }
}

fn to_i64(n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| ParquetError::General(format!("size {n} out of range")))
}

/// One RLE run of the RLE/bit-packing hybrid encoding at bit width 1:
/// ULEB128 `count << 1`, then the value in one byte.
fn rle_run(out: &mut Vec<u8>, count: usize, value: u8) {
    let mut header = (count as u64) << 1;
    loop {
        let byte = (header & 0x7f) as u8;
        header >>= 7;
        if header == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.push(value);
}

/// Write the length of `out[start + 4..]` as the u32 (little-endian) at `start`.
fn set_length(out: &mut [u8], start: usize) -> Result<()> {
    let len = u32::try_from(out.len() - start - 4)
        .map_err(|_| ParquetError::General("levels too long for one page".into()))?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Append `values` BYTE_STREAM_SPLIT-encoded: for each byte position `j` of the
/// little-endian values, byte `j` of every value.
fn byte_stream_split(values: &HookValues<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    match values {
        HookValues::F32(v) => {
            let n = v.len();
            out.resize(start + 4 * n, 0);
            let (s0, rest) = out[start..].split_at_mut(n);
            let (s1, rest) = rest.split_at_mut(n);
            let (s2, s3) = rest.split_at_mut(n);
            for (i, x) in v.iter().enumerate() {
                let b = x.to_le_bytes();
                s0[i] = b[0];
                s1[i] = b[1];
                s2[i] = b[2];
                s3[i] = b[3];
            }
        }
        HookValues::F16(v) => {
            let n = v.len();
            out.resize(start + 2 * n, 0);
            let (s0, s1) = out[start..].split_at_mut(n);
            for (i, x) in v.iter().enumerate() {
                let b = x.to_le_bytes();
                s0[i] = b[0];
                s1[i] = b[1];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, FixedSizeListArray, Float16Array, Float32Array};
    use arrow::datatypes::{DataType, Field, Float16Type, Float32Type, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;

    /// Write `(width, f32 or f16, values)` hook columns with [`HookEncoder`] in two row
    /// groups and read them back with arrow-rs's reader.
    fn round_trip(half: bool) {
        let widths = [1usize, 3, 7];
        let rows = [5usize, 2];
        let dtype = if half {
            DataType::Float16
        } else {
            DataType::Float32
        };
        let fields: Vec<Field> = widths
            .iter()
            .map(|&w| {
                let item = Arc::new(Field::new_list_field(dtype.clone(), false));
                Field::new(
                    format!("h{w}"),
                    DataType::FixedSizeList(item, w as i32),
                    false,
                )
            })
            .collect();
        let schema = Schema::new(fields);
        let mut props = WriterProperties::builder().build();
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let descr = ArrowSchemaConverter::new().convert(&schema).unwrap();
        let mut file =
            SerializedFileWriter::new(Vec::new(), descr.root_schema_ptr(), Arc::new(props))
                .unwrap();
        let mut encoder = HookEncoder::new(1).unwrap();
        // Value i of column w, row group g: distinct, exact in f16.
        let value = |g: usize, w: usize, i: usize| (g * 1000 + w * 100 + i) as f32 * 0.25 - 30.0;
        for (g, &n) in rows.iter().enumerate() {
            let mut group = file.next_row_group().unwrap();
            for (c, &w) in widths.iter().enumerate() {
                let v: Vec<f32> = (0..n * w).map(|i| value(g, w, i)).collect();
                let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
                let values = if half {
                    HookValues::F16(&h)
                } else {
                    HookValues::F32(&v)
                };
                let (bytes, close) = encoder.encode(&descr.column(c), values, w).unwrap();
                group.append_column(&bytes, close).unwrap();
            }
            group.close().unwrap();
        }
        let bytes = Bytes::from(file.into_inner().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .with_batch_size(1000)
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 1);
        let batch = &batches[0];
        assert_eq!(batch.schema().as_ref(), &schema);
        assert_eq!(batch.num_rows(), rows.iter().sum::<usize>());
        for (c, &w) in widths.iter().enumerate() {
            let list: &FixedSizeListArray = batch.column(c).as_fixed_size_list();
            assert_eq!(list.null_count(), 0);
            let got: Vec<f32> = if half {
                let a: &Float16Array = list.values().as_primitive::<Float16Type>();
                a.values().iter().map(|x| x.to_f32()).collect()
            } else {
                let a: &Float32Array = list.values().as_primitive::<Float32Type>();
                a.values().to_vec()
            };
            let want: Vec<f32> = rows
                .iter()
                .enumerate()
                .flat_map(|(g, &n)| (0..n * w).map(move |i| value(g, w, i)))
                .collect();
            assert_eq!(got, want, "width {w}, f16 {half}");
        }
    }

    #[test]
    fn hook_columns_read_back_with_arrow_rs_f32() {
        round_trip(false);
    }

    #[test]
    fn hook_columns_read_back_with_arrow_rs_f16() {
        round_trip(true);
    }

    #[test]
    fn rle_runs_are_uleb128_count_then_value() {
        let mut out = Vec::new();
        rle_run(&mut out, 1, 0);
        rle_run(&mut out, 767, 1);
        // 767 << 1 = 1534 = 0b1011_1111_1110 -> 0xFE 0x0B
        assert_eq!(out, vec![0x02, 0x00, 0xFE, 0x0B, 0x01]);
    }

    #[test]
    fn byte_stream_split_groups_bytes_by_position() {
        let mut out = Vec::new();
        byte_stream_split(
            &HookValues::F32(&[f32::from_bits(0x0403_0201), f32::from_bits(0x0807_0605)]),
            &mut out,
        );
        assert_eq!(out, vec![1, 5, 2, 6, 3, 7, 4, 8]);
        out.clear();
        byte_stream_split(
            &HookValues::F16(&[f16::from_bits(0x0201), f16::from_bits(0x0403)]),
            &mut out,
        );
        assert_eq!(out, vec![1, 3, 2, 4]);
    }
}
