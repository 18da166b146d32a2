//! How well a method's node effects agree with exact activation patching: Pearson r
//! over nodes (mean effects) and over single (pair, position, node) entries.
use circuitry_models::transformer::Transformer;

use super::discover::{analyse, pearson, Analysis};
use super::nodes::Method;
use super::pairs::PairBatch;
use super::splice::Submodules;
use super::stage::Gpt2StageConfig;
use crate::Result;

/// Agreement of a method with exact patching.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExactAgreement {
    /// Pearson r over the nodes' mean effects (aggregated as configured), over the
    /// nodes where either effect is non-zero.
    pub nodes: f64,
    /// Pearson r over single (pair, position, node) effects, where either is non-zero.
    pub entries: f64,
    /// Pairs compared.
    pub pairs: usize,
}

/// Compare `cfg.method` with exact patching on the first `n` pairs of `batches`.
pub fn compare(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    cfg: &Gpt2StageConfig,
    n: usize,
) -> Result<ExactAgreement> {
    let mut subset = Vec::new();
    let mut left = n;
    for b in batches {
        if left == 0 {
            break;
        }
        let k = b.len().min(left);
        subset.push(b.slice(0..k));
        left -= k;
    }
    let ours = analyse(model, subs, &subset, cfg.method, cfg.max_rows)?;
    let exact = analyse(model, subs, &subset, Method::Exact, cfg.max_rows)?;
    Ok(agreement(&ours, &exact, cfg.aggregation))
}

/// Pearson r between two analyses of the same pairs.
pub fn agreement(
    ours: &Analysis,
    exact: &Analysis,
    aggregation: super::discover::Aggregation,
) -> ExactAgreement {
    let (a, b): (Vec<f64>, Vec<f64>) = ours
        .scored_nodes(aggregation)
        .iter()
        .zip(exact.scored_nodes(aggregation))
        .filter(|(x, y)| x.effect != 0.0 || y.effect != 0.0)
        .map(|(x, y)| (x.effect, y.effect))
        .unzip();
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    for (x, y) in ours.effects.iter().zip(&exact.effects) {
        for s in 0..x.feat.len() {
            for (u, v) in x.feat[s]
                .iter()
                .zip(&y.feat[s])
                .chain(x.err[s].iter().zip(&y.err[s]))
            {
                if *u != 0.0 || *v != 0.0 {
                    ea.push(f64::from(*u));
                    eb.push(f64::from(*v));
                }
            }
        }
    }
    ExactAgreement {
        nodes: pearson(&a, &b),
        entries: pearson(&ea, &eb),
        pairs: ours.n_examples,
    }
}
