//! Dense products `c = alpha · a b` (or `c += alpha · a b`) of ndarray views through
//! faer, whose kernels are chosen at run time for the CPU (AVX-512 where it has it,
//! AVX2 + FMA otherwise) and which splits the product over rayon's threads.
//!
//! Each output element is computed by one thread in an order fixed by the shapes, so
//! products do not depend on the number of threads (tested here and in the SAE
//! crate's kernels, which share this function).
//!
//! A process may install another library for the `f32` products of [`matmul`] (the
//! transformer's, the circuit stage's): a [`Provider`], set once with
//! [`set_provider`]. The SAE crate's MKL backend is one
//! (`circuitry_sae::kernel::use_for_transformer`); a provider must keep the same
//! contract (results that do not depend on the number of threads). [`Gemm::gemm`]
//! itself is always faer.
use std::sync::OnceLock;

pub mod panels;

use faer::linalg::matmul::matmul as faer_matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2};

/// A library computing the `f32` products of [`matmul`] in place of faer.
pub trait Provider: Send + Sync {
    /// `c = alpha · a b`, or `c += alpha · a b` with `accumulate` (shapes checked by the
    /// caller); `false` when it cannot take these operands, and faer computes it.
    fn sgemm(
        &self,
        c: ArrayViewMut2<'_, f32>,
        accumulate: bool,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        alpha: f32,
    ) -> bool;

    /// What it is, for the records (`mkl (version; CNR mode)`).
    fn describe(&self) -> String;
}

static PROVIDER: OnceLock<Box<dyn Provider>> = OnceLock::new();

/// Install `provider` for this process's `f32` [`matmul`]s. Once per process: a second
/// call returns the provider back (the first stays).
pub fn set_provider(provider: Box<dyn Provider>) -> Result<(), Box<dyn Provider>> {
    PROVIDER.set(provider)
}

/// What computes this process's `f32` [`matmul`]s: the installed provider's
/// description, or `faer`.
pub fn describe() -> String {
    PROVIDER
        .get()
        .map_or_else(|| "faer".into(), |p| p.describe())
}

/// Float types faer multiplies: `f32` and `f64`.
pub trait Gemm: Sized {
    /// `c = alpha · a b`, or `c += alpha · a b` with `accumulate`: `a (m, k)`,
    /// `b (k, n)`, `c (m, n)`. Operands of any layout (copied to a standard layout
    /// when neither row- nor column-major); `c` may have any layout.
    ///
    /// # Panics
    /// When the shapes do not agree.
    fn gemm(
        c: ArrayViewMut2<'_, Self>,
        accumulate: bool,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        alpha: Self,
    );

    /// [`Gemm::gemm`] through the installed [`Provider`] where there is one (`f32`
    /// only), else faer: what [`matmul`] calls.
    fn product(
        c: ArrayViewMut2<'_, Self>,
        accumulate: bool,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        alpha: Self,
    ) {
        Self::gemm(c, accumulate, a, b, alpha);
    }

    /// `a · b` for a weight `b` whose panel copy `cache` keeps, when [`panels::product`]
    /// takes it (`f32` with few rows of `a` on an AVX-512 CPU); `None` otherwise.
    fn few_rows_product(
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        cache: &panels::Panels,
    ) -> Option<ndarray::Array2<Self>> {
        let _ = (a, b, cache);
        None
    }
}

/// `x` as a faer matrix: its own memory when it is row- or column-major, else a
/// row-major copy kept in `own`.
fn as_faer<'a, T: Copy + 'static>(
    x: ArrayView2<'a, T>,
    own: &'a mut Option<ndarray::Array2<T>>,
) -> MatRef<'a, T> {
    let (m, n) = x.dim();
    if let Some(s) = x.to_slice() {
        return MatRef::from_row_major_slice(s, m, n);
    }
    if let Some(s) = x.reversed_axes().to_slice() {
        return MatRef::from_column_major_slice(s, m, n);
    }
    let copy = own.insert(x.as_standard_layout().into_owned());
    MatRef::from_row_major_slice(copy.as_slice().unwrap_or(&[]), m, n)
}

/// Panics unless `a (m, k) · b (k, n) → c (m, n)`.
fn check_shapes(c: (usize, usize), a: (usize, usize), b: (usize, usize)) {
    assert!(
        a.0 == c.0 && b.1 == c.1 && a.1 == b.0,
        "gemm: shapes {a:?} · {b:?} → {c:?} do not agree"
    );
}

/// `impl Gemm for $t` in faer, with any further items (`f32`'s [`Gemm::product`]).
macro_rules! impl_gemm {
    ($t:ty $(, $item:item)*) => {
        impl Gemm for $t {
            fn gemm(
                mut c: ArrayViewMut2<'_, $t>,
                accumulate: bool,
                a: ArrayView2<'_, $t>,
                b: ArrayView2<'_, $t>,
                alpha: $t,
            ) {
                let (m, n) = c.dim();
                check_shapes((m, n), a.dim(), b.dim());
                let (mut a_own, mut b_own) = (None, None);
                let a_ref = as_faer(a, &mut a_own);
                let b_ref = as_faer(b, &mut b_own);
                let beta = if accumulate {
                    Accum::Add
                } else {
                    Accum::Replace
                };
                if let Some(s) = c.as_slice_mut() {
                    let c_mut: MatMut<'_, $t> = MatMut::from_row_major_slice_mut(s, m, n);
                    faer_matmul(c_mut, beta, a_ref, b_ref, alpha, Par::rayon(0));
                    return;
                }
                if let Some(s) = c.view_mut().reversed_axes().as_slice_mut() {
                    let c_mut: MatMut<'_, $t> = MatMut::from_column_major_slice_mut(s, m, n);
                    faer_matmul(c_mut, beta, a_ref, b_ref, alpha, Par::rayon(0));
                    return;
                }
                // A strided output: ndarray's own product.
                let keep: $t = if accumulate { 1.0 } else { 0.0 };
                ndarray::linalg::general_mat_mul(alpha, &a, &b, keep, &mut c);
            }

            $($item)*
        }
    };
}

impl_gemm!(f64);
impl_gemm!(
    f32,
    fn few_rows_product(
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        cache: &panels::Panels,
    ) -> Option<ndarray::Array2<f32>> {
        panels::product(a, b, cache)
    },
    fn product(
        mut c: ArrayViewMut2<'_, f32>,
        accumulate: bool,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        alpha: f32,
    ) {
        if let Some(p) = PROVIDER.get() {
            check_shapes(c.dim(), a.dim(), b.dim());
            if p.sgemm(c.view_mut(), accumulate, a, b, alpha) {
                return;
            }
        }
        Self::gemm(c, accumulate, a, b, alpha);
    }
);

/// The product `a · b` as a new array: `a (m, k)`, `b (k, n)` → `(m, n)`, through
/// [`Gemm::product`] (faer's kernels on rayon's threads, or the installed
/// [`Provider`]) rather than ndarray's `dot`.
///
/// # Panics
/// When the shapes do not agree.
pub fn matmul<T: Gemm + ndarray::LinalgScalar>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
) -> ndarray::Array2<T> {
    let mut c = ndarray::Array2::zeros((a.nrows(), b.ncols()));
    T::product(c.view_mut(), false, a, b, num_traits::One::one());
    c
}

/// [`matmul`] for a weight `b` that stays fixed while `cache` lives: with few rows of
/// `a` ([`panels::MAX_ROWS`]) on an AVX-512 CPU, through `b`'s panel copy in `cache`
/// (built on first use), else [`matmul`]. One cache per weight and orientation.
///
/// # Panics
/// When the shapes do not agree, or `cache` holds another shape's panels.
pub fn matmul_weight<T: Gemm + ndarray::LinalgScalar>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    cache: &panels::Panels,
) -> ndarray::Array2<T> {
    T::few_rows_product(a, b, cache).unwrap_or_else(|| matmul(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    fn filled(m: usize, n: usize, seed: u64) -> Array2<f64> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            let x = (i as u64 * 7919 + j as u64 * 104_729 + seed * 31) % 1000;
            x as f64 / 500.0 - 1.0
        })
    }

    #[test]
    fn every_layout_gives_ndarrays_product() {
        let (a, b) = (filled(37, 23, 1), filled(23, 41, 2));
        let want = a.dot(&b);
        let at = a.t().as_standard_layout().into_owned(); // (23, 37), a = at.t()
        let bt = b.t().as_standard_layout().into_owned();
        for (ai, bi) in [(a.view(), b.view()), (at.t(), bt.t())] {
            for fortran in [false, true] {
                let mut c = Array2::<f64>::zeros((37, 41).set_f(fortran));
                f64::gemm(c.view_mut(), false, ai, bi, 1.0);
                let d = (&c - &want).mapv(f64::abs).fold(0.0f64, |m, &x| m.max(x));
                assert!(d < 1e-12, "max diff {d}");
                f64::gemm(c.view_mut(), true, ai, bi, -1.0);
                assert!(c.iter().all(|x| x.abs() < 1e-12), "accumulate");
            }
        }
        // A strided output (every other column).
        let mut wide = Array2::<f64>::zeros((37, 82));
        f64::gemm(
            wide.slice_mut(ndarray::s![.., ..;2]),
            false,
            a.view(),
            b.view(),
            2.0,
        );
        let d = (&wide.slice(ndarray::s![.., ..;2]) - &(2.0 * &want))
            .mapv(f64::abs)
            .fold(0.0f64, |m, &x| m.max(x));
        assert!(d < 1e-12, "strided: max diff {d}");
    }

    #[test]
    fn products_do_not_depend_on_the_thread_count() {
        let a = filled(300, 257, 3).mapv(|x| x as f32);
        let b = filled(257, 513, 4).mapv(|x| x as f32);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut c = Array2::<f32>::zeros((300, 513));
                f32::gemm(c.view_mut(), false, a.view(), b.view(), 1.0);
                c
            })
        };
        let one = run(1);
        for t in [2, 3, 8] {
            assert_eq!(run(t), one, "{t} threads");
        }
    }
}
