//! Finite-difference checks of the hand-written backward pass, in f64, against an
//! independent loop-by-loop implementation of the loss.
// The reference loss is written index by index on purpose, to read like the formula.
#![allow(clippy::needless_range_loop)]

use circuitry_sae::kernel::{loss_and_grads, AuxK, LossSpec, Params};
use circuitry_sae::Architecture;
use ndarray::{Array1, Array2};

use crate::common::{normal, normal1, rng};

struct P {
    w_enc: Array2<f64>, // (d_in, d_sae)
    b_enc: Array1<f64>, // (d_sae)
    w_dec: Array2<f64>, // (d_sae, d_in)
    b_dec: Array1<f64>, // (d_in)
}

impl P {
    fn view(&self) -> Params<'_, f64> {
        Params {
            w_enc: self.w_enc.view(),
            b_enc: self.b_enc.view(),
            w_dec: self.w_dec.view(),
            b_dec: self.b_dec.view(),
        }
    }
}

/// The loss written out element by element. With `frozen_residual`, the AuxK term
/// uses that residual `e = x − x̂` (the trainer treats it as a constant).
fn reference_loss(
    p: &P,
    x: &Array2<f64>,
    spec: &LossSpec,
    frozen_residual: Option<&Array2<f64>>,
) -> (f64, Array2<f64>) {
    let (d_in, d_sae) = p.w_enc.dim();
    let b = x.nrows();
    let mut total = 0.0;
    let mut residual = Array2::zeros((b, d_in));
    // BatchTopK: the (k·b)-th largest positive pre-activation of the whole batch.
    let batch_t = match spec.architecture {
        Architecture::BatchTopK { k } => {
            let mut all: Vec<f64> = Vec::new();
            for r in 0..b {
                for i in 0..d_sae {
                    let x_in = |j: usize| {
                        x[[r, j]]
                            - if spec.apply_b_dec_to_input {
                                p.b_dec[j]
                            } else {
                                0.0
                            }
                    };
                    let v = p.b_enc[i] + (0..d_in).map(|j| x_in(j) * p.w_enc[[j, i]]).sum::<f64>();
                    if v > 0.0 {
                        all.push(v);
                    }
                }
            }
            all.sort_by(|a, c| c.partial_cmp(a).unwrap());
            if all.len() > k * b {
                all[k * b - 1]
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    for r in 0..b {
        let x_in: Vec<f64> = (0..d_in)
            .map(|j| {
                x[[r, j]]
                    - if spec.apply_b_dec_to_input {
                        p.b_dec[j]
                    } else {
                        0.0
                    }
            })
            .collect();
        let pre: Vec<f64> = (0..d_sae)
            .map(|i| p.b_enc[i] + (0..d_in).map(|j| x_in[j] * p.w_enc[[j, i]]).sum::<f64>())
            .collect();
        let mut ranked: Vec<usize> = (0..d_sae).collect();
        ranked.sort_by(|&a, &c| pre[c].partial_cmp(&pre[a]).unwrap());
        let acts: Vec<f64> = (0..d_sae)
            .map(|i| match spec.architecture {
                Architecture::TopK { k } if !ranked[..k].contains(&i) => 0.0,
                Architecture::BatchTopK { .. } if pre[i] < batch_t => 0.0,
                Architecture::JumpRelu => {
                    let theta = spec.jump.unwrap().threshold[i];
                    if pre[i] > theta {
                        pre[i]
                    } else {
                        0.0
                    }
                }
                _ => pre[i].max(0.0),
            })
            .collect();
        for j in 0..d_in {
            let x_hat = p.b_dec[j] + (0..d_sae).map(|i| acts[i] * p.w_dec[[i, j]]).sum::<f64>();
            total += (x_hat - x[[r, j]]).powi(2) / b as f64;
            residual[[r, j]] = x[[r, j]] - x_hat;
        }
        if let Architecture::Standard = spec.architecture {
            for i in 0..d_sae {
                let norm = (0..d_in)
                    .map(|j| p.w_dec[[i, j]].powi(2))
                    .sum::<f64>()
                    .sqrt();
                total += spec.l1_coefficient * acts[i] * norm / b as f64;
            }
        }
        if let (Architecture::JumpRelu, Some(j)) = (spec.architecture, spec.jump) {
            // L0: piecewise constant in every parameter but θ.
            let l0 = (0..d_sae).filter(|&i| pre[i] > j.threshold[i]).count();
            total += spec.l1_coefficient * l0 as f64 / b as f64;
        }
        if let (Some(aux), Some(e)) = (&spec.aux, frozen_residual) {
            let n_dead = aux.dead.iter().filter(|d| **d).count();
            let k = aux.k_aux.min(n_dead);
            let scale = (n_dead as f64 / aux.k_aux as f64).min(1.0);
            let chosen: Vec<usize> = ranked
                .iter()
                .copied()
                .filter(|&i| aux.dead[i])
                .take(k)
                .collect();
            for j in 0..d_in {
                let e_hat: f64 = chosen.iter().map(|&i| pre[i] * p.w_dec[[i, j]]).sum();
                total += aux.coefficient * scale * (e_hat - e[[r, j]]).powi(2) / b as f64;
            }
        }
    }
    (total, residual)
}

fn check(spec: &LossSpec, label: &str) {
    let (b, d_in, d_sae) = (13, 5, 7);
    let mut r = rng(42);
    let mut p = P {
        w_enc: normal(&mut r, (d_in, d_sae), 0.6),
        b_enc: normal1(&mut r, d_sae, 0.3),
        w_dec: normal(&mut r, (d_sae, d_in), 0.6),
        b_dec: normal1(&mut r, d_in, 0.3),
    };
    let x = normal(&mut r, (b, d_in), 1.0);

    let (terms, grads) = loss_and_grads(&p.view(), x.view(), spec).unwrap();
    let (_, residual) = reference_loss(&p, &x, spec, None);
    let (ref_total, _) = reference_loss(&p, &x, spec, Some(&residual));
    println!("{label}: loss {} (reference {ref_total})", terms.total);
    assert!(
        (terms.total - ref_total).abs() < 1e-10 * (1.0 + ref_total.abs()),
        "{label}: loss differs from the reference"
    );

    // Chunking (and therefore threading) must not change the result beyond rounding.
    let one_chunk = LossSpec {
        chunk_rows: 1 << 20,
        ..*spec
    };
    let (_, grads_one) = loss_and_grads(&p.view(), x.view(), &one_chunk).unwrap();
    assert!((&grads.w_enc - &grads_one.w_enc)
        .iter()
        .all(|d| d.abs() < 1e-12));

    let eps = 1e-6;
    let fd = |p: &P| reference_loss(p, &x, spec, Some(&residual)).0;
    macro_rules! check_param {
        ($field:ident, $name:expr) => {{
            let analytic = grads.$field.clone();
            let mut max_diff: f64 = 0.0;
            let mut max_grad: f64 = 0.0;
            for idx in 0..analytic.len() {
                let orig = p.$field.as_slice().unwrap()[idx];
                p.$field.as_slice_mut().unwrap()[idx] = orig + eps;
                let up = fd(&p);
                p.$field.as_slice_mut().unwrap()[idx] = orig - eps;
                let down = fd(&p);
                p.$field.as_slice_mut().unwrap()[idx] = orig;
                let numeric = (up - down) / (2.0 * eps);
                let a = analytic.as_slice().unwrap()[idx];
                max_diff = max_diff.max((numeric - a).abs());
                max_grad = max_grad.max(a.abs());
                assert!(
                    (numeric - a).abs() <= 1e-6 + 1e-6 * a.abs(),
                    "{}: {}[{idx}] analytic {a} vs finite difference {numeric}",
                    label,
                    $name
                );
            }
            println!("{label}: {:<5} max |analytic − finite difference| = {max_diff:.2e} (max |grad| {max_grad:.2e})", $name);
            assert!(max_grad > 1e-3, "{label}: {} gradient is trivially zero", $name);
        }};
    }
    check_param!(w_enc, "W_enc");
    check_param!(b_enc, "b_enc");
    check_param!(w_dec, "W_dec");
    check_param!(b_dec, "b_dec");
}

#[test]
fn standard_gradients_match_finite_differences() {
    let spec = LossSpec {
        architecture: Architecture::Standard,
        apply_b_dec_to_input: true,
        l1_coefficient: 0.3,
        aux: None,
        chunk_rows: 4,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "standard");
}

#[test]
fn standard_gradients_without_b_dec_subtraction() {
    let spec = LossSpec {
        architecture: Architecture::Standard,
        apply_b_dec_to_input: false,
        l1_coefficient: 0.05,
        aux: None,
        chunk_rows: 3,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "standard, apply_b_dec_to_input=false");
}

#[test]
fn topk_gradients_with_auxk_match_finite_differences() {
    let dead = [false, true, false, true, true, false, false];
    let spec = LossSpec {
        architecture: Architecture::TopK { k: 3 },
        apply_b_dec_to_input: true,
        l1_coefficient: 0.0,
        aux: Some(AuxK {
            dead: &dead,
            k_aux: 2,
            coefficient: 0.5,
        }),
        chunk_rows: 5,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "topk k=3 + auxk");
}

#[test]
fn topk_auxk_scale_when_few_latents_are_dead() {
    // One dead latent with k_aux 4: k_aux becomes 1 and the term is scaled by 1/4.
    let dead = [false, false, false, false, false, true, false];
    let spec = LossSpec {
        architecture: Architecture::TopK { k: 2 },
        apply_b_dec_to_input: true,
        l1_coefficient: 0.0,
        aux: Some(AuxK {
            dead: &dead,
            k_aux: 4,
            coefficient: 1.0,
        }),
        chunk_rows: 4,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "topk k=2 + auxk, one dead");
}

#[test]
fn batchtopk_gradients_with_auxk_match_finite_differences() {
    // The batch keeps its k·B = 13·2 largest positive pre-activations; with the
    // selection fixed the loss is smooth, so finite differences apply.
    let dead = [true, false, false, false, true, false, false];
    let spec = LossSpec {
        architecture: Architecture::BatchTopK { k: 2 },
        apply_b_dec_to_input: true,
        l1_coefficient: 0.0,
        aux: Some(AuxK {
            dead: &dead,
            k_aux: 2,
            coefficient: 0.5,
        }),
        chunk_rows: 4,
        jump: None,
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "batchtopk k=2 + auxk");
}

#[test]
fn jumprelu_gradients_match_finite_differences_and_the_threshold_pseudo_derivative() {
    // W_enc, b_enc, W_dec, b_dec have true gradients (the L0 term is locally
    // constant in them); θ has the paper's pseudo-derivative, checked against the
    // formula written out here.
    let theta = [0.05, 0.3, 0.1, 0.6, 0.2, 0.4, 0.15];
    let bandwidth = 0.4;
    let lambda = 0.7;
    let spec = LossSpec {
        architecture: Architecture::JumpRelu,
        apply_b_dec_to_input: true,
        l1_coefficient: lambda,
        aux: None,
        chunk_rows: 4,
        jump: Some(circuitry_sae::kernel::Jump {
            threshold: &theta,
            bandwidth,
        }),
        backend: Default::default(),
        topk_prefilter: false,
    };
    check(&spec, "jumprelu");

    let (b, d_in, d_sae) = (13, 5, 7);
    let mut r = rng(42);
    let p = P {
        w_enc: normal(&mut r, (d_in, d_sae), 0.6),
        b_enc: normal1(&mut r, d_sae, 0.3),
        w_dec: normal(&mut r, (d_sae, d_in), 0.6),
        b_dec: normal1(&mut r, d_in, 0.3),
    };
    let x = normal(&mut r, (b, d_in), 1.0);
    let (_, grads) = loss_and_grads(&p.view(), x.view(), &spec).unwrap();
    let got = grads
        .threshold
        .expect("JumpReLU returns a threshold gradient");
    let mut want = vec![0.0; d_sae];
    let mut in_window = 0;
    for row in 0..b {
        let x_in: Vec<f64> = (0..d_in).map(|j| x[[row, j]] - p.b_dec[j]).collect();
        let pre: Vec<f64> = (0..d_sae)
            .map(|i| p.b_enc[i] + (0..d_in).map(|j| x_in[j] * p.w_enc[[j, i]]).sum::<f64>())
            .collect();
        let acts: Vec<f64> = (0..d_sae)
            .map(|i| if pre[i] > theta[i] { pre[i] } else { 0.0 })
            .collect();
        for i in 0..d_sae {
            if ((pre[i] - theta[i]) / bandwidth).abs() < 0.5 {
                in_window += 1;
                // ∂mse/∂f_i = (2/B) Σ_j (x̂_j − x_j) W_dec[i, j]
                let d_f: f64 = (0..d_in)
                    .map(|j| {
                        let x_hat =
                            p.b_dec[j] + (0..d_sae).map(|l| acts[l] * p.w_dec[[l, j]]).sum::<f64>();
                        2.0 / b as f64 * (x_hat - x[[row, j]]) * p.w_dec[[i, j]]
                    })
                    .sum();
                want[i] += d_f * (-theta[i] / bandwidth) - lambda / (bandwidth * b as f64);
            }
        }
    }
    let max_diff = (0..d_sae)
        .map(|i| (got[i] - want[i]).abs())
        .fold(0.0, f64::max);
    println!("jumprelu: θ pseudo-gradient max |diff| {max_diff:.2e} over {in_window} rows×latents in the window");
    assert!(in_window > 5, "too few pre-activations near θ to test");
    assert!(max_diff < 1e-12, "θ pseudo-gradient {got:?} vs {want:?}");
}
