//! Inputs of the ONNX dump: the tokenizer, a text corpus packed into windows, and
//! paired agreement prompts.
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, LargeStringArray, StringArray, StringViewArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::{Error, Result};

/// Tokens tried, in order, as the beginning-of-sequence token.
pub const BOS_CANDIDATES: &[&str] = &["<|endoftext|>", "<|bos|>", "<bos>", "<s>", "[BOS]"];

/// A Hugging Face tokenizer with its BOS token, if it has one.
#[derive(Debug)]
pub struct Tok {
    tokenizer: Tokenizer,
    path: PathBuf,
    /// The BOS id put first in every sequence, when the tokenizer has one.
    pub bos: Option<u32>,
    /// Vocabulary size, added tokens included.
    pub vocab_size: usize,
}

impl Tok {
    /// Load `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Tok> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| Error::ModelFile {
            path: path.to_path_buf(),
            message: format!("cannot load the tokenizer ({e}); the model folder needs the tokenizer.json it was trained with"),
        })?;
        let bos = BOS_CANDIDATES.iter().find_map(|t| tokenizer.token_to_id(t));
        let vocab_size = tokenizer.get_vocab_size(true);
        Ok(Tok {
            tokenizer,
            path: path.to_path_buf(),
            bos,
            vocab_size,
        })
    }

    /// Token ids of `text` (no special tokens added), `what` names it in errors.
    pub fn encode(
        &self,
        text: &str,
        what: &dyn Fn() -> (PathBuf, Option<usize>),
    ) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| {
            let (path, line) = what();
            Error::Input {
                path,
                line,
                message: format!("tokenizing with {}: {e}", self.path.display()),
            }
        })?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Read the documents of a corpus: lines of `.txt`, the `text` field of `.jsonl`, or
/// the `text` column of `.parquet`. Empty documents are skipped.
pub fn read_corpus(path: &Path) -> Result<Vec<(Option<usize>, String)>> {
    let input = |line: Option<usize>, message: String| Error::Input {
        path: path.to_path_buf(),
        line,
        message,
    };
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut docs = Vec::new();
    match ext {
        "parquet" => {
            let file = File::open(path).map_err(|e| input(None, format!("cannot open: {e}")))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|e| input(None, format!("not a Parquet file: {e}")))?;
            for batch in reader {
                let batch = batch.map_err(|e| input(None, format!("reading: {e}")))?;
                let col = batch
                    .column_by_name("text")
                    .ok_or_else(|| input(None, "no `text` column; the corpus needs one string column named text".into()))?;
                let any = col.as_any();
                let strings: Vec<Option<&str>> = if let Some(a) = any.downcast_ref::<StringArray>() {
                    a.iter().collect()
                } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
                    a.iter().collect()
                } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
                    a.iter().collect()
                } else {
                    return Err(input(None, format!("column `text` has type {}, expected strings", col.data_type())));
                };
                docs.extend(strings.into_iter().flatten().filter(|s| !s.trim().is_empty()).map(|s| (None, s.to_string())));
            }
        }
        "txt" | "jsonl" => {
            let text = std::fs::read_to_string(path).map_err(|e| input(None, format!("cannot read: {e}")))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                if ext == "txt" {
                    docs.push((Some(i + 1), line.to_string()));
                    continue;
                }
                #[derive(Deserialize)]
                struct Doc {
                    text: String,
                }
                let doc: Doc = serde_json::from_str(line)
                    .map_err(|e| input(Some(i + 1), format!("expected a JSON object with a string `text`: {e}")))?;
                if !doc.text.trim().is_empty() {
                    docs.push((Some(i + 1), doc.text));
                }
            }
        }
        _ => return Err(input(None, "unknown corpus format; use .txt (one document a line), .jsonl (`text` field) or .parquet (`text` column)".into())),
    }
    if docs.is_empty() {
        return Err(Error::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok(docs)
}

/// Tokenize documents and pack them into windows of at most `context_size` tokens:
/// documents are joined (BOS between them when the tokenizer has one), and each
/// window is BOS (if any) followed by the next tokens of that stream. The last window
/// may be shorter. `max_tokens` caps the total number of tokens (BOS included).
pub fn pack_corpus(
    tok: &Tok,
    path: &Path,
    docs: &[(Option<usize>, String)],
    context_size: usize,
    max_tokens: Option<usize>,
) -> Result<Vec<Vec<u32>>> {
    let mut stream = Vec::new();
    for (i, (line, text)) in docs.iter().enumerate() {
        if i > 0 {
            stream.extend(tok.bos);
        }
        stream.extend(tok.encode(text, &|| (path.to_path_buf(), *line))?);
    }
    let body = context_size - usize::from(tok.bos.is_some());
    if body == 0 {
        return Err(Error::BadParameter {
            name: "context-size",
            value: context_size.to_string(),
            message: "must leave room for a token after BOS (at least 2)".into(),
        });
    }
    let mut windows = Vec::new();
    let mut total = 0;
    for chunk in stream.chunks(body) {
        let mut window: Vec<u32> = tok.bos.into_iter().chain(chunk.iter().copied()).collect();
        if let Some(max) = max_tokens {
            window.truncate(max - total);
        }
        total += window.len();
        if !window.is_empty() {
            windows.push(window);
        }
        if max_tokens.is_some_and(|m| total >= m) {
            break;
        }
    }
    if windows.is_empty() {
        return Err(Error::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok(windows)
}

/// One line of an agreement JSONL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    /// The clean prompt.
    pub clean_prefix: String,
    /// The corrupted prompt.
    pub patch_prefix: String,
    /// The correct next word for the clean prompt.
    pub clean_answer: String,
    /// The correct next word for the patch prompt.
    pub patch_answer: String,
    /// The family (`singular`, `plural`, …).
    #[serde(default)]
    pub case: String,
}

/// One tokenized pair: a line of the store's `examples.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairExample {
    /// Pair index (the store's `example` column).
    pub example: u32,
    /// The family.
    pub case: String,
    /// The clean prompt's text.
    pub clean_prefix: String,
    /// The patch prompt's text.
    pub patch_prefix: String,
    /// Clean prompt ids, BOS first when the tokenizer has one (side 0).
    pub clean_ids: Vec<u32>,
    /// Patch prompt ids (side 1).
    pub patch_ids: Vec<u32>,
    /// The clean answer's text.
    pub clean_answer: String,
    /// The patch answer's text.
    pub patch_answer: String,
    /// Clean answer ids (one id when it is a single token).
    pub clean_answer_ids: Vec<u32>,
    /// Patch answer ids.
    pub patch_answer_ids: Vec<u32>,
}

/// What the circuit stage needs of a pair, under the model's tokenizer: each answer
/// one token (the metric is a logit difference at the last position) and the clean
/// and patch prompts of one token length (patching is position by position).
fn check_pair(
    rec: &PairRecord,
    clean_ids: &[u32],
    patch_ids: &[u32],
    clean_answer_ids: &[u32],
    patch_answer_ids: &[u32],
) -> std::result::Result<(), String> {
    for (field, text, ids) in [
        ("clean_answer", &rec.clean_answer, clean_answer_ids),
        ("patch_answer", &rec.patch_answer, patch_answer_ids),
    ] {
        if ids.len() != 1 {
            return Err(format!(
                "{field} {text:?} is {} tokens ({ids:?}) under the model's tokenizer; answers must be one token each (the circuit metric is a logit difference): use a single-token answer or drop the line",
                ids.len()
            ));
        }
    }
    if clean_ids.len() != patch_ids.len() {
        return Err(format!(
            "clean_prefix {:?} is {} tokens but patch_prefix {:?} is {}; clean and patch prompts must have the same token length (patching is position by position): fix or drop the line",
            rec.clean_prefix,
            clean_ids.len(),
            rec.patch_prefix,
            patch_ids.len()
        ));
    }
    Ok(())
}

/// Read and tokenize an agreement JSONL; `max_tokens` keeps whole pairs while both
/// sides fit.
pub fn read_pairs(tok: &Tok, path: &Path, max_tokens: Option<usize>) -> Result<Vec<PairExample>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Input {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })?;
    let mut pairs = Vec::new();
    let mut total = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || (path.to_path_buf(), Some(i + 1));
        let rec: PairRecord = serde_json::from_str(line).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            line: Some(i + 1),
            message: format!(
                "expected clean_prefix, patch_prefix, clean_answer, patch_answer, case: {e}"
            ),
        })?;
        let prompt = |text: &str| -> Result<Vec<u32>> {
            Ok(tok.bos.into_iter().chain(tok.encode(text, &at)?).collect())
        };
        let (clean_ids, patch_ids) = (prompt(&rec.clean_prefix)?, prompt(&rec.patch_prefix)?);
        if max_tokens.is_some_and(|m| total + clean_ids.len() + patch_ids.len() > m) {
            break;
        }
        total += clean_ids.len() + patch_ids.len();
        let (clean_answer_ids, patch_answer_ids) = (
            tok.encode(&rec.clean_answer, &at)?,
            tok.encode(&rec.patch_answer, &at)?,
        );
        check_pair(
            &rec,
            &clean_ids,
            &patch_ids,
            &clean_answer_ids,
            &patch_answer_ids,
        )
        .map_err(|message| Error::Input {
            path: path.to_path_buf(),
            line: Some(i + 1),
            message,
        })?;
        pairs.push(PairExample {
            example: pairs.len() as u32,
            clean_answer_ids,
            patch_answer_ids,
            case: rec.case,
            clean_prefix: rec.clean_prefix,
            patch_prefix: rec.patch_prefix,
            clean_answer: rec.clean_answer,
            patch_answer: rec.patch_answer,
            clean_ids,
            patch_ids,
        });
    }
    if pairs.is_empty() {
        return Err(Error::EmptyCorpus {
            path: path.to_path_buf(),
        });
    }
    Ok(pairs)
}
