//! A run of a sequence's later positions from a cached `resid_pre`, with the first
//! positions' keys and values from a traced run (`Forward::prefix`), equals the
//! whole-sequence run there: hooks, last-position logits and the backward pass, for a
//! Llama (rotary positions, grouped key/value heads) and a GPT-2.
use circuitry_core::{Family, HookPoint, ModelConfig};
use circuitry_models::transformer::{Backward, Forward, Transformer};
use ndarray::{s, Array2, Array3, ArrayView3, ArrayViewMut3, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn model(family: Family) -> Transformer<f64> {
    let llama = family == Family::Llama;
    let config = ModelConfig {
        family,
        n_layer: 4,
        d_model: 32,
        n_head: 4,
        n_kv_head: if llama { 2 } else { 4 },
        d_mlp: 48,
        vocab_size: 50,
        n_ctx: 64,
        norm_eps: 1e-5,
        rope_theta: llama.then_some(10_000.0),
        attention_bias: !llama,
        mlp_bias: !llama,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // N(0, 0.02²) weights make attention nearly uniform; sharper patterns test more.
    Transformer::random_with_std(config, 0.3, &mut rng).unwrap()
}

fn max_diff(a: ArrayView3<'_, f64>, b: ArrayView3<'_, f64>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn a_run_after_a_kv_prefix_equals_the_whole_sequence_run() {
    for family in [Family::Llama, Family::Gpt2] {
        let m = model(family);
        let (batch, seq, pre, start) = (3, 9, 4, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let ids = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..50u32));
        let hooks = [
            HookPoint::ResidPre { layer: start },
            HookPoint::AttnOut { layer: 2 },
            HookPoint::MlpOut { layer: 3 },
        ];
        let full = m
            .run(
                &Forward::tokens(ids.view())
                    .capture(&hooks)
                    .last_logits(true)
                    .trace(true),
            )
            .unwrap();
        let trace = full.trace.as_ref().unwrap();
        let kv = m.kv_prefix(trace, pre).unwrap();
        assert_eq!((kv.len(), kv.batch()), (pre, batch));
        let resid = &full.hooks[&hooks[0]];
        let tail = resid.slice(s![.., pre.., ..]).to_owned();
        let part = m
            .run(
                &Forward::from_resid_pre(start, tail.view())
                    .prefix(&kv)
                    .capture(&hooks[1..])
                    .last_logits(true)
                    .trace(true),
            )
            .unwrap();
        for h in &hooks[1..] {
            let d = max_diff(part.hooks[h].view(), full.hooks[h].slice(s![.., pre.., ..]));
            println!("{family}: {h} max relative difference {d:.1e}");
            assert!(d < 1e-12, "{family}: {h} differs by {d}");
        }
        let (pl, fl) = (part.logits.unwrap(), full.logits.unwrap());
        let d = max_diff(pl.view(), fl.view());
        println!("{family}: last logits max relative difference {d:.1e}");
        assert!(d < 1e-12, "{family}: logits differ by {d}");

        // The backward from the logits: the gradient at the start's resid_pre equals
        // the whole run's at the later positions (the prefix is constant in both).
        let dl = Array3::from_shape_fn((batch, 1, 50), |(b, _, v)| ((b * 7 + v) % 5) as f64 - 2.0);
        let want = [hooks[0], hooks[1]];
        let g_full = m
            .backward(trace, &Backward::from_logits(dl.view()).want(&want))
            .unwrap();
        let g_part = m
            .backward(
                part.trace.as_ref().unwrap(),
                &Backward::from_logits(dl.view()).want(&want),
            )
            .unwrap();
        for h in &want {
            let d = max_diff(g_part[h].view(), g_full[h].slice(s![.., pre.., ..]));
            println!("{family}: gradient at {h} max relative difference {d:.1e}");
            assert!(d < 1e-12, "{family}: gradient at {h} differs by {d}");
        }
    }
}

#[test]
fn a_repeated_prefix_serves_stacked_variants_with_edits() {
    let m = model(Family::Llama);
    let (batch, seq, pre, layer) = (2, 7, 3, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let ids = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..50u32));
    let hook = HookPoint::ResidPre { layer };
    let full = m
        .run(&Forward::tokens(ids.view()).capture(&[hook]).trace(true))
        .unwrap();
    let resid = &full.hooks[&hook];
    // Two variants of each sequence: a later position's resid_pre scaled by 1 + k.
    let n = 2;
    let edit = |r: usize, p: usize| {
        if p == seq - 2 {
            1.0 + (r / batch) as f64
        } else {
            1.0
        }
    };
    let whole = Array3::from_shape_fn((n * batch, seq, 32), |(r, p, c)| {
        resid[[r % batch, p, c]] * edit(r, p)
    });
    let want = m
        .run(&Forward::from_resid_pre(layer, whole.view()).last_logits(true))
        .unwrap()
        .logits
        .unwrap();
    let kv = m
        .kv_prefix(full.trace.as_ref().unwrap(), pre)
        .unwrap()
        .repeat(n);
    assert_eq!(kv.batch(), n * batch);
    let tail = whole.slice(s![.., pre.., ..]).to_owned();
    let mut seen = 0;
    let got = m
        .run_with(
            &Forward::from_resid_pre(layer, tail.view())
                .prefix(&kv)
                .last_logits(true),
            |h, act: ArrayViewMut3<'_, f64>| {
                if h == hook {
                    seen += act.len_of(Axis(1));
                }
                Ok::<(), circuitry_models::Error>(())
            },
        )
        .unwrap()
        .logits
        .unwrap();
    assert_eq!(seen, seq - pre, "the edit sees the later positions only");
    let d = max_diff(got.view(), want.view());
    println!("stacked variants: last logits max relative difference {d:.1e}");
    assert!(d < 1e-12, "logits differ by {d}");
}

#[test]
fn a_prefix_is_refused_where_it_cannot_apply() {
    let m = model(Family::Llama);
    let ids = Array2::from_elem((2, 6), 3u32);
    let hook = HookPoint::ResidPre { layer: 2 };
    let full = m
        .run(&Forward::tokens(ids.view()).capture(&[hook]).trace(true))
        .unwrap();
    let trace = full.trace.as_ref().unwrap();
    let kv = m.kv_prefix(trace, 2).unwrap();
    let tail = full.hooks[&hook].slice(s![.., 2.., ..]).to_owned();
    let mask = Array2::from_elem((2, 4), 1u8);
    let other_batch = tail.slice(s![..1, .., ..]).to_owned();
    let cases: Vec<(&str, Forward<'_, f64>)> = vec![
        ("from tokens", Forward::tokens(ids.view()).prefix(&kv)),
        (
            "with a padding mask",
            Forward::from_resid_pre(2, tail.view())
                .prefix(&kv)
                .mask(mask.view()),
        ),
        (
            "of another batch",
            Forward::from_resid_pre(2, other_batch.view()).prefix(&kv),
        ),
    ];
    for (what, fwd) in cases {
        let err = m.run(&fwd).unwrap_err().to_string();
        println!("{what}: {err}");
        assert!(err.contains("prefix"), "{what}: {err}");
    }
    // Longer than the traced run, or from a run that had a prefix itself.
    assert!(m.kv_prefix(trace, 7).is_err());
    let part = m
        .run(
            &Forward::from_resid_pre(2, tail.view())
                .prefix(&kv)
                .trace(true),
        )
        .unwrap();
    let err = m.kv_prefix(part.trace.as_ref().unwrap(), 1).unwrap_err();
    assert!(err.to_string().contains("without a prefix"), "{err}");
}

/// `Trace::repeat(n)`: the backward through the trace of one run, stacked `n` times,
/// equals the backward through a run of the stacked input (the same seeds), for a
/// Llama and a GPT-2, with and without a KV prefix.
#[test]
fn a_repeated_trace_gives_the_backward_of_a_stacked_run() {
    for family in [Family::Llama, Family::Gpt2] {
        let m = model(family);
        let (batch, seq, pre, start, n) = (2, 7, 3, 1, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ids = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..50u32));
        let want = [
            HookPoint::ResidPre { layer: start },
            HookPoint::AttnOut { layer: 2 },
        ];
        let seed_hook = HookPoint::MlpOut { layer: 3 };
        let full = m
            .run(
                &Forward::tokens(ids.view())
                    .capture(&[HookPoint::ResidPre { layer: start }])
                    .trace(true),
            )
            .unwrap();
        let kv = m.kv_prefix(full.trace.as_ref().unwrap(), pre).unwrap();
        let resid = &full.hooks[&HookPoint::ResidPre { layer: start }];
        for with_prefix in [false, true] {
            let from = if with_prefix { pre } else { 0 };
            let input = resid.slice(s![.., from.., ..]).to_owned();
            let stacked_input = ndarray::concatenate(Axis(0), &vec![input.view(); n]).unwrap();
            let tail = seq - from;
            let seeds = Array3::from_shape_fn((n * batch, tail, 32), |_| rng.random::<f64>() - 0.5);
            let stacked_kv = kv.repeat(n);
            let (mut one, mut stacked) = (
                Forward::from_resid_pre(start, input.view())
                    .logits(false)
                    .trace(true),
                Forward::from_resid_pre(start, stacked_input.view())
                    .logits(false)
                    .trace(true),
            );
            if with_prefix {
                one = one.prefix(&kv);
                stacked = stacked.prefix(&stacked_kv);
            }
            let repeated = m.run(&one).unwrap().trace.unwrap().repeat(n);
            let direct = m.run(&stacked).unwrap().trace.unwrap();
            let bwd = Backward::from_hook(seed_hook, seeds.view()).want(&want);
            let (a, b) = (
                m.backward(&repeated, &bwd).unwrap(),
                m.backward(&direct, &bwd).unwrap(),
            );
            for h in &want {
                let diff = max_diff(a[h].view(), b[h].view());
                println!("{family:?} prefix {with_prefix} {h}: repeated vs stacked trace, max rel diff {diff:.2e}");
                assert!(diff <= 1e-12, "{family:?} {h}: {diff:.2e}");
            }
        }
    }
}

/// A run whose last block is trimmed to the last position (`Forward::trim_last_block`)
/// gives the untrimmed run's logits and gradients at every earlier hook: from tokens and
/// from a cached `resid_pre`, with and without a KV prefix, with edits, through
/// `Trace::repeat`; hooks the trimmed block no longer has are refused.
#[test]
fn a_trimmed_last_block_gives_the_untrimmed_logits_and_gradients() {
    for family in [Family::Llama, Family::Gpt2] {
        let m = model(family);
        let (batch, seq, pre) = (3, 8, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let ids = Array2::from_shape_fn((batch, seq), |_| rng.random_range(0..50u32));
        let picked = Array2::from_shape_fn((batch, 2), |_| rng.random_range(0..50u32));
        let d_logits = Array3::from_shape_fn((batch, 1, 2), |_| rng.random::<f64>() - 0.5);
        let want = [
            HookPoint::ResidPre { layer: 0 },
            HookPoint::MlpOut { layer: 1 },
            HookPoint::AttnOut { layer: 2 },
            HookPoint::ResidPre { layer: 3 },
        ];
        // An edit at a hook before the trimmed block, as a spliced SAE makes.
        let edit = |h: HookPoint, mut a: ArrayViewMut3<'_, f64>| {
            if h == (HookPoint::ResidPre { layer: 2 }) {
                a.mapv_inplace(|v| 1.1 * v + 0.01);
            }
            Ok::<(), circuitry_models::Error>(())
        };
        let run = |fwd: Forward<'_, f64>| m.run_with(&fwd, edit).unwrap();
        let base = Forward::tokens(ids.view())
            .logits_of(picked.view())
            .capture(&want[..1])
            .trace(true);
        let (plain, trimmed) = (run(base), run(base.trim_last_block(true)));
        let logit_diff = max_diff(
            trimmed.logits.as_ref().unwrap().view(),
            plain.logits.as_ref().unwrap().view(),
        );
        println!("{family:?}: trimmed vs untrimmed logits, max rel diff {logit_diff:.2e}");
        assert!(logit_diff <= 1e-12, "{family:?}: {logit_diff:.2e}");
        let bwd = Backward::from_logits(d_logits.view()).want(&want);
        let grads = |t: &circuitry_models::transformer::Trace<f64>| m.backward(t, &bwd).unwrap();
        let (a, b) = (
            grads(trimmed.trace.as_ref().unwrap()),
            grads(plain.trace.as_ref().unwrap()),
        );
        for h in &want {
            let diff = max_diff(a[h].view(), b[h].view());
            println!("{family:?} {h}: trimmed vs untrimmed gradient, max rel diff {diff:.2e}");
            assert!(diff <= 1e-12, "{family:?} {h}: {diff:.2e}");
        }
        let attn = trimmed.trace.as_ref().unwrap().attention(3).unwrap();
        assert_eq!(attn.dim().2, 1, "one query in the trimmed block");

        // From a cached resid_pre after a KV prefix, and the trace repeated.
        let kv = m.kv_prefix(plain.trace.as_ref().unwrap(), pre).unwrap();
        let resid = plain.hooks[&HookPoint::ResidPre { layer: 0 }]
            .slice(s![.., pre.., ..])
            .to_owned();
        let tail = Forward::from_resid_pre(0, resid.view())
            .prefix(&kv)
            .logits_of(picked.view())
            .trace(true);
        let (p_plain, p_trim) = (run(tail), run(tail.trim_last_block(true)));
        let n = 2;
        let stacked_d = ndarray::concatenate(Axis(0), &[d_logits.view(); 2]).unwrap();
        let bwd2 = Backward::from_logits(stacked_d.view()).want(&want);
        let (a, b) = (
            m.backward(&p_trim.trace.as_ref().unwrap().repeat(n), &bwd2)
                .unwrap(),
            m.backward(&p_plain.trace.as_ref().unwrap().repeat(n), &bwd2)
                .unwrap(),
        );
        for h in &want {
            let diff = max_diff(a[h].view(), b[h].view());
            println!(
                "{family:?} prefix, repeated {h}: trimmed vs untrimmed, max rel diff {diff:.2e}"
            );
            assert!(diff <= 1e-12, "{family:?} {h}: {diff:.2e}");
        }

        // The trimmed block's later hooks are refused, as are logits at every position.
        let last = [HookPoint::MlpOut { layer: 3 }];
        let err = m
            .run(&base.capture(&last).trim_last_block(true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks.3.hook_mlp_out") && err.contains("trim"),
            "{err}"
        );
        let err = m
            .backward(
                trimmed.trace.as_ref().unwrap(),
                &Backward::from_logits(d_logits.view()).want(&[HookPoint::LnFinal]),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("ln_final") && err.contains("trim"), "{err}");
        let err = m
            .run(&Forward::tokens(ids.view()).trim_last_block(true))
            .unwrap_err()
            .to_string();
        assert!(err.contains("logits at every position"), "{err}");
    }
}
