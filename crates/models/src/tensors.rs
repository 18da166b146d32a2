//! f32 tensors in safetensors files, as ndarray arrays.
use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Error, Result};

/// The f32 tensors of a safetensors file, by name.
#[derive(Debug, Clone)]
pub struct TensorFile {
    path: std::path::PathBuf,
    tensors: HashMap<String, ArrayD<f32>>,
}

impl TensorFile {
    /// Read every tensor of `path`; all must be F32 (F16/BF16 are converted).
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| circuitry_core::Error::Io {
            op: "reading",
            path: path.into(),
            source: e,
        })?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let values = to_f32(&view).ok_or_else(|| Error::BadTensor {
                name: name.clone(),
                path: path.into(),
                expected: "dtype F32, F16 or BF16".into(),
                got: format!("{:?}", view.dtype()),
            })?;
            let arr = ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| {
                Error::Safetensors {
                    path: path.into(),
                    message: e.to_string(),
                }
            })?;
            tensors.insert(name, arr);
        }
        Ok(TensorFile {
            path: path.into(),
            tensors,
        })
    }

    /// Names of the tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of a tensor, if it exists.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape())
    }

    /// Take a tensor with exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<ArrayD<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.into(),
            path: self.path.clone(),
            available: self.names().join(", "),
        })?;
        if t.shape() != shape {
            return Err(Error::BadTensor {
                name: name.into(),
                path: self.path.clone(),
                expected: format!("shape {shape:?}"),
                got: format!("shape {:?}", t.shape()),
            });
        }
        Ok(t.clone())
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            data.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// Write named f32 tensors (name, shape, row-major values) to `path` atomically,
/// in name order, with optional string metadata.
pub fn write_f32(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut sorted: Vec<&(&str, Vec<usize>, &[f32])> = tensors.iter().collect();
    sorted.sort_by_key(|t| t.0);
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = sorted
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                s.clone(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.into(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = safetensors::serialize(views, metadata).map_err(|e| Error::Safetensors {
        path: path.into(),
        message: e.to_string(),
    })?;
    circuitry_core::atomic::write_bytes(path, &out)?;
    Ok(())
}
