//! Training: the configuration (`config.rs`), the step-by-step [`Trainer`]
//! (`trainer.rs`), its checkpointable state (`state.rs`), and [`train`] on in-memory
//! rows (here).
use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::metrics::{evaluate, Metrics};
use crate::{check_finite, Error, Result, Sae, SaeConfig};

mod config;
mod state;
mod trainer;

pub use config::{BDecInit, TrainConfig};
pub use state::{NamedTensor, TrainerMeta};
pub use trainer::Trainer;

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
