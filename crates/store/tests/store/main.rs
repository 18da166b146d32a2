//! Integration tests of circuitry-store, one module per area.
mod common;
mod pyarrow;
mod resume;
mod round_trip;
mod validation;
