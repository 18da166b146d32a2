//! Regression tests of issue 15 on `circuitry-train-sae` (real processes, real
//! files): a changed shard, an impossible size, `--check-only`, a read-only
//! `--out`, a half-written SAE folder, a truncated checkpoint, and OS errors
//! printed once. Each asserts the exit code, the message and that nothing was
//! written or left half-written.
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_sae::Sae;

use crate::stage::{make_store, s, text, train_sae, HOOK_A};

/// Small, fast training arguments on `store` into `out` (`extra` overrides them).
fn small<'a>(store: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--store", store, "--out", out, "--hooks", HOOK_A];
    for (flag, value) in [("--d-sae", "16"), ("--steps", "30"), ("--batch-size", "32")] {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, value]);
        }
    }
    v.extend_from_slice(extra);
    v
}

/// Every path below `dir`, sorted (to show that a failed run changed nothing).
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out.sort();
    out
}

/// The reproduction: 4 bytes flipped inside a shard's hook data (the middle
/// of the file is activation pages) used to train with exit 0.
#[test]
fn a_shard_with_flipped_bytes_is_refused_naming_both_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let shard = store.join("shard_00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0xa5;
    }
    std::fs::write(&shard, &bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("meta.json")).unwrap()).unwrap();
    let expected = meta["shards"][1]["checksum"].as_str().unwrap().to_string();
    let found = circuitry_core::fingerprint::fingerprint_path(&shard).unwrap();
    let before = tree(&store);

    let out = dir.path().join("out");
    let o = train_sae(&small(s(&store), s(&out), &[]));
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in [
        "shard_00001.parquet",
        "does not match its checksum",
        expected.as_str(),
        found.as_str(),
        "--force",
        "re-run the dump",
    ] {
        assert!(t.contains(needle), "expected {needle:?} in: {t}");
    }
    assert!(!out.exists(), "nothing may be written");
    assert_eq!(tree(&store), before, "the store is left as it was");
}

/// `--d-sae 1000000000000` aborted with a 16 TB allocation and exit 134.
#[test]
fn an_impossible_d_sae_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    for check_only in [false, true] {
        let mut a = vec![
            "--store",
            s(&store),
            "--out",
            s(&out),
            "--hooks",
            HOOK_A,
            "--d-sae",
            "1000000000000",
        ];
        if check_only {
            a.push("--check-only");
        }
        let o = train_sae(&a);
        let t = text(&o);
        println!("{t}");
        assert_eq!(o.status.code(), Some(2), "{t}");
        for needle in ["needs about", "MemTotal", "lower --d-sae", HOOK_A] {
            assert!(t.contains(needle), "expected {needle:?} in: {t}");
        }
        assert!(!t.contains("memory allocation"), "{t}");
        assert!(!out.exists(), "nothing may be written");
    }
}

#[test]
fn check_only_accepts_good_options_and_refuses_bad_ones_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    let o = train_sae(&small(s(&store), s(&out), &["--check-only"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!out.exists(), "--check-only creates nothing");

    // A store that does not exist yet (an earlier stage writes it) is skipped.
    let later = dir.path().join("not-yet");
    let o = train_sae(&small(s(&later), s(&out), &["--check-only"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let bad: [(&[&str], &str); 3] = [
        (&["--eval-fraction", "1.5"], "eval_fraction"),
        (&["--architecture", "topk"], "--k"),
        (&["--d-in", "7"], "d_in = 7"),
    ];
    for (extra, needle) in bad {
        let mut e = extra.to_vec();
        e.push("--check-only");
        let o = train_sae(&small(s(&store), s(&out), &e));
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        println!("{stderr}");
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected {needle:?} in {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(!out.exists(), "--check-only creates nothing");
    }
}

/// Makes `dir` read-only for this process: mode 0555, or, for root (whom modes do
/// not stop), the immutable attribute. `None` when neither works here.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn make(dir: &Path) -> Option<ReadOnly> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = dir.join("probe");
        if std::fs::write(&probe, b"x").is_err() {
            return Some(ReadOnly(dir.to_path_buf(), false));
        }
        std::fs::remove_file(&probe).unwrap();
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok && std::fs::write(&probe, b"x").is_err() {
            return Some(ReadOnly(dir.to_path_buf(), true));
        }
        None
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

/// A read-only `--out` was found only after training.
#[test]
fn a_read_only_out_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let parent = dir.path().join("ro");
    std::fs::create_dir(&parent).unwrap();
    let Some(_guard) = ReadOnly::make(&parent) else {
        eprintln!("SKIPPED: cannot make a read-only folder here (neither chmod nor chattr works)");
        return;
    };
    let out = parent.join("out");
    // Many steps: a run that trained before failing would log them.
    let o = train_sae(&small(s(&store), s(&out), &["--steps", "100000"]));
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in ["--out", "cannot be written", "not writable", "ro"] {
        assert!(t.contains(needle), "expected {needle:?} in: {t}");
    }
    assert!(
        !t.contains("training SAEs train_rows"),
        "refused before training: {t}"
    );
    assert!(!out.exists());
}

/// An SAE folder with cfg.json and weights but no training.json (a full disk at
/// the end of training) was used by readers without a word.
#[test]
fn a_half_written_sae_folder_is_refused_and_finished_ones_appear_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    let o = train_sae(&small(s(&store), s(&out), &[]));
    assert!(o.status.success(), "{}", text(&o));
    let sae = out.join(HOOK_A);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.contains(".tmp-")),
        "no temporary folder is left: {names:?}"
    );
    Sae::load(&sae).expect("a finished SAE loads");

    let half = dir.path().join("half");
    std::fs::create_dir(&half).unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(sae.join(f), half.join(f)).unwrap();
    }
    let msg = Sae::load(&half).unwrap_err().to_string();
    println!("{msg}");
    for needle in ["half", "incomplete", "training.json", "--force"] {
        assert!(msg.contains(needle), "expected {needle:?} in: {msg}");
    }
}

/// A truncated checkpoint gave "invalid header length" and no fix.
#[test]
fn a_truncated_checkpoint_says_what_it_is_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    let ck = circuitry_sae::checkpoint::path_for(&out, &[HOOK_A.to_string()]);
    std::fs::create_dir_all(ck.parent().unwrap()).unwrap();
    std::fs::write(&ck, [7u8, 0, 0]).unwrap();
    let o = train_sae(&small(s(&store), s(&out), &["--checkpoint-every", "10"]));
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in [
        "checkpoint",
        "truncated or damaged",
        "delete it",
        "start training over",
    ] {
        assert!(t.contains(needle), "expected {needle:?} in: {t}");
    }
    assert!(
        ck.to_str().is_some_and(|c| t.contains(c)),
        "names the file: {t}"
    );
    assert!(!out.join(HOOK_A).exists(), "no SAE written");
}

/// OS errors were printed twice ("… (os error 17): … (os error 17)"): every error
/// type that prints its source was printed again as a cause.
#[test]
fn os_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    // The checkpoint folder's name is taken by a file: creating it fails (EEXIST).
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join(".checkpoints"), b"in the way").unwrap();
    let o = train_sae(&small(s(&store), s(&out), &["--checkpoint-every", "10"]));
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(".checkpoints"), "{t}");
    assert_eq!(t.matches("(os error 17)").count(), 1, "{t}");
}

/// The estimate `--check-only` reports over a 1-byte `--memory-limit`, in bytes (to
/// the 0.1 KiB it prints).
fn estimate(store: &Path, out: &Path, extra: &[&str]) -> f64 {
    let mut a = small(s(store), s(out), extra);
    a.extend_from_slice(&["--check-only", "--memory-limit", "1"]);
    let o = train_sae(&a);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    let after = t.split("needs about ").nth(1).expect(&t);
    let mut words = after.split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    let unit = match words.next().unwrap() {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        other => panic!("unit {other} in: {t}"),
    };
    value * unit
}

/// Regression: on Slurm, a `train-sae` stage with `per_hook = true` runs one array
/// task per hook, then its plain job (every hook), which finds every SAE complete and
/// only writes stage.json. That job estimated the memory of every hook and was
/// refused where one hook fits but all do not (36 GPT-2 small hooks: 53.5 GiB). Now a
/// run estimates only the hooks it trains. `--memory-limit` (also accepted in a run)
/// stands for a machine with room for one hook, not both.
#[test]
fn a_run_needs_memory_only_for_the_hooks_it_still_trains() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    let hook_b = "blocks.0.hook_mlp_out";
    let both = ["--hooks", hook_b];
    let one = estimate(&store, &out, &["--hooks", hook_b, "--only-hook", HOOK_A]).max(estimate(
        &store,
        &out,
        &["--hooks", hook_b, "--only-hook", hook_b],
    ));
    let all = estimate(&store, &out, &both);
    println!("estimates: one hook {one} B, both {all} B");
    assert!(all > one + 2048.0, "one hook {one} B, both {all} B");
    let limit = (((one + all) / 2.0) as u64).to_string();
    let with_limit = |out: &Path, extra: &[&'static str]| {
        let mut a = small(s(&store), s(out), &both);
        a.extend_from_slice(extra);
        let mut a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        a.extend(["--memory-limit".to_string(), limit.clone()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        train_sae(&refs)
    };
    for hook in [HOOK_A, hook_b] {
        let o = with_limit(&out, &["--only-hook", hook]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = with_limit(&out, &[]);
    let t = text(&o);
    assert!(
        o.status.success(),
        "the plain run after the per-hook runs: {t}"
    );
    assert!(t.contains("kept "), "{t}");
    assert!(out.join("stage.json").is_file());

    // With both hooks still to train, the same limit is refused, writing nothing.
    let fresh = dir.path().join("fresh");
    let o = with_limit(&fresh, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for needle in [
        "needs about",
        "more than the memory limit of",
        "(--memory-limit)",
    ] {
        assert!(t.contains(needle), "expected {needle:?} in: {t}");
    }
    assert!(!fresh.exists(), "nothing may be written");
}
