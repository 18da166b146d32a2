//! One shape for every binary (issue 16): environment variables are read only in the
//! binaries' `main.rs` (libraries take settings as arguments), and every binary
//! prints an error as one `error: ` line whose causes each appear once, exit code 2.
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_tests::{bin, repo_root};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `grep -rn "env::var" crates/*/src` finds only `main.rs` files.
#[test]
fn environment_variables_are_read_only_in_main() {
    let crates = repo_root().join("crates");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap().flatten() {
        rust_files(&krate.path().join("src"), &mut files);
    }
    assert!(
        files.len() > 50,
        "found only {} source files under {}",
        files.len(),
        crates.display()
    );
    let mut hits = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.contains("env::var") {
                let rel = file.strip_prefix(repo_root()).unwrap_or(file);
                hits.push((rel.to_path_buf(), i + 1, line.trim().to_string()));
            }
        }
    }
    for (file, line, text) in &hits {
        println!("{}:{line}: {text}", file.display());
    }
    let outside: Vec<_> = hits
        .iter()
        .filter(|(f, _, _)| f.file_name().is_none_or(|n| n != "main.rs"))
        .collect();
    assert!(
        outside.is_empty(),
        "environment variables read outside a binary's main.rs (read them in main and pass the value down): {outside:?}"
    );
}

/// Each binary, given an input that does not exist or an output under a file, exits
/// with 2 and prints one `error:` line in which an OS error appears once (when the
/// failure is one: "No such file or directory (os error 2)").
#[test]
fn every_binary_prints_one_error_line_with_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let missing = dir.path().join("missing");
    let out = dir.path().join("out");
    let (m, o) = (missing.to_str().unwrap(), out.to_str().unwrap());
    let under_file = file.join("out");
    // (binary, arguments, how many times "os error" appears)
    let cases: Vec<(&str, Vec<&str>, usize)> = vec![
        ("circuitry", vec!["plan", m], 1),
        ("circuitry-dump", vec!["toy", "--model", m, "--out", o], 1),
        (
            "circuitry-train-sae",
            vec![
                "--store",
                m,
                "--hooks",
                "blocks.0.hook_resid_pre",
                "--out",
                o,
                "--d-sae",
                "8",
                "--gemm",
                "faer",
            ],
            0,
        ),
        (
            "circuitry-circuit",
            vec!["toy", "--model", m, "--sae", m, "--store", m, "--out", o],
            1,
        ),
        (
            "circuitry-train-toy",
            vec!["--out", under_file.to_str().unwrap(), "--epochs", "1"],
            0,
        ),
    ];
    for (program, args, os_errors) in cases {
        let o = Command::new(bin(program))
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        println!("{program}: {stderr}");
        assert_eq!(o.status.code(), Some(2), "{program}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{program}: one error line: {stderr}");
        assert_eq!(
            stderr.matches("os error").count(),
            os_errors,
            "{program}: each cause once: {stderr}"
        );
        assert!(!out.exists(), "{program} wrote {}", out.display());
    }
}

/// `CIRCUITRY_PANELS` (the panel products' kernel) is read in the stage binaries' `main`:
/// a value that is not `auto`, `off` or `avx2` stops them before anything runs, with one
/// error line naming the variable and the choices, exit code 2, nothing written.
#[test]
fn a_bad_circuitry_panels_value_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "circuitry-circuit",
            vec![
                "toy", "--model", "m", "--sae", "s", "--store", "t", "--out", o,
            ],
        ),
        (
            "circuitry-train-sae",
            vec![
                "--store",
                "t",
                "--hooks",
                "blocks.0.hook_resid_pre",
                "--out",
                o,
                "--d-sae",
                "8",
            ],
        ),
    ];
    for (program, args) in cases {
        let run = Command::new(bin(program))
            .args(&args)
            .env("CIRCUITRY_PANELS", "fastest")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        println!("{program}: {stderr}");
        assert_eq!(run.status.code(), Some(2), "{program}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{program}: one error line: {stderr}");
        assert!(
            errors[0].contains("CIRCUITRY_PANELS=\"fastest\"") && errors[0].contains("auto, off"),
            "{program}: {stderr}"
        );
        assert!(!out.exists(), "{program} wrote {}", out.display());
    }
}
