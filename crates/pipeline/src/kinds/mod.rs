//! Stage kinds: for each, the manifest parameters and the command line of its binary.
//!
//! A kind is a raw parameter struct deserialised with unknown keys denied (its
//! field names are the binary's flags in snake_case), a [`ParamGuard::check`] that
//! validates it into a [`StageParams`], and [`StageParams::write_args`], which writes
//! the binary's arguments. Adding a kind is local: a new module here with those three
//! pieces, and one line in `KINDS` (this module).
use std::fmt;

use serde::de::DeserializeOwned;
use toml::de::ValueDeserializer;

use crate::Input;

mod circuit;
mod circuit_toy;
mod dump;
mod dump_toy;
mod train_sae;
mod train_toy;

pub use circuit::{Circuit, CircuitAblation, CircuitAggregation, CircuitMethod, CircuitParams};
pub use circuit_toy::{CircuitToy, CircuitToyParams};
pub use dump::{Dump, DumpParams, StoreDtype};
pub use dump_toy::{DumpToy, DumpToyParams, NounSet};
pub use train_sae::{SaeArchitecture, SaeGemm, TrainSae, TrainSaeParams};
pub use train_toy::{TrainToy, TrainToyParams};

/// Every stage kind a manifest may name, in the order they are listed to users.
pub(crate) const KINDS: &[Kind] = &[
    Kind::of::<TrainToyParams>(),
    Kind::of::<DumpToyParams>(),
    Kind::of::<DumpParams>(),
    Kind::of::<TrainSaeParams>(),
    Kind::of::<CircuitToyParams>(),
    Kind::of::<CircuitParams>(),
];

/// A validated stage configuration: what one stage runs. Built only by
/// [`ParamGuard::check`], so a value of this type has passed validation.
pub trait StageParams: fmt::Debug + Send + Sync {
    /// The kind's name in manifests, e.g. `train-sae`.
    fn kind(&self) -> &'static str;
    /// The binary that runs the stage, e.g. `circuitry-train-sae`.
    fn program(&self) -> &'static str;
    /// The stage's inputs, by manifest key (`@stage` references are dependency edges).
    fn inputs(&self) -> Vec<(&'static str, &Input)>;
    /// Write the binary's arguments (everything after the program name).
    fn write_args(&self, args: &mut ArgsBuilder<'_>);
    /// Whether the stage can run as a Slurm job array (`circuitry submit`): `None`
    /// (the default) when it cannot.
    fn split(&self) -> Option<Split> {
        None
    }
}

/// How a stage's work can be split into the tasks of a Slurm job array. The array's
/// tasks run the stage's command plus a task flag and do not write `stage.json`;
/// then the stage's plain command runs, finds the tasks' work done, finishes it and
/// writes `stage.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// `--part I/N`: a deterministic partition into N contiguous parts; N is chosen
    /// in the manifest (`[slurm.stage.NAME] parts = N`).
    Parts,
    /// One task per value: the task adds `flag value` (e.g. `--only-hook H`).
    Each {
        /// The flag.
        flag: &'static str,
        /// The values, one task each.
        values: Vec<String>,
    },
}

/// A raw parameter struct as written in a manifest, which [`check`](ParamGuard::check)
/// validates into the kind's [`StageParams`] (linfa's `ParamGuard` pattern).
pub trait ParamGuard: DeserializeOwned {
    /// The kind's name in manifests.
    const KIND: &'static str;
    /// The validated configuration.
    type Checked: StageParams + 'static;
    /// Validate ranges and combinations of values.
    fn check(self) -> Result<Self::Checked, Invalid>;
}

/// Why [`ParamGuard::check`] rejected a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The manifest key.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl Invalid {
    /// A rejected value of `field`.
    pub fn new(field: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Invalid {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// An entry of the kind registry: the name and how to parse and check its parameters.
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) parse: fn(ValueDeserializer<'_>) -> Result<Box<dyn StageParams>, KindError>,
}

impl Kind {
    const fn of<P: ParamGuard>() -> Kind {
        Kind {
            name: P::KIND,
            parse: parse_checked::<P>,
        }
    }
}

/// Why a stage's parameters were rejected.
pub(crate) enum KindError {
    /// Unknown key, wrong type or missing key.
    Toml(toml::de::Error),
    /// A value out of range.
    Invalid(Invalid),
}

fn parse_checked<P: ParamGuard>(
    de: ValueDeserializer<'_>,
) -> Result<Box<dyn StageParams>, KindError> {
    let raw = P::deserialize(de).map_err(KindError::Toml)?;
    let checked = raw.check().map_err(KindError::Invalid)?;
    Ok(Box::new(checked))
}

/// The registry entry of kind `name`.
pub(crate) fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names of all kinds.
pub(crate) fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// Builds a stage binary's argument list. Paths are written as the runner passes
/// them: relative to the manifest's directory, the stage's working directory.
pub struct ArgsBuilder<'a> {
    argv: Vec<String>,
    out: &'a str,
    resolve: &'a dyn Fn(&Input) -> String,
}

impl<'a> ArgsBuilder<'a> {
    pub(crate) fn new(out: &'a str, resolve: &'a dyn Fn(&Input) -> String) -> Self {
        ArgsBuilder {
            argv: Vec::new(),
            out,
            resolve,
        }
    }

    pub(crate) fn finish(self) -> Vec<String> {
        self.argv
    }

    /// A bare word, e.g. a subcommand (`toy`).
    pub fn word(&mut self, word: &str) -> &mut Self {
        self.argv.push(word.to_string());
        self
    }

    /// `--out DIR`: the stage's output directory.
    pub fn out(&mut self) -> &mut Self {
        self.argv.push("--out".into());
        self.argv.push(self.out.to_string());
        self
    }

    /// `FLAG PATH` for an input.
    pub fn input(&mut self, flag: &str, input: &Input) -> &mut Self {
        self.argv.push(flag.to_string());
        self.argv.push((self.resolve)(input));
        self
    }

    /// `FLAG VALUE`.
    pub fn value(&mut self, flag: &str, value: impl fmt::Display) -> &mut Self {
        self.argv.push(flag.to_string());
        self.argv.push(value.to_string());
        self
    }

    /// `FLAG VALUE` when the manifest gives the value; nothing otherwise, so the
    /// binary's own default applies.
    pub fn opt<T: fmt::Display>(&mut self, flag: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.value(flag, v);
        }
        self
    }
}

/// Counts must be at least 1.
pub(crate) fn positive(field: &'static str, value: Option<usize>) -> Result<(), Invalid> {
    match value {
        Some(0) => Err(Invalid::new(
            field,
            "must be at least 1, got 0",
            format!("set `{field}` to a positive integer"),
        )),
        _ => Ok(()),
    }
}

/// Rates and scales must be finite and greater than 0.
pub(crate) fn positive_real(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(Invalid::new(
            field,
            format!("must be a finite number greater than 0, got {v}"),
            format!("set `{field}` to a positive number, e.g. 0.001"),
        )),
        _ => Ok(()),
    }
}

/// Coefficients and noise levels must be finite and at least 0.
pub(crate) fn non_negative_real(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(Invalid::new(
            field,
            format!("must be a finite number at least 0, got {v}"),
            format!("set `{field}` to 0 or a positive number"),
        )),
        _ => Ok(()),
    }
}

/// Fractions of a dataset held out must lie in [0, 1).
pub(crate) fn fraction(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(0.0..1.0).contains(&v) => Err(Invalid::new(
            field,
            format!("must be at least 0 and below 1, got {v}"),
            format!("set `{field}` to a fraction such as 0.1"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_are_unique() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
    }

    #[test]
    fn optional_flags_are_left_out_when_unset() {
        let resolve = |i: &Input| i.to_string();
        let mut args = ArgsBuilder::new("runs/x", &resolve);
        args.word("toy")
            .out()
            .opt("--seed", Some(3))
            .opt::<f64>("--lr", None);
        assert_eq!(args.finish(), ["toy", "--out", "runs/x", "--seed", "3"]);
    }

    #[test]
    fn range_checks_name_the_field() {
        assert_eq!(positive("steps", Some(0)).unwrap_err().field, "steps");
        assert!(positive("steps", None).is_ok());
        assert!(positive_real("lr", Some(f64::NAN)).is_err());
        assert!(non_negative_real("noise", Some(-0.1)).is_err());
        assert!(fraction("eval_fraction", Some(1.0)).is_err());
        assert!(fraction("eval_fraction", Some(0.0)).is_ok());
    }
}
