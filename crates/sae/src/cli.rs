//! Command-line arguments of `circuitry-train-sae` (part of the binary, not the library)
//! and their conversion into the validated [`StageConfig`].
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use circuitry_core::options::{SaeArchitecture, SaeGemm, SaeNormalization};
use circuitry_core::HookPoint;
use circuitry_sae::stage::{self, StageConfig};
use circuitry_sae::{
    ActivationNormalization, Architecture, CbwrMode, GemmChoice, MklSettings, TrainConfig,
};
use clap::Parser;

/// Train a sparse autoencoder on each --hook of an activation store, from one
/// shuffled stream over its token rows, and write each in SAELens layout (plus
/// feature_stats.parquet) to OUT/<hook name>/, then OUT/stage.json.
#[derive(Debug, Parser)]
#[command(name = "circuitry-train-sae", version)]
pub(crate) struct Args {
    /// Activation store directory (written by the dump stage).
    #[arg(long)]
    store: PathBuf,
    /// Hook to train on, as a TransformerLens name; repeat for one SAE per hook.
    #[arg(long, required = true)]
    hook: Vec<String>,
    /// Train only this hook (one of --hook; repeatable) and do not write
    /// OUT/stage.json: for one job per hook on a cluster.
    #[arg(long)]
    only_hook: Vec<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Expected input width: an error if a hook's width in the store differs.
    #[arg(long)]
    d_in: Option<usize>,
    /// Number of SAE latents.
    #[arg(long)]
    d_sae: usize,
    /// SAE architecture.
    #[arg(long, value_enum, default_value = "standard")]
    architecture: SaeArchitecture,
    /// Active latents per row (TopK, BatchTopK).
    #[arg(long)]
    k: Option<usize>,
    /// Input normalisation.
    #[arg(long, value_enum, default_value = "none")]
    normalize_activations: SaeNormalization,
    /// Sparsity penalty λ: L1 (standard) or L0 (jumprelu).
    #[arg(long)]
    l1_coefficient: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Optimiser steps (the stream passes over the corpus as many times as needed).
    #[arg(long)]
    steps: Option<usize>,
    /// Rows per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Rows the shuffle buffer holds (default: 16 batches).
    #[arg(long)]
    buffer_rows: Option<usize>,
    /// Write a checkpoint every N steps (0: never); a rerun resumes from it.
    #[arg(long, default_value_t = 0)]
    checkpoint_every: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of rows held out for the final evaluation.
    #[arg(long, default_value_t = 0.1)]
    eval_fraction: f64,
    /// Learning-rate warm-up steps (default: 100, capped at steps / 10).
    #[arg(long)]
    lr_warm_up_steps: Option<usize>,
    /// Steps of linear learning-rate decay to 0 at the end (default: steps / 5).
    #[arg(long)]
    lr_decay_steps: Option<usize>,
    /// Steps of linear L1 warm-up (default: steps / 10).
    #[arg(long)]
    l1_warm_up_steps: Option<usize>,
    /// A latent silent for this many steps counts as dead.
    #[arg(long)]
    dead_feature_window: Option<usize>,
    /// JumpReLU: initial threshold of every latent.
    #[arg(long)]
    jumprelu_init_threshold: Option<f64>,
    /// JumpReLU: bandwidth of the threshold's pseudo-derivative.
    #[arg(long)]
    jumprelu_bandwidth: Option<f64>,
    /// Top activating contexts kept per feature in feature_stats.parquet.
    #[arg(long, default_value_t = 8)]
    top_n: usize,
    /// tokenizer.json used to decode contexts (default: token ids as text).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Model name for cfg.json (default: the store's).
    #[arg(long)]
    model_name: Option<String>,
    /// GPT-2 directory the store was dumped from: adds ce_loss_score (the SAE
    /// spliced into the model) on held-out token windows to training.json.
    #[arg(long)]
    model: Option<PathBuf>,
    /// At most this many token windows for ce_loss_score.
    #[arg(long, default_value_t = stage::DEFAULT_CE_SEQUENCES)]
    ce_sequences: usize,
    /// Leave out token rows whose norm at a hook is above R times the hook's median
    /// row norm (massive activations: the BOS and other attention-sink tokens of Llama
    /// models) from that hook's training, metrics, feature statistics and
    /// ce_loss_score splice; 0 keeps every row. training.json records the rule.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    outlier_norm_ratio: f64,
    /// Library of the dense products; MKL is loaded from $CIRCUITRY_MKL or .mkl/
    /// (scripts/setup-mkl.sh). training.json records the one used.
    #[arg(long, value_enum, default_value = "auto")]
    gemm: SaeGemm,
    /// MKL's conditional numerical reproducibility mode: off, auto, compatible, avx2
    /// or avx512, the last four optionally with +strict (default: auto, or
    /// $CIRCUITRY_MKL_CBWR). It changes MKL's rounding: a mode other than auto is
    /// part of the run key (a changed mode retrains) and training.json's gemm names it.
    #[arg(long, value_name = "MODE")]
    mkl_cbwr: Option<CbwrMode>,
    /// TopK: pick each row's latents with the exact bf16 prefilter where it runs (MKL
    /// on a CPU with AVX512-BF16 or AMX): the same latents as the f32 encoder, about
    /// twice as fast. `false` computes every pre-activation in f32.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    topk_prefilter: bool,
    /// Only check: the options, the memory estimate, the store when it exists, and
    /// that --out can be written; exit 0 or 2 (one line on stderr), writing nothing.
    #[arg(long)]
    pub(crate) check_only: bool,
    /// Compare the memory estimate with BYTES instead of this machine's memory, with
    /// --check-only or in a run (`circuitry submit` passes the memory of the Slurm
    /// job to --check-only).
    #[arg(long, value_name = "BYTES", hide = true)]
    pub(crate) memory_limit: Option<u64>,
}

/// The environment variables `main` read for MKL: `CIRCUITRY_MKL` (the library) and
/// `CIRCUITRY_MKL_CBWR` (the CNR mode when `--mkl-cbwr` is not given).
pub(crate) struct MklEnv {
    pub(crate) library: Option<OsString>,
    pub(crate) cbwr: Option<String>,
}

fn hooks(names: &[String], flag: &str) -> anyhow::Result<Vec<HookPoint>> {
    names
        .iter()
        .map(|h| h.parse().with_context(|| format!("{flag} {h}")))
        .collect()
}

pub(crate) fn config(a: Args, env: MklEnv) -> anyhow::Result<StageConfig> {
    let architecture = match (a.architecture, a.k) {
        (SaeArchitecture::Standard, None) => Architecture::Standard,
        (SaeArchitecture::JumpRelu, None) => Architecture::JumpRelu,
        (SaeArchitecture::Standard | SaeArchitecture::JumpRelu, Some(_)) => {
            bail!("--k is only meaningful with --architecture topk or batchtopk")
        }
        (SaeArchitecture::TopK, Some(k)) => Architecture::TopK { k },
        (SaeArchitecture::BatchTopK, Some(k)) => Architecture::BatchTopK { k },
        (SaeArchitecture::TopK | SaeArchitecture::BatchTopK, None) => {
            bail!("--architecture topk/batchtopk needs --k N (active latents per row)")
        }
    };
    let normalize_activations = match a.normalize_activations {
        SaeNormalization::None => ActivationNormalization::None,
        SaeNormalization::ConstantNormRescale => ActivationNormalization::ConstantNormRescale,
        SaeNormalization::MeanCentre => ActivationNormalization::MeanCentre,
    };
    let d = TrainConfig::default();
    let steps = a.steps.unwrap_or(d.steps);
    let batch_size = a.batch_size.unwrap_or(d.batch_size);
    let train = TrainConfig {
        lr: a.lr.unwrap_or(d.lr),
        l1_coefficient: a.l1_coefficient.unwrap_or(d.l1_coefficient),
        steps,
        batch_size,
        seed: a.seed,
        lr_warm_up_steps: a
            .lr_warm_up_steps
            .unwrap_or(d.lr_warm_up_steps.min(steps / 10)),
        lr_decay_steps: a.lr_decay_steps.unwrap_or(steps / 5),
        l1_warm_up_steps: a.l1_warm_up_steps.unwrap_or(steps / 10),
        dead_feature_window: a.dead_feature_window.unwrap_or(d.dead_feature_window),
        jumprelu_init_threshold: a
            .jumprelu_init_threshold
            .unwrap_or(d.jumprelu_init_threshold),
        jumprelu_bandwidth: a.jumprelu_bandwidth.unwrap_or(d.jumprelu_bandwidth),
        gemm: match a.gemm {
            SaeGemm::Auto => GemmChoice::Auto,
            SaeGemm::Faer => GemmChoice::Faer,
            SaeGemm::Mkl => GemmChoice::Mkl,
        },
        topk_prefilter: a.topk_prefilter,
        mkl: mkl_settings(a.mkl_cbwr, env)?,
        ..d
    };
    Ok(StageConfig {
        store: a.store,
        hooks: hooks(&a.hook, "--hook")?,
        only_hooks: hooks(&a.only_hook, "--only-hook")?,
        out: a.out,
        d_in: a.d_in,
        d_sae: a.d_sae,
        architecture,
        normalize_activations,
        model_name: a.model_name,
        eval_fraction: a.eval_fraction,
        buffer_rows: a.buffer_rows.unwrap_or(16 * batch_size),
        checkpoint_every: a.checkpoint_every,
        top_n: a.top_n,
        tokenizer: a.tokenizer,
        train,
        model: a.model,
        ce_sequences: a.ce_sequences,
        outlier_norm_ratio: a.outlier_norm_ratio,
    })
}

/// MKL's settings: the library from `CIRCUITRY_MKL`; the CNR mode from `--mkl-cbwr`,
/// else `CIRCUITRY_MKL_CBWR` (not read when the flag is given), else the default.
fn mkl_settings(flag: Option<CbwrMode>, env: MklEnv) -> anyhow::Result<MklSettings> {
    let cbwr = if flag.is_some() { None } else { env.cbwr };
    let mut mkl = MklSettings::from_env_values(env.library, cbwr)?;
    if let Some(mode) = flag {
        mkl.cbwr = mode;
    }
    Ok(mkl)
}
