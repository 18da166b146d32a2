//! The `circuitry-circuit toy` stage: model + SAE + activation store in, circuit files
//! out. Everything is read and checked before anything is written.
use std::path::{Path, PathBuf};

use circuitry_core::fingerprint::fingerprint_path;
use circuitry_core::{atomic, HookPoint, StageTimer, TOOL_VERSION};
use circuitry_models::toy::{SubjectVerbAgreementNN, OUTPUT_NAMES};
use circuitry_sae::Sae;
use circuitry_store::ActivationStore;
use serde::Serialize;

use crate::graph::{Circuit, NodeKind, Provenance, CIRCUIT_FILE};
use crate::render::{self, summary::PathTarget};
use crate::toy::{build_circuit, check_sae_fits, contributions};
use crate::{Error, Result};

/// The files the circuit stage writes, besides `stage.json`.
pub const OUTPUT_FILES: [&str; 6] = [
    CIRCUIT_FILE,
    "circuit.dot",
    "circuit.svg",
    "circuit.html",
    "neuronpedia.json",
    "summary.txt",
];

/// Largest |stored − recomputed| hidden activation accepted as "the same model".
pub const HIDDEN_TOLERANCE: f32 = 1e-4;

/// Validated options of the toy circuit stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToyStageConfig {
    /// Directory of the toy model (`config.json`, `model.safetensors`).
    pub model: PathBuf,
    /// SAE directory (`cfg.json`, `sae_weights.safetensors`).
    pub sae: PathBuf,
    /// Activation store with `toy.hook_input` and `toy.hook_hidden`.
    pub store: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Paths listed per output in the summary.
    pub top_paths: usize,
    /// Edges with |weight| below this (over all examples and in each group) are pruned.
    pub min_weight: f64,
}

impl ToyStageConfig {
    /// Check option ranges; the returned config is the only one the stage accepts.
    pub fn check(self) -> Result<Self> {
        if self.top_paths == 0 {
            return Err(Error::BadOption {
                option: "--top-paths",
                reason: "must be at least 1".into(),
            });
        }
        if !self.min_weight.is_finite() || self.min_weight < 0.0 {
            return Err(Error::BadOption {
                option: "--min-weight",
                reason: format!("{} is not a finite number ≥ 0", self.min_weight),
            });
        }
        Ok(self)
    }
}

/// Everything the stage writes, rendered in memory.
#[derive(Debug, Clone)]
pub struct ToyOutputs {
    /// The circuit graph.
    pub circuit: Circuit,
    /// `circuit.dot`.
    pub dot: String,
    /// `circuit.svg`.
    pub svg: String,
    /// `circuit.html`, the interactive viewer.
    pub html: String,
    /// `neuronpedia.json`, the graph in Neuronpedia's format.
    pub neuronpedia: String,
    /// `summary.txt`.
    pub summary: String,
}

/// Read and cross-check the inputs, build the circuit and render it. Writes nothing.
pub fn build_toy(cfg: &ToyStageConfig) -> Result<ToyOutputs> {
    let (model, _model_cfg) = SubjectVerbAgreementNN::load(&cfg.model)?;
    let sae = Sae::load(&cfg.sae)?;
    check_sae_fits(&model, &sae)?;
    let store = ActivationStore::open(&cfg.store)?;
    let hooks = store.hooks();
    for hook in [HookPoint::ToyInput, HookPoint::ToyHidden] {
        if !hooks.contains(&hook) {
            let have: Vec<String> = hooks.iter().map(ToString::to_string).collect();
            return Err(Error::Missing {
                what: format!("hook {hook} in the activation store"),
                detail: format!(
                    "{} has only [{}]; dump the toy model with `circuitry-dump toy` to get {} and {}",
                    cfg.store.display(),
                    have.join(", "),
                    HookPoint::ToyInput,
                    HookPoint::ToyHidden
                ),
            });
        }
    }
    let weights = cfg.model.join("model.safetensors");
    let model_fp = fingerprint_path(&weights)?;
    let recorded = &store.meta().model_fingerprint;
    if *recorded != model_fp {
        return Err(Error::Mismatch {
            what: "activation store and model".into(),
            detail: format!(
                "{} was dumped from a model with fingerprint {recorded}, but {} has fingerprint {model_fp}; re-run the dump with --model {}",
                cfg.store.display(),
                weights.display(),
                cfg.model.display()
            ),
        });
    }
    let inputs = store.read_hook(HookPoint::ToyInput)?; // (n, 2)
    let stored_hidden = store.read_hook(HookPoint::ToyHidden)?; // (n, d_hidden)
    let c = contributions(&model, &sae, inputs.view())?;
    check_same_hidden(&c.hidden, &stored_hidden, &cfg.store)?;
    let labels = toy_labels(&store)?;
    let provenance = Provenance {
        tool_version: TOOL_VERSION.into(),
        model: model_fp,
        dataset: fingerprint_path(&cfg.store)?,
        saes: [(sae.cfg.hook_name.to_string(), fingerprint_path(&cfg.sae)?)]
            .into_iter()
            .collect(),
    };
    let mut circuit = build_circuit(&c, &sae, labels.as_deref(), provenance)?;
    circuit.prune(cfg.min_weight);
    let dirs = [(sae.cfg.hook_name.to_string(), cfg.sae.clone())]
        .into_iter()
        .collect();
    let (features, notes) = render::contexts::for_circuit(&circuit, &dirs)?;
    for note in notes {
        tracing::info!("{note}");
    }
    render_all(circuit, cfg.top_paths, &features)
}

/// Render `circuit`'s DOT, SVG, HTML viewer (showing `features`' statistics), Neuronpedia
/// graph and summary (paths to each output over the examples predicted as that output).
pub fn render_all(
    circuit: Circuit,
    top_paths: usize,
    features: &render::html::FeatureTable,
) -> Result<ToyOutputs> {
    circuit.validate()?;
    let outputs: Vec<(String, Option<String>)> = circuit
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Output)
        .map(|n| {
            let group = circuit
                .groups
                .iter()
                .find(|g| g.name == n.label)
                .map(|g| g.name.clone());
            (n.id.clone(), group)
        })
        .collect();
    let targets: Vec<PathTarget<'_>> = outputs
        .iter()
        .map(|(id, group)| PathTarget {
            node_id: id,
            group: group.as_deref(),
        })
        .collect();
    let summary = render::summary::render(&circuit, &targets, top_paths)?;
    let dot = render::dot::render(&circuit, None);
    let svg = render::svg::render(&circuit, None);
    let html = render::html::render(&circuit, features)?;
    let np = render::neuronpedia::export(
        &circuit,
        &render::neuronpedia::NeuronpediaOptions {
            slug: "toy-subject-verb-agreement".into(),
            scan: "circuitry-toy".into(),
            prompt_tokens: Vec::new(),
        },
    );
    let neuronpedia = serde_json::to_string_pretty(&np).map_err(|source| {
        Error::Core(circuitry_core::Error::Json {
            path: "neuronpedia.json".into(),
            source,
        })
    })? + "\n";
    Ok(ToyOutputs {
        circuit,
        dot,
        svg,
        html,
        neuronpedia,
        summary,
    })
}

/// Write the output files ([`OUTPUT_FILES`]) into `out`, each atomically.
pub fn write_outputs(out: &Path, o: &ToyOutputs) -> Result<()> {
    o.circuit.write(&out.join(CIRCUIT_FILE))?;
    atomic::write_bytes(&out.join("circuit.dot"), o.dot.as_bytes())?;
    atomic::write_bytes(&out.join("circuit.svg"), o.svg.as_bytes())?;
    atomic::write_bytes(&out.join("circuit.html"), o.html.as_bytes())?;
    atomic::write_bytes(&out.join("neuronpedia.json"), o.neuronpedia.as_bytes())?;
    atomic::write_bytes(&out.join("summary.txt"), o.summary.as_bytes())?;
    Ok(())
}

/// The whole stage: build, write the outputs, then `stage.json` last. Returns the
/// summary text.
pub fn run_toy_stage(cfg: &ToyStageConfig, timer: StageTimer) -> Result<String> {
    let outputs = build_toy(cfg)?;
    write_outputs(&cfg.out, &outputs)?;
    timer.finish(
        cfg,
        &[&cfg.model, &cfg.sae, &cfg.store],
        &cfg.out,
        &OUTPUT_FILES,
    )?;
    Ok(outputs.summary)
}

/// The correct output of each example, when the store says how to read it: toy dumps
/// record `extra.source = "toy"`, with `token_id % 2` = 0 singular ("runs"), 1 plural.
fn toy_labels(store: &ActivationStore) -> Result<Option<Vec<usize>>> {
    let extra = &store.meta().extra;
    if extra.get("source").and_then(|s| s.as_str()) != Some("toy") {
        return Ok(None);
    }
    let tokens = store.read_tokens()?;
    Ok(Some(
        tokens
            .token_id
            .iter()
            .map(|&t| t as usize % OUTPUT_NAMES.len())
            .collect(),
    ))
}

/// Stop when the store's hidden activations are not what the model computes from the
/// store's inputs: they came from another model.
fn check_same_hidden(
    recomputed: &ndarray::Array2<f64>,
    stored: &ndarray::Array2<f32>,
    store_dir: &Path,
) -> Result<()> {
    if recomputed.dim() != stored.dim() {
        return Err(Error::Mismatch {
            what: "stored and recomputed hidden activations".into(),
            detail: format!(
                "{} holds {:?} hidden activations, the model computes {:?} from its inputs; re-run the dump with this model",
                store_dir.display(),
                stored.dim(),
                recomputed.dim()
            ),
        });
    }
    let max = recomputed
        .iter()
        .zip(stored)
        .map(|(a, &b)| (a - f64::from(b)).abs())
        .fold(0.0, f64::max);
    if max > f64::from(HIDDEN_TOLERANCE) {
        return Err(Error::Mismatch {
            what: "stored and recomputed hidden activations".into(),
            detail: format!(
                "{}: the model's forward on the stored inputs differs from the stored {} by up to {max:.3e} (tolerance {HIDDEN_TOLERANCE:e}); the store came from another model, re-run the dump",
                store_dir.display(),
                HookPoint::ToyHidden
            ),
        });
    }
    Ok(())
}
