//! The pipeline crate's errors. A bad manifest is one [`Error::Manifest`] carrying a
//! [`ManifestError`]: the file, the line and column, the offending line, what is
//! wrong ([`Problem`]) and how to fix it.
use std::fmt;
use std::path::PathBuf;

/// Errors of the pipeline crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest is invalid; nothing was run or written.
    #[error("{0}")]
    Manifest(Box<ManifestError>),
    /// `--force` named a stage the manifest does not have.
    #[error(
        "--force {stage}: the pipeline has no stage `{stage}`; its stages are: {}",
        stages.join(", ")
    )]
    UnknownForcedStage {
        /// The name given to `--force`.
        stage: String,
        /// The pipeline's stage names.
        stages: Vec<String>,
    },
    /// A stage binary was not found.
    #[error(
        "stage `{stage}` needs the binary `{program}`, which is not in {}; build the stage \
         binaries with `cargo build --release` (they land next to `circuitry`), or set \
         CIRCUITRY_BIN_DIR to the directory that holds them",
        describe_search(searched)
    )]
    MissingBinary {
        /// The stage that needs it.
        stage: String,
        /// The binary's name, e.g. `circuitry-train-sae`.
        program: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A stage process failed; stages downstream of it were not run.
    #[error(
        "stage `{stage}` failed: `{program}` ended with {status}; its output is in {log}{}",
        tail_block(tail)
    )]
    StageFailed {
        /// The stage.
        stage: String,
        /// The binary that ran.
        program: String,
        /// How it ended, e.g. "exited with exit status: 3".
        status: String,
        /// The stage's log file (its stdout and stderr).
        log: PathBuf,
        /// The last lines of the log.
        tail: Vec<String>,
    },
    /// A stage process exited successfully but wrote no `stage.json`.
    #[error(
        "stage `{stage}`: `{program}` exited successfully but wrote no stage.json in {dir}; \
         every stage binary must write it last (circuitry_core::StageTimer::finish)"
    )]
    NoStageRecord {
        /// The stage.
        stage: String,
        /// The binary that ran.
        program: String,
        /// Its output directory.
        dir: PathBuf,
    },
    /// A Slurm client command (`sbatch`, `scontrol`, `scancel`) is not installed.
    #[error(
        "`{program}` was not found on PATH: `circuitry {action}` talks to Slurm through its \
         client commands; run it on a machine of the cluster (a login node), or start a \
         local single-node cluster with `scripts/slurm-local.sh start` and \
         `eval \"$(scripts/slurm-local.sh env)\"`"
    )]
    SlurmMissing {
        /// The command, e.g. `sbatch`.
        program: String,
        /// The circuitry subcommand, e.g. `submit`.
        action: &'static str,
    },
    /// A Slurm client command failed.
    #[error("`{command}` failed ({status}): {stderr}{}", submitted_note(submitted))]
    SlurmFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// What it printed on stderr.
        stderr: String,
        /// Jobs this submission had already queued (recorded in jobs.json).
        submitted: Vec<String>,
    },
    /// `circuitry status` / `cancel` on a run that was never submitted.
    #[error(
        "{path} does not exist: the pipeline's run directory has no Slurm submission; \
         submit it first with `circuitry submit MANIFEST`"
    )]
    NotSubmitted {
        /// The jobs file looked for.
        path: PathBuf,
    },
    /// `circuitry submit` while jobs of the previous submission still run.
    #[error(
        "jobs of the previous submission of this run are still pending or running ({}); \
         wait for them (`circuitry status MANIFEST`) or cancel them (`circuitry cancel \
         MANIFEST`), then submit again",
        jobs.join(", ")
    )]
    StillActive {
        /// `stage: job state` for each active job.
        jobs: Vec<String>,
    },
    /// Another `circuitry run` or `submit` holds the run directory's lock.
    #[error(
        "run directory {run_dir} is in use by {holder}: two runs at once would overwrite \
         each other's outputs; wait for that run to finish (or stop it), then run again"
    )]
    Locked {
        /// The run directory, as shown to the user.
        run_dir: PathBuf,
        /// Who holds it: `pid N on HOST since TIME (COMMAND)`.
        holder: String,
    },
    /// A stage binary refused the stage's options: when asked with `--check-only`
    /// before anything ran, or when the stage exited with status 2 while running.
    #[error("{at}{}", log.as_ref().map_or(String::new(), |l| format!("\n  the stage's output is in {}", l.display())))]
    StageRejected {
        /// The refusal, located at the stage in the manifest.
        at: Box<ManifestError>,
        /// The stage's log, when it ran.
        log: Option<PathBuf>,
    },
    /// `BINARY ... --check-only` ended neither with 0 nor with a refusal (status 2).
    #[error(
        "checking stage `{stage}`: `{program} ... --check-only` ended with {status}{}",
        tail_block(tail)
    )]
    CheckFailed {
        /// The stage.
        stage: String,
        /// The binary.
        program: String,
        /// How it ended.
        status: String,
        /// Its last lines of output.
        tail: Vec<String>,
    },
    /// The runner was asked to stop (SIGINT, SIGTERM, SIGHUP).
    #[error(
        "stopped by {}{}; run the same command again to continue",
        crate::process::signal_name(*signal),
        stage.as_ref().map_or(String::new(), |s| format!(
            " while stage `{s}` ran: it was stopped and {}",
            if *restored { "its previous output put back" } else { "its partial output kept (a re-run resumes it)" }
        ))
    )]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// The stage that was running.
        stage: Option<String>,
        /// Whether the stage's previous output was put back.
        restored: bool,
    },
    /// `circuitry run` while jobs of a Slurm submission of the same run directory are
    /// pending or running.
    #[error(
        "jobs of the latest Slurm submission of this run directory are still pending or \
         running ({}); a local run would write beside them: wait for them (`circuitry \
         status MANIFEST`) or cancel them (`circuitry cancel MANIFEST`), then run again",
        jobs.join(", ")
    )]
    SlurmJobsActive {
        /// `stage: job state` for each active job.
        jobs: Vec<String>,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from circuitry-core (reading a stage record, fingerprinting).
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
}

/// Result alias of the pipeline crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is the user's input (manifest, `--force`, missing binaries)
    /// rather than a stage failing: the `circuitry` binary exits with code 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Manifest(_)
                | Error::UnknownForcedStage { .. }
                | Error::MissingBinary { .. }
                | Error::SlurmMissing { .. }
                | Error::NotSubmitted { .. }
                | Error::StillActive { .. }
                | Error::Locked { .. }
                | Error::SlurmJobsActive { .. }
                | Error::StageRejected { .. }
        )
    }

    /// The exit status of the `circuitry` binary for this error: 2 for bad input
    /// ([`is_bad_input`](Self::is_bad_input)), 128 + the signal when stopped by one,
    /// 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted { signal, .. } => u8::try_from(128 + signal).unwrap_or(1),
            e if e.is_bad_input() => 2,
            _ => 1,
        }
    }
}

fn describe_search(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "any searched directory (none: PATH is empty)".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn submitted_note(jobs: &[String]) -> String {
    if jobs.is_empty() {
        return String::new();
    }
    format!(
        "; jobs already queued by this submission: {} (`circuitry cancel MANIFEST` cancels them)",
        jobs.join(", ")
    )
}

fn tail_block(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    let mut s = String::from("; its last lines:");
    for line in tail {
        s.push_str("\n  | ");
        s.push_str(line);
    }
    s
}

/// A problem in a manifest, located in its file.
#[derive(Debug)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// Where in it, when known.
    pub location: Option<Location>,
    /// What is wrong.
    pub problem: Problem,
}

/// A place in a manifest: 1-based line and column, with the line's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The text of the line.
    pub line_text: String,
    /// How many characters to underline, at least 1.
    pub width: usize,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = &self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        write!(f, ": {}", self.problem)?;
        if let Some(loc) = &self.location {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            write!(
                f,
                "\n {pad} |\n {num} | {}\n {pad} | {}{}",
                loc.line_text,
                " ".repeat(loc.column.saturating_sub(1)),
                "^".repeat(loc.width.max(1))
            )?;
        }
        let fix = self.problem.fix();
        if !fix.is_empty() {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// What is wrong with a manifest: one variant per validation rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The file is not valid TOML.
    #[error("TOML syntax error: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A key the schema does not know, a value of the wrong type or a missing key,
    /// as reported by deserialisation.
    #[error("{message}")]
    Schema {
        /// The deserialiser's message (it names the key and what was expected).
        message: String,
    },
    /// A stage `kind` that does not exist.
    #[error("unknown stage kind {kind:?}")]
    UnknownKind {
        /// The kind as written.
        kind: String,
        /// The kinds that exist.
        known: Vec<&'static str>,
    },
    /// An `@stage` reference to a stage the manifest does not have.
    #[error("`{field} = \"{reference}\"` refers to stage `{stage}`, which does not exist")]
    UnknownStage {
        /// The key holding the reference.
        field: String,
        /// The reference as written.
        reference: String,
        /// The referenced stage name.
        stage: String,
        /// The manifest's stage names.
        stages: Vec<String>,
    },
    /// Stages that depend on each other in a loop.
    #[error("dependency cycle: {}", cycle.join(" → "))]
    Cycle {
        /// The stages of the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A plain input file or directory that does not exist.
    #[error("`{field}`: input {path} does not exist (looked for {resolved})")]
    MissingInput {
        /// The key holding the path.
        field: String,
        /// The path as written.
        path: PathBuf,
        /// Where it was looked for.
        resolved: PathBuf,
    },
    /// Two stages with the same name.
    #[error("duplicate stage name `{name}` (first defined on line {first_line})")]
    DuplicateStage {
        /// The name.
        name: String,
        /// The line of the first stage with that name.
        first_line: usize,
    },
    /// A stage name that is not a simple identifier (it names a directory).
    #[error("stage name {name:?} is not a simple identifier")]
    BadStageName {
        /// The name as written.
        name: String,
    },
    /// A reference to a path outside the referenced stage's output directory.
    #[error("`{field} = \"{reference}\"` points outside stage `{stage}`'s output directory")]
    EscapesRunDir {
        /// The key holding the reference.
        field: String,
        /// The reference as written.
        reference: String,
        /// The referenced stage.
        stage: String,
    },
    /// A value out of its allowed range, or parameters that contradict each other.
    #[error("`{field}`: {problem}")]
    InvalidValue {
        /// The key.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The manifest file could not be read.
    #[error("cannot read the manifest: {message}")]
    Unreadable {
        /// The I/O error.
        message: String,
    },
    /// The manifest has no `[[stage]]`.
    #[error("the manifest has no stages")]
    NoStages,
    /// A stage binary refused the stage's options (its own one-line message, which
    /// says what to change).
    #[error("stage {stage}: {message}")]
    StageRejected {
        /// The stage.
        stage: String,
        /// The binary's message, without its `error: ` prefix.
        message: String,
    },
}

impl Problem {
    /// How to fix the problem, in one sentence.
    pub fn fix(&self) -> String {
        match self {
            Problem::Syntax { .. } => "correct the TOML syntax at the marked place".into(),
            Problem::Schema { message } => {
                if message.starts_with("unknown field") {
                    "remove the key or correct its spelling to one of the keys listed".into()
                } else if message.starts_with("missing field") {
                    "add the missing key".into()
                } else {
                    "write the value with the expected type shown above".into()
                }
            }
            Problem::UnknownKind { known, .. } => {
                format!("use one of the stage kinds: {}", known.join(", "))
            }
            Problem::UnknownStage { stages, .. } => format!(
                "refer to one of the stages: {} (an `@name` value is the output directory of stage `name`)",
                stages.join(", ")
            ),
            Problem::Cycle { .. } => {
                "remove one of these references so that the stages form a chain".into()
            }
            Problem::MissingInput { .. } => {
                "create the file, or correct the path (plain paths are relative to the manifest's directory)".into()
            }
            Problem::DuplicateStage { .. } => "give every stage a different name".into(),
            Problem::BadStageName { .. } => {
                "use letters, digits, `_` and `-`, starting with a letter or `_` (the name is a directory name in the run directory)".into()
            }
            Problem::EscapesRunDir { stage, .. } => format!(
                "name a path inside the stage's output directory, e.g. \"@{stage}\" or \"@{stage}/sub/dir\", without `..`"
            ),
            Problem::InvalidValue { fix, .. } => fix.clone(),
            Problem::Unreadable { .. } => "check the manifest's path and permissions".into(),
            Problem::NoStages => "add at least one [[stage]] table".into(),
            // The binary's message names the fix itself.
            Problem::StageRejected { .. } => String::new(),
        }
    }
}
