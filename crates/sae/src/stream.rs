//! Streaming token rows from an activation store: the held-out split, the scan
//! before training, and the shuffled, checkpointable stream of training batches
//! that feeds one SAE per hook from a single read of each shard.
//!
//! Rows of all selected hooks travel together, concatenated: a buffer row is
//! `[hook 0 values | hook 1 values | …]`, so every hook's SAE sees the same token
//! rows in the same order whichever subset of hooks a run trains.
use circuitry_core::HookPoint;
use circuitry_store::{ActivationStore, ShuffleBuffer, ShuffleState};
use ndarray::{s, Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::train::rng_for;
use crate::{Error, Result};

/// RNG streams of the seed used here (the trainer uses 0–3).
const STREAM_SHUFFLE: u64 = 10;
const STREAM_RESERVOIR: u64 = 11;
const STREAM_SHARD_ORDER_BASE: u64 = 1 << 32;

/// Whether store row `row` is held out for evaluation: a seeded hash of the row
/// index below `fraction`. Needs no pass over the data and does not depend on the
/// hooks, the shard size or the order rows are read in.
pub fn is_eval_row(seed: u64, fraction: f64, row: u64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let h = splitmix64(splitmix64(seed ^ 0x5EED_E7A1) ^ row);
    (h >> 11) as f64 / (1u64 << 53) as f64 <= fraction
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The selected hooks and where each sits in a concatenated row.
#[derive(Debug, Clone, PartialEq)]
pub struct HookLayout {
    /// (hook, width) in column order.
    pub hooks: Vec<(HookPoint, usize)>,
}

impl HookLayout {
    /// Widths from the store; the error lists the hooks it has.
    pub fn new(store: &ActivationStore, hooks: &[HookPoint]) -> Result<Self> {
        let hooks = hooks
            .iter()
            .map(|&h| Ok((h, store.hook_width(h)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(HookLayout { hooks })
    }

    /// Sum of the widths.
    pub fn width(&self) -> usize {
        self.hooks.iter().map(|h| h.1).sum()
    }

    /// Column range of hook number `i`.
    pub fn columns(&self, i: usize) -> std::ops::Range<usize> {
        let start: usize = self.hooks[..i].iter().map(|h| h.1).sum();
        start..start + self.hooks[i].1
    }

    fn names(&self) -> Vec<HookPoint> {
        self.hooks.iter().map(|h| h.0).collect()
    }
}

/// Row offsets of each shard in the store: (n_shards + 1,).
fn shard_starts(store: &ActivationStore) -> Vec<u64> {
    let mut starts = vec![0u64];
    for sh in &store.meta().shards {
        starts.push(starts[starts.len() - 1] + sh.rows);
    }
    starts
}

/// Read shard `shard` for every hook and check the values are finite, naming the
/// store row and hook of the first bad one.
pub fn read_checked(
    store: &ActivationStore,
    layout: &HookLayout,
    shard: usize,
    first_row: u64,
) -> Result<Vec<Array2<f32>>> {
    // The reader's decoding buffers are freed on return: give their pages back (alloc.rs).
    let arrays = store.read_shard_hooks(shard, &layout.names())?; // per hook (rows, width)
    crate::alloc::release_freed_memory();
    for (a, &(hook, _)) in arrays.iter().zip(&layout.hooks) {
        if let Some(((r, col), &value)) = a.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFiniteRow {
                hook,
                row: first_row + r as u64,
                col,
                value,
                store: store.dir().to_path_buf(),
            });
        }
    }
    Ok(arrays)
}

/// Per hook, the row norm above which a token row is an outlier and left out
/// (`--outlier-norm-ratio`): `ratio` times the median row norm of the store's first
/// shard at that hook; infinite (no row is left out) when `ratio` is 0. Massive
/// activations (the BOS token and other attention sinks of Llama-family models, with
/// norms 50–150 times the median) would otherwise dominate the reconstruction loss
/// and the explained variance.
pub fn outlier_norms(store: &ActivationStore, layout: &HookLayout, ratio: f64) -> Result<Vec<f32>> {
    if ratio <= 0.0 {
        return Ok(vec![f32::INFINITY; layout.hooks.len()]);
    }
    let arrays = read_checked(store, layout, 0, 0)?; // per hook (rows, width)
    Ok(arrays
        .iter()
        .map(|a| {
            let mut norms: Vec<f32> = row_norms(a.view());
            norms.sort_by(f32::total_cmp);
            let median = norms.get(norms.len() / 2).copied().unwrap_or(0.0);
            (f64::from(median) * ratio) as f32
        })
        .collect())
}

/// Euclidean norm of every row of `x (rows, width)`.
pub fn row_norms(x: ArrayView2<'_, f32>) -> Vec<f32> {
    x.outer_iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}

/// The rows of `x (rows, width)` whose norm is at most `max_norm`, and their indices;
/// `None` when every row is kept.
pub fn without_outliers(x: ArrayView2<'_, f32>, max_norm: f32) -> Option<Array2<f32>> {
    if max_norm.is_infinite() {
        return None;
    }
    let keep: Vec<usize> = row_norms(x)
        .iter()
        .enumerate()
        .filter(|(_, &n)| n <= max_norm)
        .map(|(i, _)| i)
        .collect();
    (keep.len() < x.nrows()).then(|| x.select(ndarray::Axis(0), &keep))
}

/// Rows of one shard that are not held out, all hooks concatenated: (rows, width).
/// Consumes the per-hook arrays, freeing each once copied, so the shard is held about
/// once, not twice (a 100k-row shard of 30 hooks of 576 is 6.9 GB as f32).
fn train_rows(
    arrays: Vec<Array2<f32>>,
    layout: &HookLayout,
    first_row: u64,
    seed: u64,
    eval_fraction: f64,
) -> Array2<f32> {
    let n = arrays.first().map_or(0, |a| a.nrows());
    let keep: Vec<usize> = (0..n)
        .filter(|&r| !is_eval_row(seed, eval_fraction, first_row + r as u64))
        .collect();
    let mut out = Array2::<f32>::zeros((keep.len(), layout.width())); // (rows, width)
    for (i, a) in arrays.into_iter().enumerate() {
        let cols = layout.columns(i);
        for (o, &r) in keep.iter().enumerate() {
            out.slice_mut(s![o, cols.clone()]).assign(&a.row(r));
        }
        drop(a);
        crate::alloc::release_freed_memory();
    }
    out
}

/// What one pass over the store before training finds.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Rows available for training.
    pub train_rows: u64,
    /// Rows held out.
    pub eval_rows: u64,
    /// A seeded uniform sample (reservoir) of up to `sample_rows` training rows, all
    /// hooks concatenated: (rows, width). Used to initialise `b_dec`.
    pub sample: Array2<f32>,
}

/// Read every shard once: check values are finite, count training and held-out
/// rows, and draw a reservoir sample of training rows. Memory: one shard plus the
/// sample.
pub fn scan(
    store: &ActivationStore,
    layout: &HookLayout,
    seed: u64,
    eval_fraction: f64,
    sample_rows: usize,
) -> Result<Scan> {
    let starts = shard_starts(store);
    let width = layout.width();
    let cap = sample_rows.max(1);
    let mut sample: Vec<f32> = Vec::with_capacity(cap.min(1 << 16) * width);
    let mut rng = rng_for(seed, STREAM_RESERVOIR);
    let (mut seen, mut eval_rows) = (0u64, 0u64);
    for (shard, &first) in starts.iter().take(store.meta().shards.len()).enumerate() {
        let arrays = read_checked(store, layout, shard, first)?;
        let n = arrays.first().map_or(0, |a| a.nrows()) as u64;
        let rows = train_rows(arrays, layout, first, seed, eval_fraction);
        eval_rows += n - rows.nrows() as u64;
        for row in rows.outer_iter() {
            if (seen as usize) < cap {
                sample.extend(row.iter());
            } else {
                let j = rng.random_range(0..=seen);
                if (j as usize) < cap {
                    let j = j as usize;
                    for (d, v) in sample[j * width..(j + 1) * width].iter_mut().zip(row) {
                        *d = *v;
                    }
                }
            }
            seen += 1;
        }
    }
    let n_sample = sample.len() / width.max(1);
    let sample = Array2::from_shape_vec((n_sample, width), sample)
        .map_err(|e| Error::Empty(format!("internal: reservoir sample shape: {e}")))?;
    Ok(Scan {
        train_rows: seen,
        eval_rows,
        sample,
    })
}

/// Where a [`TrainStream`] stands, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Passes over the training rows begun (0-based index of the current one).
    pub epoch: u64,
    /// Position in this epoch's shard order.
    pub order_pos: usize,
    /// Training rows of the current shard already pushed into the buffer.
    pub row_in_shard: usize,
    /// The shuffle buffer (rows held and RNG position).
    pub buffer: ShuffleState,
}

/// An endless stream of shuffled training batches: each epoch visits the shards in
/// a seeded order, pushes their training rows into a seeded [`ShuffleBuffer`] and
/// pops a batch whenever the buffer is full. Memory: the buffer plus one shard.
#[derive(Debug)]
pub struct TrainStream<'s> {
    store: &'s ActivationStore,
    layout: HookLayout,
    starts: Vec<u64>,
    seed: u64,
    eval_fraction: f64,
    batch_rows: usize,
    epoch: u64,
    order: Vec<usize>,
    order_pos: usize,
    row_in_shard: usize,
    pending: Option<Array2<f32>>, // (train rows of the current shard, width)
    buffer: ShuffleBuffer,
}

impl<'s> TrainStream<'s> {
    /// A stream at its start, or at `state` when resuming.
    pub fn new(
        store: &'s ActivationStore,
        layout: HookLayout,
        seed: u64,
        eval_fraction: f64,
        batch_rows: usize,
        buffer_rows: usize,
        state: Option<&StreamState>,
    ) -> Result<Self> {
        if batch_rows == 0 || buffer_rows < batch_rows {
            return Err(Error::config(
                "buffer_rows",
                buffer_rows,
                format!("the shuffle buffer must hold at least one batch ({batch_rows} rows); raise --buffer-rows"),
            ));
        }
        let buffer = match state {
            Some(st) => {
                if st.buffer.width != layout.width() || st.buffer.capacity != buffer_rows {
                    return Err(Error::Checkpoint(format!(
                        "its shuffle buffer holds rows of width {} × {} rows, this run needs {} × {}",
                        st.buffer.width,
                        st.buffer.capacity,
                        layout.width(),
                        buffer_rows
                    )));
                }
                ShuffleBuffer::from_state(&st.buffer)?
            }
            None => ShuffleBuffer::new(layout.width(), buffer_rows, rng_for(seed, STREAM_SHUFFLE))?,
        };
        let (epoch, order_pos, row_in_shard) =
            state.map_or((0, 0, 0), |s| (s.epoch, s.order_pos, s.row_in_shard));
        let mut stream = TrainStream {
            starts: shard_starts(store),
            store,
            layout,
            seed,
            eval_fraction,
            batch_rows,
            epoch,
            order: Vec::new(),
            order_pos,
            row_in_shard,
            pending: None,
            buffer,
        };
        stream.order = stream.shard_order(epoch);
        Ok(stream)
    }

    fn shard_order(&self, epoch: u64) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(STREAM_SHARD_ORDER_BASE + epoch);
        let mut order: Vec<usize> = (0..self.store.meta().shards.len()).collect();
        order.shuffle(&mut rng);
        order
    }

    /// The hooks and their columns.
    pub fn layout(&self) -> &HookLayout {
        &self.layout
    }

    /// Epochs begun.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> StreamState {
        StreamState {
            epoch: self.epoch,
            order_pos: self.order_pos,
            row_in_shard: self.row_in_shard,
            buffer: self.buffer.state(),
        }
    }

    /// The next batch: (batch_rows, width), all hooks concatenated.
    pub fn next_batch(&mut self) -> Result<Array2<f32>> {
        let mut empty_shards = 0;
        while self.buffer.free_rows() > 0 {
            if self.pending.is_none() {
                let shard = self.order[self.order_pos];
                let first = self.starts[shard];
                let arrays = read_checked(self.store, &self.layout, shard, first)?;
                let rows = train_rows(arrays, &self.layout, first, self.seed, self.eval_fraction);
                self.pending = Some(rows);
            }
            let rows = self.pending.as_ref().map_or(0, |p| p.nrows());
            let taken = match &self.pending {
                Some(p) => self
                    .buffer
                    .push(p.slice(s![self.row_in_shard.min(rows).., ..]))?,
                None => 0,
            };
            self.row_in_shard += taken;
            if self.row_in_shard >= rows {
                empty_shards = if rows == 0 { empty_shards + 1 } else { 0 };
                if empty_shards > self.order.len() {
                    return Err(Error::Empty(format!(
                        "every row of {} is held out; lower --eval-fraction",
                        self.store.dir().display()
                    )));
                }
                self.pending = None;
                self.row_in_shard = 0;
                self.order_pos += 1;
                if self.order_pos == self.order.len() {
                    self.epoch += 1;
                    self.order_pos = 0;
                    self.order = self.shard_order(self.epoch);
                }
            }
        }
        self.buffer
            .pop_batch(self.batch_rows)
            .ok_or_else(|| Error::Empty("internal: the shuffle buffer gave no rows".into()))
    }
}

/// Hook number `i`'s columns of a concatenated batch: (rows, width of hook i).
pub fn hook_view<'a>(batch: &'a Array2<f32>, layout: &HookLayout, i: usize) -> ArrayView2<'a, f32> {
    batch.slice(s![.., layout.columns(i)])
}
