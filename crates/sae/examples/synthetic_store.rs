//! Write a synthetic activation store for measuring `circuitry-train-sae` (peak memory
//! against corpus size, throughput): `ROWS` rows of `HOOKS` hooks of width `WIDTH`,
//! each row a sparse non-negative mix of random unit directions.
//!
//! `cargo run --release -p circuitry-sae --example synthetic_store -- DIR ROWS [WIDTH] [HOOKS]`
use std::path::PathBuf;

use circuitry_core::HookPoint;
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: synthetic_store DIR ROWS [WIDTH=64] [HOOKS=3]";
    let dir = PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?);
    let rows: usize = args.get(2).ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let width: usize = args.get(3).map_or(Ok(64), |w| w.parse())?;
    let n_hooks: usize = args.get(4).map_or(Ok(3), |h| h.parse())?;
    let hooks: Vec<HookPoint> = (0..n_hooks)
        .map(|l| HookPoint::ResidPre { layer: l })
        .collect();
    let spec = StoreSpec {
        hooks: hooks.iter().map(|&hook| HookMeta { hook, width }).collect(),
        dtype: Dtype::F32,
        model_fingerprint: "synthetic".into(),
        tokenizer_fingerprint: None,
        context_size: 32,
        paired: false,
        shard_rows: 8192,
        extra: serde_json::json!({ "model_name": "synthetic", "rows": rows }),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n_dirs = 4 * width;
    let dict = Array2::from_shape_fn((n_dirs, width), |_| {
        let v: f32 = StandardNormal.sample(&mut rng);
        v / (width as f32).sqrt()
    }); // (n_dirs, width)
    let mut writer = StoreWriter::create(&dir, spec)?;
    let chunk = 8192;
    let mut done = 0;
    while done < rows {
        let n = chunk.min(rows - done);
        let mut arrays = Vec::new();
        for _ in &hooks {
            let mut a = Array2::<f32>::zeros((n, width)); // (n, width)
            for mut row in a.outer_iter_mut() {
                for _ in 0..6 {
                    let d = rng.random_range(0..n_dirs);
                    let m: f32 = rng.random_range(0.5..1.5);
                    row.scaled_add(m, &dict.row(d));
                }
            }
            arrays.push(a);
        }
        let seq: Vec<u64> = (done..done + n).map(|r| (r / 32) as u64).collect();
        let pos: Vec<u32> = (done..done + n).map(|r| (r % 32) as u32).collect();
        let tok: Vec<u32> = (done..done + n).map(|r| (r % 997) as u32).collect();
        writer.write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &tok,
            example: None,
            side: None,
            acts: hooks
                .iter()
                .copied()
                .zip(arrays.iter().map(|a| a.view()))
                .collect(),
        })?;
        done += n;
    }
    writer.finish()?;
    println!(
        "wrote {rows} rows × {n_hooks} hooks × width {width} to {}",
        dir.display()
    );
    Ok(())
}
