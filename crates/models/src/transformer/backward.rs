//! The backward pass: vector–Jacobian products from d(metric)/d(logits) and/or
//! gradients seeded at hooks down to any hook of a traced forward pass.
use std::collections::{BTreeMap, BTreeSet};

use circuitry_core::HookPoint;
use ndarray::{Array2, Array3, ArrayView3};

use super::forward::{rows, unrows, Trace};
use super::layers::matmul;
use super::{Scalar, Transformer};
use crate::{Error, Result};

/// Where gradients start and which are wanted.
///
/// The gradient at a hook is the total derivative of the metric with respect to the
/// hook's value as the forward pass computed it (after any edit there); edits are
/// treated as identity. A detached hook's gradient is recorded (if wanted) but does
/// not flow into what computed it: detach `blocks.L.hook_attn_out` to get the
/// resid → MLP path without going through attention, for example.
#[derive(Debug, Clone, Default)]
pub struct Backward<'a, A> {
    /// d(metric)/d(logits): (batch, seq, vocab), (batch, 1, vocab) after a run with
    /// [`last_logits`](super::Forward::last_logits), (batch, 1, n) after one with
    /// [`logits_of`](super::Forward::logits_of).
    pub d_logits: Option<ArrayView3<'a, A>>,
    /// Gradients added at hooks, each (batch, seq, width).
    pub seeds: BTreeMap<HookPoint, ArrayView3<'a, A>>,
    /// Hooks whose gradients are returned.
    pub want: &'a [HookPoint],
    /// Hooks through which gradients do not flow further up.
    pub detach: &'a [HookPoint],
}

impl<'a, A: Scalar> Backward<'a, A> {
    /// Start from d(metric)/d(logits) (batch, seq, vocab).
    pub fn from_logits(d_logits: ArrayView3<'a, A>) -> Self {
        Backward {
            d_logits: Some(d_logits),
            seeds: BTreeMap::new(),
            want: &[],
            detach: &[],
        }
    }

    /// Start from a gradient at a hook (batch, seq, width).
    pub fn from_hook(hook: HookPoint, grad: ArrayView3<'a, A>) -> Self {
        Backward {
            d_logits: None,
            seeds: BTreeMap::new(),
            want: &[],
            detach: &[],
        }
        .seed(hook, grad)
    }

    /// Add a gradient at a hook (batch, seq, width).
    pub fn seed(mut self, hook: HookPoint, grad: ArrayView3<'a, A>) -> Self {
        self.seeds.insert(hook, grad);
        self
    }

    /// Set the hooks whose gradients are returned.
    pub fn want(mut self, hooks: &'a [HookPoint]) -> Self {
        self.want = hooks;
        self
    }

    /// Set the hooks that stop the gradient.
    pub fn detach(mut self, hooks: &'a [HookPoint]) -> Self {
        self.detach = hooks;
        self
    }
}

/// The running state of one backward pass.
struct Walk<'b, 'c, A> {
    bwd: &'b Backward<'c, A>,
    detach: BTreeSet<HookPoint>,
    want: BTreeSet<HookPoint>,
    grads: BTreeMap<HookPoint, Array3<A>>,
    batch: usize,
    seq: usize,
}

impl<A: Scalar> Walk<'_, '_, A> {
    /// At `hook`: add its seed, record if wanted, stop if detached. `None` is zero.
    fn step(&mut self, hook: HookPoint, g: Option<Array2<A>>, width: usize) -> Option<Array2<A>> {
        let g = add(
            g,
            self.bwd.seeds.get(&hook).map(|s| s.to_owned()).map(|s| {
                let s = s.as_standard_layout().into_owned();
                rows(&s).into_owned()
            }),
        );
        if self.want.contains(&hook) {
            let v = g
                .clone()
                .unwrap_or_else(|| Array2::zeros((self.batch * self.seq, width)));
            self.grads.insert(hook, unrows(v, self.batch, self.seq));
        }
        if self.detach.contains(&hook) {
            None
        } else {
            g
        }
    }

    fn done(&self) -> bool {
        self.grads.len() == self.want.len()
    }
}

/// One row per sequence (batch, w) → (batch · seq, w) with each row at its sequence's last
/// position and zeros elsewhere: a gradient of the last position only.
fn at_last_position<A: Scalar>(g: Array2<A>, seq: usize) -> Array2<A> {
    let (batch, w) = g.dim();
    let mut full = Array2::<A>::zeros((batch * seq, w));
    for b in 0..batch {
        full.row_mut(b * seq + seq - 1).assign(&g.row(b));
    }
    full
}

fn add<A: Scalar>(a: Option<Array2<A>>, b: Option<Array2<A>>) -> Option<Array2<A>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl<A: Scalar> Transformer<A> {
    /// Gradients at `bwd.want` hooks (each (batch, seq, width)) of the forward pass
    /// that made `trace`.
    pub fn backward(
        &self,
        trace: &Trace<A>,
        bwd: &Backward<'_, A>,
    ) -> Result<BTreeMap<HookPoint, Array3<A>>> {
        let (batch, seq) = (trace.batch, trace.seq);
        let (d, n) = (self.config.d_model, self.config.n_layer);
        let start = trace.start_layer;
        for &hook in bwd.want.iter().chain(bwd.seeds.keys()) {
            self.check_hook(hook, start, trace.from_tokens, "backward hook")?;
            if trace.trimmed {
                self.check_untrimmed(hook, "backward hook")?;
            }
        }
        for (&hook, g) in &bwd.seeds {
            let width = self.width(hook);
            if g.dim() != (batch, seq, width) {
                return Err(shape_error(
                    "seed",
                    hook.to_string(),
                    g.dim(),
                    (batch, seq, width),
                ));
            }
        }
        if trace.layers.len() != n - start {
            return Err(Error::BadParameter {
                name: "trace",
                value: format!("{} blocks traced", trace.layers.len()),
                message: "run the forward with trace(true) (it traces every block)".into(),
            });
        }
        let mut walk = Walk {
            bwd,
            detach: bwd.detach.iter().copied().collect(),
            want: bwd.want.iter().copied().collect(),
            grads: BTreeMap::new(),
            batch,
            seq,
        };

        // Unembedding and ln_f.
        let d_ln = match bwd.d_logits {
            Some(dl) => {
                let positions = if trace.last_logits { 1 } else { seq };
                let width = trace
                    .logit_ids
                    .as_ref()
                    .map_or(self.config.vocab_size, |ids| ids.ncols());
                if dl.dim() != (batch, positions, width) {
                    return Err(shape_error(
                        "d_logits",
                        "logits".into(),
                        dl.dim(),
                        (batch, positions, width),
                    ));
                }
                let w_u = self.unembedding(); // (vocab, d)
                let g = match &trace.logit_ids {
                    // Logits of a few ids: each row's gradient is a sum of their rows of W_U.
                    Some(ids) => {
                        let mut g = Array2::<A>::zeros((batch, d));
                        for b in 0..batch {
                            for (j, &t) in ids.row(b).iter().enumerate() {
                                g.row_mut(b).scaled_add(dl[[b, 0, j]], &w_u.row(t as usize));
                            }
                        }
                        g
                    }
                    None => {
                        let dl = dl.as_standard_layout().into_owned();
                        matmul(rows(&dl).view(), w_u.view()) // (batch·positions, d)
                    }
                };
                Some(if trace.last_logits && !trace.trimmed {
                    // Only the last position has logits: the others get no gradient.
                    at_last_position(g, seq)
                } else {
                    g
                })
            }
            None => None,
        };
        let d_ln = walk.step(HookPoint::LnFinal, d_ln, d);
        let mut g = match (d_ln, &trace.ln_f) {
            (Some(g), Some(cache)) => Some(self.ln_f.backward(cache, g.view())),
            (Some(_), None) => {
                return Err(Error::BadParameter {
                    name: "trace",
                    value: "no ln_f".into(),
                    message: "run the forward with trace(true) to backpropagate from logits".into(),
                })
            }
            (None, _) => None,
        };

        // Blocks, last to first; `g` is the gradient at the block's output.
        for l in (start..n).rev() {
            if walk.done() {
                return Ok(walk.grads);
            }
            if l + 1 < n {
                g = walk.step(HookPoint::ResidPre { layer: l + 1 }, g, d);
            }
            g = walk.step(HookPoint::ResidPost { layer: l }, g, d);
            let block = &self.blocks[l];
            let t = &trace.layers[l - start];
            let d_mlp_out = walk.step(HookPoint::MlpOut { layer: l }, g.clone(), d);
            let d_post = d_mlp_out.map(|g| block.mlp.w_out.backward(g.view()));
            let d_post = walk.step(HookPoint::MlpPost { layer: l }, d_post, self.config.d_mlp);
            let d_mid = d_post.map(|g| {
                let d_pre = block.mlp.activate_backward(&t.mlp_pre, g.view());
                let d_ln2 = block.mlp.w_in.backward(d_pre.view());
                block.ln_2.backward(&t.ln_2, d_ln2.view())
            });
            let d_mid = walk.step(HookPoint::ResidMid { layer: l }, add(g, d_mid), d);
            let d_attn_out = walk.step(HookPoint::AttnOut { layer: l }, d_mid.clone(), d);
            let d_x = d_attn_out.map(|g| {
                let d_ln1 = block.attn.backward(&t.attn, g.view());
                block.ln_1.backward(&t.ln_1, d_ln1.view())
            });
            // A trimmed last block's residual has the last position only.
            let d_mid = match d_mid {
                Some(g) if trace.trimmed && l + 1 == n => Some(at_last_position(g, seq)),
                g => g,
            };
            g = add(d_mid, d_x);
        }
        let g = walk.step(HookPoint::ResidPre { layer: start }, g, d);
        if trace.from_tokens {
            walk.step(HookPoint::Embed, g.clone(), d);
            if self.wpe.is_some() {
                walk.step(HookPoint::PosEmbed, g, d);
            }
        }
        Ok(walk.grads)
    }
}

fn shape_error(
    name: &'static str,
    what: String,
    got: (usize, usize, usize),
    want: (usize, usize, usize),
) -> Error {
    Error::BadParameter {
        name,
        value: format!("{what} of shape {got:?}"),
        message: format!("expected {want:?} (batch, seq, width) as in the traced forward"),
    }
}
