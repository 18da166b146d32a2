//! Choosing the largest pre-activations of a row.
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

/// Values per block whose maximum is compared with the heap's root at once.
const BLOCK: usize = 64;
/// Lanes of the running block maximum (vectorised).
const LANES: usize = 16;

/// The indices of the `k` largest values of `row` that are above `floor`, ranked as
/// [`top_k`] ranks them; unordered. Equal to `top_k` over the values above `floor`:
/// a block of values whose maximum cannot enter the heap (it is at most `floor`, or
/// at most the heap's root once the heap is full) is skipped after one comparison.
pub(crate) fn top_k_above<F: Real>(row: &[F], k: usize, floor: F, heap: &mut Vec<(F, u32)>) {
    heap.clear();
    if k == 0 {
        return;
    }
    let mut bar = floor;
    for (b, block) in row.chunks(BLOCK).enumerate() {
        // `block_max` ignores NaN (it ranks lowest), and `bar` is never NaN.
        if block.len() == BLOCK && block_max(block) <= bar {
            continue;
        }
        for (j, &v) in block.iter().enumerate() {
            // NaN ranks lowest: it never enters.
            if v.is_nan() || v <= floor {
                continue;
            }
            let i = (b * BLOCK + j) as u32;
            if heap.len() < k {
                heap.push((v, i));
                sift_up(heap);
                if heap.len() == k {
                    bar = if heap[0].0 > floor { heap[0].0 } else { floor };
                }
            } else if v > heap[0].0 {
                heap[0] = (v, i);
                sift_down(heap);
                bar = heap[0].0;
            }
        }
    }
}

/// The largest value of a full block (NaNs ignored), lane by lane so that it
/// vectorises.
fn block_max<F: Real>(block: &[F]) -> F {
    let mut lanes = [F::neg_infinity(); LANES];
    for chunk in block.chunks_exact(LANES) {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    lanes
        .iter()
        .fold(F::neg_infinity(), |a, &b| if b > a { b } else { a })
}
