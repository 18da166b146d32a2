//! A stand-in for the stage binaries, run as a real process.
//!
//! A fake binary (see [`crate::util::Fixture`]) runs this test binary as
//! `EXE fake_stage::fake_stage_entry --exact ... -- ARGS` with `CIRCUITRY_FAKE_TOOL`
//! set to the binary it stands for. It then:
//! - appends its stage name (the last component of `--out`) to `$CIRCUITRY_FAKE_LOG`;
//! - fails with exit status 3 if `$CIRCUITRY_FAKE_FAIL` is that stage name;
//! - writes `result.txt` (and, as `circuitry-train-sae`, `<hook>/cfg.json`), whose
//!   content depends only on its arguments, its inputs' content and
//!   `$CIRCUITRY_FAKE_SALT`, so the same run writes the same bytes;
//! - writes `stage.json` last, like `circuitry_core::StageTimer::finish`.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use circuitry_core::fingerprint::fingerprint_path;
use circuitry_core::{StageRecord, STAGE_RECORD_VERSION, TOOL_VERSION};

/// Flags whose values are input paths.
const INPUT_FLAGS: &[&str] = &["--model", "--store", "--sae", "--corpus"];

/// Does nothing in a normal test run; acts as a stage binary when re-executed by a
/// fake binary script.
#[test]
fn fake_stage_entry() {
    let Ok(tool) = std::env::var("CIRCUITRY_FAKE_TOOL") else {
        return;
    };
    let args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
    std::process::exit(run(&tool, &args));
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn run(tool: &str, args: &[String]) -> i32 {
    let Some(out) = flag(args, "--out") else {
        eprintln!("{tool}: --out is required");
        return 2;
    };
    let out = Path::new(out);
    let stage = out.file_name().unwrap().to_string_lossy().into_owned();
    if let Ok(log) = std::env::var("CIRCUITRY_FAKE_LOG") {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "{stage}").unwrap();
    }
    println!("{tool}: running stage {stage}");
    eprintln!("{tool}: progress on stderr");
    fs::create_dir_all(out).unwrap();
    if std::env::var("CIRCUITRY_FAKE_FAIL").is_ok_and(|s| s == stage) {
        fs::write(out.join("partial.txt"), "half done").unwrap();
        eprintln!("{tool}: fake failure in {stage}");
        return 3;
    }
    let mut inputs = BTreeMap::new();
    for name in INPUT_FLAGS {
        if let Some(path) = flag(args, name) {
            inputs.insert(path.to_string(), fingerprint_path(Path::new(path)).unwrap());
        }
    }
    let salt = std::env::var("CIRCUITRY_FAKE_SALT").unwrap_or_default();
    let content = format!("{tool} {args:?}\ninputs {inputs:?}\nsalt {salt}\n");
    fs::write(out.join("result.txt"), &content).unwrap();
    let mut output_names = vec!["result.txt".to_string()];
    if let Some(hook) = flag(args, "--hook") {
        fs::create_dir_all(out.join(hook)).unwrap();
        fs::write(out.join(hook).join("cfg.json"), &content).unwrap();
        output_names.push(hook.to_string());
    }
    let outputs = output_names
        .into_iter()
        .map(|rel| {
            let fp = fingerprint_path(&out.join(&rel)).unwrap();
            (rel, fp)
        })
        .collect();
    let record = StageRecord {
        schema_version: STAGE_RECORD_VERSION,
        tool: tool.to_string(),
        tool_version: TOOL_VERSION.to_string(),
        argv: args.to_vec(),
        config: serde_json::Value::Null,
        inputs,
        outputs,
        finished_unix: 0,
        wall_seconds: 0.0,
    };
    if std::env::var("CIRCUITRY_FAKE_NO_RECORD").is_ok_and(|s| s == stage) {
        return 0;
    }
    record.write(out).unwrap();
    0
}
