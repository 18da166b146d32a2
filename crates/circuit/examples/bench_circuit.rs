//! Benchmark (not a test): time per example of integrated-gradient node effects and of
//! edges on a randomly initialised model (GPT-2 small's shape by default, or
//! SmolLM2-135M's with `--family llama`) with random SAEs at every resid_pre / attn_out /
//! mlp_out (`--subs all`) or at every resid_pre only (`--subs resid`), as a multiple of
//! one forward + backward pass of the same batch; and the time of one *spliced pass*:
//! a forward that captures and encodes every SAE's hook, the backward from the metric,
//! and the gradient at every feature (`∂m/∂x · W_decᵀ`) and error term — what
//! `scripts/bench_circuit_peer.py` does in PyTorch with the SAEs spliced into the model
//! (`scripts/bench_circuit.sh` runs both and prints the ratio).
//!
//! ```text
//! cargo run --release -p circuitry-circuit --example bench_circuit -- \
//!     [--family gpt2|llama] [--layers 12] [--d-model 768] [--heads 12] [--kv-heads H] \
//!     [--d-mlp 4·d] [--vocab 50257] [--d-sae 3072] [--k 0] [--subs all|resid] \
//!     [--batch 2] [--seq 10] [--ig-steps 10] [--edge-nodes 16] [--reps 3] [--only-pass 1]
//!     [--only-ig 1] [--gemm auto|faer|mkl] [--diff-at 1] [--l0 0]
//! ```
//!
//! The patch prompts differ from the clean ones at position `--diff-at` (default 1): IG's
//! runs start after the positions before it, which the clean run's keys and values
//! stand in for (`Prepared::prefix`).
//!
//! `--k K` makes the SAEs TopK with `K` active latents (0, the default: ReLU). With ReLU
//! SAEs `--l0 N` shifts each SAE's encoder bias by the quantile of its pre-activations on
//! the benchmark's prompts so that about `N` latents are active per token, as in trained
//! SAEs (0, the default: no shift, about half the latents active). `--gemm`:
//! the library of the transformer's products, as the circuit stage's option (auto:
//! MKL when installed, from `$CIRCUITRY_MKL` or `.mkl/`, else faer).
//!
//! Threads: rayon's default (all cores), or `RAYON_NUM_THREADS=N`.
//!
//! Pass counts the methods need (the unit is one forward + backward pass of the batch):
//! IG = 2 forwards + 1 backward to prepare (1.5 units) plus `steps` passes per submodule
//! (each from the submodule's block on, with logits at the last position only: less than
//! a unit);
//! edges = one backward per downstream node of the circuit (counted as one unit each,
//! although a backward alone is cheaper than forward + backward). Medians of `--reps`.
use std::time::Instant;

use circuitry_circuit::gpt2::edges::{add_edges, BatchState};
use circuitry_circuit::gpt2::{
    node_effects, prepare, EdgeSums, Method, NodeRef, PairBatch, Submodule, Submodules,
};
use circuitry_core::{Family, HookPoint, ModelConfig};
use circuitry_models::transformer::{Backward, Forward, Transformer};
use circuitry_sae::kernel::{use_for_transformer, Backend, MklSettings, MKL_ENV};
use circuitry_sae::{Architecture, GemmChoice, Sae, SaeConfig};
use ndarray::{Array2, Array3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Args {
    family: Family,
    kv_heads: Option<usize>,
    d_mlp: Option<usize>,
    resid_only: bool,
    only_pass: bool,
    only_ig: bool,
    layers: usize,
    d_model: usize,
    heads: usize,
    vocab: usize,
    d_sae: usize,
    k: usize,
    l0: usize,
    batch: usize,
    seq: usize,
    ig_steps: usize,
    edge_nodes: usize,
    reps: usize,
    gemm: GemmChoice,
    diff_at: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        family: Family::Gpt2,
        kv_heads: None,
        d_mlp: None,
        resid_only: false,
        only_pass: false,
        only_ig: false,
        layers: 12,
        d_model: 768,
        heads: 12,
        vocab: 50257,
        d_sae: 3072,
        k: 0,
        l0: 0,
        batch: 2,
        seq: 10,
        ig_steps: 10,
        edge_nodes: 16,
        reps: 3,
        gemm: GemmChoice::Auto,
        diff_at: 1,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [flag, value] = pair else {
            anyhow::bail!("flags take one value each; got {argv:?}");
        };
        match (flag.as_str(), value.as_str()) {
            ("--family", "gpt2") => a.family = Family::Gpt2,
            ("--family", "llama") => a.family = Family::Llama,
            ("--family", v) => anyhow::bail!("--family {v}: expected gpt2 or llama"),
            ("--subs", "all") => a.resid_only = false,
            ("--subs", "resid") => a.resid_only = true,
            ("--subs", v) => anyhow::bail!("--subs {v}: expected all or resid"),
            ("--gemm", "auto") => a.gemm = GemmChoice::Auto,
            ("--gemm", "faer") => a.gemm = GemmChoice::Faer,
            ("--gemm", "mkl") => a.gemm = GemmChoice::Mkl,
            ("--gemm", v) => anyhow::bail!("--gemm {v}: expected auto, faer or mkl"),
            _ => {}
        }
        if matches!(flag.as_str(), "--family" | "--subs" | "--gemm") {
            continue;
        }
        let v: usize = value
            .parse()
            .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--kv-heads" => a.kv_heads = Some(v),
            "--d-mlp" => a.d_mlp = Some(v),
            "--only-pass" => a.only_pass = v != 0,
            "--only-ig" => a.only_ig = v != 0,
            "--layers" => a.layers = v,
            "--d-model" => a.d_model = v,
            "--heads" => a.heads = v,
            "--vocab" => a.vocab = v,
            "--d-sae" => a.d_sae = v,
            "--k" => a.k = v,
            "--l0" => a.l0 = v,
            "--batch" => a.batch = v,
            "--seq" => a.seq = v,
            "--ig-steps" => a.ig_steps = v,
            "--edge-nodes" => a.edge_nodes = v,
            "--reps" => a.reps = v,
            "--diff-at" => a.diff_at = v,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // As the circuit stage does (crates/circuit/src/main.rs).
    circuitry_sae::keep_freed_memory();
    let a = parse()?;
    // CIRCUITRY_PANELS as the stage binaries read it (auto, avx2 or off).
    let panels_env = std::env::var(circuitry_models::gemm::panels::PANELS_ENV).ok();
    circuitry_models::gemm::panels::set_choice(panels_env.as_deref())
        .map_err(anyhow::Error::msg)?;
    let config = ModelConfig {
        family: a.family,
        n_layer: a.layers,
        d_model: a.d_model,
        n_head: a.heads,
        n_kv_head: a.kv_heads.unwrap_or(a.heads),
        d_mlp: a.d_mlp.unwrap_or(4 * a.d_model),
        vocab_size: a.vocab,
        n_ctx: 2048,
        norm_eps: 1e-5,
        rope_theta: (a.family == Family::Llama).then_some(100_000.0),
        attention_bias: a.family == Family::Gpt2,
        mlp_bias: a.family == Family::Gpt2,
    };
    let mkl = MklSettings::new(std::env::var_os(MKL_ENV), Default::default());
    let products = use_for_transformer(Backend::resolve(a.gemm, &mkl)?);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = Transformer::random(config, &mut rng)?;
    let mut list = Vec::new();
    for layer in 0..a.layers {
        let hooks = if a.resid_only {
            vec![HookPoint::ResidPre { layer }]
        } else {
            vec![
                HookPoint::ResidPre { layer },
                HookPoint::AttnOut { layer },
                HookPoint::MlpOut { layer },
            ]
        };
        for hook in hooks {
            let mut cfg = SaeConfig::new(a.d_model, a.d_sae, hook);
            if a.k > 0 {
                cfg.architecture = Architecture::TopK { k: a.k };
            }
            let mut sae = Sae::new_init(cfg, &mut rng);
            sae.w_enc.mapv_inplace(|v| v * 4.0);
            list.push(sae);
        }
    }
    anyhow::ensure!(
        a.diff_at < a.seq,
        "--diff-at {} must be below --seq {}",
        a.diff_at,
        a.seq
    );
    anyhow::ensure!(
        a.l0 == 0 || (a.k == 0 && a.l0 < a.d_sae),
        "--l0 {} needs ReLU SAEs (--k 0) and fewer than --d-sae {} latents",
        a.l0,
        a.d_sae
    );
    let clean = Array2::from_shape_fn((a.batch, a.seq), |_| rng.random_range(0..a.vocab as u32));
    if a.l0 > 0 {
        // The encoder bias at minus the (1 − l0/d_sae) quantile of each SAE's
        // pre-activations on these prompts (the forward's activations at its hook: the
        // spliced model computes the same ones), so about l0 latents fire per token.
        let hooks: Vec<HookPoint> = list.iter().map(|s| s.cfg.hook_name).collect();
        let out = model.run(&Forward::tokens(clean.view()).capture(&hooks))?;
        let mut active = 0;
        for sae in &mut list {
            let x = &out.hooks[&sae.cfg.hook_name];
            let rows = x.to_shape((a.batch * a.seq, a.d_model))?;
            let mut pre: Vec<f32> = sae.encode_pre(rows.view()).into_iter().collect();
            let at = pre.len() - pre.len() * a.l0 / a.d_sae;
            let (_, &mut t, _) = pre.select_nth_unstable_by(at, f32::total_cmp);
            sae.b_enc -= t;
            let f = sae.encode(rows.view());
            active += f.iter().filter(|&&v| v != 0.0).count();
        }
        println!(
            "ReLU SAEs with about {} active latents per token (measured: {:.1} on average)",
            a.l0,
            active as f64 / (list.len() * a.batch * a.seq) as f64
        );
    }
    let list = list
        .into_iter()
        .map(Submodule::new)
        .collect::<Result<Vec<_>, _>>()?;
    let subs = Submodules::new(list, a.d_model, a.layers)?;
    let mut patch = clean.clone();
    for b in 0..a.batch {
        patch[[b, a.diff_at]] = rng.random_range(0..a.vocab as u32);
    }
    let batch = PairBatch {
        examples: (0..a.batch as u32).collect(),
        clean: clean.clone(),
        patch,
        clean_answer: (0..a.batch)
            .map(|_| rng.random_range(0..a.vocab as u32))
            .collect(),
        patch_answer: (0..a.batch)
            .map(|_| rng.random_range(0..a.vocab as u32))
            .collect(),
        cases: vec!["singular".into(); a.batch],
    };
    let max_rows = 1 << 20;
    let method = Method::IntegratedGradients { steps: a.ig_steps };
    // IG node effects of the batch: prepare (clean forward + backward, patch forward,
    // every SAE encoded) and one spliced pass per submodule over all steps at once.
    let time_ig = || -> anyhow::Result<(f64, _)> {
        let t = Instant::now();
        let prep = prepare(&model, &subs, &batch)?;
        let effects = node_effects(&model, &subs, &batch, &prep, method, max_rows)?;
        Ok((t.elapsed().as_secs_f64(), (prep, effects)))
    };
    if a.only_ig {
        time_ig()?; // warm-up, as the peer
        let mut ig = Vec::new();
        for _ in 0..a.reps {
            ig.push(time_ig()?.0);
        }
        let ig = median(ig);
        println!(
            "IG node effects ({} steps, prepare included): {ig:.4} s per batch, {:.4} s per example (median of {})",
            a.ig_steps,
            ig / a.batch as f64,
            a.reps
        );
        return Ok(());
    }
    println!(
        "random {}: {} layers, d_model {}, vocab {}; {} SAEs of {} latents; batch {} × {} tokens; RAYON_NUM_THREADS={}; products: {products}",
        a.family,
        a.layers,
        a.d_model,
        a.vocab,
        subs.len(),
        a.d_sae,
        a.batch,
        a.seq,
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into())
    );

    // The unit: one forward (with trace) + backward from the last position's logits.
    let mut unit = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        let out = model.run(&Forward::tokens(clean.view()).trace(true))?;
        let logits = out.logits.as_ref().map(|l| l.dim()).unwrap_or_default();
        let mut d = Array3::<f32>::zeros(logits); // (batch, seq, vocab)
        for b in 0..a.batch {
            d[[b, a.seq - 1, 0]] = 1.0;
        }
        let trace = out
            .trace
            .ok_or_else(|| anyhow::anyhow!("no trace from the forward pass"))?;
        let want = [HookPoint::ResidPre { layer: 0 }];
        model.backward(&trace, &Backward::from_logits(d.view()).want(&want))?;
        unit.push(t.elapsed().as_secs_f64());
    }
    let unit = median(unit);

    // The spliced pass: forward capturing every SAE's hook, metric, backward to the
    // hooks, encode each hook and take the gradient at its features (∂m/∂x · W_decᵀ);
    // the gradient at the error term is ∂m/∂x itself.
    let hooks = subs.hooks();
    let answers: Vec<(u32, u32)> = batch
        .clean_answer
        .iter()
        .copied()
        .zip(batch.patch_answer.iter().copied())
        .collect();
    let ids = circuitry_circuit::gpt2::answer_ids(&answers, answers.len());
    let mut spliced = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        let out = model.run(
            &Forward::tokens(clean.view())
                .capture(&hooks)
                .logits_of(ids.view())
                .trim_last_block(hooks.iter().all(|&h| model.kept_by_trim(h)))
                .trace(true),
        )?;
        let logits = out
            .logits
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no logits"))?;
        let (_metric, d_logits) = circuitry_circuit::gpt2::answer_diff(logits.view());
        let trace = out
            .trace
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no trace from the forward pass"))?;
        let grads = model.backward(trace, &Backward::from_logits(d_logits.view()).want(&hooks))?;
        let mut check = 0.0f32;
        for sub in subs.all() {
            let x = &out.hooks[&sub.hook];
            let enc = sub.encode(x.view())?;
            let g = sub.feature_grad_at(grads[&sub.hook].view(), enc.f.view());
            check += g.sum() + enc.f.sum();
        }
        std::hint::black_box(check);
        spliced.push(t.elapsed().as_secs_f64());
    }
    let spliced = median(spliced);
    println!(
        "spliced pass (forward + backward, gradients at every feature and error): {spliced:.4} s per batch (median of {})",
        a.reps
    );
    if a.only_pass {
        return Ok(());
    }

    let mut ig = Vec::new();
    let mut last = None;
    for _ in 0..a.reps {
        let (t, out) = time_ig()?;
        ig.push(t);
        last = Some(out);
    }
    let ig = median(ig);
    let (prep, effects) = last.ok_or_else(|| anyhow::anyhow!("--reps must be ≥ 1"))?;

    // A circuit: the strongest features by |effect| summed over the batch and positions,
    // `edge_nodes` of them spread over the submodules, plus every error node.
    let mut scored: Vec<(f32, NodeRef)> = Vec::new();
    for (s, f) in effects.feat.iter().enumerate() {
        let total = f.sum_axis(ndarray::Axis(0)).sum_axis(ndarray::Axis(0)); // (d_sae)
        for (i, v) in total.iter().enumerate() {
            scored.push((
                v.abs(),
                NodeRef {
                    sub: s,
                    position: None,
                    feature: Some(i),
                },
            ));
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut nodes: Vec<NodeRef> = scored.iter().take(a.edge_nodes).map(|x| x.1).collect();
    nodes.extend((0..subs.len()).map(|s| NodeRef {
        sub: s,
        position: None,
        feature: None,
    }));
    nodes.sort();
    let downstream = nodes.iter().filter(|n| n.sub > 0).count() + 1; // + the metric
    let mut edges = Vec::new();
    let mut n_edges = 0;
    for _ in 0..a.reps {
        let mut sums = EdgeSums::new();
        let state = BatchState {
            batch: &batch,
            prep: &prep,
            grad: &effects.grad,
        };
        let t = Instant::now();
        add_edges(&model, &subs, state, &nodes, max_rows, &mut sums)?;
        edges.push(t.elapsed().as_secs_f64());
        n_edges = sums.len();
    }
    let edges = median(edges);

    let ig_passes = 1.5 + (subs.len() * a.ig_steps) as f64;
    let per_ex = |t: f64| t / a.batch as f64;
    println!(
        "one forward+backward pass: {:.3} s per batch ({:.3} s per example)",
        unit,
        per_ex(unit)
    );
    println!(
        "IG node effects ({} steps): {:.2} s per batch, {:.3} s per example = {:.2} × the {:.1} passes it needs (goal ≤ 1.5)",
        a.ig_steps,
        ig,
        per_ex(ig),
        ig / (unit * ig_passes),
        ig_passes
    );
    println!(
        "edges among {} nodes ({} downstream incl. the metric, {} edges): {:.2} s per batch, {:.3} s per example = {:.2} × the {} passes it needs (goal ≤ 1.5)",
        nodes.len(),
        downstream,
        n_edges,
        edges,
        per_ex(edges),
        edges / (unit * downstream as f64),
        downstream
    );
    Ok(())
}
