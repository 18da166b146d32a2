/// Errors of the dump stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading inputs or writing the stage record failed.
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
    /// Writing the activation store failed.
    #[error(transparent)]
    Store(#[from] circuitry_store::Error),
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] circuitry_models::Error),
    /// No ONNX Runtime library was found.
    #[error("ONNX Runtime library not found (looked at {searched}); run scripts/setup-ort.sh or set ORT_DYLIB_PATH to libonnxruntime.so 1.31")]
    OrtNotFound {
        /// The places looked at, in order.
        searched: String,
    },
    /// The ONNX Runtime library could not be loaded or has the wrong version.
    #[error("ONNX Runtime library {path} could not be used: {message}; run scripts/setup-ort.sh or set ORT_DYLIB_PATH to libonnxruntime.so 1.31")]
    OrtLibrary {
        /// The library file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// ONNX Runtime failed while loading or running a model.
    #[error("ONNX Runtime failed {action} {path}: {message}")]
    Ort {
        /// What was being done ("loading", "running").
        action: &'static str,
        /// The model file.
        path: std::path::PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// A model folder's sidecar or tokenizer is missing or malformed.
    #[error("{path}: {message}")]
    ModelFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A hook pattern matches none of the model's outputs.
    #[error("hook {pattern:?} is not an output of {model}; it outputs: {available}")]
    UnknownHook {
        /// The pattern as given.
        pattern: String,
        /// The model file.
        model: std::path::PathBuf,
        /// The hooks the model outputs, comma-separated.
        available: String,
    },
    /// The tokenizer has more tokens than the model's embedding.
    #[error("tokenizer {path} has {tokenizer_vocab} tokens but the model's vocabulary is {model_vocab}; use the tokenizer the model was trained with")]
    VocabTooLarge {
        /// The tokenizer file.
        path: std::path::PathBuf,
        /// Its vocabulary size, added tokens included.
        tokenizer_vocab: usize,
        /// The model's vocabulary size.
        model_vocab: usize,
    },
    /// A sequence is longer than the model's context.
    #[error("{what} is {len} tokens, longer than the model's context of {n_ctx}; {fix}")]
    TooLong {
        /// Which sequence (file and line, or the option).
        what: String,
        /// Its length in tokens.
        len: usize,
        /// The model's context size.
        n_ctx: usize,
        /// How to fix it.
        fix: &'static str,
    },
    /// A `tokenizer.json` that is not the one the model was exported with.
    #[error("tokenizer {path} is not the one the model was exported with: {sidecar} records tokenizer_fingerprint {expected}, the file's BLAKE3 is {found}; put back the model's own tokenizer.json, or re-export the model with this tokenizer (scripts/export_onnx.py)")]
    TokenizerMismatch {
        /// The tokenizer file.
        path: std::path::PathBuf,
        /// The sidecar recording the expected fingerprint.
        sidecar: std::path::PathBuf,
        /// The fingerprint the sidecar records.
        expected: String,
        /// The tokenizer's fingerprint now.
        found: String,
    },
    /// A corpus or pairs file without any text.
    #[error("{path}: no text to dump (empty corpus); give a file with at least one non-empty line / record")]
    EmptyCorpus {
        /// The input file.
        path: std::path::PathBuf,
    },
    /// An input file is unreadable or malformed.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Input {
        /// The input file.
        path: std::path::PathBuf,
        /// 1-based line, when the problem is on one line.
        line: Option<usize>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// An option rejected by its stage's shared check.
    #[error("invalid option {0}")]
    Options(#[from] circuitry_core::params::Invalid),
    /// A parameter out of range.
    #[error("invalid parameter {name} = {value}: {message}")]
    BadParameter {
        /// Parameter name as the user spells it.
        name: &'static str,
        /// The value given.
        value: String,
        /// The valid range / fix.
        message: String,
    },
}

/// Result alias of the dump crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
