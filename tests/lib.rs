//! Helpers shared by the end-to-end tests: locating the stage binaries that
//! `cargo build --workspace --bins` put next to the test executable, and
//! preparing a private copy of a pipeline manifest.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The directory holding the workspace binaries of the profile the tests were built
/// with (`target/release` for `cargo test --release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    assert!(
        dir.join("circuitry").exists(),
        "stage binaries not found in {}: run `cargo build --release --workspace --bins` before the tests (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// Copy `pipelines/<name>` into `dir`, pointing its `run_dir` at `dir/run` and its
/// `"../datasets/…"` paths at the repository's `datasets/`.
pub fn private_manifest(name: &str, dir: &Path) -> PathBuf {
    let src = repo_root().join("pipelines").join(name);
    let text =
        std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("run_dir") {
            out.push_str("run_dir = \"run\"\n");
        } else {
            let datasets = repo_root().join("datasets");
            let models = repo_root().join("models");
            let line = line.replace("\"../datasets", &format!("\"{}", datasets.display()));
            out.push_str(&line.replace("\"../models", &format!("\"{}", models.display())));
            out.push('\n');
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// Run a command, returning its output; panics with stdout/stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout and stderr of an output, together, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `python3 -c SCRIPT ARGS…`, failing the test (never skipping) when Python or a
/// package is missing. Returns stdout.
pub fn python(script: &str, args: &[&Path]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    for a in args {
        cmd.arg(a);
    }
    let out = run_ok(&mut cmd);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The largest difference between the numbers of two JSON values of one shape
/// (anything else must be equal).
pub fn json_max_diff(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> f64 {
    use serde_json::Value::{Array, Number, Object};
    match (a, b) {
        (Number(x), Number(y)) => (x.as_f64().unwrap() - y.as_f64().unwrap()).abs(),
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths differ");
            x.iter()
                .zip(y)
                .map(|(u, v)| json_max_diff(u, v, at))
                .fold(0.0, f64::max)
        }
        (Object(x), Object(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: keys differ");
            x.iter()
                .map(|(k, u)| json_max_diff(u, &y[k], &format!("{at}.{k}")))
                .fold(0.0, f64::max)
        }
        _ => {
            assert_eq!(a, b, "{at} differs");
            0.0
        }
    }
}
