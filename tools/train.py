#!/usr/bin/env python3
"""Trains the shipped Fashion-MNIST models and exports them as safetensors (public naming).

Data: Fashion-MNIST IDX files from `tools/fetch_data.sh` (Debian package dataset-fashion-mnist).
Preprocessing (the `fmnist` preset of `nac`): pad 28 -> 32 with black pixels, replicate gray to
3 channels, (x/255 - 0.2860) / 0.3530. Training images: the first 55,000 of the training split;
the last 5,000 are held out (never trained on) as the ID validation split that parameter search
and the demo use. Augmentation: horizontal flip (and, with --crop, a random crop 32 with 2-pixel
zero padding).
Optimiser of the CNNs: SGD (momentum 0.9, Nesterov, weight decay 5e-4), batch 128, one-cycle LR
up to 0.1. Of the Vision Transformers: AdamW (lr 1e-3, betas 0.9/0.999, weight decay 0.05 on the
matrices only), batch 128, linear warmup over the first 5 % of the steps then cosine to 0, label
smoothing 0.1.

Architectures (same modules as tools/torch_reference.py, so the tensor names are OpenOOD's
ResNet18_32x32 and RobustBench's WideResNet; the ViT is torchvision's own `VisionTransformer`,
named `vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP` as in `nac --arch`):

    python3 tools/train.py --arch resnet18_32x32 --epochs 3 --threads 2 --out weights/fmnist_resnet18_32x32.safetensors
    python3 tools/train.py --arch wrn-16-2       --epochs 3 --threads 2 --out weights/fmnist_wrn-16-2.safetensors
    python3 tools/train.py --arch vit-i32-p4-d4-w64-h4-m128 --epochs 8 --threads 1 \
        --out weights/fmnist_vit-p4-d4-w64.safetensors

Writes the weights in float16 (BatchNorm statistics included, `num_batches_tracked` dropped; a
ViT's head count as the safetensors metadata `num_heads`, which its tensors do not record),
a float32 copy next to it under `out/train/`, one float16 checkpoint per epoch there too, and
prints the PyTorch test accuracy. Requires torch, numpy, safetensors (and torchvision for a ViT).
On 2 CPU cores ResNet-18 takes 12-25 minutes per epoch (depending on what else runs); a GPU takes
about a minute. The small ViT above takes 4-8 minutes per epoch on one core: on cores shared with
other work, `--threads 1` is several times faster than 2 for it.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from idx import read_idx  # noqa: E402
from torch_bench import make_model, parse_vit  # noqa: E402

MEAN, STD = 0.2860, 0.3530
TRAIN_COUNT = 55_000


def to_tensor(images):
    """uint8 N x 28 x 28 -> float32 N x 3 x 32 x 32, padded with 0 before normalisation."""
    x = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2)))).float().div_(255.0)
    x = (x - MEAN) / STD
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def augment(x, generator, crop):
    """Random horizontal flip and, with `crop`, a random 32-pixel crop of the image zero-padded
    (in pixel space) by 2. Short CPU runs train without the crop: it slows convergence."""
    n = x.shape[0]
    out = x.clone()
    if crop:
        padded = F.pad(x, (2, 2, 2, 2), value=(0.0 - MEAN) / STD)
        dx = torch.randint(0, 5, (n,), generator=generator)
        dy = torch.randint(0, 5, (n,), generator=generator)
        for i in range(n):
            out[i] = padded[i, :, dy[i]: dy[i] + 32, dx[i]: dx[i] + 32]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(3)
    return out


@torch.no_grad()
def accuracy(model, x, y, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += (model(x[i: i + batch]).argmax(1) == y[i: i + batch]).sum().item()
    return correct / len(x)


def make_optimiser(model, arch, total_steps):
    """SGD with one-cycle for the CNNs; AdamW, warmup and cosine for the ViTs (no weight decay on
    biases, LayerNorms, class token and positions: the usual ViT recipe)."""
    if not arch.startswith("vit-"):
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        return optimiser, torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=0.1, total_steps=total_steps, pct_start=0.25)
    decay, rest = [], []
    for name, p in model.named_parameters():
        (rest if p.ndim < 2 or name in ("class_token", "encoder.pos_embedding") else decay).append(p)
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    warmup = max(1, total_steps // 20)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def export(model, path, dtype, metadata):
    tensors = {
        k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    save_file(tensors, str(tmp), metadata={"format": "pt", **metadata})
    tmp.chmod(0o644)  # safetensors writes owner-only files; shipped weights are world-readable
    tmp.replace(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="resnet18_32x32, wrn-DEPTH-WIDTH or vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default="data/fashion-mnist")
    parser.add_argument("--out", required=True, help="float16 safetensors to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", action="store_true", help="also random-crop (pad 2) when augmenting")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = Path(args.data)
    train_images = read_idx(data / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    test_x = to_tensor(read_idx(data / "t10k-images-idx3-ubyte.gz")).to(device)
    test_y = torch.from_numpy(read_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int64)).to(device)
    x = to_tensor(train_images[:TRAIN_COUNT])
    y = torch.from_numpy(train_labels[:TRAIN_COUNT].astype(np.int64))

    model = make_model(args.arch).to(device)
    vit = args.arch.startswith("vit-")
    metadata = {"num_heads": str(parse_vit(args.arch)["h"])} if vit else {}
    smoothing = 0.1 if vit else 0.0
    batch = 128
    steps = (len(x) + batch - 1) // batch
    optimiser, schedule = make_optimiser(model, args.arch, args.epochs * steps)
    generator = torch.Generator().manual_seed(args.seed)
    out = Path(args.out)
    side = Path("out/train")
    started = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total, seen = 0.0, 0
        for step in range(steps):
            idx = order[step * batch: (step + 1) * batch]
            xb = augment(x[idx], generator, args.crop).to(device)
            yb = y[idx].to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if step % 50 == 0:
                print(f"epoch {epoch + 1} step {step}/{steps} loss {total / seen:.4f} "
                      f"{time.time() - started:.0f}s", flush=True)
        acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch + 1}: train loss {total / seen:.4f}, test accuracy {acc * 100:.2f}% "
              f"({time.time() - started:.0f}s)", flush=True)
        export(model, side / f"{out.stem}.epoch{epoch + 1}.safetensors", torch.float16, metadata)

    model = model.cpu()
    export(model, out, torch.float16, metadata)
    export(model, side / f"{out.stem}.f32.safetensors", torch.float32, metadata)
    summary = {"arch": args.arch, "epochs": args.epochs, "seed": args.seed, "torch_test_accuracy": acc,
               "train_seconds": round(time.time() - started), "device": device, "torch": torch.__version__}
    print(json.dumps(summary))
    (side / f"{out.stem}.train.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
