//! Stage processes and the runner's life: children die with the runner, and a runner
//! asked to stop (SIGINT, SIGTERM, SIGHUP) stops its stage and cleans up first.
//!
//! - Every stage process gets `PR_SET_PDEATHSIG = SIGKILL`: when the runner dies, even
//!   by SIGKILL, the kernel kills its stage process, so no orphan keeps writing beside
//!   the next run. The runner could die between `fork` and the `prctl`; the child then
//!   checks that its parent is still the runner and refuses to start otherwise. (The
//!   signal comes when the *thread* that started the child ends; the runner starts
//!   and waits for each stage on one thread, which outlives the stage.)
//! - [`catch_stop_signals`] (called by the `circuitry` binary) replaces the default
//!   "terminate" of SIGINT, SIGTERM and SIGHUP by a handler that records the signal
//!   and forwards SIGTERM to the running stage process. The runner then sees the stage
//!   end, restores the stage's previous output and stops with [`Error::Interrupted`](crate::Error::Interrupted).
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{getpid, getppid, set_parent_process_death_signal, Signal};

use crate::StageCommand;

/// The signal caught, 0 while none was.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The pid of the running stage process, 0 while none runs.
static CHILD: AtomicI32 = AtomicI32::new(0);

/// A command for a stage process: `binary args...` in `command.cwd`, killed by the
/// kernel when the runner dies.
pub(crate) fn stage_process(binary: &Path, command: &StageCommand) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(&command.args).current_dir(&command.cwd);
    let runner = getpid();
    // SAFETY: the closure runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes two raw system calls through rustix
    // (prctl and getppid), which neither allocate nor take locks, and builds an
    // io::Error from a raw errno only on the error path (no allocation either).
    unsafe {
        cmd.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The runner may have died before the prctl: then we were re-parented
            // and no signal will come. Do not start an orphan.
            if getppid() != Some(runner) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

/// Catch SIGINT, SIGTERM and SIGHUP for the rest of the process's life: record the
/// signal ([`caught`]) and send SIGTERM to the running stage process, if any.
pub fn catch_stop_signals() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the
        // handler only touches atomics and calls kill(2), both async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

extern "C" fn on_stop_signal(signal: libc::c_int) {
    CAUGHT.store(signal, Ordering::SeqCst);
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe; a pid that already exited is harmless
        // (the runner has not reaped it yet, so it cannot have been reused).
        unsafe {
            libc::kill(child, libc::SIGTERM);
        }
    }
}

/// The stop signal caught so far, if any.
pub(crate) fn caught() -> Option<i32> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Registers the running stage process for signal forwarding while alive.
pub(crate) struct RunningChild;

impl RunningChild {
    /// Forward stop signals to `pid` until the guard is dropped (drop it after
    /// reaping the process, so the pid cannot be reused meanwhile).
    pub(crate) fn register(pid: u32) -> RunningChild {
        let pid = i32::try_from(pid).unwrap_or(0);
        CHILD.store(pid, Ordering::SeqCst);
        // A signal caught just before the store was not forwarded.
        if caught().is_some() && pid > 0 {
            // SAFETY: plain kill(2) of our own, not yet reaped child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        RunningChild
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        CHILD.store(0, Ordering::SeqCst);
    }
}

/// The conventional name of a signal number, for messages.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
