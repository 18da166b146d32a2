"""Write forward_reference.json: SAE encode/decode values computed by numpy (float64)
with the SAELens v6 definitions, for crates/sae/tests/it/reference.rs.

    encode_pre = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    standard:  f = relu(encode_pre)
    topk:      f = relu of the k largest of encode_pre per row, 0 elsewhere
    jumprelu:  f = encode_pre * (encode_pre > threshold)
    decode:    x_hat = f @ W_dec + b_dec

Run: python3 crates/sae/tests/reference/make_forward_reference.py  (needs numpy)
"""
import json
import pathlib

import numpy as np

rng = np.random.default_rng(20240601)
d_in, d_sae, rows, k = 6, 10, 9, 3

# float32 parameters and inputs (what the Rust SAE holds), maths in float64.
def f32(a):
    return np.asarray(a, dtype=np.float32)

params = {
    "W_enc": f32(rng.normal(0, 0.5, (d_in, d_sae))),
    "b_enc": f32(rng.normal(0, 0.2, d_sae)),
    "W_dec": f32(rng.normal(0, 0.5, (d_sae, d_in))),
    "b_dec": f32(rng.normal(0, 0.2, d_in)),
    "threshold": f32(np.abs(rng.normal(0, 0.3, d_sae))),
}
x = f32(rng.normal(0, 1.0, (rows, d_in)))
P = {name: v.astype(np.float64) for name, v in params.items()}
X = x.astype(np.float64)


def encode_pre(apply_b_dec):
    return (X - P["b_dec"] * apply_b_dec) @ P["W_enc"] + P["b_enc"]


def topk(pre):
    out = np.zeros_like(pre)
    idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    rows_idx = np.arange(pre.shape[0])[:, None]
    out[rows_idx, idx] = np.maximum(pre[rows_idx, idx], 0.0)
    return out


cases = []
for arch, apply_b_dec in [("standard", True), ("standard", False), ("topk", True), ("jumprelu", True)]:
    pre = encode_pre(apply_b_dec)
    if arch == "standard":
        f = np.maximum(pre, 0.0)
    elif arch == "topk":
        f = topk(pre)
    else:
        f = pre * (pre > P["threshold"])
    x_hat = f @ P["W_dec"] + P["b_dec"]
    cases.append({
        "architecture": arch,
        "apply_b_dec_to_input": apply_b_dec,
        "encode_pre": pre.tolist(),
        "encode": f.tolist(),
        "decode": x_hat.tolist(),
    })

out = {
    "generator": "crates/sae/tests/reference/make_forward_reference.py, numpy " + np.__version__,
    "d_in": d_in, "d_sae": d_sae, "k": k,
    "params": {name: v.tolist() for name, v in params.items()},
    "x": x.tolist(),
    "cases": cases,
}
path = pathlib.Path(__file__).with_name("forward_reference.json")
path.write_text(json.dumps(out, indent=1) + "\n")
print(f"wrote {path}")
