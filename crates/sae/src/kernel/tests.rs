//! The sparse path against the dense one, thread-count invariance, and the top-k
//! selection against sorting.
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{dense, select, sparse, AuxK, Grads, LossSpec, Params, Real, Setup};
use crate::Architecture;

struct Owned<F> {
    w_enc: Array2<F>, // (d_in, d_sae)
    b_enc: Array1<F>, // (d_sae)
    w_dec: Array2<F>, // (d_sae, d_in)
    b_dec: Array1<F>, // (d_in)
    x: Array2<F>,     // (rows, d_in)
}

fn random<F: Real>(rows: usize, d_in: usize, d_sae: usize, seed: u64) -> Owned<F> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut n = |shape: (usize, usize), scale: f64| {
        Array2::from_shape_fn(shape, |_| {
            let v: f64 = StandardNormal.sample(&mut r);
            F::of(v * scale)
        })
    };
    let w_enc = n((d_in, d_sae), 0.5);
    let b_enc = n((1, d_sae), 0.2).row(0).to_owned();
    let w_dec = n((d_sae, d_in), 0.5);
    let b_dec = n((1, d_in), 0.2).row(0).to_owned();
    let x = n((rows, d_in), 1.0);
    Owned {
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        x,
    }
}

impl<F: Real> Owned<F> {
    fn params(&self) -> Params<'_, F> {
        Params {
            w_enc: self.w_enc.view(),
            b_enc: self.b_enc.view(),
            w_dec: self.w_dec.view(),
            b_dec: self.b_dec.view(),
        }
    }
}

fn max_diff<D: ndarray::Dimension>(a: &ndarray::Array<f64, D>, b: &ndarray::Array<f64, D>) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn spec(arch: Architecture, apply: bool, aux: Option<AuxK<'_>>, chunk_rows: usize) -> LossSpec<'_> {
    LossSpec {
        architecture: arch,
        apply_b_dec_to_input: apply,
        l1_coefficient: 0.0,
        aux,
        chunk_rows,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    }
}

#[test]
fn sparse_path_equals_dense_path() {
    let (rows, d_in, d_sae) = (37, 6, 50);
    let o = random::<f64>(rows, d_in, d_sae, 7);
    let p = o.params();
    let dead: Vec<bool> = (0..d_sae).map(|i| i % 3 == 1).collect();
    let few_dead: Vec<bool> = (0..d_sae).map(|i| i == 4 || i == 30).collect();
    fn aux(dead: &[bool], k_aux: usize) -> Option<AuxK<'_>> {
        Some(AuxK {
            dead,
            k_aux,
            coefficient: 0.4,
        })
    }
    let cases: Vec<(&str, LossSpec<'_>)> = vec![
        ("topk k=5", spec(Architecture::TopK { k: 5 }, true, None, 8)),
        (
            "topk k=5 no centring",
            spec(Architecture::TopK { k: 5 }, false, None, 5),
        ),
        (
            "topk k=5 + auxk 7",
            spec(Architecture::TopK { k: 5 }, true, aux(&dead, 7), 8),
        ),
        (
            "topk k=3 + auxk, 2 dead",
            spec(Architecture::TopK { k: 3 }, true, aux(&few_dead, 4), 6),
        ),
        (
            "topk k=50 (every latent)",
            spec(Architecture::TopK { k: 50 }, true, None, 16),
        ),
        (
            "batchtopk k=4",
            spec(Architecture::BatchTopK { k: 4 }, true, None, 8),
        ),
        (
            "batchtopk k=4 + auxk 6",
            spec(Architecture::BatchTopK { k: 4 }, false, aux(&dead, 6), 3),
        ),
    ];
    for (label, spec) in &cases {
        let setup = Setup::new(&p, o.x.view(), spec).unwrap();
        let (s_sums, s_g) = sparse::run(&setup, o.x.view());
        let (d_sums, d_g) = dense::run(&setup, o.x.view());
        let Grads {
            w_enc,
            b_enc,
            w_dec,
            b_dec,
            ..
        } = &d_g;
        let diffs = [
            (
                "W_enc",
                max_diff(&s_g.w_enc, w_enc),
                w_enc.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            ),
            (
                "b_enc",
                max_diff(&s_g.b_enc, b_enc),
                b_enc.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            ),
            (
                "W_dec",
                max_diff(&s_g.w_dec, w_dec),
                w_dec.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            ),
            (
                "b_dec",
                max_diff(&s_g.b_dec, b_dec),
                b_dec.iter().fold(0.0f64, |m, v| m.max(v.abs())),
            ),
        ];
        for (name, diff, scale) in diffs {
            println!(
                "{label}: {name:<5} max |sparse − dense| = {diff:.2e} (max |grad| {scale:.2e})"
            );
            assert!(scale > 1e-3, "{label}: {name} gradient is trivially zero");
            assert!(diff <= 1e-12 * (1.0 + scale), "{label}: {name} differs");
        }
        let sse_diff = (s_sums.sse - d_sums.sse).abs();
        let aux_diff = (s_sums.aux_sse - d_sums.aux_sse).abs();
        println!(
            "{label}: sse diff {sse_diff:.2e}, aux sse diff {aux_diff:.2e}, l0 {}",
            s_sums.active as f64 / rows as f64
        );
        assert!(
            sse_diff <= 1e-12 * (1.0 + d_sums.sse),
            "{label}: mse differs"
        );
        assert!(
            aux_diff <= 1e-12 * (1.0 + d_sums.aux_sse),
            "{label}: aux differs"
        );
        if spec.aux.is_some() {
            assert!(d_sums.aux_sse > 0.0, "{label}: AuxK term is trivially zero");
        }
        assert_eq!(s_sums.active, d_sums.active, "{label}: active count");
        assert_eq!(s_sums.fired, d_sums.fired, "{label}: fired latents");
        assert_eq!(
            s_sums.min_active, d_sums.min_active,
            "{label}: smallest activation"
        );
        assert_eq!(
            s_sums.batch_threshold, d_sums.batch_threshold,
            "{label}: batch threshold"
        );
    }
}

/// Bitwise-equal gradients with 1 and 3 threads, for every architecture.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let (rows, d_in, d_sae) = (300, 48, 600);
    let o = random::<f32>(rows, d_in, d_sae, 11);
    let p = o.params();
    let dead: Vec<bool> = (0..d_sae).map(|i| i % 5 == 0).collect();
    let theta: Vec<f64> = (0..d_sae).map(|i| 0.1 + (i % 7) as f64 * 0.1).collect();
    let aux = Some(AuxK {
        dead: &dead,
        k_aux: 24,
        coefficient: 1.0 / 32.0,
    });
    let mut cases = vec![
        spec(Architecture::Standard, true, None, 64),
        spec(Architecture::TopK { k: 16 }, true, aux, 64),
        spec(Architecture::BatchTopK { k: 16 }, true, aux, 64),
        spec(Architecture::JumpRelu, true, None, 64),
    ];
    cases[0].l1_coefficient = 0.01;
    cases[3].l1_coefficient = 0.01;
    cases[3].jump = Some(super::Jump {
        threshold: &theta,
        bandwidth: 0.05,
    });
    for spec in &cases {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| super::loss_and_grads(&p, o.x.view(), spec).unwrap())
        };
        let (t1, g1) = run(1);
        let (t3, g3) = run(3);
        println!(
            "{:?}: loss {} (1 thread) vs {} (3 threads)",
            spec.architecture, t1.total, t3.total
        );
        assert_eq!(t1, t3, "{:?}: loss terms", spec.architecture);
        assert!(
            g1 == g3,
            "{:?}: gradients differ between 1 and 3 threads",
            spec.architecture
        );
    }
}

#[test]
fn heap_top_k_matches_sorting() {
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let mut order = Vec::new();
    let mut heap = Vec::new();
    for case in 0..200 {
        let n = r.random_range(1..80);
        // Few distinct values, so ties are common; an occasional NaN.
        let row: Array1<f64> = (0..n)
            .map(|_| {
                if r.random_range(0..50) == 0 {
                    f64::NAN
                } else {
                    r.random_range(-4i32..5) as f64
                }
            })
            .collect();
        let k = r.random_range(0..n + 2);
        let mut want = dense::top_indices(row.view(), k, |_| true, &mut order).to_vec();
        want.sort_unstable();
        select::top_k(row.iter().copied().enumerate(), k, &mut heap);
        let mut got: Vec<usize> = heap.iter().map(|&(_, i)| i as usize).collect();
        got.sort_unstable();
        assert_eq!(got, want, "case {case}: k {k}, row {row}");
    }
}

#[test]
fn two_pass_top_k_above_a_floor_matches_sorting() {
    // Long rows (several 32-value groups, ragged ends), ties, NaNs, and floors that
    // leave fewer than k values.
    let mut r = ChaCha8Rng::seed_from_u64(4);
    let mut order = Vec::new();
    let mut scratch = select::Scratch::default();
    for case in 0..300 {
        let n = r.random_range(1..700);
        let row: Vec<f32> = (0..n)
            .map(|_| match r.random_range(0..60) {
                0 => f32::NAN,
                1..=20 => r.random_range(-6i32..7) as f32,
                _ => r.random_range(-3.0f32..3.0),
            })
            .collect();
        let k = r.random_range(0..40);
        let floor = [0.0f32, -1.0, 2.5, f32::NEG_INFINITY][case % 4];
        let arr = Array1::from(row.clone());
        let mut want = dense::top_indices(arr.view(), k, |i| row[i] > floor, &mut order).to_vec();
        want.sort_unstable();
        select::top_k_above(&row, k, floor, &mut scratch);
        let mut got: Vec<usize> = scratch.heap.iter().map(|&(_, i)| i as usize).collect();
        got.sort_unstable();
        assert_eq!(got, want, "case {case}: k {k}, floor {floor}, n {n}");
    }
}

#[test]
fn vectorised_group_maxima_equal_the_scalar_ones() {
    // f32 takes AVX-512 or AVX on CPUs that have them; NaNs anywhere in a group, whole
    // groups of NaN, infinities, ragged last groups.
    let mut r = ChaCha8Rng::seed_from_u64(5);
    for case in 0..400 {
        let n = r.random_range(0..300);
        let row: Vec<f32> = (0..n)
            .map(|_| match r.random_range(0..40) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                _ => r.random_range(-3.0f32..3.0),
            })
            .collect();
        let row = if case % 10 == 0 {
            vec![f32::NAN; n]
        } else {
            row
        };
        let groups = n.div_ceil(32);
        let (mut want, mut got) = (vec![0f32; groups], vec![0f32; groups]);
        select::group_maxima_scalar(&row, &mut want);
        <f32 as Real>::group_maxima(&row, &mut got);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "case {case}: n {n}"
        );
        assert!(
            want.iter().all(|v| !v.is_nan()),
            "case {case}: NaN must be ignored"
        );
    }
}

#[test]
fn sparse_decode_equals_the_dense_product() {
    // TopK features (4 of 128 active a row) take the gather; the same values in f64
    // through the dense product are the reference.
    let o = random::<f32>(40, 24, 128, 7);
    let pre = super::pre_activations(&o.params(), o.x.view(), true); // (40, 128)
    let f = super::activate(Architecture::TopK { k: 4 }, pre.view(), None);
    let sparse = super::decode(&o.params(), f.view()); // the gather
    let (w_dec, b_dec) = (o.w_dec.mapv(f64::from), o.b_dec.mapv(f64::from));
    let (w_enc, b_enc) = (o.w_enc.mapv(f64::from), o.b_enc.mapv(f64::from));
    let p64 = Params {
        w_enc: w_enc.view(),
        b_enc: b_enc.view(),
        w_dec: w_dec.view(),
        b_dec: b_dec.view(),
    };
    let dense = super::decode_with(super::Backend::Faer, &p64, f.mapv(f64::from).view());
    let diff = max_diff(&sparse.mapv(f64::from), &dense);
    let scale = dense.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    println!("sparse decode vs f64 dense: max |diff| {diff:.2e} (max |x̂| {scale:.2})");
    assert!(diff <= 1e-5 * scale, "max |diff| {diff}");
    // A dense input still goes through the product, and the two paths agree.
    let relu = super::activate(Architecture::Standard, pre.view(), None);
    assert!(relu.iter().filter(|&&v| v != 0.0).count() * 16 > relu.len());
    let through_product = super::decode(&o.params(), relu.view());
    let reference = super::decode_with(super::Backend::Faer, &o.params(), relu.view());
    assert_eq!(through_product, reference);
}

#[test]
fn nonzero_indices_match_an_entry_by_entry_scan() {
    // Lengths around the 16-value blocks, zeros of both signs, NaN, subnormals,
    // infinities, and whole zero blocks between nonzero ones.
    let mut r = ChaCha8Rng::seed_from_u64(3);
    let specials = [
        f32::NAN,
        f32::INFINITY,
        -f32::INFINITY,
        1e-45,
        -1e-45,
        -0.0,
        0.0,
    ];
    let mut idx = Vec::new();
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 4608] {
        for density in [0.0, 0.01, 0.1, 0.5, 1.0] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    if r.random::<f64>() >= density {
                        if r.random::<bool>() {
                            -0.0
                        } else {
                            0.0
                        }
                    } else if r.random::<f64>() < 0.2 {
                        specials[r.random_range(0..specials.len())]
                    } else {
                        r.random_range(-2.0f32..2.0)
                    }
                })
                .collect();
            super::vector::nonzero_indices(&row, &mut idx);
            let want: Vec<u32> = (0..len as u32)
                .filter(|&i| row[i as usize] != 0.0)
                .collect();
            assert_eq!(idx, want, "length {len}, density {density}");
        }
    }
}

#[test]
fn decoder_grads_at_equal_the_masked_product_and_ignore_the_threads() {
    // TopK features (4 of 600 active a row) mark the entries; the masked f64 product
    // g · W_decᵀ is the reference, and 1 and 3 threads give the same bits.
    let (rows, d_in, d_sae) = (70, 40, 600);
    let o = random::<f32>(rows, d_in, d_sae, 9);
    let pre = super::pre_activations(&o.params(), o.x.view(), true); // (rows, d_sae)
    let at = super::activate(Architecture::TopK { k: 4 }, pre.view(), None);
    let g = random::<f32>(rows, d_in, 1, 10).x; // (rows, d_in)
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| super::decoder_grads_at(o.w_dec.view(), g.view(), at.view()).unwrap())
    };
    let (one, three) = (run(1), run(3));
    assert!(one == three, "1 and 3 threads differ");
    let mut want = g.mapv(f64::from).dot(&o.w_dec.mapv(f64::from).t()); // (rows, d_sae)
    ndarray::Zip::from(&mut want).and(&at).for_each(|w, &a| {
        if a == 0.0 {
            *w = 0.0;
        }
    });
    let got = one.mapv(f64::from);
    let diff = max_diff(&got, &want);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    println!("decoder_grads_at vs masked f64 product: max |diff| {diff:.2e} (max {scale:.2})");
    assert!(diff <= 1e-5 * scale, "max |diff| {diff}");
    assert!(got.iter().zip(&at).all(|(&v, &a)| a != 0.0 || v == 0.0));
    assert_eq!(at.iter().filter(|&&a| a != 0.0).count(), rows * 4);
    // Shapes that do not agree are refused.
    assert!(super::decoder_grads_at(o.w_dec.view(), g.t(), at.view()).is_none());
}
