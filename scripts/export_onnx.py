#!/usr/bin/env python3
"""Export a local Hugging Face GPT-2 or Llama checkpoint to ONNX with one output per hook point.

    python scripts/export_onnx.py MODEL_DIR OUT.onnx [--logits] [--hooks GLOB ...]

MODEL_DIR holds `config.json` and `model.safetensors` (gpt2, distilgpt2, gpt2-medium, a
`save_pretrained` folder, ...; or a `LlamaForCausalLM` folder such as models/smollm2-135m made
by scripts/setup-model.sh). The family is chosen from config.json's `model_type` ("gpt2" or
"llama"). The graph has

  inputs   input_ids       int64 (batch, seq)
           attention_mask  int64 (batch, seq)   1 = real token, 0 = padding (left or right)
  outputs  blocks.L.hook_resid_pre   float32 (batch, seq, d_model)  input of block L, every L
           blocks.L.hook_attn_out    float32 (batch, seq, d_model)  GPT-2: attn.c_proj output
                                     (bias incl.); Llama: self_attn.o_proj output
           blocks.L.hook_mlp_out     float32 (batch, seq, d_model)  GPT-2: mlp.c_proj output
                                     (bias incl.); Llama: mlp.down_proj output
           blocks.{n-1}.hook_resid_post float32 (batch, seq, d_model)  final residual, BEFORE
                                     the final norm (GPT-2 ln_f, Llama model.norm)
           logits                    float32 (batch, seq, vocab)    only with --logits

in this order: for each layer L, resid_pre, attn_out, mlp_out; then the final resid_post; then
logits. Batch and sequence axes are dynamic (seq up to n_ctx). Position ids are computed inside
the graph from the mask, `max(cumsum(mask) - 1, 0)`, as Hugging Face generation does, so left
padding gives the same activations at real tokens as no padding (for Llama these are the RoPE
positions). Attention is transformers' eager implementation. Outputs at padded positions are
meaningless and must never be used.

The outputs are captured by forward hooks on the Hugging Face modules inside a wrapper module,
so their names do not depend on the exporter's node names.

`--hooks GLOB ...` keeps only the outputs whose hook names match one of the globs (e.g.
`'blocks.*.hook_resid_pre'`) and removes every node they do not need (onnx's
`extract_model`). ONNX Runtime computes every node of a graph whatever outputs are fetched,
so a graph for dumping the 12 `resid_pre` of GPT-2 small no longer runs its last block
(about 8% less work); the outputs are unchanged. The sidecar lists the kept outputs.

Beside OUT.onnx the script writes the sidecar `OUT.onnx.json` (same path plus `.json`):

  {
    "format": "circuitry-onnx-hooks", "version": 1,
    "model_type": "gpt2", "family": "gpt2", "n_layer": 4, "d_model": 64, "n_head": 4,
    "n_kv_head": 4, "n_ctx": 64, "vocab_size": 745, "bos_token_id": 0 | null, "logits": false,
    "fingerprint": {"algorithm": "blake3", "file": "model.safetensors", "hex": "<64 hex>"},
    "tokenizer_fingerprint": {"algorithm": "blake3", "file": "tokenizer.json", "hex": "..."} | null,
    "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
               {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}],
    "position_ids": "max(cumsum(attention_mask, -1) - 1, 0)",
    "outputs": [{"name": "blocks.0.hook_resid_pre", "hook": "blocks.0.hook_resid_pre",
                 "dtype": "float32", "shape": ["batch", "seq", 64], "width": 64}, ...]
  }

`model_type` is config.json's; `family` is "gpt2" or "llama" (the forward the graph implements);
`n_kv_head` is the number of key/value heads (= n_head for GPT-2; fewer with grouped-query
attention); `n_ctx` is n_positions (GPT-2) or max_position_embeddings (Llama); `bos_token_id` is
config.json's (null when absent).

The fingerprint is BLAKE3 (hex) of the model.safetensors bytes: what
`circuitry_core::fingerprint::fingerprint_path` gives for that file.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from pathlib import Path

import blake3
import torch
from torch import nn

SIDECAR_FORMAT = "circuitry-onnx-hooks"
SIDECAR_VERSION = 1
POSITION_IDS_RULE = "max(cumsum(attention_mask, -1) - 1, 0)"


def hook_names(n_layer: int, logits: bool) -> list[str]:
    """Graph output names, in graph order."""
    names = []
    for layer in range(n_layer):
        names += [
            f"blocks.{layer}.hook_resid_pre",
            f"blocks.{layer}.hook_attn_out",
            f"blocks.{layer}.hook_mlp_out",
        ]
    names.append(f"blocks.{n_layer - 1}.hook_resid_post")
    if logits:
        names.append("logits")
    return names


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq) int64 positions that skip left padding: max(cumsum(mask) - 1, 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


class _HookStore(nn.Module):
    """Records hook activations of one forward through forward hooks on the HF modules."""

    def __init__(self):
        super().__init__()
        self._store: dict[str, torch.Tensor] = {}

    def _save_input(self, name):
        # Pre-hook with kwargs: the residual is the first argument, positional or `hidden_states`.
        def hook(_module, args, kwargs):
            self._store[name] = args[0] if args else kwargs["hidden_states"]

        return hook

    def _save_output(self, name):
        def hook(_module, _args, output):
            self._store[name] = output

        return hook


class HookedGpt2(_HookStore):
    """Runs a Hugging Face GPT2LMHeadModel and returns the hook activations as a tuple.

    Forward hooks on the HF modules record the activations of one call; `forward` returns them
    in the order of `hook_names(n_layer, logits)`.
    """

    def __init__(self, model: nn.Module, logits: bool):
        super().__init__()
        self.model = model
        self.logits = logits
        self.n_layer = model.config.n_layer
        transformer = model.transformer
        for layer, block in enumerate(transformer.h):
            block.register_forward_pre_hook(
                self._save_input(f"blocks.{layer}.hook_resid_pre"), with_kwargs=True)
            block.attn.c_proj.register_forward_hook(self._save_output(f"blocks.{layer}.hook_attn_out"))
            block.mlp.c_proj.register_forward_hook(self._save_output(f"blocks.{layer}.hook_mlp_out"))
        transformer.ln_f.register_forward_pre_hook(
            self._save_input(f"blocks.{self.n_layer - 1}.hook_resid_post"), with_kwargs=True
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        # input_ids, attention_mask: (batch, seq) int64
        self._store = {}
        position_ids = position_ids_from_mask(attention_mask)  # (batch, seq)
        out = self.model.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        results = [self._store[name] for name in hook_names(self.n_layer, False)]
        if self.logits:
            results.append(self.model.lm_head(out.last_hidden_state))  # (batch, seq, vocab)
        self._store = {}
        return tuple(results)


class HookedLlama(_HookStore):
    """Runs a Hugging Face LlamaForCausalLM and returns the hook activations as a tuple.

    resid_pre[L] is the input of decoder layer L, attn_out[L] the output of self_attn.o_proj,
    mlp_out[L] the output of mlp.down_proj (no biases in SmolLM2, included when present), the
    final resid_post the input of model.norm. RoPE positions come from the mask.
    """

    def __init__(self, model: nn.Module, logits: bool):
        super().__init__()
        self.model = model
        self.logits = logits
        self.n_layer = model.config.num_hidden_layers
        inner = model.model
        for layer, block in enumerate(inner.layers):
            block.register_forward_pre_hook(
                self._save_input(f"blocks.{layer}.hook_resid_pre"), with_kwargs=True)
            block.self_attn.o_proj.register_forward_hook(
                self._save_output(f"blocks.{layer}.hook_attn_out"))
            block.mlp.down_proj.register_forward_hook(
                self._save_output(f"blocks.{layer}.hook_mlp_out"))
        inner.norm.register_forward_pre_hook(
            self._save_input(f"blocks.{self.n_layer - 1}.hook_resid_post"), with_kwargs=True
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        # input_ids, attention_mask: (batch, seq) int64
        self._store = {}
        position_ids = position_ids_from_mask(attention_mask)  # (batch, seq)
        out = self.model.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        results = [self._store[name] for name in hook_names(self.n_layer, False)]
        if self.logits:
            results.append(self.model.lm_head(out.last_hidden_state))  # (batch, seq, vocab)
        self._store = {}
        return tuple(results)


# config.json model_type -> (family, transformers class name, hooked wrapper)
FAMILIES = {
    "gpt2": ("gpt2", "GPT2LMHeadModel", HookedGpt2),
    "llama": ("llama", "LlamaForCausalLM", HookedLlama),
}


def model_type_of(model_dir: Path) -> str:
    """config.json's model_type; SystemExit naming the file and the supported types otherwise."""
    for name in ("config.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise SystemExit(
                f"export_onnx.py: {model_dir / name} not found; MODEL_DIR must be a Hugging Face "
                "GPT-2 or Llama folder with config.json and model.safetensors (save_pretrained "
                "layout)"
            )
    try:
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise SystemExit(f"export_onnx.py: {model_dir / 'config.json'}: not a JSON object ({e})")
    if model_type not in FAMILIES:
        raise SystemExit(
            f"export_onnx.py: {model_dir / 'config.json'}: model_type is {model_type!r}; "
            f"supported: {', '.join(repr(k) for k in FAMILIES)} (a GPT2LMHeadModel or "
            "LlamaForCausalLM folder)"
        )
    return model_type


def load_model(model_dir: Path) -> nn.Module:
    """A GPT2LMHeadModel or LlamaForCausalLM from a local folder, eval mode, eager attention."""
    import transformers

    model_type = model_type_of(model_dir)
    cls = getattr(transformers, FAMILIES[model_type][1])
    model = cls.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def wrap(model: nn.Module, logits: bool) -> nn.Module:
    """The hooked wrapper of `model`'s family (see FAMILIES)."""
    return FAMILIES[model.config.model_type][2](model, logits)


def n_layers_of(config) -> int:
    return config.n_layer if config.model_type == "gpt2" else config.num_hidden_layers


def n_ctx_of(config) -> int:
    return config.n_positions if config.model_type == "gpt2" else config.max_position_embeddings


def file_blake3(path: Path) -> str:
    hasher = blake3.blake3()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def sidecar(model_dir: Path, config, logits: bool) -> dict:
    family = FAMILIES[config.model_type][0]
    if family == "gpt2":
        n_layer, d_model, n_head = config.n_layer, config.n_embd, config.n_head
        n_kv_head = n_head
    else:
        n_layer, d_model = config.num_hidden_layers, config.hidden_size
        n_head, n_kv_head = config.num_attention_heads, config.num_key_value_heads
    outputs = []
    for name in hook_names(n_layer, logits):
        width = config.vocab_size if name == "logits" else d_model
        outputs.append({"name": name, "hook": name, "dtype": "float32",
                        "shape": ["batch", "seq", width], "width": width})
    tokenizer = model_dir / "tokenizer.json"
    return {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "model_type": config.model_type,
        "family": family,
        "n_layer": n_layer,
        "d_model": d_model,
        "n_head": n_head,
        "n_kv_head": n_kv_head,
        "n_ctx": n_ctx_of(config),
        "vocab_size": config.vocab_size,
        "bos_token_id": config.bos_token_id,
        "logits": logits,
        "fingerprint": {"algorithm": "blake3", "file": "model.safetensors",
                        "hex": file_blake3(model_dir / "model.safetensors")},
        "tokenizer_fingerprint": (
            {"algorithm": "blake3", "file": "tokenizer.json", "hex": file_blake3(tokenizer)}
            if tokenizer.is_file() else None
        ),
        "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "seq"]},
                   {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "seq"]}],
        "position_ids": POSITION_IDS_RULE,
        "outputs": outputs,
    }


def select_hooks(names: list[str], globs: list[str]) -> list[str]:
    """The names matching any of `globs`, in graph order; ValueError for a glob matching none."""
    for g in globs:
        if not any(fnmatch.fnmatchcase(n, g) for n in names):
            raise ValueError(f"--hooks {g!r} matches none of this model's outputs: "
                             f"{', '.join(names)}; use one of them or a glob such as "
                             f"'blocks.*.hook_resid_pre'")
    return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]


def export(model_dir: Path, out: Path, logits: bool = False,
           hooks: list[str] | None = None) -> dict:
    """Export MODEL_DIR to OUT (ONNX) and write OUT.json; returns the sidecar.

    `hooks`: globs of the outputs to keep (all when None); the graph is pruned to them."""
    model_dir = Path(model_dir)
    out = Path(out)
    model_type_of(model_dir)  # a clear error before anything is loaded
    model = load_model(model_dir)
    n_layer = n_layers_of(model.config)
    all_names = hook_names(n_layer, logits)
    keep = select_hooks(all_names, hooks) if hooks else all_names
    wrapper = wrap(model, logits).eval()
    n_ctx = n_ctx_of(model.config)
    seq = min(8, n_ctx)
    input_ids = torch.zeros((2, seq), dtype=torch.int64)
    attention_mask = torch.ones((2, seq), dtype=torch.int64)
    attention_mask[0, :2] = 0  # a left-padded example, so the mask path is traced
    names = all_names
    batch = torch.export.Dim("batch", min=1)
    seq_dim = torch.export.Dim("seq", min=1, max=n_ctx)
    dyn = {"input_ids": {0: batch, 1: seq_dim}, "attention_mask": {0: batch, 1: seq_dim}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (input_ids, attention_mask),
            dynamo=True,
            input_names=["input_ids", "attention_mask"],
            output_names=names,
            dynamic_shapes=dyn,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    program.save(str(tmp), external_data=False)
    if keep != all_names:
        import onnx.utils

        pruned = out.with_name(out.name + ".pruned.tmp")
        onnx.utils.extract_model(str(tmp), str(pruned), ["input_ids", "attention_mask"], keep)
        os.replace(pruned, tmp)
    os.replace(tmp, out)
    meta = sidecar(model_dir, model.config, logits)
    meta["outputs"] = [o for o in meta["outputs"] if o["name"] in keep]
    side = out.with_name(out.name + ".json")
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_side, side)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="HF GPT-2 or Llama folder (config.json, model.safetensors)")
    parser.add_argument("out", type=Path, help="output .onnx path; the sidecar is OUT.json")
    parser.add_argument("--logits", action="store_true", help="also output logits (bigger, slower)")
    parser.add_argument("--hooks", nargs="+", metavar="GLOB",
                        help="keep only these outputs (hook names or globs, e.g. "
                             "'blocks.*.hook_resid_pre') and the nodes they need")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        meta = export(args.model_dir, args.out, args.logits, args.hooks)
    except ValueError as e:
        print(f"export_onnx.py: error: {e}", file=sys.stderr)
        return 2
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(meta['outputs'])} outputs) "
          f"and {args.out}.json; model blake3 {meta['fingerprint']['hex'][:16]}…", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
