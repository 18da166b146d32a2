//! Command-line arguments of `circuitry-train-sae` (part of the binary, not the library)
//! and their conversion into the validated [`StageConfig`].
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use circuitry_core::options::{GemmLibrary, SaeArchitecture, SaeNormalization};
use circuitry_core::params::{StageOptions, TrainSaeOptions};
use circuitry_core::HookPoint;
use circuitry_sae::stage::{self, StageConfig};
use circuitry_sae::{ActivationNormalization, Architecture, CbwrMode, MklSettings, TrainConfig};
use clap::Parser;

/// Train a sparse autoencoder on each of --hooks of an activation store, from one
/// shuffled stream over its token rows, and write each in SAELens layout (plus
/// feature_stats.parquet) to OUT/<hook name>/, then OUT/stage.json.
#[derive(Debug, Parser)]
#[command(name = "circuitry-train-sae", version)]
pub(crate) struct Args {
    /// Activation store directory (written by the dump stage).
    #[arg(long)]
    store: PathBuf,
    /// Train only this hook (one of --hooks; repeatable) and do not write
    /// OUT/stage.json: for one job per hook on a cluster.
    #[arg(long)]
    only_hook: Vec<String>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// tokenizer.json used to decode contexts (default: token ids as text).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Model directory (GPT-2 or Llama) the store was dumped from: adds ce_loss_score
    /// (the SAE spliced into the model) on held-out token windows to training.json.
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    options: TrainSaeOptions,
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

fn hooks(names: &[String], flag: &str) -> anyhow::Result<Vec<HookPoint>> {
    names
        .iter()
        .map(|h| h.parse().with_context(|| format!("{flag} {h}")))
        .collect()
}

impl Args {
    /// Whether to keep freed memory in glibc's heap (`--keep-freed-memory`, default true).
    pub(crate) fn keep_freed_memory(&self) -> bool {
        self.options.keep_freed_memory.unwrap_or(true)
    }
}

/// The stage's configuration from the arguments and `mkl_library`, the value of
/// `CIRCUITRY_MKL` that `main` read.
pub(crate) fn config(a: Args, mkl_library: Option<OsString>) -> anyhow::Result<StageConfig> {
    let o = a.options;
    o.check()?;
    let architecture = match (o.architecture.unwrap_or(SaeArchitecture::Standard), o.k) {
        (SaeArchitecture::Standard, _) => Architecture::Standard,
        (SaeArchitecture::JumpRelu, _) => Architecture::JumpRelu,
        (SaeArchitecture::TopK, Some(k)) => Architecture::TopK { k },
        (SaeArchitecture::BatchTopK, Some(k)) => Architecture::BatchTopK { k },
        (SaeArchitecture::TopK | SaeArchitecture::BatchTopK, None) => {
            unreachable!("TrainSaeOptions::check requires k for topk and batchtopk")
        }
    };
    let normalize_activations = match o.normalize_activations.unwrap_or(SaeNormalization::None) {
        SaeNormalization::None => ActivationNormalization::None,
        SaeNormalization::ConstantNormRescale => ActivationNormalization::ConstantNormRescale,
        SaeNormalization::MeanCentre => ActivationNormalization::MeanCentre,
    };
    let cbwr = o
        .mkl_cbwr
        .as_deref()
        .map(|m| {
            m.parse::<CbwrMode>()
                .map_err(|e| anyhow::anyhow!("--mkl-cbwr {m}: {e}"))
        })
        .transpose()?;
    let d = TrainConfig::default();
    let steps = o.steps.unwrap_or(d.steps);
    let batch_size = o.batch_size.unwrap_or(d.batch_size);
    let train = TrainConfig {
        lr: o.lr.unwrap_or(d.lr),
        l1_coefficient: o.l1_coefficient.unwrap_or(d.l1_coefficient),
        steps,
        batch_size,
        seed: o.seed.unwrap_or(0),
        lr_warm_up_steps: o
            .lr_warm_up_steps
            .unwrap_or(d.lr_warm_up_steps.min(steps / 10)),
        lr_decay_steps: o.lr_decay_steps.unwrap_or(steps / 5),
        l1_warm_up_steps: o.l1_warm_up_steps.unwrap_or(steps / 10),
        // A window as long as the run would leave AuxK idle: a latent counts as dead
        // only after that many silent steps, when the run is over.
        dead_feature_window: o
            .dead_feature_window
            .unwrap_or(d.dead_feature_window.min((steps / 10).max(1))),
        jumprelu_init_threshold: o
            .jumprelu_init_threshold
            .unwrap_or(d.jumprelu_init_threshold),
        jumprelu_bandwidth: o.jumprelu_bandwidth.unwrap_or(d.jumprelu_bandwidth),
        gemm: o.gemm.unwrap_or(GemmLibrary::Auto).into(),
        topk_prefilter: o.topk_prefilter.unwrap_or(true),
        mkl: MklSettings::new(mkl_library, cbwr.unwrap_or_default()),
        ..d
    };
    Ok(StageConfig {
        store: a.store,
        hooks: o.hooks,
        only_hooks: hooks(&a.only_hook, "--only-hook")?,
        out: a.out,
        d_in: o.d_in,
        d_sae: o.d_sae,
        architecture,
        normalize_activations,
        model_name: o.model_name,
        eval_fraction: o.eval_fraction.unwrap_or(0.1),
        buffer_rows: o.buffer_rows.unwrap_or(16 * batch_size),
        checkpoint_every: o.checkpoint_every.unwrap_or(0),
        top_n: o.top_n.unwrap_or(8),
        tokenizer: a.tokenizer,
        train,
        model: a.model,
        ce_sequences: o.ce_sequences.unwrap_or(stage::DEFAULT_CE_SEQUENCES),
        outlier_norm_ratio: o.outlier_norm_ratio.unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(extra: &[&str]) -> usize {
        let mut argv = vec![
            "circuitry-train-sae",
            "--store",
            "s",
            "--out",
            "o",
            "--hooks",
            "blocks.0.hook_resid_pre",
            "--d-sae",
            "64",
        ];
        argv.extend_from_slice(extra);
        let args = Args::try_parse_from(argv).unwrap();
        config(args, None).unwrap().train.dead_feature_window
    }

    #[test]
    fn dead_feature_window_defaults_to_a_tenth_of_a_short_run() {
        // A window as long as the run would leave AuxK idle (issue 14's SAEs).
        assert_eq!(window(&["--steps", "500"]), 50);
        assert_eq!(window(&["--steps", "60"]), 6);
        assert_eq!(window(&["--steps", "5"]), 1);
        assert_eq!(window(&["--steps", "30000"]), 500);
        assert_eq!(window(&["--steps", "500", "--dead-feature-window", "7"]), 7);
    }
}
