//! Adam, as `torch.optim.Adam`, on ndarray tensors of any shape.
use multiversion::multiversion;
use ndarray::Zip;
use rayon::prelude::*;

/// Adam state for one parameter tensor (any shape).
#[derive(Debug, Clone)]
pub(crate) struct Moments<D: ndarray::Dimension> {
    pub(crate) m: ndarray::Array<f32, D>,
    pub(crate) v: ndarray::Array<f32, D>,
}

impl<D: ndarray::Dimension> Moments<D> {
    pub(crate) fn new(shape: D) -> Self {
        Moments {
            m: ndarray::Array::zeros(shape.clone()),
            v: ndarray::Array::zeros(shape),
        }
    }

    /// One Adam update of `p` with gradient `g`, as `torch.optim.Adam`:
    /// `p −= lr / bc1 · m / (√v / √bc2 + ε)`. Elementwise, in parallel over fixed
    /// chunks (the result does not depend on the threads).
    pub(crate) fn update(
        &mut self,
        p: &mut ndarray::Array<f32, D>,
        g: &ndarray::Array<f32, D>,
        h: &AdamStep,
    ) {
        let (Some(p), Some(g), Some(m), Some(v)) = (
            p.as_slice_mut(),
            g.as_slice(),
            self.m.as_slice_mut(),
            self.v.as_slice_mut(),
        ) else {
            // Never: parameters, gradients and moments are standard-layout arrays.
            Zip::from(p)
                .and(g)
                .and(&mut self.m)
                .and(&mut self.v)
                .for_each(|p, &g, m, v| adam_one(p, g, m, v, h));
            return;
        };
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| adam_slices(p, g, m, v, h));
    }
}

/// Values per parallel work item of the update.
const CHUNK: usize = 1 << 16;

/// One element of the update (the same operations as [`adam_slices`]).
#[inline(always)]
fn adam_one(p: &mut f32, g: f32, m: &mut f32, v: &mut f32, h: &AdamStep) {
    *m = h.b1 * *m + (1.0 - h.b1) * g;
    *v = h.b2 * *v + (1.0 - h.b2) * g * g;
    *p -= h.step_size * *m / (v.sqrt() / h.sqrt_bc2 + h.eps);
}

/// The update on equal-length slices, compiled for AVX-512 and AVX2 too (the same
/// IEEE operations, so the same bits, on every CPU).
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
fn adam_slices(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: &AdamStep) {
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        adam_one(p, g, m, v, h);
    }
}

/// The scalars of one Adam step, shared by every tensor.
pub(crate) struct AdamStep {
    pub(crate) b1: f32,
    pub(crate) b2: f32,
    pub(crate) eps: f32,
    pub(crate) step_size: f32,
    pub(crate) sqrt_bc2: f32,
}
