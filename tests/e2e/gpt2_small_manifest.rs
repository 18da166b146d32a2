//! `pipelines/sva-gpt2-small.toml` cannot run here (GPT-2 small's weights are not on
//! this machine), but it must stay valid: with placeholder inputs where the README's
//! commands put the real ones, `circuitry plan` accepts every stage and
//! `circuitry submit --dry-run` writes the Slurm arrays it declares. The same holds for
//! `pipelines/sva-gpt2-small-saelens.toml` (SAELens's gpt2-small-res-jb SAEs, no training).
//!
//! The plan tests leave the stage binaries' own checks (`--check-only`) out: on this
//! 24 GB machine, 36 SAEs of 16384 latents in one process (what `circuitry run` would
//! start) need about 53.5 GiB, and the checks rightly refuse. `circuitry submit` checks
//! each job as the cluster runs it instead, one SAE per array task against the job's
//! `mem`: the last tests run it with the real binaries.
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

/// `circuitry` with the real stage binaries (those beside it in the target directory).
fn circuitry_checked() -> Command {
    let mut cmd = Command::new(bin("circuitry"));
    cmd.env_remove("CIRCUITRY_BIN_DIR").env_remove("RUST_LOG");
    cmd
}

/// The manifest's text with `from` replaced by `to` (which must occur).
fn edit(manifest: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    assert!(
        text.contains(from),
        "{from:?} not in {}",
        manifest.display()
    );
    let edited = text.replace(from, to);
    std::fs::write(manifest, &edited).unwrap();
    edited
}

/// The 1-based line and column of `needle`'s first occurrence after `after` in `text`.
fn position_after(text: &str, after: &str, needle: &str) -> (usize, usize) {
    let start = text.find(after).expect("anchor missing");
    let at = start + text[start..].find(needle).expect("needle missing");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Regression: `circuitry submit` checked the `saes` stage with its full argv (36 hooks
/// in one process, about 53.5 GiB) against this machine's memory, so the manifest was
/// refused on a login node although each array task trains one hook (about 1.5 GiB) in
/// a 32G job. Now each task is checked with its `--only-hook` argv (each dump part
/// with `--part I/N`) against its job's `mem`: accepted on any machine, since even the
/// full-argv estimate exceeds the job's 32G.
#[test]
fn submit_checks_each_array_task_against_its_jobs_mem() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = with_placeholder_inputs(dir.path());
    let out = run_ok(
        circuitry_checked()
            .args(["submit", "--dry-run"])
            .arg(&manifest),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "  acts: 8 array tasks checked, memory estimates against the job's mem = \"64G\" of [slurm]\n",
        "  saes: 36 array tasks checked, memory estimates against the job's mem = \"32G\" of [slurm.stage.saes]\n",
        "  circuit_simple: 1 job checked, memory estimates against the job's mem = \"64G\" of [slurm]\n",
    ] {
        assert!(err.contains(line), "want {line:?} in:\n{err}");
    }
    assert!(text(&out).contains("--array=0-35"));
    assert!(
        !dir.path().join("runs").exists(),
        "a dry run writes nothing"
    );
}

/// A task whose estimate exceeds its job's `mem` is still refused, before anything is
/// written: exit 2, at the `mem` value in the manifest, naming the stage, the task,
/// the estimate, the limit and where it comes from.
#[test]
fn submit_refuses_an_array_task_over_its_jobs_mem() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = with_placeholder_inputs(dir.path());
    let text_now = edit(
        &manifest,
        "per_hook = true\ncpus_per_task = 8\nmem = \"32G\"",
        "per_hook = true\ncpus_per_task = 8\nmem = \"1G\"",
    );
    let (line, column) = position_after(&text_now, "[slurm.stage.saes]", "\"1G\"");
    let out = circuitry_checked()
        .args(["submit", "--dry-run"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "error: {}:{line}:{column}: stage saes: array task 0 of 36 (--only-hook blocks.0.hook_resid_pre): circuitry-train-sae needs about 1.5 GiB of memory (",
        manifest.display()
    );
    assert!(
        err.starts_with(&want),
        "want {want:?} at the start of:\n{err}"
    );
    for part in [
        "more than the memory limit of 1.0 GiB",
        "mem = \"1G\" of [slurm.stage.saes]",
        "lower --d-sae",
    ] {
        assert!(err.contains(part), "want {part:?} in:\n{err}");
    }
    assert!(out.stdout.is_empty(), "no script printed after a refusal");
    assert!(!dir.path().join("runs").exists(), "nothing written");
}

/// Without `mem`, submit compares with this machine's memory and says so.
#[test]
fn submit_without_mem_compares_with_this_machine_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = with_placeholder_inputs(dir.path());
    edit(&manifest, "mem = \"32G\"\n", "");
    edit(&manifest, "mem = \"64G\"\n", "");
    // About 12 TiB per SAE: more than any machine that runs these tests.
    let text_now = edit(&manifest, "d_sae = 16384", "d_sae = 160000000");
    let (line, column) = position_after(&text_now, "name = \"saes\"", "160000000");
    let out = circuitry_checked()
        .args(["submit", "--dry-run"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "error: {}:{line}:{column}: stage saes: array task 0 of 36 (--only-hook blocks.0.hook_resid_pre): circuitry-train-sae needs about ",
        manifest.display()
    );
    assert!(
        err.starts_with(&want),
        "want {want:?} at the start of:\n{err}"
    );
    for part in [
        "more than this machine's ",
        "(MemTotal in /proc/meminfo)",
        "the manifest sets no `mem` for the stage's Slurm jobs",
    ] {
        assert!(err.contains(part), "want {part:?} in:\n{err}");
    }
}
