//! Crash safety: incomplete stores, resume, spec mismatches.
use std::fs;
use std::path::Path;

use circuitry_store::{ActivationStore, Dtype, Error, StoreWriter};

use crate::common::*;

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn resume_after_crash_equals_uninterrupted_write() {
    let d = data(130, 5);
    let spec = spec(Dtype::F16, true, 25);
    let full = tempfile::tempdir().unwrap();
    write_store(full.path(), spec.clone(), &d, 9);

    // A run that dies after 80 rows: 3 complete shards (75 rows), 5 rows buffered.
    let crashed = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(crashed.path(), spec.clone()).unwrap();
    write_rows(&mut w, &d, true, 0..80, 9);
    assert_eq!(w.rows_done(), 75);
    assert_eq!(w.rows_written(), 80);
    drop(w);
    // What a crash can leave: a half-written temporary shard, and a shard renamed
    // into place just before meta.json would have listed it.
    fs::write(
        crashed.path().join(".shard_00003.parquet.tmp-4242"),
        b"partial",
    )
    .unwrap();
    fs::write(crashed.path().join("shard_00003.parquet"), b"unrecorded").unwrap();

    let err = ActivationStore::open(crashed.path()).unwrap_err();
    assert!(matches!(
        err,
        Error::Incomplete {
            n_rows: 75,
            n_shards: 3,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("incomplete") && msg.contains("re-run the dump"),
        "{msg}"
    );
    assert!(!StoreWriter::is_complete(crashed.path(), &spec).unwrap());
    // Not finished: what a stage downstream of the dump treats as not produced yet
    // (as when there is no store at all).
    assert!(ActivationStore::open_if_finished(crashed.path())
        .unwrap()
        .is_none());
    let empty = tempfile::tempdir().unwrap();
    assert!(ActivationStore::open_if_finished(empty.path())
        .unwrap()
        .is_none());

    // Resume with new provenance (extra is not part of the dataset's identity)
    // and another batch size; the caller skips rows_done() input rows.
    let mut resumed_spec = spec.clone();
    resumed_spec.extra = serde_json::json!({ "corpus": "test", "resumed": true });
    let mut w = StoreWriter::create(crashed.path(), resumed_spec).unwrap();
    assert_eq!(w.rows_done(), 75);
    let skip = w.rows_done() as usize;
    write_rows(&mut w, &d, true, skip..130, 11);
    let meta = w.finish().unwrap();
    assert_eq!(meta.extra["resumed"], true);

    assert_eq!(files(crashed.path()), files(full.path()));
    let full_meta = ActivationStore::open(full.path()).unwrap().meta().clone();
    assert_eq!(
        meta.shards, full_meta.shards,
        "same rows and checksums per shard"
    );
    for s in &meta.shards {
        let a = fs::read(full.path().join(&s.file)).unwrap();
        let b = fs::read(crashed.path().join(&s.file)).unwrap();
        assert!(
            a == b,
            "{} differs between resumed and uninterrupted runs",
            s.file
        );
    }
    let store = ActivationStore::open(crashed.path()).unwrap();
    assert_eq!(store.read_tokens().unwrap().seq, d.seq);
    let finished = ActivationStore::open_if_finished(crashed.path()).unwrap();
    assert_eq!(finished.map(|s| s.n_rows()), Some(130));

    // A finished store is reported complete, and a writer will not reopen it.
    assert!(StoreWriter::is_complete(crashed.path(), &spec).unwrap());
    let err = StoreWriter::create(crashed.path(), spec).unwrap_err();
    assert!(
        matches!(err, Error::AlreadyComplete { n_rows: 130, .. }),
        "{err}"
    );
}

#[test]
fn resume_refuses_a_damaged_shard() {
    let d = data(60, 6);
    let spec = spec(Dtype::F32, false, 20);
    let dir = tempfile::tempdir().unwrap();
    let mut w = StoreWriter::create(dir.path(), spec.clone()).unwrap();
    write_rows(&mut w, &d, false, 0..45, 45);
    drop(w);
    let shard = dir.path().join("shard_00001.parquet");
    let mut bytes = fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    fs::write(&shard, bytes).unwrap();
    let err = StoreWriter::create(dir.path(), spec).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("shard_00001.parquet") && msg.contains("delete"),
        "{msg}"
    );
}

#[test]
fn spec_mismatch_names_the_fields_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(Dtype::F32, false, 20);
    let mut w = StoreWriter::create(dir.path(), spec.clone()).unwrap();
    write_rows(&mut w, &data(30, 7), false, 0..30, 30);
    drop(w);

    let mut other = spec.clone();
    other.dtype = Dtype::F16;
    other.model_fingerprint = "model-xyz".into();
    let err = StoreWriter::create(dir.path(), other.clone()).unwrap_err();
    assert!(matches!(err, Error::SpecMismatch { .. }));
    let msg = err.to_string();
    for part in [
        "holds a different activation dataset",
        "dtype: f32 vs f16",
        "model_fingerprint: model-abc vs model-xyz",
        "delete it or choose another --out",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert!(StoreWriter::is_complete(dir.path(), &other).is_err());

    let mut other = spec.clone();
    other.hooks.pop();
    let msg = StoreWriter::create(dir.path(), other)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("hooks: blocks.0.hook_resid_pre[8], blocks.1.hook_mlp_out[5] vs blocks.0.hook_resid_pre[8]"), "{msg}");

    // The refused writers changed nothing: the original spec still resumes.
    assert_eq!(
        StoreWriter::create(dir.path(), spec).unwrap().rows_done(),
        20
    );
}

#[test]
fn non_store_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = StoreWriter::create(dir.path(), spec(Dtype::F32, false, 4)).unwrap_err();
    assert!(matches!(err, Error::DirNotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("choose another --out"));
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    assert!(
        fs::read_dir(dir.path()).unwrap().count() == 1,
        "nothing written"
    );
}

#[test]
fn meta_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    StoreWriter::create(dir.path(), spec(Dtype::F32, false, 4))
        .unwrap()
        .finish()
        .unwrap();
    let path = dir.path().join("meta.json");
    let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    meta["schema_version"] = 99.into();
    fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let err = ActivationStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::SchemaVersion { found: 99, .. }),
        "{err}"
    );
}
