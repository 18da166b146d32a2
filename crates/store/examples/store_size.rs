//! Bytes per activation value of a shard under the store's settings, for f32 and
//! f16, with Gaussian activations shaped like GPT-2 small's residual (width 768):
//! `cargo run -p circuitry-store --example store_size`. Random mantissas are the
//! worst case for compression; real activations compress somewhat better.
use circuitry_core::HookPoint;
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (rows, width) = (4096, 768);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let normal = Normal::new(0.0f32, 1.0)?;
    let acts = Array2::from_shape_simple_fn((rows, width), || normal.sample(&mut rng)); // (rows, width)
    let seq: Vec<u64> = (0..rows as u64).map(|i| i / 128).collect();
    let pos: Vec<u32> = (0..rows as u32).map(|i| i % 128).collect();
    for dtype in [Dtype::F32, Dtype::F16] {
        let dir = tempfile::tempdir()?;
        let spec = StoreSpec {
            hooks: vec![HookMeta {
                hook: HookPoint::ResidPre { layer: 0 },
                width,
            }],
            dtype,
            model_fingerprint: "random".into(),
            tokenizer_fingerprint: None,
            context_size: 128,
            paired: false,
            shard_rows: rows,
            extra: serde_json::Value::Null,
        };
        let start = std::time::Instant::now();
        let mut w = StoreWriter::create(dir.path(), spec)?;
        w.write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &pos,
            example: None,
            side: None,
            acts: vec![(HookPoint::ResidPre { layer: 0 }, acts.view())],
        })?;
        w.finish()?;
        let secs = start.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(dir.path().join("shard_00000.parquet"))?.len();
        let raw = (rows * width * 4) as f64;
        println!(
            "{dtype}: {bytes} bytes for {rows}x{width} f32 values = {:.1}% of raw f32, {:.0} MB/s write",
            100.0 * bytes as f64 / raw,
            raw / secs / 1e6
        );
    }
    Ok(())
}
