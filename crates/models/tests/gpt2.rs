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
use circuitry_models::gpt2::{replace_at, Backward, Forward, Gpt2, Scalar};
use circuitry_models::tensors::TensorFile;
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
    let model: Gpt2 = Gpt2::load(&tiny_dir()).unwrap();
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
    let model64: Gpt2<f64> = Gpt2::load(&tiny_dir()).unwrap();
    let model32: Gpt2 = Gpt2::load(&tiny_dir()).unwrap();
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
    let plain: Gpt2 = Gpt2::load(dir.path()).unwrap();
    let prefixed: Gpt2 = Gpt2::load(&tiny_dir()).unwrap();
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
