//! Sparse feature circuits (Marks et al. 2024, "Sparse Feature Circuits") on any model the
//! models crate loads (GPT-2 and Llama families; the module keeps its first name).
//!
//! SAEs are spliced at chosen submodules (`hook_resid_pre`/`hook_resid_post`,
//! `hook_attn_out`, `hook_mlp_out`): the activation becomes `decode(f) + error`, and the
//! features `f` and the error are the circuit's nodes. For paired prompts (clean /
//! patch, from a pairs dump) and the metric `m = logit(patch answer) − logit(clean
//! answer)` at the last position:
//!
//! - [`splice`]: [`Submodule`] (a hook with its SAE), [`Submodules`] in forward order
//!   with Marks et al.'s adjacency, features/error of activations ([`SubState`]), and
//!   the gradients that reach them;
//! - [`pairs`]: [`PairBatch`], [`PairData::read`] (a pairs store + `examples.jsonl`),
//!   [`logit_diff`], and [`check_reproduces`] (the Rust forward must reproduce the
//!   cached activations);
//! - [`nodes`]: node effects by attribution patching, integrated gradients or exact
//!   patching ([`Method`]);
//! - [`edges`]: edge effects `∇_d m · ∂d/∂u · Δu` between adjacent submodules;
//! - [`eval`]: faithfulness and completeness with mean, zero or resample ablation;
//! - [`edgeeval`]: faithfulness with the edges outside the circuit ablated too;
//! - [`discover`]: the whole dataset: [`analyse`], [`select`], [`mean_edges`], [`sweep`],
//!   [`edge_sweep`];
//! - [`parts`]: the computation in three rounds over shares of the pairs, in one go or
//!   split into parts (`--part I/N`, Slurm job arrays) whose files add up;
//! - [`build`]: the [`Circuit`](crate::Circuit) graph of the result;
//! - [`stage`]: the `circuitry-circuit gpt2` stage; [`plot`]: the faithfulness plot.
pub mod build;
pub mod discover;
pub mod edgeeval;
pub mod edges;
pub mod eval;
pub mod exactcheck;
pub mod nodes;
pub mod pairs;
pub mod parts;
pub mod plot;
pub mod splice;
pub mod stage;

pub use discover::{
    analyse, edge_sweep, mean_edges, select, sweep, Aggregation, Analysis, ScoredNode,
};
pub use edgeeval::{all_edges, edges_at_least, EdgeEval, EdgeSet};
pub use edges::{EdgeSums, NodeRef};
pub use eval::{Ablation, EdgeEvalRow, EvalRow, Membership};
pub use nodes::{node_effects, prepare, Method, NodeEffects, Prepared};
pub use pairs::{
    answer_diff, answer_ids, answers, check_reproduces, logit_diff, PairBatch, PairData,
};
pub use splice::{SubState, Submodule, SubmoduleKind, Submodules};
