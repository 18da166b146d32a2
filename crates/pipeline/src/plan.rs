//! The plan: every stage with its freshness and command, before anything runs.
//! Both the local runner and a scheduler backend start from it.
use std::fmt;

use crate::freshness::{Checker, Upstream};
use crate::{Error, Freshness, Pipeline, Result, StageCommand, StaleReason};

/// One stage of a [`Plan`].
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// The stage's name.
    pub name: String,
    /// Whether it needs to run, and why.
    pub freshness: Freshness,
    /// What would run.
    pub command: StageCommand,
}

/// Every stage of a pipeline, in dependency order, with its freshness.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stages.
    pub stages: Vec<PlannedStage>,
}

impl Plan {
    /// Decide each stage's freshness from its `stage.json`. Stages named in `force`
    /// are stale; stages downstream of a stale stage are stale (when run, they are
    /// re-checked against the upstream stage's new outputs; see the crate docs).
    pub fn new(pipeline: &Pipeline, force: &[String]) -> Result<Plan> {
        let forced = forced_stages(pipeline, force)?;
        Plan::build(pipeline, &forced, &mut Checker::new(pipeline))
    }

    pub(crate) fn build(
        pipeline: &Pipeline,
        forced: &[bool],
        checker: &mut Checker<'_>,
    ) -> Result<Plan> {
        let mut states = Vec::with_capacity(pipeline.stages().len());
        let mut stages = Vec::with_capacity(pipeline.stages().len());
        for (i, stage) in pipeline.stages().iter().enumerate() {
            let freshness = checker.assess(i, &states, forced[i])?;
            states.push(if freshness.is_fresh() {
                Upstream::Fresh
            } else {
                Upstream::Stale
            });
            stages.push(PlannedStage {
                name: stage.name().to_string(),
                freshness,
                command: pipeline.command(stage),
            });
        }
        Ok(Plan { stages })
    }

    /// True when no stage needs to run.
    pub fn is_fresh(&self) -> bool {
        self.stages.iter().all(|s| s.freshness.is_fresh())
    }

    /// The stages that need to run.
    pub fn stale(&self) -> impl Iterator<Item = &PlannedStage> {
        self.stages.iter().filter(|s| !s.freshness.is_fresh())
    }
}

impl fmt::Display for Plan {
    /// One line per stage: `name  fresh` or `name  stale: reasons`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for stage in &self.stages {
            writeln!(f, "  {:width$}  {}", stage.name, stage.freshness)?;
        }
        let stale = self.stale().count();
        write!(f, "{} fresh, {stale} stale", self.stages.len() - stale)?;
        let waits_on_upstream = |s: &&PlannedStage| {
            matches!(&s.freshness, Freshness::Stale(reasons)
                if reasons.iter().all(|r| matches!(r, StaleReason::UpstreamStale { .. })))
        };
        if self.stale().any(|s| waits_on_upstream(&s)) {
            f.write_str(
                " (a stage stale only because of an upstream stage is re-run only if that \
                 stage's outputs change)",
            )?;
        }
        Ok(())
    }
}

/// `force[i]` is true when stage `i` is named in `names`.
pub(crate) fn forced_stages(pipeline: &Pipeline, names: &[String]) -> Result<Vec<bool>> {
    let mut forced = vec![false; pipeline.stages().len()];
    for name in names {
        let index = pipeline
            .stage_index(name)
            .ok_or_else(|| Error::UnknownForcedStage {
                stage: name.clone(),
                stages: pipeline
                    .stages()
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect(),
            })?;
        forced[index] = true;
    }
    Ok(forced)
}
