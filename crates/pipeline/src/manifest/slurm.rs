//! The manifest's optional `[slurm]` table: default job resources, and per-stage
//! overrides under `[slurm.stage.<name>]` (which may also split a stage into a job
//! array). Only `circuitry submit` uses it; `circuitry run` validates it and ignores it.
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::kinds::Split;
use crate::Location;

/// Resources of a Slurm job, as sbatch flags. Every field is optional; a field left
/// out is not passed, so the cluster's default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmResources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time`, in one of Slurm's formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`,
    /// `D-HH:MM`, `D-HH:MM:SS`.
    pub time: Option<String>,
    /// `--cpus-per-task`, at least 1.
    pub cpus_per_task: Option<u32>,
    /// `--mem`: a number with an optional unit `K`, `M` (the default), `G` or `T`.
    pub mem: Option<String>,
    /// `--gres`, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// More sbatch flags, each one word such as `--qos=short`. A stage's `extra`
    /// is appended to the defaults' `extra`.
    pub extra: Option<Vec<String>>,
}

/// `[slurm.stage.<name>]`: a stage's resource overrides and how to split it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageSlurmRaw {
    pub(crate) partition: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) cpus_per_task: Option<u32>,
    pub(crate) mem: Option<String>,
    pub(crate) gres: Option<String>,
    pub(crate) account: Option<String>,
    pub(crate) extra: Option<Vec<String>>,
    /// `dump` and `circuit` stages: run as arrays of this many parts (`--part I/N`;
    /// a circuit's three rounds as three arrays in turn), then the plain command
    /// assembles them.
    pub(crate) parts: Option<usize>,
    /// `train-sae` stages: one array task per hook (`--only-hook H`), then the
    /// plain command writes the stage record.
    pub(crate) per_hook: Option<bool>,
    /// Where the value of `mem` stands in the manifest (set after parsing).
    #[serde(skip)]
    pub(crate) mem_at: Option<Location>,
}

impl StageSlurmRaw {
    pub(crate) fn resources(&self) -> SlurmResources {
        SlurmResources {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus_per_task: self.cpus_per_task,
            mem: self.mem.clone(),
            gres: self.gres.clone(),
            account: self.account.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// How `circuitry submit` runs one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayPlan {
    /// One job running the stage's command.
    Single,
    /// `rounds` job arrays of `n` tasks, each after the one before, task `i` running
    /// the stage's command plus `--part i/n`, then one job running the plain command,
    /// which assembles the parts.
    Parts {
        /// Number of parts.
        n: usize,
        /// Number of arrays.
        rounds: usize,
    },
    /// A job array, task `i` running the stage's command plus `flag values[i]`, then
    /// one job running the plain command.
    Each {
        /// The flag, e.g. `--only-hook`.
        flag: &'static str,
        /// One value per task.
        values: Vec<String>,
    },
}

/// The validated `[slurm]` table.
#[derive(Debug, Clone, Default)]
pub struct SlurmConfig {
    pub(crate) defaults: SlurmResources,
    /// Where the defaults' `mem` value stands in the manifest.
    pub(crate) defaults_mem_at: Option<Location>,
    pub(crate) stages: BTreeMap<String, StageSlurmRaw>,
}

/// The memory a stage's Slurm jobs ask for (`mem`), and where the manifest says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMemory {
    /// In bytes, read as Slurm reads `--mem`.
    pub bytes: u64,
    /// As written, e.g. `32G`.
    pub text: String,
    /// The table that sets it: `[slurm.stage.NAME]` or `[slurm]`.
    pub table: String,
    /// Where its value stands in the manifest.
    pub at: Option<Location>,
}

impl SlurmConfig {
    /// The resources of stage `name`: its overrides over the defaults (a stage's
    /// `extra` flags come after the defaults' ones).
    pub fn resources(&self, name: &str) -> SlurmResources {
        let mut r = self.defaults.clone();
        let Some(stage) = self.stages.get(name) else {
            return r;
        };
        let o = stage.resources();
        r.partition = o.partition.or(r.partition);
        r.time = o.time.or(r.time);
        r.cpus_per_task = o.cpus_per_task.or(r.cpus_per_task);
        r.mem = o.mem.or(r.mem);
        r.gres = o.gres.or(r.gres);
        r.account = o.account.or(r.account);
        r.extra = match (r.extra, o.extra) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            (a, b) => b.or(a),
        };
        r
    }

    /// The memory each Slurm job of stage `name` asks for: its `mem`, else the
    /// defaults' one. `None` when neither is set, or when it is `0` (Slurm's "all
    /// of the node's memory", which is not known before the job runs).
    pub fn memory(&self, name: &str) -> Option<JobMemory> {
        let (text, table, at) = match self.stages.get(name) {
            Some(StageSlurmRaw {
                mem: Some(m),
                mem_at,
                ..
            }) => (m, format!("[slurm.stage.{name}]"), mem_at.clone()),
            _ => (
                self.defaults.mem.as_ref()?,
                "[slurm]".to_string(),
                self.defaults_mem_at.clone(),
            ),
        };
        let bytes = mem_bytes(text).filter(|&b| b > 0)?;
        Some(JobMemory {
            bytes,
            text: text.clone(),
            table,
            at,
        })
    }

    /// How stage `name`, whose kind can be split as `split`, is submitted.
    pub(crate) fn array_plan(&self, name: &str, split: Option<Split>) -> ArrayPlan {
        let Some(stage) = self.stages.get(name) else {
            return ArrayPlan::Single;
        };
        match (split, stage.parts, stage.per_hook) {
            (Some(Split::Parts { rounds }), Some(n), _) if n > 1 => ArrayPlan::Parts { n, rounds },
            (Some(Split::Each { flag, values }), _, Some(true)) if !values.is_empty() => {
                ArrayPlan::Each { flag, values }
            }
            _ => ArrayPlan::Single,
        }
    }
}

/// sbatch flags that `circuitry submit` sets itself and `extra` may not repeat.
pub(crate) const RESERVED_FLAGS: &[&str] = &[
    "--array",
    "--dependency",
    "--kill-on-invalid-dep",
    "--parsable",
    "--output",
    "--error",
    "--job-name",
    "--chdir",
    "--wrap",
    "-o",
    "-e",
    "-J",
    "-d",
    "-a",
    "-D",
];

/// Why a resource value is invalid: `(problem, fix)`.
pub(crate) type Rejection = (String, String);

/// Check one resource key's value.
pub(crate) fn check_resources(r: &SlurmResources) -> Result<(), (&'static str, Rejection)> {
    for (field, value) in [
        ("partition", &r.partition),
        ("account", &r.account),
        ("gres", &r.gres),
    ] {
        if let Some(v) = value {
            one_word(v).map_err(|e| (field, e))?;
        }
    }
    if let Some(t) = &r.time {
        check_time(t).map_err(|e| ("time", e))?;
    }
    if let Some(m) = &r.mem {
        check_mem(m).map_err(|e| ("mem", e))?;
    }
    if r.cpus_per_task == Some(0) {
        return Err((
            "cpus_per_task",
            (
                "must be at least 1, got 0".into(),
                "set `cpus_per_task` to the number of CPUs the stage uses, e.g. 4".into(),
            ),
        ));
    }
    for flag in r.extra.iter().flatten() {
        check_extra(flag).map_err(|e| ("extra", e))?;
    }
    Ok(())
}

fn one_word(v: &str) -> Result<(), Rejection> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            format!("{v:?} must be one non-empty word without spaces"),
            "write the value as Slurm spells it, e.g. \"gpu\" or \"gpu:1\"".into(),
        ));
    }
    Ok(())
}

/// Slurm's time formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`
/// (or `UNLIMITED` / `INFINITE`).
pub(crate) fn check_time(t: &str) -> Result<(), Rejection> {
    let bad = || {
        Err((
            format!("{t:?} is not a Slurm time limit"),
            "write minutes (\"90\"), \"HH:MM:SS\" (\"01:30:00\") or \"D-HH:MM:SS\" (\"1-12:00:00\")"
                .into(),
        ))
    };
    if matches!(t, "UNLIMITED" | "INFINITE") {
        return Ok(());
    }
    let number = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    let below_60 = |s: &str| s.parse::<u32>().is_ok_and(|v| v < 60);
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    if days.is_some_and(|d| !number(d)) {
        return bad();
    }
    let parts: Vec<&str> = clock.split(':').collect();
    if !parts.iter().all(|p| number(p)) {
        return bad();
    }
    let ok = match (days.is_some(), parts.as_slice()) {
        (false, [_]) => true,                                                 // MM
        (false, [_, s]) => below_60(s),                                       // MM:SS
        (false, [_, m, s]) | (true, [_, m, s]) => below_60(m) && below_60(s), // [D-]HH:MM:SS
        (true, [_]) => true,                                                  // D-HH
        (true, [_, m]) => below_60(m),                                        // D-HH:MM
        _ => false,
    };
    let all_zero = parts.iter().all(|p| p.chars().all(|c| c == '0'))
        && days.is_none_or(|d| d.chars().all(|c| c == '0'));
    if !ok {
        return bad();
    }
    if all_zero {
        return Err((
            format!("{t:?} is a time limit of zero"),
            "give the stage some time, e.g. \"01:00:00\"".into(),
        ));
    }
    Ok(())
}

/// `--mem`: digits and an optional unit K, M, G or T.
pub(crate) fn check_mem(m: &str) -> Result<(), Rejection> {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
    let unit_len = m.len() - digits.len();
    if digits.is_empty() || unit_len > 1 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err((
            format!("{m:?} is not a Slurm memory size"),
            "write a number with an optional unit K, M (the default), G or T, e.g. \"16G\"".into(),
        ));
    }
    Ok(())
}

/// Bytes of a `--mem` value checked by [`check_mem`], in Slurm's units: `K`, `M`
/// (the default), `G`, `T`, each 1024 times the one before (saturating).
pub(crate) fn mem_bytes(m: &str) -> Option<u64> {
    let (digits, shift) = match m.chars().last()? {
        'K' => (&m[..m.len() - 1], 10),
        'M' => (&m[..m.len() - 1], 20),
        'G' => (&m[..m.len() - 1], 30),
        'T' => (&m[..m.len() - 1], 40),
        _ => (m, 20),
    };
    let n: u64 = digits.parse().ok()?;
    Some(n.saturating_mul(1u64 << shift))
}

fn check_extra(flag: &str) -> Result<(), Rejection> {
    if !flag.starts_with('-') || flag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err((
            format!("{flag:?} is not one sbatch flag"),
            "write each flag as one word with its value after `=`, e.g. extra = [\"--qos=short\"]"
                .into(),
        ));
    }
    let name = flag.split_once('=').map_or(flag, |(n, _)| n);
    let reserved = RESERVED_FLAGS.contains(&name)
        || (name.len() > 2
            && RESERVED_FLAGS
                .iter()
                .any(|r| r.len() == 2 && name.starts_with(r)));
    if reserved {
        return Err((
            format!("{name} is set by `circuitry submit` itself"),
            format!(
                "remove it from `extra`; submit sets {} (logs go to RUN_DIR/slurm/logs/)",
                RESERVED_FLAGS.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        for good in [
            "30",
            "30:00",
            "01:30:00",
            "1-12",
            "1-12:30",
            "1-12:30:00",
            "UNLIMITED",
            "600",
        ] {
            assert!(check_time(good).is_ok(), "{good}");
        }
        for bad in [
            "", "1h", "01:60:00", "1:2:3:4", "-1", "1-", "a-01", "00:00:00", "0", "12:61",
        ] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes() {
        for good in ["16G", "512", "4000M", "1T"] {
            assert!(check_mem(good).is_ok(), "{good}");
        }
        for bad in ["", "G", "16GB", "1.5G", "16 G"] {
            assert!(check_mem(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_sizes_in_bytes_as_slurm_reads_them() {
        assert_eq!(mem_bytes("64G"), Some(64 << 30));
        assert_eq!(mem_bytes("500M"), Some(500 << 20));
        assert_eq!(mem_bytes("500"), Some(500 << 20), "a plain number is MB");
        assert_eq!(mem_bytes("1T"), Some(1 << 40));
        assert_eq!(mem_bytes("2048K"), Some(2 << 20));
        assert_eq!(mem_bytes("99999999999999T"), Some(u64::MAX));
        assert_eq!(mem_bytes("G"), None);
    }

    #[test]
    fn job_memory_is_the_stages_else_the_defaults() {
        let mut cfg = SlurmConfig {
            defaults: SlurmResources {
                mem: Some("64G".into()),
                ..SlurmResources::default()
            },
            ..SlurmConfig::default()
        };
        cfg.stages.insert(
            "saes".into(),
            StageSlurmRaw {
                mem: Some("32G".into()),
                ..StageSlurmRaw::default()
            },
        );
        cfg.stages.insert(
            "all".into(),
            StageSlurmRaw {
                mem: Some("0".into()),
                ..StageSlurmRaw::default()
            },
        );
        let saes = cfg.memory("saes").unwrap();
        assert_eq!(
            (saes.bytes, saes.table.as_str()),
            (32 << 30, "[slurm.stage.saes]")
        );
        let acts = cfg.memory("acts").unwrap();
        assert_eq!((acts.bytes, acts.text.as_str()), (64 << 30, "64G"));
        assert_eq!(acts.table, "[slurm]");
        assert_eq!(
            cfg.memory("all"),
            None,
            "mem = 0: the whole node, size unknown"
        );
        assert_eq!(SlurmConfig::default().memory("acts"), None);
    }

    #[test]
    fn extra_flags() {
        assert!(check_extra("--qos=short").is_ok());
        assert!(check_extra("--exclusive").is_ok());
        assert!(check_extra("qos=short").is_err());
        assert!(check_extra("--comment=a b").is_err());
        assert!(check_extra("--dependency=afterok:1").is_err());
        assert!(check_extra("-ofile").is_err());
        assert!(check_extra("--output=x").is_err());
    }

    #[test]
    fn stage_overrides_defaults_and_appends_extra() {
        let mut cfg = SlurmConfig {
            defaults: SlurmResources {
                partition: Some("cpu".into()),
                time: Some("10".into()),
                extra: Some(vec!["--qos=a".into()]),
                ..SlurmResources::default()
            },
            ..SlurmConfig::default()
        };
        cfg.stages.insert(
            "x".into(),
            StageSlurmRaw {
                partition: Some("gpu".into()),
                extra: Some(vec!["--exclusive".into()]),
                ..StageSlurmRaw::default()
            },
        );
        let r = cfg.resources("x");
        assert_eq!(r.partition.as_deref(), Some("gpu"));
        assert_eq!(r.time.as_deref(), Some("10"));
        assert_eq!(r.extra, Some(vec!["--qos=a".into(), "--exclusive".into()]));
        assert_eq!(cfg.resources("y").partition.as_deref(), Some("cpu"));
    }
}
