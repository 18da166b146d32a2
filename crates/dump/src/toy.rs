//! Dump the toy agreement network's activations.
//!
//! One row per example: `seq` = example index, `pos` = 0, `token_id` = the subject
//! noun's id in the lexicon's vocabulary (even ids singular, odd ids plural; the
//! vocabulary is stored in `meta.json`'s `extra.vocab`), and the hook columns
//! `toy.hook_input` (2), `toy.hook_hidden` (d_hidden) and `toy.hook_logits` (2).
use std::path::{Path, PathBuf};

use circuitry_core::preflight::MemoryLimit;
use circuitry_core::{fingerprint::fingerprint_path, HookPoint};
use circuitry_models::toy::{check_noise, Lexicon, SubjectVerbAgreementNN, ToyDataset};
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreMeta, StoreSpec, StoreWriter};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use circuitry_core::options::NounSet;

/// Examples a toy dump writes when `--n-examples` is not given.
pub const DEFAULT_EXAMPLES: usize = 2000;
/// The examples' seed when `--seed` is not given.
pub const DEFAULT_SEED: u64 = 1;

/// Validated configuration of a toy dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyDumpConfig {
    /// Directory of the trained toy model.
    pub model: PathBuf,
    /// Output store directory.
    pub out: PathBuf,
    /// Number of examples.
    pub n_examples: usize,
    /// Seed of the examples.
    pub seed: u64,
    /// Input noise; `None` uses the model's training noise.
    pub noise: Option<f64>,
    /// Which nouns to draw from.
    pub nouns: NounSet,
    /// Rows per Parquet shard.
    pub shard_rows: usize,
}

impl ToyDumpConfig {
    /// Check the ranges; the returned config is the only one [`dump`] accepts.
    pub fn check(self) -> Result<Self> {
        if self.n_examples == 0 {
            return Err(Error::BadParameter {
                name: "n-examples",
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.shard_rows == 0 {
            return Err(Error::BadParameter {
                name: "shard-rows",
                value: "0".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(noise) = self.noise {
            check_noise(noise)?;
        }
        Ok(self)
    }
}

/// Run the toy model on freshly drawn examples and write the store at `cfg.out`.
/// `--check-only` for `circuitry-dump toy`: the options (already checked by
/// [`ToyDumpConfig::check`]), the memory estimate (every example's input, hidden
/// and logit rows, held until written) and that `--out` can be written. Writes
/// nothing. The estimate is compared with `limit`.
pub fn check_only(cfg: &ToyDumpConfig, limit: MemoryLimit) -> Result<()> {
    circuitry_core::preflight::check_writable(&cfg.out, "--out")?;
    let hidden = match SubjectVerbAgreementNN::load(&cfg.model) {
        Ok((model, _)) => model.d_hidden() as u128,
        Err(_) if !cfg.model.exists() => 0, // an earlier stage writes it
        Err(e) => return Err(e.into()),
    };
    let mut est = circuitry_core::preflight::MemoryEstimate::new();
    est.add(
        "rows of every hook",
        (cfg.n_examples as u128).saturating_mul(2 + hidden + 2 + 4),
        2 * 4,
    );
    est.check_within("circuitry-dump toy", "lower --n-examples", limit)?;
    Ok(())
}

/// Resumes a partial store with the same spec; returns its metadata.
pub fn dump(cfg: &ToyDumpConfig) -> Result<StoreMeta> {
    let (model, model_cfg) = SubjectVerbAgreementNN::load(&cfg.model)?;
    let lexicon = Lexicon::new(model_cfg.lexicon_seed);
    let nouns = match cfg.nouns {
        NounSet::All => (0..lexicon.forms.len()).collect(),
        NounSet::Train => lexicon.train_nouns(),
        NounSet::Test => lexicon.test_nouns(),
    };
    let noise = cfg.noise.unwrap_or(model_cfg.noise) as f32;
    let data = ToyDataset::generate(&lexicon, nouns, cfg.n_examples, noise, cfg.seed);
    let fwd = model.forward(data.inputs.view());

    let spec = StoreSpec {
        hooks: vec![
            HookMeta {
                hook: HookPoint::ToyInput,
                width: 2,
            },
            HookMeta {
                hook: HookPoint::ToyHidden,
                width: model.d_hidden(),
            },
            HookMeta {
                hook: HookPoint::ToyLogits,
                width: 2,
            },
        ],
        dtype: Dtype::F32,
        model_fingerprint: model_fingerprint(&cfg.model)?,
        tokenizer_fingerprint: None,
        context_size: 1,
        paired: false,
        shard_rows: cfg.shard_rows,
        extra: serde_json::json!({
            "source": "toy",
            "vocab": lexicon.vocab(),
            "labels": "token_id % 2: 0 = singular (\"runs\"), 1 = plural (\"run\")",
            "config": cfg,
        }),
    };
    let mut writer = StoreWriter::create(&cfg.out, spec)?;
    let start = writer.rows_done() as usize;
    if start < data.len() {
        let n = data.len();
        let seq: Vec<u64> = (start as u64..n as u64).collect();
        let pos = vec![0u32; n - start];
        let rows = ndarray::s![start.., ..];
        writer.write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &data.token_ids[start..],
            example: None,
            side: None,
            acts: vec![
                (HookPoint::ToyInput, data.inputs.slice(rows)),
                (HookPoint::ToyHidden, fwd.hidden.slice(rows)),
                (HookPoint::ToyLogits, fwd.logits.slice(rows)),
            ],
        })?;
    }
    Ok(writer.finish()?)
}

/// The fingerprint a store records for a toy model: BLAKE3 of its `model.safetensors`.
pub fn model_fingerprint(model_dir: &Path) -> Result<String> {
    Ok(fingerprint_path(&model_dir.join("model.safetensors"))?)
}
