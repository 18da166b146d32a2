//! The text of the sbatch scripts `circuitry submit` writes, and the flags it
//! submits them with. Every word that reaches a shell is quoted with [`shell_quote`].
use std::fmt::Write as _;
use std::path::Path;

use crate::{shell_quote, SlurmResources, StageCommand};

/// What one script runs.
#[derive(Debug, Clone)]
pub(crate) enum Task<'a> {
    /// The stage's command, as the local runner runs it.
    Plain,
    /// Array task `$SLURM_ARRAY_TASK_ID` of `n` parts: the command plus `--part I/N`.
    Part {
        /// Number of parts.
        n: usize,
    },
    /// Array task `$SLURM_ARRAY_TASK_ID`: the command plus `flag values[I]`.
    Each {
        /// The flag.
        flag: &'a str,
        /// One value per task.
        values: &'a [String],
    },
}

/// Everything a script needs.
pub(crate) struct ScriptSpec<'a> {
    /// Pipeline name, for the header.
    pub pipeline: &'a str,
    /// Stage name.
    pub stage: &'a str,
    /// Stage kind.
    pub kind: &'a str,
    /// The manifest, for the header.
    pub manifest: &'a Path,
    /// The stage's command; `cwd` must be absolute.
    pub command: &'a StageCommand,
    /// The stage's output folder (absolute): the plain job deletes the previous output
    /// `circuitry submit` moved aside when the stage succeeds, and puts it back when
    /// it fails or is cancelled.
    pub out_dir: &'a Path,
    /// The stage binary's absolute path.
    pub binary: &'a Path,
    /// Resources, written as `#SBATCH` lines.
    pub resources: &'a SlurmResources,
    /// The task flavour.
    pub task: Task<'a>,
    /// The sbatch command line that submits it, for the header (one line).
    pub submitted_as: &'a str,
}

/// The `#SBATCH` resource flags of `r` (validated: one word each, no newline).
pub(crate) fn resource_flags(r: &SlurmResources) -> Vec<String> {
    let mut flags = Vec::new();
    let mut push = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            flags.push(format!("--{name}={v}"));
        }
    };
    push("partition", &r.partition);
    push("account", &r.account);
    push("time", &r.time);
    push("mem", &r.mem);
    push("gres", &r.gres);
    if let Some(c) = r.cpus_per_task {
        flags.push(format!("--cpus-per-task={c}"));
    }
    flags.extend(r.extra.iter().flatten().cloned());
    flags
}

/// The script's text.
pub(crate) fn script(spec: &ScriptSpec<'_>) -> String {
    let mut s = String::from("#!/bin/bash\n");
    // Header comments: one line each, so a newline in a name cannot end the comment.
    let one_line = |t: &str| t.replace(['\n', '\r'], " ");
    let _ = writeln!(
        s,
        "# Stage `{}` (kind {}) of pipeline `{}`, written by `circuitry submit` from {}.",
        one_line(spec.stage),
        spec.kind,
        one_line(spec.pipeline),
        one_line(&spec.manifest.to_string_lossy())
    );
    let _ = writeln!(s, "# Submitted as: {}", one_line(spec.submitted_as));
    for flag in resource_flags(spec.resources) {
        let _ = writeln!(s, "#SBATCH {flag}");
    }
    s.push_str("set -euo pipefail\n");
    let _ = writeln!(s, "cd {}", shell_quote(&spec.command.cwd.to_string_lossy()));
    let mut line = shell_quote(&spec.binary.to_string_lossy()).into_owned();
    for arg in &spec.command.args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    match &spec.task {
        Task::Plain => {
            let old = crate::outputs::old_dir(spec.out_dir);
            let _ = writeln!(
                s,
                "out={}\nold={}",
                shell_quote(&spec.out_dir.to_string_lossy()),
                shell_quote(&old.to_string_lossy())
            );
            // The stage's previous output, moved aside by `circuitry submit`, is
            // deleted when this job completes the stage and put back otherwise
            // (failure, or scancel: bash runs the trap once the stage process ended).
            s.push_str(
                "restore() { if [ -d \"$old\" ] && [ ! -f \"$out/stage.json\" ]; then \
                 rm -rf -- \"$out\" && mv -- \"$old\" \"$out\"; fi; }\n\
                 trap 'restore; exit 143' TERM INT HUP\n\
                 status=0\n",
            );
            s.push_str(&line);
            s.push_str(
                " || status=$?\n\
                 if [ \"$status\" -eq 0 ] && [ -f \"$out/stage.json\" ]; then rm -rf -- \"$old\"; \
                 else restore; fi\n\
                 exit \"$status\"\n",
            );
            return s;
        }
        Task::Part { n } => {
            let _ = write!(line, " --part \"${{SLURM_ARRAY_TASK_ID}}/{n}\"");
        }
        Task::Each { flag, values } => {
            let quoted: Vec<String> = values.iter().map(|v| shell_quote(v).into_owned()).collect();
            let _ = writeln!(s, "values=({})", quoted.join(" "));
            let _ = write!(
                line,
                " {} \"${{values[$SLURM_ARRAY_TASK_ID]}}\"",
                shell_quote(flag)
            );
        }
    }
    s.push_str("exec ");
    s.push_str(&line);
    s.push('\n');
    s
}

/// A path for sbatch's `--output`, which expands `%` patterns: a literal `%` in the
/// directory is written `%%`. `pattern` (e.g. `acts-%j.out`) is appended as is.
pub(crate) fn log_pattern(dir: &Path, pattern: &str) -> String {
    let dir = dir.to_string_lossy().replace('%', "%%");
    format!("{}/{pattern}", dir.trim_end_matches('/'))
}

/// A Slurm job name from the pipeline and stage names: letters, digits, `_`, `-`, `.`.
pub(crate) fn job_name(pipeline: &str, stage: &str) -> String {
    let clean: String = pipeline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{clean}.{stage}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    fn spec_with<'a>(cmd: &'a StageCommand, r: &'a SlurmResources, task: Task<'a>) -> String {
        script(&ScriptSpec {
            pipeline: "p",
            stage: "acts",
            kind: "dump",
            manifest: Path::new("/m/p.toml"),
            command: cmd,
            out_dir: Path::new("/nonexistent/acts"),
            binary: Path::new("/usr/bin/printf"),
            resources: r,
            task,
            submitted_as: "sbatch x",
        })
    }

    /// The script runs printf with the exact arguments: bash sees every hostile
    /// word (spaces, quotes, `$`, backticks, newlines, globs) as one literal word.
    #[test]
    fn hostile_arguments_reach_the_binary_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().join("it's a \"dir\" $HOME `x`");
        std::fs::create_dir(&cwd).unwrap();
        let words = [
            "%s|\n",
            "a b",
            "it's",
            "say \"hi\"",
            "$HOME",
            "$(touch pwned)",
            "`touch pwned`",
            "line\nbreak",
            "*",
            "",
            "back\\slash",
            "--flag=a;b&c|d>e",
        ];
        let cmd = StageCommand {
            program: "printf".into(),
            args: words.iter().map(|w| w.to_string()).collect(),
            cwd: cwd.clone(),
        };
        let r = SlurmResources::default();
        let text = spec_with(&cmd, &r, Task::Plain);
        let path = dir.path().join("s.sh");
        std::fs::write(&path, &text).unwrap();
        let out = Command::new("bash").arg(&path).output().unwrap();
        assert!(out.status.success(), "{text}\n{out:?}");
        let expected: String = words[1..].iter().map(|w| format!("{w}|\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{text}");
        assert!(!cwd.join("pwned").exists() && !dir.path().join("pwned").exists());
    }

    #[test]
    fn array_tasks_pick_their_value_and_part() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = StageCommand {
            program: "printf".into(),
            args: vec!["%s,".into()],
            cwd: PathBuf::from("/"),
        };
        let r = SlurmResources::default();
        let values = vec!["a b".to_string(), "c'd".to_string()];
        for (task, id, want) in [
            (Task::Part { n: 4 }, "2", "--part,2/4,"),
            (
                Task::Each {
                    flag: "--only-hook",
                    values: &values,
                },
                "1",
                "--only-hook,c'd,",
            ),
        ] {
            let text = spec_with(&cmd, &r, task);
            let path = dir.path().join("s.sh");
            std::fs::write(&path, &text).unwrap();
            let out = Command::new("bash")
                .arg(&path)
                .env("SLURM_ARRAY_TASK_ID", id)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{text}");
        }
    }

    /// The plain job puts the previous output back when the stage fails and deletes
    /// it when the stage writes stage.json.
    #[test]
    fn plain_job_restores_or_deletes_the_moved_aside_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("my acts");
        let old = crate::outputs::old_dir(&out);
        let r = SlurmResources::default();
        for (program, args, want_old_back) in [
            (
                "sh",
                vec![
                    "-c".to_string(),
                    "mkdir -p \"$0\"; echo half > \"$0/x\"; exit 3".into(),
                ],
                true,
            ),
            (
                "sh",
                vec![
                    "-c".to_string(),
                    "mkdir -p \"$0\"; echo new > \"$0/x\"; echo {} > \"$0/stage.json\"".into(),
                ],
                false,
            ),
        ] {
            std::fs::create_dir_all(&old).unwrap();
            std::fs::write(old.join("x"), "old\n").unwrap();
            std::fs::write(old.join("stage.json"), "{}").unwrap();
            let mut args = args;
            args.push(out.to_string_lossy().into_owned());
            let cmd = StageCommand {
                program: program.into(),
                args,
                cwd: dir.path().to_path_buf(),
            };
            let text = script(&ScriptSpec {
                pipeline: "p",
                stage: "acts",
                kind: "dump",
                manifest: Path::new("/m/p.toml"),
                command: &cmd,
                out_dir: &out,
                binary: Path::new("/bin/sh"),
                resources: &r,
                task: Task::Plain,
                submitted_as: "sbatch x",
            });
            let path = dir.path().join("s.sh");
            std::fs::write(&path, &text).unwrap();
            let status = Command::new("bash").arg(&path).status().unwrap();
            let x = std::fs::read_to_string(out.join("x")).unwrap();
            assert!(!old.exists(), "{text}");
            if want_old_back {
                assert_eq!(status.code(), Some(3), "{text}");
                assert_eq!(x, "old\n", "{text}");
            } else {
                assert!(status.success(), "{text}");
                assert_eq!(x, "new\n", "{text}");
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }

    #[test]
    fn resources_become_sbatch_lines() {
        let cmd = StageCommand {
            program: "x".into(),
            args: vec![],
            cwd: PathBuf::from("/"),
        };
        let r = SlurmResources {
            partition: Some("gpu".into()),
            time: Some("01:00:00".into()),
            cpus_per_task: Some(4),
            mem: Some("16G".into()),
            gres: Some("gpu:1".into()),
            account: Some("lab".into()),
            extra: Some(vec!["--qos=short".into()]),
        };
        let text = spec_with(&cmd, &r, Task::Plain);
        for line in [
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=01:00:00\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --mem=16G\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --account=lab\n",
            "#SBATCH --qos=short\n",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn log_patterns_escape_percent_and_job_names_are_clean() {
        assert_eq!(
            log_pattern(Path::new("/r/100% run/logs/"), "a-%j.out"),
            "/r/100%% run/logs/a-%j.out"
        );
        assert_eq!(job_name("my pipe'line", "sae"), "my_pipe_line.sae");
    }
}
