//! # circuitry-models
//!
//! Model math on ndarray.
//!
//! - [`toy`]: the seed recipe's `SubjectVerbAgreementNN` (2 → 4 ReLU → 2), its
//!   synthetic singular/plural data set, training with a hand-written backward pass,
//!   and Hugging Face–style safetensors I/O.
//! - [`gemm`]: dense products of ndarray views through faer (the transformer's and the
//!   SAE trainer's).
//! - [`tensors`]: reading and writing f32 tensors in safetensors files.
//! - [`transformer`]: decoder-only language models from Hugging Face safetensors, GPT-2
//!   and Llama families behind one type: forward with hook capture and interventions,
//!   and its backward pass (vector–Jacobian products).
//!
//! ```
//! use circuitry_models::toy::{SubjectVerbAgreementNN, ToyDataset, Lexicon};
//! use rand::SeedableRng;
//! let lexicon = Lexicon::new(0);
//! let data = ToyDataset::generate(&lexicon, lexicon.train_nouns(), 16, 0.1, 1);
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let model = SubjectVerbAgreementNN::init(4, &mut rng);
//! let out = model.forward(data.inputs.view());
//! assert_eq!(out.logits.dim(), (16, 2));
//! ```
#![deny(missing_docs)]

mod error;
pub mod gemm;
pub mod tensors;
pub mod toy;
pub mod transformer;

pub use error::{Error, Result};
