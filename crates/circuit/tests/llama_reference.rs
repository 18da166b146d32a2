//! Node effects on the tiny random Llama against a PyTorch autograd reference
//! (`scripts/circuit_reference.py --fixture`, float64, Marks et al.'s splicing): six SAEs
//! of 24 latents on resid_pre / attn_out / mlp_out of both blocks (standard, TopK and
//! JumpReLU; with and without `apply_b_dec_to_input`; constant-norm rescaling and mean
//! centring), three pairs of six tokens. Attribution and integrated gradients (10 steps)
//! must agree with the reference to 1e-4 relative on effects above 0.01
//! (`|got − want| ≤ 1e-4 · max(|want|, 0.01)` for every node), IG with an extra
//! absolute 5e-6 (float32 rounding, see below); exact patching, a difference of two
//! float32 metrics, gets an extra absolute 2e-5.
use std::path::{Path, PathBuf};

use circuitry_circuit::gpt2::{node_effects, prepare, Method, PairBatch, Submodule, Submodules};
use circuitry_models::tensors::TensorFile;
use circuitry_sae::Sae;
use ndarray::{Array2, ArrayD};

use crate::gpt2_fixtures::llama_model;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llama_reference")
}

const HOOKS: [&str; 6] = [
    "blocks.0.hook_resid_pre",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_mlp_out",
    "blocks.1.hook_resid_pre",
    "blocks.1.hook_attn_out",
    "blocks.1.hook_mlp_out",
];

fn get(file: &TensorFile, name: &str) -> ArrayD<f32> {
    let shape = file
        .shape(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_vec();
    file.get(name, &shape).unwrap()
}

fn ids(file: &TensorFile, name: &str) -> Array2<u32> {
    get(file, name)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        .mapv(|v| v as u32)
}

fn answers(file: &TensorFile, name: &str) -> Vec<u32> {
    get(file, name).iter().map(|&v| v as u32).collect()
}

/// Compare every node: `|got − want| ≤ 1e-4 · max(|want|, 0.01) + abs`; print the max
/// difference and the max relative difference over effects above 0.01.
fn compare(name: &str, got: &[f32], want: &[f32], abs: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let (mut max_abs, mut max_rel, mut big) = (0.0f64, 0.0f64, 0usize);
    let mut worst = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let d = (g - w).abs();
        max_abs = max_abs.max(d);
        if w.abs() > 0.01 {
            big += 1;
            max_rel = max_rel.max(d / w.abs());
        }
        if d > 1e-4 * w.abs().max(0.01) + abs && worst.is_none() {
            worst = Some((i, g, w));
        }
    }
    println!(
        "{name}: {} nodes, {big} above 0.01, max |diff| {max_abs:.3e}, max rel diff (> 0.01) {max_rel:.3e}",
        got.len()
    );
    if let Some((i, g, w)) = worst {
        panic!("{name}: node {i}: got {g:.7e}, reference {w:.7e} (tolerance 1e-4 · max(|ref|, 0.01) + {abs:.0e})");
    }
}

/// The fixture's SAEs and pairs.
fn fixture(reference: &TensorFile) -> (Submodules, PairBatch) {
    let dir = data_dir();
    let model = llama_model();
    let c = model.config();
    let subs = HOOKS
        .iter()
        .map(|h| Submodule::new(Sae::load(&dir.join(format!("sae_{h}"))).unwrap()).unwrap())
        .collect();
    let subs = Submodules::new(subs, c.d_model, c.n_layer).unwrap();
    let clean = ids(reference, "clean_ids");
    let n = clean.nrows();
    let batch = PairBatch {
        examples: (0..n as u32).collect(),
        clean,
        patch: ids(reference, "patch_ids"),
        clean_answer: answers(reference, "clean_answer"),
        patch_answer: answers(reference, "patch_answer"),
        cases: vec!["singular".into(); n],
    };
    (subs, batch)
}

#[test]
fn node_effects_match_the_pytorch_reference_on_the_tiny_llama() {
    let dir = data_dir();
    let reference = TensorFile::read(&dir.join("reference.safetensors")).unwrap();
    let model = llama_model();
    let (subs, batch) = fixture(&reference);
    let prep = prepare(&model, &subs, &batch).unwrap();
    let metric: Vec<f32> = prep.metric.to_vec();
    compare(
        "metric",
        &metric,
        get(&reference, "metric").as_slice().unwrap(),
        0.0,
    );
    // Exact effects are differences of two float32 metrics (|m| up to ~3 here): their
    // absolute error cannot go below the metric's own float32 error (the metric above
    // agrees to ~1.5e-6), so they get an absolute floor of 2e-5 on top of the 1e-4
    // relative bound. IG effects sum ten float32 gradient products, each with an error
    // of the metric's order: 1e-4 of an effect of 0.02 is 2e-6, at that noise, and runs
    // that differ only in rounding (IG over the positions after the pairs' shared
    // prefix, or over all of them: see the next test) land on either side of it. So IG
    // gets an absolute floor of 5e-6; attribution (one gradient) needs none.
    let methods = [
        ("attr", Method::Attribution, 0.0),
        ("ig", Method::IntegratedGradients { steps: 10 }, 5e-6),
        ("exact", Method::Exact, 2e-5),
    ];
    let mut nonzero = 0;
    for (tag, method, abs) in methods {
        let eff = node_effects(&model, &subs, &batch, &prep, method, 4096).unwrap();
        for (s, hook) in HOOKS.iter().enumerate() {
            assert_eq!(subs.all()[s].hook.to_string(), *hook);
            let want = get(&reference, &format!("{tag}.feat.{hook}"));
            assert_eq!(
                want.shape(),
                eff.feat[s].shape(),
                "{tag}.feat.{hook}: shape"
            );
            nonzero += want.iter().filter(|v| v.abs() > 0.01).count();
            let got: Vec<f32> = eff.feat[s].iter().copied().collect();
            compare(
                &format!("{tag} features {hook}"),
                &got,
                want.as_slice().unwrap(),
                abs,
            );
            let want = get(&reference, &format!("{tag}.err.{hook}"));
            let got: Vec<f32> = eff.err[s].iter().copied().collect();
            compare(
                &format!("{tag} error {hook}"),
                &got,
                want.as_slice().unwrap(),
                abs,
            );
        }
    }
    // The comparison is not vacuous: many effects are above 0.01.
    assert!(nonzero > 300, "only {nonzero} reference effects above 0.01");
}

/// IG's runs start after the positions where clean and patch agree (the clean run's
/// keys and values stand in for them): the same effects as runs over every position,
/// to float32 rounding, and exactly zero at those positions.
#[test]
fn ig_after_the_shared_prefix_equals_ig_over_every_position() {
    let reference = TensorFile::read(&data_dir().join("reference.safetensors")).unwrap();
    let model = llama_model();
    let (subs, batch) = fixture(&reference);
    // Pairs that agree on their first three tokens, as agreement templates do.
    let mut batch = batch;
    let shared = batch.clean.slice(ndarray::s![.., ..3]).to_owned();
    batch.patch.slice_mut(ndarray::s![.., ..3]).assign(&shared);
    let prep = prepare(&model, &subs, &batch).unwrap();
    let pre = prep.prefix.as_ref().map_or(0, |kv| kv.len());
    assert!(pre >= 3, "the pairs share {pre} leading positions");
    let mut whole = prep.clone();
    whole.prefix = None;
    let ig = Method::IntegratedGradients { steps: 10 };
    let a = node_effects(&model, &subs, &batch, &prep, ig, 4096).unwrap();
    let b = node_effects(&model, &subs, &batch, &whole, ig, 4096).unwrap();
    let scale = b.feat.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut max_diff = 0.0f32;
    for (x, y) in a.feat.iter().zip(&b.feat) {
        max_diff = x
            .iter()
            .zip(y)
            .fold(max_diff, |m, (p, q)| m.max((p - q).abs()));
        let head = x.slice(ndarray::s![.., ..pre, ..]);
        assert!(head.iter().all(|&v| v == 0.0), "effects in the prefix");
    }
    for (x, y) in a.err.iter().zip(&b.err) {
        max_diff = x
            .iter()
            .zip(y)
            .fold(max_diff, |m, (p, q)| m.max((p - q).abs()));
        let head = x.slice(ndarray::s![.., ..pre]);
        assert!(
            head.iter().all(|&v| v == 0.0),
            "error effects in the prefix"
        );
    }
    println!("prefix of {pre} positions: max |diff| {max_diff:.3e} (largest effect {scale:.3})");
    assert!(max_diff <= 1e-5 * scale.max(1.0), "max |diff| {max_diff}");
}
