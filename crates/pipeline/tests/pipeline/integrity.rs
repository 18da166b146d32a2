//! Cache integrity, the runner's side (issue 15): forced and stale stages re-run into a
//! fresh folder and put the old one back on failure; one writer per run directory;
//! stage processes die with the runner; stage options are checked before anything
//! runs. Real `circuitry` processes, real files, the fake stage binaries.
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::fake_stage::REFUSAL;
use crate::util::{snapshot, toy_manifest, Fixture, Run};

const TOY: &str = "pipelines/toy.toml";
const ALL: [&str; 4] = ["model", "acts", "sae", "circuit"];
/// Longer than any test waits for: a sleeping stage is always stopped by the test.
const LONG_SLEEP: &str = "600";
/// How long to wait for something that happens at once (a process starting or dying)
/// before failing; a bound against hanging, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn toy_after_first_run() -> Fixture {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "first run failed:\n{}", run.all());
    assert_eq!(fx.ran(), ALL);
    fx
}

/// The 1-based line and column of the value of `key` in the toy manifest.
fn toy_position(key: &str) -> (usize, usize) {
    let text = toy_manifest();
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let eq = line.find('=').unwrap();
                let value = eq + 1 + line[eq + 1..].len() - line[eq + 1..].trim_start().len();
                return (i + 1, value + 1);
            }
        }
    }
    panic!("{key} not in the toy manifest")
}

/// Spawn `circuitry ARGS` with output discarded.
fn spawn(fx: &Fixture, args: &[&str], env: &[(&str, &str)]) -> Child {
    fx.command(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The pid a sleeping fake stage wrote to `file`, waiting for it.
fn wait_for_pid(file: &Path) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(file) {
            return text.trim().parse().unwrap();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the stage never wrote {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/proc/PID/stat`: the state letter and the parent pid, or None when gone.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Wait until process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn wait_until_dead(pid: i32) -> bool {
    let start = Instant::now();
    while start.elapsed() < PATIENCE {
        match proc_state(pid) {
            None | Some(('Z' | 'X', _)) => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// Everything in the run directory but the lock file, whose content names the
/// process and time that held it.
fn run_dir_files(fx: &Fixture) -> Vec<(String, Vec<u8>)> {
    let mut files = snapshot(&fx.path("runs/toy"));
    files.retain(|(name, _)| name != ".lock");
    files
}

/// Assert two file lists are equal, naming the files that differ.
fn assert_same_files(got: &[(String, Vec<u8>)], want: &[(String, Vec<u8>)]) {
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "different files");
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert!(
            a == b,
            "{name} differs:\n{}\n---\n{}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
    }
}

/// The stages' outputs: [`run_dir_files`] without the stages' logs (`RUN_DIR/*.log`),
/// which interleave the stage's stdout and stderr in whatever order they arrive.
fn stage_outputs(fx: &Fixture) -> Vec<(String, Vec<u8>)> {
    let mut files = run_dir_files(fx);
    files.retain(|(name, _)| name.contains('/'));
    files
}

fn plan_is_fresh(fx: &Fixture) {
    let plan = fx.circuitry(&["plan", TOY]);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("4 fresh, 0 stale"), "{}", plan.stdout);
}

// ---- item 1: forced and stale stages re-run, atomically --------------------------

/// Issue 15, item 1: `--force acts` deleted acts/stage.json and the dump refused the
/// complete store it found, on that run and every later one.
#[test]
fn forced_rerun_of_a_complete_dump_is_no_longer_refused() {
    let fx = toy_after_first_run();
    let run = fx.circuitry(&["run", TOY, "--force", "acts"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["acts"]);
    assert!(!fx.path("runs/toy/.acts.old").exists());
    plan_is_fresh(&fx);
    // Different bytes: the store is replaced and everything downstream re-runs.
    let run = fx.circuitry_env(
        &["run", TOY, "--force", "acts"],
        &[("CIRCUITRY_FAKE_SALT", "2")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["acts", "sae", "circuit"]);
    let result = fs::read_to_string(fx.path("runs/toy/acts/result.txt")).unwrap();
    assert!(result.contains("salt 2"), "{result}");
    assert!(!fx.path("runs/toy/.acts.old").exists());
    let run = fx.circuitry_env(&["run", TOY], &[("CIRCUITRY_FAKE_SALT", "2")]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("nothing to run"), "{}", run.stderr);
}

/// A forced re-run that fails leaves the previous output, whole, where it was.
#[test]
fn failed_forced_rerun_puts_the_previous_output_back() {
    let fx = toy_after_first_run();
    let before = run_dir_files(&fx);
    let run = fx.circuitry_env(
        &["run", TOY, "--force", "acts"],
        &[
            ("CIRCUITRY_FAKE_SALT", "2"),
            ("CIRCUITRY_FAKE_FAIL", "acts"),
        ],
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr
            .contains("error: stage `acts` failed: `circuitry-dump` ended with exit status: 3"),
        "{}",
        run.stderr
    );
    assert_eq!(fx.ran(), ["acts"]);
    let mut after = run_dir_files(&fx);
    // Only the log of the failed attempt differs.
    let log = |files: &mut Vec<(String, Vec<u8>)>| files.retain(|(n, _)| n != "acts.log");
    let mut before = before;
    log(&mut before);
    log(&mut after);
    assert!(before == after, "the run directory changed");
    plan_is_fresh(&fx);
}

/// The runner stopped by SIGTERM mid-stage stops the stage and puts the previous
/// output back before exiting with 128 + 15.
#[test]
fn runner_stopped_by_sigterm_puts_the_previous_output_back() {
    let fx = toy_after_first_run();
    let before = snapshot(&fx.path("runs/toy/acts"));
    let pid_file = fx.path("stage.pid");
    let child = spawn(
        &fx,
        &["run", TOY, "--force", "acts"],
        &[
            ("CIRCUITRY_FAKE_SALT", "2"),
            ("CIRCUITRY_FAKE_SLEEP", &format!("acts:{LONG_SLEEP}")),
            ("CIRCUITRY_FAKE_PID_FILE", pid_file.to_str().unwrap()),
        ],
    );
    let stage = wait_for_pid(&pid_file);
    assert!(
        fx.path("runs/toy/.acts.old/stage.json").is_file(),
        "the completed output was not moved aside"
    );
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
    let run = finish(child);
    assert_eq!(run.code, 143, "{}", run.all());
    assert!(
        run.stderr.contains(
            "error: stopped by SIGTERM while stage `acts` ran: it was stopped and its previous \
             output put back; run the same command again to continue"
        ),
        "{}",
        run.stderr
    );
    assert!(wait_until_dead(stage), "stage process {stage} survived");
    assert_eq!(snapshot(&fx.path("runs/toy/acts")), before);
    assert!(!fx.path("runs/toy/.acts.old").exists());
    plan_is_fresh(&fx);
}

// ---- item 2: one writer per run directory; children die with the runner ----------

/// Issue 15, item 2: two runs of one manifest at once raced on the dump's files (in
/// one of four trials both failed, leaving a store with a shard missing). Now one
/// runs and the other exits 2 at once, naming the holder; five trials.
#[test]
fn two_runs_at_once_one_runs_and_the_other_exits_2() {
    for trial in 0..5 {
        let fx = Fixture::new();
        fx.manifest("toy.toml", &toy_manifest());
        // The first stage sleeps a little so that the two runs overlap.
        let env = [("CIRCUITRY_FAKE_SLEEP", "model:0.5")];
        let a = spawn(&fx, &["run", TOY], &env);
        let b = spawn(&fx, &["run", TOY], &env);
        let (a_pid, b_pid) = (a.id(), b.id());
        let (a, b) = (finish(a), finish(b));
        let mut codes = [a.code, b.code];
        codes.sort_unstable();
        assert_eq!(
            codes,
            [0, 2],
            "trial {trial}:\n{}\n---\n{}",
            a.all(),
            b.all()
        );
        let (loser, winner_pid) = if a.code == 2 {
            (&a, b_pid)
        } else {
            (&b, a_pid)
        };
        let first_line = loser.stderr.lines().next().unwrap_or_default();
        let want = format!("error: run directory runs/toy is in use by pid {winner_pid} on ");
        assert!(
            first_line.starts_with(&want),
            "trial {trial}: {}",
            loser.stderr
        );
        assert!(
            first_line.ends_with(
                "(circuitry run): two runs at once would overwrite each other's outputs; \
                 wait for that run to finish (or stop it), then run again"
            ),
            "trial {trial}: {}",
            loser.stderr
        );
        assert_eq!(loser.stderr.lines().count(), 1, "{}", loser.stderr);
        // Each stage ran once, and its output is whole.
        assert_eq!(fx.ran(), ALL, "trial {trial}");
        plan_is_fresh(&fx);
    }
}

/// `plan` reads and does not lock: it answers while a run holds the lock.
#[test]
fn plan_does_not_wait_for_a_running_pipeline() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let pid_file = fx.path("stage.pid");
    let mut child = spawn(
        &fx,
        &["run", TOY],
        &[
            ("CIRCUITRY_FAKE_SLEEP", &format!("model:{LONG_SLEEP}")),
            ("CIRCUITRY_FAKE_PID_FILE", pid_file.to_str().unwrap()),
        ],
    );
    let stage = wait_for_pid(&pid_file);
    let plan = fx.circuitry(&["plan", TOY]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("0 fresh, 4 stale"), "{}", plan.stdout);
    assert!(wait_until_dead(stage), "stage process {stage} survived");
}

/// `submit` takes the same lock: while a run works in the run directory, it exits 2
/// naming the run, before writing or submitting anything.
#[test]
fn submit_while_a_run_holds_the_run_directory_exits_2() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    // A stand-in sbatch that records being called; it must never be.
    let sbatch = fx.bin().join("sbatch");
    let called = fx.path("sbatch.called");
    fs::write(
        &sbatch,
        format!("#!/bin/sh\ntouch '{}'\necho 1\n", called.display()),
    )
    .unwrap();
    fs::set_permissions(&sbatch, fs::Permissions::from_mode(0o755)).unwrap();
    let pid_file = fx.path("stage.pid");
    let mut child = spawn(
        &fx,
        &["run", TOY],
        &[
            ("CIRCUITRY_FAKE_SLEEP", &format!("model:{LONG_SLEEP}")),
            ("CIRCUITRY_FAKE_PID_FILE", pid_file.to_str().unwrap()),
        ],
    );
    let stage = wait_for_pid(&pid_file);
    let path = format!(
        "{}:{}",
        fx.bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let submit = fx.circuitry_env(&["submit", TOY], &[("PATH", &path)]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(wait_until_dead(stage), "stage process {stage} survived");
    assert_eq!(submit.code, 2, "{}", submit.all());
    let want = format!(
        "error: run directory runs/toy is in use by pid {} on ",
        child.id()
    );
    assert!(submit.stderr.starts_with(&want), "{}", submit.stderr);
    assert!(
        submit.stderr.contains("(circuitry run)"),
        "{}",
        submit.stderr
    );
    assert!(!called.exists(), "sbatch was called");
    assert!(!fx.path("runs/toy/slurm").exists());
}

/// Slurm jobs write into the run directory without holding its lock: while jobs of
/// the latest submission are pending or running, `run` exits 2 and runs nothing.
/// (A stand-in `scontrol` answers for the recorded job.)
#[test]
fn run_while_slurm_jobs_of_the_run_directory_are_active_exits_2() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    fs::create_dir_all(fx.path("runs/toy/slurm")).unwrap();
    let jobs = serde_json::json!({
        "pipeline": "toy",
        "manifest": fx.path(TOY),
        "submitted_unix": 0,
        "stages": [{
            "stage": "acts",
            "job": "41",
            "script": fx.path("runs/toy/slurm/acts.sbatch"),
            "log": fx.path("runs/toy/slurm/logs/acts-41.out"),
            "array": null
        }]
    });
    fs::write(fx.path("runs/toy/slurm/jobs.json"), jobs.to_string()).unwrap();
    let scontrol = fx.bin().join("scontrol");
    let answer = |state: &str| {
        fs::write(
            &scontrol,
            format!("#!/bin/sh\necho 'JobId=41 JobName=toy.acts JobState={state} Reason=None ExitCode=0:0'\n"),
        )
        .unwrap();
        fs::set_permissions(&scontrol, fs::Permissions::from_mode(0o755)).unwrap();
    };
    let path = format!(
        "{}:{}",
        fx.bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    answer("RUNNING");
    let run = fx.circuitry_env(&["run", TOY], &[("PATH", &path)]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.starts_with(
            "error: jobs of the latest Slurm submission of this run directory are still pending or running (acts"
        ),
        "{}",
        run.stderr
    );
    assert!(fx.ran().is_empty());
    answer("COMPLETED");
    let run = fx.circuitry_env(&["run", TOY], &[("PATH", &path)]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ALL);
}

/// Issue 15, item 2: a SIGKILLed `circuitry run` left its stage binary running as an
/// orphan beside the next run. Now the stage dies with it, and the re-run resumes
/// and ends with the outputs of an uninterrupted run, byte for byte: every file in
/// the stages' folders, `stage.json` included (the fake stages record no timings);
/// not `RUN_DIR/.lock` (its holder) nor the logs `RUN_DIR/*.log` (stdout and stderr
/// interleaved in arrival order).
#[test]
fn killed_runner_leaves_no_stage_process_and_the_rerun_matches_an_uninterrupted_run() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let pid_file = fx.path("stage.pid");
    let mut child = spawn(
        &fx,
        &["run", TOY],
        &[
            ("CIRCUITRY_FAKE_SLEEP", &format!("sae:{LONG_SLEEP}")),
            ("CIRCUITRY_FAKE_PID_FILE", pid_file.to_str().unwrap()),
        ],
    );
    let stage = wait_for_pid(&pid_file);
    let runner = child.id() as i32;
    assert_eq!(
        proc_state(stage).map(|(_, ppid)| ppid),
        Some(runner),
        "the sleeping stage is not the runner's child"
    );
    child.kill().unwrap(); // SIGKILL: the runner gets no chance to clean up
    child.wait().unwrap();
    assert!(
        wait_until_dead(stage),
        "stage process {stage} survived its runner"
    );
    assert!(fx.path("runs/toy/sae/partial.txt").is_file());
    assert!(!fx.path("runs/toy/sae/stage.json").exists());

    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["model", "acts", "sae", "sae", "circuit"]);
    let reference = toy_after_first_run();
    assert_same_files(&stage_outputs(&fx), &stage_outputs(&reference));
}

/// SIGKILLed during a forced re-run, the runner leaves the old output in
/// `.acts.old` and a partial new one; the next run resumes the new one in place,
/// then deletes the old one, and ends like an uninterrupted run.
#[test]
fn killed_forced_rerun_leaves_an_old_folder_that_the_next_run_removes() {
    let fx = toy_after_first_run();
    let pid_file = fx.path("stage.pid");
    let mut child = spawn(
        &fx,
        &["run", TOY, "--force", "acts"],
        &[
            ("CIRCUITRY_FAKE_SLEEP", &format!("acts:{LONG_SLEEP}")),
            ("CIRCUITRY_FAKE_PID_FILE", pid_file.to_str().unwrap()),
        ],
    );
    let stage = wait_for_pid(&pid_file);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_until_dead(stage),
        "stage process {stage} survived its runner"
    );
    assert!(fx.path("runs/toy/.acts.old/stage.json").is_file());
    assert!(!fx.path("runs/toy/acts/stage.json").exists());
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout.contains("acts     stale: no stage.json"),
        "{}",
        plan.stdout
    );

    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["acts", "acts"]);
    assert!(!fx.path("runs/toy/.acts.old").exists());
    let reference = toy_after_first_run();
    assert_same_files(&stage_outputs(&fx), &stage_outputs(&reference));
}

/// A run killed right after moving a completed output aside, before the stage wrote
/// anything: the next run moves it back, and the stage is fresh again.
#[test]
fn output_moved_aside_by_a_killed_run_is_put_back() {
    let fx = toy_after_first_run();
    let before = run_dir_files(&fx);
    fs::rename(fx.path("runs/toy/acts"), fx.path("runs/toy/.acts.old")).unwrap();
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("nothing to run"), "{}", run.stderr);
    assert!(fx.ran().is_empty());
    assert!(run_dir_files(&fx) == before);
}

// ---- items 5 and 7: options checked before anything runs -------------------------

/// Issue 15, items 5 and 7: a stage option its binary rejects passed validation, the
/// earlier stages ran, then the stage failed with exit 1 and no manifest location.
/// Now `--check-only` refuses it first: exit 2, `FILE:LINE:COL: stage NAME: <line>`
/// at the option's value, and nothing runs.
#[test]
fn option_refused_by_check_only_stops_the_run_before_anything_runs() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let (line, column) = toy_position("top_paths");
    let refusal = REFUSAL.strip_prefix("error: ").unwrap();
    let want = format!("error: pipelines/toy.toml:{line}:{column}: stage circuit: {refusal}");
    for args in [
        &["run", TOY][..],
        &["run", TOY, "--dry-run"],
        &["plan", TOY],
    ] {
        let run = fx.circuitry_env(args, &[("CIRCUITRY_FAKE_REJECT", "circuit")]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.starts_with(&want), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{line} | top_paths = 3")),
            "{}",
            run.stderr
        );
        assert!(fx.ran().is_empty(), "{args:?}: a stage ran");
    }
    // The run directory holds the lock file and nothing else.
    let entries: Vec<String> = fs::read_dir(fx.path("runs/toy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, [".lock"]);
}

/// Every stale stage is checked before the first stage starts.
#[test]
fn every_stale_stage_is_checked_before_the_first_one_runs() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let log = fx.path("ran.log");
    let run = fx.circuitry_env(
        &["run", TOY],
        &[("CIRCUITRY_FAKE_CHECK_LOG", log.to_str().unwrap())],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    let mut want: Vec<String> = ALL.iter().map(|s| format!("check {s}")).collect();
    want.extend(ALL.iter().map(|s| s.to_string()));
    assert_eq!(fx.ran(), want);
    let plan = fx.circuitry(&["plan", TOY, "--force", "sae"]);
    assert!(
        plan.stdout
            .contains("    check: circuitry-train-sae: options fine, needs about 1 MB"),
        "{}",
        plan.stdout
    );
}

/// A binary built before `--check-only` existed (clap: "unexpected argument") does
/// not break the pipeline: the stage runs unchecked, and the debug log says so.
#[test]
fn binary_without_check_only_runs_unchecked() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry_env(
        &["run", TOY],
        &[
            ("CIRCUITRY_FAKE_NO_CHECK", "1"),
            ("RUST_LOG", "circuitry_pipeline=debug"),
        ],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ALL);
    assert!(run.stderr.contains("no check available"), "{}", run.stderr);
    let plan = fx.circuitry_env(
        &["plan", TOY, "--force", "sae"],
        &[("CIRCUITRY_FAKE_NO_CHECK", "1")],
    );
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains("check: not available"),
        "{}",
        plan.stdout
    );
}

/// Issue 15, item 7: a stage that refused its options while running (exit 2) was
/// reported as a plain failure (exit 1) without the manifest location. Now it points
/// at the option in the manifest, names the log, and exits 2.
#[test]
fn stage_refusing_its_options_at_run_time_points_at_the_manifest() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let (line, column) = toy_position("top_paths");
    let run = fx.circuitry_env(&["run", TOY], &[("CIRCUITRY_FAKE_REJECT_RUN", "circuit")]);
    assert_eq!(run.code, 2, "{}", run.all());
    let refusal = REFUSAL.strip_prefix("error: ").unwrap();
    let want = format!("error: pipelines/toy.toml:{line}:{column}: stage circuit: {refusal}\n");
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the stage's output is in runs/toy/circuit.log"),
        "{}",
        run.stderr
    );
    assert_eq!(fx.ran(), ALL);
    assert!(!fx.path("runs/toy/circuit/stage.json").exists());
}

// ---- item 7: OS errors named once -------------------------------------------------

/// Issue 15, item 7: OS errors were printed twice ("… (os error 30): … (os error 30)").
#[test]
fn os_error_is_named_once() {
    let fx = Fixture::new();
    fs::write(fx.path("file"), "not a directory").unwrap();
    let text = toy_manifest().replacen("run_dir = \"../runs/toy\"", "run_dir = \"../file/toy\"", 1);
    fx.manifest("toy.toml", &text);
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        run.stderr.trim_end(),
        "error: creating pipelines/../file/toy: Not a directory (os error 20)"
    );
    assert!(fx.ran().is_empty());
}
