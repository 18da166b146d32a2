//! The forward pass: embeddings, blocks and unembedding, with hook capture, edits at
//! hooks, starting from a cached `resid_pre`, and the trace the backward pass needs.
use std::collections::{BTreeMap, BTreeSet};

use circuitry_core::HookPoint;
use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut3, CowArray, Ix2};

use super::layers::{matmul, tile, AttnCache, Block, NormCache, RotaryMemo};
use super::{Scalar, Transformer};
use crate::{Error, Result};

/// Where a forward pass starts.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a, A> {
    /// Token ids, embedded with positions `max(cumsum(mask) - 1, 0)`.
    Tokens(ArrayView2<'a, u32>), // (batch, seq)
    /// The residual stream entering block `layer` (`blocks.{layer}.hook_resid_pre`);
    /// the blocks below are skipped.
    ResidPre {
        /// The block to start at.
        layer: usize,
        /// Its input.
        resid: ArrayView3<'a, A>, // (batch, seq, d_model)
    },
}

/// What to run: the input, the padding mask, the hooks to capture, and whether to
/// compute logits and keep a [`Trace`] for [`Transformer::backward`](super::Transformer::backward).
#[derive(Debug, Clone, Copy)]
pub struct Forward<'a, A> {
    /// Tokens or a cached residual.
    pub input: Input<'a, A>,
    /// 1 = token, 0 = padding; `None` = no padding.
    pub attention_mask: Option<ArrayView2<'a, u8>>, // (batch, seq)
    /// Hooks whose values are returned.
    pub capture: &'a [HookPoint],
    /// Compute logits (default true; the unembedding is often a third of the work).
    pub logits: bool,
    /// Compute logits at the last position only: `(batch, 1, vocab)` (default false;
    /// a metric of the next token needs no more, and the unembedding of every
    /// position can cost as much as the blocks).
    pub last_logits: bool,
    /// Compute, at the last position, only the logits of these vocabulary ids
    /// (batch, n): `(batch, 1, n)` (see [`Forward::logits_of`]).
    pub logit_ids: Option<ArrayView2<'a, u32>>,
    /// Keep the intermediate values the backward pass needs (default false).
    pub trace: bool,
    /// Keys and values of positions before the input's (see [`Forward::prefix`]).
    pub prefix: Option<&'a KvPrefix<A>>,
    /// Run the last block past its keys and values at the last position only (see
    /// [`Forward::trim_last_block`]).
    pub trim_last_block: bool,
}

/// The keys (rotated, for rotary models) and values of a sequence's first positions at
/// every block from `start_layer`, taken from a traced run
/// ([`Transformer::kv_prefix`]). A run of the later positions alone from a cached
/// `resid_pre`, with this prefix ([`Forward::prefix`]), computes what a run of the
/// whole sequence computes there, as long as the first positions' activations are the
/// same in both — which causal attention guarantees when only later positions change.
#[derive(Debug, Clone)]
pub struct KvPrefix<A> {
    start_layer: usize,
    /// Per block from `start_layer`: (batch, len, 2 d_kv), `[k | v]`.
    layers: Vec<Array3<A>>,
}

impl<A: Scalar> KvPrefix<A> {
    /// The number of positions it holds.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.dim().1)
    }

    /// True when it holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its batch size.
    pub fn batch(&self) -> usize {
        self.layers.first().map_or(0, |l| l.dim().0)
    }

    /// The prefix of `n` stacked copies of the batch: row `r` is row `r % batch`
    /// (for runs that stack several variants of each sequence).
    pub fn repeat(&self, n: usize) -> Self {
        let b = self.batch();
        self.rows(&(0..n * b).map(|r| r % b).collect::<Vec<_>>())
    }

    /// The prefix of a batch whose row `r` is this batch's row `rows[r]` (for runs of
    /// variants of some of the sequences). Panics on a row outside the batch.
    pub fn rows(&self, rows: &[usize]) -> Self {
        KvPrefix {
            start_layer: self.start_layer,
            layers: self
                .layers
                .iter()
                .map(|l| {
                    let (_, len, w) = l.dim();
                    Array3::from_shape_fn((rows.len(), len, w), |(r, p, c)| l[[rows[r], p, c]])
                })
                .collect(),
        }
    }

    /// Block `l`'s keys and values, if it holds them.
    fn layer(&self, l: usize) -> Option<ArrayView3<'_, A>> {
        let i = l.checked_sub(self.start_layer)?;
        self.layers.get(i).map(|a| a.view())
    }
}

impl<'a, A: Scalar> Forward<'a, A> {
    /// Run from token ids (batch, seq), computing logits, capturing nothing.
    pub fn tokens(input_ids: ArrayView2<'a, u32>) -> Self {
        Self::new(Input::Tokens(input_ids))
    }

    /// Run from the input of block `layer` (batch, seq, d_model).
    pub fn from_resid_pre(layer: usize, resid: ArrayView3<'a, A>) -> Self {
        Self::new(Input::ResidPre { layer, resid })
    }

    fn new(input: Input<'a, A>) -> Self {
        Forward {
            input,
            attention_mask: None,
            capture: &[],
            logits: true,
            last_logits: false,
            logit_ids: None,
            trace: false,
            prefix: None,
            trim_last_block: false,
        }
    }

    /// Set the padding mask (batch, seq): 1 = token, 0 = padding.
    pub fn mask(mut self, attention_mask: ArrayView2<'a, u8>) -> Self {
        self.attention_mask = Some(attention_mask);
        self
    }

    /// Set the hooks to capture.
    pub fn capture(mut self, hooks: &'a [HookPoint]) -> Self {
        self.capture = hooks;
        self
    }

    /// Whether to compute logits.
    pub fn logits(mut self, yes: bool) -> Self {
        self.logits = yes;
        self
    }

    /// Whether to compute logits at the last position only (`(batch, 1, vocab)`; a
    /// backward pass then takes d(metric)/d(logits) of that shape).
    pub fn last_logits(mut self, yes: bool) -> Self {
        self.last_logits = yes;
        self
    }

    /// Compute, at the last position, only the logits of the vocabulary ids `ids`
    /// (batch, n): the logits are `(batch, 1, n)`, `[b, 0, j]` being the logit of token
    /// `ids[b, j]`, and a backward pass takes d(metric)/d(logits) of that shape. A metric
    /// that reads a few logits (a logit difference reads two) needs no more: the full
    /// unembedding (vocab × d_model, 49,152 × 576 for SmolLM2) and its backward can cost
    /// as much as a dozen blocks for each row.
    pub fn logits_of(mut self, ids: ArrayView2<'a, u32>) -> Self {
        self.logit_ids = Some(ids);
        self
    }

    /// Whether to keep a trace for the backward pass.
    pub fn trace(mut self, yes: bool) -> Self {
        self.trace = yes;
        self
    }

    /// Run positions `prefix.len()..` of the sequences only: the input (a cached
    /// `resid_pre`, batch, seq, d_model) holds those positions, and attention also reads
    /// the prefix's keys and values, so rotary positions, hooks, logits and the backward
    /// pass are those of the later positions of a whole-sequence run. No padding mask.
    pub fn prefix(mut self, prefix: &'a KvPrefix<A>) -> Self {
        self.prefix = Some(prefix);
        self
    }

    /// Run the last block at the last position only, past the keys and values that its
    /// attention reads at every position: its query, attention output, MLP and the final
    /// norm take one row per sequence instead of `seq`. Nothing else reads them when the
    /// logits are at the last position only ([`Forward::logits_of`],
    /// [`Forward::last_logits`]), which this requires; the logits and every gradient at
    /// an earlier hook are those of the untrimmed run. The last block's `hook_attn_out`,
    /// `hook_resid_mid`, `mlp.hook_post`, `hook_mlp_out` and `hook_resid_post` and
    /// `ln_final.hook_normalized` then hold one position: an edit there sees
    /// (batch, 1, width), and capturing them or asking the backward pass for them is an
    /// error. Worth it when the last block is a noticeable part of the run (a run from a
    /// late `resid_pre`, or a short model) and there are several positions.
    pub fn trim_last_block(mut self, yes: bool) -> Self {
        self.trim_last_block = yes;
        self
    }

    fn dims(&self) -> (usize, usize) {
        match self.input {
            Input::Tokens(ids) => ids.dim(),
            Input::ResidPre { resid, .. } => (resid.dim().0, resid.dim().1),
        }
    }

    fn start_layer(&self) -> usize {
        match self.input {
            Input::Tokens(_) => 0,
            Input::ResidPre { layer, .. } => layer,
        }
    }
}

/// The result of a forward pass.
#[derive(Debug, Clone)]
pub struct Output<A> {
    /// Logits, when asked for: (batch, seq, vocab), or (batch, 1, vocab) with
    /// [`Forward::last_logits`].
    pub logits: Option<Array3<A>>,
    /// The captured hooks, each (batch, seq, width), after any edit at that hook.
    pub hooks: BTreeMap<HookPoint, Array3<A>>,
    /// What the backward pass needs, when asked for.
    pub trace: Option<Trace<A>>,
}

/// The intermediate values of one forward pass, for [`Transformer::backward`](super::Transformer::backward).
#[derive(Debug, Clone)]
pub struct Trace<A> {
    pub(crate) start_layer: usize,
    pub(crate) from_tokens: bool,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// Whether logits were computed at the last position only.
    pub(crate) last_logits: bool,
    /// The vocabulary ids whose logits were computed ([`Forward::logits_of`]).
    pub(crate) logit_ids: Option<Array2<u32>>, // (batch, n)
    /// Positions before the input's that the run read from a [`KvPrefix`].
    pub(crate) prefix_len: usize,
    /// Whether the last block ran at the last position only ([`Forward::trim_last_block`]).
    pub(crate) trimmed: bool,
    /// One per block from `start_layer`.
    pub(crate) layers: Vec<LayerTrace<A>>,
    /// Present when the forward reached `ln_f`.
    pub(crate) ln_f: Option<NormCache<A>>,
}

impl<A: Scalar> Trace<A> {
    /// The trace of the same run on `n` stacked copies of the batch (row `r` is row
    /// `r % batch`), as a forward pass on the stacked input would have made it: for
    /// backward passes of several seeds through one forward (the input is run once, its
    /// trace copied instead of recomputed).
    pub fn repeat(&self, n: usize) -> Trace<A> {
        Trace {
            start_layer: self.start_layer,
            from_tokens: self.from_tokens,
            batch: self.batch * n,
            seq: self.seq,
            last_logits: self.last_logits,
            logit_ids: self.logit_ids.as_ref().map(|ids| tile(ids, n)),
            prefix_len: self.prefix_len,
            trimmed: self.trimmed,
            layers: self
                .layers
                .iter()
                .map(|t| LayerTrace {
                    ln_1: t.ln_1.repeat(n),
                    attn: t.attn.repeat(n),
                    ln_2: t.ln_2.repeat(n),
                    mlp_pre: tile(&t.mlp_pre, n),
                })
                .collect(),
            ln_f: self.ln_f.as_ref().map(|c| c.repeat(n)),
        }
    }

    /// The attention pattern of block `layer`, if the trace covers it (one query per
    /// sequence at the last block of a [`Forward::trim_last_block`] run).
    pub fn attention(&self, layer: usize) -> Option<&ndarray::Array4<A>> /* (batch, head, query, key) */
    {
        let i = layer.checked_sub(self.start_layer)?;
        self.layers.get(i).map(|t| t.attn.probs())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LayerTrace<A> {
    pub(crate) ln_1: NormCache<A>,
    pub(crate) attn: AttnCache<A>,
    pub(crate) ln_2: NormCache<A>,
    /// The MLP's input projection `w_in(ln_2(resid_mid))` (GPT-2: `c_fc`; Llama: gate | up).
    pub(crate) mlp_pre: Array2<A>, // (rows, d_mlp) or (rows, 2 d_mlp)
}

/// An edit that replaces the activation at each hook of `values` with its value there
/// (shapes must match). Use with [`Transformer::run_with`].
pub fn replace_at<A: Scalar>(
    values: &BTreeMap<HookPoint, Array3<A>>,
) -> impl FnMut(HookPoint, ArrayViewMut3<'_, A>) -> Result<()> + '_ {
    move |hook, mut act| {
        if let Some(v) = values.get(&hook) {
            if v.dim() != act.dim() {
                return Err(Error::BadParameter {
                    name: "replacement",
                    value: format!("{hook} of shape {:?}", v.dim()),
                    message: format!("the activation there has shape {:?}", act.dim()),
                });
            }
            act.assign(v);
        }
        Ok(())
    }
}

/// Hook bookkeeping during one forward pass.
struct Ctx<'f, A, F> {
    capture: BTreeSet<HookPoint>,
    hooks: BTreeMap<HookPoint, Array3<A>>,
    edit: &'f mut F,
}

impl<A: Scalar, F> Ctx<'_, A, F> {
    /// Apply the edit at `hook`, capture if asked, and pass the value on.
    fn hook<E>(&mut self, hook: HookPoint, mut x: Array3<A>) -> Result<Array3<A>, E>
    where
        F: FnMut(HookPoint, ArrayViewMut3<'_, A>) -> Result<(), E>,
    {
        (self.edit)(hook, x.view_mut())?;
        if self.capture.contains(&hook) {
            self.hooks.insert(hook, x.clone());
        }
        Ok(x)
    }

    fn done(&self) -> bool {
        self.hooks.len() == self.capture.len()
    }
}

impl<A: Scalar> Transformer<A> {
    /// The keys and values of the first `len` positions at every block `trace` covers,
    /// for runs of the later positions ([`Forward::prefix`]). `trace` must be of a run
    /// without a prefix, and `len` at most its sequence length.
    pub fn kv_prefix(&self, trace: &Trace<A>, len: usize) -> Result<KvPrefix<A>> {
        if trace.prefix_len > 0 || len > trace.seq {
            return Err(Error::BadParameter {
                name: "kv_prefix",
                value: format!("{len} positions"),
                message: format!(
                    "the trace is of {} positions{}: take a prefix of at most that many, from a run without a prefix",
                    trace.seq,
                    if trace.prefix_len > 0 { " after a prefix" } else { "" }
                ),
            });
        }
        let (batch, seq, d) = (trace.batch, trace.seq, self.config.d_model);
        let layers = trace
            .layers
            .iter()
            .map(|t| {
                let qkv = t.attn.qkv(); // (batch·seq, d + 2 d_kv)
                let w = qkv.ncols() - d;
                Array3::from_shape_fn((batch, len, w), |(b, p, c)| qkv[[b * seq + p, d + c]])
            })
            .collect();
        Ok(KvPrefix {
            start_layer: trace.start_layer,
            layers,
        })
    }

    /// Logits (batch, seq, vocab) and the `capture`d hooks for `input_ids` (batch, seq)
    /// with an optional padding mask (batch, seq; 1 = token, 0 = padding).
    pub fn forward(
        &self,
        input_ids: ArrayView2<'_, u32>,
        attention_mask: Option<ArrayView2<'_, u8>>,
        capture: &[HookPoint],
    ) -> Result<Output<A>> {
        let mut fwd = Forward::tokens(input_ids).capture(capture);
        fwd.attention_mask = attention_mask;
        self.run(&fwd)
    }

    /// Run `fwd` without edits.
    pub fn run(&self, fwd: &Forward<'_, A>) -> Result<Output<A>> {
        self.run_with(fwd, |_, _| Ok::<(), Error>(()))
    }

    /// Run `fwd`, calling `edit(hook, activation)` at every hook point as it is
    /// computed (batch, seq, width); the edited value is what flows on and what is
    /// captured. Edits run at `hook_embed`, `hook_pos_embed` (from tokens), then per
    /// block `resid_pre`, `attn_out`, `resid_mid`, `mlp.hook_post`, `mlp_out`,
    /// `resid_post`, then `ln_final.hook_normalized`.
    pub fn run_with<E, F>(&self, fwd: &Forward<'_, A>, mut edit: F) -> Result<Output<A>, E>
    where
        E: From<Error>,
        F: FnMut(HookPoint, ArrayViewMut3<'_, A>) -> Result<(), E>,
    {
        let (batch, seq) = fwd.dims();
        let start = fwd.start_layer();
        let keys = self.check_input(fwd)?; // (batch, seq)
        for &hook in fwd.capture {
            self.check_hook(
                hook,
                start,
                matches!(fwd.input, Input::Tokens(_)),
                "capture",
            )?;
            if fwd.trim_last_block {
                self.check_untrimmed(hook, "capture")?;
            }
        }
        if fwd.trim_last_block && fwd.logits && !fwd.last_logits && fwd.logit_ids.is_none() {
            return Err(Error::BadParameter {
                name: "trim_last_block",
                value: "logits at every position".into(),
                message: "a trimmed last block has the last position only: ask for logits there (logits_of or last_logits) or for none".into(),
            }
            .into());
        }
        let mut ctx = Ctx {
            capture: fwd.capture.iter().copied().collect(),
            hooks: BTreeMap::new(),
            edit: &mut edit,
        };
        let d = self.config.d_model;
        let pre = fwd.prefix.map_or(0, KvPrefix::len);
        let pos = positions(keys.view()); // (batch, pre + seq)
        let pos = pos.slice(s![.., pre..]).to_owned(); // (batch, seq)
        let mut x = match fwd.input {
            Input::Tokens(ids) => {
                let embed = ctx.hook(HookPoint::Embed, self.wte_rows(ids))?;
                match &self.wpe {
                    Some(wpe) => embed + ctx.hook(HookPoint::PosEmbed, self.wpe_rows(wpe, &pos))?,
                    None => embed,
                }
            }
            Input::ResidPre { resid, .. } => resid.as_standard_layout().into_owned(),
        };
        let full = fwd.logits || fwd.trace;
        let mut layers = Vec::new();
        let mut memo = RotaryMemo::new();
        let n_layer = self.blocks.len();
        for (l, block) in self.blocks.iter().enumerate().skip(start) {
            if !full && ctx.done() {
                break;
            }
            let prefix = fwd.prefix.and_then(|kv| kv.layer(l));
            let queries = if fwd.trim_last_block && l + 1 == n_layer {
                1
            } else {
                seq
            };
            let (y, trace) = block.forward_hooked(
                l,
                x,
                (keys.view(), pos.view(), prefix, &mut memo),
                queries,
                &mut ctx,
            )?;
            x = y;
            if fwd.trace {
                layers.push(trace);
            }
        }
        let mut logits = None;
        let mut ln_f = None;
        if full || ctx.capture.contains(&HookPoint::LnFinal) {
            let out_seq = x.dim().1; // 1 after a trimmed last block
            let (y, cache) = self.ln_f.forward_cached(rows(&x).view());
            let y = ctx.hook(HookPoint::LnFinal, unrows(y, batch, out_seq))?;
            if fwd.logits {
                let w_u = self.unembedding(); // (vocab, d)
                logits = Some(if let Some(ids) = fwd.logit_ids {
                    let last = y.slice(s![.., out_seq - 1, ..]); // (batch, d)
                    let (_, n) = ids.dim();
                    Array3::from_shape_fn((batch, 1, n), |(b, _, j)| {
                        last.row(b).dot(&w_u.row(ids[[b, j]] as usize))
                    })
                } else if fwd.last_logits {
                    let last = y.slice(s![.., out_seq - 1, ..]); // (batch, d)
                    let l = matmul(last, w_u.t()); // (batch, vocab)
                    unrows(l, batch, 1)
                } else {
                    unrows(matmul(rows(&y).view(), w_u.t()), batch, seq) // (rows, vocab)
                });
            }
            if fwd.trace {
                ln_f = Some(cache);
            }
        }
        debug_assert_eq!(x.dim().2, d);
        let trace = fwd.trace.then(|| Trace {
            start_layer: start,
            from_tokens: matches!(fwd.input, Input::Tokens(_)),
            batch,
            seq,
            last_logits: fwd.logits && (fwd.last_logits || fwd.logit_ids.is_some()),
            logit_ids: fwd
                .logit_ids
                .filter(|_| fwd.logits)
                .map(|ids| ids.to_owned()),
            prefix_len: pre,
            trimmed: fwd.trim_last_block,
            layers,
            ln_f,
        });
        Ok(Output {
            logits,
            hooks: ctx.hooks,
            trace,
        })
    }

    /// Check shapes and ids; return which keys may be attended to (batch, seq).
    fn check_input(&self, fwd: &Forward<'_, A>) -> Result<Array2<bool>> {
        let (batch, seq) = fwd.dims();
        let bad = |name, value: String, message: String| Error::BadParameter {
            name,
            value,
            message,
        };
        if batch == 0 || seq == 0 {
            return Err(bad(
                "input",
                format!("shape ({batch}, {seq})"),
                "batch and sequence must be non-empty".into(),
            ));
        }
        if let Some(ids) = fwd.logit_ids {
            if ids.nrows() != batch || ids.ncols() == 0 {
                return Err(bad(
                    "logit ids",
                    format!("shape {:?}", ids.dim()),
                    format!(
                        "expected ({batch}, n ≥ 1): the vocabulary ids of each sequence's logits"
                    ),
                ));
            }
            if let Some(&t) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                return Err(bad(
                    "logit ids",
                    format!("token {t}"),
                    format!("ids must be below vocab_size = {}", self.config.vocab_size),
                ));
            }
        }
        let pre = fwd.prefix.map_or(0, KvPrefix::len);
        if pre + seq > self.config.n_ctx {
            return Err(bad(
                "input",
                format!("sequence length {}", pre + seq),
                format!("the model's context is {} positions", self.config.n_ctx),
            ));
        }
        if let Some(kv) = fwd.prefix {
            let start = fwd.start_layer();
            let problem = if matches!(fwd.input, Input::Tokens(_)) {
                Some("a run with a prefix starts from a cached resid_pre, not from tokens".into())
            } else if fwd.attention_mask.is_some() {
                Some("a run with a prefix takes no padding mask".into())
            } else if kv.batch() != batch {
                Some(format!("the input's batch is {batch}"))
            } else if kv.layer(start).is_none() {
                Some(format!(
                    "the run starts at block {start}, which it does not cover"
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(bad(
                    "prefix",
                    format!(
                        "{} positions of {} sequences from block {}",
                        kv.len(),
                        kv.batch(),
                        kv.start_layer
                    ),
                    message,
                ));
            }
            return Ok(Array2::from_elem((batch, pre + seq), true));
        }
        match fwd.input {
            Input::Tokens(ids) => {
                if let Some(&t) = ids.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                    return Err(bad(
                        "input_ids",
                        format!("token {t}"),
                        format!("ids must be below vocab_size = {}", self.config.vocab_size),
                    ));
                }
            }
            Input::ResidPre { layer, resid } => {
                if layer >= self.config.n_layer {
                    return Err(bad(
                        "resid_pre layer",
                        layer.to_string(),
                        format!("the model has {} blocks", self.config.n_layer),
                    ));
                }
                if resid.dim().2 != self.config.d_model {
                    return Err(bad(
                        "resid_pre",
                        format!("width {}", resid.dim().2),
                        format!("d_model is {}", self.config.d_model),
                    ));
                }
            }
        }
        match fwd.attention_mask {
            None => Ok(Array2::from_elem((batch, seq), true)),
            Some(m) if m.dim() == (batch, seq) => Ok(m.mapv(|v| v != 0)),
            Some(m) => Err(bad(
                "attention_mask",
                format!("shape {:?}", m.dim()),
                format!("the input is ({batch}, {seq})"),
            )),
        }
    }

    /// Check that `hook` is computed by a run starting at block `start`.
    pub(crate) fn check_hook(
        &self,
        hook: HookPoint,
        start: usize,
        tokens: bool,
        what: &'static str,
    ) -> Result<()> {
        let n = self.config.n_layer;
        let fail = |message: String| {
            Err(Error::BadParameter {
                name: what,
                value: hook.to_string(),
                message,
            })
        };
        match hook {
            HookPoint::Embed | HookPoint::PosEmbed if !tokens => fail(format!(
                "the run starts at blocks.{start}.hook_resid_pre, not from tokens"
            )),
            HookPoint::PosEmbed if self.wpe.is_none() => fail(format!(
                "a {} model has rotary positions and no hook_pos_embed",
                self.config.family
            )),
            HookPoint::Embed | HookPoint::PosEmbed | HookPoint::LnFinal => Ok(()),
            HookPoint::ToyInput | HookPoint::ToyHidden | HookPoint::ToyLogits => {
                fail("a toy-model hook is not a transformer hook".into())
            }
            _ => match hook.layer() {
                Some(l) if l >= n => fail(format!("the model has blocks 0..{}", n - 1)),
                Some(l) if l < start => {
                    fail(format!("the run starts at blocks.{start}.hook_resid_pre"))
                }
                _ => Ok(()),
            },
        }
    }

    /// Whether `hook` keeps every position in a run with [`Forward::trim_last_block`]
    /// (so that it can be captured, edited with a whole-sequence value, or asked of the
    /// backward pass there): any hook but the last block's after its `resid_pre` and
    /// `ln_final.hook_normalized`.
    pub fn kept_by_trim(&self, hook: HookPoint) -> bool {
        self.check_untrimmed(hook, "hook").is_ok()
    }

    /// Refuse `hook` where a trimmed last block ([`Forward::trim_last_block`]) holds the
    /// last position only.
    pub(crate) fn check_untrimmed(&self, hook: HookPoint, what: &'static str) -> Result<()> {
        let last = self.config.n_layer - 1;
        let trimmed = match hook {
            HookPoint::LnFinal => true,
            HookPoint::ResidPre { .. } => false,
            _ => hook.layer() == Some(last),
        };
        if trimmed {
            return Err(Error::BadParameter {
                name: what,
                value: hook.to_string(),
                message: format!(
                    "the run trims its last block (trim_last_block): after blocks.{last}.hook_resid_pre only the last position is computed; run without trimming to read this hook"
                ),
            });
        }
        Ok(())
    }

    fn wte_rows(&self, ids: ArrayView2<'_, u32>) -> Array3<A> /* (batch, seq, d) */ {
        let (batch, seq) = ids.dim();
        let mut out = Array3::zeros((batch, seq, self.config.d_model));
        for ((b, s), &t) in ids.indexed_iter() {
            out.slice_mut(ndarray::s![b, s, ..])
                .assign(&self.wte.row(t as usize));
        }
        out
    }

    fn wpe_rows(&self, wpe: &Array2<A>, pos: &Array2<usize>) -> Array3<A> /* (batch, seq, d) */ {
        let (batch, seq) = pos.dim();
        let mut out = Array3::zeros((batch, seq, self.config.d_model));
        for ((b, s), &p) in pos.indexed_iter() {
            out.slice_mut(ndarray::s![b, s, ..]).assign(&wpe.row(p));
        }
        out
    }
}

/// Position ids `max(cumsum(mask) - 1, 0)` (batch, seq).
fn positions(keys: ArrayView2<'_, bool>) -> Array2<usize> {
    let mut pos = Array2::zeros(keys.dim());
    for (b, row) in keys.outer_iter().enumerate() {
        let mut count = 0usize;
        for (s, &k) in row.iter().enumerate() {
            count += usize::from(k);
            pos[[b, s]] = count.saturating_sub(1);
        }
    }
    pos
}

/// What every block of a run reads besides its input: which keys may be attended to
/// (batch, prefix + seq), the rotary positions (batch, seq), the prefix's keys and values
/// (batch, prefix, 2 d_kv), and the rotary table of the run's earlier blocks.
type BlockArgs<'a, 'm, A> = (
    ArrayView2<'a, bool>,
    ArrayView2<'a, usize>,
    Option<ArrayView3<'a, A>>,
    &'m mut RotaryMemo<A>,
);

impl<A: Scalar> Block<A> {
    /// Block `l` on `x` (batch, seq, d), calling the hooks as they come; past the keys
    /// and values, only the last `queries` positions (`seq` but in a trimmed last block).
    fn forward_hooked<E, F>(
        &self,
        l: usize,
        x: Array3<A>, // (batch, seq, d)
        (keys, positions, prefix, memo): BlockArgs<'_, '_, A>,
        queries: usize,
        ctx: &mut Ctx<'_, A, F>,
    ) -> Result<(Array3<A>, LayerTrace<A>), E>
    where
        F: FnMut(HookPoint, ArrayViewMut3<'_, A>) -> Result<(), E>,
    {
        let batch = x.dim().0;
        let x = ctx.hook(HookPoint::ResidPre { layer: l }, x)?;
        let (a, ln_1) = self.ln_1.forward_cached(rows(&x).view());
        let (attn_out, attn) =
            self.attn
                .forward_cached(a.view(), keys, positions, prefix, memo, queries);
        // From here on, the last `queries` positions only (all of them but in a trimmed
        // last block).
        let seq = queries;
        let x = if x.dim().1 == seq {
            x
        } else {
            x.slice(s![.., x.dim().1 - seq.., ..]).to_owned()
        };
        let attn_out = ctx.hook(
            HookPoint::AttnOut { layer: l },
            unrows(attn_out, batch, seq),
        )?;
        let mid = ctx.hook(HookPoint::ResidMid { layer: l }, x + &attn_out)?;
        let (c, ln_2) = self.ln_2.forward_cached(rows(&mid).view());
        let mlp_pre = self.mlp.w_in.forward(c.view()); // (rows, d_mlp or 2 d_mlp)
        let post = ctx.hook(
            HookPoint::MlpPost { layer: l },
            unrows(self.mlp.activate(&mlp_pre), batch, seq),
        )?;
        let mlp_out = self.mlp.w_out.forward(rows(&post).view());
        let mlp_out = ctx.hook(HookPoint::MlpOut { layer: l }, unrows(mlp_out, batch, seq))?;
        let out = ctx.hook(HookPoint::ResidPost { layer: l }, mid + &mlp_out)?;
        Ok((
            out,
            LayerTrace {
                ln_1,
                attn,
                ln_2,
                mlp_pre,
            },
        ))
    }
}

/// View (batch, seq, w) as (batch·seq, w). Activations here are built in standard
/// layout (edits get a view and cannot change it), so this borrows; it copies otherwise.
pub(crate) fn rows<A: Scalar>(x: &Array3<A>) -> CowArray<'_, A, Ix2> {
    let (b, s, w) = x.dim();
    match x.view().into_shape_with_order((b * s, w)) {
        Ok(v) => CowArray::from(v),
        Err(_) => CowArray::from(Array2::from_shape_fn((b * s, w), |(r, c)| {
            x[[r / s, r % s, c]]
        })),
    }
}

/// (batch·seq, w) back to (batch, seq, w), without copying when `x` is in standard layout.
pub(crate) fn unrows<A: Scalar>(x: Array2<A>, batch: usize, seq: usize) -> Array3<A> {
    let w = x.ncols();
    let x = if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    };
    match x.into_shape_with_order((batch, seq, w)) {
        Ok(y) => y,
        // Only when batch · seq != rows, which the callers rule out.
        Err(_) => Array3::from_elem((batch, seq, w), A::nan()),
    }
}
