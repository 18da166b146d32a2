//! Each stage's options, declared once: one struct per stage that `clap` parses from
//! the stage binary's command line (`#[command(flatten)]`) and `serde` from a pipeline
//! manifest's `[[stage]]` table, with the same names (the field `batch_size` is the
//! flag `--batch-size` and the key `batch_size`), the same types and one validation,
//! [`StageOptions::check`]. The pipeline writes them back as flags with
//! [`option_args`].
//!
//! Inputs and outputs (paths, which a manifest may write as `@stage` references) are
//! not options: each binary declares its path flags and the runner resolves and passes
//! them. A field left out (`None`) takes the binary's default, which its doc states.
use clap::{ArgAction, Args};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::options::{
    CircuitAblation, CircuitAggregation, CircuitMethod, GemmLibrary, NounSet, SaeArchitecture,
    SaeNormalization, StoreDtype,
};
use crate::HookPoint;

/// Why [`StageOptions::check`] rejected a value: the option's field name (the manifest
/// key; the flag is the same name in kebab case), what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// The option's field name, e.g. `batch_size`.
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

    /// The command-line flag of the field: `batch_size` → `--batch-size`.
    pub fn flag(&self) -> String {
        format!("--{}", self.field.replace('_', "-"))
    }
}

impl std::fmt::Display for Invalid {
    /// As a stage binary reports it: `--flag: problem; fix`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}; {}", self.flag(), self.problem, self.fix)
    }
}

impl std::error::Error for Invalid {}

/// A stage's options: parsed by clap and serde alike, validated by one `check`.
pub trait StageOptions: Args + Serialize + DeserializeOwned {
    /// Validate ranges and combinations of values.
    fn check(&self) -> Result<(), Invalid>;
}

/// The options as command-line words, in declaration order: `--flag value` for each
/// value that is set (a list as one comma-separated value, a `true` switch as the bare
/// flag); unset options are left out so the binary's default applies.
pub fn option_args<T: StageOptions>(options: &T) -> Vec<String> {
    let serde_json::Value::Object(values) =
        serde_json::to_value(options).expect("stage options serialise to a JSON object")
    else {
        unreachable!("stage options are structs")
    };
    let mut argv = Vec::new();
    for arg in T::augment_args(clap::Command::new("options")).get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let Some(value) = values.get(arg.get_id().as_str()) else {
            continue;
        };
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Bool(b) if !arg.get_action().takes_values() => {
                if *b {
                    argv.push(format!("--{long}"));
                }
                continue;
            }
            serde_json::Value::Array(items) => items.iter().map(word).collect::<Vec<_>>().join(","),
            v => word(v),
        };
        argv.push(format!("--{long}"));
        argv.push(text);
    }
    argv
}

/// One value as the command line spells it (numbers as Rust prints them).
fn word(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(i)) => i.to_string(),
            _ => n.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        },
        other => other.to_string(),
    }
}

/// Counts must be at least 1.
pub fn positive(field: &'static str, value: Option<usize>) -> Result<(), Invalid> {
    match value {
        Some(0) => Err(Invalid::new(
            field,
            "must be at least 1, got 0",
            format!("set {field} to a positive integer"),
        )),
        _ => Ok(()),
    }
}

/// Rates and scales must be finite and greater than 0.
pub fn positive_real(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(Invalid::new(
            field,
            format!("must be a finite number greater than 0, got {v}"),
            format!("set {field} to a positive number, e.g. 0.001"),
        )),
        _ => Ok(()),
    }
}

/// Coefficients and noise levels must be finite and at least 0.
pub fn non_negative_real(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(Invalid::new(
            field,
            format!("must be a finite number at least 0, got {v}"),
            format!("set {field} to 0 or a positive number"),
        )),
        _ => Ok(()),
    }
}

/// Fractions of a dataset held out must lie in [0, 1).
pub fn fraction(field: &'static str, value: Option<f64>) -> Result<(), Invalid> {
    match value {
        Some(v) if !(0.0..1.0).contains(&v) => Err(Invalid::new(
            field,
            format!("must be at least 0 and below 1, got {v}"),
            format!("set {field} to a fraction such as 0.1"),
        )),
        _ => Ok(()),
    }
}

/// Options of `circuitry-train-toy` (stage kind `train-toy`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainToyOptions {
    /// Seed of the lexicon, data and initialisation (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training examples (default 1000).
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Held-out examples, from nouns never seen in training (default 1000).
    #[arg(long)]
    pub n_test: Option<usize>,
    /// Input noise level, in [0, 0.15] (default 0.1).
    #[arg(long)]
    pub noise: Option<f64>,
    /// Full-batch Adam steps (default 400).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Adam learning rate (default 0.05).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Hidden width (default 4).
    #[arg(long)]
    pub hidden: Option<usize>,
}

impl StageOptions for TrainToyOptions {
    fn check(&self) -> Result<(), Invalid> {
        positive("n_train", self.n_train)?;
        positive("n_test", self.n_test)?;
        non_negative_real("noise", self.noise)?;
        positive("epochs", self.epochs)?;
        positive_real("lr", self.lr)?;
        positive("hidden", self.hidden)
    }
}

/// Options of `circuitry-dump toy` (stage kind `dump-toy`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpToyOptions {
    /// Number of examples (default 2000).
    #[arg(long)]
    pub n_examples: Option<usize>,
    /// Seed of the examples (default 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Input noise (default: the model's training noise).
    #[arg(long)]
    pub noise: Option<f64>,
    /// Which nouns to draw examples from (default all).
    #[arg(long, value_enum)]
    pub nouns: Option<NounSet>,
    /// Rows per Parquet shard (default 100000).
    #[arg(long)]
    pub shard_rows: Option<usize>,
}

impl StageOptions for DumpToyOptions {
    fn check(&self) -> Result<(), Invalid> {
        positive("n_examples", self.n_examples)?;
        non_negative_real("noise", self.noise)?;
        positive("shard_rows", self.shard_rows)
    }
}

/// A hook list (`hooks`): non-empty, no entry twice, no empty entry.
fn hook_list<T: PartialEq + std::fmt::Display>(
    field: &'static str,
    hooks: &[T],
    example: &str,
) -> Result<(), Invalid> {
    let fix = format!(
        "name at least one hook, e.g. {example} (a list in a manifest, comma-separated after the flag)"
    );
    if hooks.is_empty() {
        return Err(Invalid::new(field, "no hook is given", fix));
    }
    if let Some((i, h)) = hooks
        .iter()
        .enumerate()
        .find(|(i, h)| hooks[..*i].contains(h))
    {
        return Err(Invalid::new(
            field,
            format!("{h} is listed twice (entry {})", i + 1),
            "list each hook once",
        ));
    }
    if hooks.iter().any(|h| h.to_string().trim().is_empty()) {
        return Err(Invalid::new(field, "an entry is empty", fix));
    }
    Ok(())
}

/// Options of `circuitry-dump onnx` (stage kind `dump`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpOptions {
    /// Hook names or globs (blocks.*.hook_resid_pre): a comma-separated list, or the
    /// flag repeated; a list in a manifest.
    #[arg(long, value_delimiter = ',', required = true)]
    pub hooks: Vec<String>,
    /// Window length for a corpus (default: the model's context).
    #[arg(long)]
    pub context_size: Option<usize>,
    /// Sequences per ONNX Runtime call (default 8).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// ONNX Runtime intra-op threads (default 2).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Storage dtype of the activations (default f32).
    #[arg(long, value_enum)]
    pub dtype: Option<StoreDtype>,
    /// Rows per Parquet shard (default 100000).
    #[arg(long)]
    pub shard_rows: Option<usize>,
    /// Stop after this many tokens (rows).
    #[arg(long)]
    pub max_tokens: Option<usize>,
}

impl StageOptions for DumpOptions {
    fn check(&self) -> Result<(), Invalid> {
        hook_list("hooks", &self.hooks, "blocks.*.hook_resid_pre")?;
        if let Some(h) = self.hooks.iter().find(|h| h.contains(',')) {
            return Err(Invalid::new(
                "hooks",
                format!("the entry {h:?} holds a comma"),
                "write one hook name or glob per entry",
            ));
        }
        positive("context_size", self.context_size)?;
        positive("batch_size", self.batch_size)?;
        positive("threads", self.threads)?;
        positive("shard_rows", self.shard_rows)?;
        positive("max_tokens", self.max_tokens)
    }
}

/// Options of `circuitry-train-sae` (stage kind `train-sae`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSaeOptions {
    /// Hooks to train on, TransformerLens names, one SAE each, all from one read of the
    /// store: a comma-separated list, or the flag repeated; a list in a manifest.
    #[arg(long, value_delimiter = ',', required = true)]
    pub hooks: Vec<HookPoint>,
    /// Number of SAE latents.
    #[arg(long)]
    pub d_sae: usize,
    /// Expected input width: an error if a hook's width in the store differs.
    #[arg(long)]
    pub d_in: Option<usize>,
    /// SAE architecture (default standard).
    #[arg(long, value_enum)]
    pub architecture: Option<SaeArchitecture>,
    /// Active latents per row (topk, batchtopk; required there, below d_sae).
    #[arg(long)]
    pub k: Option<usize>,
    /// Input normalisation (default none).
    #[arg(long, value_enum)]
    pub normalize_activations: Option<SaeNormalization>,
    /// Sparsity penalty λ: L1 (standard) or L0 (jumprelu).
    #[arg(long)]
    pub l1_coefficient: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimiser steps (the stream passes over the corpus as many times as needed).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Rows per step.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of every random choice (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction of rows held out for the final evaluation (default 0.1).
    #[arg(long)]
    pub eval_fraction: Option<f64>,
    /// Learning-rate warm-up steps (default: 100, capped at steps / 10).
    #[arg(long)]
    pub lr_warm_up_steps: Option<usize>,
    /// Steps of linear learning-rate decay to 0 at the end (default: steps / 5).
    #[arg(long)]
    pub lr_decay_steps: Option<usize>,
    /// Steps of linear L1 warm-up (default: steps / 10).
    #[arg(long)]
    pub l1_warm_up_steps: Option<usize>,
    /// Rows the shuffle buffer holds (default: 16 batches).
    #[arg(long)]
    pub buffer_rows: Option<usize>,
    /// Write a checkpoint every N steps (default 0: never); a rerun resumes from it.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// A latent silent for this many steps counts as dead, and AuxK trains it (default:
    /// 500, capped at steps / 10 so that a short run has dead latents to revive).
    #[arg(long)]
    pub dead_feature_window: Option<usize>,
    /// JumpReLU: initial threshold of every latent.
    #[arg(long)]
    pub jumprelu_init_threshold: Option<f64>,
    /// JumpReLU: bandwidth of the threshold's pseudo-derivative.
    #[arg(long)]
    pub jumprelu_bandwidth: Option<f64>,
    /// Top activating contexts kept per feature in feature_stats.parquet (default 8).
    #[arg(long)]
    pub top_n: Option<usize>,
    /// Model name for cfg.json (default: the store's).
    #[arg(long)]
    pub model_name: Option<String>,
    /// At most this many token windows for ce_loss_score (with --model; default 64).
    #[arg(long)]
    pub ce_sequences: Option<usize>,
    /// Leave out token rows whose norm at a hook is above R times the hook's median
    /// row norm (massive activations: the BOS and other attention-sink tokens of Llama
    /// models) from that hook's training, metrics, feature statistics and
    /// ce_loss_score splice; 0 (the default) keeps every row. training.json records
    /// the rule.
    #[arg(long, value_name = "R")]
    pub outlier_norm_ratio: Option<f64>,
    /// Library of the dense products (default auto); MKL is loaded from
    /// $CIRCUITRY_MKL or .mkl/ (scripts/setup-mkl.sh). training.json records the one
    /// used.
    #[arg(long, value_enum)]
    pub gemm: Option<GemmLibrary>,
    /// MKL's conditional numerical reproducibility mode: off, auto, compatible, avx2
    /// or avx512, the last four optionally with +strict (default auto). It changes
    /// MKL's rounding: a mode other than auto is
    /// part of the run key (a changed mode retrains) and training.json's gemm names it.
    #[arg(long, value_name = "MODE")]
    pub mkl_cbwr: Option<String>,
    /// TopK: pick each row's latents with the exact bf16 prefilter where it runs (MKL
    /// on a CPU with AVX512-BF16 or AMX): the same latents as the f32 encoder, about
    /// twice as fast (default true). `false` computes every pre-activation in f32.
    #[arg(long, action = ArgAction::Set, value_name = "BOOL")]
    pub topk_prefilter: Option<bool>,
    /// Keep freed memory in glibc's heap instead of returning each step's arrays of
    /// 100 MB and more to the kernel, whose page faults cost about a tenth of a TopK
    /// step at d_sae 24576 (default true). `false` lowers peak RSS by a few MB.
    #[arg(long, action = ArgAction::Set, value_name = "BOOL")]
    pub keep_freed_memory: Option<bool>,
}

impl StageOptions for TrainSaeOptions {
    fn check(&self) -> Result<(), Invalid> {
        hook_list("hooks", &self.hooks, "blocks.0.hook_resid_pre")?;
        positive("d_sae", Some(self.d_sae))?;
        positive("d_in", self.d_in)?;
        positive("buffer_rows", self.buffer_rows)?;
        positive("dead_feature_window", self.dead_feature_window)?;
        positive("k", self.k)?;
        let topk = matches!(
            self.architecture,
            Some(SaeArchitecture::TopK | SaeArchitecture::BatchTopK)
        );
        match self.k {
            Some(_) if !topk => {
                return Err(Invalid::new(
                    "k",
                    "k applies only to the topk and batchtopk architectures",
                    "set architecture (--architecture) to topk or batchtopk, or leave k out",
                ))
            }
            Some(k) if k >= self.d_sae => {
                return Err(Invalid::new(
                    "k",
                    format!("k = {k} must be below d_sae = {}", self.d_sae),
                    "choose k smaller than d_sae (k of the d_sae latents are active per token)",
                ))
            }
            None if topk => {
                return Err(Invalid::new(
                    "architecture",
                    "the topk and batchtopk architectures need k",
                    "set k (--k), the number of active latents per token (below d_sae)",
                ))
            }
            _ => {}
        }
        non_negative_real("l1_coefficient", self.l1_coefficient)?;
        positive_real("jumprelu_init_threshold", self.jumprelu_init_threshold)?;
        positive_real("jumprelu_bandwidth", self.jumprelu_bandwidth)?;
        for (key, value) in [
            ("jumprelu_init_threshold", self.jumprelu_init_threshold),
            ("jumprelu_bandwidth", self.jumprelu_bandwidth),
        ] {
            if value.is_some() && self.architecture != Some(SaeArchitecture::JumpRelu) {
                return Err(Invalid::new(
                    key,
                    format!("{key} applies only to the jumprelu architecture"),
                    "set architecture (--architecture) to jumprelu, or leave it out",
                ));
            }
        }
        positive_real("lr", self.lr)?;
        positive("steps", self.steps)?;
        positive("batch_size", self.batch_size)?;
        positive("ce_sequences", self.ce_sequences)?;
        non_negative_real("outlier_norm_ratio", self.outlier_norm_ratio)?;
        fraction("eval_fraction", self.eval_fraction)
    }
}

/// Options of `circuitry-circuit gpt2` (stage kind `circuit`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitOptions {
    /// Node-effect method (default ig).
    #[arg(long, value_enum)]
    pub method: Option<CircuitMethod>,
    /// Integrated-gradient steps (default 10).
    #[arg(long)]
    pub ig_steps: Option<usize>,
    /// Sum node effects over positions or keep positions apart (default sum;
    /// per-position needs pairs of one token length and draws a positions × layers grid).
    #[arg(long, value_enum)]
    pub aggregation: Option<CircuitAggregation>,
    /// Nodes with |mean effect| above this are in the circuit (default 0.05).
    #[arg(long)]
    pub node_threshold: Option<f64>,
    /// Edges with |mean weight| below this are not drawn (default 0.01).
    #[arg(long)]
    pub edge_threshold: Option<f64>,
    /// Ablation of the nodes outside the circuit in the evaluation (default mean).
    #[arg(long, value_enum)]
    pub ablation: Option<CircuitAblation>,
    /// Seed of resample ablation (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pairs per batch (default 64).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Use only the first N pairs.
    #[arg(long)]
    pub max_examples: Option<usize>,
    /// Compare node effects with exact patching on the first N pairs (default 0: off).
    #[arg(long)]
    pub exact_check: Option<usize>,
    /// Node thresholds of the faithfulness sweep, comma separated (default: 21 from
    /// 1e-4 to 10, log-spaced).
    #[arg(long, value_delimiter = ',')]
    pub sweep: Option<Vec<f64>>,
    /// Most batch × seq rows in one forward pass (default 4096).
    #[arg(long)]
    pub max_rows: Option<usize>,
    /// Library of the transformer's products (default auto: MKL when installed, from
    /// $CIRCUITRY_MKL or .mkl/ (scripts/setup-mkl.sh), else faer). Results agree to
    /// rounding; circuit.json records the one used.
    #[arg(long, value_enum)]
    pub gemm: Option<GemmLibrary>,
    /// Title of the drawings.
    #[arg(long)]
    pub title: Option<String>,
}

impl StageOptions for CircuitOptions {
    fn check(&self) -> Result<(), Invalid> {
        positive("ig_steps", self.ig_steps)?;
        positive("batch_size", self.batch_size)?;
        positive("max_examples", self.max_examples)?;
        positive("max_rows", self.max_rows)?;
        if let Some(sweep) = &self.sweep {
            if sweep.is_empty() {
                return Err(Invalid::new(
                    "sweep",
                    "is empty",
                    "list node thresholds, e.g. 0.01,0.1,1, or leave sweep out",
                ));
            }
            for &t in sweep {
                non_negative_real("sweep", Some(t))?;
            }
        }
        non_negative_real("node_threshold", self.node_threshold)?;
        non_negative_real("edge_threshold", self.edge_threshold)
    }
}

/// Options of `circuitry-circuit toy` (stage kind `circuit-toy`).
#[derive(Debug, Clone, Default, PartialEq, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitToyOptions {
    /// Strongest paths listed per output in the summary (default 5).
    #[arg(long)]
    pub top_paths: Option<usize>,
    /// Prune edges whose |mean weight| is below this over all examples and in each
    /// group (default 0).
    #[arg(long)]
    pub min_weight: Option<f64>,
}

impl StageOptions for CircuitToyOptions {
    fn check(&self) -> Result<(), Invalid> {
        positive("top_paths", self.top_paths)?;
        non_negative_real("min_weight", self.min_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli<T: StageOptions> {
        #[command(flatten)]
        options: T,
    }

    fn parse<T: StageOptions>(words: &[String]) -> T {
        let argv = std::iter::once("x".to_string()).chain(words.iter().cloned());
        Cli::<T>::try_parse_from(argv).unwrap().options
    }

    /// What the runner writes for a manifest's options, the binary parses back into the
    /// same value.
    fn round_trip<T: StageOptions + PartialEq + std::fmt::Debug>(options: T) {
        let argv = option_args(&options);
        assert_eq!(parse::<T>(&argv), options, "{argv:?}");
    }

    #[test]
    fn options_survive_the_command_line() {
        round_trip(TrainSaeOptions {
            hooks: vec![
                "blocks.0.hook_resid_pre".parse().unwrap(),
                "blocks.3.hook_mlp_out".parse().unwrap(),
            ],
            d_sae: 64,
            architecture: Some(SaeArchitecture::TopK),
            k: Some(8),
            normalize_activations: Some(SaeNormalization::ConstantNormRescale),
            lr: Some(3e-4),
            seed: Some(u64::MAX),
            eval_fraction: Some(0.25),
            mkl_cbwr: Some("avx2+strict".into()),
            topk_prefilter: Some(false),
            ..Default::default()
        });
        round_trip(CircuitOptions {
            method: Some(CircuitMethod::Attribution),
            aggregation: Some(CircuitAggregation::PerPosition),
            sweep: Some(vec![1e-7, 0.05, 10.0]),
            title: Some("a title, with a comma".into()),
            node_threshold: Some(0.1),
            ..Default::default()
        });
        round_trip(DumpOptions {
            hooks: vec![
                "blocks.*.hook_resid_pre".into(),
                "blocks.2.hook_mlp_out".into(),
            ],
            dtype: Some(StoreDtype::F16),
            max_tokens: Some(400_000),
            ..Default::default()
        });
        round_trip(DumpToyOptions {
            nouns: Some(NounSet::Test),
            noise: Some(0.0),
            ..Default::default()
        });
        round_trip(TrainToyOptions {
            lr: Some(0.05),
            hidden: Some(4),
            ..Default::default()
        });
        round_trip(CircuitToyOptions {
            min_weight: Some(0.5),
            ..Default::default()
        });
    }

    #[test]
    fn unset_options_are_left_out_in_declaration_order() {
        let argv = option_args(&CircuitOptions {
            max_rows: Some(512),
            method: Some(CircuitMethod::Ig),
            ..Default::default()
        });
        assert_eq!(argv, ["--method", "ig", "--max-rows", "512"]);
    }

    #[test]
    fn hook_lists_are_comma_separated_or_repeated() {
        let one: TrainSaeOptions = parse(
            &[
                "--d-sae",
                "8",
                "--hooks",
                "toy.hook_hidden,blocks.1.hook_resid_pre",
            ]
            .map(String::from),
        );
        let repeated: TrainSaeOptions = parse(
            &[
                "--d-sae",
                "8",
                "--hooks",
                "toy.hook_hidden",
                "--hooks",
                "blocks.1.hook_resid_pre",
            ]
            .map(String::from),
        );
        assert_eq!(one, repeated);
        assert_eq!(one.hooks.len(), 2);
    }

    #[test]
    fn rejections_name_the_flag_and_the_fix() {
        let twice = TrainSaeOptions {
            hooks: vec!["toy.hook_hidden".parse().unwrap(); 2],
            d_sae: 8,
            ..Default::default()
        };
        let e = twice.check().unwrap_err();
        assert_eq!(e.field, "hooks");
        assert_eq!(
            e.to_string(),
            "--hooks: toy.hook_hidden is listed twice (entry 2); list each hook once"
        );
        let k_without_topk = TrainSaeOptions {
            hooks: vec!["toy.hook_hidden".parse().unwrap()],
            d_sae: 8,
            k: Some(2),
            ..Default::default()
        };
        assert_eq!(k_without_topk.check().unwrap_err().flag(), "--k");
        assert_eq!(positive("steps", Some(0)).unwrap_err().field, "steps");
        assert!(positive("steps", None).is_ok());
        assert!(positive_real("lr", Some(f64::NAN)).is_err());
        assert!(non_negative_real("noise", Some(-0.1)).is_err());
        assert!(fraction("eval_fraction", Some(1.0)).is_err());
        assert!(fraction("eval_fraction", Some(0.0)).is_ok());
    }
}
