#!/usr/bin/env python3
"""Check that pyarrow reads a circuitry activation store without help.

Usage: python3 scripts/check_store.py STORE_DIR [--expect EXPECTED.json]

Reads meta.json, then every shard with pyarrow, and asserts:
  - the columns are seq (uint64), pos (uint32), token_id (uint32), then example
    (uint32) and side (uint8) when paired, then one column per hook named by its
    hook name, of type fixed_size_list<float|halffloat, width> — in that order;
  - each shard has the row count meta.json gives, and n_rows is their sum;
  - the hook columns convert to (rows, width) numpy arrays of finite values.

With --expect, the JSON file holds the values the writer was given:
  {"seq": [...], "pos": [...], "token_id": [...], "example": [...]?, "side": [...]?,
   "hooks": {"<hook name>": [[row values], ...]}, "rtol": 0.0}
and the columns must equal them (activations within rtol relative, plus 1e-7 absolute).

Exits 0 and prints a JSON summary on success; raises (exit 1) on any mismatch.
"""
import argparse
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def expected_schema(meta):
    fields = [
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("pos", pa.uint32(), nullable=False),
        pa.field("token_id", pa.uint32(), nullable=False),
    ]
    if meta["paired"]:
        fields.append(pa.field("example", pa.uint32(), nullable=False))
        fields.append(pa.field("side", pa.uint8(), nullable=False))
    value = {"f32": pa.float32(), "f16": pa.float16()}[meta["dtype"]]
    for h in meta["hooks"]:
        item = pa.field("item", value, nullable=False)
        fields.append(pa.field(h["hook"], pa.list_(item, h["width"]), nullable=False))
    return fields


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    ap.add_argument("--expect")
    args = ap.parse_args()

    with open(os.path.join(args.store, "meta.json")) as f:
        meta = json.load(f)
    assert meta["complete"], "store is not complete"
    want = expected_schema(meta)
    names = [f.name for f in want]

    paths = [os.path.join(args.store, s["file"]) for s in meta["shards"]]
    tables = []
    for shard, path in zip(meta["shards"], paths):
        table = pq.read_table(path)
        assert table.column_names == names, f"{path}: columns {table.column_names} != {names}"
        for field in want:
            got = table.schema.field(field.name).type
            assert got == field.type, f"{path}: {field.name} has type {got}, expected {field.type}"
        assert table.num_rows == shard["rows"], f"{path}: {table.num_rows} rows != {shard['rows']}"
        tables.append(table)
    total = sum(t.num_rows for t in tables)
    assert total == meta["n_rows"], f"rows {total} != meta n_rows {meta['n_rows']}"

    # The dataset API reads the shards together (give it the files: meta.json is not Parquet).
    import pyarrow.dataset as ds

    whole = ds.dataset(paths, format="parquet").to_table() if paths else None
    if whole is not None:
        assert whole.num_rows == total

    summary = {"n_rows": total, "n_shards": len(paths), "columns": names, "hooks": {}}
    arrays = {}
    for h in meta["hooks"]:
        name, width = h["hook"], h["width"]
        for t in tables:
            typ = t.schema.field(name).type
            assert pa.types.is_fixed_size_list(typ), f"{name}: {typ} is not a FixedSizeList"
            assert typ.list_size == width, f"{name}: list size {typ.list_size} != {width}"
        parts = []
        for t in tables:
            col = t.column(name).combine_chunks()
            flat = col.flatten().to_numpy(zero_copy_only=False)
            parts.append(flat.reshape(len(col), width))
        arr = np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
        assert arr.shape == (total, width), f"{name}: shape {arr.shape}"
        assert np.isfinite(arr.astype(np.float32)).all(), f"{name}: non-finite values"
        arrays[name] = arr.astype(np.float32)
        summary["hooks"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}

    if args.expect:
        with open(args.expect) as f:
            exp = json.load(f)
        token_cols = ["seq", "pos", "token_id"] + (["example", "side"] if meta["paired"] else [])
        for c in token_cols:
            got = np.concatenate([t.column(c).to_numpy() for t in tables]) if tables else []
            assert np.array_equal(got, np.array(exp[c])), f"column {c} differs"
        rtol = float(exp.get("rtol", 0.0))
        for name, rows in exp["hooks"].items():
            want_arr = np.array(rows, dtype=np.float32).reshape(arrays[name].shape)
            diff = np.abs(arrays[name] - want_arr)
            bound = rtol * np.abs(want_arr) + 1e-7
            worst = float(diff.max()) if diff.size else 0.0
            summary["hooks"][name]["max_abs_diff"] = worst
            assert (diff <= bound).all(), f"{name}: values differ (max abs diff {worst})"

    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"check_store: {e}", file=sys.stderr)
        sys.exit(1)
