//! The `circuitry-train-sae` stage: one SAE per selected hook of an activation
//! store, all trained from one stream over the store, and written to
//! `OUT/<hook name>/{sae_weights.safetensors, cfg.json, sparsity.safetensors,
//! feature_stats.parquet, training.json}` (`training.json` last: it marks the hook
//! complete), then `OUT/stage.json`.
//!
//! The run: check everything that can be checked before writing anything (hooks,
//! widths, `k`, an empty store, NaN/Inf in a scan of every shard); skip hooks whose
//! outputs are complete with the same run key; train the rest from a seeded
//! shuffle buffer over token rows with a checkpoint every N steps (resumed after a
//! kill); then one pass over the store for the final metrics (training and
//! held-out rows) and feature statistics. With `only_hooks`, just those hooks are
//! trained and `stage.json` is not written (one Slurm array task per hook).
//!
//! An SAE depends only on its own hook's configuration and the store, never on
//! which other hooks share the run, so per-hook runs and one joint run give the
//! same bytes.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use circuitry_core::preflight::{self, MemoryEstimate};
use circuitry_core::progress::Progress;
use circuitry_core::{atomic, fingerprint, HookPoint, StageTimer, TOOL_VERSION};
use circuitry_models::transformer::Transformer;
use circuitry_store::{ActivationStore, META_FILE};
use ndarray::s;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ce::{self, CeEvaluator, CeLoss};
use crate::checkpoint::{self, CheckpointMeta, CHECKPOINT_VERSION};
use crate::stats::{self, ContextTokens};
use crate::stream::{self, is_eval_row, HookLayout, TrainStream};
use crate::train::{LogEntry, Trainer};
use crate::{
    log10_feature_density, save_training_outputs, ActivationNormalization, Architecture, Backend,
    Error, Metrics, OutlierRule, Result, Sae, SaeConfig, TrainConfig, TrainingRecord,
    TRAINING_RECORD_VERSION,
};

mod evaluate;
use evaluate::{check_reproduces, final_pass};

/// The stage binary's name, recorded in `stage.json`.
pub const TOOL: &str = "circuitry-train-sae";
/// Rows encoded at once in the final pass.
const EVAL_CHUNK: usize = 2048;

/// A validated configuration of the stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    /// The activation store directory.
    pub store: PathBuf,
    /// The hooks to train SAEs on (one each).
    pub hooks: Vec<HookPoint>,
    /// Train only these of `hooks` and do not write `stage.json` (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_hooks: Vec<HookPoint>,
    /// Output directory; each SAE goes to `out/<hook name>/`.
    pub out: PathBuf,
    /// Expected input width; an error when a hook's width differs (`None`: the store's).
    pub d_in: Option<usize>,
    /// Number of latents.
    pub d_sae: usize,
    /// Architecture.
    pub architecture: Architecture,
    /// Input normalisation.
    pub normalize_activations: ActivationNormalization,
    /// Model name for `cfg.json`; `None` takes `model_name` from the store's `extra`
    /// metadata, else the store's model fingerprint.
    pub model_name: Option<String>,
    /// Fraction of rows held out for the final evaluation, in `[0, 1)`.
    pub eval_fraction: f64,
    /// Rows the shuffle buffer holds (memory: rows × the hooks' total width × 4 bytes).
    pub buffer_rows: usize,
    /// A checkpoint every this many steps; 0 for none.
    pub checkpoint_every: usize,
    /// Top activations kept per feature in `feature_stats.parquet`.
    pub top_n: usize,
    /// Tokenizer (`tokenizer.json`) to decode contexts; `None`: token ids as text.
    pub tokenizer: Option<PathBuf>,
    /// Training settings.
    pub train: TrainConfig,
    /// The model directory (`config.json`, `model.safetensors`) the store was dumped
    /// from: with it each SAE gets `ce_loss_score` on held-out token windows
    /// ([`crate::ce`]); without it the score is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// At most this many token windows for `ce_loss_score`.
    #[serde(default = "default_ce_sequences")]
    pub ce_sequences: usize,
    /// Token rows whose norm at a hook exceeds this many times the hook's median row
    /// norm are left out of that hook's training, metrics, feature statistics and
    /// `ce_loss_score` splice ([`stream::outlier_norms`]); 0 keeps every row.
    #[serde(default)]
    pub outlier_norm_ratio: f64,
}

/// Default of [`StageConfig::ce_sequences`].
pub const DEFAULT_CE_SEQUENCES: usize = 64;

fn default_ce_sequences() -> usize {
    DEFAULT_CE_SEQUENCES
}

/// Windows run through the model at once for `ce_loss_score`.
const CE_BATCH: usize = 8;
/// Largest accepted |stored − recomputed| activation, relative to `max(1, max |stored|)`.
pub const REPRODUCTION_TOLERANCE: f32 = 2e-3;

/// What the stage did for one hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HookSummary {
    /// The hook.
    pub hook: HookPoint,
    /// The SAE directory (`out/<hook name>`).
    pub sae_dir: PathBuf,
    /// True when its outputs were already complete and it was not retrained.
    pub skipped: bool,
    /// The training record (read back when skipped).
    pub record: TrainingRecord,
}

/// The fields of the configuration that determine one hook's SAE.
#[derive(Serialize)]
struct RunKey<'a> {
    tool_version: &'a str,
    store_meta: String,
    hook: HookPoint,
    d_sae: usize,
    architecture: Architecture,
    normalize_activations: ActivationNormalization,
    model_name: &'a Option<String>,
    eval_fraction: f64,
    buffer_rows: usize,
    top_n: usize,
    tokenizer: &'a Option<PathBuf>,
    /// With `mkl` (`--mkl-cbwr`, MKL's CNR mode, which changes its rounding) only
    /// when that is not the default, so keys of runs made before it existed stay valid.
    train: &'a TrainConfig,
    /// The backend `train.gemm` resolved to (`auto` may differ between machines).
    gemm: &'static str,
    /// The model's fingerprint and the window cap, when `ce_loss_score` is computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    ce: Option<(String, usize)>,
    /// `--outlier-norm-ratio`, when not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    outlier_norm_ratio: Option<f64>,
}

/// Run the stage (see the module docs). The memory estimate of the hooks still to
/// train (not those whose SAE is complete with the same configuration: after a Slurm
/// array of one task per hook, the plain job trains none) is compared with `limit`.
/// `timer` was started with the command line `stage.json` records.
pub fn run(
    cfg: &StageConfig,
    limit: preflight::MemoryLimit,
    timer: StageTimer,
) -> Result<Vec<HookSummary>> {
    check(cfg)?;
    // `--gemm mkl` without MKL fails here, before anything is read or written.
    let backend = Backend::resolve(cfg.train.gemm, &cfg.train.mkl)?;
    tracing::info!(gemm = %backend.describe(), "dense products");
    preflight::check_writable(&cfg.out, "--out")?;
    let store = ActivationStore::open(&cfg.store)?;
    let layout_all = check_store(cfg, &store)?;
    let model = load_model(cfg, &store)?;
    let store_meta = fingerprint::fingerprint_path(&cfg.store.join(META_FILE))?;
    let selected: Vec<HookPoint> = if cfg.only_hooks.is_empty() {
        cfg.hooks.clone()
    } else {
        cfg.only_hooks.clone()
    };
    let mut done = Vec::new();
    let mut todo = Vec::new();
    for &hook in &selected {
        let key = run_key(
            cfg,
            hook,
            &store_meta,
            model.as_ref().map(|m| m.1.as_str()),
            backend,
        )?;
        let dir = sae_dir(&cfg.out, hook);
        match complete_record(&dir, &key) {
            Some(record) => {
                tracing::info!(%hook, dir = %dir.display(), "skipping: outputs complete with the same configuration");
                done.push(HookSummary {
                    hook,
                    sae_dir: dir,
                    skipped: true,
                    record,
                });
            }
            None => todo.push((hook, key)),
        }
    }
    let to_train: Vec<(HookPoint, usize)> = layout_all
        .hooks
        .iter()
        .filter(|(h, _)| todo.iter().any(|(t, _)| t == h))
        .copied()
        .collect();
    memory_estimate(cfg, &to_train, Some(largest_shard(&store)))
        .check_within(TOOL, MEMORY_FIX, limit)?;
    if !todo.is_empty() {
        done.extend(train_hooks(
            cfg,
            &store,
            model.as_ref().map(|m| &m.0),
            &todo,
        )?);
    }
    done.sort_by_key(|h| selected.iter().position(|s| *s == h.hook));
    if cfg.only_hooks.is_empty() {
        let names: Vec<String> = cfg.hooks.iter().map(|h| h.to_string()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        timer.finish(cfg, &[cfg.store.as_path()], &cfg.out, &refs)?;
    }
    Ok(done)
}

/// What to change when [`memory_estimate`] exceeds the machine.
const MEMORY_FIX: &str = "lower --d-sae, --batch-size or --buffer-rows, train fewer --hooks at once (--only-hook), or run on a machine with more memory";

/// The store's layout for `cfg.hooks`, checked: rows present, widths as `--d-in`.
fn check_store(cfg: &StageConfig, store: &ActivationStore) -> Result<HookLayout> {
    if store.n_rows() == 0 {
        return Err(Error::Empty(format!(
            "the store {} holds no rows; re-run the dump stage with a non-empty corpus",
            cfg.store.display()
        )));
    }
    let layout = HookLayout::new(store, &cfg.hooks)?;
    for &(hook, width) in &layout.hooks {
        if let Some(d_in) = cfg.d_in.filter(|&d| d != width) {
            return Err(Error::WidthMismatch {
                hook,
                d_in,
                width,
                store: cfg.store.clone(),
            });
        }
    }
    Ok(layout)
}

/// The memory the stage needs for `hooks` ((hook, d_in) pairs; with `only_hooks`,
/// only those are trained), in f32 values of 4 bytes:
///
/// - per SAE: parameters `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc`,
///   `b_dec`, `threshold`; as many again for the gradients and twice for Adam's
///   two moments; per step (batch, d_sae) pre-activations, activations and their
///   gradient, and (batch, d_in) inputs, reconstructions and their gradient; the
///   final pass's (2048, d_sae) codes;
/// - shared: the shuffle buffer (buffer_rows, Σ d_in) and a drawn batch;
/// - when the store exists (`shard_rows`: its largest shard's rows): one shard of the
///   trained hooks being read, (shard_rows, Σ d_in) values plus decoding buffers.
pub fn memory_estimate(
    cfg: &StageConfig,
    hooks: &[(HookPoint, usize)],
    shard_rows: Option<u64>,
) -> MemoryEstimate {
    let mut est = MemoryEstimate::new();
    let trained = hooks
        .iter()
        .filter(|(h, _)| cfg.only_hooks.is_empty() || cfg.only_hooks.contains(h));
    let (d_sae, batch) = (cfg.d_sae as u128, cfg.train.batch_size as u128);
    let mut total_width = 0u128;
    for &(hook, d_in) in trained {
        let d_in = d_in as u128;
        total_width += d_in;
        let params = (2 * d_in).saturating_mul(d_sae) + 2 * d_sae + d_in;
        est.add(format!("{hook}: parameters"), params, 4);
        est.add(format!("{hook}: gradients"), params, 4);
        est.add(format!("{hook}: Adam moments"), params.saturating_mul(2), 4);
        est.add(
            format!("{hook}: batch buffers"),
            (3 * batch).saturating_mul(d_sae) + 3 * batch * d_in,
            4,
        );
        est.add(
            format!("{hook}: evaluation codes"),
            (EVAL_CHUNK as u128).saturating_mul(d_sae),
            4,
        );
    }
    est.add(
        "shuffle buffer",
        (cfg.buffer_rows as u128 + batch).saturating_mul(total_width),
        4,
    );
    if let Some(rows) = shard_rows {
        // One shard of the trained hooks at a time: its f32 values, then its training
        // rows filled as each hook's array is freed, plus Parquet's decoding buffers
        // (about half again).
        est.add(
            "a shard being read",
            u128::from(rows).saturating_mul(total_width),
            6,
        );
    }
    est
}

/// Rows of the store's largest shard.
fn largest_shard(store: &ActivationStore) -> u64 {
    store
        .meta()
        .shards
        .iter()
        .map(|s| s.rows)
        .max()
        .unwrap_or(0)
}

/// `--check-only`: every check [`run`] makes before its work, writing nothing (no
/// folder is created): the options, the dense-product library, the output
/// folder's writability, and, when a dump has finished the store, its hooks and widths
/// and the memory estimate, compared with `limit` (without a store, the estimate
/// uses `--d-in` when given).
pub fn check_only(cfg: &StageConfig, limit: preflight::MemoryLimit) -> Result<()> {
    check(cfg)?;
    Backend::resolve(cfg.train.gemm, &cfg.train.mkl)?;
    preflight::check_writable(&cfg.out, "--out")?;
    // A store no dump has finished (the dump stage upstream has not run, or stopped
    // and resumes first) is checked when the stage runs.
    let (hooks, shard_rows) = match ActivationStore::open_if_finished(&cfg.store)? {
        Some(store) => (check_store(cfg, &store)?.hooks, Some(largest_shard(&store))),
        None => match cfg.d_in {
            Some(d) => (cfg.hooks.iter().map(|&h| (h, d)).collect(), None),
            None => (Vec::new(), None),
        },
    };
    memory_estimate(cfg, &hooks, shard_rows).check_within(TOOL, MEMORY_FIX, limit)?;
    for (what, path) in [("--model", &cfg.model), ("--tokenizer", &cfg.tokenizer)] {
        if let Some(p) = path.as_ref().filter(|p| !p.exists()) {
            return Err(Error::config(
                if what == "--model" {
                    "model"
                } else {
                    "tokenizer"
                },
                p.display(),
                format!("{what} {} does not exist", p.display()),
            ));
        }
    }
    Ok(())
}

fn check(cfg: &StageConfig) -> Result<()> {
    if !(cfg.outlier_norm_ratio == 0.0 || cfg.outlier_norm_ratio > 1.0)
        || !cfg.outlier_norm_ratio.is_finite()
    {
        return Err(Error::config(
            "outlier_norm_ratio",
            cfg.outlier_norm_ratio,
            "must be 0 (keep every row) or above 1 (for example 10)",
        ));
    }
    if !(0.0..1.0).contains(&cfg.eval_fraction) {
        return Err(Error::config(
            "eval_fraction",
            cfg.eval_fraction,
            "must be in [0, 1)",
        ));
    }
    if cfg.hooks.is_empty() {
        return Err(Error::config(
            "hook",
            "(none)",
            "name at least one hook with --hooks",
        ));
    }
    for (i, h) in cfg.hooks.iter().enumerate() {
        if cfg.hooks[..i].contains(h) {
            return Err(Error::config(
                "hook",
                h,
                "is listed twice; list each hook once",
            ));
        }
    }
    for h in &cfg.only_hooks {
        if !cfg.hooks.contains(h) {
            return Err(Error::config(
                "only_hook",
                h,
                format!(
                    "is not one of the stage's hooks ({}); --only-hook picks among --hooks",
                    cfg.hooks
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    // d_sae and k before touching the store, so the error names the real problem
    // (d_in is not known yet; 1 stands in for it, the check does not use it).
    let probe = SaeConfig {
        architecture: cfg.architecture,
        ..SaeConfig::new(1, cfg.d_sae, cfg.hooks[0])
    };
    probe.check()?;
    cfg.train.check(&probe)
}

/// The model of `cfg.model` and its fingerprint, checked against the store's
/// model fingerprint and hooks.
fn load_model(cfg: &StageConfig, store: &ActivationStore) -> Result<Option<(Transformer, String)>> {
    let Some(dir) = &cfg.model else {
        return Ok(None);
    };
    let weights = dir.join("model.safetensors");
    let fp = fingerprint::fingerprint_path(&weights)?;
    let store_fp = &store.meta().model_fingerprint;
    if &fp != store_fp {
        return Err(Error::config(
            "model",
            dir.display(),
            format!(
                "its weights (fingerprint {fp}) are not those the store {} was dumped from ({store_fp}); give --model the model directory of the dump",
                cfg.store.display()
            ),
        ));
    }
    let model: Transformer = Transformer::load(dir)?;
    let n_layer = model.config().n_layer;
    for &hook in &cfg.hooks {
        if hook.layer().is_none_or(|l| l >= n_layer) {
            return Err(Error::config(
                "model",
                dir.display(),
                format!("ce_loss_score splices the SAE into a block of the model, but {hook} is not in one of its {n_layer} blocks"),
            ));
        }
    }
    Ok(Some((model, fp)))
}

fn run_key(
    cfg: &StageConfig,
    hook: HookPoint,
    store_meta: &str,
    model_fp: Option<&str>,
    backend: Backend,
) -> Result<String> {
    let key = RunKey {
        tool_version: TOOL_VERSION,
        store_meta: store_meta.to_string(),
        hook,
        d_sae: cfg.d_sae,
        architecture: cfg.architecture,
        normalize_activations: cfg.normalize_activations,
        model_name: &cfg.model_name,
        eval_fraction: cfg.eval_fraction,
        buffer_rows: cfg.buffer_rows,
        top_n: cfg.top_n,
        tokenizer: &cfg.tokenizer,
        train: &cfg.train,
        gemm: backend.name(),
        ce: model_fp.map(|fp| (fp.to_string(), cfg.ce_sequences)),
        outlier_norm_ratio: (cfg.outlier_norm_ratio != 0.0).then_some(cfg.outlier_norm_ratio),
    };
    let json = serde_json::to_vec(&key).map_err(|e| Error::Checkpoint(format!("run key: {e}")))?;
    Ok(fingerprint::fingerprint_bytes(&json))
}

/// The record of a hook whose outputs are all there with `key`.
fn complete_record(dir: &Path, key: &str) -> Option<TrainingRecord> {
    let record = TrainingRecord::read(dir).ok()?;
    let files = [
        crate::WEIGHTS_FILE,
        crate::CFG_FILE,
        crate::SPARSITY_FILE,
        stats::FEATURE_STATS_FILE,
    ];
    (record.run_key == key && files.iter().all(|f| dir.join(f).is_file())).then_some(record)
}

fn model_name_of(store: &ActivationStore) -> String {
    let meta = store.meta();
    meta.extra
        .get("model_name")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| meta.model_fingerprint.clone())
}

/// Train, evaluate and write the SAEs of `todo` ((hook, run key) pairs).
fn train_hooks(
    cfg: &StageConfig,
    store: &ActivationStore,
    model: Option<&Transformer>,
    todo: &[(HookPoint, String)],
) -> Result<Vec<HookSummary>> {
    let hooks: Vec<HookPoint> = todo.iter().map(|t| t.0).collect();
    let keys: Vec<String> = todo.iter().map(|t| t.1.clone()).collect();
    let layout = HookLayout::new(store, &hooks)?;
    let model_name = cfg
        .model_name
        .clone()
        .unwrap_or_else(|| model_name_of(store));
    let sae_cfgs: Vec<SaeConfig> = layout
        .hooks
        .iter()
        .map(|&(hook, width)| SaeConfig {
            architecture: cfg.architecture,
            normalize_activations: cfg.normalize_activations,
            model_name: model_name.clone(),
            context_size: store.meta().context_size,
            dataset_path: Some(cfg.store.display().to_string()),
            ..SaeConfig::new(width, cfg.d_sae, hook)
        })
        .collect();
    for c in &sae_cfgs {
        cfg.train.check(c)?;
    }
    let t = &cfg.train;
    let max_norms = stream::outlier_norms(store, &layout, cfg.outlier_norm_ratio)?;
    let scan = stream::scan(store, &layout, t.seed, cfg.eval_fraction, t.b_dec_init_rows)?;
    if scan.train_rows == 0 {
        return Err(Error::Empty(format!(
            "all {} rows of {} are held out; lower --eval-fraction",
            scan.eval_rows,
            cfg.store.display()
        )));
    }
    tracing::info!(
        hooks = hooks.len(),
        train_rows = scan.train_rows,
        eval_rows = scan.eval_rows,
        steps = t.steps,
        "training SAEs"
    );

    let names: Vec<String> = hooks.iter().map(|h| h.to_string()).collect();
    let ck_path = checkpoint::path_for(&cfg.out, &names);
    let mut resume = checkpoint::load(&ck_path)?;
    if let Some(ck) = &resume {
        if ck.meta.run_keys != keys {
            tracing::warn!(path = %ck_path.display(), "ignoring a checkpoint of another configuration");
            resume = None;
        }
    }
    let (mut trainers, state) = match resume {
        Some(mut ck) => {
            tracing::info!(step = ck.meta.step, path = %ck_path.display(), "resuming from checkpoint");
            let metas = std::mem::take(&mut ck.meta.trainers);
            let mut trainers = Vec::with_capacity(hooks.len());
            for (i, (c, m)) in sae_cfgs.iter().zip(metas).enumerate() {
                trainers.push(Trainer::restore(c.clone(), t, m, |n, s| {
                    ck.tensor(i, n, s)
                })?);
            }
            (trainers, Some(ck.meta.stream))
        }
        None => {
            let mut trainers = Vec::with_capacity(hooks.len());
            for (i, c) in sae_cfgs.iter().enumerate() {
                let sample = scan.sample.slice(s![.., layout.columns(i)]); // (n, d_in)
                trainers.push(Trainer::new(c.clone(), t, sample)?);
            }
            (trainers, None)
        }
    };
    if trainers.len() != hooks.len() {
        return Err(Error::Checkpoint(format!(
            "{} holds the wrong number of trainers",
            ck_path.display()
        )));
    }
    let mut stream = TrainStream::new(
        store,
        layout.clone(),
        t.seed,
        cfg.eval_fraction,
        t.batch_size,
        cfg.buffer_rows,
        state.as_ref(),
    )?;
    let mut step = trainers[0].steps_done();
    let mut progress = Progress::new(
        format!("training {} SAE(s)", trainers.len()),
        "steps",
        t.steps as u64,
    );
    progress.resume_at(step as u64);
    while step < t.steps {
        let batch = stream.next_batch()?; // (batch, total width)
        trainers
            .par_iter_mut()
            .enumerate()
            .map(|(i, tr)| {
                let x = stream::hook_view(&batch, &layout, i); // (batch, d_in)
                match stream::without_outliers(x, max_norms[i]) {
                    Some(kept) => tr.step(kept.view()).map(|_| ()),
                    None => tr.step(x).map(|_| ()),
                }
            })
            .collect::<Result<Vec<()>>>()?;
        step += 1;
        progress.set_position(step as u64);
        if cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0 && step < t.steps {
            let exported: Vec<_> = trainers.iter().map(Trainer::export).collect();
            let meta = CheckpointMeta {
                version: CHECKPOINT_VERSION,
                run_keys: keys.clone(),
                step,
                stream: stream.state(),
                trainers: exported.iter().map(|e| e.0.clone()).collect(),
            };
            let tensors: Vec<_> = exported.into_iter().map(|e| e.1).collect();
            checkpoint::save(&ck_path, &meta, &tensors)?;
            tracing::info!(step, path = %ck_path.display(), "checkpoint");
        }
    }
    progress.finish();
    let epochs = stream.epoch() + 1;
    let saes: Vec<(Sae, Vec<LogEntry>, u64)> = trainers.into_iter().map(Trainer::finish).collect();
    let ce_windows = match model {
        Some(_) => {
            let (seed, frac) = (cfg.train.seed, cfg.eval_fraction);
            let counted = |row| frac == 0.0 || is_eval_row(seed, frac, row);
            ce::windows_from_store(store, counted, cfg.ce_sequences, CE_BATCH)?
        }
        None => Vec::new(),
    };
    let check_rows: Vec<u64> = ce_windows
        .first()
        .map(|b| b.rows.iter().copied().collect())
        .unwrap_or_default();
    let finals = final_pass(cfg, store, &layout, &saes, &check_rows, &max_norms)?;
    let ce_losses: Vec<Option<CeLoss>> = match model {
        Some(model) => {
            let ev = CeEvaluator::new(model, ce_windows)?;
            for ((sae, _, _), fin) in saes.iter().zip(&finals) {
                check_reproduces(&ev, sae.cfg.hook_name, &fin.check, &cfg.store)?;
            }
            tracing::info!(
                sequences = ev.batches().iter().map(|b| b.ids.nrows()).sum::<usize>(),
                "ce_loss_score: SAEs spliced into the model"
            );
            saes.par_iter()
                .zip(&max_norms)
                .map(|((sae, _, _), &max_norm)| ev.evaluate(sae, max_norm).map(Some))
                .collect::<Result<_>>()?
        }
        None => vec![None; saes.len()],
    };
    // Tokens of the rows the feature contexts show, read shard by shard.
    let wanted: BTreeSet<u64> = finals
        .iter()
        .flat_map(|fin| fin.stats.context_rows())
        .collect();
    let context_tokens = if wanted.is_empty() {
        ContextTokens::default()
    } else {
        ContextTokens::read(store, &wanted)?
    };
    let backend = Backend::resolve(cfg.train.gemm, &cfg.train.mkl)?;
    let decode = stats::decoder(cfg.tokenizer.as_deref())?;
    let mut out = Vec::with_capacity(saes.len());
    for (((((sae, history, rows_seen), fin), key), ce_loss), max_norm) in saes
        .into_iter()
        .zip(finals)
        .zip(keys)
        .zip(ce_losses)
        .zip(max_norms)
    {
        // Written into a temporary sibling and renamed into place when whole, so
        // `dir` never holds a half-written SAE (a full disk, a kill).
        let dir = sae_dir(&cfg.out, sae.cfg.hook_name);
        let tmp = atomic::temp_path(&dir);
        remove_dir_if_any(&tmp)?;
        let (train_metrics, train_density) = fin.train.finish();
        let eval = (fin.eval.rows() > 0).then(|| fin.eval.finish());
        let density = eval.as_ref().map_or(&train_density, |e| &e.1);
        let record = TrainingRecord {
            schema_version: TRAINING_RECORD_VERSION,
            tool_version: TOOL_VERSION.into(),
            sae: sae.cfg.clone(),
            train: cfg.train.clone(),
            steps: cfg.train.steps,
            rows_seen,
            train_rows: fin.train.rows() as usize,
            eval_rows: fin.eval.rows() as usize,
            history,
            train_metrics,
            eval_metrics: eval.as_ref().map(|e| e.0),
            ce_loss,
            run_key: key,
            epochs,
            gemm: describe_products(backend, &sae.cfg, cfg.train.topk_prefilter),
            outliers: max_norm.is_finite().then_some(OutlierRule {
                ratio: cfg.outlier_norm_ratio,
                max_norm,
            }),
        };
        let written = (|| {
            sae.save_stage_output(&tmp)?;
            fin.stats.write(&tmp, &context_tokens, &*decode)?;
            save_training_outputs(&tmp, &record, log10_feature_density(density.view()).view())?;
            publish(&tmp, &dir)
        })();
        if let Err(e) = written {
            // Best effort: the error that matters is `e`.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        out.push(HookSummary {
            hook: sae.cfg.hook_name,
            sae_dir: dir,
            skipped: false,
            record,
        });
    }
    if ck_path.is_file() {
        std::fs::remove_file(&ck_path).map_err(|source| Error::Write {
            path: ck_path.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// `training.json`'s `gemm`: the backend, and `; TopK bf16 prefilter` where a TopK SAE of
/// this width trained with it.
fn describe_products(backend: Backend, sae: &SaeConfig, topk_prefilter: bool) -> String {
    let mut gemm = backend.describe();
    if matches!(sae.architecture, Architecture::TopK { .. })
        && topk_prefilter
        && crate::kernel::topk_prefilter_available(backend, sae.d_in, sae.d_sae)
    {
        gemm.push_str("; TopK bf16 prefilter");
    }
    gemm
}
/// Remove the folder `dir` and everything in it, if it exists.
fn remove_dir_if_any(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Write {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Move the finished SAE folder `tmp` to `dir`. An older `dir` (another
/// configuration's SAE) is first renamed aside and removed after, so `dir` is at
/// every moment either the old SAE, absent, or the new one: never part of one.
fn publish(tmp: &Path, dir: &Path) -> Result<()> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| Error::Write {
            path: to.to_path_buf(),
            source,
        })
    };
    if dir.exists() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let old =
            atomic::temp_path(&dir.with_file_name(format!("{}.old", name.unwrap_or_default())));
        remove_dir_if_any(&old)?;
        rename(dir, &old)?;
        rename(tmp, dir)?;
        remove_dir_if_any(&old)
    } else {
        rename(tmp, dir)
    }
}

/// The directory the stage writes the SAE for `hook` to.
pub fn sae_dir(out: &Path, hook: HookPoint) -> PathBuf {
    out.join(hook.to_string())
}

/// The final metrics a summary reports: held-out if any, else training.
pub fn headline(record: &TrainingRecord) -> (&'static str, Metrics) {
    match record.eval_metrics {
        Some(m) => ("held-out", m),
        None => ("training", record.train_metrics),
    }
}
