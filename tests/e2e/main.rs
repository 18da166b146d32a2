//! End-to-end tests: the stage binaries run as processes, as users run them.
//! Build the binaries first: `cargo build --release --workspace --bins` (scripts/test.sh).

mod cache_integrity;
mod circuit_parts;
mod demo;
mod gpt2_small_manifest;
mod one_shape;
mod options;
mod slurm;
mod smollm2_smoke;
mod sva_circuit;
mod sva_tiny;
mod toy_pipeline;
