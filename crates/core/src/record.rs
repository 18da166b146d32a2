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
    /// The stage process's peak resident memory in bytes (Linux `VmHWM`; absent where
    /// unknown and in records written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

/// Measures a stage from start to [`StageTimer::finish`].
#[derive(Debug)]
pub struct StageTimer {
    tool: String,
    argv: Vec<String>,
    start: Instant,
}

impl StageTimer {
    /// Start timing `tool` run with `argv` (its command-line arguments, without the
    /// program name: `std::env::args().skip(1)` in a binary's `main`).
    pub fn start(tool: &str, argv: Vec<String>) -> Self {
        StageTimer {
            tool: tool.into(),
            argv,
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
            peak_rss_bytes: peak_rss_bytes(),
        };
        record.write(out_dir)?;
        Ok(record)
    }
}

/// This process's peak resident memory so far, from `/proc/self/status` (`VmHWM`);
/// `None` where that is not available.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_is_read_from_proc_status() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(1234 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        // This test process holds at least its own binary in memory.
        let peak = peak_rss_bytes().expect("Linux has /proc/self/status");
        assert!(peak > 1 << 20, "{peak}");
    }

    #[test]
    fn records_without_peak_memory_still_read() {
        let old = r#"{"schema_version":1,"tool":"t","tool_version":"0","argv":[],"config":null,
            "inputs":{},"outputs":{},"finished_unix":0,"wall_seconds":1.5}"#;
        let r: StageRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.peak_rss_bytes, None);
    }
}
