//! How to train: [`TrainConfig`], its checks and its schedules.
use serde::{Deserialize, Serialize};

use crate::kernel::{GemmChoice, MklSettings};
use crate::{Error, Result, SaeConfig};

/// How `b_dec` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// Geometric median of a sample of rows (Weiszfeld), as SAELens's `geometric_median`.
    GeometricMedian,
    /// Mean of a sample of rows.
    Mean,
    /// Zeros.
    Zeros,
}

/// How to train. `Default` gives settings that train the toy (d_in 4, d_sae 8) well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Peak Adam learning rate.
    pub lr: f64,
    /// Linear learning-rate warm-up from `lr / n` to `lr` over the first `n` steps.
    pub lr_warm_up_steps: usize,
    /// Linear decay to 0 over the last `n` steps (Anthropic: the last 20%).
    pub lr_decay_steps: usize,
    /// `λ` of the standard SAE's sparsity penalty.
    pub l1_coefficient: f64,
    /// Linear warm-up of `λ` from `λ / n` over the first `n` steps.
    pub l1_warm_up_steps: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Optimiser steps.
    pub steps: usize,
    /// Seed of every random choice (initialisation, `b_dec` sample, batch order).
    pub seed: u64,
    /// Adam `β1`.
    pub adam_beta1: f64,
    /// Adam `β2`.
    pub adam_beta2: f64,
    /// Adam `ε`.
    pub adam_eps: f64,
    /// Initial norm of every decoder row (`W_enc` starts as `W_decᵀ`).
    pub decoder_init_norm: f32,
    /// How `b_dec` starts.
    pub b_dec_init: BDecInit,
    /// Rows sampled (without replacement) to initialise `b_dec`.
    pub b_dec_init_rows: usize,
    /// A latent that has not fired for this many steps counts as dead (AuxK, logs).
    pub dead_feature_window: usize,
    /// TopK: at most this many dead latents per row in AuxK; `None` means `d_in / 2`
    /// (at least 1), the heuristic of Gao et al. used by SAELens.
    pub aux_k: Option<usize>,
    /// TopK: weight `α` of the AuxK loss (Gao et al.: 1/32); 0 turns it off.
    pub aux_k_coefficient: f64,
    /// Record metrics every this many steps (and at the last step).
    pub log_every: usize,
    /// Rows per parallel work item (fixed, so results do not depend on threads).
    pub chunk_rows: usize,
    /// JumpReLU: the threshold every latent starts at (SAELens: 0.001).
    #[serde(default = "default_jumprelu")]
    pub jumprelu_init_threshold: f64,
    /// JumpReLU: bandwidth `ε` of the threshold's pseudo-derivative (SAELens: 0.001).
    #[serde(default = "default_jumprelu")]
    pub jumprelu_bandwidth: f64,
    /// BatchTopK: rate of the running threshold's exponential average of the
    /// smallest active value per batch (SAELens: 0.01).
    #[serde(default = "default_topk_threshold_lr")]
    pub topk_threshold_lr: f64,
    /// The library of the dense products: MKL when installed (`auto`), or either one.
    #[serde(default)]
    pub gemm: GemmChoice,
    /// TopK: select each row's latents with the exact bf16 prefilter where it runs
    /// (MKL and a CPU with AVX512-BF16; see `kernel::topk_prefilter_available`): the
    /// same latents as the `f32` encoder, about twice as fast. `false` encodes in `f32`.
    #[serde(default = "default_true")]
    pub topk_prefilter: bool,
    /// Where MKL is and its CNR mode, for when `gemm` resolves to MKL. Recorded (here,
    /// and so in `training.json` and the stage's run key) only when the mode is not
    /// the default: records and run keys of earlier runs stay the same.
    #[serde(default, skip_serializing_if = "MklSettings::records_nothing")]
    pub mkl: MklSettings,
}

fn default_true() -> bool {
    true
}

fn default_jumprelu() -> f64 {
    1e-3
}

fn default_topk_threshold_lr() -> f64 {
    0.01
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 3e-3,
            lr_warm_up_steps: 100,
            lr_decay_steps: 600,
            l1_coefficient: 0.1,
            l1_warm_up_steps: 300,
            batch_size: 128,
            steps: 3000,
            seed: 0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            decoder_init_norm: 0.1,
            b_dec_init: BDecInit::GeometricMedian,
            b_dec_init_rows: 4096,
            dead_feature_window: 500,
            aux_k: None,
            aux_k_coefficient: 1.0 / 32.0,
            log_every: 100,
            chunk_rows: 256,
            jumprelu_init_threshold: default_jumprelu(),
            jumprelu_bandwidth: default_jumprelu(),
            topk_threshold_lr: default_topk_threshold_lr(),
            gemm: GemmChoice::Auto,
            topk_prefilter: true,
            mkl: MklSettings::default(),
        }
    }
}

impl TrainConfig {
    /// Check every value's range (and that the SAE's architecture can be trained).
    pub fn check(&self, sae: &SaeConfig) -> Result<()> {
        sae.check()?;
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(field, v, "must be a positive finite number"))
            }
        };
        positive("lr", self.lr)?;
        positive("adam_eps", self.adam_eps)?;
        positive("decoder_init_norm", f64::from(self.decoder_init_norm))?;
        positive("jumprelu_init_threshold", self.jumprelu_init_threshold)?;
        positive("jumprelu_bandwidth", self.jumprelu_bandwidth)?;
        if !(self.topk_threshold_lr > 0.0 && self.topk_threshold_lr <= 1.0) {
            return Err(Error::config(
                "topk_threshold_lr",
                self.topk_threshold_lr,
                "must be in (0, 1]",
            ));
        }
        if !(self.l1_coefficient.is_finite() && self.l1_coefficient >= 0.0) {
            return Err(Error::config(
                "l1_coefficient",
                self.l1_coefficient,
                "must be ≥ 0 and finite",
            ));
        }
        if !(self.aux_k_coefficient.is_finite() && self.aux_k_coefficient >= 0.0) {
            return Err(Error::config(
                "aux_k_coefficient",
                self.aux_k_coefficient,
                "must be ≥ 0 and finite",
            ));
        }
        for (field, b) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::config(field, b, "must be in [0, 1)"));
            }
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("steps", self.steps),
            ("log_every", self.log_every),
            ("chunk_rows", self.chunk_rows),
            ("dead_feature_window", self.dead_feature_window),
        ] {
            if v == 0 {
                return Err(Error::config(field, v, "must be at least 1"));
            }
        }
        if self.lr_warm_up_steps + self.lr_decay_steps > self.steps {
            return Err(Error::config(
                "lr_decay_steps",
                self.lr_decay_steps,
                format!(
                    "warm-up ({}) plus decay must not exceed steps ({})",
                    self.lr_warm_up_steps, self.steps
                ),
            ));
        }
        if self.aux_k == Some(0) {
            return Err(Error::config(
                "aux_k",
                0,
                "must be at least 1 (or unset for d_in / 2)",
            ));
        }
        Ok(())
    }

    /// Learning rate of step `s` (0-based): warm-up, constant, linear decay to 0.
    pub fn lr_at(&self, s: usize) -> f64 {
        if s < self.lr_warm_up_steps {
            return self.lr * (s + 1) as f64 / self.lr_warm_up_steps as f64;
        }
        let decay_start = self.steps.saturating_sub(self.lr_decay_steps);
        if self.lr_decay_steps > 0 && s >= decay_start {
            return self.lr * self.steps.saturating_sub(s) as f64 / self.lr_decay_steps as f64;
        }
        self.lr
    }

    /// Sparsity coefficient `λ` of step `s` (0-based), after its warm-up.
    pub fn l1_at(&self, s: usize) -> f64 {
        if s < self.l1_warm_up_steps {
            return self.l1_coefficient * (s + 1) as f64 / self.l1_warm_up_steps as f64;
        }
        self.l1_coefficient
    }
}
