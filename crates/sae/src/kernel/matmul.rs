//! Dense matrix products, through one of two backends ([`Backend`]):
//! - faer (always there; AVX-512/AVX2 kernels picked at run time, rayon-parallel;
//!   [`circuitry_models::gemm`], shared with the transformer);
//! - Intel MKL, loaded at run time when installed ([`super::mkl`]), in blocks of the
//!   output that rayon runs, each a sequential MKL call.
//!
//! Either way each output element is computed by one thread in an order fixed by the
//! shapes, so products do not depend on the number of threads (tests in `tests.rs`
//! check it for both).
use ndarray::{s, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::mkl::{self, Mkl, MklGemm, MklSettings, Operand};
use crate::Result;

/// Which backend the user asked for (`--gemm`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GemmChoice {
    /// MKL when it can be loaded, faer otherwise.
    #[default]
    Auto,
    /// faer.
    Faer,
    /// MKL; an error when it cannot be loaded.
    Mkl,
}

impl std::fmt::Display for GemmChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GemmChoice::Auto => "auto",
            GemmChoice::Faer => "faer",
            GemmChoice::Mkl => "mkl",
        })
    }
}

/// The library that computes dense products.
#[derive(Debug, Clone, Copy, Default)]
pub enum Backend {
    /// faer.
    #[default]
    Faer,
    /// A loaded MKL.
    Mkl(&'static Mkl),
}

impl Backend {
    /// The backend for `choice`, MKL loaded with `mkl`: `Mkl` fails with
    /// [`Error::MklUnavailable`] (which says how to install it) when MKL cannot be
    /// loaded; `Auto` falls back to faer.
    ///
    /// [`Error::MklUnavailable`]: crate::Error::MklUnavailable
    pub fn resolve(choice: GemmChoice, mkl: &MklSettings) -> Result<Backend> {
        match choice {
            GemmChoice::Faer => Ok(Backend::Faer),
            GemmChoice::Mkl => Mkl::load(mkl).map(Backend::Mkl),
            GemmChoice::Auto => Ok(Mkl::load(mkl).map_or(Backend::Faer, Backend::Mkl)),
        }
    }

    /// What it is, for `training.json`: `faer`, or `mkl` with MKL's version and CNR mode.
    pub fn describe(&self) -> String {
        match self {
            Backend::Faer => "faer".into(),
            Backend::Mkl(m) => format!("mkl ({}; CNR {})", m.version, m.cbwr),
        }
    }

    /// `faer` or `mkl`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Faer => "faer",
            Backend::Mkl(_) => "mkl",
        }
    }
}

impl From<circuitry_core::options::GemmLibrary> for GemmChoice {
    /// The choice a stage's `gemm` option (`--gemm`) names.
    fn from(library: circuitry_core::options::GemmLibrary) -> Self {
        use circuitry_core::options::GemmLibrary;
        match library {
            GemmLibrary::Auto => GemmChoice::Auto,
            GemmLibrary::Faer => GemmChoice::Faer,
            GemmLibrary::Mkl => GemmChoice::Mkl,
        }
    }
}

impl From<Backend> for GemmChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Faer => GemmChoice::Faer,
            Backend::Mkl(_) => GemmChoice::Mkl,
        }
    }
}

/// `c = alpha · a b` (or `c += alpha · a b` with `accumulate`), for `f32` and `f64`.
pub trait Gemm: Sized {
    /// `a (m, k)`, `b (k, n)`, `c (m, n)`; shapes must agree (checked by the callers).
    fn gemm(
        backend: Backend,
        c: ArrayViewMut2<'_, Self>,
        accumulate: bool,
        a: ArrayView2<'_, Self>,
        b: ArrayView2<'_, Self>,
        alpha: Self,
    );
}

/// Output blocks of the SAE trainer's MKL products are at least this wide (each block
/// repacks the operand it shares with the others, so narrow blocks cost memory
/// traffic)...
const MKL_MIN_BLOCK: usize = 512;
/// ...and at most this many.
const MKL_MAX_BLOCKS: usize = 64;
/// The transformer's products are small (a batch of 128 rows times 576 × 1536 in
/// SmolLM2, 20 rows in a GPT-2-shaped pass), so their blocks are narrower than the
/// trainer's: about 384 columns, in an even number of equal blocks ([`mkl_block`]).
/// With few rows a product streams its weight matrix from memory, and wider blocks
/// stream longer contiguous pieces of each weight row: on the 2-core Intel Xeon the
/// GPT-2-shaped pass took 3–13% less than with blocks of about 128, the SmolLM2-shaped
/// one 0–3% less.
const TRANSFORMER_MIN_BLOCK: usize = 384;

/// The block width along an output dimension of `dim`: a function of the shape only
/// (so products do not depend on the thread count), about `min_block` wide, in an even
/// number of blocks of equal width (a multiple of 16) where there are two or more, so
/// that two threads get equal shares (a dimension of [`MKL_MIN_SPLIT`] or more is split
/// in at least two): with the transformer's blocks SmolLM2's 576 columns go in 2 blocks
/// of 288 and its 192 in 2 of 96, with the trainer's an encoder's 4608 in 8 of 576
/// (where a minimum width alone gave uneven shares: 4 × 128 + 64, 9 × 512).
fn mkl_block(dim: usize, min_block: usize) -> usize {
    let mut blocks = dim.div_ceil(min_block.max(1)).clamp(1, MKL_MAX_BLOCKS);
    if blocks == 1 && dim >= MKL_MIN_SPLIT {
        blocks = 2;
    }
    if blocks > 1 && blocks % 2 == 1 {
        blocks -= 1;
    }
    dim.div_ceil(blocks).next_multiple_of(16)
}

/// A dimension at least this long is split in two blocks even when narrower than
/// twice the minimum width, so that two threads share it.
const MKL_MIN_SPLIT: usize = 64;

/// The MKL product, in parallel blocks of `c`; `false` when this MKL lacks it or the
/// operands' layout or sizes do not suit cblas (never the case in this crate), and
/// another library should do it.
pub(super) fn mkl_gemm<T>(
    mkl: &Mkl,
    c: ArrayViewMut2<'_, T::Out>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T::Out,
) -> bool
where
    T: MklGemm + Send + Sync,
    T::Out: ndarray::LinalgScalar + Send + Sync,
{
    mkl_gemm_blocks(mkl, c, accumulate, (a, b, alpha), MKL_MIN_BLOCK)
}

/// [`mkl_gemm`] with output blocks at least `min_block` wide.
fn mkl_gemm_blocks<T>(
    mkl: &Mkl,
    mut c: ArrayViewMut2<'_, T::Out>,
    accumulate: bool,
    (a, b, alpha): (ArrayView2<'_, T>, ArrayView2<'_, T>, T::Out),
    min_block: usize,
) -> bool
where
    T: MklGemm + Send + Sync,
    T::Out: ndarray::LinalgScalar + Send + Sync,
{
    if !T::supported(mkl) {
        return false;
    }
    let (m, n) = c.dim();
    let k = a.ncols();
    let c_strides = c.strides();
    let c_ok = (n <= 1 || c_strides[1] == 1) && (m <= 1 || c_strides[0] >= n.max(1) as isize);
    let ld_c = if m <= 1 {
        n.max(1)
    } else {
        c_strides[0] as usize
    };
    let (Some(op_a), Some(op_b)) = (
        Operand::of(a.nrows(), a.ncols(), a.strides()),
        Operand::of(b.nrows(), b.ncols(), b.strides()),
    ) else {
        return false;
    };
    if !c_ok || !mkl::fits(&[m, n, k, op_a.ld, op_b.ld, ld_c]) {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        if !accumulate {
            c.fill(<T::Out as num_traits::Zero>::zero());
        }
        return true;
    }
    let beta = if accumulate {
        <T::Out as num_traits::One>::one()
    } else {
        <T::Out as num_traits::Zero>::zero()
    };
    let by_rows = m >= n;
    let block = mkl_block(if by_rows { m } else { n }, min_block);
    let axis = if by_rows { Axis(0) } else { Axis(1) };
    c.axis_chunks_iter_mut(axis, block)
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut cb)| {
            let (a_b, b_b) = if by_rows {
                (a.slice(s![i * block.., ..]), b)
            } else {
                (a, b.slice(s![.., i * block..]))
            };
            let (mb, nb) = cb.dim();
            let (a_b, b_b) = (a_b.slice(s![..mb, ..]), b_b.slice(s![.., ..nb]));
            // The sub-views keep their parent's strides, so the layouts still hold.
            // SAFETY: the pointers address the views' elements with the layouts
            // `Operand::of` derived; `cb` is this task's own block of `c`.
            unsafe {
                T::call(
                    mkl,
                    (mb, nb, k),
                    alpha,
                    (a_b.as_ptr(), op_a),
                    (b_b.as_ptr(), op_b),
                    beta,
                    (cb.as_mut_ptr(), ld_c),
                );
            }
        });
    true
}

// Views of row- or column-major contiguous arrays go to faer without copying.
macro_rules! impl_gemm {
    ($t:ty) => {
        impl Gemm for $t {
            fn gemm(
                backend: Backend,
                c: ArrayViewMut2<'_, $t>,
                accumulate: bool,
                a: ArrayView2<'_, $t>,
                b: ArrayView2<'_, $t>,
                alpha: $t,
            ) {
                let mut c = c;
                if let Backend::Mkl(mkl) = backend {
                    if mkl_gemm(mkl, c.view_mut(), accumulate, a, b, alpha) {
                        return;
                    }
                }
                <$t as circuitry_models::gemm::Gemm>::gemm(c, accumulate, a, b, alpha);
            }
        }
    };
}

impl_gemm!(f32);
impl_gemm!(f64);

/// MKL computing the transformer's `f32` products ([`circuitry_models::gemm::matmul`]).
pub(super) struct TransformerMkl(pub(super) &'static Mkl);

impl circuitry_models::gemm::Provider for TransformerMkl {
    fn sgemm(
        &self,
        c: ArrayViewMut2<'_, f32>,
        accumulate: bool,
        a: ArrayView2<'_, f32>,
        b: ArrayView2<'_, f32>,
        alpha: f32,
    ) -> bool {
        mkl_gemm_blocks(self.0, c, accumulate, (a, b, alpha), TRANSFORMER_MIN_BLOCK)
    }

    fn describe(&self) -> String {
        Backend::Mkl(self.0).describe()
    }
}

/// Let `backend` compute this process's transformer products too
/// ([`circuitry_models::gemm::matmul`]: the forward and backward passes of the circuit
/// stage and of `ce_loss_score`), and the SAEs' encoders and dense decoders there
/// (`Sae::encode`, `Sae::decode`): MKL where `backend` is MKL (blocks sized for the
/// transformer's small products, results independent of the thread count as for the
/// trainer's), faer otherwise. Once per process: after MKL is installed, later calls
/// change nothing. Returns what computes them now ([`circuitry_models::gemm::describe`]).
pub fn use_for_transformer(backend: Backend) -> String {
    if let Backend::Mkl(mkl) = backend {
        // A second installation is refused; the first is the process's one MKL anyway.
        let _ = circuitry_models::gemm::set_provider(Box::new(TransformerMkl(mkl)));
        let _ = INFERENCE.set(backend);
    }
    circuitry_models::gemm::describe()
}

/// The backend of the SAEs' inference products (`Sae::encode`, `Sae::decode`): set
/// with the transformer's by [`use_for_transformer`].
static INFERENCE: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();

/// What computes the SAEs' inference products in this process: MKL after
/// [`use_for_transformer`] installed it, else faer. (Training names its backend.)
pub(crate) fn inference() -> Backend {
    INFERENCE.get().copied().unwrap_or_default()
}
