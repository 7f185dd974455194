#!/usr/bin/env python3
"""Golden logits of the shipped models: PyTorch on the first 16 bundled Fashion-MNIST test images
(`demo/fmnist-test`, preset `fmnist`), float16 weights widened to float32; the ViT is torchvision's
`VisionTransformer` (`engine_accuracy.torch_logits`). `tests/shipped.rs`
checks the engine against them without PyTorch.

    python3 tools/shipped_golden.py        # -> tests/golden/shipped_models.json

Requires torch, numpy, safetensors.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_accuracy import torch_logits  # noqa: E402
from idx import read_idx  # noqa: E402
from train import to_tensor  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = "demo/fmnist-test-images-idx3-ubyte.gz"
COUNT = 16
MODELS = [
    ("weights/fmnist_resnet18_32x32.safetensors", "resnet18_32x32"),
    ("weights/fmnist_wrn-16-2.safetensors", "wrn-16-2"),
    ("weights/fmnist_vit-p4-d4-w64.safetensors", "vit-i32-p4-d4-w64-h4-m128"),
]


def main():
    images = read_idx(ROOT / IMAGES)[:COUNT]
    labels = read_idx(ROOT / IMAGES.replace("images-idx3", "labels-idx1"))[:COUNT]
    x = to_tensor(images)
    models = []
    for path, arch in MODELS:
        logits = torch_logits(ROOT / path, arch, x)
        models.append({
            "path": path,
            "arch": arch,
            "sha256": hashlib.sha256((ROOT / path).read_bytes()).hexdigest(),
            "logits": [[float(v) for v in row] for row in logits],
        })
        print(f"{path}: {int((logits.argmax(1) == labels).sum())} of {COUNT} correct")
    out = ROOT / "tests/golden/shipped_models.json"
    out.write_text(json.dumps({"images": IMAGES, "count": COUNT, "labels": labels.tolist(), "models": models}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
