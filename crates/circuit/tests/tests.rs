//! Integration tests of circuitry-circuit, one module per area.
mod cli;
mod fixtures;
mod gpt2_edgeeval;
mod gpt2_effects;
mod gpt2_fixtures;
mod gpt2_grad;
mod json;
mod llama_reference;
mod paths;
mod render;
mod toy;
mod viewer;
