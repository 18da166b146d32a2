//! The command-line arguments of `circuitry-dump onnx`.
use std::path::PathBuf;

use circuitry_store::Dtype;

use super::{DumpInput, OnnxDumpConfig};
use crate::Result;

/// Storage dtype as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// Half precision.
    F16,
}

/// Arguments of `circuitry-dump onnx`.
#[derive(Debug, Clone, clap::Args)]
pub struct OnnxArgs {
    /// Model folder: model.onnx, model.onnx.json, tokenizer.json.
    #[arg(long)]
    pub model: PathBuf,
    /// Output store directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Hook names or globs, comma-separated (blocks.*.hook_resid_pre).
    #[arg(long, value_delimiter = ',', required = true)]
    pub hooks: Vec<String>,
    /// A text corpus: .txt lines, .jsonl `text`, or .parquet `text` column.
    #[arg(long, conflicts_with = "pairs", required_unless_present = "pairs")]
    pub corpus: Option<PathBuf>,
    /// Agreement pairs JSONL (clean_prefix, patch_prefix, clean_answer, patch_answer, case).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Window length for a corpus (default: the model's context).
    #[arg(long)]
    pub context_size: Option<usize>,
    /// Sequences per ONNX Runtime call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Storage dtype of the activations.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Rows per Parquet shard.
    #[arg(long, default_value_t = 100_000)]
    pub shard_rows: usize,
    /// Stop after this many tokens (rows).
    #[arg(long)]
    pub max_tokens: Option<usize>,
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
        OnnxDumpConfig {
            model: self.model,
            out: self.out,
            hooks: self.hooks,
            input,
            context_size: self.context_size,
            batch_size: self.batch_size,
            threads: self.threads,
            dtype: match self.dtype {
                DtypeArg::F32 => Dtype::F32,
                DtypeArg::F16 => Dtype::F16,
            },
            shard_rows: self.shard_rows,
            max_tokens: self.max_tokens,
            ort_library,
        }
        .check()
    }
}
