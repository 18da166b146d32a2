//! SAELens v6 files: `cfg.json` + `sae_weights.safetensors`, and the training
//! outputs `sparsity.safetensors` + `training.json`.
use std::fs;
use std::path::Path;

use circuitry_core::{atomic, HookPoint, TOOL_VERSION};
use ndarray::{Array1, Array2, ArrayView1};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::metrics::Metrics;
use crate::train::{LogEntry, TrainConfig};
use crate::{ActivationNormalization, Architecture, Error, Result, Sae, SaeConfig};

/// SAELens's config file name.
pub const CFG_FILE: &str = "cfg.json";
/// SAELens's weights file name.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// SAELens's feature-sparsity file name (key `"sparsity"`: log10 feature density).
pub const SPARSITY_FILE: &str = "sparsity.safetensors";
/// Training record file name.
pub const TRAINING_FILE: &str = "training.json";
/// The SAELens version whose layout [`Sae::save`] writes (`metadata.sae_lens_version`).
pub const SAELENS_FORMAT_VERSION: &str = "6.0.0";
/// Schema version of [`TrainingRecord`].
pub const TRAINING_RECORD_VERSION: u32 = 3;

#[derive(Serialize)]
struct CfgOut<'a> {
    architecture: &'static str,
    d_in: usize,
    d_sae: usize,
    dtype: &'static str,
    device: &'static str,
    apply_b_dec_to_input: bool,
    normalize_activations: &'static str,
    reshape_activations: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<usize>,
    metadata: MetaOut<'a>,
}

/// SAELens's `SAEMetadata` fields (its LLM metadata keys).
#[derive(Serialize)]
struct MetaOut<'a> {
    /// The SAELens format version the file follows: without it SAELens takes the
    /// file for a pre-6.0 config and drops everything under `metadata`.
    sae_lens_version: &'static str,
    model_name: &'a str,
    hook_name: String,
    context_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset_path: Option<&'a str>,
    /// `{"center_writing_weights": true}` for a mean-centred SAE: SAELens has no
    /// mean-centring normalisation; its users get centred residuals by loading the
    /// TransformerLens model with centred writing weights (as for gpt2-small-res-jb).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_from_pretrained_kwargs: Option<Value>,
    /// The circuitry stage that wrote the folder ([`STAGE_MARKER`]), whose last
    /// file is `training.json`: readers refuse such a folder without it. Absent
    /// from SAEs saved outside the stage (SAELens keeps unknown metadata keys).
    #[serde(skip_serializing_if = "Option::is_none")]
    circuitry_stage: Option<&'static str>,
}

/// `cfg.json`'s `metadata.circuitry_stage` in SAE folders the training stage writes:
/// such a folder is complete only once `training.json` is there.
pub const STAGE_MARKER: &str = "circuitry-train-sae";

impl Sae {
    /// Write `dir/cfg.json` and `dir/sae_weights.safetensors` in SAELens v6 layout
    /// (f32 tensors `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`,
    /// `b_dec [d_in]`, and `threshold [d_sae]` for JumpReLU), each atomically.
    /// Creates `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.save_marked(dir, None)
    }

    /// [`Sae::save`] for the training stage: `cfg.json` also carries
    /// `metadata.circuitry_stage` ([`STAGE_MARKER`]), so readers know the folder is
    /// complete only with its `training.json` ([`Sae::load`] refuses it otherwise).
    pub fn save_stage_output(&self, dir: &Path) -> Result<()> {
        self.save_marked(dir, Some(STAGE_MARKER))
    }

    fn save_marked(&self, dir: &Path, marker: Option<&'static str>) -> Result<()> {
        let cfg = &self.cfg;
        let out = CfgOut {
            architecture: match (cfg.architecture, &self.threshold) {
                (Architecture::BatchTopK { .. }, Some(_)) => "jumprelu",
                (arch, _) => arch.saelens_name(),
            },
            d_in: cfg.d_in,
            d_sae: cfg.d_sae,
            dtype: "float32",
            device: "cpu",
            apply_b_dec_to_input: cfg.apply_b_dec_to_input,
            normalize_activations: match cfg.normalize_activations {
                ActivationNormalization::MeanCentre => "none",
                other => other.saelens_name(),
            },
            reshape_activations: "none",
            k: match cfg.architecture {
                Architecture::TopK { k } => Some(k),
                _ => None,
            },
            metadata: MetaOut {
                sae_lens_version: SAELENS_FORMAT_VERSION,
                model_name: &cfg.model_name,
                hook_name: cfg.hook_name.to_string(),
                context_size: cfg.context_size,
                dataset_path: cfg.dataset_path.as_deref(),
                model_from_pretrained_kwargs: (cfg.normalize_activations
                    == ActivationNormalization::MeanCentre)
                    .then(|| serde_json::json!({ "center_writing_weights": true })),
                circuitry_stage: marker,
            },
        };
        let mut tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = vec![
            (
                "W_enc",
                self.w_enc.shape().to_vec(),
                le_bytes(self.w_enc.iter()),
            ),
            (
                "b_enc",
                self.b_enc.shape().to_vec(),
                le_bytes(self.b_enc.iter()),
            ),
            (
                "W_dec",
                self.w_dec.shape().to_vec(),
                le_bytes(self.w_dec.iter()),
            ),
            (
                "b_dec",
                self.b_dec.shape().to_vec(),
                le_bytes(self.b_dec.iter()),
            ),
        ];
        if let Some(t) = &self.threshold {
            tensors.push(("threshold", t.shape().to_vec(), le_bytes(t.iter())));
        }
        let weights = serialize_f32(&tensors)?;
        atomic::write_bytes(&dir.join(WEIGHTS_FILE), &weights)?;
        atomic::write_json(&dir.join(CFG_FILE), &out)?;
        Ok(())
    }

    /// Read an SAE from `dir` as [`Sae::save`] writes it, or as SAELens writes it:
    /// v6 `cfg.json` (`metadata` or `meta`) and older flat configs (`hook_point`,
    /// `activation_fn_str: "topk"`); f32, f64, f16 or bf16 weights; JumpReLU
    /// `threshold` (or `log_threshold`).
    ///
    /// So that encode/decode give SAELens's values:
    /// - `model_from_pretrained_kwargs.center_writing_weights = true` (top level or in
    ///   `metadata`; the config override of releases such as gpt2-small-res-jb) means
    ///   the SAE reads TransformerLens residuals with centred writing weights, which
    ///   are the Hugging Face residuals minus their per-token mean: the SAE gets
    ///   [`ActivationNormalization::MeanCentre`] (the mean is added back to the
    ///   reconstruction);
    /// - JumpReLU thresholds below 0 become 0 (SAELens applies a ReLU before the
    ///   jump, so a negative threshold acts as 0);
    /// - a TopK SAE with `rescale_acts_by_decoder_norm` has the decoder row norms
    ///   folded into `W_enc`, `b_enc` and `W_dec` (the same function, as SAELens
    ///   folds them when saving for inference).
    ///
    /// A folder written by the training stage (`metadata.circuitry_stage` in
    /// `cfg.json`, or a `feature_stats.parquet`) without its `training.json` is
    /// refused ([`Error::IncompleteSae`]): its training stopped before the end.
    pub fn load(dir: &Path) -> Result<Sae> {
        let cfg_path = dir.join(CFG_FILE);
        let cfg_json: Value = atomic::read_json(&cfg_path)?;
        check_complete(dir, &cfg_json)?;
        let cfg = parse_cfg(&cfg_json, &cfg_path)?;
        let rescale_by_norm = cfg_json
            .get("rescale_acts_by_decoder_norm")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let w_path = dir.join(WEIGHTS_FILE);
        let bytes = fs::read(&w_path).map_err(|source| Error::Read {
            path: w_path.clone(),
            source,
        })?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| bad_weights(&w_path, e.to_string()))?;
        let (d_in, d_sae) = (cfg.d_in, cfg.d_sae);
        let w_enc = Array2::from_shape_vec(
            (d_in, d_sae),
            read_f32(&st, "W_enc", &[d_in, d_sae], &w_path)?,
        );
        let w_dec = Array2::from_shape_vec(
            (d_sae, d_in),
            read_f32(&st, "W_dec", &[d_sae, d_in], &w_path)?,
        );
        let b_enc = Array1::from(read_f32(&st, "b_enc", &[d_sae], &w_path)?);
        let b_dec = Array1::from(read_f32(&st, "b_dec", &[d_in], &w_path)?);
        let threshold = match cfg.architecture {
            Architecture::JumpRelu => Some(if st.names().contains(&"threshold") {
                Array1::from(read_f32(&st, "threshold", &[d_sae], &w_path)?)
            } else {
                Array1::from(read_f32(&st, "log_threshold", &[d_sae], &w_path)?).mapv(f32::exp)
            }),
            _ => None,
        };
        let shape_err = |e: ndarray::ShapeError| bad_weights(&w_path, e.to_string());
        let mut sae = Sae {
            cfg,
            w_enc: w_enc.map_err(shape_err)?,
            b_enc,
            w_dec: w_dec.map_err(shape_err)?,
            b_dec,
            threshold: threshold.map(|t| t.mapv(|v| v.max(0.0))),
        };
        if rescale_by_norm {
            if !matches!(sae.cfg.architecture, Architecture::TopK { .. }) {
                return Err(Error::Unsupported {
                    what: "rescale_acts_by_decoder_norm",
                    value: format!(
                        "true for {} in {}",
                        sae.cfg.architecture,
                        cfg_path.display()
                    ),
                    hint: "only TopK SAEs may rescale activations by decoder norms".into(),
                });
            }
            let norms = sae.decoder_norms(); // (d_sae)
            for ((mut col, b), &n) in sae
                .w_enc
                .columns_mut()
                .into_iter()
                .zip(sae.b_enc.iter_mut())
                .zip(norms.iter())
            {
                col.mapv_inplace(|v| v * n);
                *b *= n;
            }
            for (mut row, &n) in sae.w_dec.outer_iter_mut().zip(norms.iter()) {
                row.mapv_inplace(|v| v / n);
            }
        }
        Ok(sae)
    }
}

/// Refuse an SAE folder the training stage wrote (see [`Sae::load`]) that lacks
/// `training.json`, the file it writes last.
fn check_complete(dir: &Path, cfg_json: &Value) -> Result<()> {
    let marked = cfg_json
        .get("metadata")
        .and_then(|m| m.get("circuitry_stage"))
        .is_some();
    let has_stats = dir.join(crate::stats::FEATURE_STATS_FILE).is_file();
    if (marked || has_stats) && !dir.join(TRAINING_FILE).is_file() {
        return Err(Error::IncompleteSae {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Everything `training.json` records about a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// [`TRAINING_RECORD_VERSION`].
    pub schema_version: u32,
    /// The circuitry version that trained it.
    pub tool_version: String,
    /// The SAE's configuration.
    pub sae: SaeConfig,
    /// The training configuration.
    pub train: TrainConfig,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Rows seen in training (steps × batch size).
    pub rows_seen: u64,
    /// Rows available for training.
    pub train_rows: usize,
    /// Held-out rows evaluated at the end (0 if none).
    pub eval_rows: usize,
    /// Logged training steps.
    pub history: Vec<LogEntry>,
    /// Final metrics on the training rows.
    pub train_metrics: Metrics,
    /// Final metrics on the held-out rows, if any.
    pub eval_metrics: Option<Metrics>,
    /// `ce_loss_score` and its cross-entropies on held-out positions (see
    /// [`crate::ce`]); `None` (`null`) when no model was given.
    #[serde(default)]
    pub ce_loss: Option<crate::ce::CeLoss>,
    /// Fingerprint of everything that determines this SAE (configuration, hook,
    /// store); a rerun with the same key skips the hook. Empty for in-memory runs.
    #[serde(default)]
    pub run_key: String,
    /// Passes over the training rows begun (1 when fewer rows than one pass were used).
    #[serde(default)]
    pub epochs: u64,
    /// The library that computed the dense products: `faer`, or `mkl (<MKL version>;
    /// CNR <mode>)` (see `--gemm`); empty in records written before it was recorded.
    #[serde(default)]
    pub gemm: String,
    /// The rule that left outlier rows out (`--outlier-norm-ratio`); absent when
    /// every row was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outliers: Option<OutlierRule>,
}

/// Which token rows an SAE was not trained or evaluated on: those whose norm at its
/// hook is above `max_norm` (`ratio` times the median row norm of the store's first
/// shard). `ce_loss_score` leaves those positions unedited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutlierRule {
    /// `--outlier-norm-ratio`.
    pub ratio: f64,
    /// The norm above which a row was left out.
    pub max_norm: f32,
}

impl TrainingRecord {
    /// A record stamped with this tool's version.
    pub fn new(
        sae: SaeConfig,
        train: TrainConfig,
        report: crate::TrainReport,
        train_rows: usize,
        eval_rows: usize,
        eval_metrics: Option<Metrics>,
    ) -> Self {
        let gemm = crate::Backend::resolve(train.gemm, &train.mkl)
            .map(|b| b.describe())
            .unwrap_or_default();
        TrainingRecord {
            schema_version: TRAINING_RECORD_VERSION,
            tool_version: TOOL_VERSION.into(),
            sae,
            train,
            steps: report.steps,
            rows_seen: report.rows_seen,
            train_rows,
            eval_rows,
            history: report.history,
            train_metrics: report.final_metrics,
            eval_metrics,
            ce_loss: None,
            run_key: String::new(),
            epochs: 1,
            gemm,
            outliers: None,
        }
    }

    /// Read `dir/training.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(atomic::read_json(&dir.join(TRAINING_FILE))?)
    }
}

/// Write `dir/sparsity.safetensors` (key `"sparsity"`, f32 `[d_sae]`: log10 feature
/// density, as SAELens) and `dir/training.json`, each atomically.
pub fn save_training_outputs(
    dir: &Path,
    record: &TrainingRecord,
    log10_density: ArrayView1<'_, f32>,
) -> Result<()> {
    let tensors = vec![(
        "sparsity",
        log10_density.shape().to_vec(),
        le_bytes(log10_density.iter()),
    )];
    atomic::write_bytes(&dir.join(SPARSITY_FILE), &serialize_f32(&tensors)?)?;
    atomic::write_json(&dir.join(TRAINING_FILE), record)?;
    Ok(())
}

fn le_bytes<'a>(values: impl Iterator<Item = &'a f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

fn serialize_f32(tensors: &[(&str, Vec<usize>, Vec<u8>)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, data)| Ok((*name, TensorView::new(Dtype::F32, shape.clone(), data)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, None)?)
}

fn bad_weights(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadWeights {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_f32(st: &SafeTensors<'_>, name: &str, shape: &[usize], path: &Path) -> Result<Vec<f32>> {
    let t = st.tensor(name).map_err(|_| {
        let mut have = st.names();
        have.sort();
        bad_weights(
            path,
            format!("no tensor {name:?} (it has {have:?}); is this an SAELens SAE?"),
        )
    })?;
    if t.shape() != shape {
        return Err(Error::Shape {
            what: format!("{name} in {}", path.display()),
            expected: shape.to_vec(),
            got: t.shape().to_vec(),
        });
    }
    let data = t.data();
    let out: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Unsupported {
                what: "dtype",
                value: format!("{other:?} for {name} in {}", path.display()),
                hint: "weights must be float32, float64, float16 or bfloat16".into(),
            })
        }
    };
    Ok(out)
}

/// Look a field up in `metadata`, then `meta`, then the top level.
fn meta_field<'v>(cfg: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    ["metadata", "meta"]
        .iter()
        .filter_map(|m| cfg.get(*m).and_then(Value::as_object))
        .find_map(|m| m.get(key).filter(|v| !v.is_null()))
        .or_else(|| cfg.get(key).filter(|v| !v.is_null()))
}

fn parse_cfg(cfg: &Value, path: &Path) -> Result<SaeConfig> {
    let bad = |field: &str, reason: String| Error::BadCfg {
        path: path.to_path_buf(),
        field: field.into(),
        reason,
    };
    let obj = cfg
        .as_object()
        .ok_or_else(|| bad("", "expected a JSON object".into()))?;
    let uint = |field: &str, v: Option<&Value>| -> Result<usize> {
        v.and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| bad(field, "missing or not a non-negative integer".into()))
    };
    let d_in = uint("d_in", obj.get("d_in"))?;
    let d_sae = uint("d_sae", obj.get("d_sae"))?;
    let activation_fn = obj
        .get("activation_fn_str")
        .or_else(|| obj.get("activation_fn"))
        .and_then(Value::as_str);
    let arch_name = obj
        .get("architecture")
        .and_then(Value::as_str)
        .or(activation_fn.filter(|a| *a == "topk"))
        .unwrap_or("standard");
    let architecture = match arch_name {
        "standard" => Architecture::Standard,
        "jumprelu" => Architecture::JumpRelu,
        "batchtopk" => Architecture::BatchTopK {
            k: uint("k", obj.get("k"))?,
        },
        "topk" => {
            let k = obj.get("k").or_else(|| {
                obj.get("activation_fn_kwargs")
                    .and_then(Value::as_object)
                    .and_then(|kw| kw.get("k"))
            });
            Architecture::TopK { k: uint("k", k)? }
        }
        other => {
            return Err(Error::Unsupported {
                what: "architecture",
                value: format!("{other:?} in {}", path.display()),
                hint: "supported: \"standard\", \"topk\", \"jumprelu\"".into(),
            })
        }
    };
    let centred = meta_field(obj, "model_from_pretrained_kwargs")
        .and_then(|kw| kw.get("center_writing_weights"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Pre-6.0 configs write a bool: false = none, true = expected_average_only_in.
    let norm_name = match obj.get("normalize_activations") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => "none",
        Some(Value::Bool(true)) => "expected_average_only_in",
        Some(v) => v.as_str().unwrap_or("(not a string)"),
    };
    let normalize_activations = match norm_name {
        "none" if centred => ActivationNormalization::MeanCentre,
        "none" => ActivationNormalization::None,
        "mean_centre" => ActivationNormalization::MeanCentre,
        "constant_norm_rescale" if !centred => ActivationNormalization::ConstantNormRescale,
        other => {
            return Err(Error::Unsupported {
                what: "normalize_activations",
                value: format!(
                    "{other:?}{} in {}",
                    if centred { " with center_writing_weights" } else { "" },
                    path.display()
                ),
                hint: "supported: \"none\" (with or without model_from_pretrained_kwargs.center_writing_weights), \"constant_norm_rescale\"; fold an expected-average scaling factor into the weights first".into(),
            })
        }
    };
    let hook_value = meta_field(obj, "hook_name")
        .or_else(|| meta_field(obj, "hook_point"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad(
                "metadata.hook_name",
                "missing: the SAE must name the hook it reads".into(),
            )
        })?;
    let hook_name: HookPoint = hook_value
        .parse()
        .map_err(|e: circuitry_core::Error| bad("metadata.hook_name", e.to_string()))?;
    let context_size = uint("metadata.context_size", meta_field(obj, "context_size"))?;
    let text = |key: &str| {
        meta_field(obj, key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let sae = SaeConfig {
        d_in,
        d_sae,
        architecture,
        apply_b_dec_to_input: obj
            .get("apply_b_dec_to_input")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        normalize_activations,
        hook_name,
        model_name: text("model_name").unwrap_or_default(),
        context_size,
        dataset_path: text("dataset_path"),
    };
    sae.check().map_err(|e| bad("d_sae/k", e.to_string()))?;
    Ok(sae)
}
