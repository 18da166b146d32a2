//! The Slurm backend: `circuitry submit` writes one sbatch script per stale stage
//! into `RUN_DIR/slurm/` and submits them chained with `--dependency=afterok:` and
//! `--kill-on-invalid-dep=yes`; `circuitry status` and `circuitry cancel` read the
//! job ids back from `RUN_DIR/slurm/jobs.json`.
//!
//! A job runs exactly the command the local runner runs (same arguments, same
//! working directory), so `stage.json` is the same and a later `circuitry run` sees
//! the stages fresh. Stages split into job arrays ([`ArrayPlan`]) run their tasks
//! first, then the plain command, which finishes the work and writes `stage.json`.
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_core::atomic;
use serde::{Deserialize, Serialize};

use crate::outputs::{self, Prepared};
use crate::{check_jobs, ArrayPlan, BinDirs, Error, Pipeline, Plan, Result, RunDirLock, Stage};

mod script;
mod status;

use script::{job_name, log_pattern, ScriptSpec, Task};
pub use status::{cancel, print_status, status, JobState, StageStatus, TaskStatus};

/// File name of the job record in `RUN_DIR/slurm/`.
pub const JOBS_FILE: &str = "jobs.json";

/// Options of [`submit`].
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Stages to submit even when fresh.
    pub force: Vec<String>,
    /// Print the scripts and the sbatch commands; write and submit nothing.
    pub dry_run: bool,
}

/// `RUN_DIR/slurm/jobs.json`: the jobs of the latest submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsFile {
    /// The pipeline's name.
    pub pipeline: String,
    /// The manifest submitted.
    pub manifest: PathBuf,
    /// When (seconds since the Unix epoch).
    pub submitted_unix: u64,
    /// The submitted stages, in submission order.
    pub stages: Vec<StageJobs>,
}

/// The jobs of one submitted stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageJobs {
    /// The stage.
    pub stage: String,
    /// The job that runs the stage's command (and writes `stage.json`).
    pub job: String,
    /// Its script.
    pub script: PathBuf,
    /// Its log, `RUN_DIR/slurm/logs/<stage>-<job>.out`.
    pub log: PathBuf,
    /// The job arrays that ran first, each after the one before, if the stage is
    /// split (a circuit split into parts runs three rounds).
    #[serde(default, alias = "array", deserialize_with = "one_or_many")]
    pub arrays: Vec<ArrayJobs>,
}

/// `arrays`, also as written before stages could have several: `null` or one array.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<ArrayJobs>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<ArrayJobs>),
        One(Option<ArrayJobs>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(a) => a.into_iter().collect(),
    })
}

/// A stage's job array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayJobs {
    /// The array's job id.
    pub job: String,
    /// Its script.
    pub script: PathBuf,
    /// What each task does, by task index (`part 0/4`, `--only-hook blocks.2.hook_resid_pre`).
    pub tasks: Vec<String>,
    /// The logs' directory; task `i` logs to `<stage>-<job>_<i>.out` in it.
    pub log_dir: PathBuf,
}

impl ArrayJobs {
    /// The log of task `index`.
    pub fn task_log(&self, stage: &str, index: usize) -> PathBuf {
        self.log_dir
            .join(format!("{stage}-{}_{index}.out", self.job))
    }
}

impl JobsFile {
    /// Read `RUN_DIR/slurm/jobs.json` of `pipeline`.
    pub fn read(pipeline: &Pipeline) -> Result<JobsFile> {
        let path = jobs_path(pipeline)?;
        if !path.is_file() {
            return Err(Error::NotSubmitted { path });
        }
        Ok(atomic::read_json(&path)?)
    }

    /// Every job id, arrays first.
    pub fn job_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for s in &self.stages {
            ids.extend(s.arrays.iter().map(|a| a.job.clone()));
            ids.push(s.job.clone());
        }
        ids
    }
}

/// The absolute `RUN_DIR/slurm` directory.
fn slurm_dir(pipeline: &Pipeline) -> Result<PathBuf> {
    let run_dir = pipeline.resolve(pipeline.run_dir());
    let abs = std::path::absolute(&run_dir).map_err(|e| Error::io("resolving", &run_dir, e))?;
    Ok(abs.join("slurm"))
}

fn jobs_path(pipeline: &Pipeline) -> Result<PathBuf> {
    Ok(slurm_dir(pipeline)?.join(JOBS_FILE))
}

/// What [`submit`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitReport {
    /// The stages submitted, with their jobs.
    pub submitted: Vec<StageJobs>,
    /// The stages that were fresh and not submitted.
    pub fresh: Vec<String>,
}

/// Submit `pipeline`'s stale stages to Slurm, chained by their dependencies.
///
/// Refuses while jobs of the previous submission are pending or running. Removes
/// each submitted stage's old `stage.json` (so a failed job leaves it stale), writes
/// `RUN_DIR/slurm/<stage>.sbatch` (and `<stage>.tasks.sbatch` for an array), submits
/// with `sbatch --parsable`, and records the job ids in `RUN_DIR/slurm/jobs.json`
/// (also when a later sbatch fails, so `circuitry cancel` can cancel what was queued).
pub fn submit(
    pipeline: &Pipeline,
    options: &SubmitOptions,
    bins: &BinDirs,
) -> Result<SubmitReport> {
    let plan = Plan::new(pipeline, &options.force)?;
    let mut report = SubmitReport {
        fresh: plan
            .stages
            .iter()
            .filter(|s| s.freshness.is_fresh())
            .map(|s| s.name.clone())
            .collect(),
        ..SubmitReport::default()
    };
    if plan.is_fresh() {
        eprintln!(
            "all {} stages fresh, nothing to submit",
            pipeline.stages().len()
        );
        return Ok(report);
    }
    let mut binaries = Vec::new();
    for planned in plan.stale() {
        let binary = bins
            .find(&planned.command.program)
            .ok_or_else(|| Error::MissingBinary {
                stage: planned.name.clone(),
                program: planned.command.program.clone(),
                searched: bins.dirs().to_vec(),
            })?;
        let binary =
            std::path::absolute(&binary).map_err(|e| Error::io("resolving", &binary, e))?;
        binaries.push(binary);
    }
    let dir = slurm_dir(pipeline)?;
    let logs = dir.join("logs");
    // Held until the jobs are queued (not while they run: Slurm orders those).
    let mut _lock = None;
    if !options.dry_run {
        find_program(bins, "sbatch", "submit")?;
        _lock = Some(RunDirLock::acquire(
            &pipeline.resolve(pipeline.run_dir()),
            &pipeline.display_path(pipeline.run_dir()),
            "circuitry submit",
        )?);
        check_previous_done(pipeline, bins)?;
    }
    // The options are checked here, on the submitting machine, job by job as the
    // cluster runs them; memory estimates against each job's `mem` when it has one.
    for check in check_jobs(pipeline, &plan, bins)? {
        eprintln!("  {check}");
    }
    if !options.dry_run {
        fs::create_dir_all(&logs).map_err(|e| Error::io("creating", &logs, e))?;
    }
    let mut jobs = JobsFile {
        pipeline: pipeline.name().to_string(),
        manifest: std::path::absolute(pipeline.manifest())
            .unwrap_or_else(|_| pipeline.manifest().to_path_buf()),
        submitted_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        stages: Vec::new(),
    };
    // Job id of each stage submitted so far, by stage index.
    let mut job_of: Vec<Option<String>> = vec![None; pipeline.stages().len()];
    let stale: Vec<_> = plan.stale().collect();
    for (planned, binary) in stale.iter().zip(&binaries) {
        let index = pipeline
            .stage_index(&planned.name)
            .ok_or_else(|| Error::io("finding stage", &planned.name, ErrorKind::NotFound.into()))?;
        let stage = &pipeline.stages()[index];
        let upstream: Vec<String> = stage
            .upstream()
            .iter()
            .filter_map(|&d| {
                job_of[d].clone().or_else(|| {
                    // In a dry run no ids exist: show the stage's name instead.
                    (options.dry_run && !plan.stages[d].freshness.is_fresh())
                        .then(|| format!("<{}>", pipeline.stages()[d].name()))
                })
            })
            .collect();
        let submitted = submit_stage(
            pipeline,
            stage,
            binary,
            &dir,
            &logs,
            &upstream,
            options.dry_run,
        );
        match submitted {
            Ok(stage_jobs) => {
                job_of[index] = Some(stage_jobs.job.clone());
                jobs.stages.push(stage_jobs);
            }
            Err(e) => {
                if !jobs.stages.is_empty() {
                    write_jobs(&dir, &jobs)?;
                }
                return Err(match e {
                    Error::SlurmFailed {
                        command,
                        status,
                        stderr,
                        ..
                    } => Error::SlurmFailed {
                        command,
                        status,
                        stderr,
                        submitted: jobs.job_ids(),
                    },
                    other => other,
                });
            }
        }
    }
    if !options.dry_run {
        write_jobs(&dir, &jobs)?;
        eprintln!(
            "submitted {} of {} stages; job ids in {}; follow with `circuitry status {}`",
            jobs.stages.len(),
            pipeline.stages().len(),
            dir.join(JOBS_FILE).display(),
            pipeline.manifest().display()
        );
    }
    report.submitted = jobs.stages;
    Ok(report)
}

/// Write (or in a dry run, print) one stage's scripts and submit them.
fn submit_stage(
    pipeline: &Pipeline,
    stage: &Stage,
    binary: &Path,
    dir: &Path,
    logs: &Path,
    upstream: &[String],
    dry_run: bool,
) -> Result<StageJobs> {
    let mut command = pipeline.command(stage);
    command.cwd =
        std::path::absolute(&command.cwd).map_err(|e| Error::io("resolving", &command.cwd, e))?;
    let out_dir = pipeline.resolve(&pipeline.stage_dir(stage));
    let out_dir = std::path::absolute(&out_dir).map_err(|e| Error::io("resolving", &out_dir, e))?;
    let resources = pipeline.slurm().resources(stage.name());
    let name = job_name(pipeline.name(), stage.name());
    let base_flags = |log: String, deps: &[String]| {
        let mut flags = vec![
            "--parsable".to_string(),
            format!("--job-name={name}"),
            format!("--output={log}"),
        ];
        if !deps.is_empty() {
            flags.push(format!("--dependency=afterok:{}", deps.join(":")));
            flags.push("--kill-on-invalid-dep=yes".into());
        }
        flags
    };
    let spec = |task: Task<'_>, submitted_as: &str| {
        script::script(&ScriptSpec {
            pipeline: pipeline.name(),
            stage: stage.name(),
            kind: stage.params().kind(),
            manifest: pipeline.manifest(),
            command: &command,
            out_dir: &out_dir,
            binary,
            resources: &resources,
            task,
            submitted_as,
        })
    };
    // A completed output waits in RUN_DIR/.<stage>.old for the stage's plain job,
    // which deletes it on success and puts it back otherwise; an incomplete one is
    // resumed in place. Put back at once if submitting fails.
    let prepared = if dry_run {
        Prepared::InPlace
    } else {
        outputs::prepare(&out_dir)?
    };
    let submitted = submit_jobs(
        pipeline,
        stage,
        logs,
        dir,
        upstream,
        dry_run,
        &spec,
        &base_flags,
    );
    if submitted.is_err() {
        outputs::roll_back(&out_dir, &prepared)?;
    }
    submitted
}

/// Submit a stage's jobs (an array first when it is split), see [`submit_stage`].
#[allow(clippy::too_many_arguments)]
fn submit_jobs(
    pipeline: &Pipeline,
    stage: &Stage,
    logs: &Path,
    dir: &Path,
    upstream: &[String],
    dry_run: bool,
    spec: &dyn Fn(Task<'_>, &str) -> String,
    base_flags: &dyn Fn(String, &[String]) -> Vec<String>,
) -> Result<StageJobs> {
    let plan = pipeline.array_plan(stage);
    let mut arrays = Vec::new();
    let mut deps = upstream.to_vec();
    let (task, labels, rounds): (Option<Task<'_>>, Vec<String>, usize) = match &plan {
        ArrayPlan::Single => (None, Vec::new(), 0),
        ArrayPlan::Parts { n, rounds } => (
            Some(Task::Part { n: *n }),
            (0..*n).map(|i| format!("part {i}/{n}")).collect(),
            *rounds,
        ),
        ArrayPlan::Each { flag, values } => (
            Some(Task::Each { flag, values }),
            values.iter().map(|v| format!("{flag} {v}")).collect(),
            1,
        ),
    };
    // Each round's array runs after the one before (the same tasks: each does the
    // next round of its part), the first after the upstream stages.
    for round in 1..=rounds {
        let Some(task) = &task else { break };
        let (name, labels) = if rounds == 1 {
            (format!("{}.tasks.sbatch", stage.name()), labels.clone())
        } else {
            (
                format!("{}.round{round}.sbatch", stage.name()),
                labels
                    .iter()
                    .map(|l| format!("{l}, round {round}/{rounds}"))
                    .collect(),
            )
        };
        let path = dir.join(name);
        let mut flags = base_flags(
            log_pattern(logs, &format!("{}-%A_%a.out", stage.name())),
            &deps,
        );
        flags.insert(1, format!("--array=0-{}", labels.len() - 1));
        let job = sbatch(&path, &flags, |line| spec(task.clone(), line), dry_run)?;
        arrays.push(ArrayJobs {
            job: job.clone(),
            script: path,
            tasks: labels,
            log_dir: logs.to_path_buf(),
        });
        deps = vec![job];
    }
    let path = dir.join(format!("{}.sbatch", stage.name()));
    let flags = base_flags(
        log_pattern(logs, &format!("{}-%j.out", stage.name())),
        &deps,
    );
    let job = sbatch(&path, &flags, |line| spec(Task::Plain, line), dry_run)?;
    let log = logs.join(format!("{}-{job}.out", stage.name()));
    if !dry_run {
        eprintln!(
            "  {:<12} job {job}{}",
            stage.name(),
            match arrays.as_slice() {
                [] => String::new(),
                [a] => format!(" after array job {} ({} tasks)", a.job, a.tasks.len()),
                many => format!(
                    " after array jobs {} ({} tasks each, one after the other)",
                    many.iter()
                        .map(|a| a.job.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    many[0].tasks.len()
                ),
            }
        );
    }
    Ok(StageJobs {
        stage: stage.name().to_string(),
        job,
        script: path,
        log,
        arrays,
    })
}

/// Write the script (text from `text(sbatch command line)`) and submit it; in a dry
/// run print both and return a placeholder id.
fn sbatch(
    path: &Path,
    flags: &[String],
    text: impl Fn(&str) -> String,
    dry_run: bool,
) -> Result<String> {
    let mut line = String::from("sbatch");
    for f in flags {
        line.push(' ');
        line.push_str(&crate::shell_quote(f));
    }
    line.push(' ');
    line.push_str(&crate::shell_quote(&path.to_string_lossy()));
    let body = text(&line);
    if dry_run {
        println!("# ---- {}\n{body}$ {line}\n", path.display());
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        return Ok(format!("<{}>", stem.unwrap_or_default()));
    }
    atomic::write_bytes(path, body.as_bytes())?;
    let out = Command::new("sbatch")
        .args(flags)
        .arg(path)
        .output()
        .map_err(|e| Error::io("running sbatch for", path, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !out.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::SlurmFailed {
            command: line,
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ),
            submitted: Vec::new(),
        });
    }
    Ok(id)
}

fn write_jobs(dir: &Path, jobs: &JobsFile) -> Result<()> {
    Ok(atomic::write_json(&dir.join(JOBS_FILE), jobs)?)
}

/// Refuse to submit while the previous submission's jobs are pending or running.
fn check_previous_done(pipeline: &Pipeline, bins: &BinDirs) -> Result<()> {
    let jobs = match JobsFile::read(pipeline) {
        Ok(jobs) => jobs,
        Err(Error::NotSubmitted { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let states = status::query_all(&jobs, bins)?;
    let active: Vec<String> = states
        .into_iter()
        .filter(|(_, s)| matches!(s, JobState::Pending { .. } | JobState::Running))
        .map(|(what, s)| format!("{what}: {s}"))
        .collect();
    if active.is_empty() {
        Ok(())
    } else {
        Err(Error::StillActive { jobs: active })
    }
}

/// The jobs of the latest submission that are still pending or running, as
/// `stage: state`, for `circuitry run` (which must not write beside them). Empty when
/// there was no submission, or when Slurm cannot be asked (no `scontrol` on this
/// machine, or the controller does not answer): then only a debug log says so.
pub(crate) fn active_jobs(pipeline: &Pipeline, bins: &BinDirs) -> Vec<String> {
    let jobs = match JobsFile::read(pipeline) {
        Ok(jobs) => jobs,
        Err(Error::NotSubmitted { .. }) => return Vec::new(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the Slurm jobs file; not checking for active jobs");
            return Vec::new();
        }
    };
    match status::query_all(&jobs, bins) {
        Ok(states) => states
            .into_iter()
            .filter(|(_, s)| matches!(s, JobState::Pending { .. } | JobState::Running))
            .map(|(what, s)| format!("{what}: {s}"))
            .collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot ask Slurm about the latest submission; not checking for active jobs");
            Vec::new()
        }
    }
}

/// Fail with [`Error::SlurmMissing`] unless `program` is on `bins`' PATH.
pub(crate) fn find_program(bins: &BinDirs, program: &str, action: &'static str) -> Result<()> {
    if bins.on_path(program) {
        Ok(())
    } else {
        Err(Error::SlurmMissing {
            program: program.into(),
            action,
        })
    }
}
