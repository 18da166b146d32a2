//! The SAE itself: parameters, initialisation, encode and decode.
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::kernel::{self, Params};
use crate::{ActivationNormalization, Error, Result, SaeConfig};

/// A sparse autoencoder, with SAELens tensor names and layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Sae {
    /// Its configuration.
    pub cfg: SaeConfig,
    /// `(d_in, d_sae)` encoder.
    pub w_enc: Array2<f32>,
    /// `(d_sae)` encoder bias.
    pub b_enc: Array1<f32>,
    /// `(d_sae, d_in)` decoder; row `i` is feature `i`'s direction.
    pub w_dec: Array2<f32>,
    /// `(d_in)` decoder bias.
    pub b_dec: Array1<f32>,
    /// `(d_sae)` JumpReLU thresholds; `None` for other architectures.
    pub threshold: Option<Array1<f32>>,
}

impl Sae {
    /// A fresh SAE: `W_dec` rows are independent uniformly random directions of unit
    /// norm (normalised Gaussian vectors), `W_enc = W_decᵀ`, `b_enc = b_dec = 0`,
    /// no threshold. Use [`Sae::new_init_with_norm`] for another decoder row norm.
    pub fn new_init(cfg: SaeConfig, rng: &mut impl Rng) -> Sae {
        Sae::new_init_with_norm(cfg, 1.0, rng)
    }

    /// As [`Sae::new_init`], with decoder rows of norm `decoder_norm` (SAELens v6
    /// trains from 0.1, Anthropic's April 2024 "heuristic" initialisation).
    pub fn new_init_with_norm(cfg: SaeConfig, decoder_norm: f32, rng: &mut impl Rng) -> Sae {
        let (d_in, d_sae) = (cfg.d_in, cfg.d_sae);
        let mut w_dec = Array2::<f32>::zeros((d_sae, d_in)); // (d_sae, d_in)
        for mut row in w_dec.outer_iter_mut() {
            loop {
                row.mapv_inplace(|_| StandardNormal.sample(rng));
                let norm = row.dot(&row).sqrt();
                if norm > 1e-6 {
                    row.mapv_inplace(|v| v * decoder_norm / norm);
                    break;
                }
            }
        }
        let w_enc = w_dec.t().as_standard_layout().into_owned(); // (d_in, d_sae)
        Sae {
            cfg,
            w_enc,
            b_enc: Array1::zeros(d_sae),
            w_dec,
            b_dec: Array1::zeros(d_in),
            threshold: None,
        }
    }

    /// Borrow the parameters for the [`kernel`] functions.
    pub fn params(&self) -> Params<'_, f32> {
        Params {
            w_enc: self.w_enc.view(),
            b_enc: self.b_enc.view(),
            w_dec: self.w_dec.view(),
            b_dec: self.b_dec.view(),
        }
    }

    /// Check that `x (batch, d_in)` has this SAE's width and finite values. The
    /// encode/decode methods assume it (as ndarray's `dot` does, they panic on a
    /// width mismatch).
    pub fn check_input(&self, x: ArrayView2<'_, f32>) -> Result<()> {
        if x.ncols() != self.cfg.d_in {
            return Err(Error::Shape {
                what: format!("activations for the SAE on {}", self.cfg.hook_name),
                expected: vec![x.nrows(), self.cfg.d_in],
                got: x.shape().to_vec(),
            });
        }
        crate::check_finite(x)
    }

    /// Pre-activations `(batch, d_sae)` of `x (batch, d_in)`: the input normalised
    /// as `normalize_activations` says, then `(x − b_dec if apply_b_dec_to_input)
    /// W_enc + b_enc`.
    pub fn encode_pre(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.encode_pre_by(x, |_, _| None)
    }

    /// [`Sae::encode_pre`] with the encoder's product `x_in · W_enc` from `product`
    /// where it gives one (`None`: the usual kernels). The circuit stage passes a
    /// product through a panel copy of `W_enc` it keeps while the SAE is frozen
    /// ([`circuitry_models::gemm::panels`]).
    pub fn encode_pre_by(
        &self,
        x: ArrayView2<'_, f32>,
        product: impl FnOnce(ArrayView2<'_, f32>, ArrayView2<'_, f32>) -> Option<Array2<f32>>,
    ) -> Array2<f32> {
        let apply = self.cfg.apply_b_dec_to_input;
        match self.cfg.normalize_activations {
            ActivationNormalization::None => {
                kernel::pre_activations_by(&self.params(), x, apply, product)
            }
            norm => {
                let (xn, _) = normalize(norm, x); // (batch, d_in)
                kernel::pre_activations_by(&self.params(), xn.view(), apply, product)
            }
        }
    }

    /// Feature activations `(batch, d_sae)` of `x (batch, d_in)`.
    pub fn encode(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.encode_by(x, |_, _| None)
    }

    /// [`Sae::encode`] with the encoder's product from `product` ([`Sae::encode_pre_by`]).
    pub fn encode_by(
        &self,
        x: ArrayView2<'_, f32>,
        product: impl FnOnce(ArrayView2<'_, f32>, ArrayView2<'_, f32>) -> Option<Array2<f32>>,
    ) -> Array2<f32> {
        let pre = self.encode_pre_by(x, product); // (batch, d_sae)
        kernel::activate(
            self.cfg.architecture,
            pre.view(),
            self.threshold.as_ref().map(|t| t.view()),
        )
    }

    /// Reconstruction `(batch, d_in)` of features `f (batch, d_sae)`: `f W_dec + b_dec`.
    pub fn decode(&self, f: ArrayView2<'_, f32>) -> Array2<f32> {
        kernel::decode(&self.params(), f)
    }

    /// [`Sae::decode`] with a dense product `f · W_dec` from `product` where it gives
    /// one ([`Sae::encode_pre_by`]); sparse features are gathered as before.
    pub fn decode_by(
        &self,
        f: ArrayView2<'_, f32>,
        product: impl FnOnce(ArrayView2<'_, f32>, ArrayView2<'_, f32>) -> Option<Array2<f32>>,
    ) -> Array2<f32> {
        kernel::decode_by(&self.params(), f, product)
    }

    /// The reconstruction `(batch, d_in)` of `x (batch, d_in)` from its features
    /// `f (batch, d_sae)`: [`Sae::decode`], with the input normalisation undone
    /// using `x`'s per-row norm or mean.
    pub fn reconstruct(&self, x: ArrayView2<'_, f32>, f: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut x_hat = self.decode(f); // (batch, d_in)
        let norm = self.cfg.normalize_activations;
        if norm != ActivationNormalization::None {
            let (_, stat) = normalize(norm, x); // (batch)
            for (mut row, &v) in x_hat.outer_iter_mut().zip(stat.iter()) {
                match norm {
                    ActivationNormalization::ConstantNormRescale => row.mapv_inplace(|h| h / v),
                    _ => row.mapv_inplace(|h| h + v),
                }
            }
        }
        x_hat
    }

    /// `reconstruct(x, encode(x))`: the reconstruction `(batch, d_in)` of
    /// `x (batch, d_in)`, in the input's own scale.
    pub fn forward(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        self.reconstruct(x, self.encode(x).view())
    }

    /// `‖W_dec[i]‖₂` for every feature, `(d_sae)`.
    pub fn decoder_norms(&self) -> Array1<f32> {
        self.w_dec.map_axis(Axis(1), |r| r.dot(&r).sqrt())
    }
}

/// `x (rows, d)` normalised per row, and the per-row statistic that undoes it:
/// the scale `√d / ‖x_b‖` (1 for a zero row) for constant-norm rescaling, the mean
/// over `d` for mean-centring, 1 for none. Both `(rows, d)` and `(rows)`.
pub fn normalize(
    norm: ActivationNormalization,
    x: ArrayView2<'_, f32>,
) -> (Array2<f32>, Array1<f32>) {
    let d = x.ncols().max(1) as f32;
    let mut out = x.to_owned();
    let mut stat = Array1::<f32>::ones(x.nrows());
    for (mut row, s) in out.outer_iter_mut().zip(stat.iter_mut()) {
        match norm {
            ActivationNormalization::ConstantNormRescale => {
                let n = row.dot(&row).sqrt();
                *s = if n > 0.0 { d.sqrt() / n } else { 1.0 };
                let k = *s;
                row.mapv_inplace(|v| v * k);
            }
            ActivationNormalization::MeanCentre => {
                *s = row.sum() / d;
                let m = *s;
                row.mapv_inplace(|v| v - m);
            }
            _ => {}
        }
    }
    (out, stat)
}
