//! Stage options checked before anything runs: each stale stage's binary is run with
//! its usual arguments plus `--check-only`.
//!
//! The contract with the stage binaries: given `--check-only` after its usual argv
//! (after the subcommand for binaries that have one), a binary validates its options,
//! estimates the memory the stage needs, checks the inputs that already exist and
//! whether its output folder is writable, writes nothing, and exits 0 (printing
//! nothing or one line) or 2 with one line on stderr saying what is wrong and the fix.
//! Inputs made by stages that have not run yet are skipped by the binary.
//!
//! A binary built before the flag existed answers as clap does for any unknown flag
//! (exit 2, "unexpected argument '--check-only'"): that answer means "no check
//! available", and the stage runs unchecked.
use std::path::PathBuf;

use circuitry_core::preflight::{GIVEN_MEMORY, MACHINE_MEMORY, MEMORY_LIMIT_FLAG};

use crate::local::{find_binary, BinDirs};
use crate::process::stage_process;
use crate::{ArrayPlan, Error, JobMemory, Pipeline, Plan, Result, StageCommand};

/// The flag every stage binary accepts after its usual arguments.
pub const CHECK_ONLY_FLAG: &str = "--check-only";

/// The outcome of checking one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The binary accepted the options; its one informative line, if it printed one
    /// (e.g. the memory estimate).
    Accepted(Option<String>),
    /// The binary does not know `--check-only`.
    Unavailable,
    /// The binary was not found (only [`Plan`]-printing skips instead of failing).
    NoBinary,
}

/// Check every stale stage of `plan`, in order. The first refusal is returned as
/// [`Error::StageRejected`], located at the stage in the manifest; a missing binary as
/// [`Error::MissingBinary`] unless `skip_missing`.
pub fn check_stages(
    pipeline: &Pipeline,
    plan: &Plan,
    bins: &BinDirs,
    skip_missing: bool,
) -> Result<Vec<(String, CheckOutcome)>> {
    let mut outcomes = Vec::new();
    for planned in plan.stale() {
        let Some(index) = pipeline.stage_index(&planned.name) else {
            continue;
        };
        let stage = &pipeline.stages()[index];
        let binary = match find_binary(bins, stage.name(), &planned.command.program) {
            Ok(b) => b,
            Err(_) if skip_missing => {
                outcomes.push((planned.name.clone(), CheckOutcome::NoBinary));
                continue;
            }
            Err(e) => return Err(e),
        };
        let outcome = check_one(pipeline, index, &binary, &planned.command)?;
        outcomes.push((planned.name.clone(), outcome));
    }
    Ok(outcomes)
}

fn check_one(
    pipeline: &Pipeline,
    index: usize,
    binary: &PathBuf,
    command: &StageCommand,
) -> Result<CheckOutcome> {
    let stage = &pipeline.stages()[index];
    let _span = tracing::debug_span!("check", stage = stage.name()).entered();
    match ask(stage.name(), binary, command, &[])? {
        Answer::Accepted(info) => Ok(CheckOutcome::Accepted(info)),
        Answer::Unavailable => Ok(CheckOutcome::Unavailable),
        Answer::Refused(message) => Err(Error::StageRejected {
            at: Box::new(pipeline.stage_error(stage, &message)),
            log: None,
        }),
    }
}

/// What one `BINARY ARGS... [EXTRA...] --check-only` answered.
enum Answer {
    /// Exit 0, with its last line if it printed one.
    Accepted(Option<String>),
    /// The binary does not know `--check-only` (or `--memory-limit`: built before it).
    Unavailable,
    /// Exit 2 with this line.
    Refused(String),
}

/// Run `command` with `extra` and `--check-only` appended (in that order: the flag
/// stays last, where the contract puts it); any other exit status is
/// [`Error::CheckFailed`] for `stage`.
fn ask(stage: &str, binary: &PathBuf, command: &StageCommand, extra: &[String]) -> Result<Answer> {
    let mut checked = command.clone();
    checked.args.extend(extra.iter().cloned());
    checked.args.push(CHECK_ONLY_FLAG.into());
    let out = stage_process(binary, &checked)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("starting", binary, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    let unknown = |flag: &str| stderr.contains(&format!("unexpected argument '{flag}'"));
    match out.status.code() {
        Some(0) => {
            let info = lines(&stdout).into_iter().chain(lines(&stderr)).next_back();
            tracing::debug!(?info, "options accepted");
            Ok(Answer::Accepted(info))
        }
        Some(2) if unknown(CHECK_ONLY_FLAG) || unknown(MEMORY_LIMIT_FLAG) => {
            tracing::debug!(
                program = %command.program,
                "the binary does not know --check-only (or --memory-limit): no check available, the stage runs unchecked"
            );
            Ok(Answer::Unavailable)
        }
        Some(2) => Ok(Answer::Refused(refusal_line(&stderr).unwrap_or_else(
            || {
                format!(
                    "`{}` refused the options without a message",
                    command.program
                )
            },
        ))),
        _ => {
            let mut tail = lines(&stdout);
            tail.extend(lines(&stderr));
            let skip = tail.len().saturating_sub(10);
            Err(Error::CheckFailed {
                stage: stage.into(),
                program: command.program.clone(),
                status: out.status.to_string(),
                tail: tail.split_off(skip),
            })
        }
    }
}

/// How `circuitry submit` checked one stage ([`check_jobs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCheck {
    /// The stage.
    pub stage: String,
    /// How many commands were checked: one per array task, else 1.
    pub tasks: usize,
    /// The memory the estimates were compared with: the job's `mem`, or this
    /// machine's memory when `None`.
    pub memory: Option<JobMemory>,
    /// Whether the binary knows `--check-only` (false: the stage is submitted unchecked).
    pub available: bool,
}

impl std::fmt::Display for JobCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.available {
            return write!(
                f,
                "{}: not checked (its binary has no --check-only)",
                self.stage
            );
        }
        let what = if self.tasks == 1 {
            "1 job".to_string()
        } else {
            format!("{} array tasks", self.tasks)
        };
        match &self.memory {
            Some(m) => write!(
                f,
                "{}: {what} checked, memory estimates against the job's mem = \"{}\" of {}",
                self.stage, m.text, m.table
            ),
            None => write!(
                f,
                "{}: {what} checked, memory estimates against this machine's memory (no `mem` in [slurm] or [slurm.stage.{}])",
                self.stage, self.stage
            ),
        }
    }
}

/// Check every stale stage of `plan` as `circuitry submit` runs it on the cluster:
/// each array task with its own arguments (`--part I/N`, `--only-hook H`), else the
/// stage's command, with the memory estimate compared with the memory its job asks
/// for ([`SlurmConfig::memory`](crate::SlurmConfig::memory), passed as
/// `--memory-limit BYTES`) or, when the manifest sets none, with this machine's.
///
/// A split stage's plain job, which runs after its array, is not checked: it has the
/// tasks' options without the task's flag, and only assembles what the tasks wrote
/// (its estimate for the whole stage would say nothing about its needs). The first
/// refusal is [`Error::StageRejected`]: a memory refusal located at the `mem` that
/// set the limit and naming it, others like [`check_stages`]'s.
pub fn check_jobs(pipeline: &Pipeline, plan: &Plan, bins: &BinDirs) -> Result<Vec<JobCheck>> {
    let mut checks = Vec::new();
    for planned in plan.stale() {
        let Some(index) = pipeline.stage_index(&planned.name) else {
            continue;
        };
        let stage = &pipeline.stages()[index];
        let binary = find_binary(bins, stage.name(), &planned.command.program)?;
        let memory = pipeline.slurm().memory(stage.name());
        let limit: Vec<String> = memory
            .iter()
            .flat_map(|m| [MEMORY_LIMIT_FLAG.to_string(), m.bytes.to_string()])
            .collect();
        let tasks: Vec<(String, Vec<String>)> = match pipeline.array_plan(stage) {
            ArrayPlan::Single => vec![(String::new(), Vec::new())],
            ArrayPlan::Parts { n, .. } => (0..n)
                .map(|i| {
                    (
                        format!("array task {i} of {n} (--part {i}/{n}): "),
                        vec!["--part".to_string(), format!("{i}/{n}")],
                    )
                })
                .collect(),
            ArrayPlan::Each { flag, values } => values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        format!("array task {i} of {} ({flag} {v}): ", values.len()),
                        vec![flag.to_string(), v.clone()],
                    )
                })
                .collect(),
        };
        let _span = tracing::debug_span!("check", stage = stage.name()).entered();
        let mut check = JobCheck {
            stage: stage.name().to_string(),
            tasks: tasks.len(),
            memory: memory.clone(),
            available: true,
        };
        for (label, task_args) in &tasks {
            let extra: Vec<String> = task_args.iter().chain(&limit).cloned().collect();
            match ask(stage.name(), &binary, &planned.command, &extra)? {
                Answer::Accepted(_) => {}
                Answer::Unavailable => {
                    check.available = false;
                    break;
                }
                Answer::Refused(message) => {
                    return Err(Error::StageRejected {
                        at: Box::new(job_refusal(
                            pipeline,
                            stage,
                            label,
                            &message,
                            memory.as_ref(),
                        )),
                        log: None,
                    })
                }
            }
        }
        checks.push(check);
    }
    Ok(checks)
}

/// A job's refusal, located in the manifest. A memory estimate over the job's `mem`
/// points at that `mem` and names it; one over this machine's memory says that the
/// manifest gives the job none; other refusals point where [`Pipeline::stage_error`] does.
fn job_refusal(
    pipeline: &Pipeline,
    stage: &crate::Stage,
    label: &str,
    message: &str,
    memory: Option<&JobMemory>,
) -> crate::ManifestError {
    let message = message.trim();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let mut error = pipeline.stage_error(stage, &format!("{label}{message}"));
    match memory {
        Some(m) if message.contains(GIVEN_MEMORY) => {
            if let crate::Problem::StageRejected { message, .. } = &mut error.problem {
                message.push_str(&format!(
                    "; the limit is the memory each of the stage's Slurm jobs asks for, mem = \"{}\" of {}: raise it if the cluster's nodes have more",
                    m.text, m.table
                ));
            }
            if m.at.is_some() {
                error.location = m.at.clone();
            }
        }
        None if message.contains(MACHINE_MEMORY) => {
            if let crate::Problem::StageRejected { message, .. } = &mut error.problem {
                message.push_str(&format!(
                    "; the manifest sets no `mem` for the stage's Slurm jobs, so the estimate was compared with the memory of this machine, not of a compute node: set `mem` in [slurm.stage.{}] (or [slurm]) to what the job gets",
                    stage.name()
                ));
            }
        }
        _ => {}
    }
    error
}

/// A refusing binary's message: its last stderr line that starts with `error:`, else
/// its last non-empty stderr line.
pub(crate) fn refusal_line(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or(lines.last())
        .map(|l| l.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_line_is_preferred_over_later_lines() {
        assert_eq!(
            refusal_line("progress\nerror: --d-sae too big; lower it\n\nnote\n").as_deref(),
            Some("error: --d-sae too big; lower it")
        );
        assert_eq!(refusal_line("a\nb\n").as_deref(), Some("b"));
        assert_eq!(refusal_line("\n"), None);
    }
}
