//! What verifying shard checksums costs a reader: one hook of a store read in full
//! (a) through `ActivationStore::hook_batches`, which hashes each shard's bytes as it
//! reads them, (b) as the reader did before verification (the hook's column chunks
//! projected straight from the file, decoded, not copied out: a lower bound of the
//! old path), and (c) BLAKE3 alone over every shard file. Medians of REPS passes,
//! after one warm-up pass (the files in the page cache, as in training's repeated
//! passes). Results: docs/benchmarks/store-checksums.md.
//!
//! `cargo run --release -p circuitry-store --example read_checksum_cost -- STORE HOOK [REPS=7]`
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use circuitry_core::HookPoint;
use circuitry_store::ActivationStore;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The pre-verification read: only `hook`'s column chunks, from the file.
fn unverified_pass(
    store: &ActivationStore,
    hook: &str,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut values = 0;
    for path in store.shard_paths() {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path)?)?;
        let root = builder
            .schema()
            .fields()
            .iter()
            .position(|f| f.name() == hook)
            .ok_or("hook not in the shard")?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
        for batch in builder
            .with_projection(mask)
            .with_batch_size(1 << 20)
            .build()?
        {
            values += batch?.num_rows();
        }
    }
    Ok(values)
}

fn hash_pass(paths: &[std::path::PathBuf]) -> Result<u64, Box<dyn std::error::Error>> {
    let mut bytes = 0;
    for p in paths {
        let mut h = blake3::Hasher::new();
        bytes += std::io::copy(&mut File::open(p)?, &mut h)?;
        std::hint::black_box(h.finalize());
    }
    Ok(bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: read_checksum_cost STORE HOOK [REPS=7]";
    let dir = args.get(1).ok_or(usage)?;
    let hook_name = args.get(2).ok_or(usage)?;
    let reps: usize = args.get(3).map_or(Ok(7), |r| r.parse())?;
    let hook: HookPoint = hook_name.parse()?;
    let store = ActivationStore::open(Path::new(dir))?;
    let paths = store.shard_paths();
    let (mut verified, mut plain, mut hashed) = (Vec::new(), Vec::new(), Vec::new());
    let mut file_bytes = 0;
    for rep in 0..=reps {
        let t = Instant::now();
        let rows: usize = store
            .hook_batches(hook)?
            .map(|b| b.map(|b| b.nrows()))
            .sum::<Result<_, _>>()?;
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rows_plain = unverified_pass(&store, hook_name)?;
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        file_bytes = hash_pass(&paths)?;
        let c = t.elapsed().as_secs_f64();
        assert_eq!(rows, rows_plain);
        if rep > 0 {
            verified.push(a);
            plain.push(b);
            hashed.push(c);
        }
    }
    let (a, b, c) = (median(verified), median(plain), median(hashed));
    println!(
        "store {dir}: {} rows, {} shards, {:.1} MB of shard files, hook {hook} (width {})",
        store.n_rows(),
        paths.len(),
        file_bytes as f64 / 1e6,
        store.hook_width(hook)?
    );
    println!("median of {reps} passes (s): verified read {a:.4}, unverified read {b:.4}, BLAKE3 alone {c:.4}");
    println!(
        "verification adds {:.4} s per pass ({:+.1}% of the unverified read); BLAKE3 runs at {:.2} GB/s",
        a - b,
        100.0 * (a - b) / b,
        file_bytes as f64 / c / 1e9
    );
    Ok(())
}
