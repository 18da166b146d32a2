//! Training: configuration, the step-by-step [`Trainer`], and [`train`] on in-memory rows.
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::kernel::{self, AuxK, LossSpec};
use crate::metrics::{evaluate, Metrics};
use crate::optim::{AdamStep, Moments};
use crate::sae::normalize;
use crate::{check_finite, geometric_median, Architecture, Error, Result, Sae, SaeConfig};

/// RNG streams derived from the seed, one per use, so that changing one use (say the
/// batch order) never shifts another (the initialisation).
const STREAM_INIT: u64 = 0;
const STREAM_B_DEC_SAMPLE: u64 = 1;
const STREAM_BATCHES: u64 = 2;

/// The seeded RNG for one use of the training seed.
pub(crate) fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

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

/// Metrics of one logged training step (on its batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Steps done (1-based).
    pub step: usize,
    /// Learning rate used.
    pub lr: f64,
    /// `λ` used.
    pub l1_coefficient: f64,
    /// Total loss.
    pub loss: f64,
    /// Reconstruction term.
    pub mse_loss: f64,
    /// Sparsity term (standard).
    pub sparsity_loss: f64,
    /// AuxK term (TopK).
    pub aux_loss: f64,
    /// Pooled explained variance of the batch.
    pub explained_variance: f64,
    /// Mean active latents per row of the batch.
    pub l0: f64,
    /// Fraction of latents that have not fired within `dead_feature_window` steps.
    pub dead_fraction: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Rows seen (steps × batch size).
    pub rows_seen: u64,
    /// The logged steps.
    pub history: Vec<LogEntry>,
    /// Metrics of the final SAE on all the training rows.
    pub final_metrics: Metrics,
}

/// Trains one SAE a batch at a time; [`train`] drives it over in-memory rows, and a
/// streaming reader can drive it the same way.
#[derive(Debug, Clone)]
pub struct Trainer {
    sae: Sae,
    cfg: TrainConfig,
    adam: (
        Moments<ndarray::Ix2>,
        Moments<ndarray::Ix1>,
        Moments<ndarray::Ix2>,
        Moments<ndarray::Ix1>,
    ),
    step: usize,
    steps_since_fired: Vec<usize>,
    history: Vec<LogEntry>,
    rows_seen: u64,
    /// JumpReLU: `log θ (d_sae)`, the parameter Adam updates, and its moments.
    log_threshold: Option<(Array1<f32>, Moments<ndarray::Ix1>)>,
    /// BatchTopK: running estimate of the batch threshold.
    topk_threshold: f64,
}

impl Trainer {
    /// Check the configuration and initialise the SAE: decoder rows of norm
    /// `decoder_init_norm` in random directions, `W_enc = W_decᵀ`, `b_enc = 0`, and
    /// `b_dec` from `init_sample (rows, d_in)` as `cfg.b_dec_init` says.
    pub fn new(
        sae_cfg: SaeConfig,
        cfg: &TrainConfig,
        init_sample: ArrayView2<'_, f32>,
    ) -> Result<Self> {
        cfg.check(&sae_cfg)?;
        let mut rng = rng_for(cfg.seed, STREAM_INIT);
        let mut sae = Sae::new_init_with_norm(sae_cfg, cfg.decoder_init_norm, &mut rng);
        sae.check_input(init_sample)?;
        let (init_sample, _) = normalize(sae.cfg.normalize_activations, init_sample); // (n, d_in)
        let init_sample = init_sample.view();
        sae.b_dec = match cfg.b_dec_init {
            BDecInit::GeometricMedian => geometric_median(init_sample, 100, 1e-6),
            BDecInit::Mean if init_sample.nrows() > 0 => init_sample
                .mapv(f64::from)
                .mean_axis(Axis(0))
                .map_or_else(|| Array1::zeros(sae.cfg.d_in), |m| m.mapv(|v| v as f32)),
            _ => Array1::zeros(sae.cfg.d_in),
        };
        let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
        let log_threshold = matches!(sae.cfg.architecture, Architecture::JumpRelu).then(|| {
            let theta = cfg.jumprelu_init_threshold as f32;
            sae.threshold = Some(Array1::from_elem(d_sae, theta.ln().exp()));
            (
                Array1::from_elem(d_sae, theta.ln()),
                Moments::new(ndarray::Ix1(d_sae)),
            )
        });
        Ok(Trainer {
            log_threshold,
            topk_threshold: 0.0,
            adam: (
                Moments::new(ndarray::Ix2(d_in, d_sae)),
                Moments::new(ndarray::Ix1(d_sae)),
                Moments::new(ndarray::Ix2(d_sae, d_in)),
                Moments::new(ndarray::Ix1(d_in)),
            ),
            steps_since_fired: vec![0; d_sae],
            sae,
            cfg: cfg.clone(),
            step: 0,
            history: Vec::new(),
            rows_seen: 0,
        })
    }

    /// The SAE as trained so far.
    pub fn sae(&self) -> &Sae {
        &self.sae
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One optimiser step on `batch (rows, d_in)`; returns the step's log entry.
    pub fn step(&mut self, batch: ArrayView2<'_, f32>) -> Result<LogEntry> {
        let normalized;
        let batch = match self.sae.cfg.normalize_activations {
            crate::ActivationNormalization::None => batch,
            norm => {
                normalized = normalize(norm, batch).0; // (rows, d_in)
                normalized.view()
            }
        };
        let s = self.step;
        let lr = self.cfg.lr_at(s);
        let l1 = self.cfg.l1_at(s);
        let theta: Option<Vec<f64>> = self
            .sae
            .threshold
            .as_ref()
            .filter(|_| self.log_threshold.is_some())
            .map(|t| t.iter().map(|&v| f64::from(v)).collect());
        let window = self.cfg.dead_feature_window;
        let dead: Vec<bool> = self
            .steps_since_fired
            .iter()
            .map(|&n| n >= window)
            .collect();
        let aux = match self.sae.cfg.architecture {
            Architecture::TopK { .. } | Architecture::BatchTopK { .. } => Some(AuxK {
                dead: &dead,
                k_aux: self.cfg.aux_k.unwrap_or((self.sae.cfg.d_in / 2).max(1)),
                coefficient: self.cfg.aux_k_coefficient,
            }),
            _ => None,
        };
        let spec = LossSpec {
            architecture: self.sae.cfg.architecture,
            apply_b_dec_to_input: self.sae.cfg.apply_b_dec_to_input,
            l1_coefficient: l1,
            aux,
            chunk_rows: self.cfg.chunk_rows,
            jump: theta.as_ref().map(|t| kernel::Jump {
                threshold: t,
                bandwidth: self.cfg.jumprelu_bandwidth,
            }),
        };
        let (terms, grads) = kernel::loss_and_grads(&self.sae.params(), batch, &spec)?;
        if !terms.total.is_finite() {
            return Err(Error::config(
                "lr",
                self.cfg.lr,
                format!(
                    "training diverged at step {} (loss {}); lower the learning rate",
                    s + 1,
                    terms.total
                ),
            ));
        }

        let t = (s + 1) as i32;
        let (b1, b2) = (self.cfg.adam_beta1, self.cfg.adam_beta2);
        let h = AdamStep {
            b1: b1 as f32,
            b2: b2 as f32,
            eps: self.cfg.adam_eps as f32,
            step_size: (lr / (1.0 - b1.powi(t))) as f32,
            sqrt_bc2: (1.0 - b2.powi(t)).sqrt() as f32,
        };
        self.adam.0.update(&mut self.sae.w_enc, &grads.w_enc, &h);
        self.adam.1.update(&mut self.sae.b_enc, &grads.b_enc, &h);
        self.adam.2.update(&mut self.sae.w_dec, &grads.w_dec, &h);
        self.adam.3.update(&mut self.sae.b_dec, &grads.b_dec, &h);
        if let (Some((log_t, moments)), Some(g_t), Some(t)) = (
            self.log_threshold.as_mut(),
            grads.threshold.as_ref(),
            self.sae.threshold.as_mut(),
        ) {
            // θ = exp(log θ): ∂L/∂log θ = θ ∂L/∂θ.
            let g_log = g_t * &*t; // (d_sae)
            moments.update(log_t, &g_log, &h);
            *t = log_t.mapv(f32::exp);
        }
        if matches!(self.sae.cfg.architecture, Architecture::BatchTopK { .. })
            && terms.min_active.is_finite()
        {
            let r = self.cfg.topk_threshold_lr;
            self.topk_threshold = (1.0 - r) * self.topk_threshold + r * terms.min_active;
        }

        for (n, &f) in self.steps_since_fired.iter_mut().zip(&terms.fired) {
            *n = if f { 0 } else { n.saturating_add(1) };
        }
        self.step += 1;
        self.rows_seen += batch.nrows() as u64;
        let entry = LogEntry {
            step: self.step,
            lr,
            l1_coefficient: l1,
            loss: terms.total,
            mse_loss: terms.mse,
            sparsity_loss: terms.sparsity,
            aux_loss: terms.aux,
            explained_variance: batch_explained_variance(batch, terms.mse),
            l0: terms.l0,
            dead_fraction: self
                .steps_since_fired
                .iter()
                .filter(|&&n| n >= window)
                .count() as f64
                / self.steps_since_fired.len() as f64,
        };
        if self.step.is_multiple_of(self.cfg.log_every) || self.step == self.cfg.steps {
            tracing::debug!(
                step = entry.step,
                loss = entry.loss,
                ev = entry.explained_variance,
                l0 = entry.l0,
                "sae step"
            );
            self.history.push(entry.clone());
        }
        Ok(entry)
    }

    /// The trained SAE, the logged history and the rows seen. A BatchTopK SAE comes
    /// out as JumpReLU with its running threshold for every latent, as SAELens saves it.
    pub fn finish(mut self) -> (Sae, Vec<LogEntry>, u64) {
        if let Architecture::BatchTopK { .. } = self.sae.cfg.architecture {
            self.sae.cfg.architecture = Architecture::JumpRelu;
            self.sae.threshold = Some(Array1::from_elem(
                self.sae.cfg.d_sae,
                self.topk_threshold as f32,
            ));
        }
        (self.sae, self.history, self.rows_seen)
    }
}

/// The non-tensor part of a [`Trainer`]'s state, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerMeta {
    /// Steps taken.
    pub step: usize,
    /// Per latent, steps since it last fired: (d_sae,).
    pub steps_since_fired: Vec<usize>,
    /// Logged steps so far.
    pub history: Vec<LogEntry>,
    /// Rows seen so far.
    pub rows_seen: u64,
    /// BatchTopK's running threshold.
    #[serde(default)]
    pub topk_threshold: f64,
}

/// A named tensor of a trainer's state: name, shape, values (row-major).
pub type NamedTensor = (&'static str, Vec<usize>, Vec<f32>);

const STATE_TENSORS: [&str; 12] = [
    "W_enc", "b_enc", "W_dec", "b_dec", "m.W_enc", "v.W_enc", "m.b_enc", "v.b_enc", "m.W_dec",
    "v.W_dec", "m.b_dec", "v.b_dec",
];

impl Trainer {
    /// Everything needed to continue training exactly where this trainer is: the
    /// step, dead-latent counters and history, and the parameters with their Adam
    /// moments as named tensors. [`Trainer::restore`] takes them back.
    pub fn export(&self) -> (TrainerMeta, Vec<NamedTensor>) {
        let meta = TrainerMeta {
            step: self.step,
            steps_since_fired: self.steps_since_fired.clone(),
            history: self.history.clone(),
            rows_seen: self.rows_seen,
            topk_threshold: self.topk_threshold,
        };
        let t2 = |a: &Array2<f32>| (a.shape().to_vec(), a.iter().copied().collect::<Vec<f32>>());
        let t1 = |a: &Array1<f32>| (a.shape().to_vec(), a.to_vec());
        let parts = [
            t2(&self.sae.w_enc),
            t1(&self.sae.b_enc),
            t2(&self.sae.w_dec),
            t1(&self.sae.b_dec),
            t2(&self.adam.0.m),
            t2(&self.adam.0.v),
            t1(&self.adam.1.m),
            t1(&self.adam.1.v),
            t2(&self.adam.2.m),
            t2(&self.adam.2.v),
            t1(&self.adam.3.m),
            t1(&self.adam.3.v),
        ];
        let mut tensors: Vec<NamedTensor> = STATE_TENSORS
            .iter()
            .zip(parts)
            .map(|(name, (shape, values))| (*name, shape, values))
            .collect();
        if let Some((log_t, m)) = &self.log_threshold {
            for (name, a) in [
                ("log_threshold", log_t),
                ("m.log_threshold", &m.m),
                ("v.log_threshold", &m.v),
            ] {
                tensors.push((name, a.shape().to_vec(), a.to_vec()));
            }
        }
        (meta, tensors)
    }

    /// A trainer in the state [`Trainer::export`] gave; `tensor(name, shape)` returns
    /// the values of one named tensor, checked against `shape`.
    pub fn restore(
        sae_cfg: SaeConfig,
        cfg: &TrainConfig,
        meta: TrainerMeta,
        mut tensor: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>,
    ) -> Result<Self> {
        cfg.check(&sae_cfg)?;
        let (d_in, d_sae) = (sae_cfg.d_in, sae_cfg.d_sae);
        if meta.steps_since_fired.len() != d_sae {
            return Err(Error::Shape {
                what: "steps_since_fired in the checkpoint".into(),
                expected: vec![d_sae],
                got: vec![meta.steps_since_fired.len()],
            });
        }
        let mut m2 = |name: &str, shape: (usize, usize)| -> Result<Array2<f32>> {
            let v = tensor(name, &[shape.0, shape.1])?;
            Array2::from_shape_vec(shape, v).map_err(|e| Error::Shape {
                what: format!("{name} in the checkpoint ({e})"),
                expected: vec![shape.0, shape.1],
                got: vec![],
            })
        };
        let w_enc = m2("W_enc", (d_in, d_sae))?;
        let w_dec = m2("W_dec", (d_sae, d_in))?;
        let enc = (m2("m.W_enc", (d_in, d_sae))?, m2("v.W_enc", (d_in, d_sae))?);
        let dec = (m2("m.W_dec", (d_sae, d_in))?, m2("v.W_dec", (d_sae, d_in))?);
        let mut m1 =
            |name: &str, n: usize| -> Result<Array1<f32>> { Ok(Array1::from(tensor(name, &[n])?)) };
        let log_threshold = if matches!(sae_cfg.architecture, Architecture::JumpRelu) {
            Some((
                m1("log_threshold", d_sae)?,
                Moments {
                    m: m1("m.log_threshold", d_sae)?,
                    v: m1("v.log_threshold", d_sae)?,
                },
            ))
        } else {
            None
        };
        let sae = Sae {
            cfg: sae_cfg,
            w_enc,
            b_enc: m1("b_enc", d_sae)?,
            w_dec,
            b_dec: m1("b_dec", d_in)?,
            threshold: log_threshold.as_ref().map(|(l, _)| l.mapv(f32::exp)),
        };
        Ok(Trainer {
            adam: (
                Moments { m: enc.0, v: enc.1 },
                Moments {
                    m: m1("m.b_enc", d_sae)?,
                    v: m1("v.b_enc", d_sae)?,
                },
                Moments { m: dec.0, v: dec.1 },
                Moments {
                    m: m1("m.b_dec", d_in)?,
                    v: m1("v.b_dec", d_in)?,
                },
            ),
            sae,
            cfg: cfg.clone(),
            step: meta.step,
            steps_since_fired: meta.steps_since_fired,
            history: meta.history,
            rows_seen: meta.rows_seen,
            log_threshold,
            topk_threshold: meta.topk_threshold,
        })
    }
}

/// `1 − mse / (mean squared distance to the batch mean)`, both per row.
fn batch_explained_variance(batch: ArrayView2<'_, f32>, mse: f64) -> f64 {
    let rows = batch.nrows() as f64;
    let mean = batch.mapv(f64::from).sum_axis(Axis(0)) / rows; // (d_in)
    let sst: f64 = batch
        .outer_iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .map(|(&v, m)| (f64::from(v) - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / rows;
    if sst > 0.0 {
        1.0 - mse / sst
    } else {
        0.0
    }
}

/// Train an SAE on the rows of `data (rows, d_in)`, held in memory.
///
/// Batches are drawn without replacement from a seeded shuffle of the rows,
/// reshuffled at every epoch; `b_dec` starts from a seeded sample of up to
/// `b_dec_init_rows` rows. Same inputs and seed, same bytes out.
pub fn train(
    sae_cfg: SaeConfig,
    cfg: &TrainConfig,
    data: ArrayView2<'_, f32>,
) -> Result<(Sae, TrainReport)> {
    cfg.check(&sae_cfg)?;
    if data.nrows() == 0 {
        return Err(Error::Empty(format!(
            "no rows to train the SAE on {} with",
            sae_cfg.hook_name
        )));
    }
    let rows = data.nrows();
    if data.ncols() != sae_cfg.d_in {
        return Err(Error::Shape {
            what: format!("activations for the SAE on {}", sae_cfg.hook_name),
            expected: vec![rows, sae_cfg.d_in],
            got: data.shape().to_vec(),
        });
    }
    check_finite(data)?;
    let mut sample_rng = rng_for(cfg.seed, STREAM_B_DEC_SAMPLE);
    let mut idx: Vec<usize> = (0..rows).collect();
    idx.shuffle(&mut sample_rng);
    idx.truncate(cfg.b_dec_init_rows.max(1));
    let sample = data.select(Axis(0), &idx); // (n_sample, d_in)
    let mut trainer = Trainer::new(sae_cfg, cfg, sample.view())?;

    let mut batch_rng = rng_for(cfg.seed, STREAM_BATCHES);
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut batch_rng);
    let mut cursor = 0;
    let mut batch_idx = Vec::with_capacity(cfg.batch_size);
    for _ in 0..cfg.steps {
        batch_idx.clear();
        while batch_idx.len() < cfg.batch_size {
            if cursor == rows {
                order.shuffle(&mut batch_rng);
                cursor = 0;
            }
            let take = (cfg.batch_size - batch_idx.len()).min(rows - cursor);
            batch_idx.extend_from_slice(&order[cursor..cursor + take]);
            cursor += take;
        }
        let batch: Array2<f32> = data.select(Axis(0), &batch_idx); // (batch, d_in)
        trainer.step(batch.view())?;
    }
    let steps = trainer.steps_done();
    let (sae, history, rows_seen) = trainer.finish();
    let final_metrics = evaluate(&sae, data);
    Ok((
        sae,
        TrainReport {
            steps,
            rows_seen,
            history,
            final_metrics,
        },
    ))
}
