//! `train-sae`: train one sparse autoencoder per hook of an activation store, all
//! from one stream over it (`circuitry-train-sae --store DIR --hook NAME [--hook NAME…]
//! --out DIR --d-sae N [--architecture standard|topk] [--k N] [--d-in N]
//! [--l1-coefficient F] [--lr F] [--steps N] [--batch-size N] [--buffer-rows N]
//! [--checkpoint-every N] [--seed N] [--eval-fraction F] [--lr-warm-up-steps N]
//! [--lr-decay-steps N] [--l1-warm-up-steps N] [--dead-feature-window N]
//! [--jumprelu-init-threshold F] [--jumprelu-bandwidth F] [--top-n N]
//! [--tokenizer FILE] [--model-name NAME] [--model DIR] [--ce-sequences N]
//! [--gemm auto|faer|mkl] [--mkl-cbwr MODE] [--topk-prefilter BOOL]`). Each SAE
//! is written to `OUT/<hook name>/`; with `model` (the GPT-2 directory the store was
//! dumped from) its `training.json` gains `ce_loss_score`.
//! With several hooks the stage splits into one Slurm array task per hook
//! (`--only-hook H`).
use circuitry_core::HookPoint;
use serde::Deserialize;

use super::{
    fraction, non_negative_real, positive, positive_real, ArgsBuilder, Invalid, ParamGuard, Split,
    StageParams,
};
use crate::Input;

pub use circuitry_core::options::{SaeArchitecture, SaeGemm, SaeNormalization};

/// `train-sae` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSaeParams {
    /// The activation store, e.g. `"@acts"`.
    pub store: Input,
    /// The hook to train on, a TransformerLens name such as `toy.hook_hidden`
    /// (or use `hooks`).
    pub hook: Option<HookPoint>,
    /// Several hooks, one SAE each, trained from one read of the store.
    pub hooks: Option<Vec<HookPoint>>,
    /// Expected input width (checked against the store).
    pub d_in: Option<usize>,
    /// Number of SAE latents.
    pub d_sae: usize,
    /// Architecture (`standard` or `topk`).
    pub architecture: Option<SaeArchitecture>,
    /// Active latents per token for `topk` and `batchtopk`.
    pub k: Option<usize>,
    /// Input normalisation (`none`, `constant-norm-rescale`, `mean-centre`).
    pub normalize_activations: Option<SaeNormalization>,
    /// L1 sparsity coefficient (standard architecture).
    pub l1_coefficient: Option<f64>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Training steps.
    pub steps: Option<usize>,
    /// Tokens per step.
    pub batch_size: Option<usize>,
    /// Seed of initialisation and shuffling.
    pub seed: Option<u64>,
    /// Fraction of rows held out for evaluation.
    pub eval_fraction: Option<f64>,
    /// Learning-rate warm-up steps.
    pub lr_warm_up_steps: Option<usize>,
    /// Steps of linear learning-rate decay at the end.
    pub lr_decay_steps: Option<usize>,
    /// Steps of linear L1 warm-up.
    pub l1_warm_up_steps: Option<usize>,
    /// Rows of the shuffle buffer.
    pub buffer_rows: Option<usize>,
    /// Checkpoint every N steps (0: never).
    pub checkpoint_every: Option<usize>,
    /// Steps without firing after which a latent counts as dead.
    pub dead_feature_window: Option<usize>,
    /// JumpReLU: initial threshold of every latent.
    pub jumprelu_init_threshold: Option<f64>,
    /// JumpReLU: bandwidth of the threshold's pseudo-derivative.
    pub jumprelu_bandwidth: Option<f64>,
    /// Top activating contexts per feature in `feature_stats.parquet`.
    pub top_n: Option<usize>,
    /// `tokenizer.json` to decode the contexts with.
    pub tokenizer: Option<Input>,
    /// Model name written to the SAE's cfg.json.
    pub model_name: Option<String>,
    /// The GPT-2 directory the store was dumped from: adds `ce_loss_score` (the SAE
    /// spliced into the model) to each SAE's `training.json`.
    pub model: Option<Input>,
    /// At most this many token windows for `ce_loss_score`.
    pub ce_sequences: Option<usize>,
    /// Leave out token rows whose norm is above this many times the hook's median
    /// (attention-sink tokens); 0 keeps every row.
    pub outlier_norm_ratio: Option<f64>,
    /// Library of the dense products (`auto`, `faer`, `mkl`); default `auto`.
    pub gemm: Option<SaeGemm>,
    /// TopK: the exact bf16 prefilter where it runs (MKL, AVX512-BF16); default `true`.
    pub topk_prefilter: Option<bool>,
    /// MKL's conditional numerical reproducibility mode (`off`, `auto`, `compatible`,
    /// `avx2`, `avx512`, the last four optionally with `+strict`); default `auto`.
    /// The binary checks the spelling (`--check-only`, before anything runs).
    pub mkl_cbwr: Option<String>,
}

/// Validated `train-sae` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSae(TrainSaeParams);

impl ParamGuard for TrainSaeParams {
    const KIND: &'static str = "train-sae";
    type Checked = TrainSae;

    fn check(self) -> Result<TrainSae, Invalid> {
        match (&self.hook, &self.hooks) {
            (Some(_), None) => {}
            (None, Some(list)) if !list.is_empty() => {
                if let Some((i, h)) = list
                    .iter()
                    .enumerate()
                    .find(|(i, h)| list[..*i].contains(h))
                {
                    return Err(Invalid::new(
                        "hooks",
                        format!("{h} is listed twice (entry {})", i + 1),
                        "list each hook once",
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "hooks",
                    "both `hook` and `hooks` are given",
                    "keep one: `hooks = [...]` lists several",
                ))
            }
            (None, _) => {
                return Err(Invalid::new(
                    "hooks",
                    "no hook to train on",
                    "add `hook = \"blocks.0.hook_resid_pre\"` or `hooks = [...]`",
                ))
            }
        }
        positive("d_sae", Some(self.d_sae))?;
        positive("d_in", self.d_in)?;
        positive("buffer_rows", self.buffer_rows)?;
        positive("dead_feature_window", self.dead_feature_window)?;
        positive("k", self.k)?;
        let topk = matches!(
            self.architecture,
            Some(SaeArchitecture::TopK | SaeArchitecture::BatchTopK)
        );
        match self.k {
            Some(_) if !topk => {
                return Err(Invalid::new(
                    "k",
                    "`k` applies only to the topk and batchtopk architectures",
                    "add `architecture = \"topk\"`, or remove `k`",
                ))
            }
            Some(k) if k >= self.d_sae => {
                return Err(Invalid::new(
                    "k",
                    format!("k = {k} must be below d_sae = {}", self.d_sae),
                    "choose k smaller than d_sae (k of the d_sae latents are active per token)",
                ))
            }
            None if topk => {
                return Err(Invalid::new(
                    "architecture",
                    "the topk and batchtopk architectures need `k`",
                    "add `k = N`, the number of active latents per token (below d_sae)",
                ))
            }
            _ => {}
        }
        non_negative_real("l1_coefficient", self.l1_coefficient)?;
        positive_real("jumprelu_init_threshold", self.jumprelu_init_threshold)?;
        positive_real("jumprelu_bandwidth", self.jumprelu_bandwidth)?;
        for (key, value) in [
            ("jumprelu_init_threshold", self.jumprelu_init_threshold),
            ("jumprelu_bandwidth", self.jumprelu_bandwidth),
        ] {
            if value.is_some() && self.architecture != Some(SaeArchitecture::JumpRelu) {
                return Err(Invalid::new(
                    key,
                    format!("`{key}` applies only to the jumprelu architecture"),
                    "add `architecture = \"jumprelu\"`, or remove it",
                ));
            }
        }
        positive_real("lr", self.lr)?;
        positive("steps", self.steps)?;
        positive("batch_size", self.batch_size)?;
        positive("ce_sequences", self.ce_sequences)?;
        if self.ce_sequences.is_some() && self.model.is_none() {
            return Err(Invalid::new(
                "ce_sequences",
                "`ce_sequences` is given without `model`",
                "add `model = \"<GPT-2 directory of the dump>\"` (ce_loss_score needs it), or remove `ce_sequences`",
            ));
        }
        fraction("eval_fraction", self.eval_fraction)?;
        Ok(TrainSae(self))
    }
}

impl TrainSae {
    /// The hooks SAEs are trained on, in order.
    pub fn hooks(&self) -> Vec<HookPoint> {
        match (&self.0.hook, &self.0.hooks) {
            (Some(h), _) => vec![*h],
            (None, Some(list)) => list.clone(),
            (None, None) => Vec::new(),
        }
    }
}

impl StageParams for TrainSae {
    fn kind(&self) -> &'static str {
        TrainSaeParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-train-sae"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let mut v = vec![("store", &self.0.store)];
        if let Some(t) = &self.0.tokenizer {
            v.push(("tokenizer", t));
        }
        if let Some(m) = &self.0.model {
            v.push(("model", m));
        }
        v
    }

    fn split(&self) -> Option<Split> {
        let hooks = self.hooks();
        (hooks.len() > 1).then(|| Split::Each {
            flag: "--only-hook",
            values: hooks.iter().map(|h| h.to_string()).collect(),
        })
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.input("--store", &p.store);
        for h in self.hooks() {
            args.value("--hook", h);
        }
        args.out()
            .value("--d-sae", p.d_sae)
            .opt("--d-in", p.d_in)
            .opt("--architecture", p.architecture)
            .opt("--k", p.k)
            .opt("--normalize-activations", p.normalize_activations)
            .opt("--l1-coefficient", p.l1_coefficient)
            .opt("--lr", p.lr)
            .opt("--steps", p.steps)
            .opt("--batch-size", p.batch_size)
            .opt("--seed", p.seed)
            .opt("--eval-fraction", p.eval_fraction)
            .opt("--lr-warm-up-steps", p.lr_warm_up_steps)
            .opt("--lr-decay-steps", p.lr_decay_steps)
            .opt("--l1-warm-up-steps", p.l1_warm_up_steps)
            .opt("--buffer-rows", p.buffer_rows)
            .opt("--checkpoint-every", p.checkpoint_every)
            .opt("--dead-feature-window", p.dead_feature_window)
            .opt("--jumprelu-init-threshold", p.jumprelu_init_threshold)
            .opt("--jumprelu-bandwidth", p.jumprelu_bandwidth)
            .opt("--top-n", p.top_n)
            .opt("--model-name", p.model_name.as_deref())
            .opt("--ce-sequences", p.ce_sequences)
            .opt("--outlier-norm-ratio", p.outlier_norm_ratio)
            .opt("--gemm", p.gemm)
            .opt("--mkl-cbwr", p.mkl_cbwr.as_deref())
            .opt("--topk-prefilter", p.topk_prefilter);
        if let Some(t) = &p.tokenizer {
            args.input("--tokenizer", t);
        }
        if let Some(m) = &p.model {
            args.input("--model", m);
        }
    }
}
