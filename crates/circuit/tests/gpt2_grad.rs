//! Gradient checks of the spliced SAE nodes and the edges against f64 central finite
//! differences on the tiny random GPT-2 (the SAE math of the reference is written out
//! in f64 here; the library runs in f32).
use circuitry_circuit::gpt2::edges::{add_edges, BatchState, EdgeSums, NodeRef};
use circuitry_circuit::gpt2::{node_effects, prepare, Method, SubState, Submodule};
use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use ndarray::{s, Array1, Array2, Array3, ArrayViewMut3};

use crate::gpt2_fixtures::{assert_close, batch, f64s, llama_model, model, submodules};

const H: f64 = 1e-5;

/// Σ over pairs of the metric of the f64 model with `edit` applied.
fn metric64(
    model: &Transformer<f64>,
    ids: &Array2<u32>,
    answers: &[(u32, u32)],
    mut edit: impl FnMut(HookPoint, ArrayViewMut3<'_, f64>),
) -> f64 {
    let out = model
        .run_with(&Forward::tokens(ids.view()), |h, a| {
            edit(h, a);
            Ok::<(), circuitry_models::Error>(())
        })
        .unwrap();
    // In f64: rounding the logits to f32 would swamp the finite differences.
    let logits = out.logits.unwrap();
    let last = logits.dim().1 - 1;
    (0..logits.dim().0)
        .map(|b| {
            let (c, p) = answers[b];
            logits[[b, last, p as usize]] - logits[[b, last, c as usize]]
        })
        .sum()
}

/// `f W_dec + b_dec + err` in f64.
fn decode64(sub: &Submodule, f: &Array3<f64>, err: &Array3<f64>) -> Array3<f64> {
    let w = sub.sae.w_dec.mapv(f64::from);
    let b = sub.sae.b_dec.mapv(f64::from);
    let (bs, seq, d_sae) = f.dim();
    let rows = f.view().into_shape_with_order((bs * seq, d_sae)).unwrap();
    let x = rows.dot(&w) + &b;
    x.into_shape_with_order((bs, seq, w.ncols())).unwrap() + err
}

#[test]
fn feature_and_error_gradients_match_finite_differences() {
    feature_and_error_gradients_match_finite_differences_on(model());
}

#[test]
fn feature_and_error_gradients_match_finite_differences_llama() {
    feature_and_error_gradients_match_finite_differences_on(llama_model());
}

fn feature_and_error_gradients_match_finite_differences_on(
    model: circuitry_models::transformer::Transformer,
) {
    let m64 = model.cast::<f64>();
    let subs = submodules(&model, 24);
    let pb = batch(2, 1);
    let answers: Vec<(u32, u32)> = pb
        .clean_answer
        .iter()
        .copied()
        .zip(pb.patch_answer.iter().copied())
        .collect();
    let prep = prepare(&model, &subs, &pb).unwrap();
    let mut pairs = Vec::new();
    let mut err_pairs = Vec::new();
    for (s, sub) in subs.all().iter().enumerate() {
        // (batch, seq, d_sae)
        let gf = sub.feature_grad(prep.grad[s].view());
        // The masked form the effects use: the same values at the active latents (dot
        // products instead of the product: a few ulp apart), zero elsewhere.
        let at = sub.feature_grad_at(prep.grad[s].view(), prep.clean[s].f.view());
        let mut worst = 0.0f32;
        for ((&a, &g), &f) in at.iter().zip(&gf).zip(&prep.clean[s].f) {
            let want = if f != 0.0 { g } else { 0.0 };
            worst = worst.max((a - want).abs() / (1e-3 + g.abs()));
        }
        println!(
            "{}: feature_grad_at vs feature_grad, max rel diff {worst:.2e}",
            sub.hook
        );
        assert!(worst < 1e-4, "{}: {worst}", sub.hook);
        let (f0, e0) = (f64s(prep.clean[s].f.view()), f64s(prep.clean[s].err.view()));
        for &(b, p, i) in &[(0usize, 4usize, 0usize), (1, 2, 5), (0, 3, 11), (1, 4, 23)] {
            let eval = |d: f64| {
                let mut f = f0.clone();
                f[[b, p, i]] += d;
                let x = decode64(sub, &f, &e0);
                metric64(&m64, &pb.clean, &answers, |h, mut a| {
                    if h == sub.hook {
                        a.assign(&x);
                    }
                })
            };
            let fd = (eval(H) - eval(-H)) / (2.0 * H);
            pairs.push((f64::from(gf[[b, p, i]]), fd));
        }
        // Error node: directional derivative along the error itself at one position.
        let (b, p) = (1, 4);
        let dir: Array1<f64> = e0.slice(s![b, p, ..]).to_owned();
        let eval = |d: f64| {
            let mut e = e0.clone();
            e.slice_mut(s![b, p, ..]).scaled_add(d, &dir);
            let x = decode64(sub, &f0, &e);
            metric64(&m64, &pb.clean, &answers, |h, mut a| {
                if h == sub.hook {
                    a.assign(&x);
                }
            })
        };
        let fd = (eval(H) - eval(-H)) / (2.0 * H);
        let g: Array1<f64> = prep.grad[s].slice(s![b, p, ..]).mapv(f64::from);
        err_pairs.push((g.dot(&dir), fd));
    }
    assert_close("d m / d feature", &pairs, 2e-3, 1e-7);
    assert_close("d m / d error (directional)", &err_pairs, 2e-3, 1e-7);
}

/// The f64 features `relu((x − b_dec) W_enc + b_enc)` and error of the reference.
fn encode64(sub: &Submodule, x: &Array3<f64>) -> (Array3<f64>, Array3<f64>) {
    let (bs, seq, d) = x.dim();
    let w_enc = sub.sae.w_enc.mapv(f64::from);
    let b_enc = sub.sae.b_enc.mapv(f64::from);
    let b_dec = sub.sae.b_dec.mapv(f64::from);
    let rows = x.view().into_shape_with_order((bs * seq, d)).unwrap();
    let pre = (&rows - &b_dec).dot(&w_enc) + &b_enc;
    let f = pre.mapv(|v| v.max(0.0));
    let f = f.into_shape_with_order((bs, seq, w_enc.ncols())).unwrap();
    let x_hat = decode64(sub, &f, &Array3::zeros(x.dim()));
    (f, x - &x_hat)
}

/// Edges into one downstream node, summed over the upstream submodule's nodes, equal
/// `left · ∂d/∂x_u · Δx_u` with the other submodules frozen at their clean values.
#[test]
fn edges_match_finite_differences_of_the_downstream_node() {
    edges_match_finite_differences_of_the_downstream_node_on(model());
}

#[test]
fn edges_match_finite_differences_of_the_downstream_node_llama() {
    edges_match_finite_differences_of_the_downstream_node_on(llama_model());
}

fn edges_match_finite_differences_of_the_downstream_node_on(
    model: circuitry_models::transformer::Transformer,
) {
    let m64 = model.cast::<f64>();
    let subs = submodules(&model, 24);
    let pb = batch(1, 2);
    let prep = prepare(&model, &subs, &pb).unwrap();
    let eff = node_effects(&model, &subs, &pb, &prep, Method::Attribution, 4096).unwrap();
    let hooks = subs.hooks();
    // Every node of every submodule, summed over positions.
    let mut nodes = Vec::new();
    for (s, sub) in subs.all().iter().enumerate() {
        for i in 0..sub.d_sae() {
            nodes.push(NodeRef {
                sub: s,
                position: None,
                feature: Some(i),
            });
        }
        nodes.push(NodeRef {
            sub: s,
            position: None,
            feature: None,
        });
    }
    let mut sums = EdgeSums::new();
    let state = BatchState {
        batch: &pb,
        prep: &prep,
        grad: &eff.grad,
    };
    add_edges(&model, &subs, state, &nodes, 4096, &mut sums).unwrap();
    let clean = model
        .run(&Forward::tokens(pb.clean.view()).capture(&hooks))
        .unwrap()
        .hooks;
    let patch = model
        .run(&Forward::tokens(pb.patch.view()).capture(&hooks))
        .unwrap()
        .hooks;
    let mut pairs = Vec::new();
    // (downstream, upstream) submodule pairs: resid0→attn0, resid0→mlp0, attn0→mlp0,
    // attn0→resid1, mlp0→resid1, resid0→resid1, resid1→mlp1.
    for (d, u) in [
        (1usize, 0usize),
        (2, 0),
        (2, 1),
        (3, 1),
        (3, 2),
        (3, 0),
        (5, 3),
    ] {
        let sub_d = &subs.all()[d];
        let left_f = f64s(sub_d.feature_grad(eff.grad[d].view()).view()); // (1, seq, d_sae)
        let left_e = f64s(eff.grad[d].view()); // (1, seq, d)
        let dx = f64s(patch[&hooks[u]].view()) - f64s(clean[&hooks[u]].view());
        let frozen: Vec<(HookPoint, Array3<f64>)> = hooks
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != u && k != d)
            .map(|(k, h)| (*h, f64s(clean[&hooks[k]].view())))
            .collect();
        // Downstream value as a function of x_u = clean + t·Δx_u.
        let at = |t: f64| -> Array3<f64> {
            let mut got = None;
            let x_u = f64s(clean[&hooks[u]].view()) + &(&dx * t);
            m64.run_with(&Forward::tokens(pb.clean.view()), |h, mut a| {
                if h == hooks[u] {
                    a.assign(&x_u);
                } else if let Some((_, v)) = frozen.iter().find(|(fh, _)| *fh == h) {
                    a.assign(v);
                } else if h == hooks[d] {
                    got = Some(a.to_owned());
                }
                Ok::<(), circuitry_models::Error>(())
            })
            .unwrap();
            got.unwrap()
        };
        let (hi, lo) = (encode64(sub_d, &at(H)), encode64(sub_d, &at(-H)));
        for j in [0usize, 3, 7, 19] {
            let slope: Array1<f64> = (&hi.0 - &lo.0).slice(s![0, .., j]).to_owned() / (2.0 * H);
            let lj: Array1<f64> = left_f.slice(s![0, .., j]).to_owned();
            let fd = slope.dot(&lj);
            let lib: f64 = sums
                .iter()
                .filter(|((un, dn), _)| {
                    un.sub == u
                        && *dn
                            == NodeRef {
                                sub: d,
                                position: None,
                                feature: Some(j),
                            }
                })
                .map(|(_, w)| *w)
                .sum();
            pairs.push((lib, fd));
        }
        let fd_err = ((&hi.1 - &lo.1) / (2.0 * H) * &left_e).sum();
        let lib: f64 = sums
            .iter()
            .filter(|((un, dn), _)| {
                un.sub == u
                    && *dn
                        == NodeRef {
                            sub: d,
                            position: None,
                            feature: None,
                        }
            })
            .map(|(_, w)| *w)
            .sum();
        pairs.push((lib, fd_err));
    }
    assert_close(
        "Σ_upstream edge weights vs finite differences",
        &pairs,
        3e-3,
        1e-8,
    );
    let _ = SubState::minus; // the splice API used by the library
}
