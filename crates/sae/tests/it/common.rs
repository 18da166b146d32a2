//! Shared test data.
use circuitry_core::HookPoint;
use circuitry_sae::{Architecture, Sae, SaeConfig};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn normal(rng: &mut ChaCha8Rng, shape: (usize, usize), scale: f64) -> Array2<f64> {
    Array2::from_shape_fn(shape, |_| {
        let v: f64 = StandardNormal.sample(rng);
        v * scale
    })
}

pub fn normal1(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Array1<f64> {
    Array1::from_shape_fn(n, |_| {
        let v: f64 = StandardNormal.sample(rng);
        v * scale
    })
}

/// Rows that are sparse non-negative combinations of `n_sources` random unit
/// directions in `d` dimensions: each source is on with probability `p_on`, with a
/// magnitude uniform in [0.5, 1.5]. Returns the data `(rows, d)` and the dictionary
/// `(n_sources, d)`.
pub fn sparse_sources(
    rows: usize,
    d: usize,
    n_sources: usize,
    p_on: f64,
    seed: u64,
) -> (Array2<f32>, Array2<f64>) {
    let mut r = rng(seed);
    let mut dict = normal(&mut r, (n_sources, d), 1.0);
    for mut row in dict.outer_iter_mut() {
        let n = row.dot(&row).sqrt();
        row /= n;
    }
    let mut x = Array2::<f32>::zeros((rows, d));
    for mut xr in x.outer_iter_mut() {
        for s in 0..n_sources {
            if r.random::<f64>() < p_on {
                let mag = 0.5 + r.random::<f64>();
                for j in 0..d {
                    xr[j] += (mag * dict[[s, j]]) as f32;
                }
            }
        }
    }
    (x, dict)
}

/// A random SAE of the given architecture with non-trivial biases.
pub fn random_sae(d_in: usize, d_sae: usize, architecture: Architecture, seed: u64) -> Sae {
    let cfg = SaeConfig {
        architecture,
        model_name: "test-model".into(),
        context_size: 16,
        ..SaeConfig::new(d_in, d_sae, HookPoint::ResidPre { layer: 2 })
    };
    let mut r = rng(seed);
    let mut sae = Sae::new_init(cfg, &mut r);
    sae.b_enc = normal1(&mut r, d_sae, 0.3).mapv(|v| v as f32);
    sae.b_dec = normal1(&mut r, d_in, 0.3).mapv(|v| v as f32);
    if matches!(architecture, Architecture::JumpRelu) {
        sae.threshold = Some(normal1(&mut r, d_sae, 0.2).mapv(|v| v.abs() as f32));
    }
    sae
}

/// Largest absolute difference between two arrays of the same shape.
pub fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
