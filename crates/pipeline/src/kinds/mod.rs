//! Stage kinds: for each, the manifest parameters and the command line of its binary.
//!
//! A kind's keys are its inputs (paths, which may be `@stage` references: the kind's
//! `Inputs` struct, [`ParamGuard::INPUT_KEYS`]) and its options: the stage binary's own
//! options struct from [`circuitry_core::params`], which clap parses from the command
//! line and serde from the manifest, checked by the same
//! [`StageOptions::check`] in both. [`ParamGuard::check`] combines the two into a
//! [`StageParams`], whose [`StageParams::write_args`] writes the binary's arguments.
//! Adding a kind is local: a new module here with those pieces, and one line in
//! `KINDS` (this module).
use std::fmt;

use std::ops::Range;

use circuitry_core::params::option_args;
pub use circuitry_core::params::Invalid;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::Input;

mod circuit;
mod circuit_toy;
mod dump;
mod dump_toy;
mod train_sae;
mod train_toy;

pub use circuit::{Circuit, CircuitAblation, CircuitAggregation, CircuitInputs, CircuitMethod};
pub use circuit_toy::{CircuitToy, CircuitToyInputs};
pub use circuitry_core::options::NounSet;
pub use circuitry_core::params::{
    CircuitOptions, CircuitToyOptions, DumpOptions, DumpToyOptions, StageOptions, TrainSaeOptions,
    TrainToyOptions,
};
pub use dump::{Dump, DumpInputs, StoreDtype};
pub use dump_toy::{DumpToy, DumpToyInputs};
pub use train_sae::{GemmLibrary, SaeArchitecture, SaeNormalization, TrainSae, TrainSaeInputs};
pub use train_toy::{TrainToy, TrainToyInputs};

/// Every stage kind a manifest may name, in the order they are listed to users.
pub(crate) const KINDS: &[Kind] = &[
    Kind::of::<TrainToy>(),
    Kind::of::<DumpToy>(),
    Kind::of::<Dump>(),
    Kind::of::<TrainSae>(),
    Kind::of::<CircuitToy>(),
    Kind::of::<Circuit>(),
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
    /// in the manifest (`[slurm.stage.NAME] parts = N`). The array runs `rounds`
    /// times, each after the one before: a task does the next round of its part
    /// (a circuit's three rounds need the totals of every part's previous round).
    Parts {
        /// Arrays run one after the other, each with the same tasks.
        rounds: usize,
    },
    /// One task per value: the task adds `flag value` (e.g. `--only-hook H`).
    Each {
        /// The flag.
        flag: &'static str,
        /// The values, one task each.
        values: Vec<String>,
    },
}

/// A kind's manifest keys, read as two structs, and how they combine into the kind's
/// [`StageParams`] (linfa's `ParamGuard` pattern).
pub trait ParamGuard {
    /// The kind's name in manifests.
    const KIND: &'static str;
    /// The keys that name inputs (paths or `@stage` references); every other key is
    /// an option.
    const INPUT_KEYS: &'static [&'static str];
    /// The inputs, unknown keys denied.
    type Inputs: DeserializeOwned;
    /// The stage binary's options (shared with its command line).
    type Options: StageOptions;
    /// The validated configuration.
    type Checked: StageParams + 'static;
    /// Validate combinations of inputs and options (the options have passed their own
    /// [`StageOptions::check`]).
    fn check(inputs: Self::Inputs, options: Self::Options) -> Result<Self::Checked, Invalid>;
}

/// Parses a stage's table (without `name` and `kind`; the span is its header's) into
/// the kind's checked parameters.
type ParseFn = fn(&DeTable<'_>, &Range<usize>) -> Result<Box<dyn StageParams>, KindError>;

/// An entry of the kind registry: the name and how to parse and check its parameters.
pub(crate) struct Kind {
    pub(crate) name: &'static str,
    pub(crate) parse: ParseFn,
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
    /// A wrong type or a missing key.
    Toml(toml::de::Error),
    /// A key that is neither an input nor an option of the kind.
    UnknownKey {
        /// The key as written.
        key: String,
        /// Every key the kind knows.
        known: Vec<String>,
    },
    /// A value out of range.
    Invalid(Invalid),
}

/// The option keys of `T`: its fields' names, which are also its flags.
fn option_keys<T: StageOptions>() -> Vec<String> {
    T::augment_args(clap::Command::new("options"))
        .get_arguments()
        .map(|a| a.get_id().as_str().to_string())
        .collect()
}

/// A deserializer of `table`, errors without a key of their own pointing at `header`.
fn table_deserializer<'a>(table: DeTable<'a>, header: &Range<usize>) -> ValueDeserializer<'a> {
    ValueDeserializer::from(Spanned::new(header.clone(), DeValue::Table(table)))
}

fn parse_checked<P: ParamGuard>(
    table: &DeTable<'_>,
    header: &Range<usize>,
) -> Result<Box<dyn StageParams>, KindError> {
    let option_keys = option_keys::<P::Options>();
    let (mut inputs, mut options) = (DeTable::new(), DeTable::new());
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        if P::INPUT_KEYS.contains(&name) {
            inputs.insert(key.clone(), value.clone());
        } else if option_keys.iter().any(|k| k == name) {
            options.insert(key.clone(), value.clone());
        } else {
            let mut known: Vec<String> = P::INPUT_KEYS.iter().map(|k| k.to_string()).collect();
            known.extend(option_keys);
            return Err(KindError::UnknownKey {
                key: name.to_string(),
                known,
            });
        }
    }
    let inputs =
        P::Inputs::deserialize(table_deserializer(inputs, header)).map_err(KindError::Toml)?;
    let options =
        P::Options::deserialize(table_deserializer(options, header)).map_err(KindError::Toml)?;
    options.check().map_err(KindError::Invalid)?;
    let checked = P::check(inputs, options).map_err(KindError::Invalid)?;
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

    /// The options the manifest sets, as the binary's flags ([`option_args`]); unset
    /// options are left out, so the binary's own default applies.
    pub fn options<T: StageOptions>(&mut self, options: &T) -> &mut Self {
        self.argv.extend(option_args(options));
        self
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
        args.word("toy").out().options(&TrainToyOptions {
            seed: Some(3),
            lr: None,
            ..Default::default()
        });
        assert_eq!(args.finish(), ["toy", "--out", "runs/x", "--seed", "3"]);
    }
}
