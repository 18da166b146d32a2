//! Integration tests of circuitry-sae, one module per area.
mod ce;
mod common;
mod files;
mod grad;
mod integrity;
mod reference;
mod saelens;
mod stage;
mod tiny;
mod training;
