//! A stage's output folder across a re-run: whole old or whole new, never a mix.
//!
//! Before a stage runs, a completed output (its folder holds `stage.json`) is moved
//! aside to `RUN_DIR/.<stage>.old` and the stage runs into a fresh `RUN_DIR/<stage>`
//! (the recorded argv still names `--out RUN_DIR/<stage>`). On success the old folder
//! is deleted; on failure the new folder is deleted and the old one moved back. An
//! output without `stage.json` (an interrupted run) is left in place so the stage
//! resumes (the dump after its last complete shard, the trainer from its checkpoint).
//!
//! Renames within one directory are atomic, so at every instant the stage's folder is
//! either the old whole output, absent, or the new output in progress (which has no
//! `stage.json` until the binary writes it last). If the runner dies without a chance
//! to clean up (SIGKILL), [`recover_leftovers`] at the next run moves an old folder
//! back when the stage's folder is absent, and otherwise the old folder is deleted
//! once its stage has been handled.
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use circuitry_core::STAGE_RECORD_FILE;

use crate::{Error, Pipeline, Result};

/// How a stage's output folder was prepared for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// No completed output: the stage runs in place (and resumes what is there).
    InPlace,
    /// The completed output was moved to `old`; the stage runs into a fresh folder.
    MovedAside {
        /// `RUN_DIR/.<stage>.old`.
        old: PathBuf,
    },
}

/// `RUN_DIR/.<stage>.old` for the output folder `RUN_DIR/<stage>`.
pub(crate) fn old_dir(out_dir: &Path) -> PathBuf {
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out_dir.with_file_name(format!(".{name}.old"))
}

/// Whether `dir` holds a completed stage output.
pub(crate) fn is_complete(dir: &Path) -> bool {
    dir.join(STAGE_RECORD_FILE).is_file()
}

/// Make way for a run of the stage whose output folder is `out_dir`.
pub(crate) fn prepare(out_dir: &Path) -> Result<Prepared> {
    if !is_complete(out_dir) {
        return Ok(Prepared::InPlace);
    }
    let old = old_dir(out_dir);
    // A leftover from a crash: the folder being replaced is whole and newer.
    remove_dir(&old)?;
    fs::rename(out_dir, &old).map_err(|e| Error::io("moving aside", out_dir, e))?;
    Ok(Prepared::MovedAside { old })
}

/// The stage succeeded: delete the old output (or a leftover of an earlier crash).
pub(crate) fn commit(out_dir: &Path) -> Result<()> {
    remove_dir(&old_dir(out_dir))
}

/// The stage failed or was stopped: put the old output back, if there was one.
pub(crate) fn roll_back(out_dir: &Path, prepared: &Prepared) -> Result<()> {
    if let Prepared::MovedAside { old } = prepared {
        remove_dir(out_dir)?;
        fs::rename(old, out_dir).map_err(|e| Error::io("restoring", out_dir, e))?;
    }
    Ok(())
}

/// After a crash of an earlier run: move `.<stage>.old` back where the stage's folder
/// is absent (the run died between moving it aside and the stage starting to write).
/// Old folders beside a partial output stay until their stage completes
/// ([`commit`]); beside a complete one they are deleted when it is next handled.
pub(crate) fn recover_leftovers(pipeline: &Pipeline) -> Result<()> {
    for stage in pipeline.stages() {
        let out_dir = pipeline.resolve(&pipeline.stage_dir(stage));
        let old = old_dir(&out_dir);
        if old.is_dir() && !out_dir.exists() {
            fs::rename(&old, &out_dir).map_err(|e| Error::io("restoring", &out_dir, e))?;
            tracing::info!(
                stage = stage.name(),
                "restored the output a crashed run had moved aside"
            );
        }
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io("removing", dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn old_dir_is_a_hidden_sibling() {
        assert_eq!(
            old_dir(Path::new("runs/toy/acts")),
            PathBuf::from("runs/toy/.acts.old")
        );
    }

    #[test]
    fn complete_output_is_moved_aside_and_restored_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("acts");
        write(&out, "stage.json", "{}");
        write(&out, "shard.parquet", "old");
        let prepared = prepare(&out).unwrap();
        assert!(!out.exists());
        write(&out, "shard.parquet", "half new");
        roll_back(&out, &prepared).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("shard.parquet")).unwrap(),
            "old"
        );
        assert!(out.join("stage.json").is_file());
        assert!(!old_dir(&out).exists());
    }

    #[test]
    fn partial_output_runs_in_place_and_commit_removes_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("acts");
        write(&out, "shard.parquet", "partial");
        write(&old_dir(&out), "stage.json", "{}");
        assert_eq!(prepare(&out).unwrap(), Prepared::InPlace);
        assert!(out.join("shard.parquet").is_file());
        roll_back(&out, &Prepared::InPlace).unwrap();
        assert!(out.join("shard.parquet").is_file());
        commit(&out).unwrap();
        assert!(!old_dir(&out).exists());
    }
}
