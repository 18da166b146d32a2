//! GPT-2 forward and backward against Hugging Face transformers, plus invariants.
//!
//! Golden values: `scripts/gpt2_golden.py` (torch + transformers, eager attention) wrote
//! `tests/data/gpt2_tiny_random/` (a random 2-layer, d 32, 4-head GPT-2, vocab 100) and
//! `tests/data/gpt2_golden.safetensors` (a left-padded batch: every hook and the logits
//! in float32, and float64 autograd gradients of `m = sum(R * logits * mask)` at every
//! hook). Re-run the script to regenerate them.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use circuitry_core::HookPoint;
use circuitry_models::tensors::TensorFile;
use circuitry_models::transformer::{replace_at, Backward, Forward, Scalar, Transformer};
use ndarray::{Array2, Array3, ArrayView3, Ix2, Ix3};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn tiny_dir() -> PathBuf {
    data().join("gpt2_tiny_random")
}

struct Golden {
    file: TensorFile,
    ids: Array2<u32>, // (batch, seq)
    mask: Array2<u8>, // (batch, seq)
}

impl Golden {
    fn load() -> Golden {
        let file = TensorFile::read(&data().join("gpt2_golden.safetensors")).unwrap();
        let ids = file
            .get("input_ids", &[3, 8])
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap();
        let mask = file
            .get("attention_mask", &[3, 8])
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap();
        Golden {
            file,
            ids: ids.mapv(|x| x as u32),
            mask: mask.mapv(|x| x as u8),
        }
    }

    fn get3<A: Scalar>(&self, name: &str, width: usize) -> Array3<A> {
        let t = self.file.get(name, &[3, 8, width]).unwrap();
        t.into_dimensionality::<Ix3>()
            .unwrap()
            .mapv(|x| A::of(f64::from(x)))
    }
}

/// Every hook of a 2-layer model.
fn all_hooks() -> Vec<HookPoint> {
    let mut v = vec![HookPoint::Embed, HookPoint::PosEmbed, HookPoint::LnFinal];
    for layer in 0..2 {
        v.extend([
            HookPoint::ResidPre { layer },
            HookPoint::AttnOut { layer },
            HookPoint::ResidMid { layer },
            HookPoint::MlpPost { layer },
            HookPoint::MlpOut { layer },
            HookPoint::ResidPost { layer },
        ]);
    }
    v
}

/// Max |a - b| over positions where `mask` is 1.
fn max_diff_masked<A: Scalar>(a: ArrayView3<A>, b: ArrayView3<A>, mask: &Array2<u8>) -> f64 {
    assert_eq!(a.dim(), b.dim());
    let mut m = 0.0f64;
    for ((bi, s, i), &x) in a.indexed_iter() {
        if mask[[bi, s]] != 0 {
            m = m.max((x - b[[bi, s, i]]).abs().to_f64().unwrap());
        }
    }
    m
}

fn max_abs<A: Scalar>(a: ArrayView3<A>) -> f64 {
    a.iter()
        .fold(0.0f64, |m, x| m.max(x.abs().to_f64().unwrap()))
}

#[test]
fn forward_matches_transformers_at_every_hook() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let g = Golden::load();
    let hooks = all_hooks();
    let out = model
        .forward(g.ids.view(), Some(g.mask.view()), &hooks)
        .unwrap();
    let mut worst = 0.0f64;
    for hook in &hooks {
        let want = g.get3::<f32>(&hook.to_string(), model.width(*hook));
        let diff = max_diff_masked(out.hooks[hook].view(), want.view(), &g.mask);
        println!("{hook:32} max abs diff {diff:.2e}");
        worst = worst.max(diff);
    }
    let logits = out.logits.unwrap();
    let diff = max_diff_masked(logits.view(), g.get3::<f32>("logits", 100).view(), &g.mask);
    println!("{:32} max abs diff {diff:.2e}", "logits");
    worst = worst.max(diff);
    assert!(worst <= 1e-4, "max abs diff {worst:.2e} > 1e-4");
}

#[test]
fn backward_matches_torch_autograd_at_every_hook() {
    let g = Golden::load();
    let hooks = all_hooks();
    let d_logits64 = g.get3::<f64>("grad.logits", 100);
    // f64 model: the same f32 weights as torch's float64 run, so only rounding differs.
    let model64: Transformer<f64> = Transformer::load(&tiny_dir()).unwrap();
    let model32: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let fwd64 = Forward::tokens(g.ids.view())
        .mask(g.mask.view())
        .trace(true);
    let out64 = model64.run(&fwd64).unwrap();
    let grads64 = model64
        .backward(
            out64.trace.as_ref().unwrap(),
            &Backward::from_logits(d_logits64.view()).want(&hooks),
        )
        .unwrap();
    let d_logits32 = g.get3::<f32>("grad.logits", 100);
    let fwd32 = Forward::tokens(g.ids.view())
        .mask(g.mask.view())
        .trace(true);
    let out32 = model32.run(&fwd32).unwrap();
    let grads32 = model32
        .backward(
            out32.trace.as_ref().unwrap(),
            &Backward::from_logits(d_logits32.view()).want(&hooks),
        )
        .unwrap();
    for hook in &hooks {
        let width = model64.width(*hook);
        let want64 = g.get3::<f64>(&format!("grad.{hook}"), width);
        let want32 = g.get3::<f32>(&format!("grad.{hook}"), width);
        let scale = max_abs(want64.view()).max(1.0);
        let d64 = max_diff_masked(grads64[hook].view(), want64.view(), &g.mask) / scale;
        let d32 = max_diff_masked(grads32[hook].view(), want32.view(), &g.mask) / scale;
        println!("{hook:32} |grad| max {scale:8.3}  rel diff f64 {d64:.2e}  f32 {d32:.2e}");
        assert!(d64 <= 1e-6, "{hook}: f64 relative diff {d64:.2e} > 1e-6");
        assert!(d32 <= 1e-4, "{hook}: f32 relative diff {d32:.2e} > 1e-4");
    }
}

#[test]
fn names_without_transformer_prefix_load_the_same_model() {
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert!(n.starts_with("transformer."), "{n}");
            (n.trim_start_matches("transformer.").to_string(), v)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), out).unwrap();
    std::fs::copy(
        tiny_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let plain: Transformer = Transformer::load(dir.path()).unwrap();
    let prefixed: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let g = Golden::load();
    let a = plain
        .forward(g.ids.view(), Some(g.mask.view()), &[])
        .unwrap()
        .logits
        .unwrap();
    let b = prefixed
        .forward(g.ids.view(), Some(g.mask.view()), &[])
        .unwrap()
        .logits
        .unwrap();
    assert_eq!(a, b);
}

fn max_diff<A: Scalar>(a: &Array3<A>, b: &Array3<A>) -> f64 {
    max_abs((a - b).view())
}

#[test]
fn residual_stream_adds_up_across_blocks() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let g = Golden::load();
    let hooks = all_hooks();
    let out = model
        .forward(g.ids.view(), Some(g.mask.view()), &hooks)
        .unwrap();
    let h = |hook| &out.hooks[&hook];
    for layer in 0..2 {
        let pre = h(HookPoint::ResidPre { layer });
        let attn = h(HookPoint::AttnOut { layer });
        let mlp = h(HookPoint::MlpOut { layer });
        let mid_diff = max_diff(&(pre + attn), h(HookPoint::ResidMid { layer }));
        let post_diff = max_diff(&(pre + attn + mlp), h(HookPoint::ResidPost { layer }));
        println!("layer {layer}: resid_mid diff {mid_diff:.2e}, pre + attn + mlp vs post {post_diff:.2e}");
        assert!(mid_diff <= 1e-6 && post_diff <= 1e-5);
    }
    let post0 = h(HookPoint::ResidPost { layer: 0 });
    assert_eq!(post0, h(HookPoint::ResidPre { layer: 1 }));
    let embed = h(HookPoint::Embed) + h(HookPoint::PosEmbed);
    assert_eq!(&embed, h(HookPoint::ResidPre { layer: 0 }));
}

#[test]
fn running_from_a_cached_resid_pre_reproduces_later_hooks() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let g = Golden::load();
    let hooks = all_hooks();
    let full = model
        .forward(g.ids.view(), Some(g.mask.view()), &hooks)
        .unwrap();
    let later: Vec<HookPoint> = hooks
        .iter()
        .copied()
        .filter(|h| h.layer() == Some(1) || *h == HookPoint::LnFinal)
        .collect();
    let cached = &full.hooks[&HookPoint::ResidPre { layer: 1 }];
    let fwd = Forward::from_resid_pre(1, cached.view())
        .mask(g.mask.view())
        .capture(&later);
    let part = model.run(&fwd).unwrap();
    for hook in &later {
        let diff = max_diff(&full.hooks[hook], &part.hooks[hook]);
        assert!(diff == 0.0, "{hook}: {diff:.2e}");
    }
    assert_eq!(full.logits, part.logits);
    // Hooks below the start are refused with a clear message.
    let below = [HookPoint::MlpOut { layer: 0 }];
    let err = model
        .run(&Forward::from_resid_pre(1, cached.view()).capture(&below))
        .unwrap_err()
        .to_string();
    assert!(err.contains("starts at blocks.1.hook_resid_pre"), "{err}");
}

#[test]
fn left_padding_does_not_change_activations_at_tokens() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let g = Golden::load();
    let hooks = all_hooks();
    let padded = model
        .forward(g.ids.view(), Some(g.mask.view()), &hooks)
        .unwrap();
    // Row 1 has 3 pad tokens: run its 5 real tokens alone, without a mask.
    let alone_ids = g.ids.slice(ndarray::s![1..2, 3..]).to_owned();
    let alone = model.forward(alone_ids.view(), None, &hooks).unwrap();
    let mut worst = 0.0f64;
    for hook in &hooks {
        let a = padded.hooks[hook]
            .slice(ndarray::s![1..2, 3.., ..])
            .to_owned();
        worst = worst.max(max_diff(&a, &alone.hooks[hook]));
    }
    println!("padded vs alone, max abs diff over all hooks {worst:.2e}");
    assert!(worst <= 1e-5);
}

#[test]
fn patching_resid_pre_with_another_run_gives_that_runs_logits() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let clean = ndarray::array![[5u32, 17, 3, 99]];
    let patch = ndarray::array![[5u32, 17, 4, 98]];
    let hook = HookPoint::ResidPre { layer: 1 };
    let p = model.forward(patch.view(), None, &[hook]).unwrap();
    let patched = model
        .run_with(&Forward::tokens(clean.view()), replace_at(&p.hooks))
        .unwrap();
    assert_eq!(patched.logits, p.logits);
    // A wrongly shaped replacement is an error, not a panic.
    let mut bad = BTreeMap::new();
    bad.insert(hook, Array3::<f32>::zeros((1, 3, 32)));
    let err = model
        .run_with(&Forward::tokens(clean.view()), replace_at(&bad))
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn an_sae_style_splice_with_its_error_term_changes_nothing_and_errors_propagate() {
    // activation = decode(encode(x)) + (x - decode(encode(x))): what the circuit
    // stage does at each submodule; a rank-4 projection stands in for the SAE.
    #[derive(Debug)]
    enum MyError {
        Model(#[allow(dead_code)] circuitry_models::Error),
        Refused(HookPoint),
    }
    impl From<circuitry_models::Error> for MyError {
        fn from(e: circuitry_models::Error) -> Self {
            MyError::Model(e)
        }
    }
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let ids = ndarray::array![[5u32, 17, 3, 99, 42]];
    let hook = HookPoint::AttnOut { layer: 0 };
    let w = Array2::from_shape_fn((32, 4), |(i, j)| ((i * 7 + j * 3) % 5) as f32 * 0.1); // (d, d_sae)
    let mut features_seen = 0;
    let spliced = model
        .run_with(
            &Forward::tokens(ids.view()),
            |h, mut act: ndarray::ArrayViewMut3<f32>| {
                if h == hook {
                    let (b, s, d) = act.dim();
                    let x = act.to_owned().into_shape_with_order((b * s, d)).unwrap();
                    let f = x.dot(&w); // (rows, d_sae)
                    let recon = f.dot(&w.t()); // (rows, d)
                    let err = &x - &recon;
                    features_seen += f.len();
                    act.assign(&(recon + err).into_shape_with_order((b, s, d)).unwrap());
                }
                Ok::<(), MyError>(())
            },
        )
        .unwrap();
    let clean = model.forward(ids.view(), None, &[]).unwrap();
    assert_eq!(features_seen, 5 * 4);
    let diff = max_diff(
        spliced.logits.as_ref().unwrap(),
        clean.logits.as_ref().unwrap(),
    );
    assert!(diff <= 1e-5, "{diff:.2e}");
    let err = model
        .run_with(&Forward::tokens(ids.view()), |h, _| match h {
            HookPoint::MlpOut { layer: 1 } => Err(MyError::Refused(h)),
            _ => Ok(()),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        MyError::Refused(HookPoint::MlpOut { layer: 1 })
    ));
}

#[test]
fn capture_without_logits_stops_early_and_skips_the_unembedding() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let ids = ndarray::array![[5u32, 17, 3]];
    let hooks = [HookPoint::ResidPre { layer: 1 }];
    let out = model
        .run(&Forward::tokens(ids.view()).capture(&hooks).logits(false))
        .unwrap();
    assert!(out.logits.is_none() && out.trace.is_none());
    assert_eq!(out.hooks[&hooks[0]].dim(), (1, 3, 32));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model: Transformer = Transformer::load(&tiny_dir()).unwrap();
    let err = |ids: Array2<u32>, mask: Option<Array2<u8>>, hooks: &[HookPoint]| {
        model
            .forward(ids.view(), mask.as_ref().map(|m| m.view()), hooks)
            .unwrap_err()
            .to_string()
    };
    let e = err(ndarray::array![[1u32, 100]], None, &[]);
    assert!(
        e.contains("token 100") && e.contains("vocab_size = 100"),
        "{e}"
    );
    let e = err(Array2::zeros((1, 17)), None, &[]);
    assert!(
        e.contains("sequence length 17") && e.contains("context is 16 positions"),
        "{e}"
    );
    let e = err(Array2::zeros((1, 4)), Some(Array2::ones((1, 3))), &[]);
    assert!(e.contains("attention_mask"), "{e}");
    let e = err(
        Array2::zeros((1, 4)),
        None,
        &[HookPoint::ResidPre { layer: 2 }],
    );
    assert!(
        e.contains("blocks.2.hook_resid_pre") && e.contains("blocks 0..1"),
        "{e}"
    );
    let e = err(Array2::zeros((1, 4)), None, &[HookPoint::ToyHidden]);
    assert!(e.contains("toy"), "{e}");
}

#[test]
fn missing_or_misshapen_tensors_name_the_tensor_and_the_file() {
    let bytes = std::fs::read(tiny_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let views: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "transformer.h.1.ln_2.bias")
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        tiny_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = Transformer::<f32>::load(dir.path())
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("transformer.h.1.ln_2.bias") && e.contains("it has: transformer."),
        "{e}"
    );

    // A config that disagrees with the weights.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let cfg = cfg.replace("\"n_positions\": 16", "\"n_positions\": 64");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let e = Transformer::<f32>::load(dir.path())
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("transformer.wpe.weight") && e.contains("[64, 32]") && e.contains("[16, 32]"),
        "{e}"
    );
}

#[test]
fn random_models_are_reproducible_from_their_seed() {
    use rand::SeedableRng;
    let cfg = circuitry_core::ModelConfig::load(&tiny_dir().join("config.json")).unwrap();
    let make = |seed| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Transformer::<f32>::random(cfg.clone(), &mut rng).unwrap()
    };
    let ids = ndarray::array![[1u32, 2, 3]];
    let logits = |m: &Transformer| m.forward(ids.view(), None, &[]).unwrap().logits.unwrap();
    let (a, b, c) = (make(1), make(1), make(2));
    assert_eq!(logits(&a).dim(), (1, 3, 100));
    assert_eq!(logits(&a), logits(&b));
    assert_ne!(logits(&a), logits(&c));
}
