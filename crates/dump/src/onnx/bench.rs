//! Bare ONNX Runtime: the dump's session, inputs and batches, with the outputs
//! dropped instead of written — the benchmark's reference for the cost of writing.
use std::time::Instant;

use serde::Serialize;

use super::OnnxDumpConfig;
use crate::Result;

/// Timing of [`bare_ort`]: steady state is everything after the first batch.
#[derive(Debug, Clone, Serialize)]
pub struct BareOrtTiming {
    /// Token rows after the first batch.
    pub tokens: usize,
    /// Seconds from the end of the first batch to the end of the last.
    pub seconds: f64,
    /// All token rows.
    pub total_tokens: usize,
    /// Seconds from the start (model load and tokenizing included).
    pub wall: f64,
}

/// Run the graph over `cfg`'s input exactly as [`super::dump`] does (same session
/// options, hooks, padding and batches), reading each output's first value and
/// writing nothing.
pub fn bare_ort(cfg: &OnnxDumpConfig) -> Result<BareOrtTiming> {
    let wall = Instant::now();
    let super::Prepared {
        seqs, mut graph, ..
    } = super::prepare(cfg)?;
    let (mut steady, mut tokens, mut total) = (None, 0, 0);
    let mut checksum = 0.0f32;
    for batch in seqs.ids.chunks(cfg.batch_size) {
        let (ids, mask) = super::left_pad(batch); // (batch, seq) each
        checksum += graph.run(&ids, &mask, |outputs| {
            Ok(outputs.iter().filter_map(|o| o.iter().next()).sum::<f32>())
        })?;
        let rows: usize = batch.iter().map(Vec::len).sum();
        total += rows;
        match steady {
            None => steady = Some(Instant::now()),
            Some(_) => tokens += rows,
        }
    }
    tracing::debug!(checksum, "bare ORT run done");
    Ok(BareOrtTiming {
        tokens,
        seconds: steady.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        total_tokens: total,
        wall: wall.elapsed().as_secs_f64(),
    })
}
