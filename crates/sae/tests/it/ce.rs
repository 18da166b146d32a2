//! `ce_loss_score` against PyTorch: `tests/reference/ce_reference.json` and the small
//! random GPT-2 in `tests/reference/ce_model/` are written by
//! `tests/reference/make_ce_reference.py` (transformers' GPT2LMHeadModel with forward
//! hooks; SAELens's definition of the score). The SAEs' parameters are closed
//! formulas evaluated on both sides.
use std::path::PathBuf;

use circuitry_core::HookPoint;
use circuitry_models::transformer::Transformer;
use circuitry_sae::ce::{self, CeBatch, CeEvaluator};
use circuitry_sae::{ActivationNormalization, Sae, SaeConfig};
use circuitry_store::TokenColumns;
use ndarray::{Array1, Array2};
use serde_json::Value;

/// Tolerance on each cross-entropy (nats): both sides run the model in f32.
const CE_TOLERANCE: f64 = 1e-5;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference")
}

/// The formula SAE of make_ce_reference.py.
fn formula_sae(hook: HookPoint, d_in: usize, d_sae: usize, salt: f64, norm: &str) -> Sae {
    let pair =
        |i: usize, j: usize| f64::from(u8::from(j == i)) - f64::from(u8::from(j == i + d_in));
    let (fi, fj) = (|i: usize| i as f64, |j: usize| j as f64);
    let w_enc = Array2::from_shape_fn((d_in, d_sae), |(i, j)| {
        (pair(i, j) + 0.05 * (1.0 + salt + 7.0 * fi(i) + 3.0 * fj(j)).sin()) as f32
    });
    let w_dec = Array2::from_shape_fn((d_sae, d_in), |(j, i)| {
        (0.8 * pair(i, j) + 0.05 * (2.0 + salt + 5.0 * fi(i) + 11.0 * fj(j)).cos()) as f32
    });
    let b_enc = Array1::from_shape_fn(d_sae, |j| (0.02 * (fj(j) + salt).sin()) as f32);
    let b_dec = Array1::from_shape_fn(d_in, |i| (0.1 * (fi(i) + salt).cos()) as f32);
    let normalize_activations = match norm {
        "none" => ActivationNormalization::None,
        "mean_centre" => ActivationNormalization::MeanCentre,
        "constant_norm_rescale" => ActivationNormalization::ConstantNormRescale,
        other => panic!("unknown normalisation {other}"),
    };
    Sae {
        cfg: SaeConfig {
            normalize_activations,
            ..SaeConfig::new(d_in, d_sae, hook)
        },
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: None,
    }
}

#[test]
fn ce_loss_score_matches_pytorch() {
    let dir = reference_dir();
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ce_reference.json")).unwrap())
            .unwrap();
    let ids: Vec<Vec<u32>> = serde_json::from_value(golden["ids"].clone()).unwrap();
    let counted: Vec<Vec<bool>> = serde_json::from_value(golden["counted"].clone()).unwrap();
    let (b, s) = (ids.len(), ids[0].len());
    let batch = CeBatch {
        ids: Array2::from_shape_fn((b, s), |(i, t)| ids[i][t]),
        counted: Array2::from_shape_fn((b, s), |(i, t)| counted[i][t]),
        rows: Array2::from_shape_fn((b, s), |(i, t)| (i * s + t) as u64),
    };
    let model: Transformer = Transformer::load(&dir.join("ce_model")).unwrap();
    let d = model.config().d_model;
    let ev = CeEvaluator::new(&model, vec![batch]).unwrap();
    let mut max_ce_diff = 0.0f64;
    let mut max_score_diff = 0.0f64;
    for case in golden["cases"].as_array().unwrap() {
        let hook: HookPoint = case["hook"].as_str().unwrap().parse().unwrap();
        let sae = formula_sae(
            hook,
            d,
            case["d_sae"].as_u64().unwrap() as usize,
            case["salt"].as_f64().unwrap(),
            case["normalize_activations"].as_str().unwrap(),
        );
        let got = ev.evaluate(&sae, f32::INFINITY).unwrap();
        let want = |k: &str| case[k].as_f64().unwrap();
        let clean = golden["ce_clean"].as_f64().unwrap();
        println!(
            "{hook}: CE clean {:.6} (torch {clean:.6}), with SAE {:.6} (torch {:.6}), zero {:.6} (torch {:.6}), score {:.6} (torch {:.6})",
            got.ce_clean,
            got.ce_with_sae,
            want("ce_with_sae"),
            got.ce_zero_ablation,
            want("ce_zero_ablation"),
            got.ce_loss_score,
            want("ce_loss_score"),
        );
        for (g, w) in [
            (got.ce_clean, clean),
            (got.ce_with_sae, want("ce_with_sae")),
            (got.ce_zero_ablation, want("ce_zero_ablation")),
        ] {
            max_ce_diff = max_ce_diff.max((g - w).abs());
        }
        // The score's error is the CE errors over its denominator.
        let denom = want("ce_zero_ablation") - clean;
        let score_tol = 3.0 * CE_TOLERANCE / denom.abs();
        let score_diff = (got.ce_loss_score - want("ce_loss_score")).abs();
        max_score_diff = max_score_diff.max(score_diff);
        assert!(
            score_diff <= score_tol,
            "{hook}: score differs by {score_diff:.3e} > {score_tol:.3e}"
        );
        assert_eq!(
            got.tokens,
            counted.iter().flatten().filter(|&&c| c).count() as u64
        );
    }
    println!("max |CE − torch| = {max_ce_diff:.3e} (tolerance {CE_TOLERANCE:.0e}), max |score − torch| = {max_score_diff:.3e}");
    assert!(max_ce_diff <= CE_TOLERANCE);

    // Positions above the outlier norm keep their activation in both edited runs:
    // with every position an outlier, neither run changes the loss.
    let case = &golden["cases"][0];
    let hook: HookPoint = case["hook"].as_str().unwrap().parse().unwrap();
    let sae = formula_sae(
        hook,
        d,
        case["d_sae"].as_u64().unwrap() as usize,
        case["salt"].as_f64().unwrap(),
        case["normalize_activations"].as_str().unwrap(),
    );
    let all_kept = ev.evaluate(&sae, 0.0).unwrap();
    assert_eq!(all_kept.ce_with_sae, all_kept.ce_clean);
    assert_eq!(all_kept.ce_zero_ablation, all_kept.ce_clean);
    // With half the positions outliers, both edited losses move towards the clean one.
    let acts = ev.activations(0, hook).unwrap(); // (windows, len, d)
    let mut norms: Vec<f32> = acts
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    norms.sort_by(f32::total_cmp);
    let half = ev.evaluate(&sae, norms[norms.len() / 2]).unwrap();
    let full = ev.evaluate(&sae, f32::INFINITY).unwrap();
    println!(
        "{hook}: zero-ablation CE {:.4} with half the positions spared, {:.4} with none",
        half.ce_zero_ablation, full.ce_zero_ablation
    );
    assert!(
        (half.ce_zero_ablation - half.ce_clean).abs()
            < (full.ce_zero_ablation - full.ce_clean).abs()
    );
}

#[test]
fn windows_are_rebuilt_from_the_token_columns() {
    // Two sequences stored out of order (positions shuffled), one with a gap, one
    // of length 1: only the two contiguous ones of length ≥ 2 become windows.
    let tokens = TokenColumns {
        seq: vec![1, 0, 1, 0, 2, 2, 1, 3],
        pos: vec![1, 0, 0, 1, 0, 2, 2, 0],
        token_id: vec![11, 20, 10, 21, 30, 32, 12, 40],
        ..Default::default()
    };
    let batches = ce::windows(&tokens, |row| row != 2, 10, 8);
    assert_eq!(batches.len(), 2, "lengths 2 and 3 make two batches");
    let two = &batches[0];
    assert_eq!(two.ids, ndarray::array![[20u32, 21]]);
    assert_eq!(two.rows, ndarray::array![[1u64, 3]]);
    assert_eq!(
        two.counted,
        ndarray::array![[true, false]],
        "the last position predicts nothing"
    );
    let three = &batches[1];
    assert_eq!(three.ids, ndarray::array![[10u32, 11, 12]]);
    assert_eq!(three.rows, ndarray::array![[2u64, 0, 6]]);
    assert_eq!(
        three.counted,
        ndarray::array![[false, true, false]],
        "row 2 is not counted"
    );
    // A cap keeps evenly spaced windows.
    let capped = ce::windows(&tokens, |_| true, 1, 8);
    assert_eq!(capped.len(), 1);
    assert_eq!(capped[0].ids.nrows(), 1);
}

#[test]
fn streamed_windows_equal_the_in_memory_ones_for_any_shard_split() {
    // Sequences as the dump writes them (consecutive rows, increasing seq, positions
    // 0..n), some too short, one with a gap, one starting at position 1; split into
    // chunks at every possible boundary pattern; a cap that keeps evenly spaced ones.
    let mut tokens = TokenColumns::default();
    let lens = [3usize, 1, 4, 2, 5, 3, 2, 6, 1, 3];
    for (seq, &n) in lens.iter().enumerate() {
        for p in 0..n {
            let pos = match seq {
                2 if p == 3 => 5, // a gap
                5 => p + 1,       // does not start at 0
                _ => p,
            };
            tokens.seq.push(seq as u64 * 3);
            tokens.pos.push(pos as u32);
            tokens.token_id.push((seq * 100 + p) as u32);
        }
    }
    let rows = tokens.token_id.len();
    let counted = |row: u64| row % 4 != 1;
    let chunk_of = |a: usize, b: usize| TokenColumns {
        seq: tokens.seq[a..b].to_vec(),
        pos: tokens.pos[a..b].to_vec(),
        token_id: tokens.token_id[a..b].to_vec(),
        ..Default::default()
    };
    for cap in [100, 3, 1, 0] {
        let want = ce::windows(&tokens, counted, cap, 2);
        for split in 1..=rows {
            let cuts: Vec<usize> = (0..rows).step_by(split).chain([rows]).collect();
            let chunks = || {
                cuts.windows(2)
                    .map(|c| Ok(chunk_of(c[0], c[1])))
                    .collect::<Vec<_>>()
                    .into_iter()
            };
            let got = ce::windows_streamed(chunks, &counted, cap, 2)
                .unwrap()
                .expect("the layout the dump writes streams");
            assert_eq!(got, want, "cap {cap}, chunks of {split} rows");
        }
    }
    assert!(!ce::windows(&tokens, counted, 100, 2).is_empty());

    // Sequences out of order, or positions out of order: not streamable (the stage
    // then reads every token column, as `windows` does).
    let shuffled = TokenColumns {
        seq: vec![1, 0, 1, 0],
        pos: vec![0, 0, 1, 1],
        token_id: vec![1, 2, 3, 4],
        ..Default::default()
    };
    let one = || vec![Ok(shuffled.clone())].into_iter();
    assert!(ce::windows_streamed(one, &|_| true, 10, 8)
        .unwrap()
        .is_none());
    let backwards = TokenColumns {
        seq: vec![0, 0, 0],
        pos: vec![1, 0, 2],
        token_id: vec![1, 2, 3],
        ..Default::default()
    };
    let one = || vec![Ok(backwards.clone())].into_iter();
    assert!(ce::windows_streamed(one, &|_| true, 10, 8)
        .unwrap()
        .is_none());
}
