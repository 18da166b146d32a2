//! A seeded shuffle buffer over token rows: memory bounded by the buffer, not the
//! corpus.
use ndarray::{s, Array2, ArrayView2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Holds up to `capacity` rows of one width and hands out batches of rows drawn
/// uniformly at random from what it holds.
///
/// Used as a stream shuffler ([`ShuffleBuffer::shuffle`]): fill the buffer, emit a
/// random batch, refill, …, and drain it when the source ends, so every row comes
/// out exactly once per pass. The order depends only on the RNG's state and the
/// sequence of row counts pushed, so the same seed and the same input give the
/// same batches, byte for byte (on every platform: ChaCha8).
#[derive(Debug, Clone)]
pub struct ShuffleBuffer {
    width: usize,
    capacity: usize,
    /// (capacity, width) row-major; the first `len` rows are live.
    data: Vec<f32>,
    len: usize,
    rng: ChaCha8Rng,
}

impl ShuffleBuffer {
    /// A buffer of `capacity_rows` rows of `width` values, drawing with `rng`.
    /// Allocates `capacity_rows * width` floats up front.
    pub fn new(width: usize, capacity_rows: usize, rng: ChaCha8Rng) -> Result<Self> {
        if width == 0 || capacity_rows == 0 {
            return Err(Error::Shuffle(format!(
                "width ({width}) and capacity ({capacity_rows} rows) must be positive"
            )));
        }
        let size = width.checked_mul(capacity_rows).ok_or_else(|| {
            Error::Shuffle(format!(
                "capacity {capacity_rows} rows × width {width} overflows"
            ))
        })?;
        Ok(ShuffleBuffer {
            width,
            capacity: capacity_rows,
            data: vec![0.0; size],
            len: 0,
            rng,
        })
    }

    /// [`ShuffleBuffer::new`] with `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn seeded(width: usize, capacity_rows: usize, seed: u64) -> Result<Self> {
        Self::new(width, capacity_rows, ChaCha8Rng::seed_from_u64(seed))
    }

    /// Values per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Maximum rows held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no rows are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows that still fit.
    pub fn free_rows(&self) -> usize {
        self.capacity - self.len
    }

    /// Add as many leading rows of `rows` (n, width) as fit; returns how many were
    /// taken (the caller pushes the rest after popping a batch).
    pub fn push(&mut self, rows: ArrayView2<'_, f32>) -> Result<usize> {
        if rows.ncols() != self.width {
            return Err(Error::Shuffle(format!(
                "rows have width {}, the buffer holds width {}",
                rows.ncols(),
                self.width
            )));
        }
        let take = rows.nrows().min(self.free_rows());
        let taken = rows.slice(s![..take, ..]); // (take, width)
        let dst = &mut self.data[self.len * self.width..(self.len + take) * self.width];
        match taken.as_slice() {
            Some(flat) => dst.copy_from_slice(flat),
            None => {
                for (d, v) in dst.iter_mut().zip(taken.iter()) {
                    *d = *v;
                }
            }
        }
        self.len += take;
        Ok(take)
    }

    /// Remove `min(batch_rows, len)` rows chosen uniformly at random, in the order
    /// drawn: (rows, width). `None` when the buffer is empty.
    pub fn pop_batch(&mut self, batch_rows: usize) -> Option<Array2<f32>> {
        let k = batch_rows.min(self.len);
        if k == 0 {
            return None;
        }
        let w = self.width;
        let mut out = Vec::with_capacity(k * w); // (k, width)
        for _ in 0..k {
            let j = self.rng.random_range(0..self.len);
            let last = self.len - 1;
            out.extend_from_slice(&self.data[j * w..(j + 1) * w]);
            if j != last {
                self.data.copy_within(last * w..(last + 1) * w, j * w);
            }
            self.len = last;
        }
        Array2::from_shape_vec((k, w), out).ok()
    }

    /// Everything needed to continue exactly where the buffer is: the rows held and
    /// the RNG's position. [`ShuffleBuffer::from_state`] rebuilds an identical buffer.
    pub fn state(&self) -> ShuffleState {
        ShuffleState {
            width: self.width,
            capacity: self.capacity,
            held: self.data[..self.len * self.width].to_vec(),
            rng: RngState::of(&self.rng),
        }
    }

    /// The buffer [`ShuffleBuffer::state`] described: same rows, same RNG position,
    /// so the batches it pops from here on are the same, byte for byte.
    pub fn from_state(state: &ShuffleState) -> Result<Self> {
        let mut buf = ShuffleBuffer::new(state.width, state.capacity, state.rng.to_rng()?)?;
        if !state.held.len().is_multiple_of(state.width) || state.held.len() > buf.data.len() {
            return Err(Error::Shuffle(format!(
                "saved state holds {} values, not a whole number of rows of width {} within the capacity of {} rows",
                state.held.len(),
                state.width,
                state.capacity
            )));
        }
        buf.data[..state.held.len()].copy_from_slice(&state.held);
        buf.len = state.held.len() / state.width;
        Ok(buf)
    }

    /// Shuffle a stream of row batches (e.g. [`crate::ActivationStore::hook_batches`])
    /// into batches of `batch_rows` rows; the last batch of the stream may be
    /// smaller. Memory: the buffer plus one source batch.
    pub fn shuffle<I>(self, source: I, batch_rows: usize) -> Result<Shuffled<I>>
    where
        I: Iterator<Item = Result<Array2<f32>>>,
    {
        if batch_rows == 0 || batch_rows > self.capacity {
            return Err(Error::Shuffle(format!(
                "batch of {batch_rows} rows must be between 1 and the capacity {}",
                self.capacity
            )));
        }
        Ok(Shuffled {
            buf: self,
            source,
            pending: None,
            batch_rows,
            exhausted: false,
        })
    }
}

/// A ChaCha8 RNG's position: seed, stream and word position (a decimal string, as
/// JSON numbers cannot hold a `u128`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The word position, in decimal.
    pub word_pos: String,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// An RNG at exactly this position.
    pub fn to_rng(&self) -> Result<ChaCha8Rng> {
        let pos: u128 = self.word_pos.parse().map_err(|_| {
            Error::Shuffle(format!(
                "RNG word position {:?} is not a number",
                self.word_pos
            ))
        })?;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

/// A [`ShuffleBuffer`]'s full state (see [`ShuffleBuffer::state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShuffleState {
    /// Values per row.
    pub width: usize,
    /// Maximum rows held.
    pub capacity: usize,
    /// The rows held, row-major: (rows held × width) values.
    pub held: Vec<f32>,
    /// The RNG's position.
    pub rng: RngState,
}

/// Shuffled batches of a stream; made by [`ShuffleBuffer::shuffle`].
#[derive(Debug)]
pub struct Shuffled<I> {
    buf: ShuffleBuffer,
    source: I,
    /// A source batch (rows, width) and how many of its rows were pushed already.
    pending: Option<(Array2<f32>, usize)>,
    batch_rows: usize,
    exhausted: bool,
}

impl<I> Shuffled<I> {
    /// The buffer back (with its RNG state), e.g. to shuffle the next epoch
    /// differently. Rows still held stay in it.
    pub fn into_buffer(self) -> ShuffleBuffer {
        self.buf
    }
}

impl<I> Iterator for Shuffled<I>
where
    I: Iterator<Item = Result<Array2<f32>>>,
{
    type Item = Result<Array2<f32>>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.buf.free_rows() > 0 {
            if let Some((rows, done)) = self.pending.take() {
                let taken = match self.buf.push(rows.slice(s![done.., ..])) {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                };
                if done + taken < rows.nrows() {
                    self.pending = Some((rows, done + taken));
                }
            } else if self.exhausted {
                break;
            } else {
                match self.source.next() {
                    None => self.exhausted = true,
                    Some(Err(e)) => return Some(Err(e)),
                    Some(Ok(rows)) => self.pending = Some((rows, 0)),
                }
            }
        }
        self.buf.pop_batch(self.batch_rows).map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `n` rows of width 3 whose first value is the row's id.
    fn rows(start: usize, n: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, 3), |(i, j)| ((start + i) * 10 + j) as f32 / 10.0)
    }

    fn source(sizes: &[usize]) -> Vec<Result<Array2<f32>>> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&n| {
                let r = rows(start, n);
                start += n;
                Ok(r)
            })
            .collect()
    }

    fn run(seed: u64, cap: usize, batch: usize, sizes: &[usize]) -> Vec<Array2<f32>> {
        ShuffleBuffer::seeded(3, cap, seed)
            .unwrap()
            .shuffle(source(sizes).into_iter(), batch)
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap()
    }

    #[test]
    fn every_row_exactly_once_and_intact() {
        let sizes = [7, 30, 1, 12, 50];
        let total: usize = sizes.iter().sum();
        let batches = run(1, 16, 5, &sizes);
        let mut ids: Vec<usize> = Vec::new();
        for b in &batches {
            assert!(b.nrows() <= 5 && b.nrows() > 0);
            for r in b.outer_iter() {
                let id = r[0].round() as usize;
                for j in 0..3 {
                    assert_eq!(r[j], (id * 10 + j) as f32 / 10.0, "row {id} intact");
                }
                ids.push(id);
            }
        }
        assert_eq!(batches.iter().filter(|b| b.nrows() < 5).count(), 0);
        let in_order: Vec<usize> = (0..total).collect();
        assert_ne!(ids, in_order, "rows come out shuffled");
        ids.sort_unstable();
        assert_eq!(ids, in_order);
    }

    #[test]
    fn same_seed_same_batches_other_seed_other_batches() {
        let a = run(7, 20, 6, &[25, 25, 9]);
        let b = run(7, 20, 6, &[25, 25, 9]);
        let c = run(8, 20, 6, &[25, 25, 9]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.last().map(|l| l.nrows()), Some(59 % 6));
    }

    #[test]
    fn a_restored_state_pops_the_same_batches() {
        let mut a = ShuffleBuffer::seeded(3, 10, 5).unwrap();
        a.push(rows(0, 10).view()).unwrap();
        a.pop_batch(4).unwrap();
        let saved = a.state();
        let json = serde_json::to_string(&saved).unwrap();
        let mut b = ShuffleBuffer::from_state(&serde_json::from_str(&json).unwrap()).unwrap();
        for start in [10, 14, 18] {
            assert_eq!(a.push(rows(start, 4).view()).unwrap(), 4);
            assert_eq!(b.push(rows(start, 4).view()).unwrap(), 4);
            assert_eq!(a.pop_batch(4), b.pop_batch(4));
        }
        let mut bad = saved.clone();
        bad.held.push(1.0);
        assert!(ShuffleBuffer::from_state(&bad).is_err());
    }

    #[test]
    fn source_errors_pass_through_and_bad_arguments_are_refused() {
        let src = vec![Ok(rows(0, 4)), Err(Error::BadBatch("boom".into()))];
        let out: Vec<_> = ShuffleBuffer::seeded(3, 4, 0)
            .unwrap()
            .shuffle(src.into_iter(), 2)
            .unwrap()
            .collect();
        assert!(out.iter().any(|r| r.is_err()));
        let buf = ShuffleBuffer::seeded(3, 4, 0).unwrap();
        assert!(buf.clone().shuffle(std::iter::empty(), 5).is_err());
        assert!(buf.shuffle(std::iter::empty(), 0).is_err());
        let mut buf = ShuffleBuffer::seeded(3, 4, 0).unwrap();
        assert!(buf.push(Array2::zeros((2, 2)).view()).is_err());
        assert_eq!(buf.push(rows(0, 6).view()).unwrap(), 4);
        assert_eq!(buf.free_rows(), 0);
    }
}
