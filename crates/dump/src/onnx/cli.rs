//! The command-line arguments of `circuitry-dump onnx`.
use std::path::PathBuf;

use circuitry_core::options::StoreDtype;
use circuitry_core::params::{DumpOptions, StageOptions};
use circuitry_store::Dtype;

use super::{DumpInput, OnnxDumpConfig};
use crate::Result;

/// Sequences per ONNX Runtime call when `--batch-size` is not given.
pub const DEFAULT_BATCH_SIZE: usize = 8;
/// ONNX Runtime intra-op threads when `--threads` is not given.
pub const DEFAULT_THREADS: usize = 2;

/// Arguments of `circuitry-dump onnx`.
#[derive(Debug, Clone, clap::Args)]
pub struct OnnxArgs {
    /// Model folder: model.onnx, model.onnx.json, tokenizer.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Output store directory.
    #[arg(long)]
    pub out: PathBuf,
    /// A text corpus: .txt lines, .jsonl `text`, or .parquet `text` column.
    #[arg(long, conflicts_with = "pairs", required_unless_present = "pairs")]
    pub corpus: Option<PathBuf>,
    /// Agreement pairs JSONL (clean_prefix, patch_prefix, clean_answer, patch_answer, case).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// The options a manifest can set too (hooks, batching, dtype, ...).
    #[command(flatten)]
    pub options: DumpOptions,
    /// Dump only part I of N (0 <= I < N) of the input's batches into OUT/parts/I/,
    /// without OUT/meta.json or stage.json (a Slurm array task). The same command
    /// without --part then finishes any missing part and assembles the parts.
    #[arg(long, value_name = "I/N")]
    pub part: Option<super::Part>,
}

impl OnnxArgs {
    /// The validated configuration, with the ONNX Runtime library `ort_library`
    /// (the binary passes `$ORT_DYLIB_PATH`; `None` searches, see
    /// [`super::runtime::find_library`]).
    pub fn into_config(self, ort_library: Option<PathBuf>) -> Result<OnnxDumpConfig> {
        let input = match (self.corpus, self.pairs) {
            (Some(c), _) => DumpInput::Corpus(c),
            (None, Some(p)) => DumpInput::Pairs(p),
            (None, None) => {
                return Err(crate::Error::BadParameter {
                    name: "corpus",
                    value: String::new(),
                    message: "give --corpus FILE or --pairs FILE.jsonl".into(),
                })
            }
        };
        let o = self.options;
        o.check()?;
        OnnxDumpConfig {
            model: self.model,
            out: self.out,
            hooks: o.hooks,
            input,
            context_size: o.context_size,
            batch_size: o.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            threads: o.threads.unwrap_or(DEFAULT_THREADS),
            dtype: match o.dtype.unwrap_or(StoreDtype::F32) {
                StoreDtype::F32 => Dtype::F32,
                StoreDtype::F16 => Dtype::F16,
            },
            shard_rows: o.shard_rows.unwrap_or(crate::DEFAULT_SHARD_ROWS),
            max_tokens: o.max_tokens,
            ort_library,
        }
        .check()
    }
}
