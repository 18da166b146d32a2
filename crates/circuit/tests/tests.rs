//! Integration tests of circuitry-circuit, one module per area.
mod cli;
mod fixtures;
mod json;
mod paths;
mod render;
mod toy;
mod viewer;
