//! One writer per run directory: `circuitry run` and `circuitry submit` hold an
//! exclusive `flock` on `RUN_DIR/.lock` for as long as they run.
//!
//! The lock belongs to the open file description, so the kernel releases it when the
//! holding process ends, however it ends (a SIGKILL included): a stale lock cannot
//! exist, and no pid has to be checked for liveness. The file itself stays; its
//! content (pid, host, start time, command) only serves the message a second run
//! prints. The descriptor is opened close-on-exec, so stage processes do not inherit
//! (and keep) the lock.
//!
//! `flock` is local to one kernel: on a network file system shared by several hosts
//! (NFS), two hosts may each get the lock. Run one pipeline per run directory per
//! cluster, or keep run directories on a local disk.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{flock, FlockOperation};

use crate::{Error, Result};

/// The lock file's name inside the run directory.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive lock on a run directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunDirLock {
    // Never read: holding the open file holds the lock.
    _file: File,
}

impl RunDirLock {
    /// Create `run_dir` if needed and lock `run_dir/.lock` without waiting. `shown`
    /// is the run directory as messages name it; `command` (e.g. `circuitry run`) is
    /// recorded for the message another process prints.
    ///
    /// Fails with [`Error::Locked`] when another process holds the lock.
    pub fn acquire(run_dir: &Path, shown: &Path, command: &str) -> Result<RunDirLock> {
        std::fs::create_dir_all(run_dir).map_err(|e| Error::io("creating", run_dir, e))?;
        let path = run_dir.join(LOCK_FILE);
        // No truncation before the lock is ours: the holder's record must survive
        // for the message.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Locked {
                    run_dir: shown.to_path_buf(),
                    holder: describe_holder(&read_record(&mut file)),
                });
            }
            Err(e) => return Err(Error::io("locking", &path, io::Error::from(e))),
        }
        let record = format!(
            "pid {} on {} since {} ({command})\n",
            std::process::id(),
            host_name(),
            utc_time(now_unix())
        );
        let write = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(record.as_bytes())?;
            file.flush()
        };
        write(&mut file).map_err(|e| Error::io("writing", &path, e))?;
        Ok(RunDirLock { _file: file })
    }
}

impl Drop for RunDirLock {
    /// Clear the record, so that it never names a process that has finished (after a
    /// crash it does until the next holder overwrites it).
    fn drop(&mut self) {
        let _ = self._file.set_len(0);
    }
}

/// The holder's record. A holder writes it right after taking the lock: an empty
/// file is read again for up to 200 ms before giving up.
fn read_record(file: &mut File) -> String {
    let mut record = String::new();
    for _ in 0..40 {
        record.clear();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut record).is_ok() {
            let trimmed = record.trim();
            if !trimmed.is_empty() {
                return trimmed.to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    String::new()
}

fn describe_holder(record: &str) -> String {
    if record.is_empty() {
        "another process that is just starting".into()
    } else {
        record.lines().next().unwrap_or(record).to_string()
    }
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch.
pub(crate) fn utc_time(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        // date -u -d @1796459400
        assert_eq!(utc_time(1_796_459_400), "2026-12-05 08:30:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn second_lock_in_the_same_process_is_refused_then_granted_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunDirLock::acquire(dir.path(), Path::new("runs/x"), "circuitry run").unwrap();
        let err = RunDirLock::acquire(dir.path(), Path::new("runs/x"), "circuitry run")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("runs/x"), "{err}");
        drop(first);
        RunDirLock::acquire(dir.path(), Path::new("runs/x"), "circuitry run").unwrap();
    }
}
