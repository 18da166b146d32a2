//! The sidecar `model.onnx.json` written by `scripts/export_onnx.py`, and choosing hooks
//! from it by name or glob.
use std::path::{Path, PathBuf};

use circuitry_core::HookPoint;
use serde::Deserialize;

use crate::{Error, Result};

/// The sidecar format this crate reads.
pub const SIDECAR_FORMAT: &str = "circuitry-onnx-hooks";

/// One graph output of the exported model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SidecarOutput {
    /// The graph output's name.
    pub name: String,
    /// Its TransformerLens hook name (`logits` for logits).
    pub hook: String,
    /// Values per token.
    pub width: usize,
}

/// A file fingerprint recorded in the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SidecarFingerprint {
    /// The hash algorithm (`blake3`).
    pub algorithm: String,
    /// The hashed file's name.
    pub file: String,
    /// The hash, hex.
    pub hex: String,
}

/// What `scripts/export_onnx.py` records beside `model.onnx`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sidecar {
    /// Must be [`SIDECAR_FORMAT`].
    pub format: String,
    /// Sidecar version (1).
    pub version: u32,
    /// Number of blocks.
    pub n_layer: usize,
    /// Residual width.
    pub d_model: usize,
    /// Context size (positions).
    pub n_ctx: usize,
    /// Vocabulary size of the embedding.
    pub vocab_size: usize,
    /// BLAKE3 of the model's `model.safetensors`.
    pub fingerprint: SidecarFingerprint,
    /// BLAKE3 of the `tokenizer.json` exported with the model (`null` when there
    /// was none).
    #[serde(default)]
    pub tokenizer_fingerprint: Option<SidecarFingerprint>,
    /// The graph outputs, in graph order.
    pub outputs: Vec<SidecarOutput>,
}

/// A chosen hook: its point, the graph output that gives it, and its width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenHook {
    /// The hook point.
    pub hook: HookPoint,
    /// The graph output name.
    pub output: String,
    /// Values per token.
    pub width: usize,
}

impl Sidecar {
    /// The sidecar's path for a model file: `model.onnx` → `model.onnx.json`.
    pub fn path_for(model: &Path) -> PathBuf {
        let mut name = model.as_os_str().to_owned();
        name.push(".json");
        PathBuf::from(name)
    }

    /// Read and check the sidecar of `model` (the `.onnx` file).
    pub fn read(model: &Path) -> Result<Sidecar> {
        let path = Self::path_for(model);
        let bad = |message: String| Error::ModelFile {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad(format!("cannot read the sidecar ({e}); export the model with scripts/export_onnx.py, which writes it"))
        })?;
        let sidecar: Sidecar = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a sidecar of scripts/export_onnx.py: {e}")))?;
        if sidecar.format != SIDECAR_FORMAT || sidecar.version != 1 {
            return Err(bad(format!(
                "format {:?} version {}, expected {SIDECAR_FORMAT:?} version 1; re-export with scripts/export_onnx.py",
                sidecar.format, sidecar.version
            )));
        }
        Ok(sidecar)
    }

    /// Hook names the graph outputs, comma-separated, in graph order.
    pub fn hook_list(&self) -> String {
        let names: Vec<&str> = self.outputs.iter().map(|o| o.hook.as_str()).collect();
        names.join(", ")
    }

    /// The outputs matching any of `patterns` (exact hook names or globs such as
    /// `blocks.*.hook_resid_pre`), in graph order, each once. Every pattern must match
    /// at least one output that is a hook point; `model` names the graph in errors.
    pub fn choose(&self, patterns: &[String], model: &Path) -> Result<Vec<ChosenHook>> {
        let unknown = |pattern: &str| Error::UnknownHook {
            pattern: pattern.to_string(),
            model: model.to_path_buf(),
            available: self.hook_list(),
        };
        let mut chosen = vec![false; self.outputs.len()];
        for pattern in patterns {
            let glob = glob::Pattern::new(pattern).map_err(|_| unknown(pattern))?;
            let mut any = false;
            for (i, out) in self.outputs.iter().enumerate() {
                if out.hook == *pattern || glob.matches(&out.hook) {
                    any = true;
                    chosen[i] = true;
                }
            }
            if !any {
                return Err(unknown(pattern));
            }
        }
        let mut hooks = Vec::new();
        for (out, _) in self.outputs.iter().zip(&chosen).filter(|(_, c)| **c) {
            let hook: HookPoint = out.hook.parse().map_err(|_| Error::ModelFile {
                path: Self::path_for(model),
                message: format!(
                    "output {:?} is not a hook point the store can hold (logits are not dumped); choose hooks among {}",
                    out.hook,
                    self.hook_list()
                ),
            })?;
            hooks.push(ChosenHook {
                hook,
                output: out.name.clone(),
                width: out.width,
            });
        }
        Ok(hooks)
    }
}
