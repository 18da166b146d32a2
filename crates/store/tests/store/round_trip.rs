//! Written rows read back: exactly for f32, to half precision for f16; column
//! projection; the Parquet layout.
use std::fs;

use circuitry_store::{ActivationStore, Dtype, Error, StoreWriter, META_FILE};
use half::f16;
use ndarray::Array2;
use parquet::basic::{Compression, Encoding};
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::common::*;

#[test]
fn f32_paired_round_trip_is_exact_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(103, 1);
    write_store(dir.path(), spec(Dtype::F32, true, 20), &d, 7);

    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(store.n_rows(), 103);
    let rows: Vec<u64> = store.meta().shards.iter().map(|s| s.rows).collect();
    assert_eq!(rows, vec![20, 20, 20, 20, 20, 3]);
    assert_eq!(store.read_hook(A).unwrap(), d.a);
    assert_eq!(store.read_hook(B).unwrap(), d.b);
    assert_eq!(store.hook_width(B).unwrap(), WIDTH_B);

    let tokens = store.read_tokens().unwrap();
    assert_eq!(tokens.seq, d.seq);
    assert_eq!(tokens.pos, d.pos);
    assert_eq!(tokens.token_id, d.token_id);
    assert_eq!(tokens.example.as_ref(), Some(&d.example));
    assert_eq!(tokens.side.as_ref(), Some(&d.side));

    // Shard-by-shard streams, two hooks from one read of each shard.
    let mut start = 0;
    for (i, item) in store.multi_hook_batches(&[B, A]).unwrap().enumerate() {
        let arrays = item.unwrap();
        let n = rows[i] as usize;
        assert_eq!(arrays[0], d.b.slice(ndarray::s![start..start + n, ..]));
        assert_eq!(arrays[1], d.a.slice(ndarray::s![start..start + n, ..]));
        start += n;
    }
    assert_eq!(start, 103);
    let per_shard: Vec<usize> = store
        .hook_batches(A)
        .unwrap()
        .map(|b| b.unwrap().nrows())
        .collect();
    assert_eq!(per_shard, vec![20, 20, 20, 20, 20, 3]);

    // Only meta.json and the shards are left; no temporary files.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..6).map(|i| format!("shard_{i:05}.parquet")).collect();
    want.push(META_FILE.into());
    want.sort();
    assert_eq!(names, want);
    store.verify().unwrap();
}

#[test]
fn f16_round_trip_is_within_half_precision() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(50, 2);
    write_store(dir.path(), spec(Dtype::F16, false, 16), &d, 50);

    let store = ActivationStore::open(dir.path()).unwrap();
    assert!(store.read_tokens().unwrap().side.is_none());
    for (hook, want) in [(A, &d.a), (B, &d.b)] {
        let got = store.read_hook(hook).unwrap();
        let rounded = want.mapv(|x| f16::from_f32(x).to_f32());
        assert_eq!(got, rounded, "{hook}: reads give exactly the f16 rounding");
        let max_rel = got
            .iter()
            .zip(want.iter())
            .map(|(g, w)| ((g - w) / w).abs())
            .fold(0.0, f32::max);
        println!(
            "{hook}: max relative error {max_rel:e} (bound 2^-11 = {:e})",
            2f32.powi(-11)
        );
        assert!(max_rel <= 2f32.powi(-11), "{hook}: {max_rel}");
    }
}

#[test]
fn empty_store_reads_as_zero_rows() {
    let dir = tempfile::tempdir().unwrap();
    let meta = StoreWriter::create(dir.path(), spec(Dtype::F32, false, 4))
        .unwrap()
        .finish()
        .unwrap();
    assert!(meta.complete && meta.shards.is_empty());
    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(
        store.read_hook(A).unwrap(),
        Array2::<f32>::zeros((0, WIDTH_A))
    );
    assert_eq!(store.hook_batches(A).unwrap().count(), 0);
}

#[test]
fn read_hook_reads_only_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(40, 3);
    write_store(dir.path(), spec(Dtype::F32, false, 40), &d, 40);
    let shard = dir.path().join("shard_00000.parquet");

    // Overwrite the bytes of hook B's column chunk with garbage.
    let reader = SerializedFileReader::new(fs::File::open(&shard).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    let b_index = (0..rg.num_columns())
        .find(|&i| {
            rg.column(i)
                .column_path()
                .string()
                .starts_with(&B.to_string())
        })
        .unwrap();
    let (start, len) = rg.column(b_index).byte_range();
    drop(reader);
    let mut bytes = fs::read(&shard).unwrap();
    for byte in &mut bytes[start as usize..(start + len) as usize] {
        *byte = 0xAB;
    }
    fs::write(&shard, bytes).unwrap();

    // Every read checks the whole shard's checksum first: neither hook is decoded.
    let store = ActivationStore::open(dir.path()).unwrap();
    for hook in [A, B] {
        let err = store.read_hook(hook).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
    }
    assert!(matches!(store.verify(), Err(Error::Checksum { .. })));

    // With the damaged shard's checksum recorded (as a foreign tool rewriting it
    // would), A's projection decodes none of B's bytes.
    let sum = circuitry_core::fingerprint::fingerprint_path(&shard).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(META_FILE)).unwrap()).unwrap();
    meta["shards"][0]["checksum"] = serde_json::Value::String(sum);
    fs::write(
        dir.path().join(META_FILE),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let store = ActivationStore::open(dir.path()).unwrap();
    assert_eq!(
        store.read_hook(A).unwrap(),
        d.a,
        "A never touches B's bytes"
    );
    assert!(store.read_hook(B).is_err(), "B's bytes are garbage");
}

/// Issue 15: flipping 4 bytes inside a shard's hook data changed 693 values and was
/// read without a word. Every read path (whole hook, streams, one shard's hooks,
/// tokens) now refuses the shard, naming it and both checksums, and the fix.
#[test]
fn every_read_of_a_changed_shard_is_refused_with_both_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(60, 4);
    write_store(dir.path(), spec(Dtype::F32, true, 20), &d, 60);
    let shard = dir.path().join("shard_00001.parquet");
    let mut bytes = fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0xff;
    }
    fs::write(&shard, &bytes).unwrap();
    let found = circuitry_core::fingerprint::fingerprint_path(&shard).unwrap();
    let store = ActivationStore::open(dir.path()).unwrap();
    let expected = store.meta().shards[1].checksum.clone();
    let errors = [
        store.read_hook(A).unwrap_err(),
        store
            .hook_batches(B)
            .unwrap()
            .find_map(|b| b.err())
            .unwrap(),
        store
            .multi_hook_batches(&[A, B])
            .unwrap()
            .nth(1)
            .unwrap()
            .unwrap_err(),
        store.read_shard_hooks(1, &[A]).unwrap_err(),
        store.read_shard_tokens(1).unwrap_err(),
        store.read_tokens().unwrap_err(),
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(matches!(err, Error::Checksum { .. }), "{msg}");
        for needle in [
            "shard_00001.parquet",
            &expected,
            &found,
            "--force",
            "re-run the dump",
        ] {
            assert!(msg.contains(needle), "expected {needle:?} in {msg}");
        }
    }
    // The shards before it still read.
    assert!(store.read_shard_hooks(0, &[A]).is_ok());
    assert!(store.read_shard_tokens(2).is_ok());
}

#[test]
fn activation_columns_use_zstd_and_byte_stream_split() {
    for dtype in [Dtype::F32, Dtype::F16] {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), spec(dtype, false, 64), &data(64, 4), 64);
        let file = fs::File::open(dir.path().join("shard_00000.parquet")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let rg = reader.metadata().row_group(0);
        assert_eq!(reader.metadata().num_row_groups(), 1);
        for i in 0..rg.num_columns() {
            let col = rg.column(i);
            let path = col.column_path().string();
            assert!(
                matches!(col.compression(), Compression::ZSTD(_)),
                "{path}: {:?}",
                col.compression()
            );
            let bss = col.encodings().any(|e| e == Encoding::BYTE_STREAM_SPLIT);
            let is_hook = path.starts_with("blocks.");
            assert_eq!(
                bss,
                is_hook,
                "{dtype} {path}: encodings {:?}",
                col.encodings().collect::<Vec<_>>()
            );
            if is_hook {
                assert!(path.ends_with(".list.item"), "{path}");
            }
        }
    }
}
