//! `meta.json`: what a store holds, and the spec a writer is asked to create.
use std::path::Path;

use circuitry_core::{atomic, HookPoint};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the store layout (`meta.json` fields and the Parquet schema).
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the store's metadata.
pub const META_FILE: &str = "meta.json";

/// Storage dtype of the activation columns. Reads always return `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit floats, stored exactly.
    F32,
    /// IEEE half precision: half the size, about 3 significant digits
    /// (relative error ≤ 2⁻¹¹ in the normal range).
    F16,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        })
    }
}

/// One hook column: its name and the width of each row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookMeta {
    /// The hook point (serialised as its TransformerLens name).
    pub hook: HookPoint,
    /// Values per row (d_model for the residual stream, d_mlp for `mlp.hook_post`).
    pub width: usize,
}

/// What a writer is asked to create. Two specs that agree on everything but
/// `extra` describe the same dataset (see [`StoreSpec::differences`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreSpec {
    /// The hook columns, in column order.
    pub hooks: Vec<HookMeta>,
    /// Storage dtype of the activation columns.
    pub dtype: Dtype,
    /// Fingerprint of the model's weights.
    pub model_fingerprint: String,
    /// Fingerprint of the tokenizer, if there is one.
    pub tokenizer_fingerprint: Option<String>,
    /// Length of the context windows; every `pos` is below it.
    pub context_size: usize,
    /// Whether rows carry `example` (u32) and `side` (u8: 0 clean, 1 patch) columns.
    pub paired: bool,
    /// Rows per shard file (the last shard may hold fewer).
    pub shard_rows: usize,
    /// Free-form provenance (e.g. the dump's configuration). Not compared on resume;
    /// the latest writer's value is kept.
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// One complete shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// File name inside the store directory (`shard_00000.parquet`).
    pub file: String,
    /// Rows in the file.
    pub rows: u64,
    /// BLAKE3 of the file's bytes (hex).
    pub checksum: String,
}

/// The content of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreMeta {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Version of circuitry that wrote the store.
    pub tool_version: String,
    /// See [`StoreSpec::hooks`].
    pub hooks: Vec<HookMeta>,
    /// See [`StoreSpec::dtype`].
    pub dtype: Dtype,
    /// See [`StoreSpec::model_fingerprint`].
    pub model_fingerprint: String,
    /// See [`StoreSpec::tokenizer_fingerprint`].
    pub tokenizer_fingerprint: Option<String>,
    /// See [`StoreSpec::context_size`].
    pub context_size: usize,
    /// See [`StoreSpec::paired`].
    pub paired: bool,
    /// See [`StoreSpec::shard_rows`].
    pub shard_rows: usize,
    /// See [`StoreSpec::extra`].
    #[serde(default)]
    pub extra: serde_json::Value,
    /// Rows in all complete shards.
    pub n_rows: u64,
    /// The complete shards, in row order.
    pub shards: Vec<ShardMeta>,
    /// True once the writer finished; readers refuse incomplete stores.
    pub complete: bool,
}

impl StoreSpec {
    /// Check that the spec can describe a store.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadSpec(m));
        if self.hooks.is_empty() {
            return bad("no hooks: a store needs at least one activation column".into());
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if h.width == 0 {
                return bad(format!("hook {} has width 0", h.hook));
            }
            if self.hooks[..i].iter().any(|o| o.hook == h.hook) {
                return bad(format!("hook {} is listed twice", h.hook));
            }
        }
        if self.shard_rows == 0 {
            return bad("shard_rows is 0; it must be at least 1".into());
        }
        if self.context_size == 0 {
            return bad("context_size is 0; it must be at least 1".into());
        }
        Ok(())
    }

    /// The fields in which `self` and `other` describe different datasets, as
    /// `field: this vs other`, joined by `; `. Empty when they agree. `extra` is
    /// not compared.
    pub fn differences(&self, other: &StoreSpec) -> String {
        let mut out = Vec::new();
        let names = |hooks: &[HookMeta]| {
            hooks
                .iter()
                .map(|h| format!("{}[{}]", h.hook, h.width))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.hooks != other.hooks {
            out.push(format!(
                "hooks: {} vs {}",
                names(&self.hooks),
                names(&other.hooks)
            ));
        }
        let mut cmp = |field: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{field}: {a} vs {b}"));
            }
        };
        cmp("dtype", self.dtype.to_string(), other.dtype.to_string());
        cmp(
            "model_fingerprint",
            self.model_fingerprint.clone(),
            other.model_fingerprint.clone(),
        );
        cmp(
            "tokenizer_fingerprint",
            format!("{:?}", self.tokenizer_fingerprint),
            format!("{:?}", other.tokenizer_fingerprint),
        );
        cmp(
            "context_size",
            self.context_size.to_string(),
            other.context_size.to_string(),
        );
        cmp("paired", self.paired.to_string(), other.paired.to_string());
        cmp(
            "shard_rows",
            self.shard_rows.to_string(),
            other.shard_rows.to_string(),
        );
        out.join("; ")
    }
}

impl StoreMeta {
    /// A new, empty, incomplete store for `spec`.
    pub fn new(spec: StoreSpec) -> Self {
        StoreMeta {
            schema_version: SCHEMA_VERSION,
            tool_version: circuitry_core::TOOL_VERSION.into(),
            hooks: spec.hooks,
            dtype: spec.dtype,
            model_fingerprint: spec.model_fingerprint,
            tokenizer_fingerprint: spec.tokenizer_fingerprint,
            context_size: spec.context_size,
            paired: spec.paired,
            shard_rows: spec.shard_rows,
            extra: spec.extra,
            n_rows: 0,
            shards: Vec::new(),
            complete: false,
        }
    }

    /// The spec this store was written with.
    pub fn spec(&self) -> StoreSpec {
        StoreSpec {
            hooks: self.hooks.clone(),
            dtype: self.dtype,
            model_fingerprint: self.model_fingerprint.clone(),
            tokenizer_fingerprint: self.tokenizer_fingerprint.clone(),
            context_size: self.context_size,
            paired: self.paired,
            shard_rows: self.shard_rows,
            extra: self.extra.clone(),
        }
    }

    /// Width of `hook`'s rows, or an error listing the hooks the store has.
    pub fn hook_width(&self, hook: HookPoint) -> Result<usize> {
        self.hooks
            .iter()
            .find(|h| h.hook == hook)
            .map(|h| h.width)
            .ok_or_else(|| Error::UnknownHook {
                hook,
                available: self
                    .hooks
                    .iter()
                    .map(|h| h.hook.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Read `dir/meta.json`: `Ok(None)` when there is none, an error when it is
    /// unreadable or of another schema version.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(META_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let raw: serde_json::Value = atomic::read_json(&path)?;
        let found = raw
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if found != u64::from(SCHEMA_VERSION) {
            return Err(Error::SchemaVersion {
                path,
                found: u32::try_from(found).unwrap_or(u32::MAX),
                expected: SCHEMA_VERSION,
            });
        }
        let meta: StoreMeta =
            serde_json::from_value(raw).map_err(|source| circuitry_core::Error::Json {
                path: path.clone(),
                source,
            })?;
        meta.spec().check().map_err(|e| Error::ShardMismatch {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(meta))
    }

    /// Write `dir/meta.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        atomic::write_json(&dir.join(META_FILE), self)?;
        Ok(())
    }
}

/// The file name of shard `index`.
pub fn shard_file_name(index: usize) -> String {
    format!("shard_{index:05}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StoreSpec {
        StoreSpec {
            hooks: vec![HookMeta {
                hook: HookPoint::ToyHidden,
                width: 4,
            }],
            dtype: Dtype::F16,
            model_fingerprint: "abc".into(),
            tokenizer_fingerprint: None,
            context_size: 1,
            paired: false,
            shard_rows: 10,
            extra: serde_json::json!({"seed": 1}),
        }
    }

    #[test]
    fn meta_json_uses_hook_names_and_lowercase_dtype() {
        let meta = StoreMeta::new(spec());
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["dtype"], "f16");
        assert_eq!(json["hooks"][0]["hook"], "toy.hook_hidden");
        assert_eq!(json["schema_version"], SCHEMA_VERSION);
        let back: StoreMeta = serde_json::from_value(json).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.spec(), spec());
    }

    #[test]
    fn differences_ignore_extra_and_name_fields() {
        let a = spec();
        let mut b = spec();
        b.extra = serde_json::json!({"seed": 2});
        assert_eq!(a.differences(&b), "");
        b.shard_rows = 11;
        b.dtype = Dtype::F32;
        let d = a.differences(&b);
        assert!(d.contains("shard_rows: 10 vs 11"), "{d}");
        assert!(d.contains("dtype: f16 vs f32"), "{d}");
    }

    #[test]
    fn check_rejects_bad_specs() {
        let mut s = spec();
        s.hooks.push(s.hooks[0].clone());
        assert!(s.check().unwrap_err().to_string().contains("listed twice"));
        let mut s = spec();
        s.hooks[0].width = 0;
        assert!(s.check().unwrap_err().to_string().contains("width 0"));
        let mut s = spec();
        s.shard_rows = 0;
        assert!(s.check().unwrap_err().to_string().contains("shard_rows"));
        let mut s = spec();
        s.hooks.clear();
        assert!(s.check().unwrap_err().to_string().contains("no hooks"));
    }
}
