//! # circuitry-sae
//!
//! Sparse autoencoders (SAEs) on model activations: the architectures, a
//! rayon-parallel trainer with a hand-written backward pass, SAELens-compatible
//! files, and the evaluation metrics.
//!
//! - [`Sae`]: parameters with SAELens names and layouts, [`Sae::encode`] /
//!   [`Sae::decode`] — the only implementation of the SAE's math in the project;
//! - [`SaeConfig`], [`Architecture`]: what an SAE is (`d_in`, `d_sae`, `hook_name`, ...);
//! - [`train`], [`Trainer`], [`TrainConfig`]: Adam with learning-rate warm-up and decay,
//!   L1 warm-up, `b_dec` at the geometric median, AuxK for TopK's dead latents;
//! - [`evaluate`], [`Metrics`]: MSE, explained variance, L0, dead fraction;
//! - [`ce`]: `ce_loss_score`, the SAE spliced into the Rust GPT-2 forward at its hook;
//! - [`Sae::save`], [`Sae::load`], [`save_training_outputs`]: SAELens v6 files;
//! - [`kernel`]: the loss and its gradients, generic over `f32`/`f64`;
//! - [`stream`]: the held-out split, the scan before training and the shuffled,
//!   checkpointable batch stream that feeds one SAE per hook from one read;
//! - [`checkpoint`]: atomic checkpoints of a run, resumed byte for byte;
//! - [`stats`]: per-feature density and top activating contexts (`feature_stats.parquet`);
//! - [`MetricsAccumulator`]: the metrics over a stream of rows;
//! - [`stage`]: the `circuitry-train-sae` stage (store in, one SAE directory per hook out);
//! - [`keep_freed_memory`]: glibc setting that spares each step's page faults.
//!
//! ```
//! use circuitry_core::HookPoint;
//! use circuitry_sae::{evaluate, train, SaeConfig, TrainConfig};
//! use ndarray::Array2;
//!
//! // 256 rows that are each one of four sparse directions in 4-d space.
//! let x = Array2::from_shape_fn((256, 4), |(r, c)| if r % 4 == c { 1.0 + (r % 7) as f32 / 7.0 } else { 0.0 });
//! let cfg = SaeConfig::new(4, 8, HookPoint::ToyHidden);
//! let train_cfg = TrainConfig { steps: 300, lr_decay_steps: 60, ..TrainConfig::default() };
//! let (sae, _report) = train(cfg, &train_cfg, x.view()).unwrap();
//! let m = evaluate(&sae, x.view());
//! assert!(m.explained_variance > 0.5);
//! ```
#![deny(missing_docs)]

mod alloc;
pub mod ce;
pub mod checkpoint;
mod config;
mod data;
mod error;
mod io;
pub mod kernel;
mod metrics;
mod optim;
mod sae;
pub mod stage;
pub mod stats;
pub mod stream;
mod train;

pub use alloc::keep_freed_memory;
pub use config::{ActivationNormalization, Architecture, SaeConfig};
pub use data::{check_finite, geometric_median};
pub use error::{Error, Result};
pub use io::{
    save_training_outputs, OutlierRule, TrainingRecord, CFG_FILE, SPARSITY_FILE, STAGE_MARKER,
    TRAINING_FILE, TRAINING_RECORD_VERSION, WEIGHTS_FILE,
};
pub use kernel::{Backend, CbwrMode, GemmChoice, MklSettings};
pub use metrics::{
    evaluate, evaluate_with_density, feature_density, log10_feature_density, Metrics,
    MetricsAccumulator,
};
pub use sae::{normalize, Sae};
pub use train::{
    train, BDecInit, LogEntry, NamedTensor, TrainConfig, TrainReport, Trainer, TrainerMeta,
};
