//! The `circuitry-train-sae` stage: read one hook's activations from an activation
//! store, hold out a seeded fraction of rows, train, and write
//! `OUT/<hook name>/{cfg.json, sae_weights.safetensors, sparsity.safetensors,
//! training.json}` then `OUT/stage.json` last.
//!
//! Every check (configuration, store, hook, row count, finite values) runs before
//! anything is written, so bad input leaves no output behind.
use std::path::{Path, PathBuf};

use circuitry_core::{HookPoint, StageTimer};
use circuitry_store::ActivationStore;
use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::train::{rng_for, STREAM_EVAL_SPLIT};
use crate::{
    check_finite, evaluate_with_density, log10_feature_density, save_training_outputs, train,
    Architecture, Error, Metrics, Result, SaeConfig, TrainConfig, TrainingRecord,
};

/// The stage binary's name, recorded in `stage.json`.
pub const TOOL: &str = "circuitry-train-sae";

/// A validated configuration of the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// The activation store directory.
    pub store: PathBuf,
    /// The hook to train on.
    pub hook: HookPoint,
    /// Output directory; the SAE goes to `out/<hook name>/`.
    pub out: PathBuf,
    /// Number of latents.
    pub d_sae: usize,
    /// Architecture.
    pub architecture: Architecture,
    /// Model name for `cfg.json`; `None` takes `model_name` from the store's `extra`
    /// metadata, else the store's model fingerprint.
    pub model_name: Option<String>,
    /// Fraction of rows held out for the final evaluation, in `[0, 1)`.
    pub eval_fraction: f64,
    /// Training settings.
    pub train: TrainConfig,
}

/// What the stage produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSummary {
    /// The SAE directory (`out/<hook name>`).
    pub sae_dir: PathBuf,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub eval_rows: usize,
    /// Metrics on the training rows.
    pub train_metrics: Metrics,
    /// Metrics on the held-out rows, if any.
    pub eval_metrics: Option<Metrics>,
}

/// Run the stage (see the module docs).
pub fn run(cfg: &StageConfig) -> Result<StageSummary> {
    let timer = StageTimer::start(TOOL);
    if !(0.0..1.0).contains(&cfg.eval_fraction) {
        return Err(Error::config(
            "eval_fraction",
            cfg.eval_fraction,
            "must be in [0, 1)",
        ));
    }
    // Check d_sae and k before touching the store, so the error names the real
    // problem. d_in is not known yet; 1 stands in for it (the check does not use it).
    SaeConfig {
        architecture: cfg.architecture,
        ..SaeConfig::new(1, cfg.d_sae, cfg.hook)
    }
    .check()?;
    let store = ActivationStore::open(&cfg.store)?;
    let d_in = store.hook_width(cfg.hook)?;
    let sae_cfg = SaeConfig {
        architecture: cfg.architecture,
        model_name: cfg
            .model_name
            .clone()
            .unwrap_or_else(|| model_name_of(&store)),
        context_size: store.meta().context_size,
        dataset_path: Some(cfg.store.display().to_string()),
        ..SaeConfig::new(d_in, cfg.d_sae, cfg.hook)
    };
    cfg.train.check(&sae_cfg)?;
    let data = store.read_hook(cfg.hook)?; // (n_rows, d_in)
    if data.nrows() == 0 {
        return Err(Error::Empty(format!(
            "the store {} holds no rows; re-run the dump stage",
            cfg.store.display()
        )));
    }
    check_finite(data.view())?;
    let (train_x, eval_x) = split(data.view(), cfg.eval_fraction, cfg.train.seed)?;
    tracing::info!(hook = %cfg.hook, d_in, d_sae = cfg.d_sae, train_rows = train_x.nrows(), eval_rows = eval_x.nrows(), "training SAE");

    let (sae, report) = train(sae_cfg.clone(), &cfg.train, train_x.view())?;
    let (eval_metrics, density) = if eval_x.nrows() > 0 {
        let (m, d) = evaluate_with_density(&sae, eval_x.view());
        (Some(m), d)
    } else {
        (None, evaluate_with_density(&sae, train_x.view()).1)
    };
    let train_metrics = report.final_metrics;
    let record = TrainingRecord::new(
        sae_cfg,
        cfg.train.clone(),
        report,
        train_x.nrows(),
        eval_x.nrows(),
        eval_metrics,
    );
    let hook_dir_name = cfg.hook.to_string();
    let sae_dir = cfg.out.join(&hook_dir_name);
    sae.save(&sae_dir)?;
    save_training_outputs(
        &sae_dir,
        &record,
        log10_feature_density(density.view()).view(),
    )?;
    timer.finish(
        cfg,
        &[cfg.store.as_path()],
        &cfg.out,
        &[hook_dir_name.as_str()],
    )?;
    Ok(StageSummary {
        sae_dir,
        train_rows: train_x.nrows(),
        eval_rows: eval_x.nrows(),
        train_metrics,
        eval_metrics,
    })
}

fn model_name_of(store: &ActivationStore) -> String {
    let meta = store.meta();
    meta.extra
        .get("model_name")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| meta.model_fingerprint.clone())
}

/// Split rows into (train, eval) by a seeded shuffle; each part keeps row order.
fn split(
    data: ArrayView2<'_, f32>,
    eval_fraction: f64,
    seed: u64,
) -> Result<(Array2<f32>, Array2<f32>)> {
    let n = data.nrows();
    let mut n_eval = (n as f64 * eval_fraction).round() as usize;
    if eval_fraction > 0.0 && n >= 2 {
        n_eval = n_eval.clamp(1, n - 1);
    }
    if n_eval >= n {
        return Err(Error::Empty(format!(
            "{n} rows leave none to train on with eval_fraction {eval_fraction}; lower --eval-fraction"
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng_for(seed, STREAM_EVAL_SPLIT));
    let (eval_idx, train_idx) = idx.split_at_mut(n_eval);
    eval_idx.sort_unstable();
    train_idx.sort_unstable();
    Ok((
        data.select(Axis(0), train_idx),
        data.select(Axis(0), eval_idx),
    ))
}

/// The directory the stage writes the SAE for `hook` to.
pub fn sae_dir(out: &Path, hook: HookPoint) -> PathBuf {
    out.join(hook.to_string())
}
