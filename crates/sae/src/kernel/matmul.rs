//! Dense matrix products through faer (AVX-512/AVX2 kernels picked at run time,
//! rayon-parallel); see the README's "Speed" section for why faer.
//!
//! Each output element is computed by one thread in a fixed order, so products do
//! not depend on the number of threads (a test in `tests.rs` checks it).
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2};

/// `c = alpha · a b` (or `c += alpha · a b` with `accumulate`), for `f32` and `f64`.
pub trait Gemm: Sized {
    /// `a (m, k)`, `b (k, n)`, `c (m, n)`; shapes must agree (checked by the callers).
    fn gemm(
        c: ArrayViewMut2<'_, Self>,
        accumulate: bool,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        alpha: Self,
    );
}

// Views of row- or column-major contiguous arrays go to faer without copying.
macro_rules! impl_gemm {
    ($t:ty) => {
        impl Gemm for $t {
            fn gemm(
                c: ArrayViewMut2<'_, $t>,
                accumulate: bool,
                a: ArrayView2<'_, $t>,
                b: ArrayView2<'_, $t>,
                alpha: $t,
            ) {
                let (m, n) = c.dim();
                let a_own;
                let a_ref: MatRef<'_, $t> = match a.to_slice() {
                    Some(s) => MatRef::from_row_major_slice(s, a.nrows(), a.ncols()),
                    None => match a.t().to_slice() {
                        Some(s) => MatRef::from_column_major_slice(s, a.nrows(), a.ncols()),
                        None => {
                            a_own = a.as_standard_layout().into_owned();
                            let s = a_own.as_slice().unwrap_or(&[]);
                            MatRef::from_row_major_slice(s, a.nrows(), a.ncols())
                        }
                    },
                };
                let b_own;
                let b_ref: MatRef<'_, $t> = match b.to_slice() {
                    Some(s) => MatRef::from_row_major_slice(s, b.nrows(), b.ncols()),
                    None => match b.t().to_slice() {
                        Some(s) => MatRef::from_column_major_slice(s, b.nrows(), b.ncols()),
                        None => {
                            b_own = b.as_standard_layout().into_owned();
                            let s = b_own.as_slice().unwrap_or(&[]);
                            MatRef::from_row_major_slice(s, b.nrows(), b.ncols())
                        }
                    },
                };
                let beta = if accumulate {
                    Accum::Add
                } else {
                    Accum::Replace
                };
                let mut c = c;
                match c.as_slice_mut() {
                    Some(s) => {
                        let c_mut: MatMut<'_, $t> = MatMut::from_row_major_slice_mut(s, m, n);
                        matmul(c_mut, beta, a_ref, b_ref, alpha, Par::rayon(0));
                    }
                    None => {
                        // Not contiguous (never the case in this crate): ndarray's own product.
                        let keep: $t = if accumulate { 1.0 } else { 0.0 };
                        ndarray::linalg::general_mat_mul(alpha, &a, &b, keep, &mut c);
                    }
                }
            }
        }
    };
}

impl_gemm!(f32);
impl_gemm!(f64);
