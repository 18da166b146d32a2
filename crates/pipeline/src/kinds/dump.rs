//! `dump`: run a GPT-2 exported to ONNX over a text corpus or paired agreement
//! prompts and write the chosen hooks as an activation store
//! (`circuitry-dump onnx --model DIR --out DIR --hooks P[,P…] (--corpus F | --pairs F)
//! [--context-size N] [--batch-size N] [--threads N] [--dtype f32|f16] [--shard-rows N]
//! [--max-tokens N]`).
use std::fmt;

use serde::Deserialize;

use super::{positive, ArgsBuilder, Invalid, ParamGuard, Split, StageParams};
use crate::Input;

/// Storage dtype of the activation columns, as the binary's `--dtype` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 32-bit floats.
    F32,
    /// Half precision (half the size).
    F16,
}

impl fmt::Display for StoreDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreDtype::F32 => "f32",
            StoreDtype::F16 => "f16",
        })
    }
}

/// `dump` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpParams {
    /// Folder with `model.onnx`, its sidecar `model.onnx.json` and `tokenizer.json`.
    pub model: Input,
    /// Hook names or globs, e.g. `["blocks.*.hook_resid_pre"]`.
    pub hooks: Vec<String>,
    /// A text corpus (.txt lines, .jsonl `text`, .parquet `text` column).
    pub corpus: Option<Input>,
    /// A paired agreement JSONL (`clean_prefix, patch_prefix, clean_answer, patch_answer, case`).
    pub pairs: Option<Input>,
    /// Tokens per context window (corpus input).
    pub context_size: Option<usize>,
    /// Sequences per ONNX Runtime call.
    pub batch_size: Option<usize>,
    /// ONNX Runtime intra-op threads.
    pub threads: Option<usize>,
    /// Storage dtype.
    pub dtype: Option<StoreDtype>,
    /// Rows per Parquet shard.
    pub shard_rows: Option<usize>,
    /// Stop after this many tokens.
    pub max_tokens: Option<usize>,
}

/// Validated `dump` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump(DumpParams);

impl ParamGuard for DumpParams {
    const KIND: &'static str = "dump";
    type Checked = Dump;

    fn check(self) -> Result<Dump, Invalid> {
        if self.hooks.is_empty()
            || self
                .hooks
                .iter()
                .any(|h| h.trim().is_empty() || h.contains(','))
        {
            return Err(Invalid::new(
                "hooks",
                "`hooks` must be a non-empty list of hook names or globs, without commas",
                "write e.g. hooks = [\"blocks.*.hook_resid_pre\", \"blocks.2.hook_mlp_out\"]",
            ));
        }
        match (&self.corpus, &self.pairs) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "pairs",
                    "`corpus` and `pairs` are both set",
                    "keep one: `corpus` for text windows, `pairs` for agreement prompts",
                ))
            }
            (None, None) => {
                return Err(Invalid::new(
                    "corpus",
                    "neither `corpus` nor `pairs` is set",
                    "add `corpus = \"FILE.txt\"` or `pairs = \"FILE.jsonl\"`",
                ))
            }
            _ => {}
        }
        positive("context_size", self.context_size)?;
        positive("batch_size", self.batch_size)?;
        positive("threads", self.threads)?;
        positive("shard_rows", self.shard_rows)?;
        positive("max_tokens", self.max_tokens)?;
        Ok(Dump(self))
    }
}

impl StageParams for Dump {
    fn kind(&self) -> &'static str {
        DumpParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-dump"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let mut v = vec![("model", &self.0.model)];
        if let Some(c) = &self.0.corpus {
            v.push(("corpus", c));
        }
        if let Some(p) = &self.0.pairs {
            v.push(("pairs", p));
        }
        v
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.word("onnx").input("--model", &p.model).out();
        args.value("--hooks", p.hooks.join(","));
        if let Some(c) = &p.corpus {
            args.input("--corpus", c);
        }
        if let Some(pairs) = &p.pairs {
            args.input("--pairs", pairs);
        }
        args.opt("--context-size", p.context_size)
            .opt("--batch-size", p.batch_size)
            .opt("--threads", p.threads)
            .opt("--dtype", p.dtype)
            .opt("--shard-rows", p.shard_rows)
            .opt("--max-tokens", p.max_tokens);
    }

    fn split(&self) -> Option<Split> {
        Some(Split::Parts)
    }
}
