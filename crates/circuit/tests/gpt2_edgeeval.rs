//! Edge evaluation on the tiny random GPT-2 with random SAEs: with every edge kept it
//! is node ablation of the same circuit, with no edge kept it is the empty circuit, and
//! removing one edge gives what a by-hand computation of that edge's ablation gives.
use circuitry_circuit::gpt2::discover::{analyse, select, Aggregation};
use circuitry_circuit::gpt2::eval::{ablated_metrics, position_means};
use circuitry_circuit::gpt2::splice::SubState;
use circuitry_circuit::gpt2::{
    all_edges, logit_diff, prepare, Ablation, EdgeEval, EdgeSet, Membership, Method, NodeRef,
};
use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use ndarray::{s, Array1, Array2, Array3, Axis};

use crate::gpt2_fixtures::{assert_close, batch, llama_model, model, submodules};

fn flat(per_batch: &[Array1<f32>]) -> Vec<f64> {
    per_batch
        .iter()
        .flat_map(|m| m.iter().map(|&v| f64::from(v)))
        .collect()
}

fn pairs(got: &[Array1<f32>], want: &[Array1<f32>]) -> Vec<(f64, f64)> {
    flat(got).into_iter().zip(flat(want)).collect()
}

/// Every edge kept = node ablation; no edge kept = every node ablated; for sum and
/// per-position nodes, mean and resample ablation.
#[test]
fn all_edges_is_node_ablation_and_no_edges_is_the_empty_circuit() {
    all_edges_is_node_ablation_and_no_edges_is_the_empty_circuit_on(model());
}

#[test]
fn all_edges_is_node_ablation_and_no_edges_is_the_empty_circuit_llama() {
    all_edges_is_node_ablation_and_no_edges_is_the_empty_circuit_on(llama_model());
}

fn all_edges_is_node_ablation_and_no_edges_is_the_empty_circuit_on(
    model: circuitry_models::transformer::Transformer,
) {
    let subs = submodules(&model, 16);
    let batches = vec![batch(4, 11), batch(3, 12)];
    let analysis = analyse(&model, &subs, &batches, Method::Attribution, 4096).unwrap();
    let means = position_means(&analysis.preps);
    for (aggregation, ablation) in [
        (Aggregation::Sum, Ablation::Mean),
        (Aggregation::PerPosition, Ablation::Resample { seed: 3 }),
    ] {
        let scored = analysis.scored_nodes(aggregation);
        let mut effects: Vec<f64> = scored.iter().map(|n| n.effect.abs()).collect();
        effects.sort_by(|a, b| b.total_cmp(a));
        // About the strongest tenth of the nodes, in every kind of submodule.
        let nodes = select(&scored, effects[scored.len() / 10]);
        assert!(nodes.len() > 5);
        let per_position = (aggregation == Aggregation::PerPosition).then_some(5);
        let eval = EdgeEval {
            model: &model,
            subs: &subs,
            batches: &batches,
            first_batch: 0,
            preps: &analysis.preps,
            means: &means,
            ablation,
            max_rows: 64,
        };
        let node_abl = |keep: &Membership| {
            ablated_metrics(
                &model,
                &subs,
                (&batches, 0),
                &analysis.preps,
                &means,
                keep,
                ablation,
            )
            .unwrap()
        };
        let all = all_edges(&subs, &nodes);
        println!(
            "{aggregation:?}: {} nodes, {} edges",
            nodes.len(),
            all.len()
        );
        let got = eval.metrics(&nodes, per_position, &all).unwrap();
        let want = node_abl(&Membership::of(&subs, &nodes, per_position));
        assert_close(
            "all edges vs node ablation",
            &pairs(&got, &want),
            1e-5,
            1e-6,
        );
        let got = eval.metrics(&nodes, per_position, &EdgeSet::new()).unwrap();
        let want = node_abl(&Membership::filled(&subs, false));
        assert_close("no edges vs empty circuit", &pairs(&got, &want), 1e-5, 1e-6);
        // Half the edges: somewhere in between, and not equal to either end.
        let half: EdgeSet = all.iter().copied().step_by(2).collect();
        let mid = flat(&eval.metrics(&nodes, per_position, &half).unwrap());
        assert!(mid.iter().all(|v| v.is_finite()));
    }
}

/// `(batch, seq)` coefficient times a direction: `(batch, seq, d)`.
fn outer(c: ndarray::ArrayView2<'_, f32>, dir: ndarray::ArrayView1<'_, f32>) -> Array3<f32> {
    let (b, seq) = c.dim();
    Array3::from_shape_fn((b, seq, dir.len()), |(i, p, k)| c[[i, p]] * dir[k])
}

/// Zero every feature but `feat` and, unless `err`, the error (zero ablation).
fn keep_only(st: &mut SubState, feat: usize, err: bool) {
    for i in 0..st.f.dim().2 {
        if i != feat {
            st.f.slice_mut(s![.., .., i]).fill(0.0);
        }
    }
    if !err {
        st.err.fill(0.0);
    }
}

/// The feature of submodule `s` with the largest mean clean activation.
fn strongest(prep_f: &Array3<f32>) -> usize {
    let m: Array1<f32> = prep_f
        .mean_axis(Axis(0))
        .unwrap()
        .mean_axis(Axis(0))
        .unwrap();
    m.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        .0
}

/// The circuit {R0/a, R0 err, A0/j, M0/k, R1/r} with zero ablation, computed by hand
/// with the edge `removed` (0: R0/a → A0/j, 1: A0/j → M0/k, 2: M0/k → R1/r,
/// 3: R1/r → metric, 4: none) ablated.
fn by_hand(
    model: &Transformer,
    subs: &[&circuitry_circuit::gpt2::Submodule],
    ids: &Array2<u32>,
    answers: &[(u32, u32)],
    f: [usize; 4],
    removed: usize,
) -> Array1<f32> {
    let [a, j, k, r] = f;
    let (r0s, a0s, m0s, r1s, a1s, m1s) = (subs[0], subs[1], subs[2], subs[3], subs[4], subs[5]);
    let x0 = model
        .run(
            &Forward::tokens(ids.view())
                .capture(&[HookPoint::ResidPre { layer: 0 }])
                .logits(false),
        )
        .unwrap()
        .hooks[&HookPoint::ResidPre { layer: 0 }]
        .clone();
    let mut st = r0s.encode(x0.view()).unwrap();
    keep_only(&mut st, a, true);
    let r0 = r0s.decode(&st);
    let da = outer(st.f.slice(s![.., .., a]), r0s.direction(a));
    let attn = |x: &Array3<f32>| {
        let h = HookPoint::AttnOut { layer: 0 };
        model
            .run(
                &Forward::from_resid_pre(0, x.view())
                    .capture(&[h])
                    .logits(false),
            )
            .unwrap()
            .hooks[&h]
            .clone()
    };
    let mut st = a0s.encode(attn(&r0).view()).unwrap();
    keep_only(&mut st, j, false);
    if removed == 0 {
        let alt = a0s.encode(attn(&(&r0 - &da)).view()).unwrap();
        st.f.slice_mut(s![.., .., j])
            .assign(&alt.f.slice(s![.., .., j]));
    }
    let a0 = a0s.decode(&st);
    let dj = outer(st.f.slice(s![.., .., j]), a0s.direction(j));
    let mid = &r0 + &a0;
    let block = &model.blocks()[0];
    let mlp = |x: &Array3<f32>| {
        let (b, seq, d) = x.dim();
        let rows = x.to_shape((b * seq, d)).unwrap().to_owned();
        let y = block.mlp.forward(block.ln_2.forward(rows.view()).view());
        y.into_shape_with_order((b, seq, d)).unwrap()
    };
    let mut st = m0s.encode(mlp(&mid).view()).unwrap();
    keep_only(&mut st, k, false);
    if removed == 1 {
        let alt = m0s.encode(mlp(&(&mid - &dj)).view()).unwrap();
        st.f.slice_mut(s![.., .., k])
            .assign(&alt.f.slice(s![.., .., k]));
    }
    let m0 = m0s.decode(&st);
    let dk = outer(st.f.slice(s![.., .., k]), m0s.direction(k));
    let x1 = &mid + &m0;
    let mut st = r1s.encode(x1.view()).unwrap();
    keep_only(&mut st, r, false);
    if removed == 2 {
        let alt = r1s.encode((&x1 - &dk).view()).unwrap();
        st.f.slice_mut(s![.., .., r])
            .assign(&alt.f.slice(s![.., .., r]));
    }
    let r1 = r1s.decode(&st);
    let dr = outer(st.f.slice(s![.., .., r]), r1s.direction(r));
    // Block 1: attention and MLP have no circuit node, so both are decode(0) = b_dec.
    let out = model
        .run_with(
            &Forward::from_resid_pre(1, r1.view()),
            |h: HookPoint, mut act: ndarray::ArrayViewMut3<'_, f32>| {
                match h {
                    HookPoint::AttnOut { layer: 1 } => act.assign(&a1s.sae.b_dec),
                    HookPoint::MlpOut { layer: 1 } => act.assign(&m1s.sae.b_dec),
                    HookPoint::ResidPost { layer: 1 } if removed == 3 => act -= &dr,
                    _ => {}
                }
                Ok::<(), circuitry_models::Error>(())
            },
        )
        .unwrap();
    logit_diff(out.logits.unwrap().view(), answers).0
}

/// Removing one edge of each kind (resid → attn, attn → mlp, mlp → resid, resid →
/// metric) gives the by-hand value; removing it changes the metric.
#[test]
fn one_removed_edge_matches_a_by_hand_computation() {
    one_removed_edge_matches_a_by_hand_computation_on(model());
}

fn one_removed_edge_matches_a_by_hand_computation_on(
    model: circuitry_models::transformer::Transformer,
) {
    let subs = submodules(&model, 16);
    let pb = batch(4, 21);
    let prep = prepare(&model, &subs, &pb).unwrap();
    let means = position_means(std::slice::from_ref(&prep));
    let f = [0usize, 1, 2, 3].map(|s| strongest(&prep.clean[s].f));
    let node = |sub: usize, feature: Option<usize>| NodeRef {
        sub,
        position: None,
        feature,
    };
    let nodes = vec![
        node(0, Some(f[0])),
        node(0, None),
        node(1, Some(f[1])),
        node(2, Some(f[2])),
        node(3, Some(f[3])),
    ];
    let metric = node(subs.len(), None);
    let edges = [
        (nodes[0], nodes[2]),
        (nodes[2], nodes[3]),
        (nodes[3], nodes[4]),
        (nodes[4], metric),
    ];
    let all = all_edges(&subs, &nodes);
    for e in &edges {
        assert!(all.contains(e), "{e:?} is an edge of the circuit");
    }
    let batches = vec![pb.clone()];
    let preps = vec![prep];
    let eval = EdgeEval {
        model: &model,
        subs: &subs,
        batches: &batches,
        first_batch: 0,
        preps: &preps,
        means: &means,
        ablation: Ablation::Zero,
        max_rows: 64,
    };
    let list: Vec<_> = subs.all().iter().collect();
    let answers: Vec<(u32, u32)> = pb
        .clean_answer
        .iter()
        .copied()
        .zip(pb.patch_answer.iter().copied())
        .collect();
    let full = by_hand(&model, &list, &pb.clean, &answers, f, 4);
    let got = eval.metrics(&nodes, None, &all).unwrap();
    assert_close(
        "every edge kept, by hand",
        &pairs(&got, std::slice::from_ref(&full)),
        1e-5,
        1e-6,
    );
    for (removed, e) in edges.iter().enumerate() {
        let mut kept = all.clone();
        kept.remove(e);
        let got = eval.metrics(&nodes, None, &kept).unwrap();
        let want = by_hand(&model, &list, &pb.clean, &answers, f, removed);
        assert_close(
            &format!("edge {removed} removed, by hand"),
            &pairs(&got, std::slice::from_ref(&want)),
            1e-5,
            1e-6,
        );
        let change = (&want - &full)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &v| m.max(v));
        println!(
            "edge {removed}: largest change of the metric {change:.3e}; full {full} removed {want}"
        );
        assert!(
            change > 1e-5,
            "removing edge {removed} should change the metric"
        );
    }
}

/// With SAEs on the residual stream only, an edge R0/a → R1/r is the whole of block 0:
/// removing it re-runs block 0 on R0 without a's contribution; the edge R1/r → metric
/// re-runs block 1 on R1 without r's.
#[test]
fn resid_only_edges_run_the_blocks_in_between() {
    use circuitry_circuit::gpt2::{Submodule, Submodules};
    let model = model();
    let c = model.config();
    let list = [0usize, 1]
        .iter()
        .map(|&layer| {
            let h = HookPoint::ResidPre { layer };
            Submodule::new(crate::gpt2_fixtures::sae(
                h,
                c.d_model,
                16,
                200 + layer as u64,
            ))
            .unwrap()
        })
        .collect();
    let subs = Submodules::new(list, c.d_model, c.n_layer).unwrap();
    let pb = batch(4, 31);
    let prep = prepare(&model, &subs, &pb).unwrap();
    let means = position_means(std::slice::from_ref(&prep));
    let (a, r) = (strongest(&prep.clean[0].f), strongest(&prep.clean[1].f));
    let node = |sub: usize, feature: Option<usize>| NodeRef {
        sub,
        position: None,
        feature,
    };
    let nodes = vec![node(0, Some(a)), node(1, Some(r))];
    let all = all_edges(&subs, &nodes);
    assert_eq!(all.len(), 2, "{all:?}");
    let batches = vec![pb.clone()];
    let preps = vec![prep];
    let eval = EdgeEval {
        model: &model,
        subs: &subs,
        batches: &batches,
        first_batch: 0,
        preps: &preps,
        means: &means,
        ablation: Ablation::Zero,
        max_rows: 64,
    };
    let answers: Vec<(u32, u32)> = pb
        .clean_answer
        .iter()
        .copied()
        .zip(pb.patch_answer.iter().copied())
        .collect();
    let (r0s, r1s) = (&subs.all()[0], &subs.all()[1]);
    let h1 = HookPoint::ResidPre { layer: 1 };
    let block0 = |x: &Array3<f32>| {
        model
            .run(
                &Forward::from_resid_pre(0, x.view())
                    .capture(&[h1])
                    .logits(false),
            )
            .unwrap()
            .hooks[&h1]
            .clone()
    };
    let logits_from_1 = |x: &Array3<f32>| {
        let out = model.run(&Forward::from_resid_pre(1, x.view())).unwrap();
        logit_diff(out.logits.unwrap().view(), &answers).0
    };
    let h0 = HookPoint::ResidPre { layer: 0 };
    let x0 = model
        .run(
            &Forward::tokens(pb.clean.view())
                .capture(&[h0])
                .logits(false),
        )
        .unwrap()
        .hooks[&h0]
        .clone();
    let mut st = r0s.encode(x0.view()).unwrap();
    keep_only(&mut st, a, false);
    let r0 = r0s.decode(&st);
    let da = outer(st.f.slice(s![.., .., a]), r0s.direction(a));
    for removed in 0..3 {
        let mut st1 = r1s.encode(block0(&r0).view()).unwrap();
        keep_only(&mut st1, r, false);
        if removed == 0 {
            let alt = r1s.encode(block0(&(&r0 - &da)).view()).unwrap();
            st1.f
                .slice_mut(s![.., .., r])
                .assign(&alt.f.slice(s![.., .., r]));
        }
        let r1 = r1s.decode(&st1);
        let want = if removed == 1 {
            let dr = outer(st1.f.slice(s![.., .., r]), r1s.direction(r));
            logits_from_1(&(&r1 - &dr))
        } else {
            logits_from_1(&r1)
        };
        let mut kept = all.clone();
        match removed {
            0 => kept.remove(&(nodes[0], nodes[1])),
            1 => kept.remove(&(nodes[1], node(subs.len(), None))),
            _ => false,
        };
        let got = eval.metrics(&nodes, None, &kept).unwrap();
        assert_close(
            &format!("resid-only, edge {removed} removed, by hand"),
            &pairs(&got, &[want]),
            1e-5,
            1e-6,
        );
    }
}
