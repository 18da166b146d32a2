//! Checkpoints of a multi-hook training run: one safetensors file holding every
//! trainer's parameters and Adam moments, the shuffle buffer's rows, and (in its
//! metadata, as JSON) the steps, dead-latent counters, history, stream position
//! and the run keys that say which configuration it belongs to. Written
//! atomically, so a kill at any moment leaves the previous checkpoint intact.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use circuitry_core::atomic;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::stream::StreamState;
use crate::train::{NamedTensor, TrainerMeta};
use crate::{Error, Result};

/// Version of the checkpoint layout.
pub const CHECKPOINT_VERSION: u32 = 1;
const META_KEY: &str = "circuitry_checkpoint";
const BUFFER_TENSOR: &str = "stream.buffer";

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Per trained hook, in order: the run key of its configuration.
    pub run_keys: Vec<String>,
    /// Steps done by every trainer.
    pub step: usize,
    /// The stream position; its buffer rows live in the `stream.buffer` tensor.
    pub stream: StreamState,
    /// Per trained hook, in order.
    pub trainers: Vec<TrainerMeta>,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The JSON part (with the buffer rows put back into `stream.buffer.held`).
    pub meta: CheckpointMeta,
    /// Trainer tensors by `"<hook index>.<name>"`: (shape, values).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    /// The values of trainer `i`'s tensor `name`, checked against `shape`.
    pub fn tensor(&mut self, i: usize, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = format!("{i}.{name}");
        let (got, values) = self
            .tensors
            .remove(&key)
            .ok_or_else(|| Error::Checkpoint(format!("it has no tensor {key}")))?;
        if got != shape {
            return Err(Error::Shape {
                what: format!("{key} in the checkpoint"),
                expected: shape.to_vec(),
                got,
            });
        }
        Ok(values)
    }
}

/// Write the checkpoint to `path` atomically.
pub fn save(path: &Path, meta: &CheckpointMeta, trainers: &[Vec<NamedTensor>]) -> Result<()> {
    let mut json_meta = meta.clone();
    let held = std::mem::take(&mut json_meta.stream.buffer.held);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    owned.push((BUFFER_TENSOR.into(), vec![held.len()], le_bytes(&held)));
    for (i, tensors) in trainers.iter().enumerate() {
        for (name, shape, values) in tensors {
            owned.push((format!("{i}.{name}"), shape.clone(), le_bytes(values)));
        }
    }
    let views = owned
        .iter()
        .map(|(n, shape, data)| {
            Ok((
                n.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let json = serde_json::to_string(&json_meta)
        .map_err(|e| Error::Checkpoint(format!("serialising its metadata: {e}")))?;
    let info: HashMap<String, String> = [(META_KEY.to_string(), json)].into_iter().collect();
    let bytes = safetensors::serialize(views, Some(info))?;
    atomic::write_bytes(path, &bytes)?;
    Ok(())
}

/// Read the checkpoint at `path`; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| Error::Checkpoint(format!("{}: {reason}", path.display()));
    // A file that does not parse is truncated or damaged (checkpoints are written
    // atomically, so only a disk fault or a hand edit makes one): say so and how to
    // go on.
    let damaged = |e: String| {
        bad(format!(
            "not a readable checkpoint ({e}): the file is truncated or damaged; delete it to start training over (the run then begins at step 0)"
        ))
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| damaged(e.to_string()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| bad("no circuitry checkpoint metadata".into()))?;
    let mut meta: CheckpointMeta =
        serde_json::from_str(json).map_err(|e| bad(format!("metadata: {e}")))?;
    if meta.version != CHECKPOINT_VERSION {
        return Err(bad(format!(
            "version {} (this build reads {CHECKPOINT_VERSION}); delete it to start over",
            meta.version
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| damaged(e.to_string()))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is not float32")));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if name == BUFFER_TENSOR {
            meta.stream.buffer.held = values;
        } else {
            tensors.insert(name, (view.shape().to_vec(), values));
        }
    }
    Ok(Some(Checkpoint { meta, tensors }))
}

/// Where a run training `hooks` (by name) in `out` keeps its checkpoint: one file
/// per set of hooks, so runs on different hooks (Slurm array tasks) never share one.
pub fn path_for(out: &Path, hook_names: &[String]) -> PathBuf {
    let joined = hook_names.join("\n");
    let key = circuitry_core::fingerprint::fingerprint_bytes(joined.as_bytes());
    let short: String = key
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(16)
        .collect();
    out.join(".checkpoints")
        .join(format!("{short}.safetensors"))
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
