//! GPT-2 backward pass against f64 central finite differences on the tiny random model
//! (`tests/data/gpt2_tiny_random`, written by `scripts/gpt2_golden.py`), with left
//! padding: gradients from logits at every kind of hook, from a seed at a hook,
//! with a detached hook, and from a run that starts at a cached `resid_pre`.
use std::path::{Path, PathBuf};

use circuitry_core::HookPoint;
use circuitry_models::transformer::{Backward, Forward, Trace, Transformer};
use ndarray::{array, Array2, Array3, ArrayViewMut3};
use ndarray_rand::RandomExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const EPS: f64 = 1e-5;

fn model() -> Transformer<f64> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gpt2_tiny_random");
    Transformer::load(&dir).unwrap()
}

/// A left-padded batch: (ids, mask), each (batch, seq).
fn batch() -> (Array2<u32>, Array2<u8>) {
    let ids = array![[5u32, 17, 3, 99, 42, 8], [0, 0, 61, 2, 77, 30]];
    let mask = array![[1u8, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]];
    (ids, mask)
}

/// `sum(r * x)`.
fn dot(r: &Array3<f64>, x: &Array3<f64>) -> f64 {
    (r * x).sum()
}

/// Central difference of `metric(run with +-EPS at (hook, b, s, i))`.
fn central<F>(hook: HookPoint, at: [usize; 3], mut metric: F) -> f64
where
    F: FnMut(&mut dyn FnMut(HookPoint, ArrayViewMut3<'_, f64>)) -> f64,
{
    let mut eval = |delta: f64| {
        metric(&mut |h, mut act: ArrayViewMut3<'_, f64>| {
            if h == hook {
                act[at] += delta;
            }
        })
    };
    (eval(EPS) - eval(-EPS)) / (2.0 * EPS)
}

/// Random positions at real (unpadded) tokens of `hook`, a few per hook.
fn coords(rng: &mut ChaCha8Rng, mask: &Array2<u8>, width: usize, n: usize) -> Vec<[usize; 3]> {
    let real: Vec<(usize, usize)> = mask
        .indexed_iter()
        .filter(|(_, &m)| m != 0)
        .map(|(p, _)| p)
        .collect();
    (0..n)
        .map(|_| {
            let (b, s) = real[rng.random_range(0..real.len())];
            [b, s, rng.random_range(0..width)]
        })
        .collect()
}

fn check(name: &str, pairs: &[(f64, f64)], tol: f64) {
    let scale = pairs.iter().fold(1.0f64, |m, (a, _)| m.max(a.abs()));
    let diff = pairs.iter().fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "{name:40} {} checks, |grad| <= {scale:.3}, max abs diff {diff:.2e}",
        pairs.len()
    );
    assert!(
        diff <= tol * scale,
        "{name}: max abs diff {diff:.2e} > {tol:.0e} x {scale:.3}"
    );
}

#[test]
fn gradients_from_logits_match_finite_differences_at_every_hook_kind() {
    let model = model();
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut r = Array3::<f64>::random_using((2, 6, 100), StandardNormal, &mut rng);
    for ((b, s, _), v) in r.indexed_iter_mut() {
        *v *= f64::from(mask[[b, s]]);
    }
    let hooks = [
        HookPoint::Embed,
        HookPoint::PosEmbed,
        HookPoint::ResidPre { layer: 0 },
        HookPoint::AttnOut { layer: 0 },
        HookPoint::ResidMid { layer: 0 },
        HookPoint::MlpPost { layer: 0 },
        HookPoint::MlpOut { layer: 0 },
        HookPoint::ResidPost { layer: 0 },
        HookPoint::ResidPre { layer: 1 },
        HookPoint::AttnOut { layer: 1 },
        HookPoint::MlpPost { layer: 1 },
        HookPoint::ResidPost { layer: 1 },
        HookPoint::LnFinal,
    ];
    let fwd = Forward::tokens(ids.view()).mask(mask.view()).trace(true);
    let out = model.run(&fwd).unwrap();
    let grads = model
        .backward(
            out.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&hooks),
        )
        .unwrap();
    let mut all = Vec::new();
    for hook in hooks {
        let mut pairs = Vec::new();
        for at in coords(&mut rng, &mask, model.width(hook), 6) {
            let fd = central(hook, at, |edit| {
                let out = model
                    .run_with(&Forward::tokens(ids.view()).mask(mask.view()), |h, a| {
                        edit(h, a);
                        Ok::<(), circuitry_models::Error>(())
                    })
                    .unwrap();
                dot(&r, out.logits.as_ref().unwrap())
            });
            pairs.push((grads[&hook][at], fd));
        }
        check(&hook.to_string(), &pairs, 1e-6);
        all.extend(pairs);
    }
    check("all hooks", &all, 1e-6);
    // Real tokens never attend to padding, so padded positions get no gradient.
    let g = &grads[&HookPoint::ResidPre { layer: 0 }];
    assert!(g.slice(ndarray::s![1, ..2, ..]).iter().all(|&v| v == 0.0));
}

#[test]
fn detached_attention_gives_the_resid_to_mlp_path_only() {
    // d m / d resid_pre[1] with attn_out[1] held at its clean value.
    let model = model();
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let r = Array3::<f64>::random_using((2, 6, 100), StandardNormal, &mut rng);
    let attn = HookPoint::AttnOut { layer: 1 };
    let resid = HookPoint::ResidPre { layer: 1 };
    let capture = [attn];
    let fwd = Forward::tokens(ids.view())
        .mask(mask.view())
        .trace(true)
        .capture(&capture);
    let out = model.run(&fwd).unwrap();
    let clean_attn = out.hooks[&attn].clone();
    let (want, detach) = ([resid], [attn]);
    let bwd = Backward::from_logits(r.view()).want(&want).detach(&detach);
    let grads = model.backward(out.trace.as_ref().unwrap(), &bwd).unwrap();
    let full = model
        .backward(
            out.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&want),
        )
        .unwrap();
    let mut pairs = Vec::new();
    for at in coords(&mut rng, &mask, 32, 12) {
        let fd = central(resid, at, |edit| {
            let run = Forward::tokens(ids.view()).mask(mask.view());
            let out = model
                .run_with(&run, |h, mut a| {
                    edit(h, a.view_mut());
                    if h == attn {
                        a.assign(&clean_attn);
                    }
                    Ok::<(), circuitry_models::Error>(())
                })
                .unwrap();
            dot(&r, out.logits.as_ref().unwrap())
        });
        pairs.push((grads[&resid][at], fd));
    }
    check("resid_pre[1], attn_out[1] detached", &pairs, 1e-6);
    assert_ne!(
        grads[&resid], full[&resid],
        "detaching attention must change the gradient"
    );
}

#[test]
fn gradients_from_a_seed_at_a_hook_match_finite_differences() {
    // m = sum(G * mlp_out[1]); gradient at resid_pre[0] and mlp.hook_post[0].
    let model = model();
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let seed_hook = HookPoint::MlpOut { layer: 1 };
    let g = Array3::<f64>::random_using((2, 6, 32), StandardNormal, &mut rng);
    let want = [
        HookPoint::ResidPre { layer: 0 },
        HookPoint::MlpPost { layer: 0 },
    ];
    let fwd = Forward::tokens(ids.view())
        .mask(mask.view())
        .trace(true)
        .logits(false);
    let out = model.run(&fwd).unwrap();
    assert!(out.logits.is_none());
    let grads = model
        .backward(
            out.trace.as_ref().unwrap(),
            &Backward::from_hook(seed_hook, g.view()).want(&want),
        )
        .unwrap();
    let mut pairs = Vec::new();
    for hook in want {
        for at in coords(&mut rng, &mask, model.width(hook), 8) {
            let fd = central(hook, at, |edit| {
                let capture = [seed_hook];
                let run = Forward::tokens(ids.view())
                    .mask(mask.view())
                    .capture(&capture)
                    .logits(false);
                let out = model
                    .run_with(&run, |h, a| {
                        edit(h, a);
                        Ok::<(), circuitry_models::Error>(())
                    })
                    .unwrap();
                dot(&g, &out.hooks[&seed_hook])
            });
            pairs.push((grads[&hook][at], fd));
        }
    }
    check("seed at blocks.1.hook_mlp_out", &pairs, 1e-6);
}

#[test]
fn backward_from_a_cached_resid_pre_equals_the_full_backward() {
    let model = model();
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let r = Array3::<f64>::random_using((2, 6, 100), StandardNormal, &mut rng);
    let hooks = [
        HookPoint::ResidPre { layer: 1 },
        HookPoint::MlpPost { layer: 1 },
    ];
    let fwd = Forward::tokens(ids.view())
        .mask(mask.view())
        .trace(true)
        .capture(&hooks[..1]);
    let out = model.run(&fwd).unwrap();
    let full = model
        .backward(
            out.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&hooks),
        )
        .unwrap();
    let cached = &out.hooks[&hooks[0]];
    let part = model
        .run(
            &Forward::from_resid_pre(1, cached.view())
                .mask(mask.view())
                .trace(true),
        )
        .unwrap();
    let partial = model
        .backward(
            part.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&hooks),
        )
        .unwrap();
    for hook in &hooks {
        let diff = (&full[hook] - &partial[hook])
            .mapv(f64::abs)
            .fold(0.0f64, |m, &v| m.max(v));
        println!("{hook:32} full vs from-resid_pre max abs diff {diff:.2e}");
        assert!(diff <= 1e-12, "{hook}: {diff:.2e}");
    }
    // Hooks below the start cannot be asked for.
    let below = [HookPoint::ResidPre { layer: 0 }];
    let err = model
        .backward(
            part.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&below),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("starts at blocks.1.hook_resid_pre"), "{err}");
}

/// The backward from `d_a` through trace `a` equals the one from `d_b` through `b` at
/// every hook of `hooks` (within 1e-12), printing the differences under `what`.
fn assert_same_backward(
    model: &Transformer<f64>,
    (a, d_a): (&Trace<f64>, ndarray::ArrayView3<'_, f64>),
    (b, d_b): (&Trace<f64>, ndarray::ArrayView3<'_, f64>),
    (hooks, what): (&[HookPoint], &str),
) {
    let g_a = model
        .backward(a, &Backward::from_logits(d_a).want(hooks))
        .unwrap();
    let g_b = model
        .backward(b, &Backward::from_logits(d_b).want(hooks))
        .unwrap();
    for hook in hooks {
        let diff = (&g_a[hook] - &g_b[hook])
            .mapv(f64::abs)
            .fold(0.0f64, |m, &v| m.max(v));
        println!("{hook:32} {what}: max abs diff {diff:.2e}");
        assert!(diff <= 1e-12, "{hook}: {diff:.2e}");
    }
}

/// Logits at the last position only: the full logits' last position, and the backward
/// from their gradient equals the backward from full logits whose gradient is zero at
/// every other position; a gradient of the full shape is refused.
#[test]
fn last_position_logits_and_their_backward_equal_the_full_ones() {
    let model = model();
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let r_last = Array3::<f64>::random_using((2, 1, 100), StandardNormal, &mut rng);
    let mut r_full = Array3::<f64>::zeros((2, 6, 100));
    r_full.slice_mut(ndarray::s![.., 5..6, ..]).assign(&r_last);
    let hooks = [
        HookPoint::ResidPre { layer: 0 },
        HookPoint::AttnOut { layer: 1 },
    ];
    let base = Forward::tokens(ids.view()).mask(mask.view()).trace(true);
    let full = model.run(&base).unwrap();
    let last = model.run(&base.last_logits(true)).unwrap();
    let (lf, ll) = (full.logits.unwrap(), last.logits.unwrap());
    assert_eq!(ll.dim(), (2, 1, 100));
    let diff = (&lf.slice(ndarray::s![.., 5..6, ..]) - &ll)
        .mapv(f64::abs)
        .fold(0.0f64, |m, &v| m.max(v));
    println!("last-position logits vs full logits' last position: max abs diff {diff:.2e}");
    assert!(diff <= 1e-12, "{diff:.2e}");
    let (full_trace, last_trace) = (full.trace.as_ref().unwrap(), last.trace.as_ref().unwrap());
    let check = (&hooks[..], "last-position vs full backward");
    assert_same_backward(
        &model,
        (full_trace, r_full.view()),
        (last_trace, r_last.view()),
        check,
    );
    let err = model
        .backward(
            last.trace.as_ref().unwrap(),
            &Backward::from_logits(r_full.view()).want(&hooks),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_logits"), "{err}");
}

/// Logits of a few ids per sequence (`logits_of`): the full logits at those ids of the
/// last position, and the backward from their gradient equals the backward from the full
/// logits' gradient holding the same values at those ids (zero elsewhere), also when an
/// id repeats in a row. Ids outside the vocabulary, or of the wrong shape, are refused.
#[test]
fn logits_of_a_few_ids_and_their_backward_equal_the_full_ones() {
    let model = model();
    let (ids, mask) = batch();
    let picked = ndarray::array![[3u32, 97, 3], [0, 50, 99]]; // (batch, 3)
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let r_few = Array3::<f64>::random_using((2, 1, 3), StandardNormal, &mut rng);
    let mut r_full = Array3::<f64>::zeros((2, 6, 100));
    for b in 0..2 {
        for j in 0..3 {
            r_full[[b, 5, picked[[b, j]] as usize]] += r_few[[b, 0, j]];
        }
    }
    let hooks = [
        HookPoint::ResidPre { layer: 0 },
        HookPoint::MlpOut { layer: 1 },
    ];
    let base = Forward::tokens(ids.view()).mask(mask.view()).trace(true);
    let full = model.run(&base).unwrap();
    let few = model.run(&base.logits_of(picked.view())).unwrap();
    let (lf, lw) = (full.logits.unwrap(), few.logits.unwrap());
    assert_eq!(lw.dim(), (2, 1, 3));
    let mut diff = 0.0f64;
    for b in 0..2 {
        for j in 0..3 {
            diff = diff.max((lf[[b, 5, picked[[b, j]] as usize]] - lw[[b, 0, j]]).abs());
        }
    }
    println!("logits of picked ids vs the full logits there: max abs diff {diff:.2e}");
    assert!(diff <= 1e-12, "{diff:.2e}");
    let (full_trace, few_trace) = (full.trace.as_ref().unwrap(), few.trace.as_ref().unwrap());
    let check = (&hooks[..], "picked-ids vs full backward");
    assert_same_backward(
        &model,
        (full_trace, r_full.view()),
        (few_trace, r_few.view()),
        check,
    );
    // A gradient of the full vocabulary's shape does not fit these logits.
    let err = model
        .backward(
            few.trace.as_ref().unwrap(),
            &Backward::from_logits(r_full.view()).want(&hooks),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_logits"), "{err}");
    let outside = ndarray::array![[3u32], [100]];
    let err = model
        .run(&base.logits_of(outside.view()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token 100") && err.contains("vocab_size = 100"),
        "{err}"
    );
    let short = ndarray::array![[3u32, 4]];
    let err = model
        .run(&base.logits_of(short.view()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("logit ids") && err.contains("(2, n ≥ 1)"),
        "{err}"
    );
}
