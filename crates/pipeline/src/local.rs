//! The local runner: each stale stage runs as its own process, in dependency order.
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use circuitry_core::STAGE_RECORD_FILE;

use crate::check::{check_stages, refusal_line};
use crate::freshness::{Checker, Upstream};
use crate::lock::RunDirLock;
use crate::outputs::{self, Prepared};
use crate::plan::forced_stages;
use crate::process::{caught, stage_process, RunningChild};
use crate::{Error, Freshness, Pipeline, Plan, Result, StageCommand};

/// The environment variable naming the one directory to take stage binaries from.
pub const BIN_DIR_ENV: &str = "CIRCUITRY_BIN_DIR";

/// How many of a failed stage's last output lines the error repeats.
const TAIL_LINES: usize = 20;

/// Where programs are looked for: the stage binaries, and Slurm's client tools
/// (`sbatch`, `scontrol`, `scancel`) on `PATH`. The `circuitry` binary builds it from
/// `$CIRCUITRY_BIN_DIR` and `$PATH` ([`BinDirs::locate`]); the library reads no
/// environment variable.
#[derive(Debug, Clone)]
pub struct BinDirs {
    /// Searched for stage binaries, in order.
    dirs: Vec<PathBuf>,
    /// `PATH`'s directories: searched for Slurm's client tools.
    path: Vec<PathBuf>,
}

impl BinDirs {
    /// Stage binaries from `bin_dir` alone when given (`$CIRCUITRY_BIN_DIR`);
    /// otherwise from the directory of the running executable (where `cargo build`
    /// puts all the workspace's binaries), then from `path` (`$PATH`'s directories,
    /// where Slurm's client tools are looked for in any case).
    pub fn locate(bin_dir: Option<PathBuf>, path: Vec<PathBuf>) -> BinDirs {
        if let Some(dir) = bin_dir {
            return BinDirs {
                dirs: vec![dir],
                path,
            };
        }
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            dirs.push(dir);
        }
        dirs.extend(path.iter().cloned());
        BinDirs { dirs, path }
    }

    /// The first `dir/program` that is a file.
    pub fn find(&self, program: &str) -> Option<PathBuf> {
        let file = format!("{program}{}", std::env::consts::EXE_SUFFIX);
        self.dirs
            .iter()
            .map(|d| d.join(&file))
            .find(|p| p.is_file())
    }

    /// Whether `program` (a Slurm client tool) is a file in one of `PATH`'s directories.
    pub fn on_path(&self, program: &str) -> bool {
        self.path.iter().any(|d| d.join(program).is_file())
    }

    /// The directories searched for stage binaries.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// Options of [`run_local`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stages to re-run even when fresh.
    pub force: Vec<String>,
    /// Print what would run and run nothing.
    pub dry_run: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunReport {
    /// Stages that ran, in order.
    pub ran: Vec<String>,
    /// Stages that were fresh.
    pub fresh: Vec<String>,
}

/// Run `pipeline`'s stale stages locally, in dependency order, each as a process
/// of its binary found in `bins`, streaming their output and writing it to
/// `RUN_DIR/<stage>.log`. Stops at the first failure; downstream stages do not run.
/// Progress goes to stderr.
///
/// Holds the run directory's lock ([`RunDirLock`]) throughout; checks every stale
/// stage's options with its binary's `--check-only` before running anything; runs a
/// stage whose folder holds a completed output into a fresh folder and puts the old
/// one back if the stage fails (see the crate docs, "Guarantees").
pub fn run_local(pipeline: &Pipeline, options: &RunOptions, bins: &BinDirs) -> Result<RunReport> {
    let forced = forced_stages(pipeline, &options.force)?;
    let n = pipeline.stages().len();
    if options.dry_run {
        let plan = Plan::new(pipeline, &options.force)?;
        if plan.is_fresh() {
            eprintln!("all {n} {} fresh, nothing to run", stages_noun(n));
            return Ok(RunReport::default());
        }
        // Like `plan`, a dry run shows the plan on a machine without the binaries.
        check_stages(pipeline, &plan, bins, true)?;
        eprintln!("{plan}");
        eprintln!("would run:");
        for stage in plan.stale() {
            eprintln!("  {}", stage.command);
        }
        return Ok(RunReport::default());
    }
    let run_dir = pipeline.resolve(pipeline.run_dir());
    let _lock = RunDirLock::acquire(
        &run_dir,
        &pipeline.display_path(pipeline.run_dir()),
        "circuitry run",
    )?;
    // Jobs of a Slurm submission write into the same folders without the lock.
    let active = crate::slurm::active_jobs(pipeline, bins);
    if !active.is_empty() {
        return Err(Error::SlurmJobsActive { jobs: active });
    }
    outputs::recover_leftovers(pipeline)?;
    let mut checker = Checker::new(pipeline);
    let plan = Plan::build(pipeline, &forced, &mut checker)?;
    if plan.is_fresh() {
        for stage in pipeline.stages() {
            outputs::commit(&pipeline.resolve(&pipeline.stage_dir(stage)))?;
        }
        eprintln!("all {n} {} fresh, nothing to run", stages_noun(n));
        return Ok(RunReport {
            ran: Vec::new(),
            fresh: plan.stages.iter().map(|s| s.name.clone()).collect(),
        });
    }
    // Find every binary, and have each check its options, before starting anything.
    for planned in plan.stale() {
        find_binary(bins, &planned.name, &planned.command.program)?;
    }
    check_stages(pipeline, &plan, bins, false)?;

    let start = Instant::now();
    let width = pipeline
        .stages()
        .iter()
        .map(|s| s.name().len())
        .max()
        .unwrap_or(0);
    let mut report = RunReport::default();
    let mut states: Vec<Upstream> = Vec::with_capacity(n);
    for (i, stage) in pipeline.stages().iter().enumerate() {
        let _span = tracing::info_span!("stage", name = stage.name(), kind = stage.params().kind())
            .entered();
        if let Some(signal) = caught() {
            return Err(Error::Interrupted {
                signal,
                stage: None,
                restored: false,
            });
        }
        let tag = format!("[{}/{n}] {:width$}", i + 1, stage.name());
        let upstream_ran = stage.upstream().iter().any(|&d| states[d] == Upstream::Ran);
        let out_dir = pipeline.resolve(&pipeline.stage_dir(stage));
        let reasons = match checker.assess(i, &states, forced[i])? {
            Freshness::Fresh => {
                let note = if upstream_ran {
                    " (upstream outputs unchanged)"
                } else {
                    ""
                };
                eprintln!("{tag}  fresh{note}");
                outputs::commit(&out_dir)?;
                report.fresh.push(stage.name().into());
                states.push(Upstream::Fresh);
                continue;
            }
            Freshness::Stale(reasons) => reasons,
        };
        let command = pipeline.command(stage);
        let binary = find_binary(bins, stage.name(), &command.program)?;
        eprintln!("{tag}  {}", Freshness::Stale(reasons));
        eprintln!("  $ {command}");
        let prepared = outputs::prepare(&out_dir)?;
        if let Prepared::MovedAside { old } = &prepared {
            tracing::info!(old = %old.display(), "completed output moved aside");
        }
        let log = run_dir.join(format!("{}.log", stage.name()));
        let stage_start = Instant::now();
        tracing::info!(binary = %binary.display(), "starting");
        let log_shown =
            pipeline.display_path(&pipeline.run_dir().join(format!("{}.log", stage.name())));
        let outcome = run_process(&binary, &command, &log, &log_shown).and_then(|end| {
            if let Some(signal) = caught() {
                if !end.status.success() {
                    return Err(Error::Interrupted {
                        signal,
                        stage: Some(stage.name().into()),
                        restored: matches!(prepared, Prepared::MovedAside { .. }),
                    });
                }
            }
            if end.status.code() == Some(2) {
                let message = refusal_line(&end.stderr_tail.join("\n"))
                    .unwrap_or_else(|| format!("`{}` exited with status 2", command.program));
                return Err(Error::StageRejected {
                    at: Box::new(pipeline.stage_error(stage, &message)),
                    log: Some(log_shown.clone()),
                });
            }
            if !end.status.success() {
                return Err(Error::StageFailed {
                    stage: stage.name().into(),
                    program: command.program.clone(),
                    status: end.status.to_string(),
                    log: log_shown.clone(),
                    tail: end.tail,
                });
            }
            if !out_dir.join(STAGE_RECORD_FILE).is_file() {
                return Err(Error::NoStageRecord {
                    stage: stage.name().into(),
                    program: command.program.clone(),
                    dir: out_dir.clone(),
                });
            }
            Ok(())
        });
        checker.forget(&pipeline.stage_dir(stage));
        if let Err(e) = outcome {
            if let Err(restore) = outputs::roll_back(&out_dir, &prepared) {
                eprintln!(
                    "warning: stage `{}` failed and its previous output could not be put \
                     back ({restore}); it is in {}",
                    stage.name(),
                    outputs::old_dir(&out_dir).display()
                );
            }
            return Err(e);
        }
        outputs::commit(&out_dir)?;
        states.push(Upstream::Ran);
        let seconds = stage_start.elapsed().as_secs_f64();
        tracing::info!(seconds, "finished");
        eprintln!("{tag}  done in {seconds:.1} s");
        if let Freshness::Stale(reasons) = checker.assess(i, &states, false)? {
            eprintln!(
                "warning: stage `{}` still looks stale after running ({}): its binary's \
                 stage.json does not match the arguments the runner passed",
                stage.name(),
                Freshness::Stale(reasons)
            );
        }
        report.ran.push(stage.name().into());
    }
    eprintln!(
        "ran {} of {n} stages ({}) in {:.1} s; outputs in {}",
        report.ran.len(),
        report.ran.join(", "),
        start.elapsed().as_secs_f64(),
        pipeline.display_path(pipeline.run_dir()).display()
    );
    Ok(report)
}

fn stages_noun(n: usize) -> &'static str {
    if n == 1 {
        "stage"
    } else {
        "stages"
    }
}

/// The path of `program`, or the error naming it, where it was looked for, and the fix.
pub(crate) fn find_binary(bins: &BinDirs, stage: &str, program: &str) -> Result<PathBuf> {
    bins.find(program).ok_or_else(|| Error::MissingBinary {
        stage: stage.into(),
        program: program.into(),
        searched: bins.dirs().to_vec(),
    })
}

/// How a stage process ended.
struct ProcessEnd {
    status: ExitStatus,
    /// Its last lines (stdout and stderr).
    tail: Vec<String>,
    /// Its last stderr lines.
    stderr_tail: Vec<String>,
}

/// Run one stage process, streaming its stdout and stderr through and into `log`
/// (named `log_shown` in errors). Fails only when the process cannot be run.
fn run_process(
    binary: &Path,
    command: &StageCommand,
    log: &Path,
    log_shown: &Path,
) -> Result<ProcessEnd> {
    let log_file = File::create(log).map_err(|e| Error::io("creating", log_shown, e))?;
    let mut child = stage_process(binary, command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("starting", binary, e))?;
    let running = RunningChild::register(child.id());
    let log_file = Arc::new(Mutex::new(log_file));
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        let (log_file, tail) = (Arc::clone(&log_file), Arc::clone(&tail));
        pumps.push(thread::spawn(move || {
            pump(out, io::stdout(), &log_file, &[&tail])
        }));
    }
    if let Some(err) = child.stderr.take() {
        let (log_file, tail, stderr_tail) = (
            Arc::clone(&log_file),
            Arc::clone(&tail),
            Arc::clone(&stderr_tail),
        );
        pumps.push(thread::spawn(move || {
            pump(err, io::stderr(), &log_file, &[&tail, &stderr_tail])
        }));
    }
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for", binary, e))?;
    drop(running);
    for pump in pumps {
        // A pump only fails on a broken terminal or log; the stage's status decides.
        let _ = pump.join();
    }
    let lines = |t: &Mutex<VecDeque<String>>| {
        t.lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    };
    Ok(ProcessEnd {
        status,
        tail: lines(&tail),
        stderr_tail: lines(&stderr_tail),
    })
}

/// Copy `from` line by line to `to` and the log, keeping the last lines in `tail`.
fn pump(
    from: impl Read,
    mut to: impl Write,
    log: &Mutex<File>,
    tails: &[&Mutex<VecDeque<String>>],
) -> io::Result<()> {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        to.write_all(&line)?;
        to.flush()?;
        if let Ok(mut log) = log.lock() {
            log.write_all(&line)?;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        for tail in tails {
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text.to_string());
            }
        }
    }
}
