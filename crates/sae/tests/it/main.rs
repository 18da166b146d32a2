//! Integration tests of circuitry-sae, one module per area.
mod common;
mod files;
mod grad;
mod reference;
mod stage;
mod tiny;
mod training;
