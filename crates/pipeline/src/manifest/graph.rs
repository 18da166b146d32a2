//! The stage graph: a stable topological order, or a cycle.

/// `upstream[i]` lists the stages stage `i` depends on, each with the manifest key
/// that makes the reference.
pub(crate) type Edges = Vec<Vec<(&'static str, usize)>>;

/// Stages ordered so that every stage comes after the stages it depends on; among
/// stages whose dependencies are met the one written first in the manifest goes
/// first, so a manifest written in order runs in that order.
///
/// On a cycle, returns its edges: `(stage, key)` pairs where stage's `key`
/// refers to the next pair's stage, and the last refers to the first.
pub(crate) fn topological_order(
    upstream: &Edges,
) -> Result<Vec<usize>, Vec<(usize, &'static str)>> {
    let n = upstream.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while let Some(next) =
        (0..n).find(|&i| !placed[i] && upstream[i].iter().all(|&(_, dep)| placed[dep]))
    {
        placed[next] = true;
        order.push(next);
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every unplaced stage has an unplaced dependency: walking those must loop.
    let mut position = vec![None; n];
    let mut path: Vec<(usize, &'static str)> = Vec::new();
    let mut at = (0..n).find(|&i| !placed[i]).unwrap_or(0);
    loop {
        if let Some(start) = position[at] {
            return Err(path.split_off(start));
        }
        let Some(&(field, dep)) = upstream[at].iter().find(|&&(_, dep)| !placed[dep]) else {
            // Unreachable: a stage with all dependencies placed would have been placed.
            return Err(path);
        };
        position[at] = Some(path.len());
        path.push((at, field));
        at = dep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_manifest_order_when_possible() {
        // 0 depends on 2, 1 depends on nothing, 2 on 1.
        let edges: Edges = vec![vec![("a", 2)], vec![], vec![("b", 1)]];
        assert_eq!(topological_order(&edges), Ok(vec![1, 2, 0]));
    }

    #[test]
    fn finds_a_cycle_behind_a_chain() {
        // 0 -> 1 -> 2 -> 1
        let edges: Edges = vec![vec![("x", 1)], vec![("y", 2)], vec![("z", 1)]];
        assert_eq!(topological_order(&edges), Err(vec![(1, "y"), (2, "z")]));
    }

    #[test]
    fn self_reference_is_a_cycle() {
        let edges: Edges = vec![vec![("m", 0)]];
        assert_eq!(topological_order(&edges), Err(vec![(0, "m")]));
    }
}
