//! # circuitry-circuit
//!
//! Feature circuits: the graph of model units, SAE features and SAE error nodes that
//! carries a behaviour, with its JSON form and its drawings.
//!
//! - [`Circuit`], [`Node`], [`NodeKind`], [`Edge`], [`Stat`]: the layered graph, written
//!   as canonical `circuit.json` ([`Circuit::write`]; schema in [`schema`]);
//! - [`layout::layered`]: columns per layer, barycentre ordering to reduce crossings;
//! - [`render`]: `circuit.dot` ([`render::dot`]), `circuit.svg` ([`render::svg`], laid
//!   out here, no Graphviz) and `summary.txt` ([`render::summary`]);
//! - [`paths::strongest_paths`]: the input → … → output paths of largest |product of
//!   weights|;
//! - [`toy`]: the seed's toy circuit (inputs → H1..H4 → SAE features + error → runs/run),
//!   its exact per-example contributions and the graph of their means;
//! - [`stage`]: the `circuitry-circuit toy` stage (model + SAE + store in, files out).
//!
//! ```
//! use circuitry_circuit::{Node, NodeKind};
//! use circuitry_core::HookPoint;
//! let f = Node::new(NodeKind::Feature, "F4", HookPoint::ToyHidden, 2, None, Some(3));
//! assert_eq!(f.id, "feature:toy.hook_hidden/3");
//! ```
#![deny(missing_docs)]

mod error;
pub mod gpt2;
mod graph;
pub mod layout;
pub mod paths;
pub mod render;
pub mod stage;
pub mod toy;

#[doc = include_str!("../SCHEMA.md")]
pub mod schema {}

pub use error::{Error, Result};
pub use graph::{
    Circuit, Described, Edge, Group, Node, NodeKind, Provenance, Stat, Thresholds, CIRCUIT_FILE,
    CIRCUIT_SCHEMA_VERSION,
};
