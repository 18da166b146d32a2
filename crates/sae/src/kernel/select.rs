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
