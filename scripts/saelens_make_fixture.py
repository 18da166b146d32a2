"""Make crates/sae/tests/saelens_fixture/: small SAEs built and saved by SAELens's own
classes (SAE.save_model), and SAELens's encode/decode values on seeded inputs, for the
Rust test crates/sae/tests/it/saelens.rs (Sae::load must reproduce them).

Each SAE has d_in = 16, d_sae = 32 and random parameters (seeded; biases and thresholds
non-zero so every term matters):

- standard:           StandardSAE, apply_b_dec_to_input = True
- standard_rescale:   StandardSAE, normalize_activations = "constant_norm_rescale"
- standard_no_b_dec:  StandardSAE, apply_b_dec_to_input = False
- topk:               TopKSAE, k = 4
- topk_rescale_norm:  TopKSAE, k = 4, rescale_acts_by_decoder_norm = True
- jumprelu:           JumpReLUSAE, thresholds mostly positive, a few negative
- jb_shaped:          a StandardSAE whose cfg.json is then rewritten in the pre-6.0 flat
                      layout of the gpt2-small-res-jb release (hook_point, dtype
                      "torch.float32", ...) with the release's config override
                      model_from_pretrained_kwargs = {"center_writing_weights": true}:
                      the SAE reads TransformerLens residuals with centred writing
                      weights, i.e. the HF residual minus its per-token mean. Its
                      expected values are SAELens's encode/decode of the mean-centred
                      input, with the mean added back to the reconstruction (what
                      splicing it into an HF-style forward needs). SAELens itself loads
                      the rewritten file (checked here) and keeps the override in
                      cfg.metadata.

values.json holds, per SAE: x (rows, d_in), feature_acts = sae.encode(x),
x_hat = sae.decode(feature_acts) (SAELens undoes its own input normalisation in
decode), all float32 from torch on CPU.

Run (needs sae-lens; see README "SAEs"):
    python -m venv --system-site-packages /work/venv-saelens
    /work/venv-saelens/bin/pip install sae-lens
    /work/venv-saelens/bin/python scripts/saelens_make_fixture.py
"""
import json
import pathlib
import shutil

import sae_lens
import torch
from sae_lens import (
    SAE,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "sae" / "tests" / "saelens_fixture"
D_IN, D_SAE, ROWS, K = 16, 32, 8, 4


def metadata(hook):
    return {"model_name": "fixture-model", "hook_name": hook, "context_size": 16}


def randomise(sae, gen, threshold=None):
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_IN, D_SAE, generator=gen) * 0.4)
        sae.W_dec.copy_(torch.randn(D_SAE, D_IN, generator=gen) * 0.4)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.2)
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen) * 0.2)
        if threshold is not None:
            sae.threshold.copy_(threshold)
    return sae


def build(name, gen):
    hook = "blocks.1.hook_resid_pre"
    if name == "standard":
        cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)
        sae = StandardSAE(cfg)
    elif name == "standard_rescale":
        cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="constant_norm_rescale")
        sae = StandardSAE(cfg)
    elif name == "standard_no_b_dec":
        cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False)
        sae = StandardSAE(cfg)
    elif name == "topk":
        cfg = TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K)
        sae = TopKSAE(cfg)
    elif name == "topk_rescale_norm":
        cfg = TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True)
        sae = TopKSAE(cfg)
    elif name == "jumprelu":
        cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)
        sae = JumpReLUSAE(cfg)
    elif name == "jb_shaped":
        hook = "blocks.0.hook_resid_pre"
        cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)
        sae = StandardSAE(cfg)
    else:
        raise ValueError(name)
    for k, v in metadata(hook).items():
        sae.cfg.metadata[k] = v
    threshold = None
    if name == "jumprelu":
        threshold = torch.rand(D_SAE, generator=gen) * 0.3
        threshold[:4] = -torch.rand(4, generator=gen) * 0.2  # negative: ReLU still applies
    return randomise(sae, gen, threshold)


def jb_cfg(sae):
    """The pre-6.0 flat cfg.json of jbloom/GPT2-Small-SAEs-Reformatted (fields as that
    release has them), plus the release's config_overrides from pretrained_saes.yaml."""
    return {
        "model_name": "gpt2-small",
        "hook_point": sae.cfg.metadata.hook_name,
        "hook_point_layer": 0,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "is_dataset_tokenized": False,
        "context_size": 128,
        "use_cached_activations": False,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "expansion_factor": D_SAE // D_IN,
        "b_dec_init_method": "geometric_median",
        "l1_coefficient": 8e-05,
        "lr": 0.0004,
        "lp_norm": 1,
        "train_batch_size": 4096,
        "device": "cpu",
        "seed": 42,
        "dtype": "torch.float32",
        "prepend_bos": True,
        "model_from_pretrained_kwargs": {"center_writing_weights": True},
    }


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    gen = torch.Generator().manual_seed(20250601)
    values = {"sae_lens_version": sae_lens.__version__, "saes": {}}
    names = [
        "standard",
        "standard_rescale",
        "standard_no_b_dec",
        "topk",
        "topk_rescale_norm",
        "jumprelu",
        "jb_shaped",
    ]
    for name in names:
        sae = build(name, gen).eval()
        path = OUT / name
        sae.save_model(path)
        x = torch.randn(ROWS, D_IN, generator=gen) * 1.5 + 0.3
        if name == "jb_shaped":
            (path / "cfg.json").write_text(json.dumps(jb_cfg(sae), indent=1) + "\n")
            loaded = SAE.load_from_disk(path)
            assert loaded.cfg.metadata.model_from_pretrained_kwargs == {"center_writing_weights": True}
            assert loaded.cfg.normalize_activations == "none"
            mean = x.mean(dim=-1, keepdim=True)
            with torch.no_grad():
                feature_acts = loaded.encode(x - mean)
                x_hat = loaded.decode(feature_acts) + mean
        else:
            loaded = SAE.load_from_disk(path)
            with torch.no_grad():
                feature_acts = loaded.encode(x)
                x_hat = loaded.decode(feature_acts)
        values["saes"][name] = {
            "architecture": loaded.cfg.architecture(),
            "x": x.tolist(),
            "feature_acts": feature_acts.tolist(),
            "x_hat": x_hat.tolist(),
        }
        print(f"{name}: {loaded.cfg.architecture()}, L0 {float((feature_acts != 0).float().sum(-1).mean()):.2f}")
    (OUT / "values.json").write_text(json.dumps(values) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
