//! Choosing the largest pre-activations of a row.
use std::cmp::Ordering;

use super::Real;

/// The indices of the `k` largest `(index, value)` pairs of `items`, ranked by value
/// (descending) then index (ascending), NaN lowest; unordered. `items` must come in
/// increasing index order. One pass with a binary min-heap of the current best `k`:
/// most values fail a single comparison with the heap's root.
pub(crate) fn top_k<F: Real>(
    items: impl Iterator<Item = (usize, F)>,
    k: usize,
    heap: &mut Vec<(F, u32)>,
) {
    heap.clear();
    if k == 0 {
        return;
    }
    for (i, v) in items {
        let v = if v.is_nan() { F::neg_infinity() } else { v };
        if heap.len() < k {
            heap.push((v, i as u32));
            sift_up(heap);
        } else if v > heap[0].0 {
            // Equal values lose to the root: it has the lower index.
            heap[0] = (v, i as u32);
            sift_down(heap);
        }
    }
}

/// `a` ranks below `b`: smaller value, or equal value and larger index.
fn worse<F: Real>(a: (F, u32), b: (F, u32)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
}

fn sift_up<F: Real>(heap: &mut [(F, u32)]) {
    let mut c = heap.len() - 1;
    while c > 0 {
        let parent = (c - 1) / 2;
        if worse(heap[c], heap[parent]) {
            heap.swap(c, parent);
            c = parent;
        } else {
            break;
        }
    }
}

fn sift_down<F: Real>(heap: &mut [(F, u32)]) {
    let n = heap.len();
    let mut i = 0;
    loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut w = i;
        if l < n && worse(heap[l], heap[w]) {
            w = l;
        }
        if r < n && worse(heap[r], heap[w]) {
            w = r;
        }
        if w == i {
            return;
        }
        heap.swap(i, w);
        i = w;
    }
}

/// Values per group whose maximum is taken in the first pass (two AVX-512 vectors of
/// `f32`).
pub(crate) const GROUP: usize = 32;

/// Reusable buffers of [`top_k_above`].
#[derive(Debug)]
pub(crate) struct Scratch<F> {
    /// The selected `(value, index)` pairs (unordered), read by the caller.
    pub(crate) heap: Vec<(F, u32)>,
    maxima: Vec<F>,
    order: Vec<F>,
}

impl<F> Default for Scratch<F> {
    fn default() -> Self {
        Scratch {
            heap: Vec::new(),
            maxima: Vec::new(),
            order: Vec::new(),
        }
    }
}

/// The indices of the `k` largest values of `row` that are above `floor`, ranked as
/// [`top_k`] ranks them, into `scratch.heap` (unordered). Equal to `top_k` over the
/// values above `floor`, in two passes:
///
/// 1. the maximum of every group of [`GROUP`] values (vectorised: AVX-512 or AVX2
///    when the CPU has it), and `τ`, the `k`-th largest of those maxima that are
///    above `floor`. The `k` groups with the largest maxima hold `k` values `≥ τ`, so
///    the `k`-th largest value of the row is `≥ τ`: every selected value is `≥ τ`;
/// 2. only the groups whose maximum is `≥ τ` (about `k` of them) are scanned, their
///    values `≥ τ` and above `floor` go through the heap of [`top_k`].
///
/// NaN ranks lowest: it never enters, and a group's maximum ignores it.
pub(crate) fn top_k_above<F: Real>(row: &[F], k: usize, floor: F, scratch: &mut Scratch<F>) {
    scratch.heap.clear();
    if k == 0 || row.is_empty() {
        return;
    }
    let groups = row.len().div_ceil(GROUP);
    scratch.maxima.clear();
    scratch.maxima.resize(groups, F::neg_infinity());
    F::group_maxima(row, &mut scratch.maxima);
    scratch.order.clear();
    scratch
        .order
        .extend(scratch.maxima.iter().copied().filter(|&m| m > floor));
    let tau = if scratch.order.len() > k {
        // The k-th largest maximum above the floor (no NaN among the maxima).
        let (_, kth, _) = scratch
            .order
            .select_nth_unstable_by(k - 1, |a, b| b.partial_cmp(a).unwrap_or(Ordering::Equal));
        *kth
    } else {
        // Fewer than k groups reach above the floor: every value above it is taken.
        F::neg_infinity()
    };
    let candidates = scratch
        .maxima
        .iter()
        .enumerate()
        .filter(|&(_, &m)| m > floor && m >= tau)
        .flat_map(|(g, _)| {
            let start = g * GROUP;
            row[start..(start + GROUP).min(row.len())]
                .iter()
                .enumerate()
                .map(move |(j, &v)| (start + j, v))
        })
        .filter(|&(_, v)| v > floor && v >= tau);
    top_k(candidates, k, &mut scratch.heap);
}

/// The maximum of every group of [`GROUP`] values of `row` into `out` (one per group,
/// the last group may be short); NaN is ignored (a group of NaNs gives −∞).
pub(crate) fn group_maxima_scalar<F: Real>(row: &[F], out: &mut [F]) {
    for (m, group) in out.iter_mut().zip(row.chunks(GROUP)) {
        *m = group
            .iter()
            .fold(F::neg_infinity(), |a, &v| if v > a { v } else { a });
    }
}

/// [`group_maxima_scalar`] for `f32`, with AVX-512 or AVX2 when the CPU has them
/// (the same results: the maximum is exact whatever the order).
pub(crate) fn group_maxima_f32(row: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { simd::maxima_avx512(row, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above).
            unsafe { simd::maxima_avx(row, out) };
            return;
        }
    }
    group_maxima_scalar(row, out);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{group_maxima_scalar, GROUP};
    use std::arch::x86_64::*;

    /// Full groups with AVX-512, the short last one scalar. `max_ps(v, acc)` returns
    /// `acc` when `v` is NaN, and `acc` starts at −∞, so NaN is ignored.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn maxima_avx512(row: &[f32], out: &mut [f32]) {
        let full = row.len() / GROUP;
        for (g, m) in out.iter_mut().enumerate().take(full) {
            let p = row[g * GROUP..].as_ptr();
            // SAFETY: group g is full: GROUP = 32 values from p are in `row`.
            let (a, b) = unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) };
            let acc = _mm512_max_ps(b, _mm512_max_ps(a, _mm512_set1_ps(f32::NEG_INFINITY)));
            *m = _mm512_reduce_max_ps(acc);
        }
        group_maxima_scalar(&row[full * GROUP..], &mut out[full..]);
    }

    /// As [`maxima_avx512`], with four 8-lane AVX vectors per group.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn maxima_avx(row: &[f32], out: &mut [f32]) {
        let full = row.len() / GROUP;
        for (g, m) in out.iter_mut().enumerate().take(full) {
            let p = row[g * GROUP..].as_ptr();
            let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
            for l in 0..GROUP / 8 {
                // SAFETY: group g is full: GROUP values from p are in `row`.
                acc = _mm256_max_ps(unsafe { _mm256_loadu_ps(p.add(8 * l)) }, acc);
            }
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
            *m = lanes.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        }
        group_maxima_scalar(&row[full * GROUP..], &mut out[full..]);
    }
}
