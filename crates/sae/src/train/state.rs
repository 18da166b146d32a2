//! A [`Trainer`]'s state as named tensors plus [`TrainerMeta`], for checkpoints.
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::{LogEntry, TrainConfig, Trainer};
use crate::kernel::Backend;
use crate::optim::Moments;
use crate::{Architecture, Error, Result, Sae, SaeConfig};

/// The non-tensor part of a [`Trainer`]'s state, for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerMeta {
    /// Steps taken.
    pub step: usize,
    /// Per latent, steps since it last fired: (d_sae,).
    pub steps_since_fired: Vec<usize>,
    /// Logged steps so far.
    pub history: Vec<LogEntry>,
    /// Rows seen so far.
    pub rows_seen: u64,
    /// BatchTopK's running threshold.
    #[serde(default)]
    pub topk_threshold: f64,
}

/// A named tensor of a trainer's state: name, shape, values (row-major).
pub type NamedTensor = (&'static str, Vec<usize>, Vec<f32>);

const STATE_TENSORS: [&str; 12] = [
    "W_enc", "b_enc", "W_dec", "b_dec", "m.W_enc", "v.W_enc", "m.b_enc", "v.b_enc", "m.W_dec",
    "v.W_dec", "m.b_dec", "v.b_dec",
];

impl Trainer {
    /// Everything needed to continue training exactly where this trainer is: the
    /// step, dead-latent counters and history, and the parameters with their Adam
    /// moments as named tensors. [`Trainer::restore`] takes them back.
    pub fn export(&self) -> (TrainerMeta, Vec<NamedTensor>) {
        let meta = TrainerMeta {
            step: self.step,
            steps_since_fired: self.steps_since_fired.clone(),
            history: self.history.clone(),
            rows_seen: self.rows_seen,
            topk_threshold: self.topk_threshold,
        };
        let t2 = |a: &Array2<f32>| (a.shape().to_vec(), a.iter().copied().collect::<Vec<f32>>());
        let t1 = |a: &Array1<f32>| (a.shape().to_vec(), a.to_vec());
        let parts = [
            t2(&self.sae.w_enc),
            t1(&self.sae.b_enc),
            t2(&self.sae.w_dec),
            t1(&self.sae.b_dec),
            t2(&self.adam.0.m),
            t2(&self.adam.0.v),
            t1(&self.adam.1.m),
            t1(&self.adam.1.v),
            t2(&self.adam.2.m),
            t2(&self.adam.2.v),
            t1(&self.adam.3.m),
            t1(&self.adam.3.v),
        ];
        let mut tensors: Vec<NamedTensor> = STATE_TENSORS
            .iter()
            .zip(parts)
            .map(|(name, (shape, values))| (*name, shape, values))
            .collect();
        if let Some((log_t, m)) = &self.log_threshold {
            for (name, a) in [
                ("log_threshold", log_t),
                ("m.log_threshold", &m.m),
                ("v.log_threshold", &m.v),
            ] {
                tensors.push((name, a.shape().to_vec(), a.to_vec()));
            }
        }
        (meta, tensors)
    }

    /// A trainer in the state [`Trainer::export`] gave; `tensor(name, shape)` returns
    /// the values of one named tensor, checked against `shape`.
    pub fn restore(
        sae_cfg: SaeConfig,
        cfg: &TrainConfig,
        meta: TrainerMeta,
        mut tensor: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>,
    ) -> Result<Self> {
        cfg.check(&sae_cfg)?;
        let (d_in, d_sae) = (sae_cfg.d_in, sae_cfg.d_sae);
        if meta.steps_since_fired.len() != d_sae {
            return Err(Error::Shape {
                what: "steps_since_fired in the checkpoint".into(),
                expected: vec![d_sae],
                got: vec![meta.steps_since_fired.len()],
            });
        }
        let mut m2 = |name: &str, shape: (usize, usize)| -> Result<Array2<f32>> {
            let v = tensor(name, &[shape.0, shape.1])?;
            Array2::from_shape_vec(shape, v).map_err(|e| Error::Shape {
                what: format!("{name} in the checkpoint ({e})"),
                expected: vec![shape.0, shape.1],
                got: vec![],
            })
        };
        let w_enc = m2("W_enc", (d_in, d_sae))?;
        let w_dec = m2("W_dec", (d_sae, d_in))?;
        let enc = (m2("m.W_enc", (d_in, d_sae))?, m2("v.W_enc", (d_in, d_sae))?);
        let dec = (m2("m.W_dec", (d_sae, d_in))?, m2("v.W_dec", (d_sae, d_in))?);
        let mut m1 =
            |name: &str, n: usize| -> Result<Array1<f32>> { Ok(Array1::from(tensor(name, &[n])?)) };
        let log_threshold = if matches!(sae_cfg.architecture, Architecture::JumpRelu) {
            Some((
                m1("log_threshold", d_sae)?,
                Moments {
                    m: m1("m.log_threshold", d_sae)?,
                    v: m1("v.log_threshold", d_sae)?,
                },
            ))
        } else {
            None
        };
        let sae = Sae {
            cfg: sae_cfg,
            w_enc,
            b_enc: m1("b_enc", d_sae)?,
            w_dec,
            b_dec: m1("b_dec", d_in)?,
            threshold: log_threshold.as_ref().map(|(l, _)| l.mapv(f32::exp)),
        };
        Ok(Trainer {
            adam: (
                Moments { m: enc.0, v: enc.1 },
                Moments {
                    m: m1("m.b_enc", d_sae)?,
                    v: m1("v.b_enc", d_sae)?,
                },
                Moments { m: dec.0, v: dec.1 },
                Moments {
                    m: m1("m.b_dec", d_in)?,
                    v: m1("v.b_dec", d_in)?,
                },
            ),
            sae,
            cfg: cfg.clone(),
            step: meta.step,
            steps_since_fired: meta.steps_since_fired,
            history: meta.history,
            rows_seen: meta.rows_seen,
            log_threshold,
            topk_threshold: meta.topk_threshold,
            backend: Backend::resolve(cfg.gemm, &cfg.mkl)?,
        })
    }
}
