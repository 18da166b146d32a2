//! A temporary project directory with fake stage binaries, and a way to run
//! `circuitry` in it.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The stage binaries the kinds run.
pub const PROGRAMS: &[&str] = &[
    "circuitry-train-toy",
    "circuitry-dump",
    "circuitry-train-sae",
    "circuitry-circuit",
];

/// The shipped toy manifest.
pub fn toy_manifest() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/toy.toml");
    fs::read_to_string(&path).unwrap()
}

/// A temporary directory holding `bin/` (fake stage binaries), `pipelines/` and,
/// once run, `runs/`.
pub struct Fixture {
    pub dir: TempDir,
}

/// The result of one `circuitry` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Both streams, for assertions that do not care which.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Fixture {
    /// A fixture whose `bin/` holds a fake for every stage binary.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Fixture { dir };
        fs::create_dir(fixture.bin()).unwrap();
        fs::create_dir(fixture.path("pipelines")).unwrap();
        for program in PROGRAMS {
            fixture.install_fake(program);
        }
        fixture
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn bin(&self) -> PathBuf {
        self.path("bin")
    }

    /// Put a fake `program` into `bin/`: a script that re-runs this test binary as
    /// the fake stage.
    pub fn install_fake(&self, program: &str) {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().unwrap();
        let script = format!(
            "#!/bin/sh\nCIRCUITRY_FAKE_TOOL={program} exec '{}' fake_stage::fake_stage_entry \
             --exact --nocapture --quiet --test-threads=1 -- \"$@\"\n",
            exe.display()
        );
        let path = self.bin().join(program);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Write `pipelines/NAME` and return its path relative to the fixture.
    pub fn manifest(&self, name: &str, text: &str) -> String {
        let rel = format!("pipelines/{name}");
        fs::write(self.path(&rel), text).unwrap();
        rel
    }

    /// Run `circuitry ARGS` in the fixture's directory with extra environment.
    pub fn circuitry_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(args, env).output().unwrap())
    }

    /// The command `circuitry ARGS` in the fixture's directory, with extra
    /// environment, to be spawned.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_circuitry"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CIRCUITRY_BIN_DIR", self.bin())
            .env("CIRCUITRY_FAKE_LOG", self.path("ran.log"))
            .env_remove("CIRCUITRY_FAKE_FAIL")
            .env_remove("CIRCUITRY_FAKE_SALT")
            .env_remove("CIRCUITRY_FAKE_NO_RECORD")
            .env_remove("CIRCUITRY_FAKE_NO_CHECK")
            .env_remove("CIRCUITRY_FAKE_REJECT")
            .env_remove("CIRCUITRY_FAKE_REJECT_RUN")
            .env_remove("CIRCUITRY_FAKE_SLEEP")
            .env_remove("CIRCUITRY_FAKE_PID_FILE")
            .env_remove("CIRCUITRY_FAKE_CHECK_LOG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Run `circuitry ARGS` in the fixture's directory.
    pub fn circuitry(&self, args: &[&str]) -> Run {
        self.circuitry_env(args, &[])
    }

    /// The stages the fake binaries ran since the last call, in order.
    pub fn ran(&self) -> Vec<String> {
        let log = self.path("ran.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text.lines().map(String::from).collect()
    }
}

/// Every file under `dir` (relative path, bytes), sorted.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files
}
