//! Adam, as `torch.optim.Adam`, on ndarray tensors of any shape.
use ndarray::Zip;

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
    /// `p −= lr / bc1 · m / (√v / √bc2 + ε)`. Elementwise, in parallel (the result
    /// does not depend on the threads).
    pub(crate) fn update(
        &mut self,
        p: &mut ndarray::Array<f32, D>,
        g: &ndarray::Array<f32, D>,
        h: &AdamStep,
    ) {
        Zip::from(p)
            .and(g)
            .and(&mut self.m)
            .and(&mut self.v)
            .par_for_each(|p, &g, m, v| {
                *m = h.b1 * *m + (1.0 - h.b1) * g;
                *v = h.b2 * *v + (1.0 - h.b2) * g * g;
                *p -= h.step_size * *m / (v.sqrt() / h.sqrt_bc2 + h.eps);
            });
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
