//! The seed's toy feature circuit: inputs (singular, plural) → hidden H1..H4 → SAE
//! features F1..Fk plus the SAE error node → outputs (runs, run).
//!
//! ## Contributions (per example, exact)
//!
//! With `x` the input `(2)`, `h = ReLU(x fc1ᵀ + b₁)` the hidden layer `(d_hidden)`,
//! `f = sae.encode(h)` the features `(d_sae)`, `ĥ = sae.decode(f)` the reconstruction,
//! `e = h − ĥ` the SAE error and `logit = h fc2ᵀ + b₂` `(2)` (index 0 "runs", 1 "run"):
//!
//! | edge | contribution of one example |
//! |---|---|
//! | input i → H_j | `x_i · fc1_weight[j,i]` if H_j is active (`h_j > 0`), else 0 |
//! | H_j → F_k | `(h_j − b_dec_j) · W_enc[j,k]` if F_k is active (`f_k ≠ 0`), else 0; `− b_dec_j` only when the SAE has `apply_b_dec_to_input` |
//! | F_k → output o | `f_k · (W_dec[k,:] · fc2_weight[o,:])` |
//! | error → output o | `(h − ĥ) · fc2_weight[o,:]` |
//!
//! A ReLU (or TopK, or JumpReLU) unit that is off passes nothing, so its incoming
//! contributions are 0; when it is on, its activation is exactly its pre-activation.
//! Hence, for every example, with the constants recorded as node biases:
//!
//! - `h_j = Σ_i (input i → H_j) + b₁_j·[h_j > 0]` (bias of H_j),
//! - `f_k = Σ_j (H_j → F_k) + b_enc_k·[f_k ≠ 0]` (bias of F_k),
//! - `logit_o = Σ_k (F_k → o) + (error → o) + b_dec · fc2_weight[o,:] + fc2_bias[o]`
//!   (bias of output o),
//!
//! and the same identities hold for the means, over all examples and over each group.
//!
//! ## Edge weights and node values
//!
//! An edge's weight is the **mean contribution** over all examples (`all`) and over the
//! examples the model predicts as "runs" and as "run" (groups `runs` and `run`; the
//! mean over an empty group is 0). Node `activation` is the mean of `x_i`, `h_j`, `f_k`,
//! `‖h − ĥ‖₂` (error node) or `logit_o`; node `bias` is the mean constant part above.
//! Node `effect` is the node's mean contribution to the metric
//! `m = logit(runs) − logit(run)`: for features and the error node their edges into
//! "runs" minus into "run"; for H_j, `h_j · (fc2_weight[0,j] − fc2_weight[1,j])`; for
//! input i, gradient × input `x_i · ∂m/∂x_i` (exact for this piecewise-linear network:
//! the input effects plus the active hidden biases' and `fc2_bias`'s share sum to `m`).
use std::collections::BTreeMap;

use circuitry_core::HookPoint;
use circuitry_models::toy::{SubjectVerbAgreementNN, INPUT_NAMES, OUTPUT_NAMES};
use circuitry_sae::Sae;
use ndarray::{Array1, Array2, Array3, ArrayView2};

use crate::graph::{
    Circuit, Described, Edge, Group, Node, NodeKind, Provenance, Stat, Thresholds,
    CIRCUIT_SCHEMA_VERSION,
};
use crate::{Error, Result};

/// Graph layers of the toy circuit.
const LAYER_INPUT: u32 = 0;
const LAYER_HIDDEN: u32 = 1;
const LAYER_FEATURE: u32 = 2;
const LAYER_OUTPUT: u32 = 3;

/// Name of the circuit's method in `circuit.json`.
pub const TOY_METHOD: &str = "mean_contribution";

/// Every per-example quantity of the toy circuit, in f64.
#[derive(Debug, Clone)]
pub struct ToyContributions {
    /// Inputs. (n, d_in)
    pub x: Array2<f64>,
    /// Hidden activations after ReLU. (n, d_hidden)
    pub hidden: Array2<f64>,
    /// SAE feature activations, `sae.encode(hidden)`. (n, d_sae)
    pub features: Array2<f64>,
    /// SAE error `hidden − sae.decode(features)`. (n, d_hidden)
    pub error: Array2<f64>,
    /// The model's logits. (n, d_out)
    pub logits: Array2<f64>,
    /// Input i → H_j contributions. (n, d_in, d_hidden)
    pub input_hidden: Array3<f64>,
    /// Bias share of each hidden unit, `b₁_j·[h_j > 0]`. (n, d_hidden)
    pub hidden_bias: Array2<f64>,
    /// H_j → F_k contributions. (n, d_hidden, d_sae)
    pub hidden_feature: Array3<f64>,
    /// Bias share of each feature, `b_enc_k·[f_k ≠ 0]`. (n, d_sae)
    pub feature_bias: Array2<f64>,
    /// F_k → output o contributions. (n, d_sae, d_out)
    pub feature_output: Array3<f64>,
    /// Error → output o contributions. (n, d_out)
    pub error_output: Array2<f64>,
    /// Constant part of each logit, `b_dec · fc2_weight[o,:] + fc2_bias[o]`. (d_out)
    pub output_bias: Array1<f64>,
    /// The model's output weights `fc2_weight`. (d_out, d_hidden)
    pub fc2_weight: Array2<f64>,
    /// The model's prediction per example: 0 "runs", 1 "run". (n)
    pub predictions: Vec<usize>,
}

/// Check that `sae` reads the toy's hidden layer of `model`.
pub fn check_sae_fits(model: &SubjectVerbAgreementNN, sae: &Sae) -> Result<()> {
    if sae.cfg.hook_name != HookPoint::ToyHidden {
        return Err(Error::Mismatch {
            what: "SAE hook".into(),
            detail: format!(
                "the SAE was trained on {}, the toy circuit needs an SAE on {}; pass the SAE directory trained on {}",
                sae.cfg.hook_name,
                HookPoint::ToyHidden,
                HookPoint::ToyHidden
            ),
        });
    }
    if sae.cfg.d_in != model.d_hidden() {
        return Err(Error::Mismatch {
            what: "SAE width".into(),
            detail: format!(
                "the SAE has d_in {} but the model's hidden layer has width {}; use an SAE trained on this model's activations",
                sae.cfg.d_in,
                model.d_hidden()
            ),
        });
    }
    Ok(())
}

/// Compute every contribution of the toy circuit on inputs `x (n, 2)`.
///
/// The model's forward and the SAE's `encode`/`decode` are called, not re-implemented;
/// only the split of their linear maps into per-edge terms is computed here.
pub fn contributions(
    model: &SubjectVerbAgreementNN,
    sae: &Sae,
    x: ArrayView2<'_, f32>,
) -> Result<ToyContributions> {
    check_sae_fits(model, sae)?;
    if x.ncols() != model.fc1_weight.ncols() {
        return Err(Error::Mismatch {
            what: "toy inputs".into(),
            detail: format!(
                "inputs have {} columns, the model reads {}",
                x.ncols(),
                model.fc1_weight.ncols()
            ),
        });
    }
    let fwd = model.forward(x);
    sae.check_input(fwd.hidden.view())?;
    let f32_features = sae.encode(fwd.hidden.view()); // (n, d_sae)
    let recon = sae.decode(f32_features.view()); // (n, d_hidden)
    let predictions = fwd.predictions();

    let to64 = |a: &Array2<f32>| a.mapv(f64::from);
    let xs = x.mapv(f64::from); // (n, d_in)
    let hidden = to64(&fwd.hidden); // (n, d_hidden)
    let features = to64(&f32_features); // (n, d_sae)
    let error = &hidden - &to64(&recon); // (n, d_hidden)
    let logits = to64(&fwd.logits); // (n, d_out)
    let fc1 = to64(&model.fc1_weight); // (d_hidden, d_in)
    let fc2 = to64(&model.fc2_weight); // (d_out, d_hidden)
    let b1 = model.fc1_bias.mapv(f64::from); // (d_hidden)
    let b2 = model.fc2_bias.mapv(f64::from); // (d_out)
    let w_enc = to64(&sae.w_enc); // (d_hidden, d_sae)
    let w_dec = to64(&sae.w_dec); // (d_sae, d_hidden)
    let b_enc = sae.b_enc.mapv(f64::from); // (d_sae)
    let b_dec = sae.b_dec.mapv(f64::from); // (d_hidden)

    let (n, d_in) = xs.dim();
    let d_hidden = hidden.ncols();
    let d_sae = features.ncols();
    let d_out = logits.ncols();

    let mut input_hidden = Array3::<f64>::zeros((n, d_in, d_hidden));
    let mut hidden_bias = Array2::<f64>::zeros((n, d_hidden));
    let mut hidden_feature = Array3::<f64>::zeros((n, d_hidden, d_sae));
    let mut feature_bias = Array2::<f64>::zeros((n, d_sae));
    let centre = if sae.cfg.apply_b_dec_to_input {
        b_dec.clone()
    } else {
        Array1::zeros(d_hidden)
    }; // (d_hidden)
    for e in 0..n {
        for j in 0..d_hidden {
            if hidden[[e, j]] > 0.0 {
                for i in 0..d_in {
                    input_hidden[[e, i, j]] = xs[[e, i]] * fc1[[j, i]];
                }
                hidden_bias[[e, j]] = b1[j];
            }
        }
        for k in 0..d_sae {
            if features[[e, k]] != 0.0 {
                for j in 0..d_hidden {
                    hidden_feature[[e, j, k]] = (hidden[[e, j]] - centre[j]) * w_enc[[j, k]];
                }
                feature_bias[[e, k]] = b_enc[k];
            }
        }
    }
    // How one unit of each feature moves each logit: W_dec fc2ᵀ. (d_sae, d_out)
    let feature_to_logit = w_dec.dot(&fc2.t());
    let mut feature_output = Array3::<f64>::zeros((n, d_sae, d_out));
    for e in 0..n {
        for k in 0..d_sae {
            for o in 0..d_out {
                feature_output[[e, k, o]] = features[[e, k]] * feature_to_logit[[k, o]];
            }
        }
    }
    let error_output = error.dot(&fc2.t()); // (n, d_out)
    let output_bias = fc2.dot(&b_dec) + &b2; // (d_out)
    Ok(ToyContributions {
        x: xs,
        hidden,
        features,
        error,
        logits,
        input_hidden,
        hidden_bias,
        hidden_feature,
        feature_bias,
        feature_output,
        error_output,
        output_bias,
        fc2_weight: fc2,
        predictions,
    })
}

/// Means of one per-example quantity over all examples and over each group.
struct Means<'a> {
    /// Example indices of each group, by name.
    groups: &'a [(String, Vec<usize>)],
    n: usize,
}

impl Means<'_> {
    fn stat(&self, value: impl Fn(usize) -> f64) -> Stat {
        let mean = |rows: &mut dyn Iterator<Item = usize>, count: usize| {
            if count == 0 {
                0.0
            } else {
                rows.map(&value).sum::<f64>() / count as f64
            }
        };
        let all = mean(&mut (0..self.n), self.n);
        let by_group = self
            .groups
            .iter()
            .map(|(name, rows)| (name.clone(), mean(&mut rows.iter().copied(), rows.len())))
            .collect();
        Stat { all, by_group }
    }
}

/// Build the toy circuit from its contributions: every node and edge, nothing pruned
/// (call [`Circuit::prune`] for a threshold). `labels (n)` are the correct outputs,
/// when known, for the accuracy score.
pub fn build_circuit(
    c: &ToyContributions,
    sae: &Sae,
    labels: Option<&[usize]>,
    provenance: Provenance,
) -> Result<Circuit> {
    let n = c.x.nrows();
    let (d_in, d_hidden, d_sae, d_out) = (
        c.x.ncols(),
        c.hidden.ncols(),
        c.features.ncols(),
        c.logits.ncols(),
    );
    if d_out != OUTPUT_NAMES.len() || d_in != INPUT_NAMES.len() {
        return Err(Error::Mismatch {
            what: "toy model shape".into(),
            detail: format!("expected 2 inputs and 2 outputs, got {d_in} and {d_out}"),
        });
    }
    let groups: Vec<(String, Vec<usize>)> = OUTPUT_NAMES
        .iter()
        .enumerate()
        .map(|(o, name)| {
            let rows = (0..n).filter(|&e| c.predictions[e] == o).collect();
            (name.to_string(), rows)
        })
        .collect();
    let means = Means { groups: &groups, n };
    let hook = sae.cfg.hook_name;

    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let metric_of = |contrib: &dyn Fn(usize, usize) -> f64| -> Stat {
        means.stat(|e| contrib(e, 0) - contrib(e, 1))
    };

    // Inputs, with gradient × input effects on m = logit(runs) − logit(run).
    let input_ids: Vec<String> = (0..d_in)
        .map(|i| {
            let mut node = Node::new(
                NodeKind::Input,
                INPUT_NAMES[i],
                HookPoint::ToyInput,
                LAYER_INPUT,
                None,
                Some(i as u32),
            );
            node.activation = Some(means.stat(|e| c.x[[e, i]]));
            let id = node.id.clone();
            nodes.push(node);
            id
        })
        .collect();
    let hidden_ids: Vec<String> = (0..d_hidden)
        .map(|j| {
            let mut node = Node::new(
                NodeKind::Hidden,
                format!("H{}", j + 1),
                HookPoint::ToyHidden,
                LAYER_HIDDEN,
                None,
                Some(j as u32),
            );
            node.activation = Some(means.stat(|e| c.hidden[[e, j]]));
            node.bias = Some(means.stat(|e| c.hidden_bias[[e, j]]));
            let id = node.id.clone();
            nodes.push(node);
            id
        })
        .collect();
    let feature_ids: Vec<String> = (0..d_sae)
        .map(|k| {
            let mut node = Node::new(
                NodeKind::Feature,
                format!("F{}", k + 1),
                hook,
                LAYER_FEATURE,
                None,
                Some(k as u32),
            );
            node.activation = Some(means.stat(|e| c.features[[e, k]]));
            node.bias = Some(means.stat(|e| c.feature_bias[[e, k]]));
            node.effect = Some(metric_of(&|e, o| c.feature_output[[e, k, o]]));
            let id = node.id.clone();
            nodes.push(node);
            id
        })
        .collect();
    let mut error_node = Node::new(NodeKind::Error, "error", hook, LAYER_FEATURE, None, None);
    error_node.activation =
        Some(means.stat(|e| c.error.row(e).iter().map(|v| v * v).sum::<f64>().sqrt()));
    error_node.effect = Some(metric_of(&|e, o| c.error_output[[e, o]]));
    let error_id = error_node.id.clone();
    nodes.push(error_node);
    let output_ids: Vec<String> = (0..d_out)
        .map(|o| {
            let mut node = Node::new(
                NodeKind::Output,
                OUTPUT_NAMES[o],
                HookPoint::ToyLogits,
                LAYER_OUTPUT,
                None,
                Some(o as u32),
            );
            node.activation = Some(means.stat(|e| c.logits[[e, o]]));
            node.bias = Some(means.stat(|_| c.output_bias[o]));
            let id = node.id.clone();
            nodes.push(node);
            id
        })
        .collect();

    let mut edge = |source: &str, target: &str, weight: Stat| {
        edges.push(Edge {
            source: source.to_string(),
            target: target.to_string(),
            weight,
        })
    };
    for (i, src) in input_ids.iter().enumerate() {
        for (j, dst) in hidden_ids.iter().enumerate() {
            edge(src, dst, means.stat(|e| c.input_hidden[[e, i, j]]));
        }
    }
    for (j, src) in hidden_ids.iter().enumerate() {
        for (k, dst) in feature_ids.iter().enumerate() {
            edge(src, dst, means.stat(|e| c.hidden_feature[[e, j, k]]));
        }
    }
    for (k, src) in feature_ids.iter().enumerate() {
        for (o, dst) in output_ids.iter().enumerate() {
            edge(src, dst, means.stat(|e| c.feature_output[[e, k, o]]));
        }
    }
    for (o, dst) in output_ids.iter().enumerate() {
        edge(&error_id, dst, means.stat(|e| c.error_output[[e, o]]));
    }

    // Effects on m of hidden units, h_j · Δ_j, and inputs, x_i ∂m/∂x_i = Σ_j (input i →
    // H_j) · Δ_j, with Δ_j = fc2_weight[0,j] − fc2_weight[1,j].
    let delta = &c.fc2_weight.row(0) - &c.fc2_weight.row(1); // (d_hidden)
    for (j, id) in hidden_ids.iter().enumerate() {
        let effect = means.stat(|e| c.hidden[[e, j]] * delta[j]);
        set_effect(&mut nodes, id, effect);
    }
    for (i, id) in input_ids.iter().enumerate() {
        let effect = means.stat(|e| {
            (0..d_hidden)
                .map(|j| c.input_hidden[[e, i, j]] * delta[j])
                .sum()
        });
        set_effect(&mut nodes, id, effect);
    }

    let mut scores = BTreeMap::new();
    let mut notes = vec![
        "the constant b_dec · fc2_weight[o,:] + fc2_bias[o] of each output is its node's bias, so logit = Σ incoming edge weights + bias".to_string(),
        "a unit that is off (ReLU at 0, or an inactive SAE feature) receives zero contribution on that example".to_string(),
    ];
    if let Some(labels) = labels {
        if labels.len() != n {
            return Err(Error::Mismatch {
                what: "labels".into(),
                detail: format!("{} labels for {n} examples", labels.len()),
            });
        }
        let right = labels
            .iter()
            .zip(&c.predictions)
            .filter(|(y, p)| y == p)
            .count();
        scores.insert("accuracy".to_string(), right as f64 / n.max(1) as f64);
        notes.push(format!(
            "the model predicts the correct verb form on {right} of {n} examples"
        ));
    }
    let groups = groups
        .iter()
        .map(|(name, rows)| Group {
            name: name.clone(),
            description: format!("examples the model predicts as {name:?} (argmax of the logits)"),
            n_examples: rows.len() as u64,
        })
        .collect();
    Ok(Circuit {
        schema_version: CIRCUIT_SCHEMA_VERSION,
        title: format!(
            "Toy subject–verb agreement: feature circuit ({} SAE features on {hook})",
            d_sae
        ),
        method: Described {
            name: TOY_METHOD.into(),
            description: METHOD_DESCRIPTION.into(),
        },
        metric: Described {
            name: "logit_diff".into(),
            description: "logit(runs) − logit(run)".into(),
        },
        provenance,
        n_examples: n as u64,
        groups,
        thresholds: Thresholds::default(),
        scores,
        notes,
        positions: Vec::new(),
        nodes,
        edges,
    })
}

/// The exact definition written into `circuit.json`'s `method.description`.
pub const METHOD_DESCRIPTION: &str = "Edge weight = mean over examples of the source's contribution to the target: input i → H_j: x_i·fc1_weight[j,i] when h_j > 0, else 0; H_j → F_k: (h_j − b_dec_j if apply_b_dec_to_input else h_j)·W_enc[j,k] when f_k ≠ 0, else 0; F_k → output o: f_k·(W_dec[k,:]·fc2_weight[o,:]); error → o: (h − decode(encode(h)))·fc2_weight[o,:]. Means are over all examples (all) and over the examples the model predicts as each output (by_group). Node activation: mean of x_i, h_j, f_k, ‖h − ĥ‖ or logit_o; node bias: mean constant part (b₁_j when h_j > 0, b_enc_k when f_k ≠ 0, b_dec·fc2_weight[o,:] + fc2_bias[o]), so activation = Σ incoming edge weights + bias; node effect: mean contribution to logit(runs) − logit(run) (gradient × input for inputs).";

fn set_effect(nodes: &mut [Node], id: &str, effect: Stat) {
    if let Some(node) = nodes.iter_mut().find(|n| n.id == id) {
        node.effect = Some(effect);
    }
}
