//! Checks a stage makes before any long work, in `--check-only` mode and at the
//! start of a run: whether its memory estimate fits the machine, whether its output
//! folder can be written, and how its errors are printed (the cause chain once).
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A stage's memory estimate: named parts, in bytes (saturating sums, so an
/// absurd option gives `u64::MAX`, never an overflow).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// (what, bytes), in the order added.
    pub parts: Vec<(String, u64)>,
}

impl MemoryEstimate {
    /// An empty estimate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `count` values of `bytes_each` bytes for `what` (saturating).
    pub fn add(&mut self, what: impl Into<String>, count: u128, bytes_each: u128) -> &mut Self {
        let bytes = count.saturating_mul(bytes_each);
        self.parts
            .push((what.into(), u64::try_from(bytes).unwrap_or(u64::MAX)));
        self
    }

    /// The sum of the parts, in bytes.
    pub fn total(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |acc, (_, b)| acc.saturating_add(*b))
    }

    /// Refuse the estimate when it exceeds the machine's memory ([`mem_total`]):
    /// [`check_within`](Self::check_within) with [`MemoryLimit::Machine`].
    pub fn check(&self, stage: &str, fix: &str) -> Result<()> {
        self.check_within(stage, fix, MemoryLimit::Machine)
    }

    /// Refuse the estimate when it exceeds `limit`: the error names `stage`, the
    /// estimate with its largest parts, the limit and where it comes from, and
    /// `fix`. Passes when the limit is the machine's and its memory cannot be read.
    pub fn check_within(&self, stage: &str, fix: &str, limit: MemoryLimit) -> Result<()> {
        let (bytes, source) = match limit {
            MemoryLimit::Machine => match mem_total() {
                Some(b) => (b, MACHINE_MEMORY),
                None => return Ok(()),
            },
            MemoryLimit::Given(b) => (b, GIVEN_MEMORY),
        };
        let total = self.total();
        if total <= bytes {
            return Ok(());
        }
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let parts: Vec<String> = parts
            .iter()
            .filter(|p| p.1 > 0)
            .take(4)
            .map(|(w, b)| format!("{w} {}", human_bytes(*b)))
            .collect();
        Err(Error::Preflight(format!(
            "{stage} needs about {} of memory ({}), more than {} {source}; {fix}",
            human_bytes(total),
            parts.join(", "),
            match limit {
                MemoryLimit::Machine => format!("this machine's {}", human_bytes(bytes)),
                MemoryLimit::Given(_) => format!("the memory limit of {}", human_bytes(bytes)),
            }
        )))
    }
}

/// The hidden flag of every stage binary, next to `--check-only`, that gives the
/// memory to compare the estimate with, in bytes, instead of this machine's:
/// `circuitry submit` passes the memory a Slurm job asks for (its `mem`), since the
/// job runs on a compute node, not on the machine that submits it.
pub const MEMORY_LIMIT_FLAG: &str = "--memory-limit";

/// How a refusal names a limit given with [`MEMORY_LIMIT_FLAG`].
pub const GIVEN_MEMORY: &str = "(--memory-limit)";

/// How a refusal names this machine's memory as the limit.
pub const MACHINE_MEMORY: &str = "(MemTotal in /proc/meminfo)";

/// What a [`MemoryEstimate`] is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryLimit {
    /// This machine's memory ([`mem_total`]).
    #[default]
    Machine,
    /// A number of bytes given with [`MEMORY_LIMIT_FLAG`].
    Given(u64),
}

impl MemoryLimit {
    /// [`Given`](Self::Given) when the flag's value `bytes` is set, else [`Machine`](Self::Machine).
    pub fn from_flag(bytes: Option<u64>) -> Self {
        bytes.map_or(MemoryLimit::Machine, MemoryLimit::Given)
    }
}

/// Bytes as `12.3 GiB` (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`); `None` where it
/// cannot be read (not Linux).
pub fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The deepest existing ancestor of `path` (itself when it exists).
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(path)
    };
    abs.ancestors().find(|a| a.exists()).map(Path::to_path_buf)
}

/// Check, writing nothing, that the output folder `dir` (`option` names it, e.g.
/// `--out`) could be created and written: it is a directory or does not exist,
/// and its deepest existing ancestor grants write access (`access(2)`, which also
/// catches read-only file systems and immutable folders).
pub fn check_writable(dir: &Path, option: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Preflight(format!(
            "{option} {} is a file, not a folder; give a folder path",
            dir.display()
        )));
    }
    let Some(base) = existing_ancestor(dir) else {
        return Ok(());
    };
    if !base.is_dir() {
        return Err(Error::Preflight(format!(
            "{option} {}: {} is a file, so the folder cannot be created; give another path",
            dir.display(),
            base.display()
        )));
    }
    match rustix::fs::access(&base, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK) {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::Preflight(format!(
            "{option} {} cannot be written: {} is not writable ({}); choose a writable {option} or fix the folder's permissions",
            dir.display(),
            base.display(),
            std::io::Error::from(e)
        ))),
    }
}

/// `e` and its causes joined by `: `, each text once: a cause whose text is
/// already in the message (an error that prints its source, such as "reading X:
/// Read-only file system (os error 30)") is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_saturates_and_checks() {
        let mut e = MemoryEstimate::new();
        e.add("W_enc", u128::from(u64::MAX), 4).add("b_enc", 10, 4);
        assert_eq!(e.total(), u64::MAX);
        if mem_total().is_some() {
            let msg = e
                .check("test stage", "lower --d-sae")
                .unwrap_err()
                .to_string();
            assert!(msg.contains("test stage needs about"), "{msg}");
            assert!(msg.contains("lower --d-sae"), "{msg}");
        }
        let mut small = MemoryEstimate::new();
        small.add("x", 1, 1);
        small.check("s", "f").unwrap();
    }

    #[test]
    fn a_given_limit_replaces_the_machines_memory() {
        let mut e = MemoryEstimate::new();
        e.add("W_enc", 1 << 30, 4).add("b_enc", 10, 4);
        // 4 GiB + 40 B: over a 4 GiB limit, under an 8 GiB one.
        e.check_within("s", "f", MemoryLimit::Given(8 << 30))
            .unwrap();
        let msg = e
            .check_within("s", "lower --d-sae", MemoryLimit::Given(4 << 30))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("s needs about 4.0 GiB of memory (W_enc 4.0 GiB, b_enc 40 B), more than the memory limit of 4.0 GiB (--memory-limit); lower --d-sae"),
            "{msg}"
        );
        assert_eq!(MemoryLimit::from_flag(None), MemoryLimit::Machine);
        assert_eq!(MemoryLimit::from_flag(Some(5)), MemoryLimit::Given(5));
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16_000_000_000_000), "14.6 TiB");
    }

    #[test]
    fn writable_accepts_a_new_folder_and_refuses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        check_writable(&dir.path().join("a/b"), "--out").unwrap();
        assert!(!dir.path().join("a").exists(), "nothing is created");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let msg = check_writable(&file, "--out").unwrap_err().to_string();
        assert!(msg.contains("is a file"), "{msg}");
        let msg = check_writable(&file.join("sub"), "--out")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is a file"), "{msg}");
    }

    #[test]
    fn error_chain_prints_each_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "writing /x: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::from_raw_os_error(30));
        let text = error_chain(&e);
        assert_eq!(text.matches("os error 30").count(), 1, "{text}");
    }
}
