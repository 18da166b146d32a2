"""Have SAELens load SAEs written by circuitry (Sae::save, as circuitry-train-sae writes
them) and check that SAELens's encode/decode reproduce the values our code computed.

    /work/venv-saelens/bin/python scripts/saelens_load_ours.py \
        [--fixture crates/sae/tests/ours_fixture] [--tolerance 1e-5] [SAE_DIR ...]

--fixture DIR: DIR/values.json (written by
  `cargo run --release -p circuitry-sae --example saelens_ours_fixture`) names SAE
  directories under DIR, each with its inputs x and our feature_acts and x_hat.
SAE_DIR ...: SAEs from a circuitry-train-sae run (OUT/<hook>/): SAELens loads each
  and its cfg is checked (architecture, d_in, d_sae, hook, threshold for JumpReLU).

A mean-centred SAE is written as SAELens writes gpt2-small-res-jb's: normalize
"none" with metadata.model_from_pretrained_kwargs.center_writing_weights = true
(its inputs are residuals of a TransformerLens model with centred writing weights);
here the centring is applied to x before SAELens's encode and the mean added back
after its decode, as such a model would.

Exit status 0 when every value is within the tolerance, 1 otherwise.
"""
import argparse
import json
import pathlib
import sys

import torch
from sae_lens import SAE


def saelens_forward(sae, x):
    kwargs = sae.cfg.metadata.model_from_pretrained_kwargs or {}
    with torch.no_grad():
        if kwargs.get("center_writing_weights"):
            mean = x.mean(dim=-1, keepdim=True)
            f = sae.encode(x - mean)
            return f, sae.decode(f) + mean
        f = sae.encode(x)
        return f, sae.decode(f)


def check_fixture(root, tol):
    values = json.loads((root / "values.json").read_text())
    worst, ok = 0.0, True
    for name, v in values.items():
        sae = SAE.load_from_disk(root / name)
        assert sae.cfg.architecture() == v["architecture"], (name, sae.cfg.architecture())
        assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_pre", sae.cfg.metadata
        x = torch.tensor(v["x"], dtype=torch.float32)
        f, x_hat = saelens_forward(sae, x)
        df = (f - torch.tensor(v["feature_acts"])).abs().max().item()
        dx = (x_hat - torch.tensor(v["x_hat"])).abs().max().item()
        worst = max(worst, df, dx)
        good = df <= tol and dx <= tol
        ok &= good
        print(
            f"{name}: SAELens {type(sae).__name__} ({sae.cfg.architecture()}), "
            f"max |f - ours| = {df:.2e}, max |x_hat - ours| = {dx:.2e} {'ok' if good else 'FAIL'}"
        )
    print(f"max difference {worst:.2e} (tolerance {tol:.0e})")
    return ok


def check_dir(path):
    cfg = json.loads((path / "cfg.json").read_text())
    sae = SAE.load_from_disk(path)
    assert sae.cfg.d_in == cfg["d_in"] and sae.cfg.d_sae == cfg["d_sae"]
    assert sae.cfg.metadata.hook_name == cfg["metadata"]["hook_name"], sae.cfg.metadata
    assert sae.cfg.architecture() == cfg["architecture"]
    if cfg["architecture"] == "jumprelu":
        assert sae.threshold.shape == (cfg["d_sae"],)
    x = torch.randn(4, cfg["d_in"], generator=torch.Generator().manual_seed(0))
    f, x_hat = saelens_forward(sae, x)
    assert torch.isfinite(x_hat).all()
    print(f"{path}: SAELens {type(sae).__name__}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}, hook {sae.cfg.metadata.hook_name}, L0 on noise {float((f != 0).float().sum(-1).mean()):.1f}")
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixture", type=pathlib.Path)
    ap.add_argument("--tolerance", type=float, default=1e-5)
    ap.add_argument("sae_dirs", nargs="*", type=pathlib.Path)
    a = ap.parse_args()
    if a.fixture is None and not a.sae_dirs:
        a.fixture = pathlib.Path(__file__).resolve().parent.parent / "crates/sae/tests/ours_fixture"
    ok = True
    if a.fixture is not None:
        ok &= check_fixture(a.fixture, a.tolerance)
    for d in a.sae_dirs:
        ok &= check_dir(d)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
