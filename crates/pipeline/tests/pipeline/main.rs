//! Integration tests of `circuitry`: manifest validation (one test per rule) and the
//! local runner, driven through the real binary with fake stage binaries.
//!
//! The fake stage binaries are shell scripts in a temporary directory, found by the
//! runner through `CIRCUITRY_BIN_DIR`. Each script re-executes this test binary,
//! running only [`fake_stage::fake_stage_entry`], which then acts as the stage: it
//! writes outputs and a real `stage.json` (with fingerprints) like a stage binary.
mod fake_stage;
mod integrity;
mod runner;
mod slurm_table;
mod util;
mod validation;
