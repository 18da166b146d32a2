//! Content fingerprints (BLAKE3, hex) of files and directory trees.
//!
//! A directory's fingerprint covers the relative path and content of every regular
//! file below it, in sorted order, except `stage.json` (which holds timings) and
//! temporary files of in-progress writes.
use std::fs::{self, File};
use std::io;
use std::path::Path;

use crate::{atomic::is_temp_name, Error, Result, STAGE_RECORD_FILE};

/// The BLAKE3 fingerprint (64 hex digits) of a file or directory tree.
pub fn fingerprint_path(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if meta.is_file() {
        return hash_file(path).map(|h| h.to_hex().to_string());
    }
    let mut files = Vec::new();
    collect_files(path, path, &mut files)?;
    files.sort();
    let mut hasher = blake3::Hasher::new();
    for rel in &files {
        let h = hash_file(&path.join(rel))?;
        hasher.update(rel.as_bytes());
        hasher.update(&[0]);
        hasher.update(h.as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The BLAKE3 fingerprint of a byte string.
pub fn fingerprint_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    io::copy(&mut file, &mut hasher).map_err(|e| Error::io("reading", path, e))?;
    Ok(hasher.finalize())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) || (dir == root && name == STAGE_RECORD_FILE) {
            continue;
        }
        let path = entry.path();
        let ty = entry
            .file_type()
            .map_err(|e| Error::io("reading", &path, e))?;
        if ty.is_dir() {
            collect_files(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_fingerprint_tracks_content_not_stage_record() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), "one").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b.txt"), "two").unwrap();
        let first = fingerprint_path(dir.path()).unwrap();
        fs::write(dir.path().join(STAGE_RECORD_FILE), "{}").unwrap();
        fs::write(dir.path().join(".a.txt.tmp-1"), "junk").unwrap();
        assert_eq!(fingerprint_path(dir.path()).unwrap(), first);
        fs::write(dir.path().join("sub/b.txt"), "three").unwrap();
        assert_ne!(fingerprint_path(dir.path()).unwrap(), first);
    }
}
