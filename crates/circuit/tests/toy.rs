//! The toy circuit's contributions are exact decompositions of the model and the SAE.
use circuitry_circuit::toy::{build_circuit, contributions};
use circuitry_circuit::{NodeKind, Provenance};
use circuitry_core::HookPoint;

use crate::fixtures::{dataset, random_sae, trained_model};

const TOL: f64 = 1e-5;

fn provenance() -> Provenance {
    Provenance {
        tool_version: "test".into(),
        model: "m".into(),
        dataset: "d".into(),
        saes: Default::default(),
    }
}

#[test]
fn contributions_sum_to_logits_features_and_hidden_for_every_example() {
    let (model, config) = trained_model();
    let data = dataset(&config, 300, 5);
    for apply_b_dec in [true, false] {
        let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, apply_b_dec, 9);
        let c = contributions(&model, &sae, data.inputs.view()).unwrap();
        let pre = sae.encode_pre(model.forward(data.inputs.view()).hidden.view()); // (n, d_sae)
        let (n, d_hidden, d_sae, d_out) = (300, model.d_hidden(), 8, 2);
        let (mut max_logit, mut max_feat, mut max_hidden) = (0.0f64, 0.0f64, 0.0f64);
        let mut active = 0;
        for e in 0..n {
            for o in 0..d_out {
                let sum: f64 = (0..d_sae).map(|k| c.feature_output[[e, k, o]]).sum::<f64>()
                    + c.error_output[[e, o]]
                    + c.output_bias[o];
                max_logit = max_logit.max((sum - c.logits[[e, o]]).abs());
            }
            for k in 0..d_sae {
                let sum: f64 = (0..d_hidden)
                    .map(|j| c.hidden_feature[[e, j, k]])
                    .sum::<f64>()
                    + c.feature_bias[[e, k]];
                // Active features: the sum is the encoder's pre-activation and the feature.
                if c.features[[e, k]] != 0.0 {
                    active += 1;
                    max_feat = max_feat.max((sum - f64::from(pre[[e, k]])).abs());
                    max_feat = max_feat.max((sum - c.features[[e, k]]).abs());
                } else {
                    assert_eq!(sum, 0.0, "inactive feature receives nothing");
                }
            }
            for j in 0..d_hidden {
                let sum: f64 =
                    (0..2).map(|i| c.input_hidden[[e, i, j]]).sum::<f64>() + c.hidden_bias[[e, j]];
                max_hidden = max_hidden.max((sum - c.hidden[[e, j]]).abs());
            }
        }
        println!(
            "apply_b_dec {apply_b_dec}: max |Σ − logit| {max_logit:.2e}, |Σ − pre| {max_feat:.2e}, |Σ − h| {max_hidden:.2e}, {active} active (example, feature) pairs"
        );
        assert!(active > 0, "the test needs active features");
        assert!(max_logit < TOL && max_feat < TOL && max_hidden < TOL);
    }
}

#[test]
fn node_activation_is_incoming_weights_plus_bias_in_every_group() {
    let (model, config) = trained_model();
    let data = dataset(&config, 200, 6);
    let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 10);
    let c = contributions(&model, &sae, data.inputs.view()).unwrap();
    let circuit = build_circuit(&c, &sae, Some(&data.labels), provenance()).unwrap();
    circuit.validate().unwrap();
    assert_eq!(circuit.nodes.len(), 2 + 4 + 8 + 1 + 2);
    assert_eq!(circuit.edges.len(), 2 * 4 + 4 * 8 + 8 * 2 + 2);
    let mut checked = 0;
    let mut max_diff = 0.0f64;
    for node in &circuit.nodes {
        if matches!(node.kind, NodeKind::Input | NodeKind::Error) {
            continue;
        }
        let act = node.activation.as_ref().unwrap();
        let bias = node.bias.as_ref().unwrap();
        let incoming: Vec<_> = circuit
            .edges
            .iter()
            .filter(|e| e.target == node.id)
            .collect();
        for group in [None, Some("runs"), Some("run")] {
            let sum: f64 = incoming
                .iter()
                .map(|e| e.weight.get(group).unwrap())
                .sum::<f64>()
                + bias.get(group).unwrap();
            max_diff = max_diff.max((sum - act.get(group).unwrap()).abs());
            checked += 1;
        }
    }
    println!("{checked} (node, group) identities, max diff {max_diff:.2e}");
    assert!(max_diff < TOL);
    // Group sizes add up, and the trained model is accurate.
    let sizes: u64 = circuit.groups.iter().map(|g| g.n_examples).sum();
    assert_eq!(sizes, 200);
    assert!(circuit.scores["accuracy"] > 0.95, "{:?}", circuit.scores);
}

#[test]
fn effects_of_features_error_and_hidden_sum_to_the_logit_difference() {
    let (model, config) = trained_model();
    let data = dataset(&config, 100, 8);
    let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 11);
    let c = contributions(&model, &sae, data.inputs.view()).unwrap();
    let circuit = build_circuit(&c, &sae, None, provenance()).unwrap();
    let mean_m: f64 = (0..100)
        .map(|e| c.logits[[e, 0]] - c.logits[[e, 1]])
        .sum::<f64>()
        / 100.0;
    let effects = |kinds: &[NodeKind]| -> f64 {
        circuit
            .nodes
            .iter()
            .filter(|n| kinds.contains(&n.kind))
            .map(|n| n.effect.as_ref().unwrap().all)
            .sum()
    };
    let bias_m = c.output_bias[0] - c.output_bias[1];
    let via_sae = effects(&[NodeKind::Feature, NodeKind::Error]) + bias_m;
    let b2 = f64::from(model.fc2_bias[0] - model.fc2_bias[1]);
    let via_hidden = effects(&[NodeKind::Hidden]) + b2;
    println!("mean m {mean_m:.6}, via SAE {via_sae:.6}, via hidden {via_hidden:.6}");
    assert!((via_sae - mean_m).abs() < TOL);
    assert!((via_hidden - mean_m).abs() < TOL);
    assert!(
        !circuit.scores.contains_key("accuracy"),
        "no labels, no accuracy"
    );
}

#[test]
fn sae_on_another_hook_or_width_is_refused() {
    let (model, config) = trained_model();
    let data = dataset(&config, 10, 1);
    let wrong_hook = random_sae(4, 8, HookPoint::ResidPre { layer: 0 }, true, 1);
    let err = contributions(&model, &wrong_hook, data.inputs.view())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.0.hook_resid_pre") && err.contains("toy.hook_hidden"),
        "{err}"
    );
    let wrong_width = random_sae(5, 8, HookPoint::ToyHidden, true, 1);
    let err = contributions(&model, &wrong_width, data.inputs.view())
        .unwrap_err()
        .to_string();
    assert!(err.contains("d_in 5") && err.contains("width 4"), "{err}");
}

#[test]
fn pruning_removes_weak_edges_and_orphaned_nodes_only() {
    let (model, config) = trained_model();
    let data = dataset(&config, 100, 2);
    let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 12);
    let c = contributions(&model, &sae, data.inputs.view()).unwrap();
    let full = build_circuit(&c, &sae, None, provenance()).unwrap();
    let mut weights: Vec<f64> = full.edges.iter().map(|e| e.weight.max_abs()).collect();
    weights.sort_by(f64::total_cmp);
    let threshold = weights[weights.len() / 2];
    let mut pruned = full.clone();
    pruned.prune(threshold);
    pruned.validate().unwrap();
    assert_eq!(pruned.thresholds.min_abs_weight, threshold);
    assert!(pruned.edges.iter().all(|e| e.weight.max_abs() >= threshold));
    let kept = full
        .edges
        .iter()
        .filter(|e| e.weight.max_abs() >= threshold)
        .count();
    assert_eq!(pruned.edges.len(), kept);
    for node in &pruned.nodes {
        let touched = pruned
            .edges
            .iter()
            .any(|e| e.source == node.id || e.target == node.id);
        assert!(
            touched || matches!(node.kind, NodeKind::Input | NodeKind::Output),
            "{}",
            node.id
        );
    }
    let mut same = full.clone();
    same.prune(0.0);
    assert_eq!(
        same.edges.len(),
        full.edges.len(),
        "threshold 0 prunes nothing"
    );
}
