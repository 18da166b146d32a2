//! Freshness: does a stage's `stage.json` still match what the manifest asks for?
//!
//! A stage is stale when it has no `stage.json`; when the recorded tool or tool
//! version differs; when the arguments the runner would pass differ from the
//! recorded ones; when a recorded input's content differs from its recorded
//! fingerprint (upstream outputs are inputs); when a recorded output is missing or
//! changed; or when an upstream stage is stale. While running, an upstream stage
//! that re-ran makes its dependents stale through their input fingerprints: if it
//! wrote byte-identical outputs they stay fresh (early cut-off).
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use circuitry_core::fingerprint::fingerprint_path;
use circuitry_core::{StageRecord, TOOL_VERSION};

use crate::{Error, Pipeline, Result, Stage, StageCommand};

/// Whether a stage needs to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    /// Its outputs are up to date.
    Fresh,
    /// It must run, for these reasons.
    Stale(Vec<StaleReason>),
}

impl Freshness {
    /// True for [`Freshness::Fresh`].
    pub fn is_fresh(&self) -> bool {
        matches!(self, Freshness::Fresh)
    }

    fn from_reasons(reasons: Vec<StaleReason>) -> Freshness {
        if reasons.is_empty() {
            Freshness::Fresh
        } else {
            Freshness::Stale(reasons)
        }
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Freshness::Fresh => f.write_str("fresh"),
            Freshness::Stale(reasons) => {
                f.write_str("stale: ")?;
                for (i, r) in reasons.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{r}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a stage is stale.
#[derive(Debug, Clone, PartialEq)]
pub enum StaleReason {
    /// No `stage.json`: never run, or a previous run did not finish.
    NeverRun,
    /// Named with `--force`.
    Forced,
    /// `stage.json` exists but cannot be read.
    UnreadableRecord {
        /// Why.
        message: String,
    },
    /// The record names another binary.
    ToolChanged {
        /// The binary in the record.
        recorded: String,
        /// The binary the manifest runs now.
        expected: String,
    },
    /// The record was written by another version of circuitry.
    ToolVersionChanged {
        /// The version in the record.
        recorded: String,
        /// This version.
        current: String,
    },
    /// The arguments differ from the recorded ones.
    ArgsChanged(Vec<ArgChange>),
    /// A recorded input no longer exists.
    InputMissing {
        /// The input as recorded.
        path: String,
    },
    /// A recorded input's content changed.
    InputChanged {
        /// The input as recorded.
        path: String,
    },
    /// A recorded output no longer exists.
    OutputMissing {
        /// The output, relative to the stage's directory.
        path: String,
    },
    /// A recorded output's content changed.
    OutputChanged {
        /// The output, relative to the stage's directory.
        path: String,
    },
    /// Upstream stages are stale (when planning).
    UpstreamStale {
        /// The stale upstream stages.
        stages: Vec<String>,
    },
    /// An upstream stage re-ran and this stage's record has no fingerprint of its
    /// output to compare with.
    UpstreamRan {
        /// The upstream stage.
        stage: String,
    },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::NeverRun => {
                f.write_str("no stage.json (never run, or the last run did not finish)")
            }
            StaleReason::Forced => f.write_str("forced with --force"),
            StaleReason::UnreadableRecord { message } => {
                write!(f, "unreadable stage.json ({message})")
            }
            StaleReason::ToolChanged { recorded, expected } => {
                write!(
                    f,
                    "recorded by `{recorded}`, the manifest now runs `{expected}`"
                )
            }
            StaleReason::ToolVersionChanged { recorded, current } => {
                write!(f, "recorded by circuitry {recorded}, this is {current}")
            }
            StaleReason::ArgsChanged(changes) => {
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
            }
            StaleReason::InputMissing { path } => write!(f, "input {path} is missing"),
            StaleReason::InputChanged { path } => write!(f, "input {path} changed"),
            StaleReason::OutputMissing { path } => write!(f, "output {path} is missing"),
            StaleReason::OutputChanged { path } => {
                write!(f, "output {path} was modified after the stage wrote it")
            }
            StaleReason::UpstreamStale { stages } => {
                let names: Vec<String> = stages.iter().map(|s| format!("`{s}`")).collect();
                match names.len() {
                    1 => write!(f, "upstream stage {} is stale", names[0]),
                    _ => write!(f, "upstream stages {} are stale", names.join(", ")),
                }
            }
            StaleReason::UpstreamRan { stage } => write!(
                f,
                "upstream stage `{stage}` re-ran and stage.json has no fingerprint of its output"
            ),
        }
    }
}

/// One difference between the recorded and the current arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgChange {
    /// A flag's value changed.
    Changed {
        /// The flag, e.g. `--top-paths`.
        flag: String,
        /// Recorded value.
        old: String,
        /// Current value.
        new: String,
    },
    /// A flag is passed now but was not recorded.
    Added {
        /// The flag.
        flag: String,
        /// Its value (empty for a switch).
        value: String,
    },
    /// A recorded flag is no longer passed (the binary's default applies).
    Removed {
        /// The flag.
        flag: String,
        /// Its recorded value (empty for a switch).
        value: String,
    },
    /// Words outside flags (e.g. a subcommand) or the flags' order changed.
    Other {
        /// The recorded arguments.
        old: Vec<String>,
        /// The current arguments.
        new: Vec<String>,
    },
}

impl fmt::Display for ArgChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgChange::Changed { flag, old, new } => write!(f, "{flag} changed: {old} → {new}"),
            ArgChange::Added { flag, value } => write!(f, "{flag} {value} added"),
            ArgChange::Removed { flag, value } => write!(f, "{flag} {value} removed"),
            ArgChange::Other { old, new } => {
                write!(
                    f,
                    "arguments changed: `{}` → `{}`",
                    old.join(" "),
                    new.join(" ")
                )
            }
        }
    }
}

/// The differences between recorded arguments `old` and current arguments `new`
/// (empty when they are equal). Flags are compared by value, not by position: a
/// binary parses `--a 1 --b 2` and `--b 2 --a 1` alike, so a reordering is no change;
/// a flag given several times keeps the order of its values.
pub fn diff_args(old: &[String], new: &[String]) -> Vec<ArgChange> {
    if old == new {
        return Vec::new();
    }
    let (old_words, mut old_flags) = split_flags(old);
    let (new_words, mut new_flags) = split_flags(new);
    for flag in SPEED_ONLY_FLAGS {
        old_flags.remove(*flag);
        new_flags.remove(*flag);
    }
    for (was, now) in RENAMED_LIST_FLAGS {
        if let Some(values) = old_flags.remove(*was) {
            old_flags
                .entry(now.to_string())
                .or_default()
                .push(values.join(","));
        }
    }
    let mut changes = Vec::new();
    if old_words != new_words {
        changes.push(ArgChange::Other {
            old: old.to_vec(),
            new: new.to_vec(),
        });
        return changes;
    }
    for (flag, new_value) in &new_flags {
        match old_flags.get(flag) {
            Some(old_value) if old_value != new_value => changes.push(ArgChange::Changed {
                flag: flag.clone(),
                old: old_value.join(" "),
                new: new_value.join(" "),
            }),
            Some(_) => {}
            None => changes.push(ArgChange::Added {
                flag: flag.clone(),
                value: new_value.join(" "),
            }),
        }
    }
    for (flag, old_value) in &old_flags {
        if !new_flags.contains_key(flag) {
            changes.push(ArgChange::Removed {
                flag: flag.clone(),
                value: old_value.join(" "),
            });
        }
    }
    changes
}

/// Flags that change only how fast a stage runs, never its outputs, so changing them
/// does not make a stage stale: `circuitry-dump onnx --threads` (ONNX Runtime's
/// intra-op threads; its shards are byte-identical with 1, 2 and 3 threads, tested in
/// crates/dump/tests/tiny_model.rs). A dump of hours is not redone to use more cores.
const SPEED_ONLY_FLAGS: &[&str] = &["--threads"];

/// List flags renamed since records were written: `(old, new)`, where the old flag
/// was repeated once per value and the new one takes a comma-separated list. A record
/// with `--hook a --hook b` equals a command with `--hooks a,b`, so SAEs trained
/// before the rename are not retrained for a spelling.
const RENAMED_LIST_FLAGS: &[(&str, &str)] = &[("--hook", "--hooks")];

/// Words before the first flag, and each flag's values in order (a flag followed by
/// another flag or nothing has an empty value).
fn split_flags(args: &[String]) -> (Vec<&str>, BTreeMap<String, Vec<String>>) {
    let mut words = Vec::new();
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(next) = a.starts_with("--").then(|| args.get(i + 1)) {
            let value = match next.filter(|n| !n.starts_with("--")) {
                Some(value) => {
                    i += 2;
                    value.clone()
                }
                None => {
                    i += 1;
                    String::new()
                }
            };
            flags.entry(a.clone()).or_default().push(value);
        } else {
            words.push(a.as_str());
            i += 1;
        }
    }
    (words, flags)
}

/// The state of an upstream stage when a dependent's freshness is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// Fresh, not re-run.
    Fresh,
    /// Stale and not yet run (planning).
    Stale,
    /// Re-ran in this run: compare fingerprints.
    Ran,
}

/// Decides freshness, caching fingerprints (directory trees can be large).
pub(crate) struct Checker<'p> {
    pipeline: &'p Pipeline,
    fingerprints: HashMap<PathBuf, Option<String>>,
}

impl<'p> Checker<'p> {
    pub(crate) fn new(pipeline: &'p Pipeline) -> Self {
        Checker {
            pipeline,
            fingerprints: HashMap::new(),
        }
    }

    /// Forget cached fingerprints of paths that overlap `dir` (a stage's output
    /// directory, relative to the base directory), after the stage ran.
    pub(crate) fn forget(&mut self, dir: &Path) {
        let dir = self.pipeline.resolve(dir);
        self.fingerprints
            .retain(|path, _| !(path.starts_with(&dir) || dir.starts_with(path)));
    }

    /// The fingerprint of a path relative to the base directory; `None` if missing.
    fn fingerprint(&mut self, path: &Path) -> Result<Option<String>> {
        let path = self.pipeline.resolve(path);
        if let Some(fp) = self.fingerprints.get(&path) {
            return Ok(fp.clone());
        }
        let fp = match std::fs::metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("reading", path, e)),
            Ok(_) => Some(fingerprint_path(&path)?),
        };
        self.fingerprints.insert(path, fp.clone());
        Ok(fp)
    }

    /// Stage `index`'s freshness, given the state of every earlier stage.
    pub(crate) fn assess(
        &mut self,
        index: usize,
        upstream: &[Upstream],
        forced: bool,
    ) -> Result<Freshness> {
        let stage = &self.pipeline.stages()[index];
        let mut reasons = Vec::new();
        if forced {
            reasons.push(StaleReason::Forced);
        }
        // Without a record the stage runs anyway: upstream reasons would be noise.
        let Some(record) = self.record_reasons(stage, &mut reasons)? else {
            return Ok(Freshness::from_reasons(reasons));
        };
        let mut stale_upstream = Vec::new();
        for &dep in stage.upstream() {
            let dep_stage = &self.pipeline.stages()[dep];
            match upstream.get(dep).copied().unwrap_or(Upstream::Fresh) {
                Upstream::Fresh => {}
                Upstream::Stale => stale_upstream.push(dep_stage.name().to_string()),
                Upstream::Ran => {
                    // Compared through the recorded input fingerprints above, if any
                    // recorded input lies in (or contains) the upstream's directory.
                    let dir = self.pipeline.stage_dir(dep_stage);
                    let covered = record.inputs.keys().any(|k| {
                        let k = Path::new(k);
                        k.starts_with(&dir) || dir.starts_with(k)
                    });
                    if !covered {
                        reasons.push(StaleReason::UpstreamRan {
                            stage: dep_stage.name().into(),
                        });
                    }
                }
            }
        }
        if !stale_upstream.is_empty() {
            reasons.push(StaleReason::UpstreamStale {
                stages: stale_upstream,
            });
        }
        Ok(Freshness::from_reasons(reasons))
    }

    /// Add the reasons found in the stage's own record; return the record.
    fn record_reasons(
        &mut self,
        stage: &Stage,
        reasons: &mut Vec<StaleReason>,
    ) -> Result<Option<StageRecord>> {
        let dir = self.pipeline.stage_dir(stage);
        let record = match StageRecord::read(&self.pipeline.resolve(&dir)) {
            Ok(Some(record)) => record,
            Ok(None) => {
                reasons.push(StaleReason::NeverRun);
                return Ok(None);
            }
            Err(e) => {
                reasons.push(StaleReason::UnreadableRecord {
                    message: e.to_string(),
                });
                return Ok(None);
            }
        };
        let command: StageCommand = self.pipeline.command(stage);
        if record.tool != command.program {
            reasons.push(StaleReason::ToolChanged {
                recorded: record.tool.clone(),
                expected: command.program.clone(),
            });
        }
        if record.tool_version != TOOL_VERSION {
            reasons.push(StaleReason::ToolVersionChanged {
                recorded: record.tool_version.clone(),
                current: TOOL_VERSION.into(),
            });
        }
        let changes = diff_args(&record.argv, &command.args);
        if !changes.is_empty() {
            reasons.push(StaleReason::ArgsChanged(changes));
        }
        for (path, recorded) in &record.inputs {
            match self.fingerprint(Path::new(path))? {
                None => reasons.push(StaleReason::InputMissing { path: path.clone() }),
                Some(fp) if &fp != recorded => {
                    reasons.push(StaleReason::InputChanged { path: path.clone() })
                }
                Some(_) => {}
            }
        }
        for (rel, recorded) in &record.outputs {
            match self.fingerprint(&dir.join(rel))? {
                None => reasons.push(StaleReason::OutputMissing { path: rel.clone() }),
                Some(fp) if &fp != recorded => {
                    reasons.push(StaleReason::OutputChanged { path: rel.clone() })
                }
                Some(_) => {}
            }
        }
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn diff_names_changed_added_and_removed_flags() {
        let old = words("toy --out o --top-paths 5 --seed 1");
        let new = words("toy --out o --top-paths 10 --lr 0.1");
        let text: Vec<String> = diff_args(&old, &new)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(
            text,
            [
                "--lr 0.1 added",
                "--top-paths changed: 5 → 10",
                "--seed 1 removed"
            ]
        );
    }

    #[test]
    fn diff_of_equal_or_reordered_flags_is_empty_but_value_order_counts() {
        let a = words("gpt2 --out o --seed 1 --sae a --sae b --check-only");
        assert!(diff_args(&a, &a).is_empty());
        let b = words("gpt2 --check-only --seed 1 --sae a --out o --sae b");
        assert!(diff_args(&a, &b).is_empty(), "{:?}", diff_args(&a, &b));
        let c = words("gpt2 --out o --seed 1 --sae b --sae a --check-only");
        assert!(matches!(
            &diff_args(&a, &c)[..],
            [ArgChange::Changed { flag, old, new }] if flag == "--sae" && old == "a b" && new == "b a"
        ));
        let d = words("toy --out o --seed 1 --sae a --sae b --check-only");
        assert!(matches!(diff_args(&a, &d)[..], [ArgChange::Other { .. }]));
    }

    #[test]
    fn a_record_with_the_old_repeated_hook_flag_equals_the_hooks_list() {
        let old = words("--store s --hook a --hook b --out o --d-sae 8");
        assert!(diff_args(&old, &words("--store s --out o --hooks a,b --d-sae 8")).is_empty());
        let other = diff_args(&old, &words("--store s --out o --hooks b,a --d-sae 8"));
        assert!(
            matches!(&other[..], [ArgChange::Changed { flag, .. }] if flag == "--hooks"),
            "{other:?}"
        );
    }

    #[test]
    fn a_speed_only_flag_never_makes_a_stage_stale() {
        let old = words("onnx --model m --out o --threads 2 --batch-size 8");
        for new in [
            "onnx --model m --out o --threads 16 --batch-size 8",
            "onnx --model m --out o --batch-size 8",
        ] {
            assert!(diff_args(&old, &words(new)).is_empty(), "{new}");
        }
        let other = diff_args(
            &old,
            &words("onnx --model m --out o --threads 16 --batch-size 4"),
        );
        assert!(
            matches!(&other[..], [ArgChange::Changed { flag, .. }] if flag == "--batch-size"),
            "{other:?}"
        );
    }

    #[test]
    fn diff_reports_changed_subcommand() {
        let d = diff_args(&words("toy --out o"), &words("gpt2 --out o"));
        assert!(matches!(d[..], [ArgChange::Other { .. }]));
    }
}
