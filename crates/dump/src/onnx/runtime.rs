//! Finding and loading the ONNX Runtime library, and running the exported graph.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::{Array2, ArrayViewD};
use ort::environment::Environment;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::TensorRef;

use crate::{Error, Result};

/// The environment variable that names the library; the `circuitry-dump` binary reads
/// it and passes its value to [`find_library`] (the library itself reads no variable).
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// Where the library is looked for, in order: `given` (the binary passes
/// `$ORT_DYLIB_PATH`); `.ort/libonnxruntime.so` in the current directory, the
/// executable's directory, or any directory above them; an installed Python
/// `onnxruntime` package (`capi/libonnxruntime.so*`).
pub fn find_library(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        return Err(Error::OrtLibrary {
            path: path.to_path_buf(),
            message: format!("{ORT_LIBRARY_ENV} names no file"),
        });
    }
    let mut searched = vec![format!("${ORT_LIBRARY_ENV} (unset)")];
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(".ort").join("libonnxruntime.so");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        searched.push(format!("{}/**/.ort/libonnxruntime.so", start.display()));
    }
    if let Some(path) = python_onnxruntime() {
        return Ok(path);
    }
    searched.push("python3 onnxruntime/capi".into());
    Err(Error::OrtNotFound {
        searched: searched.join(", "),
    })
}

/// The library inside an installed Python `onnxruntime`, if there is one.
fn python_onnxruntime() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let capi = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("capi");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
}

static ENVIRONMENT: OnceLock<std::result::Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Load the library (once per process; found by [`find_library`] from `given`) and
/// return the ONNX Runtime environment.
pub fn environment(given: Option<&Path>) -> Result<&'static Environment> {
    let path = find_library(given)?;
    let loaded = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("circuitry-dump")
            .build()
            .map_err(|e| e.to_string())?;
        Ok((path.clone(), env))
    });
    match loaded {
        Ok((_, env)) => Ok(env),
        Err(message) => Err(Error::OrtLibrary {
            path,
            message: message.clone(),
        }),
    }
}

/// An ONNX Runtime session on an exported graph that returns only the chosen outputs.
#[derive(Debug)]
pub struct Graph {
    session: Session,
    path: PathBuf,
    outputs: Vec<String>,
}

impl Graph {
    /// Load `model` in `env` ([`environment`]) with `threads` intra-op threads, to
    /// return `outputs` (graph output names).
    pub fn load(
        env: &Environment,
        model: &Path,
        threads: usize,
        outputs: Vec<String>,
    ) -> Result<Graph> {
        let fail = |e: String| Error::Ort {
            action: "loading",
            path: model.to_path_buf(),
            message: e,
        };
        let session = Session::builder(env)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| fail(e.to_string()))?
            // The store writes on its own thread meanwhile: idle ORT threads must not spin.
            .with_intra_op_spinning(false)
            .map_err(|e| fail(e.to_string()))?
            .commit_from_file(model)
            .map_err(|e| fail(e.to_string()))?;
        for name in &outputs {
            if !session.outputs().iter().any(|o| o.name() == name.as_str()) {
                return Err(fail(format!(
                    "the graph has no output {name:?} although its sidecar lists it; re-export it"
                )));
            }
        }
        Ok(Graph {
            session,
            path: model.to_path_buf(),
            outputs,
        })
    }

    /// Run on `input_ids` and `attention_mask` (batch, seq); calls `take(values)` once
    /// with the chosen outputs, each (batch, seq, width), in the order given to
    /// [`Graph::load`] — views into ONNX Runtime's buffers, valid during the call.
    pub fn run<F, T>(
        &mut self,
        input_ids: &Array2<i64>,
        attention_mask: &Array2<i64>,
        take: F,
    ) -> Result<T>
    where
        F: FnOnce(&[ArrayViewD<'_, f32>]) -> Result<T>,
    {
        let path = self.path.clone();
        let fail = |e: ort::Error| Error::Ort {
            action: "running",
            path: path.clone(),
            message: e.to_string(),
        };
        let mut selector = OutputSelector::no_default();
        for name in &self.outputs {
            selector = selector.with(name.clone());
        }
        let options = RunOptions::new().map_err(fail)?.with_outputs(selector);
        let ids = TensorRef::from_array_view(input_ids).map_err(fail)?;
        let mask = TensorRef::from_array_view(attention_mask).map_err(fail)?;
        let results = self
            .session
            .run_with_options(
                ort::inputs!["input_ids" => ids, "attention_mask" => mask],
                &options,
            )
            .map_err(fail)?;
        let mut views = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let value = results.get(name.as_str()).ok_or_else(|| Error::Ort {
                action: "running",
                path: path.clone(),
                message: format!("output {name:?} missing from the results"),
            })?;
            views.push(value.try_extract_array::<f32>().map_err(fail)?);
        }
        take(&views)
    }
}
