//! A stand-in for the stage binaries, run as a real process.
//!
//! A fake binary (see [`crate::util::Fixture`]) runs this test binary as
//! `EXE fake_stage::fake_stage_entry --exact ... -- ARGS` with `CIRCUITRY_FAKE_TOOL`
//! set to the binary it stands for. It then:
//! - with `--check-only` (the options check the runner asks for before running
//!   anything): appends `check STAGE` to `$CIRCUITRY_FAKE_CHECK_LOG`; answers like a binary
//!   that predates the flag (clap's "unexpected argument", exit 2) if
//!   `$CIRCUITRY_FAKE_NO_CHECK` is set; refuses with one line on stderr, exit 2, if
//!   `$CIRCUITRY_FAKE_REJECT` is the stage name; otherwise prints one info line and
//!   exits 0. It writes nothing;
//! - appends its stage name (the last component of `--out`) to `$CIRCUITRY_FAKE_LOG`;
//! - as `circuitry-dump`, refuses (exit 2) an `--out` that already holds a complete
//!   output (`result.txt`), as the real dump refuses a complete store;
//! - fails with exit status 3 if `$CIRCUITRY_FAKE_FAIL` is that stage name, and with
//!   status 2 and a refusal line if `$CIRCUITRY_FAKE_REJECT_RUN` is;
//! - if `$CIRCUITRY_FAKE_SLEEP` is `STAGE:SECONDS`, writes a partial file, its pid to
//!   `$CIRCUITRY_FAKE_PID_FILE` and sleeps that long before finishing;
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

/// The refusal line the fake prints (it names the `--top-paths` flag, which the
/// toy manifest's circuit stage sets as `top_paths`).
pub const REFUSAL: &str =
    "error: --top-paths 3 asks for more paths than the circuit has; set --top-paths to at most 2";

fn env_is(name: &str, stage: &str) -> bool {
    std::env::var(name).is_ok_and(|s| s == stage)
}

fn append(log_var: &str, line: &str) {
    if let Ok(log) = std::env::var(log_var) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

fn run(tool: &str, args: &[String]) -> i32 {
    let Some(out) = flag(args, "--out") else {
        eprintln!("{tool}: --out is required");
        return 2;
    };
    let out = Path::new(out);
    let stage = out.file_name().unwrap().to_string_lossy().into_owned();
    if args.last().is_some_and(|a| a == "--check-only") {
        append("CIRCUITRY_FAKE_CHECK_LOG", &format!("check {stage}"));
        if std::env::var_os("CIRCUITRY_FAKE_NO_CHECK").is_some() {
            eprintln!("error: unexpected argument '--check-only' found\n\nUsage: {tool} [OPTIONS] --out <OUT>\n\nFor more information, try '--help'.");
            return 2;
        }
        if env_is("CIRCUITRY_FAKE_REJECT", &stage) {
            eprintln!("{REFUSAL}");
            return 2;
        }
        println!("{tool}: options fine, needs about 1 MB");
        return 0;
    }
    append("CIRCUITRY_FAKE_LOG", &stage);
    println!("{tool}: running stage {stage}");
    eprintln!("{tool}: progress on stderr");
    fs::create_dir_all(out).unwrap();
    // Resuming, a stage discards unfinished work of an interrupted run.
    let _ = fs::remove_file(out.join("partial.txt"));
    // Like the real dump, refuse to write over a complete output (issue 15, item 1).
    if tool == "circuitry-dump" && out.join("result.txt").exists() {
        eprintln!(
            "error: activation store {} is already complete; delete it to dump again",
            out.display()
        );
        return 2;
    }
    if std::env::var("CIRCUITRY_FAKE_FAIL").is_ok_and(|s| s == stage) {
        fs::write(out.join("partial.txt"), "half done").unwrap();
        eprintln!("{tool}: fake failure in {stage}");
        return 3;
    }
    if env_is("CIRCUITRY_FAKE_REJECT_RUN", &stage) {
        fs::write(out.join("partial.txt"), "half done").unwrap();
        eprintln!("{REFUSAL}");
        return 2;
    }
    if let Some(seconds) = std::env::var("CIRCUITRY_FAKE_SLEEP")
        .ok()
        .and_then(|v| v.strip_prefix(&format!("{stage}:")).map(str::to_string))
    {
        fs::write(out.join("partial.txt"), "half done").unwrap();
        if let Ok(file) = std::env::var("CIRCUITRY_FAKE_PID_FILE") {
            // Written whole under a temporary name, so a reader never sees half a pid.
            let tmp = format!("{file}.tmp");
            fs::write(&tmp, std::process::id().to_string()).unwrap();
            fs::rename(&tmp, &file).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_secs_f64(seconds.parse().unwrap()));
        fs::remove_file(out.join("partial.txt")).unwrap();
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
    for hook in flag(args, "--hooks").into_iter().flat_map(|h| h.split(',')) {
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
        peak_rss_bytes: None,
    };
    if std::env::var("CIRCUITRY_FAKE_NO_RECORD").is_ok_and(|s| s == stage) {
        return 0;
    }
    record.write(out).unwrap();
    0
}
