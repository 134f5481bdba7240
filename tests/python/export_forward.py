"""A NumPy forward pass of a `kiln models export` directory, as docs/export.md specifies it,
compared with kiln's own predictions (`kiln models predict --json`).

usage: export_forward.py EXPORT_DIR PREDICTIONS_JSON DATA_FILE

DATA_FILE is the dataset's raw input file (a CSV with a header, or an NPY array of samples).
Prints one JSON object: samples compared, the largest logit difference, the rows whose
predicted class differs. Exits 1 when any does, or a logit differs by more than 1e-4.
"""

import csv
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def raw_inputs(config, path):
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        x = np.array([[float(r[n]) for n in config["feature_names"]] for r in rows])
    else:
        x = np.load(path).reshape(-1, config["features"])
    x = x.astype(np.float32)
    if config["input_scaling"] == "divide_by_255":
        x = x / np.float32(255.0)
    return x


def dense(t, prefix, count, x):
    for i in range(count):
        x = x @ t[f"{prefix}.{i}.weight"] + t[f"{prefix}.{i}.bias"]
        if i < count - 1:
            x = np.maximum(x, 0)
    return x


def conv_same(x, w, b):
    n, _, h, wd = x.shape
    out_channels, _, k, _ = w.shape
    p = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, out_channels, h, wd), np.float32)
    for dy in range(k):
        for dx in range(k):
            patch = padded[:, :, dy : dy + h, dx : dx + wd]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, dy, dx])
    return out + b[None, :, None, None]


def max_pool_2x2(x):
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :, : h2 * 2, : w2 * 2].reshape(n, c, h2, 2, w2, 2).max(axis=(3, 5))


def forward(config, t, x):
    attrs = config["attributes"]
    if config["kind"] == "mlp":
        return dense(t, "layers", len(attrs["hidden"]) + 1, x)
    if config["kind"] == "cnn":
        maps = x.reshape(-1, *config["input_shape"])
        for i in range(len(attrs["channels"])):
            conv = conv_same(maps, t[f"convs.{i}.weight"], t[f"convs.{i}.bias"])
            maps = max_pool_2x2(np.maximum(conv, 0))
        return dense(t, "dense", len(attrs["hidden"]) + 1, maps.reshape(maps.shape[0], -1))
    raise SystemExit(f"no NumPy forward pass for kind {config['kind']!r}")


def main():
    export_dir, predictions, data = sys.argv[1:4]
    with open(f"{export_dir}/config.json") as f:
        config = json.load(f)
    tensors = load_file(f"{export_dir}/model.safetensors")
    if {t["name"] for t in config["tensors"]} != set(tensors):
        raise SystemExit("config.json and model.safetensors name different tensors")
    with open(predictions) as f:
        kiln = json.load(f)
    x = raw_inputs(config, data)
    rows = [r["row"] for r in kiln["rows"]]
    logits = forward(config, tensors, x[rows])
    theirs = np.array([r["logits"] for r in kiln["rows"]], dtype=np.float32)
    diff = float(np.abs(logits - theirs).max()) if rows else 0.0
    mismatched = [
        r["row"] for r, l in zip(kiln["rows"], logits) if int(np.argmax(l)) != r["prediction"]
    ]
    print(json.dumps({"samples": len(rows), "max_abs_diff": diff, "mismatched": mismatched}))
    sys.exit(1 if mismatched or diff > 1e-4 else 0)


if __name__ == "__main__":
    main()
