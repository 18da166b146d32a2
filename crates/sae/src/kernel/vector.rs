//! Slice kernels of the sparse path, compiled for AVX-512 and AVX2 as well
//! as the baseline target and picked at run time (`multiversion`).
//!
//! Every kernel does the same IEEE operations in the same order whatever the target:
//! Rust never fuses `a * b + c`, and the reductions keep [`LANES`] explicit partial
//! sums that are added up in a fixed order at the end. So the results are bitwise
//! the same on every CPU, only faster where the vectors are wider.
use multiversion::multiversion;

use super::Real;

/// Partial sums of the reductions: one AVX-512 vector of `f32`.
const LANES: usize = 16;

/// `dst += a · src`, elementwise.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn axpy<F: Real>(dst: &mut [F], a: F, src: &[F]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

/// The indices of `row`'s nonzero entries (NaN included), increasing, into `out`
/// (cleared first). Blocks of [`LANES`] zeros are skipped with one vectorised test
/// (`Σ |v| = 0`: a sum of non-negative values is zero only when every one is), so a
/// sparse row costs about a sixteenth of an entry-by-entry scan.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn nonzero_indices<F: Real>(row: &[F], out: &mut Vec<u32>) {
    out.clear();
    let blocks = row.chunks_exact(LANES);
    let tail = blocks.remainder();
    for (b, block) in blocks.enumerate() {
        let mut acc = [F::zero(); LANES];
        for l in 0..LANES {
            acc[l] = block[l].abs();
        }
        if acc.iter().fold(F::zero(), |s, &v| s + v) == F::zero() {
            continue;
        }
        for (l, &v) in block.iter().enumerate() {
            if v != F::zero() {
                out.push((b * LANES + l) as u32);
            }
        }
    }
    let start = row.len() - tail.len();
    for (l, &v) in tail.iter().enumerate() {
        if v != F::zero() {
            out.push((start + l) as u32);
        }
    }
}

/// `Σ a_i b_i`, in [`LANES`] partial sums.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn dot<F: Real>(a: &[F], b: &[F]) -> F {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [F::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    acc.iter().fold(F::zero(), |s, &v| s + v)
}

/// `Σ v_i²` in `f64`, in [`LANES`] partial sums.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn sum_sq<F: Real>(a: &[F]) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            let v = x[l].as_f64();
            acc[l] += v * v;
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        let v = x.as_f64();
        acc[l] += v * v;
    }
    acc.iter().sum()
}

/// `dst = a − b`, elementwise.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn sub_assign<F: Real>(dst: &mut [F], b: &[F]) {
    for (d, &s) in dst.iter_mut().zip(b) {
        *d -= s;
    }
}

/// `dst *= a`, elementwise.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn scale<F: Real>(dst: &mut [F], a: F) {
    for d in dst.iter_mut() {
        *d *= a;
    }
}

/// For features `a` and their gradient `g`: `sum += a`, `g = 0` where `a ≤ 0`; returns
/// the number of positive values and their minimum (`+∞` when none), kept in
/// [`LANES`] partial minima (the minimum does not depend on the order).
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
pub(crate) fn mask_and_count<F: Real>(a: &[F], g: &mut [F], sum: &mut [F]) -> (usize, F) {
    let n = a.len().min(g.len()).min(sum.len());
    let (a, g, sum) = (&a[..n], &mut g[..n], &mut sum[..n]);
    let mut mins = [F::infinity(); LANES];
    let mut counts = [0u32; LANES];
    let mut step = |l: usize, v: F, d: &mut F, t: &mut F| {
        *t += v;
        let pos = v > F::zero();
        if !pos {
            *d = F::zero();
        }
        counts[l] += u32::from(pos);
        if pos && v < mins[l] {
            mins[l] = v;
        }
    };
    let mut ca = a.chunks_exact(LANES);
    let mut cg = g.chunks_exact_mut(LANES);
    let mut cs = sum.chunks_exact_mut(LANES);
    for ((x, d), t) in (&mut ca).zip(&mut cg).zip(&mut cs) {
        for l in 0..LANES {
            step(l, x[l], &mut d[l], &mut t[l]);
        }
    }
    let rest = ca
        .remainder()
        .iter()
        .zip(cg.into_remainder())
        .zip(cs.into_remainder());
    for (l, ((&v, d), t)) in rest.enumerate() {
        step(l, v, d, t);
    }
    let count = counts.iter().map(|&c| c as usize).sum();
    let min = mins
        .iter()
        .fold(F::infinity(), |m, &v| if v < m { v } else { m });
    (count, min)
}
