//! One test per manifest validation rule. Each bad manifest is run with
//! `circuitry run`: it must exit with code 2, name the file, line and column, say
//! what is wrong and how to fix it, and write nothing.
use circuitry_pipeline::Pipeline;

use crate::util::{toy_manifest, Fixture};

/// The toy manifest with `from` replaced by `to` (once; `from` must occur).
fn toy_with(from: &str, to: &str) -> String {
    let text = toy_manifest();
    assert!(text.contains(from), "toy.toml has no {from:?}");
    text.replacen(from, to, 1)
}

/// Run `circuitry run` on `text` and check the rejection: exit code 2, the location
/// `pipelines/bad.toml:LINE:COL` where LINE is the first line containing `line_has`
/// and COL the position of `at` in it, every piece of `says`, a fix, no run
/// directory. Returns stderr.
pub(crate) fn rejects(text: &str, line_has: &str, at: &str, says: &[&str]) -> String {
    let (line, content) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line_has))
        .unwrap_or_else(|| panic!("no line contains {line_has:?}"));
    let column = content.find(at).expect("`at` is in the line") + 1;
    rejects_at(text, line + 1, column, says)
}

/// [`rejects`] at a given 1-based line and column.
pub(crate) fn rejects_at(text: &str, line: usize, column: usize, says: &[&str]) -> String {
    let fx = Fixture::new();
    let manifest = fx.manifest("bad.toml", text);
    let run = fx.circuitry(&["run", &manifest]);
    let location = format!("pipelines/bad.toml:{line}:{column}: ");
    assert_eq!(run.code, 2, "exit code; stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&location),
        "want {location:?} in:\n{}",
        run.stderr
    );
    for piece in says {
        assert!(
            run.stderr.contains(piece),
            "want {piece:?} in:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("\n  fix: "),
        "no fix in:\n{}",
        run.stderr
    );
    assert!(
        !fx.path("runs").exists(),
        "a rejected manifest must write nothing"
    );
    assert!(fx.ran().is_empty(), "no stage may run");
    run.stderr
}

#[test]
fn shipped_toy_manifest_is_valid_and_builds_the_documented_commands() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/toy.toml");
    let pipeline = Pipeline::load(&path).unwrap();
    let names: Vec<&str> = pipeline.stages().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["model", "acts", "sae", "circuit"]);
    let lines: Vec<String> = pipeline
        .stages()
        .iter()
        .map(|s| {
            let c = pipeline.command(s);
            format!("{} {}", c.program, c.args.join(" "))
        })
        .collect();
    assert_eq!(
        lines,
        [
            "circuitry-train-toy --out ../runs/toy/model --seed 7 --n-train 800 --n-test 200 \
             --noise 0.1 --epochs 300 --lr 0.05 --hidden 4",
            "circuitry-dump toy --model ../runs/toy/model --out ../runs/toy/acts --n-examples 2000 \
             --seed 1 --noise 0.1 --shard-rows 1000",
            "circuitry-train-sae --store ../runs/toy/acts --out ../runs/toy/sae --hooks toy.hook_hidden \
             --d-sae 8 --architecture standard --l1-coefficient 0.01 --lr 0.01 --steps 2000 \
             --batch-size 64 --seed 3 --eval-fraction 0.1",
            "circuitry-circuit toy --model ../runs/toy/model --sae ../runs/toy/sae/toy.hook_hidden \
             --store ../runs/toy/acts --out ../runs/toy/circuit --top-paths 3",
        ]
    );
}

/// `mkl_cbwr` (MKL's CNR mode, part of the SAE's run key) becomes `--mkl-cbwr`; left
/// out, no flag is passed (the binary's default, `auto`).
#[test]
fn train_sae_mkl_cbwr_is_passed_as_its_flag() {
    let fx = Fixture::new();
    let sae_command = |text: &str| {
        let pipeline = Pipeline::load(&fx.path(&fx.manifest("m.toml", text)))
            .unwrap_or_else(|e| panic!("{e}"));
        let stage = pipeline
            .stages()
            .iter()
            .find(|s| s.name() == "sae")
            .unwrap();
        pipeline.command(stage).args.join(" ")
    };
    let with = sae_command(&toy_with(
        "d_sae = 8\n",
        "d_sae = 8\nmkl_cbwr = \"avx2+strict\"\n",
    ));
    assert!(with.contains(" --mkl-cbwr avx2+strict"), "{with}");
    let without = sae_command(&toy_manifest());
    assert!(!without.contains("--mkl-cbwr"), "{without}");
}

/// The JumpReLU keys become their flags with `architecture = "jumprelu"` and are
/// refused, at the key, with another architecture.
#[test]
fn train_sae_jumprelu_keys_need_the_jumprelu_architecture() {
    let fx = Fixture::new();
    let text = toy_with(
        "architecture = \"standard\"\n",
        "architecture = \"jumprelu\"\njumprelu_init_threshold = 0.002\njumprelu_bandwidth = 0.05\n",
    );
    let pipeline =
        Pipeline::load(&fx.path(&fx.manifest("m.toml", &text))).unwrap_or_else(|e| panic!("{e}"));
    let stage = pipeline
        .stages()
        .iter()
        .find(|s| s.name() == "sae")
        .unwrap();
    let args = pipeline.command(stage).args.join(" ");
    assert!(
        args.contains(" --jumprelu-init-threshold 0.002 --jumprelu-bandwidth 0.05"),
        "{args}"
    );
    rejects(
        &toy_with("d_sae = 8\n", "d_sae = 8\njumprelu_bandwidth = 0.05\n"),
        "jumprelu_bandwidth",
        "0.05",
        &["applies only to the jumprelu architecture"],
    );
}

#[test]
fn unknown_key() {
    rejects(
        &toy_with("epochs = 300", "epoch = 300"),
        "epoch = 300",
        "epoch",
        &[
            "unknown field `epoch`, expected one of",
            "`epochs`",
            "correct its spelling",
        ],
    );
    rejects(
        &toy_with("run_dir =", "runs_dir ="),
        "runs_dir",
        "runs_dir",
        &["unknown field `runs_dir`"],
    );
    rejects(
        &format!("{}\n[extra]\nx = 1\n", toy_manifest()),
        "[extra]",
        "extra",
        &["unknown field `extra`, expected `pipeline`, `stage` or `slurm`"],
    );
}

#[test]
fn wrong_type() {
    rejects(
        &toy_with("seed = 7", "seed = \"seven\""),
        "\"seven\"",
        "\"seven\"",
        &[
            "invalid type: string \"seven\", expected u64",
            "expected type",
        ],
    );
}

#[test]
fn missing_key() {
    let text = toy_with("d_sae = 8\n", "");
    // Reported at the [[stage]] header of the SAE stage.
    let lines: Vec<&str> = text.lines().collect();
    let kind = lines
        .iter()
        .position(|l| l.contains("\"train-sae\""))
        .unwrap();
    let header = (0..kind).rev().find(|&i| lines[i] == "[[stage]]").unwrap();
    rejects_at(
        &text,
        header + 1,
        1,
        &["missing field `d_sae`", "add the missing key"],
    );
}

#[test]
fn unknown_stage_kind() {
    rejects(
        &toy_with("kind = \"train-toy\"", "kind = \"train-toys\""),
        "train-toys",
        "\"train-toys\"",
        &[
            "unknown stage kind \"train-toys\"",
            "train-toy, dump-toy, dump, train-sae, circuit-toy, circuit",
        ],
    );
}

#[test]
fn reference_to_unknown_stage() {
    rejects(
        &toy_with("model = \"@model\"", "model = \"@modle\""),
        "@modle",
        "\"@modle\"",
        &[
            "`model = \"@modle\"` refers to stage `modle`, which does not exist",
            "model, acts, sae, circuit",
        ],
    );
}

#[test]
fn dependency_cycle() {
    rejects(
        &toy_with("model = \"@model\"", "model = \"@circuit\""),
        "@circuit",
        "\"@circuit\"",
        &["dependency cycle: acts → circuit → sae → acts"],
    );
}

#[test]
fn missing_input_file() {
    rejects(
        &toy_with("model = \"@model\"", "model = \"models/missing\""),
        "models/missing",
        "\"models/missing\"",
        &[
            "`model`: input models/missing does not exist",
            "relative to the manifest",
        ],
    );
}

#[test]
fn duplicate_stage_name() {
    let text = toy_with("name = \"acts\"", "name = \"model\"");
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "name = \"model\"")
        .map(|(i, _)| i + 1)
        .collect();
    // The error points at the second definition's value, and names the first.
    let first = format!(
        "duplicate stage name `model` (first defined on line {})",
        lines[0]
    );
    rejects_at(
        &text,
        lines[1],
        8,
        &[&first, "give every stage a different name"],
    );
}

#[test]
fn stage_name_not_an_identifier() {
    rejects(
        &toy_with("name = \"sae\"", "name = \"my stage\""),
        "my stage",
        "\"my stage\"",
        &[
            "stage name \"my stage\" is not a simple identifier",
            "letters, digits",
        ],
    );
    rejects(
        &toy_with("name = \"circuit\"", "name = \"..\""),
        "\"..\"",
        "\"..\"",
        &["stage name \"..\" is not a simple identifier"],
    );
}

#[test]
fn output_path_escaping_the_run_directory() {
    rejects(
        &toy_with("sae = \"@sae/toy.hook_hidden\"", "sae = \"@sae/../../x\""),
        "@sae/../../x",
        "\"@sae/../../x\"",
        &[
            "`sae = \"@sae/../../x\"` points outside stage `sae`'s output directory",
            "without `..`",
        ],
    );
}

#[test]
fn value_out_of_range() {
    rejects(
        &toy_with("d_sae = 8", "d_sae = 0"),
        "d_sae = 0",
        "0",
        &["`d_sae`: must be at least 1, got 0"],
    );
    rejects(
        &toy_with(
            "architecture = \"standard\"",
            "architecture = \"topk\"\nk = 8",
        ),
        "k = 8",
        "8",
        &["`k`: k = 8 must be below d_sae = 8", "smaller than d_sae"],
    );
    rejects(
        &toy_with("n_examples = 2000", "n_examples = 0"),
        "n_examples = 0",
        "0",
        &["`n_examples`: must be at least 1, got 0"],
    );
    rejects(
        &toy_with("eval_fraction = 0.1", "eval_fraction = 1.5"),
        "eval_fraction = 1.5",
        "1.5",
        &["`eval_fraction`: must be at least 0 and below 1, got 1.5"],
    );
}

#[test]
fn toml_syntax_error() {
    rejects(
        &toy_with("epochs = 300", "epochs = = 300"),
        "epochs = = 300",
        "= 300",
        &["TOML syntax error"],
    );
}

#[test]
fn manifest_without_stages() {
    let fx = Fixture::new();
    let manifest = fx.manifest(
        "empty.toml",
        "[pipeline]\nname = \"x\"\nrun_dir = \"runs\"\n",
    );
    let run = fx.circuitry(&["plan", &manifest]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("pipelines/empty.toml: the manifest has no stages"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("add at least one [[stage]] table"),
        "{}",
        run.stderr
    );
}

/// A `dump` stage reads either a corpus or agreement pairs, never both.
#[test]
fn dump_with_both_corpus_and_pairs() {
    let text = "[pipeline]\nname = \"x\"\nrun_dir = \"../runs/x\"\n\n[[stage]]\nname = \"acts\"\nkind = \"dump\"\nmodel = \".\"\nhooks = [\"blocks.*.hook_resid_pre\"]\ncorpus = \"bad.toml\"\npairs = \"bad.toml\"\n";
    rejects(
        text,
        "pairs =",
        "\"bad.toml\"",
        &["`corpus` and `pairs` are both set"],
    );
}

/// A `dump` stage needs at least one hook.
#[test]
fn dump_without_hooks() {
    let text = "[pipeline]\nname = \"x\"\nrun_dir = \"../runs/x\"\n\n[[stage]]\nname = \"acts\"\nkind = \"dump\"\nmodel = \".\"\nhooks = []\ncorpus = \"bad.toml\"\n";
    rejects(text, "hooks =", "[]", &["`hooks`: no hook is given"]);
}

/// Hook lists have one spelling, `hooks = [...]`, on every kind: the old single
/// `hook` of `train-sae` is refused at its key with the right name.
#[test]
fn train_sae_hook_is_spelled_hooks() {
    let text = toy_with(
        "hooks = [\"toy.hook_hidden\"]",
        "hook = \"toy.hook_hidden\"",
    );
    rejects(
        &text,
        "hook = ",
        "hook",
        &["unknown field `hook`", "(did you mean `hooks`?)"],
    );
}

/// The options check is the binary's: a hook listed twice is refused at load.
#[test]
fn train_sae_hook_listed_twice() {
    let text = toy_with(
        "hooks = [\"toy.hook_hidden\"]",
        "hooks = [\"toy.hook_hidden\", \"toy.hook_hidden\"]",
    );
    rejects(
        &text,
        "hooks = ",
        "[",
        &[
            "toy.hook_hidden is listed twice (entry 2)",
            "list each hook once",
        ],
    );
}
