//! SAE splicing: at each chosen submodule the activation is `decode(f) + error` with
//! `f = encode(x)` and `error = x − decode(f)` (Marks et al. 2024, §2).
//!
//! Gradients: the features and the error are *leaves* (as in Marks et al.): the
//! gradient of the metric with respect to feature `i` is `g · W_dec[i]` and with
//! respect to the error is `g`, where `g` is the gradient at the hook. No chain rule
//! through the encoder of the same SAE is taken for node effects; the spliced
//! activation equals `x`, so the model's backward (which treats edits as identity)
//! gives `g`. Edges do go through the *downstream* SAE's encoder
//! ([`Submodule::encoder_vjp`], [`Submodule::error_vjp`]).
use circuitry_core::HookPoint;
use circuitry_models::gemm::panels::{self, Panels};
use circuitry_models::gemm::{matmul, matmul_weight};
use circuitry_sae::Sae;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis, CowArray, Ix2, Zip};

use crate::{Error, Result};

/// The kind of a submodule, in the order they come within a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubmoduleKind {
    /// The residual stream (`hook_resid_pre`, or `hook_resid_post`).
    Resid,
    /// The attention output `hook_attn_out`.
    Attn,
    /// The MLP output `hook_mlp_out`.
    Mlp,
}

/// The place of a hook in the forward pass: `(layer, step)`; resid_pre of block `L`
/// comes first in `L`, resid_post of block `L` equals resid_pre of `L + 1`.
pub fn forward_order(hook: HookPoint) -> Option<(usize, u8)> {
    match hook {
        HookPoint::ResidPre { layer } => Some((layer, 0)),
        HookPoint::AttnOut { layer } => Some((layer, 1)),
        HookPoint::MlpOut { layer } => Some((layer, 2)),
        HookPoint::ResidPost { layer } => Some((layer + 1, 0)),
        _ => None,
    }
}

/// The kind of a hook that can be spliced, or `None`.
pub fn submodule_kind(hook: HookPoint) -> Option<SubmoduleKind> {
    match hook {
        HookPoint::ResidPre { .. } | HookPoint::ResidPost { .. } => Some(SubmoduleKind::Resid),
        HookPoint::AttnOut { .. } => Some(SubmoduleKind::Attn),
        HookPoint::MlpOut { .. } => Some(SubmoduleKind::Mlp),
        _ => None,
    }
}

/// One spliced submodule: a hook point with its SAE.
#[derive(Debug, Clone)]
pub struct Submodule {
    /// Where the SAE sits.
    pub hook: HookPoint,
    /// Resid, attn or mlp.
    pub kind: SubmoduleKind,
    /// The SAE (its `hook_name` is `hook`), frozen while the circuit runs.
    pub sae: Sae,
    /// Panel copies of the SAE's weights for products with a few rows, built on first
    /// use ([`circuitry_models::gemm::panels`]).
    panels: SaePanels,
}

/// Panel copies of `W_enc` (encoding), `W_dec` (dense decoding) and `W_decᵀ` (dense
/// feature gradients).
#[derive(Debug, Clone, Default)]
struct SaePanels {
    w_enc: Panels,
    w_dec: Panels,
    w_dec_t: Panels,
}

/// The SAE's view of one submodule's activations: features and error.
#[derive(Debug, Clone, PartialEq)]
pub struct SubState {
    /// Feature activations `encode(x)`.
    pub f: Array3<f32>, // (batch, seq, d_sae)
    /// `x − decode(f)`.
    pub err: Array3<f32>, // (batch, seq, d_model)
}

impl SubState {
    /// `self − other`, feature and error parts separately.
    pub fn minus(&self, other: &SubState) -> SubState {
        SubState {
            f: &self.f - &other.f,
            err: &self.err - &other.err,
        }
    }
}

impl Submodule {
    /// A submodule for `sae`, at the SAE's hook. The hook must be a residual,
    /// attention-output or MLP-output hook.
    pub fn new(sae: Sae) -> Result<Submodule> {
        let hook = sae.cfg.hook_name;
        let kind = submodule_kind(hook).ok_or_else(|| Error::Mismatch {
            what: format!("SAE on {hook}"),
            detail: "circuits splice SAEs on blocks.L.hook_resid_pre, hook_resid_post, hook_attn_out or hook_mlp_out only; drop this SAE from --sae".into(),
        })?;
        Ok(Submodule {
            hook,
            kind,
            sae,
            panels: SaePanels::default(),
        })
    }

    /// Number of SAE features.
    pub fn d_sae(&self) -> usize {
        self.sae.cfg.d_sae
    }

    /// Features and error of activations `x` (batch, seq, d_model).
    pub fn encode(&self, x: ArrayView3<'_, f32>) -> Result<SubState> {
        let (b, s, _) = x.dim();
        let rows = to_rows(x); // (rows, d)
        self.sae.check_input(rows.view())?;
        let f = self.sae.encode_by(rows.view(), |x, w| {
            panels::product(x, w, &self.panels.w_enc)
        }); // (rows, d_sae)
        let err = &rows - &self.decode_rows(f.view()); // (rows, d)
        Ok(SubState {
            f: from_rows(f, b, s),
            err: from_rows(err, b, s),
        })
    }

    /// The spliced activation `decode(f) + err` (batch, seq, d_model).
    pub fn decode(&self, st: &SubState) -> Array3<f32> {
        let (b, s, _) = st.f.dim();
        let f = to_rows(st.f.view()); // (rows, d_sae)
        let x_hat = self.decode_rows(f.view()); // (rows, d)
        from_rows(x_hat, b, s) + &st.err
    }

    /// `decode(f)` for rows of features (rows, d_sae).
    fn decode_rows(&self, f: ArrayView2<'_, f32>) -> Array2<f32> {
        self.sae
            .decode_by(f, |f, w| panels::product(f, w, &self.panels.w_dec))
    }

    /// `g · W_decᵀ` for rows of gradients (rows, d_model).
    fn feature_grad_rows(&self, g: ArrayView2<'_, f32>) -> Array2<f32> {
        matmul_weight(g, self.sae.w_dec.t(), &self.panels.w_dec_t)
    }

    /// Gradient with respect to the features, `g · W_decᵀ` (batch, seq, d_sae), for the
    /// gradient `g` (batch, seq, d_model) at the hook. (The error's gradient is `g`.)
    pub fn feature_grad(&self, g: ArrayView3<'_, f32>) -> Array3<f32> {
        let (b, s, _) = g.dim();
        from_rows(self.feature_grad_rows(to_rows(g).view()), b, s)
    }

    /// [`Submodule::feature_grad`] at the entries where `at` (batch, seq, d_sae) is
    /// nonzero, zero elsewhere: one dot product with a row of `W_dec` per entry instead
    /// of the whole product. Every consumer of feature gradients weights them by
    /// something zero at inactive latents (node effects by `Δf`, the encoder's VJP by
    /// `[f ≠ 0]`), so with `at` that weight the result is the same. Where `at` is not
    /// sparse ([`circuitry_sae::kernel::is_sparse`]; ReLU SAEs) the whole product is
    /// taken and masked.
    pub fn feature_grad_at(&self, g: ArrayView3<'_, f32>, at: ArrayView3<'_, f32>) -> Array3<f32> {
        let (b, s, _) = at.dim();
        let at = to_rows(at); // (rows, d_sae)
        let g = to_rows(g); // (rows, d)
        let gathered = circuitry_sae::kernel::is_sparse(at.view())
            .then(|| {
                circuitry_sae::kernel::decoder_grads_at(self.sae.w_dec.view(), g.view(), at.view())
            })
            .flatten();
        let out = gathered.unwrap_or_else(|| {
            // Dense features (or a non-contiguous W_dec): the product, masked.
            let mut out = self.feature_grad_rows(g.view()); // (rows, d_sae)
            Zip::from(&mut out).and(&at).par_for_each(|o, &a| {
                if a == 0.0 {
                    *o = 0.0;
                }
            });
            out
        });
        from_rows(out, b, s)
    }

    /// Vector–Jacobian product of the encoder: `left` (batch, seq, d_sae) times
    /// `∂f/∂x` at the activations whose features are `f` (batch, seq, d_sae):
    /// `(left ⊙ [f ≠ 0]) · W_encᵀ` (batch, seq, d_model). A latent that is not active has
    /// zero derivative (ReLU, TopK and JumpReLU alike: the active set is locally fixed).
    pub fn encoder_vjp(&self, f: ArrayView3<'_, f32>, left: ArrayView3<'_, f32>) -> Array3<f32> {
        let (b, s, _) = f.dim();
        let mut masked = to_rows(left).into_owned(); // (rows, d_sae)
        Zip::from(&mut masked).and(&to_rows(f)).for_each(|l, &a| {
            if a == 0.0 {
                *l = 0.0;
            }
        });
        from_rows(matmul(masked.view(), self.sae.w_enc.t()), b, s)
    }

    /// [`Submodule::encoder_vjp`] for one latent `i`: `left` (batch, seq) times
    /// `∂f_i/∂x = [f_i ≠ 0] W_enc[:, i]` (batch, seq, d_model).
    pub fn encoder_vjp_one(
        &self,
        f: ArrayView3<'_, f32>,
        left: ArrayView2<'_, f32>,
        i: usize,
    ) -> Array3<f32> {
        let (b, s, _) = f.dim();
        let col = self.sae.w_enc.column(i); // (d_model)
        let mut out = Array3::zeros((b, s, col.len()));
        for bi in 0..b {
            for p in 0..s {
                let l = left[[bi, p]];
                if l != 0.0 && f[[bi, p, i]] != 0.0 {
                    out.slice_mut(ndarray::s![bi, p, ..]).scaled_add(l, &col);
                }
            }
        }
        out
    }

    /// Vector–Jacobian product of the error `x − decode(encode(x))` with `left`
    /// (batch, seq, d_model): `left − encoder_vjp(left · W_decᵀ)`.
    pub fn error_vjp(&self, f: ArrayView3<'_, f32>, left: ArrayView3<'_, f32>) -> Array3<f32> {
        let through = self.encoder_vjp(f, self.feature_grad_at(left, f).view());
        &left - &through
    }

    /// The direction feature `i` writes, `W_dec[i]` (d_model).
    pub fn direction(&self, i: usize) -> ndarray::ArrayView1<'_, f32> {
        self.sae.w_dec.row(i)
    }
}

/// The spliced submodules of a model, in forward order.
#[derive(Debug, Clone)]
pub struct Submodules {
    subs: Vec<Submodule>,
}

impl Submodules {
    /// Order the submodules by their place in the forward pass; reject two SAEs on one
    /// hook and SAEs whose width is not `d_model`.
    pub fn new(mut subs: Vec<Submodule>, d_model: usize, n_layer: usize) -> Result<Submodules> {
        subs.sort_by_key(|s| forward_order(s.hook));
        for w in subs.windows(2) {
            if forward_order(w[0].hook) == forward_order(w[1].hook) {
                return Err(Error::Mismatch {
                    what: format!("SAEs on {} and {}", w[0].hook, w[1].hook),
                    detail:
                        "two SAEs sit at the same place of the forward pass; give one SAE per hook"
                            .into(),
                });
            }
        }
        for s in &subs {
            if s.sae.cfg.d_in != d_model {
                return Err(Error::Mismatch {
                    what: format!("SAE on {}", s.hook),
                    detail: format!(
                        "its d_in is {} but the model's d_model is {d_model}; it was trained on another model",
                        s.sae.cfg.d_in
                    ),
                });
            }
            if s.hook.layer().is_some_and(|l| l >= n_layer) {
                return Err(Error::Mismatch {
                    what: format!("SAE on {}", s.hook),
                    detail: format!("the model has blocks 0..{}", n_layer.saturating_sub(1)),
                });
            }
        }
        if subs.is_empty() {
            return Err(Error::Missing {
                what: "SAEs".into(),
                detail: "a circuit needs at least one SAE; pass --sae DIR".into(),
            });
        }
        Ok(Submodules { subs })
    }

    /// The submodules in forward order.
    pub fn all(&self) -> &[Submodule] {
        &self.subs
    }

    /// Number of submodules.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Always false (construction rejects an empty set).
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Their hooks, in forward order.
    pub fn hooks(&self) -> Vec<HookPoint> {
        self.subs.iter().map(|s| s.hook).collect()
    }

    /// Whether runs whose metric reads the last position may trim the model's last
    /// block to it ([`Forward::trim_last_block`](circuitry_models::transformer::Forward::trim_last_block)):
    /// no SAE sits in the last block past its `resid_pre`.
    pub fn allow_trim(&self, model: &circuitry_models::transformer::Transformer) -> bool {
        self.subs.iter().all(|s| model.kept_by_trim(s.hook))
    }

    /// The index of the submodule at `hook`.
    pub fn index_of(&self, hook: HookPoint) -> Option<usize> {
        self.subs.iter().position(|s| s.hook == hook)
    }

    /// The submodules whose direct paths end at submodule `d` (Marks et al.'s
    /// adjacency): every `u` before `d` with no residual submodule strictly between
    /// them (resid → attn, resid → mlp, attn → mlp, resid/attn/mlp → next resid). With
    /// `d = len()` (the metric) the last residual and what follows it.
    pub fn upstream(&self, d: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for u in (0..d.min(self.subs.len())).rev() {
            out.push(u);
            if self.subs[u].kind == SubmoduleKind::Resid {
                break;
            }
        }
        out.reverse();
        out
    }
}

/// `(batch, seq, w)` → `(batch·seq, w)`: a view of `x` when it is in standard layout
/// (activations and feature arrays here are), a copy otherwise.
pub(crate) fn to_rows(x: ArrayView3<'_, f32>) -> CowArray<'_, f32, Ix2> {
    let (b, s, w) = x.dim();
    match x.into_shape_with_order((b * s, w)) {
        Ok(v) => CowArray::from(v),
        Err(_) => CowArray::from(Array2::from_shape_fn((b * s, w), |(r, c)| {
            x[[r / s, r % s, c]]
        })),
    }
}

/// `(batch·seq, w)` → `(batch, seq, w)`, without copying when `x` is in standard layout.
pub(crate) fn from_rows(x: Array2<f32>, b: usize, s: usize) -> Array3<f32> {
    let w = x.ncols();
    let x = if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    };
    // Only fails when rows != b · s, which the callers rule out.
    x.into_shape_with_order((b, s, w))
        .unwrap_or_else(|_| Array3::from_elem((b, s, w), f32::NAN))
}

/// Per-row dot product of two `(batch, seq, w)` arrays: `(batch, seq)`.
pub(crate) fn dot_last(a: ArrayView3<'_, f32>, b: ArrayView3<'_, f32>) -> Array2<f32> {
    (&a * &b).sum_axis(Axis(2))
}

/// `‖x‖₂` over the last axis, `(batch, seq)`.
pub(crate) fn norm_last(x: ArrayView3<'_, f32>) -> Array2<f32> {
    x.map_axis(Axis(2), |v| v.dot(&v).sqrt())
}
