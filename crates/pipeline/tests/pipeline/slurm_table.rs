//! The manifest's `[slurm]` table: one test per validation rule (each rejected with
//! exit code 2, file:line:column, what is wrong, the fix, nothing written), and the
//! scripts `circuitry submit --dry-run` prints for a valid table.
use crate::util::{toy_manifest, Fixture};
use crate::validation::rejects;

/// The toy manifest with a `[slurm]` table appended.
fn toy_slurm(table: &str) -> String {
    format!("{}\n{table}\n", toy_manifest())
}

/// A one-stage `dump` manifest (inputs point at the manifest itself, which exists).
fn dump_slurm(table: &str) -> String {
    format!(
        "[pipeline]\nname = \"x\"\nrun_dir = \"../runs/x\"\n\n[[stage]]\nname = \"acts\"\n\
         kind = \"dump\"\nmodel = \".\"\nhooks = [\"blocks.*.hook_resid_pre\"]\n\
         corpus = \"bad.toml\"\n\n{table}\n"
    )
}

#[test]
fn unknown_key_in_slurm_table() {
    rejects(
        &toy_slurm("[slurm]\npartitions = \"gpu\""),
        "partitions",
        "partitions",
        &[
            "unknown field `partitions`",
            "`partition`",
            "correct its spelling",
        ],
    );
}

#[test]
fn unknown_key_in_stage_override() {
    rejects(
        &toy_slurm("[slurm.stage.sae]\ncpus = 4"),
        "cpus = 4",
        "cpus",
        &["unknown field `cpus`", "`cpus_per_task`"],
    );
}

#[test]
fn wrong_type() {
    rejects(
        &toy_slurm("[slurm]\ncpus_per_task = \"4\""),
        "cpus_per_task",
        "\"4\"",
        &["invalid type: string \"4\"", "expected type"],
    );
}

#[test]
fn bad_time_format() {
    rejects(
        &toy_slurm("[slurm]\ntime = \"2h\""),
        "time = ",
        "\"2h\"",
        &["`time`: \"2h\" is not a Slurm time limit", "HH:MM:SS"],
    );
    rejects(
        &toy_slurm("[slurm.stage.model]\ntime = \"01:75:00\""),
        "time = ",
        "\"01:75:00\"",
        &["`time`: \"01:75:00\" is not a Slurm time limit"],
    );
}

#[test]
fn zero_cpus() {
    rejects(
        &toy_slurm("[slurm]\ncpus_per_task = 0"),
        "cpus_per_task",
        "0",
        &["`cpus_per_task`: must be at least 1, got 0"],
    );
}

#[test]
fn bad_memory_size() {
    rejects(
        &toy_slurm("[slurm]\nmem = \"16GB\""),
        "mem = ",
        "\"16GB\"",
        &["`mem`: \"16GB\" is not a Slurm memory size", "\"16G\""],
    );
}

#[test]
fn value_with_spaces() {
    rejects(
        &toy_slurm("[slurm]\ngres = \"gpu 1\""),
        "gres = ",
        "\"gpu 1\"",
        &["`gres`: \"gpu 1\" must be one non-empty word"],
    );
}

#[test]
fn extra_flag_not_a_flag_or_reserved() {
    rejects(
        &toy_slurm("[slurm]\nextra = [\"qos=short\"]"),
        "extra = ",
        "[",
        &[
            "`extra`: \"qos=short\" is not one sbatch flag",
            "--qos=short",
        ],
    );
    rejects(
        &toy_slurm("[slurm.stage.sae]\nextra = [\"--dependency=afterany:1\"]"),
        "extra = ",
        "[",
        &["`extra`: --dependency is set by `circuitry submit` itself"],
    );
}

#[test]
fn override_of_unknown_stage() {
    rejects(
        &toy_slurm("[slurm.stage.saes]\ntime = \"10\""),
        "[slurm.stage.saes]",
        "saes",
        &[
            "the pipeline has no stage `saes`",
            "model, acts, sae, circuit",
        ],
    );
}

#[test]
fn parts_on_a_kind_that_cannot_split() {
    rejects(
        &toy_slurm("[slurm.stage.acts]\nparts = 4"),
        "parts = 4",
        "4",
        &[
            "stage `acts` (kind dump-toy) cannot be split into parts",
            "only `dump`",
        ],
    );
}

#[test]
fn fewer_than_two_parts() {
    rejects(
        &dump_slurm("[slurm.stage.acts]\nparts = 1"),
        "parts = 1",
        "1",
        &["`parts`: must be at least 2, got 1"],
    );
}

#[test]
fn per_hook_on_a_kind_that_cannot_split() {
    rejects(
        &toy_slurm("[slurm.stage.model]\nper_hook = true"),
        "per_hook",
        "true",
        &["stage `model` (kind train-toy) cannot run one array task per hook"],
    );
}

/// A valid table: defaults, an override, appended extra flags, as `#SBATCH` lines
/// of the printed scripts; a dry run writes nothing and needs no Slurm.
#[test]
fn dry_run_prints_scripts_with_resources() {
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "toy.toml",
        &toy_slurm(
            "[slurm]\npartition = \"cpu\"\ntime = \"00:30:00\"\ncpus_per_task = 2\n\
             extra = [\"--qos=short\"]\n\n[slurm.stage.sae]\ntime = \"1-00:00:00\"\n\
             mem = \"8G\"\ngres = \"gpu:1\"\nextra = [\"--exclusive\"]",
        ),
    );
    let run = fx.circuitry_env(
        &["submit", "--dry-run", &manifest],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let sae = run
        .stdout
        .split("# ---- ")
        .find(|s| s.contains("slurm/sae.sbatch"))
        .unwrap_or_else(|| panic!("no sae script in:\n{}", run.stdout));
    for line in [
        "#SBATCH --partition=cpu\n",
        "#SBATCH --time=1-00:00:00\n",
        "#SBATCH --mem=8G\n",
        "#SBATCH --gres=gpu:1\n",
        "#SBATCH --cpus-per-task=2\n",
        "#SBATCH --qos=short\n#SBATCH --exclusive\n",
        "--dependency=afterok:<acts>",
        "--kill-on-invalid-dep=yes",
    ] {
        assert!(sae.contains(line), "{line:?} not in:\n{sae}");
    }
    assert!(
        run.stdout.contains("#SBATCH --time=00:30:00\n"),
        "{}",
        run.stdout
    );
    assert!(!fx.path("runs").exists(), "a dry run writes nothing");
    assert!(fx.ran().is_empty());
}

/// Without sbatch on PATH, submit says how to get a cluster, exit code 2.
#[test]
fn submit_without_slurm_says_how_to_get_one() {
    let fx = Fixture::new();
    let manifest = fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry_env(&["submit", &manifest], &[("PATH", "/nonexistent")]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("`sbatch` was not found on PATH"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("scripts/slurm-local.sh start"),
        "{}",
        run.stderr
    );
    let status = fx.circuitry(&["status", &manifest]);
    assert_eq!(status.code, 2, "{}", status.all());
    assert!(
        status.stderr.contains("circuitry submit MANIFEST"),
        "{}",
        status.stderr
    );
}

/// A `circuit` stage split into parts runs its three rounds as three job arrays, each
/// after the one before, then the plain job that assembles the circuit.
#[test]
fn circuit_parts_are_three_chained_arrays_then_the_plain_job() {
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "circuit.toml",
        "[pipeline]\nname = \"x\"\nrun_dir = \"../runs/x\"\n\n[[stage]]\nname = \"circuit\"\n\
         kind = \"circuit\"\nmodel = \".\"\nsaes = [\".\"]\nstore = \".\"\n\n\
         [slurm.stage.circuit]\nparts = 3\n",
    );
    let run = fx.circuitry_env(
        &["submit", "--dry-run", &manifest],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let script = |name: &str| {
        run.stdout
            .split("# ---- ")
            .find(|s| s.lines().next().is_some_and(|l| l.ends_with(name)))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", run.stdout))
            .to_string()
    };
    for round in 1..=3 {
        let s = script(&format!("slurm/circuit.round{round}.sbatch"));
        assert!(s.contains("--array=0-2"), "{s}");
        assert!(s.contains("--part \"${SLURM_ARRAY_TASK_ID}/3\""), "{s}");
        if round > 1 {
            let after = format!("--dependency=afterok:<circuit.round{}>", round - 1);
            assert!(s.contains(&after), "{after} not in:\n{s}");
        }
    }
    let plain = script("slurm/circuit.sbatch");
    assert!(
        plain.contains("--dependency=afterok:<circuit.round3>"),
        "{plain}"
    );
    assert!(!plain.contains("--part"), "{plain}");
}
