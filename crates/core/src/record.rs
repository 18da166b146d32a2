//! `stage.json`: the record every stage writes last.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{atomic, fingerprint::fingerprint_path, Result, TOOL_VERSION};

/// File name of the stage record inside a stage's output directory.
pub const STAGE_RECORD_FILE: &str = "stage.json";
/// Schema version of [`StageRecord`].
pub const STAGE_RECORD_VERSION: u32 = 1;

/// What a stage did: written as `stage.json` in its output directory, last, so its
/// presence means the stage completed. The pipeline decides freshness from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// Schema version ([`STAGE_RECORD_VERSION`]).
    pub schema_version: u32,
    /// The binary that ran (e.g. `circuitry-train-sae`).
    pub tool: String,
    /// Its version.
    pub tool_version: String,
    /// The command-line arguments it ran with (without the program name).
    pub argv: Vec<String>,
    /// The resolved, validated configuration.
    pub config: serde_json::Value,
    /// Fingerprints of the inputs, by path as given.
    pub inputs: BTreeMap<String, String>,
    /// Fingerprints of the outputs, by path relative to the output directory.
    pub outputs: BTreeMap<String, String>,
    /// Seconds since the Unix epoch when the stage finished.
    pub finished_unix: u64,
    /// Wall-clock seconds the stage took.
    pub wall_seconds: f64,
}

/// Measures a stage from start to [`StageTimer::finish`].
#[derive(Debug)]
pub struct StageTimer {
    tool: String,
    argv: Vec<String>,
    start: Instant,
}

impl StageTimer {
    /// Start timing `tool`, remembering this process's arguments.
    pub fn start(tool: &str) -> Self {
        StageTimer {
            tool: tool.into(),
            argv: std::env::args().skip(1).collect(),
            start: Instant::now(),
        }
    }

    /// Fingerprint `inputs` and the named `outputs` (relative to `out_dir`) and write
    /// `out_dir/stage.json`. Call it after every output is in place.
    pub fn finish<C: Serialize>(
        self,
        config: &C,
        inputs: &[&Path],
        out_dir: &Path,
        outputs: &[&str],
    ) -> Result<StageRecord> {
        let mut input_fps = BTreeMap::new();
        for p in inputs {
            input_fps.insert(p.display().to_string(), fingerprint_path(p)?);
        }
        let mut output_fps = BTreeMap::new();
        for rel in outputs {
            output_fps.insert((*rel).to_string(), fingerprint_path(&out_dir.join(rel))?);
        }
        let record = StageRecord {
            schema_version: STAGE_RECORD_VERSION,
            tool: self.tool,
            tool_version: TOOL_VERSION.into(),
            argv: self.argv,
            config: serde_json::to_value(config).unwrap_or(serde_json::Value::Null),
            inputs: input_fps,
            outputs: output_fps,
            finished_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            wall_seconds: self.start.elapsed().as_secs_f64(),
        };
        record.write(out_dir)?;
        Ok(record)
    }
}

impl StageRecord {
    /// Write `dir/stage.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        atomic::write_json(&dir.join(STAGE_RECORD_FILE), self)
    }

    /// Read `dir/stage.json`; `Ok(None)` when it does not exist.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STAGE_RECORD_FILE);
        if !path.exists() {
            return Ok(None);
        }
        atomic::read_json(&path).map(Some)
    }
}
