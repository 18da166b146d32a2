//! What to run for one stage, independent of how it is run (a local process now, a
//! Slurm job later).
use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

/// A stage's command: the binary, its arguments, and the directory to run it in
/// (the manifest's directory; paths in `args` are relative to it unless absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageCommand {
    /// The binary's name, e.g. `circuitry-train-sae`.
    pub program: String,
    /// The arguments after the program name; `stage.json` records exactly these.
    pub args: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
}

impl fmt::Display for StageCommand {
    /// A shell line that runs the command by hand: `cd DIR && program args...`,
    /// every word quoted where the shell would otherwise interpret it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cwd = self.cwd.to_string_lossy();
        if cwd != "." {
            write!(f, "cd {} && ", shell_quote(&cwd))?;
        }
        f.write_str(&shell_quote(&self.program))?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(arg))?;
        }
        Ok(())
    }
}

/// Quote `word` for a POSIX shell: unchanged when it holds only safe characters,
/// otherwise in single quotes with each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("../runs/toy/sae"), "../runs/toy/sae");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn displays_a_runnable_line() {
        let cmd = StageCommand {
            program: "circuitry-dump".into(),
            args: vec!["toy".into(), "--out".into(), "../runs/my run".into()],
            cwd: "pipelines".into(),
        };
        assert_eq!(
            cmd.to_string(),
            "cd pipelines && circuitry-dump toy --out '../runs/my run'"
        );
    }
}
