//! `pipelines/sva-gpt2-small.toml` cannot run here (GPT-2 small's weights are not on
//! this machine), but it must stay valid: with placeholder inputs where the README's
//! commands put the real ones, `circuitry plan` accepts every stage and
//! `circuitry submit --dry-run` writes the Slurm arrays it declares. The same holds for
//! `pipelines/sva-gpt2-small-saelens.toml` (SAELens's gpt2-small-res-jb SAEs, no training).
//!
//! The stage binaries' own checks (`--check-only`) are left out here: with empty
//! placeholder inputs, and on this 24 GB machine (36 SAEs of 16384 latents in one
//! process need about 53.5 GiB), they rightly refuse. These tests are about the
//! manifests; the checks have their own tests (crates/pipeline, tests/e2e/cache_integrity).
use std::path::Path;
use std::process::Command;

use circuitry_tests::{bin, repo_root, run_ok, text};

/// `circuitry` with stand-in stage binaries (`true`, which accepts any `--check-only`):
/// plans and dry runs without the real binaries' checks.
fn circuitry_unchecked(dir: &Path) -> Command {
    let stand_ins = dir.join("stand-in-binaries");
    std::fs::create_dir_all(&stand_ins).unwrap();
    let truth = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("no `true` program on this machine");
    for name in ["circuitry-dump", "circuitry-train-sae", "circuitry-circuit"] {
        let link = stand_ins.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(truth, &link).unwrap();
        }
    }
    let mut cmd = Command::new(bin("circuitry"));
    cmd.env("CIRCUITRY_BIN_DIR", stand_ins);
    cmd
}

/// A copy of `sva-gpt2-small.toml` under `dir/pipelines/` with empty files at `dir/models/…`.
fn with_placeholder_inputs(dir: &Path) -> std::path::PathBuf {
    copy_with_placeholders(dir, "sva-gpt2-small.toml")
}

/// A copy of the manifest `name` under `dir/pipelines/` with empty files (and an empty
/// SAE directory) at `dir/models/…`, where the README's commands put the real ones.
fn copy_with_placeholders(dir: &Path, name: &str) -> std::path::PathBuf {
    let pipelines = dir.join("pipelines");
    let agreement = dir.join("models/gpt2/agreement");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::create_dir_all(&agreement).unwrap();
    for file in [
        "models/corpus.txt",
        "models/gpt2/tokenizer.json",
        "models/gpt2/agreement/simple_test.jsonl",
        "models/gpt2/agreement/across_pp_test.jsonl",
        "models/gpt2/agreement/within_rc_test.jsonl",
        "models/gpt2/agreement/across_rc_test.jsonl",
    ] {
        std::fs::write(dir.join(file), b"").unwrap();
    }
    std::fs::create_dir_all(dir.join("models/gpt2-small-res-jb")).unwrap();
    let manifest = pipelines.join(name);
    std::fs::copy(repo_root().join("pipelines").join(name), &manifest).unwrap();
    manifest
}

#[test]
fn gpt2_small_manifest_plans_every_stage() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = with_placeholder_inputs(dir.path());
    let out = run_ok(circuitry_unchecked(dir.path()).arg("plan").arg(&manifest));
    let plan = text(&out);
    println!("{plan}");
    for stage in [
        "acts",
        "saes",
        "pairs_simple",
        "pairs_across_rc",
        "circuit_simple",
        "circuit_across_rc",
    ] {
        assert!(
            plan.contains(&format!("  {stage} ")),
            "{stage} missing from the plan"
        );
    }
    assert!(plan.contains("0 fresh, 6 stale"), "{plan}");
    assert!(plan.contains("--d-in 768"), "{plan}");
}

#[test]
fn gpt2_small_manifest_declares_slurm_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = with_placeholder_inputs(dir.path());
    let out = run_ok(
        circuitry_unchecked(dir.path())
            .args(["submit", "--dry-run"])
            .arg(&manifest),
    );
    let scripts = text(&out);
    assert!(scripts.contains("--array=0-7"), "dump in 8 parts");
    assert!(scripts.contains("--part \"${SLURM_ARRAY_TASK_ID}/8\""));
    assert!(scripts.contains("--array=0-35"), "one SAE task per hook");
    assert!(scripts.contains("--only-hook"));
    assert!(scripts.contains("#SBATCH --mem=32G"));
}

#[test]
fn gpt2_small_saelens_manifest_plans_pairs_and_circuits() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = copy_with_placeholders(dir.path(), "sva-gpt2-small-saelens.toml");
    let out = run_ok(circuitry_unchecked(dir.path()).arg("plan").arg(&manifest));
    let plan = text(&out);
    println!("{plan}");
    for family in ["simple", "across_pp", "within_rc", "across_rc"] {
        for stage in [format!("pairs_{family}"), format!("circuit_{family}")] {
            assert!(
                plan.contains(&format!("  {stage} ")),
                "{stage} missing from the plan"
            );
        }
    }
    assert!(plan.contains("0 fresh, 8 stale"), "{plan}");
    assert!(
        plan.contains("gpt2-small-res-jb"),
        "circuits read the SAELens SAEs: {plan}"
    );
    assert!(
        !plan.contains("circuitry-train-sae"),
        "nothing is trained: {plan}"
    );
}
