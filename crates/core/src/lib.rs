//! # circuitry-core
//!
//! The small vocabulary every circuitry crate shares:
//!
//! - [`HookPoint`]: a typed TransformerLens hook name (`blocks.3.hook_resid_pre` ⇄
//!   `HookPoint::ResidPre { layer: 3 }`), the one parser for hook names in the project;
//! - [`ModelConfig`]: one description of a decoder-only transformer of any supported
//!   [`Family`] (GPT-2, Llama), read from a Hugging Face `config.json`
//!   ([`Gpt2Config`], [`LlamaConfig`]);
//! - [`StageRecord`]: the `stage.json` every stage writes last, from which the pipeline
//!   decides freshness;
//! - [`atomic`]: write-to-temporary-then-rename helpers, so a crash never leaves a file
//!   that looks complete;
//! - [`fingerprint`]: content hashes (BLAKE3) of files and directories;
//! - [`options`]: option values a binary's flag and its manifest key share;
//! - [`part`]: part `I` of `N` of a stage's work, a Slurm array task's share;
//! - [`progress`]: a bar with an ETA on a terminal, periodic log lines otherwise;
//! - [`binary`]: what every binary's `main` shares (logging set-up, the one-line
//!   error with its cause chain, the exit code).
//!
//! ```
//! use circuitry_core::HookPoint;
//! let hook: HookPoint = "blocks.3.hook_resid_pre".parse().unwrap();
//! assert_eq!(hook, HookPoint::ResidPre { layer: 3 });
//! assert_eq!(hook.to_string(), "blocks.3.hook_resid_pre");
//! ```
#![deny(missing_docs)]

pub mod atomic;
pub mod binary;
mod error;
pub mod fingerprint;
mod gpt2;
mod hook;
mod model;
pub mod options;
pub mod params;
pub mod part;
pub mod preflight;
pub mod progress;
mod record;

pub use error::{Error, Result};
pub use gpt2::Gpt2Config;
pub use hook::HookPoint;
pub use model::{Family, LlamaConfig, ModelConfig, SUPPORTED_MODEL_TYPES};
pub use record::{
    peak_rss_bytes, StageRecord, StageTimer, STAGE_RECORD_FILE, STAGE_RECORD_VERSION,
};

/// The version of the circuitry tools, recorded in every artifact.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
