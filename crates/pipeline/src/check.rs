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

use crate::local::{find_binary, BinDirs};
use crate::process::stage_process;
use crate::{Error, Pipeline, Plan, Result, StageCommand};

/// The flag every stage binary accepts after its usual arguments.
pub const CHECK_ONLY_FLAG: &str = "--check-only";

/// What clap prints for the flag when a binary does not know it.
const UNKNOWN_FLAG: &str = "unexpected argument '--check-only'";

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
    let mut checked = command.clone();
    checked.args.push(CHECK_ONLY_FLAG.into());
    let _span = tracing::debug_span!("check", stage = stage.name()).entered();
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
    match out.status.code() {
        Some(0) => {
            let info = lines(&stdout).into_iter().chain(lines(&stderr)).next_back();
            tracing::debug!(?info, "options accepted");
            Ok(CheckOutcome::Accepted(info))
        }
        Some(2) if stderr.contains(UNKNOWN_FLAG) => {
            tracing::debug!(
                program = %command.program,
                "the binary does not know --check-only: no check available, the stage runs unchecked"
            );
            Ok(CheckOutcome::Unavailable)
        }
        Some(2) => {
            let message = refusal_line(&stderr).unwrap_or_else(|| {
                format!(
                    "`{}` refused the options without a message",
                    command.program
                )
            });
            Err(Error::StageRejected {
                at: Box::new(pipeline.stage_error(stage, &message)),
                log: None,
            })
        }
        _ => {
            let mut tail = lines(&stdout);
            tail.extend(lines(&stderr));
            let skip = tail.len().saturating_sub(10);
            Err(Error::CheckFailed {
                stage: stage.name().into(),
                program: command.program.clone(),
                status: out.status.to_string(),
                tail: tail.split_off(skip),
            })
        }
    }
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
