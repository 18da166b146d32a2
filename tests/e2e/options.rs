//! Every option of every stage binary can be set from a manifest and is documented
//! (issue 16): each long flag in a binary's `--help` is a key of its stage kind (the
//! manifest parser knows it) and has a mention in that kind's row of the reference
//! table in `crates/pipeline/README.md`. Flags the runner sets itself are listed
//! here with the manifest key that drives them.
use std::process::Command;

use circuitry_pipeline::Pipeline;
use circuitry_tests::{bin, repo_root, run_ok, text};

/// Flags the runner passes itself, never a manifest key of their own.
const RUNNER_FLAGS: &[(&str, &str)] = &[
    ("out", "the stage's folder, run_dir/<name>"),
    ("check-only", "the runner's option check before a run"),
    ("only-hook", "one Slurm array task per hook (`per_hook`)"),
    ("part", "one Slurm array task per part (`parts`)"),
    ("help", "clap"),
    ("version", "clap"),
];

/// (kind, binary, subcommand)
const KINDS: &[(&str, &str, Option<&str>)] = &[
    ("train-toy", "circuitry-train-toy", None),
    ("dump-toy", "circuitry-dump", Some("toy")),
    ("dump", "circuitry-dump", Some("onnx")),
    ("train-sae", "circuitry-train-sae", None),
    ("circuit", "circuitry-circuit", Some("gpt2")),
    ("circuit-toy", "circuitry-circuit", Some("toy")),
];

/// The long flags of `--help`, in order (`  -k, --foo-bar <N>` → `foo-bar`).
fn long_flags(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        // A short flag first: `-k, --k <K>`.
        let line = match line.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => line,
        };
        if let Some(rest) = line.strip_prefix("--") {
            let flag: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !flag.is_empty() && !out.contains(&flag) {
                out.push(flag);
            }
        }
    }
    out
}

/// The manifest key of a flag.
fn key_of(kind: &str, flag: &str) -> String {
    match (kind, flag) {
        ("circuit", "sae") => "saes".into(),
        _ => flag.replace('-', "_"),
    }
}

/// Whether the manifest parser refuses `key` on a stage of `kind` as unknown. The stage
/// holds only that key (value `0`): other problems (a wrong type, a missing required
/// key) are reported too, but only an unknown key says "unknown field".
fn unknown_key(kind: &str, key: &str) -> Option<String> {
    let manifest = format!(
        "[pipeline]\nname = \"options\"\nrun_dir = \"runs\"\n\n[[stage]]\nname = \"s\"\nkind = \"{kind}\"\n{key} = 0\n"
    );
    match Pipeline::parse("options.toml".as_ref(), &manifest) {
        Ok(_) => None,
        Err(e) => {
            let msg = e.to_string();
            msg.contains(&format!("unknown field `{key}`"))
                .then_some(msg)
        }
    }
}

/// The cells of `kind`'s row in the keys table of crates/pipeline/README.md.
fn readme_row(readme: &str, kind: &str) -> String {
    readme
        .lines()
        .find(|l| l.starts_with(&format!("| `{kind}` |")))
        .unwrap_or_else(|| panic!("crates/pipeline/README.md has no row for `{kind}`"))
        .to_string()
}

#[test]
fn every_flag_of_every_stage_binary_has_a_manifest_key_and_a_reference_row() {
    let readme = std::fs::read_to_string(repo_root().join("crates/pipeline/README.md")).unwrap();
    let mut problems = Vec::new();
    let mut checked = 0;
    for &(kind, binary, sub) in KINDS {
        let mut cmd = Command::new(bin(binary));
        if let Some(sub) = sub {
            cmd.arg(sub);
        }
        let help = text(&run_ok(cmd.arg("--help")));
        let flags = long_flags(&help);
        assert!(
            flags.len() >= 4,
            "{binary} {sub:?} --help shows only {flags:?}:\n{help}"
        );
        let row = readme_row(&readme, kind);
        for flag in flags {
            if RUNNER_FLAGS.iter().any(|(f, _)| *f == flag) {
                continue;
            }
            checked += 1;
            let key = key_of(kind, &flag);
            if let Some(msg) = unknown_key(kind, &key) {
                problems.push(format!(
                    "{kind}: `--{flag}` has no manifest key `{key}` ({msg})"
                ));
            }
            if !row.contains(&format!("`{key}`")) {
                problems.push(format!(
                    "{kind}: `{key}` (`--{flag}`) is missing from its row in crates/pipeline/README.md"
                ));
            }
        }
    }
    println!("{checked} flags checked");
    assert!(checked > 60, "only {checked} flags found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_manifest_parser_refuses_an_unknown_key() {
    // The check above relies on this: a key no kind has is refused by name.
    for &(kind, _, _) in KINDS {
        assert!(
            unknown_key(kind, "no_such_option").is_some(),
            "{kind} accepted `no_such_option`"
        );
    }
}
