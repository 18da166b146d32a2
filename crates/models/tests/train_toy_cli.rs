//! `circuitry-train-toy --check-only` (issue 15): the stage's own option checks,
//! run without training or writing, so the pipeline can call them before a run
//! (`noise = 5.0` in a manifest used to pass validation and fail at run time).
use std::process::{Command, Output};

fn train_toy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitry-train-toy"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_only_accepts_good_options_and_refuses_noise_5_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let o = out.to_str().unwrap();
    let ok = train_toy(&["--out", o, "--noise", "0.1", "--check-only"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!out.exists(), "--check-only creates nothing");

    let bad: [(&[&str], &str); 3] = [
        (&["--noise", "5.0"], "[0, 0.15]"),
        (&["--hidden", "0"], "hidden"),
        (&["--n-train", "1000000000000000"], "needs about"),
    ];
    for (extra, needle) in bad {
        let mut args = vec!["--out", o, "--check-only"];
        args.extend_from_slice(extra);
        let bad = train_toy(&args);
        let stderr = String::from_utf8_lossy(&bad.stderr);
        println!("{stderr}");
        assert_eq!(bad.status.code(), Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected {needle:?} in {stderr}"
        );
        assert!(!out.exists(), "nothing written");
    }
}

/// A folder below a file cannot be created: refused before training, the OS error
/// printed once.
#[test]
fn an_out_that_cannot_be_created_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("model");
    let o = train_toy(&["--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stderr}");
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a file"), "{stderr}");
    assert!(!stderr.contains("toy model: train accuracy"), "{stderr}");
}
