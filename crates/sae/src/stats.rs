//! Feature statistics for labelling: per feature its density, mean and maximum
//! activation and its top-N activating contexts (decoded tokens around the row),
//! written as `feature_stats.parquet` next to the SAE for the circuit viewer.
//!
//! Columns: `feature` u32; `density` f64 (fraction of rows where the feature is
//! positive); `mean_activation` f64 (mean over those rows, 0 when none);
//! `max_activation` f32; `top_activation` list of f32 (descending); `top_row` list of
//! u64 (store row); `top_left` list of utf8 (up to [`LEFT_TOKENS`] tokens before, same
//! window); `top_token` list of utf8; `top_right` list of utf8 (up to
//! [`RIGHT_TOKENS`] after).
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float32Builder, Float64Array, ListBuilder, RecordBatch, StringBuilder,
    UInt32Array, UInt64Builder,
};
use circuitry_core::atomic;
use circuitry_store::{ActivationStore, TokenColumns};
use ndarray::ArrayView2;
use parquet::arrow::ArrowWriter;

use crate::{Error, Result};

/// File name of the feature statistics.
pub const FEATURE_STATS_FILE: &str = "feature_stats.parquet";
/// Tokens of left context per top activation.
pub const LEFT_TOKENS: usize = 8;
/// Tokens of right context per top activation.
pub const RIGHT_TOKENS: usize = 3;

/// Per-feature statistics accumulated over a stream of rows.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    top_n: usize,
    rows: u64,
    count: Vec<u64>,
    sum: Vec<f64>,
    max: Vec<f32>,
    /// Per feature, (activation, store row), descending, at most `top_n`.
    top: Vec<Vec<(f32, u64)>>,
}

impl FeatureStats {
    /// Empty statistics for `d_sae` features keeping the `top_n` largest activations.
    pub fn new(d_sae: usize, top_n: usize) -> Self {
        FeatureStats {
            top_n,
            rows: 0,
            count: vec![0; d_sae],
            sum: vec![0.0; d_sae],
            max: vec![0.0; d_sae],
            top: vec![Vec::new(); d_sae],
        }
    }

    /// Add the features `f (rows, d_sae)` of consecutive store rows starting at
    /// `first_row`. Of equal activations the earlier row ranks first.
    pub fn add(&mut self, f: ArrayView2<'_, f32>, first_row: u64) {
        for (r, row) in f.outer_iter().enumerate() {
            let store_row = first_row + r as u64;
            for (i, &v) in row.iter().enumerate() {
                if v <= 0.0 {
                    continue;
                }
                self.count[i] += 1;
                self.sum[i] += f64::from(v);
                if v > self.max[i] {
                    self.max[i] = v;
                }
                let top = &mut self.top[i];
                if self.top_n == 0 || (top.len() == self.top_n && top[top.len() - 1].0 >= v) {
                    continue;
                }
                let at = top.iter().position(|&(a, _)| a < v).unwrap_or(top.len());
                top.insert(at, (v, store_row));
                top.truncate(self.top_n);
            }
        }
        self.rows += f.nrows() as u64;
    }

    /// The store rows whose tokens the contexts of the top activations need: each
    /// top row with [`LEFT_TOKENS`] rows before and [`RIGHT_TOKENS`] after it.
    pub fn context_rows(&self) -> BTreeSet<u64> {
        let mut rows = BTreeSet::new();
        for &(_, r) in self.top.iter().flatten() {
            rows.extend(r.saturating_sub(LEFT_TOKENS as u64)..=r + RIGHT_TOKENS as u64);
        }
        rows
    }

    /// Write `dir/feature_stats.parquet` atomically, decoding contexts from `tokens`
    /// (the tokens of at least [`FeatureStats::context_rows`]) with `decode`.
    pub fn write(
        &self,
        dir: &Path,
        tokens: &ContextTokens,
        decode: &dyn Fn(&[u32]) -> String,
    ) -> Result<()> {
        let d_sae = self.count.len();
        let n = self.rows.max(1) as f64;
        let feature = UInt32Array::from_iter_values(0..d_sae as u32);
        let density = Float64Array::from_iter_values(self.count.iter().map(|&c| c as f64 / n));
        let mean =
            Float64Array::from_iter_values(self.count.iter().zip(&self.sum).map(|(&c, &s)| {
                if c > 0 {
                    s / c as f64
                } else {
                    0.0
                }
            }));
        let max = Float32Array::from_iter_values(self.max.iter().copied());
        let mut acts = ListBuilder::new(Float32Builder::new());
        let mut rows = ListBuilder::new(UInt64Builder::new());
        let mut left = ListBuilder::new(StringBuilder::new());
        let mut token = ListBuilder::new(StringBuilder::new());
        let mut right = ListBuilder::new(StringBuilder::new());
        for top in &self.top {
            for &(a, row) in top {
                acts.values().append_value(a);
                rows.values().append_value(row);
                let Some(&(seq, tok)) = tokens.rows.get(&row) else {
                    return Err(Error::Empty(format!(
                        "store row {row} has no token (the store has {} token rows)",
                        tokens.n_rows
                    )));
                };
                let same = |j: u64| tokens.rows.get(&j).filter(|t| t.0 == seq).map(|t| t.1);
                let mut before = Vec::new();
                let mut j = row;
                while j > 0 && row - j < LEFT_TOKENS as u64 {
                    match same(j - 1) {
                        Some(t) => before.push(t),
                        None => break,
                    }
                    j -= 1;
                }
                before.reverse();
                let after: Vec<u32> = (row + 1..=row + RIGHT_TOKENS as u64)
                    .map_while(same)
                    .collect();
                left.values().append_value(decode(&before));
                token.values().append_value(decode(&[tok]));
                right.values().append_value(decode(&after));
            }
            acts.append(true);
            rows.append(true);
            left.append(true);
            token.append(true);
            right.append(true);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("feature", Arc::new(feature)),
            ("density", Arc::new(density)),
            ("mean_activation", Arc::new(mean)),
            ("max_activation", Arc::new(max)),
            ("top_activation", Arc::new(acts.finish())),
            ("top_row", Arc::new(rows.finish())),
            ("top_left", Arc::new(left.finish())),
            ("top_token", Arc::new(token.finish())),
            ("top_right", Arc::new(right.finish())),
        ];
        let path = dir.join(FEATURE_STATS_FILE);
        let parquet_err = |e: String| Error::BadWeights {
            path: path.clone(),
            reason: format!("building the feature statistics: {e}"),
        };
        let batch = RecordBatch::try_from_iter(columns).map_err(|e| parquet_err(e.to_string()))?;
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None)
            .map_err(|e| parquet_err(e.to_string()))?;
        writer
            .write(&batch)
            .map_err(|e| parquet_err(e.to_string()))?;
        writer.close().map_err(|e| parquet_err(e.to_string()))?;
        atomic::write_bytes(&path, &bytes)?;
        Ok(())
    }
}

/// The sequence and token of just the store rows that feature contexts need (see
/// [`FeatureStats::context_rows`]): memory grows with the number of top activations,
/// not with the store.
#[derive(Debug, Clone, Default)]
pub struct ContextTokens {
    /// Store row → (sequence, token id).
    rows: HashMap<u64, (u64, u32)>,
    /// Rows in the store.
    n_rows: u64,
}

impl ContextTokens {
    /// Read the `wanted` rows' tokens from `store`, one shard at a time.
    pub fn read(store: &ActivationStore, wanted: &BTreeSet<u64>) -> Result<Self> {
        let mut out = ContextTokens::default();
        for shard in 0..store.meta().shards.len() {
            let first = out.n_rows;
            let n = store.meta().shards[shard].rows;
            out.n_rows += n;
            if wanted.range(first..first + n).next().is_none() {
                continue;
            }
            let t = store.read_shard_tokens(shard)?;
            out.keep(&t, first, wanted);
        }
        Ok(out)
    }

    /// The `wanted` rows of token columns whose first row is store row `first`.
    pub fn from_columns(tokens: &TokenColumns, first: u64, wanted: &BTreeSet<u64>) -> Self {
        let mut out = ContextTokens {
            n_rows: first + tokens.token_id.len() as u64,
            ..ContextTokens::default()
        };
        out.keep(tokens, first, wanted);
        out
    }

    fn keep(&mut self, t: &TokenColumns, first: u64, wanted: &BTreeSet<u64>) {
        let end = first + t.token_id.len() as u64;
        for &r in wanted.range(first..end) {
            let i = (r - first) as usize;
            self.rows.insert(r, (t.seq[i], t.token_id[i]));
        }
    }
}

/// Token ids → text.
pub type Decoder = Box<dyn Fn(&[u32]) -> String + Send + Sync>;

/// A token decoder: the tokenizer in `file` (Hugging Face `tokenizer.json`), or,
/// without one, token ids as decimal text separated by spaces.
pub fn decoder(file: Option<&Path>) -> Result<Decoder> {
    match file {
        None => Ok(Box::new(|ids: &[u32]| {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        })),
        Some(path) => {
            let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::BadCfg {
                path: path.to_path_buf(),
                field: "tokenizer".into(),
                reason: format!("{e}; pass a Hugging Face tokenizer.json to --tokenizer"),
            })?;
            Ok(Box::new(move |ids: &[u32]| {
                tok.decode(ids, false)
                    .unwrap_or_else(|_| ids.iter().map(|i| format!("<{i}>")).collect())
            }))
        }
    }
}
