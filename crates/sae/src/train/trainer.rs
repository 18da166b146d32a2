//! [`Trainer`]: one SAE, one optimiser step at a time.
use ndarray::{Array1, ArrayView2, Axis};

use super::{rng_for, LogEntry, TrainConfig, STREAM_INIT};
use crate::kernel::{self, AuxK, Backend, LossSpec};
use crate::optim::{AdamStep, Moments};
use crate::sae::normalize;
use crate::{geometric_median, Architecture, BDecInit, Error, Result, Sae, SaeConfig};

/// Trains one SAE a batch at a time; [`train`] drives it over in-memory rows, and a
/// streaming reader can drive it the same way.
#[derive(Debug, Clone)]
pub struct Trainer {
    pub(super) sae: Sae,
    pub(super) cfg: TrainConfig,
    pub(super) adam: (
        Moments<ndarray::Ix2>,
        Moments<ndarray::Ix1>,
        Moments<ndarray::Ix2>,
        Moments<ndarray::Ix1>,
    ),
    pub(super) step: usize,
    pub(super) steps_since_fired: Vec<usize>,
    pub(super) history: Vec<LogEntry>,
    pub(super) rows_seen: u64,
    /// JumpReLU: `log θ (d_sae)`, the parameter Adam updates, and its moments.
    pub(super) log_threshold: Option<(Array1<f32>, Moments<ndarray::Ix1>)>,
    /// BatchTopK: running estimate of the batch threshold.
    pub(super) topk_threshold: f64,
    /// The library of the dense products, resolved from `cfg.gemm`.
    pub(super) backend: Backend,
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
            backend: Backend::resolve(cfg.gemm, &cfg.mkl)?,
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

    /// The library its dense products run on.
    pub fn backend(&self) -> Backend {
        self.backend
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
            backend: self.backend,
            topk_prefilter: self.cfg.topk_prefilter,
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

/// `1 − mse / (mean squared distance to the batch mean)`, both per row.
fn batch_explained_variance(batch: ArrayView2<'_, f32>, mse: f64) -> f64 {
    let rows = batch.nrows() as f64;
    let mut mean = vec![0f64; batch.ncols()]; // (d_in)
    for r in batch.outer_iter() {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
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
