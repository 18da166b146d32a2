//! `dump-toy`: write the toy network's activations as an activation store
//! (`circuitry-dump toy --model DIR --out DIR [--n-examples N] [--seed N] [--noise F]
//! [--nouns all|train|test] [--shard-rows N]`).
use std::fmt;

use serde::Deserialize;

use super::{non_negative_real, positive, ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

/// Which nouns the dumped examples use, as the binary's `--nouns` flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NounSet {
    /// Every noun of the lexicon.
    All,
    /// Only the nouns the model was trained on.
    Train,
    /// Only the held-out nouns.
    Test,
}

impl fmt::Display for NounSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NounSet::All => "all",
            NounSet::Train => "train",
            NounSet::Test => "test",
        })
    }
}

/// `dump-toy` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpToyParams {
    /// The trained toy model: usually `"@<train-toy stage>"`.
    pub model: Input,
    /// Number of examples to run through the model.
    pub n_examples: Option<usize>,
    /// Seed of example generation.
    pub seed: Option<u64>,
    /// Input noise level.
    pub noise: Option<f64>,
    /// Which nouns to draw examples from.
    pub nouns: Option<NounSet>,
    /// Rows per Parquet shard.
    pub shard_rows: Option<usize>,
}

/// Validated `dump-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpToy(DumpToyParams);

impl ParamGuard for DumpToyParams {
    const KIND: &'static str = "dump-toy";
    type Checked = DumpToy;

    fn check(self) -> Result<DumpToy, Invalid> {
        positive("n_examples", self.n_examples)?;
        non_negative_real("noise", self.noise)?;
        positive("shard_rows", self.shard_rows)?;
        Ok(DumpToy(self))
    }
}

impl StageParams for DumpToy {
    fn kind(&self) -> &'static str {
        DumpToyParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-dump"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        vec![("model", &self.0.model)]
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.word("toy")
            .input("--model", &p.model)
            .out()
            .opt("--n-examples", p.n_examples)
            .opt("--seed", p.seed)
            .opt("--noise", p.noise)
            .opt("--nouns", p.nouns)
            .opt("--shard-rows", p.shard_rows);
    }
}
