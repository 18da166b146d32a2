//! # circuitry-dump
//!
//! The dump stage: run a model over inputs and write its activations at named hook
//! points into an activation store (`circuitry-store`).
//!
//! - [`toy`]: the seed recipe's toy agreement network — encoded subject nouns in,
//!   `toy.hook_input`, `toy.hook_hidden` and `toy.hook_logits` out.
//! - [`onnx`]: a GPT-2 or Llama model exported by `scripts/export_onnx.py`, run with ONNX Runtime over
//!   a text corpus (packed into windows) or paired agreement prompts, writing any of
//!   its hook outputs chosen by name or glob.
//!
//! The binary `circuitry-dump` has one subcommand per model family
//! (`circuitry-dump toy …`, `circuitry-dump onnx …`).
#![deny(missing_docs)]

mod error;
pub mod onnx;
pub mod toy;

pub use error::{Error, Result};

/// Rows per Parquet shard when `--shard-rows` is not given.
pub const DEFAULT_SHARD_ROWS: usize = 100_000;
