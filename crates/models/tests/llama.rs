//! The Llama family (RMSNorm, rotary positions, grouped-query attention, SwiGLU):
//!
//! - the backward pass against f64 central finite differences at every kind of hook, on a
//!   random Llama with wide weights (so every nonlinearity matters), grouped key/value
//!   heads, tied embeddings and left padding — every new vector–Jacobian product (RMSNorm,
//!   rotary attention with shared key/value heads, SwiGLU) lies on these paths;
//! - golden values from transformers (`scripts/llama_golden.py`, eager attention) on the
//!   committed `tests/data/llama_tiny_random` (untied embeddings): every hook, the logits
//!   and float64 autograd gradients;
//! - SmolLM2-135M itself when `scripts/setup-model.sh smollm2-135m` has been run (its
//!   golden file is written by the setup); `CIRCUITRY_REQUIRE_SMOLLM2=1` (CI) turns a
//!   missing model into a failure instead of a skip.
use std::path::{Path, PathBuf};

use circuitry_core::{Family, HookPoint, ModelConfig};
use circuitry_models::tensors::{write_f32, TensorFile};
use circuitry_models::transformer::{Backward, Forward, Scalar, Transformer};
use ndarray::{array, Array2, Array3, ArrayView3, ArrayViewMut3};
use ndarray_rand::RandomExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Normal, StandardNormal};

const EPS: f64 = 1e-5;
const D: usize = 32;
const VOCAB: usize = 100;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A random Llama (2 layers, d 32, 4 query heads over 2 key/value heads, d_mlp 48,
/// tied embeddings) with weights wide enough that attention is far from uniform.
fn wide_random_llama(dir: &Path) -> Transformer<f64> {
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": D, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": VOCAB,
        "max_position_embeddings": 16, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "hidden_act": "silu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, std: f64, mean: f64| {
        let n = shape.iter().product();
        let normal = Normal::new(mean, std).unwrap();
        let v = (0..n).map(|_| rng.sample(normal) as f32).collect();
        tensors.push((name, shape, v));
    };
    add("model.embed_tokens.weight".into(), vec![VOCAB, D], 0.5, 0.0);
    add("model.norm.weight".into(), vec![D], 0.2, 1.0);
    for l in 0..2 {
        let p = format!("model.layers.{l}.");
        add(format!("{p}input_layernorm.weight"), vec![D], 0.2, 1.0);
        add(
            format!("{p}post_attention_layernorm.weight"),
            vec![D],
            0.2,
            1.0,
        );
        add(format!("{p}self_attn.q_proj.weight"), vec![D, D], 0.25, 0.0);
        add(
            format!("{p}self_attn.k_proj.weight"),
            vec![16, D],
            0.25,
            0.0,
        );
        add(
            format!("{p}self_attn.v_proj.weight"),
            vec![16, D],
            0.25,
            0.0,
        );
        add(format!("{p}self_attn.o_proj.weight"), vec![D, D], 0.25, 0.0);
        add(format!("{p}mlp.gate_proj.weight"), vec![48, D], 0.25, 0.0);
        add(format!("{p}mlp.up_proj.weight"), vec![48, D], 0.25, 0.0);
        add(format!("{p}mlp.down_proj.weight"), vec![D, 48], 0.25, 0.0);
    }
    let views: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.as_slice()))
        .collect();
    write_f32(&dir.join("model.safetensors"), &views, None).unwrap();
    Transformer::load(dir).unwrap()
}

/// A left-padded batch: (ids, mask), each (batch, seq).
fn batch() -> (Array2<u32>, Array2<u8>) {
    let ids = array![[5u32, 17, 3, 99, 42, 8, 11], [0, 0, 61, 2, 77, 30, 9]];
    let mask = array![[1u8, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]];
    (ids, mask)
}

fn dot(r: &Array3<f64>, x: &Array3<f64>) -> f64 {
    (r * x).sum()
}

/// Central difference of `metric(run with ±EPS at (hook, b, s, i))`.
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

/// Random coordinates at real (unpadded) tokens.
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
fn llama_config_loads_as_the_llama_family_without_position_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let model = wide_random_llama(dir.path());
    let c = model.config();
    assert_eq!(c.family, Family::Llama);
    assert_eq!((c.n_head, c.n_kv_head, c.d_kv(), c.d_mlp), (4, 2, 16, 48));
    assert_eq!(model.width(HookPoint::MlpPost { layer: 0 }), 48);
    let (ids, _) = batch();
    let e = model
        .run(&Forward::tokens(ids.view()).capture(&[HookPoint::PosEmbed]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rotary") && e.contains("hook_pos_embed"), "{e}");
}

#[test]
fn llama_gradients_from_logits_match_finite_differences_at_every_hook_kind() {
    let dir = tempfile::tempdir().unwrap();
    let model = wide_random_llama(dir.path());
    let (ids, mask) = batch();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut r = Array3::<f64>::random_using((2, 7, VOCAB), StandardNormal, &mut rng);
    for ((b, s, _), v) in r.indexed_iter_mut() {
        *v *= f64::from(mask[[b, s]]);
    }
    let hooks = [
        HookPoint::Embed,
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
        for at in coords(&mut rng, &mask, model.width(hook), 8) {
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
    let g = &grads[&HookPoint::ResidPre { layer: 0 }];
    assert!(g.slice(ndarray::s![1, ..2, ..]).iter().all(|&v| v == 0.0));
}

#[test]
fn llama_gradients_from_a_cached_resid_pre_and_a_seed_match_finite_differences() {
    // m = sum(G * mlp_out[1]) from a run that starts at resid_pre[1] (rotary positions from
    // the mask), and a detached attn_out[1]: only the resid → MLP path remains.
    let dir = tempfile::tempdir().unwrap();
    let model = wide_random_llama(dir.path());
    let (ids, mask) = batch();
    let start = HookPoint::ResidPre { layer: 1 };
    let cached = model
        .run(
            &Forward::tokens(ids.view())
                .mask(mask.view())
                .capture(&[start]),
        )
        .unwrap()
        .hooks[&start]
        .clone();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let seed = HookPoint::MlpOut { layer: 1 };
    let g = Array3::<f64>::random_using((2, 7, D), StandardNormal, &mut rng);
    for detach in [vec![], vec![HookPoint::AttnOut { layer: 1 }]] {
        let run = || {
            Forward::from_resid_pre(1, cached.view())
                .mask(mask.view())
                .logits(false)
        };
        let attn = [HookPoint::AttnOut { layer: 1 }];
        let out = model.run(&run().trace(true).capture(&attn)).unwrap();
        let clean_attn = out.hooks[&HookPoint::AttnOut { layer: 1 }].clone();
        let want = [start];
        let grads = model
            .backward(
                out.trace.as_ref().unwrap(),
                &Backward::from_hook(seed, g.view())
                    .want(&want)
                    .detach(&detach),
            )
            .unwrap();
        let mut pairs = Vec::new();
        let capture = [seed];
        for at in coords(&mut rng, &mask, D, 12) {
            let fd = central(start, at, |edit| {
                let out = model
                    .run_with(&run().capture(&capture), |h, mut a| {
                        edit(h, a.view_mut());
                        if !detach.is_empty() && h == (HookPoint::AttnOut { layer: 1 }) {
                            a.assign(&clean_attn);
                        }
                        Ok::<(), circuitry_models::Error>(())
                    })
                    .unwrap();
                dot(&g, &out.hooks[&seed])
            });
            pairs.push((grads[&start][at], fd));
        }
        check(&format!("resid_pre[1], detached {detach:?}"), &pairs, 1e-6);
    }
}

#[test]
fn llama_left_padding_does_not_change_activations_at_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let model = wide_random_llama(dir.path()).cast::<f32>();
    let (ids, mask) = batch();
    let hooks = [HookPoint::ResidPost { layer: 1 }];
    let padded = model
        .run(
            &Forward::tokens(ids.view())
                .mask(mask.view())
                .capture(&hooks),
        )
        .unwrap();
    let alone = ids.slice(ndarray::s![1..2, 2..]).to_owned();
    let plain = model
        .run(&Forward::tokens(alone.view()).capture(&hooks))
        .unwrap();
    let a = padded.hooks[&hooks[0]]
        .slice(ndarray::s![1..2, 2.., ..])
        .to_owned();
    let b = &plain.hooks[&hooks[0]];
    let diff = (&a - b).iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("left padding: max |diff| {diff:.2e}");
    assert!(diff < 1e-5, "{diff}");
}

/// Golden tensors written by `scripts/llama_golden.py`.
struct Golden {
    file: TensorFile,
    ids: Array2<u32>,
    mask: Array2<u8>,
}

impl Golden {
    fn load(path: &Path) -> Golden {
        let file = TensorFile::read(path).unwrap();
        let shape = file.shape("input_ids").unwrap().to_vec();
        let ids = file.get("input_ids", &shape).unwrap();
        let (b, s) = (shape[0], shape[1]);
        let ids = Array2::from_shape_fn((b, s), |(i, j)| ids[[i, j]] as u32);
        let m = file.get("attention_mask", &[b, s]).unwrap();
        let mask = Array2::from_shape_fn((b, s), |(i, j)| m[[i, j]] as u8);
        Golden { file, ids, mask }
    }

    fn get3<A: Scalar>(&self, name: &str, width: usize) -> Array3<A> {
        let (b, s) = self.ids.dim();
        let t = self.file.get(name, &[b, s, width]).unwrap();
        Array3::from_shape_fn((b, s, width), |(i, j, k)| A::of(f64::from(t[[i, j, k]])))
    }
}

/// Max |a − b| / max(1, max |b|) over real tokens.
fn rel_diff_masked<A: Scalar>(a: ArrayView3<A>, b: ArrayView3<A>, mask: &Array2<u8>) -> f64 {
    let mut diff = 0.0f64;
    let mut scale = 1.0f64;
    for ((i, j, k), &x) in a.indexed_iter() {
        if mask[[i, j]] != 0 {
            let y = b[[i, j, k]].to_f64().unwrap();
            diff = diff.max((x.to_f64().unwrap() - y).abs());
            scale = scale.max(y.abs());
        }
    }
    diff / scale
}

/// Forward (f32) at the golden file's hooks and logits, and gradients (f64) at the
/// hooks that have `grad.<hook>` entries.
fn compare_with_golden(model_dir: &Path, golden: &Path, tol_f32: f64, tol_grad: f64) {
    let g = Golden::load(golden);
    let model: Transformer<f32> = Transformer::load(model_dir).unwrap();
    let names = g.file.names();
    let hooks: Vec<HookPoint> = names.iter().filter_map(|n| n.parse().ok()).collect();
    let grad_hooks: Vec<HookPoint> = names
        .iter()
        .filter_map(|n| n.strip_prefix("grad.").and_then(|h| h.parse().ok()))
        .collect();
    assert!(!hooks.is_empty(), "no hooks in {}", golden.display());
    let out = model
        .run(
            &Forward::tokens(g.ids.view())
                .mask(g.mask.view())
                .capture(&hooks),
        )
        .unwrap();
    let vocab = model.config().vocab_size;
    let logits = out.logits.as_ref().unwrap();
    let d = rel_diff_masked(
        logits.view(),
        g.get3::<f32>("logits", vocab).view(),
        &g.mask,
    );
    println!("{:40} relative max diff {d:.2e}", "logits (f32)");
    assert!(d <= tol_f32, "logits: {d:.2e} > {tol_f32:.0e}");
    for &h in &hooks {
        let want = g.get3::<f32>(&h.to_string(), model.width(h));
        let d = rel_diff_masked(out.hooks[&h].view(), want.view(), &g.mask);
        println!("{:40} relative max diff {d:.2e}", h.to_string());
        assert!(d <= tol_f32, "{h}: {d:.2e} > {tol_f32:.0e}");
    }
    if grad_hooks.is_empty() {
        return;
    }
    let model64: Transformer<f64> = model.cast();
    let out = model64
        .run(
            &Forward::tokens(g.ids.view())
                .mask(g.mask.view())
                .trace(true),
        )
        .unwrap();
    let r = g.get3::<f64>("metric_weights", vocab);
    let grads = model64
        .backward(
            out.trace.as_ref().unwrap(),
            &Backward::from_logits(r.view()).want(&grad_hooks),
        )
        .unwrap();
    for &h in &grad_hooks {
        let want = g.get3::<f64>(&format!("grad.{h}"), model64.width(h));
        let d = rel_diff_masked(grads[&h].view(), want.view(), &g.mask);
        println!("{:40} relative max diff {d:.2e}", format!("grad.{h}"));
        assert!(d <= tol_grad, "grad.{h}: {d:.2e} > {tol_grad:.0e}");
    }
}

#[test]
fn llama_forward_and_backward_match_transformers_on_a_random_config() {
    compare_with_golden(
        &data().join("llama_tiny_random"),
        &data().join("llama_golden.safetensors"),
        1e-5,
        1e-6,
    );
}

#[test]
fn smollm2_matches_transformers_at_every_golden_hook() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/smollm2-135m");
    let golden = root.join("golden.safetensors");
    if !golden.exists() {
        let msg = format!(
            "{} missing: run scripts/setup-model.sh smollm2-135m",
            golden.display()
        );
        if std::env::var_os("CIRCUITRY_REQUIRE_SMOLLM2").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
        return;
    }
    let cfg = ModelConfig::load(&root.join("config.json")).unwrap();
    assert_eq!(
        (cfg.family, cfg.n_layer, cfg.d_model),
        (Family::Llama, 30, 576)
    );
    // 30 layers of f32 arithmetic in two orders: relative 1e-4 (the bound).
    compare_with_golden(&root, &golden, 1e-4, 1e-3);
}
