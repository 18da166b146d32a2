//! `circuitry status` and `circuitry cancel`: the state of a submission's jobs, from
//! `scontrol show job` (no accounting database is needed), and cancelling them.
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use super::{find_program, JobsFile, StageJobs};
use crate::{BinDirs, Error, Pipeline, Plan, Result};

/// The state of one Slurm job (or array task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting: for resources, or for the jobs it depends on.
    Pending {
        /// Slurm's reason, e.g. `Dependency`.
        reason: String,
    },
    /// Running (or completing).
    Running,
    /// Finished with exit code 0.
    Done,
    /// Finished unsuccessfully.
    Failed {
        /// Slurm's state and exit code, e.g. `FAILED, exit code 2:0`.
        detail: String,
    },
    /// Cancelled: by `scancel`, or by Slurm because a dependency failed.
    Cancelled {
        /// Slurm's reason, e.g. `DependencyNeverSatisfied`.
        reason: String,
    },
    /// Slurm no longer knows the job (finished long ago, or another cluster).
    Unknown,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Pending { reason } if reason == "None" => f.write_str("pending"),
            JobState::Pending { reason } => write!(f, "pending ({reason})"),
            JobState::Running => f.write_str("running"),
            JobState::Done => f.write_str("done"),
            JobState::Failed { detail } => write!(f, "failed ({detail})"),
            JobState::Cancelled { reason } if reason == "DependencyNeverSatisfied" => {
                f.write_str("cancelled (a stage it depends on failed)")
            }
            JobState::Cancelled { reason } => write!(f, "cancelled ({reason})"),
            JobState::Unknown => f.write_str("unknown to Slurm"),
        }
    }
}

/// One array task's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// The task index.
    pub index: usize,
    /// What it does, e.g. `part 1/4`.
    pub label: String,
    /// Its state.
    pub state: JobState,
    /// Its log.
    pub log: PathBuf,
}

/// One stage's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStatus {
    /// The stage.
    pub stage: String,
    /// Its job's id, when submitted.
    pub job: Option<String>,
    /// The job's state; for a stage not submitted, `Done` when it is fresh and
    /// `Unknown` when it is stale.
    pub state: JobState,
    /// The job's log, when submitted.
    pub log: Option<PathBuf>,
    /// The stage's array tasks, when it was split.
    pub tasks: Vec<TaskStatus>,
    /// A note, e.g. `fresh, not submitted`.
    pub note: Option<String>,
}

/// The state of every stage of the latest submission of `pipeline`, in pipeline
/// order; stages that were not submitted are reported fresh or stale.
pub fn status(pipeline: &Pipeline, bins: &BinDirs) -> Result<Vec<StageStatus>> {
    let jobs = JobsFile::read(pipeline)?;
    find_program(bins, "scontrol", "status")?;
    let plan = Plan::new(pipeline, &[])?;
    let mut out = Vec::new();
    for planned in &plan.stages {
        let Some(sj) = jobs.stages.iter().find(|s| s.stage == planned.name) else {
            let fresh = planned.freshness.is_fresh();
            out.push(StageStatus {
                stage: planned.name.clone(),
                job: None,
                state: if fresh {
                    JobState::Done
                } else {
                    JobState::Unknown
                },
                log: None,
                tasks: Vec::new(),
                note: Some(if fresh {
                    "fresh, not submitted".into()
                } else {
                    "not submitted".into()
                }),
            });
            continue;
        };
        out.push(stage_status(sj)?);
    }
    Ok(out)
}

fn stage_status(sj: &StageJobs) -> Result<StageStatus> {
    let state = query(&sj.job)?
        .into_iter()
        .next()
        .map_or(JobState::Unknown, |(_, s)| s);
    let mut tasks = Vec::new();
    for array in &sj.arrays {
        let records = query(&array.job)?;
        for (index, label) in array.tasks.iter().enumerate() {
            let state = records
                .iter()
                .find(|(t, _)| t.as_ref().is_some_and(|t| t.contains(index)))
                .map_or(JobState::Unknown, |(_, s)| s.clone());
            tasks.push(TaskStatus {
                index,
                label: label.clone(),
                state,
                log: array.task_log(&sj.stage, index),
            });
        }
    }
    Ok(StageStatus {
        stage: sj.stage.clone(),
        job: Some(sj.job.clone()),
        state,
        log: Some(sj.log.clone()),
        tasks,
        note: None,
    })
}

/// The states of every job of a submission, as `(what, state)`.
pub(crate) fn query_all(jobs: &JobsFile, bins: &BinDirs) -> Result<Vec<(String, JobState)>> {
    find_program(bins, "scontrol", "submit")?;
    let mut out = Vec::new();
    for s in &jobs.stages {
        for a in &s.arrays {
            for (tasks, state) in query(&a.job)? {
                let which = tasks.map_or(String::new(), |t| format!(" tasks {t}"));
                out.push((format!("{} array job {}{which}", s.stage, a.job), state));
            }
        }
        for (_, state) in query(&s.job)? {
            out.push((format!("{} job {}", s.stage, s.job), state));
        }
    }
    Ok(out)
}

/// Array task indices of one `scontrol` record: one index or a range `a-b`
/// (a pending array's tasks share one record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRange(Vec<(usize, usize)>);

impl TaskRange {
    fn parse(text: &str) -> Option<TaskRange> {
        // "3", "0-3", "1,3-5", "0-9%2" (a throttle after %)
        let text = text.split('%').next()?;
        let mut ranges = Vec::new();
        for piece in text.split(',') {
            let (a, b) = piece.split_once('-').unwrap_or((piece, piece));
            ranges.push((a.parse().ok()?, b.parse().ok()?));
        }
        Some(TaskRange(ranges))
    }

    fn contains(&self, i: usize) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&i))
    }
}

impl fmt::Display for TaskRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, (a, b)) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// `scontrol show job -o ID`: one record per job, or per array task (a pending
/// array's tasks may share one record). An id Slurm does not know gives no records.
fn query(job: &str) -> Result<Vec<(Option<TaskRange>, JobState)>> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .output()
        .map_err(|e| Error::io("running scontrol for job", job, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        return Err(Error::SlurmFailed {
            command: format!("scontrol show job -o {job}"),
            status: out.status.to_string(),
            stderr: stderr.trim().to_string(),
            submitted: Vec::new(),
        });
    }
    Ok(stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let tasks = field(line, "ArrayTaskId").and_then(TaskRange::parse);
            (tasks, parse_state(line))
        })
        .collect())
}

/// The value of `Key=` in an `scontrol -o` record (values before `Command=` have no
/// spaces, which covers every key read here).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn parse_state(line: &str) -> JobState {
    let state = field(line, "JobState").unwrap_or("UNKNOWN");
    let reason = field(line, "Reason").unwrap_or("None").to_string();
    match state {
        "PENDING" | "REQUEUED" | "SUSPENDED" | "RESV_DEL_HOLD" | "REQUEUE_HOLD" => {
            JobState::Pending { reason }
        }
        "RUNNING" | "COMPLETING" | "CONFIGURING" | "STAGE_OUT" | "SIGNALING" => JobState::Running,
        "COMPLETED" => JobState::Done,
        "CANCELLED" => JobState::Cancelled { reason },
        other => JobState::Failed {
            detail: format!(
                "{other}, exit code {}",
                field(line, "ExitCode").unwrap_or("?")
            ),
        },
    }
}

/// Print a status report: one line per stage, one per array task, the log of
/// each failed job. A closed stdout (`| head`) ends the report quietly.
pub fn print_status(pipeline: &Pipeline, stages: &[StageStatus]) {
    let mut out = std::io::stdout().lock();
    let _ = write_status(&mut out, pipeline, stages);
}

fn write_status(
    out: &mut impl std::io::Write,
    pipeline: &Pipeline,
    stages: &[StageStatus],
) -> std::io::Result<()> {
    let width = stages.iter().map(|s| s.stage.len()).max().unwrap_or(0);
    let shown = |p: &PathBuf| pipeline.display_path(p).display().to_string();
    for s in stages {
        let job = s
            .job
            .as_ref()
            .map_or(String::new(), |j| format!("  job {j}"));
        let note = s
            .note
            .as_ref()
            .map_or(String::new(), |n| format!("  ({n})"));
        let state = if s.note.is_some() && s.state == JobState::Done {
            "done".to_string()
        } else if s.note.is_some() {
            "stale".to_string()
        } else {
            s.state.to_string()
        };
        writeln!(out, "  {:width$}  {state}{job}{note}", s.stage)?;
        if matches!(s.state, JobState::Failed { .. }) {
            if let Some(log) = &s.log {
                writeln!(out, "  {:width$}    log: {}", "", shown(log))?;
            }
        }
        for t in &s.tasks {
            writeln!(
                out,
                "  {:width$}    task {} ({}): {}",
                "", t.index, t.label, t.state
            )?;
            if matches!(t.state, JobState::Failed { .. }) {
                writeln!(out, "  {:width$}      log: {}", "", shown(&t.log))?;
            }
        }
    }
    Ok(())
}

/// Cancel every job of the latest submission of `pipeline` (`scancel`); returns
/// the job ids.
pub fn cancel(pipeline: &Pipeline, bins: &BinDirs) -> Result<Vec<String>> {
    let jobs = JobsFile::read(pipeline)?;
    find_program(bins, "scancel", "cancel")?;
    let ids = jobs.job_ids();
    if ids.is_empty() {
        return Ok(ids);
    }
    let out = Command::new("scancel")
        .args(&ids)
        .output()
        .map_err(|e| Error::io("running scancel for", pipeline.manifest(), e))?;
    if !out.status.success() {
        return Err(Error::SlurmFailed {
            command: format!("scancel {}", ids.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            submitted: Vec::new(),
        });
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scontrol_records() {
        let failed = "JobId=7 JobName=p.acts UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=2:0 Command=/a b/acts.sbatch";
        assert_eq!(
            parse_state(failed),
            JobState::Failed {
                detail: "FAILED, exit code 2:0".into()
            }
        );
        let cancelled = "JobId=8 JobState=CANCELLED Reason=DependencyNeverSatisfied ExitCode=0:0";
        assert_eq!(
            parse_state(cancelled).to_string(),
            "cancelled (a stage it depends on failed)"
        );
        let pending = "JobId=9 ArrayJobId=9 ArrayTaskId=0-3 JobState=PENDING Reason=Dependency";
        assert_eq!(field(pending, "ArrayTaskId"), Some("0-3"));
        assert!(matches!(parse_state(pending), JobState::Pending { .. }));
        let r = TaskRange::parse("1,3-5%2").unwrap();
        assert!(r.contains(4) && r.contains(1) && !r.contains(2));
        assert_eq!(r.to_string(), "1,3-5");
    }
}
