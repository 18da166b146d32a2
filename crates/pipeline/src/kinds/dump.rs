//! `dump`: run a model exported to ONNX over a text corpus or paired agreement
//! prompts and write the chosen hooks as an activation store
//! (`circuitry-dump onnx --model DIR --out DIR (--corpus F | --pairs F) --hooks P[,P…]
//! [options]`; the options are [`DumpOptions`]).
use circuitry_core::params::DumpOptions;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, Split, StageParams};
use crate::Input;

pub use circuitry_core::options::StoreDtype;

/// `dump` inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpInputs {
    /// Folder with `model.onnx`, its sidecar `model.onnx.json` and `tokenizer.json`.
    pub model: Input,
    /// A text corpus (.txt lines, .jsonl `text`, .parquet `text` column).
    pub corpus: Option<Input>,
    /// A paired agreement JSONL (`clean_prefix, patch_prefix, clean_answer, patch_answer, case`).
    pub pairs: Option<Input>,
}

/// Validated `dump` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump(DumpInputs, DumpOptions);

impl ParamGuard for Dump {
    const KIND: &'static str = "dump";
    const INPUT_KEYS: &'static [&'static str] = &["model", "corpus", "pairs"];
    type Inputs = DumpInputs;
    type Options = DumpOptions;
    type Checked = Dump;

    fn check(inputs: DumpInputs, options: DumpOptions) -> Result<Dump, Invalid> {
        match (&inputs.corpus, &inputs.pairs) {
            (Some(_), Some(_)) => Err(Invalid::new(
                "pairs",
                "`corpus` and `pairs` are both set",
                "keep one: `corpus` for text windows, `pairs` for agreement prompts",
            )),
            (None, None) => Err(Invalid::new(
                "corpus",
                "neither `corpus` nor `pairs` is set",
                "add `corpus = \"FILE.txt\"` or `pairs = \"FILE.jsonl\"`",
            )),
            _ => Ok(Dump(inputs, options)),
        }
    }
}

impl StageParams for Dump {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-dump"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let p = &self.0;
        let mut v = vec![("model", &p.model)];
        if let Some(c) = &p.corpus {
            v.push(("corpus", c));
        }
        if let Some(pairs) = &p.pairs {
            v.push(("pairs", pairs));
        }
        v
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.word("onnx").input("--model", &p.model).out();
        if let Some(c) = &p.corpus {
            args.input("--corpus", c);
        }
        if let Some(pairs) = &p.pairs {
            args.input("--pairs", pairs);
        }
        args.options(&self.1);
    }

    fn split(&self) -> Option<Split> {
        Some(Split::Parts { rounds: 1 })
    }
}
