//! Shared fixtures: a two-hook spec and deterministic rows.
use std::ops::Range;
use std::path::Path;

use circuitry_core::HookPoint;
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
use ndarray::{s, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const A: HookPoint = HookPoint::ResidPre { layer: 0 };
pub const B: HookPoint = HookPoint::MlpOut { layer: 1 };
pub const WIDTH_A: usize = 8;
pub const WIDTH_B: usize = 5;
pub const CONTEXT: usize = 16;

pub fn spec(dtype: Dtype, paired: bool, shard_rows: usize) -> StoreSpec {
    StoreSpec {
        hooks: vec![
            HookMeta {
                hook: A,
                width: WIDTH_A,
            },
            HookMeta {
                hook: B,
                width: WIDTH_B,
            },
        ],
        dtype,
        model_fingerprint: "model-abc".into(),
        tokenizer_fingerprint: Some("tok-def".into()),
        context_size: CONTEXT,
        paired,
        shard_rows,
        extra: serde_json::json!({ "corpus": "test" }),
    }
}

/// Rows as a caller would hold them.
pub struct Data {
    pub seq: Vec<u64>,
    pub pos: Vec<u32>,
    pub token_id: Vec<u32>,
    pub example: Vec<u32>,
    pub side: Vec<u8>,
    pub a: Array2<f32>, // (n, WIDTH_A)
    pub b: Array2<f32>, // (n, WIDTH_B)
}

/// `n` rows with activations spread over several orders of magnitude and signs.
pub fn data(n: usize, seed: u64) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut value = |_| {
        let mag = 10f32.powf(rng.random_range(-3.0..3.0));
        if rng.random::<bool>() {
            mag
        } else {
            -mag
        }
    };
    Data {
        seq: (0..n).map(|i| (i / CONTEXT) as u64).collect(),
        pos: (0..n).map(|i| (i % CONTEXT) as u32).collect(),
        token_id: (0..n).map(|i| (i * 7 % 1000) as u32).collect(),
        example: (0..n).map(|i| (i / (2 * CONTEXT)) as u32).collect(),
        side: (0..n).map(|i| ((i / CONTEXT) % 2) as u8).collect(),
        a: Array2::from_shape_fn((n, WIDTH_A), &mut value),
        b: Array2::from_shape_fn((n, WIDTH_B), &mut value),
    }
}

/// Write rows `range` of `d` in batches of `chunk` rows (hooks given in reverse
/// spec order, to check that any order is accepted).
pub fn write_rows(w: &mut StoreWriter, d: &Data, paired: bool, range: Range<usize>, chunk: usize) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + chunk).min(range.end);
        w.write(RowBatch {
            seq: &d.seq[start..end],
            pos: &d.pos[start..end],
            token_id: &d.token_id[start..end],
            example: paired.then(|| &d.example[start..end]),
            side: paired.then(|| &d.side[start..end]),
            acts: vec![
                (B, d.b.slice(s![start..end, ..])),
                (A, d.a.slice(s![start..end, ..])),
            ],
        })
        .unwrap();
        start = end;
    }
}

/// Write a whole store in one go.
pub fn write_store(dir: &Path, spec: StoreSpec, d: &Data, chunk: usize) {
    let paired = spec.paired;
    let mut w = StoreWriter::create(dir, spec).unwrap();
    write_rows(&mut w, d, paired, 0..d.seq.len(), chunk);
    w.finish().unwrap();
}
