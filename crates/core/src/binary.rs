//! The shape every circuitry binary shares: logging set up the same way, an error
//! printed as one line with its cause chain (each cause once), and the exit code.
//!
//! A `main` reads what it needs from the environment (`RUST_LOG` here) and passes it
//! in; nothing in the libraries reads environment variables.
//!
//! ```no_run
//! use std::process::ExitCode;
//! fn run() -> anyhow::Result<()> { Ok(()) }
//! fn main() -> ExitCode {
//!     let rust_log: Option<String> = None; // a real main passes $RUST_LOG's value
//!     circuitry_core::binary::init_logging(rust_log.as_deref(), "warn");
//!     circuitry_core::binary::exit(run())
//! }
//! ```
use std::error::Error;
use std::process::ExitCode;

use crate::preflight::error_chain;

/// The exit code of a stage binary that stopped on an error (bad input, a failed
/// check or step). (`circuitry` tells more cases apart and passes its own code to
/// [`fail`].)
pub const EXIT_FAILURE: u8 = 2;

/// Log to stderr with `tracing`, filtered by `rust_log` (the value of `RUST_LOG`, in
/// `tracing_subscriber`'s `EnvFilter` syntax) when given and valid, else by
/// `default` (e.g. `"warn"`).
pub fn init_logging(rust_log: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = rust_log
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Print `error` on stderr as one line, `error: ` and its cause chain with each text
/// once ([`error_chain`]: no repeated OS error), and return `code` as the exit code.
pub fn fail(error: &(dyn Error + 'static), code: u8) -> ExitCode {
    eprintln!("error: {}", error_chain(error));
    ExitCode::from(code)
}

/// The exit code of a `main` whose work returned `result`: success, or the error
/// printed by [`fail`] and [`EXIT_FAILURE`].
pub fn exit<E>(result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref(), EXIT_FAILURE),
    }
}
