#!/usr/bin/env python3
"""Accuracy of a shipped model measured by the engine (`nac predict`) beside PyTorch on the same
float16 weights and the same preprocessed inputs: the numbers a model card quotes.

    cargo build --release --bin nac
    python3 tools/engine_accuracy.py --model weights/fmnist_wrn-16-2.safetensors --arch wrn-16-2 \\
        [--images data/fashion-mnist/t10k-images-idx3-ubyte.gz] [--first N]

Inputs: gzip IDX images with the sibling labels file, preprocessed by the `fmnist` preset (pad
28 -> 32 with black, gray -> 3 channels, (x/255 - 0.2860) / 0.3530), written as float32
N x 3 x 32 x 32 `.npy` for `nac predict`. Prints one JSON line: both accuracies, how many
predictions agree, and the largest normwise relative difference of a sample's logits.
Requires torch, numpy, safetensors.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idx import read_idx  # noqa: E402
from torch_bench import make_model  # noqa: E402
from torch_reference import load_model  # noqa: E402
from train import make_dm_model, parse_dm, to_tensor  # noqa: E402


def torch_model(model_path, arch):
    """The PyTorch network of a shipped model, eval mode, its float16 weights widened to float32
    as the engine widens them on load, for inputs normalised as the engine's are. A `vit-…` is
    torchvision's VisionTransformer (`torch_bench.make_model`), a `dm-wrn-…` RobustBench's
    DMWideResNet with the activation its `activation` metadata names and no normalisation
    inside; all loaded strictly."""
    if parse_dm(arch):
        with safe_open(str(model_path), framework="pt") as f:
            activation = (f.metadata() or {}).get("activation")
        if activation not in ("swish", "relu"):
            raise SystemExit(f"{model_path}: metadata activation is {activation!r}, expected swish or relu")
        model = make_dm_model(arch, activation, normalised_inputs=True)
        model.load_state_dict({k: v.float() for k, v in load_file(str(model_path)).items()})
        return model.eval()
    if arch.startswith("vit-"):
        model = make_model(arch)
        model.load_state_dict({k: v.float() for k, v in load_file(str(model_path)).items()})
        return model.eval()
    return load_model(arch, 10, model_path, widen=True)[0]


def torch_logits(model_path, arch, x):
    """float64 logits of `x` (float32 N x 3 x 32 x 32) by PyTorch (`torch_model`)."""
    model = torch_model(model_path, arch)
    with torch.no_grad():
        return torch.cat([model(x[i: i + 500]) for i in range(0, len(x), 500)]).numpy().astype(np.float64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--arch", required=True, help="resnet18_32x32, wrn-DEPTH-WIDTH, dm-wrn-DEPTH-WIDTH or vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP")
    parser.add_argument("--images", default="data/fashion-mnist/t10k-images-idx3-ubyte.gz")
    parser.add_argument("--first", type=int, default=0, help="only the first N images (0: all)")
    parser.add_argument("--nac", default="target/release/nac")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    images = read_idx(args.images)
    labels = read_idx(args.images.replace("images-idx3", "labels-idx1")).astype(np.int64)
    if args.first:
        images, labels = images[: args.first], labels[: args.first]
    x = to_tensor(images)

    reference = torch_logits(args.model, args.arch, x)

    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "inputs.npy", Path(tmp) / "logits.npy"
        np.save(inputs, x.numpy())
        started = time.time()
        subprocess.run([args.nac, "predict", "--model", args.model, "--input", str(inputs), "--out", str(outputs),
                        "--batch", str(args.batch)], check=True)
        seconds = time.time() - started
        nac_logits = np.load(outputs).astype(np.float64)

    scale = np.abs(reference).max(axis=1)
    relative = np.abs(nac_logits - reference).max(axis=1) / scale
    nac_pred, torch_pred = nac_logits.argmax(1), reference.argmax(1)
    print(json.dumps({
        "model": args.model,
        "images": args.images,
        "samples": len(labels),
        "nac_accuracy": float((nac_pred == labels).mean()),
        "torch_accuracy": float((torch_pred == labels).mean()),
        "predictions_equal": int((nac_pred == torch_pred).sum()),
        "max_logits_relative_difference": float(relative.max()),
        "nac_predict_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
