//! The seed recipe's toy subject–verb agreement network.
//!
//! `SubjectVerbAgreementNN` maps a 2-d encoding of a subject noun to logits for the
//! verb forms `"runs"` (singular) and `"run"` (plural): `2 → d_hidden (ReLU) → 2`,
//! `d_hidden = 4` by default. Weights follow PyTorch's `nn.Linear` convention
//! (`y = x Wᵀ + b`) and are saved as `fc1.weight [d_hidden, 2]`, `fc1.bias`,
//! `fc2.weight [2, d_hidden]`, `fc2.bias` in `model.safetensors`.
//!
//! ## The input encoding
//!
//! Each noun lemma `n` of the [`Lexicon`] (cat/cats, baby/babies, child/children, …)
//! has two seeded latent values: a *salience* `c_n ∈ [0, 1]` and a *number strength*
//! `s_n ∈ [0.4, 1]` (irregular plurals get weaker evidence). A token is encoded as
//!
//! ```text
//! singular form: x = (c_n + s_n, c_n) + ε        plural form: x = (c_n, c_n + s_n) + ε
//! ```
//!
//! with `ε` uniform in `[-noise, noise]²` (default 0.1, at most 0.15 so that classes stay
//! separable). Input 0 is "singular evidence", input 1 "plural evidence". Number is
//! the *difference* of the two inputs, and salience shifts both, so no single input
//! threshold solves the task. Held-out examples use nouns never seen in training.
use std::path::Path;

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::tensors::{write_f32, TensorFile};
use crate::{Error, Result};

/// Names of the two inputs.
pub const INPUT_NAMES: [&str; 2] = ["singular", "plural"];
/// Names of the two outputs: the verb form the model predicts.
pub const OUTPUT_NAMES: [&str; 2] = ["runs", "run"];
/// Architecture name written in `config.json`.
pub const ARCHITECTURE: &str = "SubjectVerbAgreementNN";

/// Singular/plural noun pairs of the toy lexicon.
const NOUNS: [(&str, &str, bool); 32] = [
    ("cat", "cats", false),
    ("dog", "dogs", false),
    ("baby", "babies", false),
    ("child", "children", true),
    ("mouse", "mice", true),
    ("person", "people", true),
    ("horse", "horses", false),
    ("bird", "birds", false),
    ("fox", "foxes", false),
    ("wolf", "wolves", false),
    ("goose", "geese", true),
    ("man", "men", true),
    ("woman", "women", true),
    ("boy", "boys", false),
    ("girl", "girls", false),
    ("rabbit", "rabbits", false),
    ("deer", "deers", true),
    ("ox", "oxen", true),
    ("puppy", "puppies", false),
    ("pony", "ponies", false),
    ("athlete", "athletes", false),
    ("runner", "runners", false),
    ("tiger", "tigers", false),
    ("lion", "lions", false),
    ("student", "students", false),
    ("teacher", "teachers", false),
    ("farmer", "farmers", false),
    ("knife", "knives", false),
    ("calf", "calves", false),
    ("foot", "feet", true),
    ("tooth", "teeth", true),
    ("cactus", "cacti", true),
];

/// The toy vocabulary: every noun lemma with seeded salience and number strength,
/// split into training and held-out nouns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lexicon {
    /// Seed that generated it.
    pub seed: u64,
    /// (singular, plural) forms.
    pub forms: Vec<(String, String)>,
    /// Salience `c_n` per noun.
    pub salience: Vec<f32>,
    /// Number strength `s_n` per noun.
    pub strength: Vec<f32>,
    /// Whether the noun is held out of training.
    pub held_out: Vec<bool>,
}

impl Lexicon {
    /// Build the lexicon with seeded latent values; one noun in four is held out.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut salience = Vec::new();
        let mut strength = Vec::new();
        for &(_, _, irregular) in NOUNS.iter() {
            salience.push(rng.random_range(0.0..1.0f32));
            let s = if irregular {
                rng.random_range(0.4..0.7f32)
            } else {
                rng.random_range(0.6..1.0f32)
            };
            strength.push(s);
        }
        let mut order: Vec<usize> = (0..NOUNS.len()).collect();
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let mut held_out = vec![false; NOUNS.len()];
        for &i in order.iter().take(NOUNS.len() / 4) {
            held_out[i] = true;
        }
        Lexicon {
            seed,
            forms: NOUNS
                .iter()
                .map(|(s, p, _)| (s.to_string(), p.to_string()))
                .collect(),
            salience,
            strength,
            held_out,
        }
    }

    /// Indices of training nouns.
    pub fn train_nouns(&self) -> Vec<usize> {
        (0..self.forms.len())
            .filter(|&i| !self.held_out[i])
            .collect()
    }

    /// Indices of held-out nouns.
    pub fn test_nouns(&self) -> Vec<usize> {
        (0..self.forms.len())
            .filter(|&i| self.held_out[i])
            .collect()
    }

    /// The token vocabulary: token `2n` is noun `n` singular, `2n + 1` plural.
    pub fn vocab(&self) -> Vec<String> {
        self.forms
            .iter()
            .flat_map(|(s, p)| [s.clone(), p.clone()])
            .collect()
    }
}

/// Encoded examples.
#[derive(Debug, Clone)]
pub struct ToyDataset {
    /// Encoded inputs. (n, 2)
    pub inputs: Array2<f32>,
    /// Correct output: 0 = "runs" (singular subject), 1 = "run" (plural). (n)
    pub labels: Vec<usize>,
    /// Token id in [`Lexicon::vocab`]. (n)
    pub token_ids: Vec<u32>,
}

impl ToyDataset {
    /// Draw `n` examples from `nouns` (indices into the lexicon), half singular and
    /// half plural in expectation, with uniform noise in `[-noise, noise]`.
    pub fn generate(lexicon: &Lexicon, nouns: Vec<usize>, n: usize, noise: f32, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut inputs = Array2::<f32>::zeros((n, 2));
        let mut labels = Vec::with_capacity(n);
        let mut token_ids = Vec::with_capacity(n);
        for i in 0..n {
            let noun = nouns[rng.random_range(0..nouns.len().max(1)) % nouns.len().max(1)];
            let plural = rng.random_bool(0.5);
            let (c, s) = (lexicon.salience[noun], lexicon.strength[noun]);
            let (x0, x1) = if plural { (c, c + s) } else { (c + s, c) };
            let e0 = if noise > 0.0 {
                rng.random_range(-noise..=noise)
            } else {
                0.0
            };
            let e1 = if noise > 0.0 {
                rng.random_range(-noise..=noise)
            } else {
                0.0
            };
            inputs[[i, 0]] = x0 + e0;
            inputs[[i, 1]] = x1 + e1;
            labels.push(plural as usize);
            token_ids.push((2 * noun + plural as usize) as u32);
        }
        ToyDataset {
            inputs,
            labels,
            token_ids,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Check a noise level for [`ToyDataset::generate`].
pub fn check_noise(noise: f64) -> Result<f64> {
    if !(0.0..=0.15).contains(&noise) {
        return Err(Error::BadParameter {
            name: "noise",
            value: noise.to_string(),
            message: "must be in [0, 0.15] so singular and plural stay separable".into(),
        });
    }
    Ok(noise)
}

/// What `config.json` of a toy model holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyConfig {
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// Input width (2).
    pub d_in: usize,
    /// Hidden width.
    pub d_hidden: usize,
    /// Output width (2).
    pub d_out: usize,
    /// [`INPUT_NAMES`].
    pub input_names: Vec<String>,
    /// [`OUTPUT_NAMES`].
    pub output_names: Vec<String>,
    /// Seed of the [`Lexicon`] the model was trained on.
    pub lexicon_seed: u64,
    /// Noise level of the training data.
    pub noise: f64,
}

/// Activations of one forward pass.
#[derive(Debug, Clone)]
pub struct ToyForward {
    /// Hidden pre-activations. (batch, d_hidden)
    pub hidden_pre: Array2<f32>,
    /// Hidden activations after ReLU (`toy.hook_hidden`). (batch, d_hidden)
    pub hidden: Array2<f32>,
    /// Output logits (`toy.hook_logits`): column 0 "runs", 1 "run". (batch, 2)
    pub logits: Array2<f32>,
}

impl ToyForward {
    /// Predicted output index per row. (batch)
    pub fn predictions(&self) -> Vec<usize> {
        self.logits
            .rows()
            .into_iter()
            .map(|r| usize::from(r[1] > r[0]))
            .collect()
    }
}

/// Gradients of the loss with respect to every parameter (same shapes).
#[derive(Debug, Clone)]
pub struct ToyGrads {
    /// (d_hidden, 2)
    pub fc1_weight: Array2<f32>,
    /// (d_hidden)
    pub fc1_bias: Array1<f32>,
    /// (2, d_hidden)
    pub fc2_weight: Array2<f32>,
    /// (2)
    pub fc2_bias: Array1<f32>,
}

/// The toy network `2 → d_hidden (ReLU) → 2`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectVerbAgreementNN {
    /// (d_hidden, 2)
    pub fc1_weight: Array2<f32>,
    /// (d_hidden)
    pub fc1_bias: Array1<f32>,
    /// (2, d_hidden)
    pub fc2_weight: Array2<f32>,
    /// (2)
    pub fc2_bias: Array1<f32>,
}

impl SubjectVerbAgreementNN {
    /// PyTorch's default `nn.Linear` initialisation: U(−1/√fan_in, 1/√fan_in).
    pub fn init(d_hidden: usize, rng: &mut impl Rng) -> Self {
        let mut uniform = |rows: usize, cols: usize, fan_in: usize| {
            let b = 1.0 / (fan_in as f32).sqrt();
            Array2::from_shape_fn((rows, cols), |_| rng.random_range(-b..b))
        };
        let fc1_weight = uniform(d_hidden, 2, 2);
        let fc1_bias = uniform(1, d_hidden, 2).remove_axis(Axis(0));
        let fc2_weight = uniform(2, d_hidden, d_hidden);
        let fc2_bias = uniform(1, 2, d_hidden).remove_axis(Axis(0));
        SubjectVerbAgreementNN {
            fc1_weight,
            fc1_bias,
            fc2_weight,
            fc2_bias,
        }
    }

    /// Hidden width.
    pub fn d_hidden(&self) -> usize {
        self.fc1_bias.len()
    }

    /// Forward pass. `x`: (batch, 2).
    pub fn forward(&self, x: ArrayView2<f32>) -> ToyForward {
        let hidden_pre = x.dot(&self.fc1_weight.t()) + &self.fc1_bias; // (batch, d_hidden)
        let hidden = hidden_pre.mapv(|v| v.max(0.0)); // (batch, d_hidden)
        let logits = hidden.dot(&self.fc2_weight.t()) + &self.fc2_bias; // (batch, 2)
        ToyForward {
            hidden_pre,
            hidden,
            logits,
        }
    }

    /// Mean cross-entropy over the batch and its gradients. `x`: (batch, 2).
    pub fn loss_and_grads(&self, x: ArrayView2<f32>, labels: &[usize]) -> (f32, ToyGrads) {
        let fwd = self.forward(x);
        let n = labels.len().max(1) as f32;
        let mut dlogits = fwd.logits.clone(); // (batch, 2)
        let mut loss = 0.0;
        for (mut row, &y) in dlogits.rows_mut().into_iter().zip(labels) {
            let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            row.mapv_inplace(|v| (v - m).exp());
            let z = row.sum();
            row.mapv_inplace(|v| v / z);
            loss -= row[y].max(f32::MIN_POSITIVE).ln();
            row[y] -= 1.0;
            row.mapv_inplace(|v| v / n);
        }
        let fc2_weight = dlogits.t().dot(&fwd.hidden); // (2, d_hidden)
        let fc2_bias = dlogits.sum_axis(Axis(0)); // (2)
        let mut dhidden = dlogits.dot(&self.fc2_weight); // (batch, d_hidden)
        dhidden.zip_mut_with(&fwd.hidden_pre, |d, &p| {
            if p <= 0.0 {
                *d = 0.0
            }
        });
        let fc1_weight = dhidden.t().dot(&x); // (d_hidden, 2)
        let fc1_bias = dhidden.sum_axis(Axis(0)); // (d_hidden)
        (
            loss / n,
            ToyGrads {
                fc1_weight,
                fc1_bias,
                fc2_weight,
                fc2_bias,
            },
        )
    }

    /// Fraction of rows whose prediction equals the label.
    pub fn accuracy(&self, data: &ToyDataset) -> f64 {
        let preds = self.forward(data.inputs.view()).predictions();
        let right = preds
            .iter()
            .zip(&data.labels)
            .filter(|(p, y)| p == y)
            .count();
        right as f64 / data.len().max(1) as f64
    }

    /// Save `model.safetensors` and `config.json` into `dir`.
    pub fn save(&self, dir: &Path, config: &ToyConfig) -> Result<()> {
        let (h, d_in) = self.fc1_weight.dim();
        let std = |a: &Array2<f32>| a.as_standard_layout().iter().copied().collect::<Vec<f32>>();
        let (w1, w2) = (std(&self.fc1_weight), std(&self.fc2_weight));
        let (b1, b2) = (self.fc1_bias.to_vec(), self.fc2_bias.to_vec());
        write_f32(
            &dir.join("model.safetensors"),
            &[
                ("fc1.weight", vec![h, d_in], &w1),
                ("fc1.bias", vec![h], &b1),
                ("fc2.weight", vec![2, h], &w2),
                ("fc2.bias", vec![2], &b2),
            ],
            None,
        )?;
        circuitry_core::atomic::write_json(&dir.join("config.json"), config)?;
        Ok(())
    }

    /// Load a model saved by [`SubjectVerbAgreementNN::save`] from `dir`.
    pub fn load(dir: &Path) -> Result<(Self, ToyConfig)> {
        let cfg_path = dir.join("config.json");
        let config: ToyConfig = circuitry_core::atomic::read_json(&cfg_path)?;
        if config.architecture != ARCHITECTURE || config.d_in != 2 || config.d_out != 2 {
            return Err(Error::BadModelConfig {
                path: cfg_path,
                message: format!(
                    "expected architecture {ARCHITECTURE:?} with d_in 2 and d_out 2, got {:?} with d_in {} and d_out {}",
                    config.architecture, config.d_in, config.d_out
                ),
            });
        }
        let h = config.d_hidden;
        let file = TensorFile::read(&dir.join("model.safetensors"))?;
        let two = |name: &str, shape: [usize; 2]| -> Result<Array2<f32>> {
            Ok(file
                .get(name, &shape)?
                .into_dimensionality()
                .unwrap_or_else(|_| Array2::zeros(shape)))
        };
        let one = |name: &str, len: usize| -> Result<Array1<f32>> {
            Ok(file
                .get(name, &[len])?
                .into_dimensionality()
                .unwrap_or_else(|_| Array1::zeros(len)))
        };
        let model = SubjectVerbAgreementNN {
            fc1_weight: two("fc1.weight", [h, 2])?,
            fc1_bias: one("fc1.bias", h)?,
            fc2_weight: two("fc2.weight", [2, h])?,
            fc2_bias: one("fc2.bias", 2)?,
        };
        Ok((model, config))
    }
}

/// Hyper-parameters of [`train`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToyTrainConfig {
    /// Seed of the lexicon, data and initialisation.
    pub seed: u64,
    /// Training examples.
    pub n_train: usize,
    /// Held-out examples (nouns never seen in training).
    pub n_test: usize,
    /// Input noise level, in [0, 0.15].
    pub noise: f64,
    /// Full-batch Adam steps.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Hidden width.
    pub hidden: usize,
}

impl Default for ToyTrainConfig {
    fn default() -> Self {
        ToyTrainConfig {
            seed: 0,
            n_train: 1000,
            n_test: 1000,
            noise: 0.1,
            epochs: 400,
            lr: 0.05,
            hidden: 4,
        }
    }
}

impl ToyTrainConfig {
    /// Check every field; the returned config is the only one [`train`] accepts.
    pub fn check(self) -> Result<Self> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(Error::BadParameter {
                    name,
                    value: "0".into(),
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("n-train", self.n_train)?;
        positive("n-test", self.n_test)?;
        positive("epochs", self.epochs)?;
        positive("hidden", self.hidden)?;
        check_noise(self.noise)?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::BadParameter {
                name: "lr",
                value: self.lr.to_string(),
                message: "must be a positive finite number, e.g. 0.05".into(),
            });
        }
        Ok(self)
    }
}

/// Result of [`train`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToyTrainReport {
    /// Final training loss.
    pub final_loss: f32,
    /// Accuracy on the training examples.
    pub train_accuracy: f64,
    /// Accuracy on held-out examples of held-out nouns.
    pub test_accuracy: f64,
    /// Held-out nouns (singular forms).
    pub test_nouns: Vec<String>,
    /// Loss every 50 steps.
    pub loss_history: Vec<f32>,
}

/// Train a toy network with full-batch Adam on cross-entropy.
pub fn train(cfg: &ToyTrainConfig) -> (SubjectVerbAgreementNN, ToyConfig, ToyTrainReport) {
    let lexicon = Lexicon::new(cfg.seed);
    let noise = cfg.noise as f32;
    let lr = cfg.lr as f32;
    let train_set = ToyDataset::generate(
        &lexicon,
        lexicon.train_nouns(),
        cfg.n_train,
        noise,
        cfg.seed ^ 0x7261,
    );
    let test_set = ToyDataset::generate(
        &lexicon,
        lexicon.test_nouns(),
        cfg.n_test,
        noise,
        cfg.seed ^ 0x7465,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(1));
    let mut model = SubjectVerbAgreementNN::init(cfg.hidden, &mut rng);
    let mut adam = [Adam::new(), Adam::new(), Adam::new(), Adam::new()];
    let mut loss_history = Vec::new();
    let mut loss = f32::NAN;
    for step in 0..cfg.epochs {
        let (l, g) = model.loss_and_grads(train_set.inputs.view(), &train_set.labels);
        loss = l;
        if step % 50 == 0 {
            loss_history.push(l);
        }
        let t = step as i32 + 1;
        adam[0].step(
            model.fc1_weight.as_slice_mut(),
            g.fc1_weight.as_slice(),
            lr,
            t,
        );
        adam[1].step(model.fc1_bias.as_slice_mut(), g.fc1_bias.as_slice(), lr, t);
        adam[2].step(
            model.fc2_weight.as_slice_mut(),
            g.fc2_weight.as_slice(),
            lr,
            t,
        );
        adam[3].step(model.fc2_bias.as_slice_mut(), g.fc2_bias.as_slice(), lr, t);
    }
    let report = ToyTrainReport {
        final_loss: loss,
        train_accuracy: model.accuracy(&train_set),
        test_accuracy: model.accuracy(&test_set),
        test_nouns: lexicon
            .test_nouns()
            .iter()
            .map(|&i| lexicon.forms[i].0.clone())
            .collect(),
        loss_history,
    };
    let config = ToyConfig {
        architecture: ARCHITECTURE.into(),
        d_in: 2,
        d_hidden: cfg.hidden,
        d_out: 2,
        input_names: INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        output_names: OUTPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        lexicon_seed: cfg.seed,
        noise: cfg.noise,
    };
    (model, config, report)
}

/// Adam state for one parameter tensor (β1 0.9, β2 0.999, ε 1e-8).
#[derive(Debug, Default)]
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new() -> Self {
        Adam::default()
    }

    fn step(&mut self, param: Option<&mut [f32]>, grad: Option<&[f32]>, lr: f32, t: i32) {
        let (Some(p), Some(g)) = (param, grad) else {
            return;
        };
        if self.m.len() != p.len() {
            self.m = vec![0.0; p.len()];
            self.v = vec![0.0; p.len()];
        }
        let (b1, b2) = (0.9f32, 0.999f32);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..p.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences in f64 around the f32 parameters.
    #[test]
    fn gradients_match_finite_differences() {
        let lexicon = Lexicon::new(3);
        let data = ToyDataset::generate(&lexicon, lexicon.train_nouns(), 32, 0.1, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let model = SubjectVerbAgreementNN::init(4, &mut rng);
        let (_, g) = model.loss_and_grads(data.inputs.view(), &data.labels);
        let loss_at = |m: &SubjectVerbAgreementNN| {
            m.loss_and_grads(data.inputs.view(), &data.labels).0 as f64
        };
        let h = 1e-3f32;
        let mut max_diff = 0.0f64;
        let mut check = |get: &dyn Fn(&mut SubjectVerbAgreementNN) -> &mut [f32],
                         analytic: &[f32]| {
            for (i, &a) in analytic.iter().enumerate() {
                let mut plus = model.clone();
                get(&mut plus)[i] += h;
                let mut minus = model.clone();
                get(&mut minus)[i] -= h;
                let fd = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64);
                max_diff = max_diff.max((fd - a as f64).abs());
            }
        };
        check(
            &|m| m.fc1_weight.as_slice_mut().unwrap(),
            g.fc1_weight.as_slice().unwrap(),
        );
        check(
            &|m| m.fc1_bias.as_slice_mut().unwrap(),
            g.fc1_bias.as_slice().unwrap(),
        );
        check(
            &|m| m.fc2_weight.as_slice_mut().unwrap(),
            g.fc2_weight.as_slice().unwrap(),
        );
        check(
            &|m| m.fc2_bias.as_slice_mut().unwrap(),
            g.fc2_bias.as_slice().unwrap(),
        );
        println!("toy gradient check: max |fd - analytic| = {max_diff:.2e}");
        assert!(max_diff < 2e-3, "max diff {max_diff}");
    }

    #[test]
    fn trains_to_full_held_out_accuracy_deterministically() {
        let cfg = ToyTrainConfig::default().check().unwrap();
        let (m1, _, r1) = train(&cfg);
        let (m2, _, _) = train(&cfg);
        assert_eq!(m1, m2, "same seed, same weights");
        println!(
            "toy: train acc {} test acc {} loss {}",
            r1.train_accuracy, r1.test_accuracy, r1.final_loss
        );
        assert_eq!(r1.test_accuracy, 1.0);
        assert_eq!(r1.train_accuracy, 1.0);
    }

    #[test]
    fn no_single_input_threshold_solves_the_task() {
        let lexicon = Lexicon::new(0);
        let data = ToyDataset::generate(&lexicon, lexicon.train_nouns(), 2000, 0.1, 9);
        for col in 0..2 {
            let mut vals: Vec<(f32, usize)> = data
                .inputs
                .column(col)
                .iter()
                .copied()
                .zip(data.labels.iter().copied())
                .collect();
            vals.sort_by(|a, b| a.0.total_cmp(&b.0));
            // best accuracy of any threshold on this column, either orientation
            let total_pos = data.labels.iter().sum::<usize>();
            let mut below_pos = 0;
            let mut best = 0usize;
            for (k, &(_, y)) in vals.iter().enumerate() {
                below_pos += y;
                let below_neg = k + 1 - below_pos;
                let a = below_neg + (total_pos - below_pos);
                best = best.max(a).max(data.len() - a);
            }
            let acc = best as f64 / data.len() as f64;
            assert!(acc < 0.9, "input {col} alone separates with accuracy {acc}");
        }
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (m, c, _) = train(&ToyTrainConfig {
            epochs: 5,
            ..Default::default()
        });
        m.save(dir.path(), &c).unwrap();
        let (back, cfg) = SubjectVerbAgreementNN::load(dir.path()).unwrap();
        assert_eq!(back, m);
        assert_eq!(cfg, c);
    }
}
