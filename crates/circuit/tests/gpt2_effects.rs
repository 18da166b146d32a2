//! Node effects and evaluation on the tiny random GPT-2 with random SAEs: attribution
//! agrees with exact patching for small changes, integrated gradients with many steps
//! sum to the exact effect of patching the whole submodule, the node effects of a
//! submodule sum to ∇m · Δx, and faithfulness runs from 0 (empty) to 1 (everything).
use std::collections::BTreeMap;

use circuitry_circuit::gpt2::discover::{analyse, sweep, Aggregation};
use circuitry_circuit::gpt2::splice::SubState;
use circuitry_circuit::gpt2::{logit_diff, node_effects, prepare, Ablation, Method};
use circuitry_models::transformer::{replace_at, Forward};

use circuitry_models::transformer::Transformer;

use crate::gpt2_fixtures::{assert_close, batch, llama_model, model, submodules};

#[test]
fn attribution_equals_exact_patching_for_small_changes() {
    attribution_equals_exact_patching_for_small_changes_on(model(), 0.01);
}

#[test]
fn attribution_equals_exact_patching_for_small_changes_llama() {
    // The random Llama's weights are wider: its metric is linear over a smaller range.
    attribution_equals_exact_patching_for_small_changes_on(llama_model(), 0.002);
}

fn attribution_equals_exact_patching_for_small_changes_on(model: Transformer, shrink: f32) {
    let subs = submodules(&model, 24);
    let pb = batch(3, 3);
    let mut prep = prepare(&model, &subs, &pb).unwrap();
    // Shrink every patch change (to 1% on GPT-2) so that the metric is close to linear in it.
    for d in &mut prep.delta {
        *d = SubState {
            f: &d.f * shrink,
            err: &d.err * shrink,
        };
    }
    let attr = node_effects(&model, &subs, &pb, &prep, Method::Attribution, 4096).unwrap();
    let exact = node_effects(&model, &subs, &pb, &prep, Method::Exact, 4096).unwrap();
    let mut pairs = Vec::new();
    for s in 0..subs.len() {
        for (a, e) in attr.feat[s].iter().zip(&exact.feat[s]) {
            pairs.push((f64::from(*a), f64::from(*e)));
        }
        for (a, e) in attr.err[s].iter().zip(&exact.err[s]) {
            pairs.push((f64::from(*a), f64::from(*e)));
        }
    }
    assert!(pairs.iter().filter(|(_, e)| *e != 0.0).count() > 50);
    let name = format!("attribution vs exact ({}% changes)", shrink * 100.0);
    assert_close(&name, &pairs, 0.05, 1e-7);
}

#[test]
fn node_effects_of_a_submodule_sum_to_its_total_effect() {
    node_effects_of_a_submodule_sum_to_its_total_effect_on(model());
}

#[test]
fn node_effects_of_a_submodule_sum_to_its_total_effect_llama() {
    node_effects_of_a_submodule_sum_to_its_total_effect_on(llama_model());
}

fn node_effects_of_a_submodule_sum_to_its_total_effect_on(model: Transformer) {
    let subs = submodules(&model, 24);
    let pb = batch(3, 4);
    let prep = prepare(&model, &subs, &pb).unwrap();
    let answers: Vec<(u32, u32)> = pb
        .clean_answer
        .iter()
        .copied()
        .zip(pb.patch_answer.iter().copied())
        .collect();
    let patch = model
        .run(&Forward::tokens(pb.patch.view()).capture(&subs.hooks()))
        .unwrap()
        .hooks;
    let attr = node_effects(&model, &subs, &pb, &prep, Method::Attribution, 4096).unwrap();
    let ig = node_effects(
        &model,
        &subs,
        &pb,
        &prep,
        Method::IntegratedGradients { steps: 200 },
        4096,
    )
    .unwrap();
    let (mut attr_pairs, mut ig_pairs) = (Vec::new(), Vec::new());
    for (s, sub) in subs.all().iter().enumerate() {
        // Exact effect of patching the whole submodule.
        let values: BTreeMap<_, _> = [(sub.hook, patch[&sub.hook].clone())].into();
        let out = model
            .run_with(&Forward::tokens(pb.clean.view()), replace_at(&values))
            .unwrap();
        let m = logit_diff(out.logits.unwrap().view(), &answers).0;
        // ∇m · Δx at the hook.
        let dx = &patch[&sub.hook]
            - &model
                .run(&Forward::tokens(pb.clean.view()).capture(&[sub.hook]))
                .unwrap()
                .hooks[&sub.hook];
        for b in 0..pb.len() {
            let sum = |e: &circuitry_circuit::gpt2::NodeEffects| {
                f64::from(e.feat[s].index_axis(ndarray::Axis(0), b).sum())
                    + f64::from(e.err[s].row(b).sum())
            };
            let linear = f64::from(
                (&prep.grad[s].index_axis(ndarray::Axis(0), b)
                    * &dx.index_axis(ndarray::Axis(0), b))
                    .sum(),
            );
            attr_pairs.push((sum(&attr), linear));
            ig_pairs.push((sum(&ig), f64::from(m[b] - prep.metric[b])));
        }
    }
    assert_close("Σ attribution effects vs ∇m·Δx", &attr_pairs, 1e-3, 1e-7);
    assert_close(
        "Σ IG(200 steps) effects vs exact submodule patch",
        &ig_pairs,
        0.02,
        1e-6,
    );
}

#[test]
fn faithfulness_is_one_for_the_whole_model_and_zero_for_the_empty_circuit() {
    faithfulness_is_one_for_the_whole_model_and_zero_for_the_empty_circuit_on(model());
}

#[test]
fn faithfulness_is_one_for_the_whole_model_and_zero_for_the_empty_circuit_llama() {
    faithfulness_is_one_for_the_whole_model_and_zero_for_the_empty_circuit_on(llama_model());
}

fn faithfulness_is_one_for_the_whole_model_and_zero_for_the_empty_circuit_on(model: Transformer) {
    let subs = submodules(&model, 16);
    // batch(4, 12) holds pairs the random GPT-2 gets right (the others none).
    let batches = vec![batch(4, 5), batch(3, 6), batch(4, 12)];
    let analysis = analyse(&model, &subs, &batches, Method::Attribution, 4096).unwrap();
    let (ends, rows) = sweep(
        &model,
        &subs,
        &batches,
        &analysis,
        Aggregation::Sum,
        Ablation::Mean,
        &[-1.0, 1e9],
    )
    .unwrap();
    // Splicing without ablation is the identity: F(M) is the clean metric.
    let clean: f64 = analysis
        .preps
        .iter()
        .flat_map(|p| p.metric.iter().map(|&v| f64::from(v)))
        .sum::<f64>()
        / 11.0;
    println!("F(M) {} clean {clean} F(∅) {}", ends.f_model, ends.f_empty);
    assert!((ends.f_model - clean).abs() <= 1e-5 * clean.abs().max(1e-3));
    assert!((ends.f_model - ends.f_empty).abs() > 1e-6);
    let all = &rows[0];
    let none = &rows[1];
    assert_eq!(all.nodes, analysis.scored_nodes(Aggregation::Sum).len());
    assert_eq!(none.nodes, 0);
    assert!(
        (all.faithfulness - 1.0).abs() < 1e-9,
        "{}",
        all.faithfulness
    );
    assert!(none.faithfulness.abs() < 1e-9, "{}", none.faithfulness);
    assert!((all.complement_faithfulness).abs() < 1e-9);
    assert!((none.complement_faithfulness - 1.0).abs() < 1e-9);

    // The pairs the model gets right, counted from plain forwards of both prompts.
    let mut right_metrics = Vec::new();
    for b in &batches {
        let ans = circuitry_circuit::gpt2::answers(b);
        let run = |t| model.run(&Forward::tokens(t)).unwrap().logits.unwrap();
        let (clean_m, _) = logit_diff(run(b.clean.view()).view(), &ans);
        let (patch_m, _) = logit_diff(run(b.patch.view()).view(), &ans);
        for (c, p) in clean_m.iter().zip(&patch_m) {
            if *c < 0.0 && *p > 0.0 {
                right_metrics.push(f64::from(*c));
            }
        }
    }
    println!("pairs right: {} of 11", right_metrics.len());
    assert_eq!(ends.pairs_right, right_metrics.len());
    assert!(
        (1..11).contains(&ends.pairs_right),
        "the fixture should have some right and some wrong pairs"
    );
    let right_mean = right_metrics.iter().sum::<f64>() / right_metrics.len() as f64;
    let f_model_right = ends.f_model_right.unwrap();
    assert!((f_model_right - right_mean).abs() <= 1e-5 * right_mean.abs().max(1e-3));
    assert!((all.faithfulness_right.unwrap() - 1.0).abs() < 1e-9);
    assert!(none.faithfulness_right.unwrap().abs() < 1e-9);
    assert!((none.complement_faithfulness_right.unwrap() - 1.0).abs() < 1e-9);
}

#[test]
fn per_position_effects_sum_to_the_position_summed_effects() {
    per_position_effects_sum_to_the_position_summed_effects_on(model());
}

#[test]
fn per_position_effects_sum_to_the_position_summed_effects_llama() {
    per_position_effects_sum_to_the_position_summed_effects_on(llama_model());
}

fn per_position_effects_sum_to_the_position_summed_effects_on(model: Transformer) {
    let subs = submodules(&model, 16);
    let batches = vec![batch(3, 7)];
    let a = analyse(
        &model,
        &subs,
        &batches,
        Method::IntegratedGradients { steps: 4 },
        4096,
    )
    .unwrap();
    let summed = a.scored_nodes(Aggregation::Sum);
    let per = a.scored_nodes(Aggregation::PerPosition);
    assert_eq!(per.len(), summed.len() * 5);
    let mut pairs = Vec::new();
    for n in &summed {
        let total: f64 = per
            .iter()
            .filter(|m| m.node.sub == n.node.sub && m.node.feature == n.node.feature)
            .map(|m| m.effect)
            .sum();
        pairs.push((total, n.effect));
    }
    assert_close("Σ_p per-position effect vs summed", &pairs, 1e-9, 1e-12);
}
