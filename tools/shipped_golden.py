#!/usr/bin/env python3
"""Golden logits of the shipped models: PyTorch on the first 16 bundled Fashion-MNIST test images
(`demo/fmnist-test`, preset `fmnist`), float16 weights widened to float32; the ViT is torchvision's
`VisionTransformer`, a DMWideResNet RobustBench's own class (`engine_accuracy.torch_logits`).
`tests/shipped.rs` checks the engine against them without PyTorch.

    python3 tools/shipped_golden.py   # -> tests/golden/shipped_models.json, shipped_dm_models.json

The DMWideResNets are in a file of their own (with their `activation` metadata): PyTorch runs them
on the preset's normalised inputs with mean 0 / std 1 inside, as the engine does; the script checks
that this equals RobustBench's own pixel-space forward with the fmnist mean/std inside (1e-5).

Requires torch, numpy, safetensors.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from engine_accuracy import torch_logits  # noqa: E402
from idx import read_idx  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from train import make_dm_model, to_tensor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = "demo/fmnist-test-images-idx3-ubyte.gz"
COUNT = 16
GOLDENS = {
    "tests/golden/shipped_models.json": [
        ("weights/fmnist_resnet18_32x32.safetensors", "resnet18_32x32", None),
        ("weights/fmnist_wrn-16-2.safetensors", "wrn-16-2", None),
        ("weights/fmnist_vit-p4-d4-w64.safetensors", "vit-i32-p4-d4-w64-h4-m128", None),
    ],
    "tests/golden/shipped_dm_models.json": [
        ("weights/fmnist_dm-wrn-16-1_standard.safetensors", "dm-wrn-16-1", "swish"),
        ("weights/fmnist_dm-wrn-16-1_robust.safetensors", "dm-wrn-16-1", "swish"),
    ],
}


def check_pixel_space(path, arch, activation, images, logits):
    """RobustBench's forward on [0, 1] pixels, normalising inside, gives the same logits."""
    model = make_dm_model(arch, activation)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    with torch.no_grad():
        pixel = model.eval()(to_tensor(images, normalise=False)).numpy().astype(np.float64)
    diff = np.abs(pixel - logits).max() / np.abs(logits).max()
    if diff > 1e-5:
        raise SystemExit(f"{path}: pixel-space and normalised forward differ by {diff:.2e} of the largest logit")
    print(f"{path}: pixel-space forward agrees to {diff:.1e}")


def main():
    images = read_idx(ROOT / IMAGES)[:COUNT]
    labels = read_idx(ROOT / IMAGES.replace("images-idx3", "labels-idx1"))[:COUNT]
    x = to_tensor(images)
    for golden, entries in GOLDENS.items():
        models = []
        for path, arch, activation in entries:
            logits = torch_logits(ROOT / path, arch, x)
            entry = {"path": path, "arch": arch}
            if activation:
                check_pixel_space(ROOT / path, arch, activation, images, logits)
                entry["activation"] = activation
            entry["sha256"] = hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
            entry["logits"] = [[float(v) for v in row] for row in logits]
            models.append(entry)
            print(f"{path}: {int((logits.argmax(1) == labels).sum())} of {COUNT} correct")
        out = ROOT / golden
        out.write_text(json.dumps({"images": IMAGES, "count": COUNT, "labels": labels.tolist(), "models": models}, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
