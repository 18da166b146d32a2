//! Feature statistics for the viewer: reads the `feature_stats.parquet` that SAE
//! training writes next to each SAE and keeps the features a circuit uses.
//!
//! The file has one row per feature with the columns `feature` (uint32), `density`
//! (float64), `mean_activation` (float64), `max_activation` (float32) and the lists,
//! strongest first, `top_activation` (float32), `top_left`, `top_token`, `top_right`
//! (utf8: decoded text before, at and after the token). Other columns are ignored;
//! integer and float widths and large/small string and list offsets are accepted.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::html::{feature_key, Context, FeatureInfo, FeatureTable};
use crate::graph::{Circuit, NodeKind};
use crate::{Error, Result};

/// File name of an SAE's feature statistics, inside the SAE's directory.
pub const FEATURE_STATS_FILE: &str = "feature_stats.parquet";

/// Read `path` (a `feature_stats.parquet`), keeping the features in `wanted` (all when
/// `None`).
pub fn read_feature_stats(
    path: &Path,
    wanted: Option<&BTreeSet<u32>>,
) -> Result<BTreeMap<u32, FeatureInfo>> {
    let bad = |reason: String| Error::FeatureStats {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("not a readable Parquet file: {e}")))?;
    let mut out = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(format!("cannot read a record batch: {e}")))?;
        let col = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch.column_by_name(name).ok_or_else(|| {
                bad(format!(
                    "no column `{name}`; it has {:?}; re-run circuitry-train-sae to rewrite it",
                    batch
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect::<Vec<_>>()
                ))
            })?;
            cast(c, to).map_err(|e| bad(format!("column `{name}` ({}): {e}", c.data_type())))
        };
        let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
        let feature = col("feature", &DataType::UInt32)?;
        let feature = feature.as_primitive::<UInt32Type>();
        let density = col("density", &DataType::Float64)?;
        let density = density.as_primitive::<Float64Type>();
        let mean = col("mean_activation", &DataType::Float64)?;
        let mean = mean.as_primitive::<Float64Type>();
        let max = col("max_activation", &DataType::Float32)?;
        let max = max.as_primitive::<Float32Type>();
        let acts = col("top_activation", &list(DataType::Float32))?;
        let acts = acts.as_list::<i32>();
        let texts: Vec<ArrayRef> = ["top_left", "top_token", "top_right"]
            .iter()
            .map(|name| col(name, &list(DataType::Utf8)))
            .collect::<Result<_>>()?;
        let (left, token, right) = (
            texts[0].as_list::<i32>(),
            texts[1].as_list::<i32>(),
            texts[2].as_list::<i32>(),
        );
        for r in 0..batch.num_rows() {
            let f = feature.value(r);
            if wanted.is_some_and(|w| !w.contains(&f)) {
                continue;
            }
            let a = acts.value(r);
            let a = a.as_primitive::<Float32Type>();
            let (l, t, rt) = (left.value(r), token.value(r), right.value(r));
            let (l, t, rt) = (
                l.as_string::<i32>(),
                t.as_string::<i32>(),
                rt.as_string::<i32>(),
            );
            if l.len() != a.len() || t.len() != a.len() || rt.len() != a.len() {
                return Err(bad(format!(
                    "feature {f}: top_activation has {} entries but top_left/top_token/top_right have {}/{}/{}",
                    a.len(),
                    l.len(),
                    t.len(),
                    rt.len()
                )));
            }
            let contexts = (0..a.len())
                .map(|i| Context {
                    activation: a.value(i),
                    left: l.value(i).to_string(),
                    token: t.value(i).to_string(),
                    right: rt.value(i).to_string(),
                })
                .collect();
            out.insert(
                f,
                FeatureInfo {
                    density: density.value(r),
                    mean_activation: mean.value(r),
                    max_activation: max.value(r),
                    contexts,
                },
            );
        }
    }
    Ok(out)
}

/// The statistics of every feature node of `circuit`, read from
/// `<sae_dir>/feature_stats.parquet` for each hook's SAE directory in `sae_dirs`.
/// Hooks without a directory or without the file are skipped and named in the
/// returned notes (the viewer then says "no feature statistics").
pub fn for_circuit(
    circuit: &Circuit,
    sae_dirs: &BTreeMap<String, PathBuf>,
) -> Result<(FeatureTable, Vec<String>)> {
    let mut wanted: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for n in &circuit.nodes {
        if let (NodeKind::Feature, Some(i)) = (n.kind, n.index) {
            wanted.entry(n.hook.to_string()).or_default().insert(i);
        }
    }
    let mut table = FeatureTable::new();
    let mut notes = Vec::new();
    for (hook, indices) in &wanted {
        let Some(dir) = sae_dirs.get(hook) else {
            notes.push(format!(
                "no SAE directory given for {hook}: no feature statistics"
            ));
            continue;
        };
        let path = dir.join(FEATURE_STATS_FILE);
        if !path.is_file() {
            notes.push(format!(
                "{} not found: no feature statistics for {hook}",
                path.display()
            ));
            continue;
        }
        for (i, info) in read_feature_stats(&path, Some(indices))? {
            table.insert(feature_key(hook, i), info);
        }
    }
    Ok((table, notes))
}
