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
named `vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP` as in `nac --arch`; `dm-wrn-DEPTH-WIDTH` is
RobustBench's own `DMWideResNet` (robustbench 1.1.1, `model_zoo/architectures/dm_wide_resnet.py`,
loaded from that file so the package's other dependencies are not needed; `--robustbench` names
it if the package is not installed), with `--activation swish` (RobustBench's `Swish`, as in
Gowal et al. 2021) or `relu`):

    python3 tools/train.py --arch resnet18_32x32 --epochs 3 --threads 2 --out weights/fmnist_resnet18_32x32.safetensors
    python3 tools/train.py --arch wrn-16-2       --epochs 3 --threads 2 --out weights/fmnist_wrn-16-2.safetensors
    python3 tools/train.py --arch vit-i32-p4-d4-w64-h4-m128 --epochs 8 --threads 1 \
        --out weights/fmnist_vit-p4-d4-w64.safetensors
    python3 tools/train.py --arch dm-wrn-16-1 --activation swish --epochs 2 --threads 1 \
        --out weights/fmnist_dm-wrn-16-1_standard.safetensors
    python3 tools/train.py --arch dm-wrn-16-1 --activation swish --epochs 2 --threads 1 \
        --adv fgsm-rs --eps 8/255 --out weights/fmnist_dm-wrn-16-1_robust.safetensors

A DMWideResNet normalises inside (its `mean`/`std` buffers, here the fmnist 0.2860/0.3530 on all
3 channels), so it trains on pixel-space inputs in [0, 1] (pad 2, gray -> 3 channels, not
normalised); the engine feeds it the preset's normalised inputs instead, which is the same.
Adversarial training (any architecture, in pixel space within the [0, 1] box, epsilon in pixel
units, `--eps 8/255` or a float; the model sees only adversarial examples, attacked in train
mode): `--adv fgsm-rs` is Wong et al. 2020 ("Fast is better than free": a uniform random start
in the epsilon ball, one signed-gradient step of `--fgsm-step` x epsilon, default 1.25, clipped
to the ball and the box); `--adv pgd:STEPS` is Madry et al. 2018 (random start, STEPS steps of
2.5 epsilon / STEPS). After training it reports PyTorch's clean accuracy on the full test split
and clean and PGD-10 accuracy (epsilon, step epsilon/4, random start, eval mode) on the fixed
subset `test[0:1000]` (per epoch on `test[0:200]`, to catch catastrophic overfitting). A
DMWideResNet's safetensors metadata records `activation` (the weights cannot show it), `depth`,
`width`, `mean`, `std`, `attack`, `epsilon`, `epochs`, `seed` and those accuracies.

Writes the weights in float16 (BatchNorm statistics included, `num_batches_tracked` dropped; a
ViT's head count as the safetensors metadata `num_heads`, which its tensors do not record),
a float32 copy next to it under `out/train/`, one float16 checkpoint per epoch there too, and
prints the PyTorch test accuracy. Requires torch, numpy, safetensors (and torchvision for a ViT).
On 2 CPU cores ResNet-18 takes 12-25 minutes per epoch (depending on what else runs); a GPU takes
about a minute. The small ViT above takes 4-8 minutes per epoch on one core: on cores shared with
other work, `--threads 1` is several times faster than 2 for it.
"""

import argparse
import importlib.util
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


PGD_EVAL_STEPS = 10
ROBUST_SUBSET = 1000
ROBUST_MONITOR = 200


def to_tensor(images, normalise=True):
    """uint8 N x 28 x 28 -> float32 N x 3 x 32 x 32, padded with 0 before normalisation (without
    `normalise`: pixel values in [0, 1])."""
    x = torch.from_numpy(np.pad(images, ((0, 0), (2, 2), (2, 2)))).float().div_(255.0)
    if normalise:
        x = (x - MEAN) / STD
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def dm_wide_resnet_module(path=None):
    """RobustBench's `dm_wide_resnet.py`, imported from its file: `import robustbench` would need
    timm and more."""
    if path is None:
        spec = importlib.util.find_spec("robustbench")
        if spec is None:
            raise SystemExit("robustbench is not installed: pip install --no-deps robustbench==1.1.1, or pass --robustbench")
        path = Path(spec.submodule_search_locations[0]) / "model_zoo/architectures/dm_wide_resnet.py"
    spec = importlib.util.spec_from_file_location("dm_wide_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_dm(arch):
    """`dm-wrn-DEPTH-WIDTH` -> (depth, width), None for any other name."""
    if not arch.startswith("dm-wrn-"):
        return None
    depth, width = (int(v) for v in arch[len("dm-wrn-"):].split("-"))
    return depth, width


def make_dm_model(arch, activation, normalised_inputs=False, robustbench=None):
    """RobustBench's DMWideResNet with the fmnist normalisation inside; with `normalised_inputs`
    its mean is 0 and std 1, for inputs the `fmnist` preset has normalised already (as the engine
    is fed)."""
    module = dm_wide_resnet_module(robustbench)
    depth, width = parse_dm(arch)
    act = {"swish": module.Swish, "relu": torch.nn.ReLU}[activation]
    mean, std = ((0.0,) * 3, (1.0,) * 3) if normalised_inputs else ((MEAN,) * 3, (STD,) * 3)
    return module.DMWideResNet(num_classes=10, depth=depth, width=width, activation_fn=act, mean=mean, std=std)


def parse_eps(text):
    """`8/255` or a float, in pixel units."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


def attack(model, x, y, eps, steps, step, generator, lo, hi):
    """L-inf PGD from a uniform random start (steps=1: FGSM-RS): each step adds `step` times the
    gradient's sign, then clips to the eps ball around `x` and to the box [lo, hi] (the box in the
    model's input units). Only the input's gradient is computed."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1).mul_(eps).to(x.device)
    delta = (x + delta).clamp_(lo, hi) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, [delta])
        delta = (delta.detach() + step * grad.sign()).clamp_(-eps, eps)
        delta = (x + delta).clamp_(lo, hi) - x
    return (x + delta).detach()


def robust_accuracy(model, x, y, eps, generator, lo, hi, batch=200):
    """Accuracy under PGD-10 (step eps/4, random start) in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        adv = attack(model, x[i: i + batch], y[i: i + batch], eps, PGD_EVAL_STEPS, eps / 4, generator, lo, hi)
        with torch.no_grad():
            correct += (model(adv).argmax(1) == y[i: i + batch]).sum().item()
    return correct / len(x)


def augment(x, generator, crop, black):
    """Random horizontal flip and, with `crop`, a random 32-pixel crop of the image padded by 2
    with black (`black` in the input's units). Short CPU runs train without the crop: it slows
    convergence."""
    n = x.shape[0]
    out = x.clone()
    if crop:
        padded = F.pad(x, (2, 2, 2, 2), value=black)
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
    parser.add_argument("--arch", required=True,
                        help="resnet18_32x32, wrn-DEPTH-WIDTH, dm-wrn-DEPTH-WIDTH or vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP")
    parser.add_argument("--activation", choices=["swish", "relu"], default="swish", help="of a dm-wrn")
    parser.add_argument("--robustbench", help="path of RobustBench's dm_wide_resnet.py (default: the installed package's)")
    parser.add_argument("--adv", default="none", help="none, fgsm-rs or pgd:STEPS (adversarial training)")
    parser.add_argument("--eps", default="8/255", help="attack radius in pixel units: 8/255 or a float")
    parser.add_argument("--fgsm-step", type=float, default=1.25, help="FGSM-RS step, in units of eps")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default="data/fashion-mnist")
    parser.add_argument("--out", required=True, help="float16 safetensors to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", action="store_true", help="also random-crop (pad 2) when augmenting")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()

    if args.adv == "none":
        steps_adv, step_adv = 0, 0.0
    elif args.adv == "fgsm-rs":
        steps_adv, step_adv = 1, args.fgsm_step
    elif args.adv.startswith("pgd:") and args.adv[4:].isdigit() and int(args.adv[4:]) > 0:
        steps_adv = int(args.adv[4:])
        step_adv = 2.5 / steps_adv
    else:
        parser.error(f"--adv {args.adv!r}: expected none, fgsm-rs or pgd:STEPS")
    eps = parse_eps(args.eps)
    if not 0 < eps <= 1:
        parser.error(f"--eps {args.eps!r}: expected a radius in (0, 1] pixel units")

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dm = parse_dm(args.arch)
    # A DMWideResNet normalises inside: it sees pixels. The others see normalised inputs, so the
    # attacks' radius and box are scaled into those units.
    scale = 1.0 if dm else 1.0 / STD
    lo, hi = (0.0, 1.0) if dm else ((0.0 - MEAN) / STD, (1.0 - MEAN) / STD)
    data = Path(args.data)
    train_images = read_idx(data / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(data / "train-labels-idx1-ubyte.gz")
    test_x = to_tensor(read_idx(data / "t10k-images-idx3-ubyte.gz"), normalise=not dm).to(device)
    test_y = torch.from_numpy(read_idx(data / "t10k-labels-idx1-ubyte.gz").astype(np.int64)).to(device)
    x = to_tensor(train_images[:TRAIN_COUNT], normalise=not dm)
    y = torch.from_numpy(train_labels[:TRAIN_COUNT].astype(np.int64))

    model = (make_dm_model(args.arch, args.activation, robustbench=args.robustbench) if dm else make_model(args.arch)).to(device)
    vit = args.arch.startswith("vit-")
    metadata = {"num_heads": str(parse_vit(args.arch)["h"])} if vit else {}
    if dm:
        metadata.update({"activation": args.activation, "depth": str(dm[0]), "width": str(dm[1]),
                         "mean": ",".join([str(MEAN)] * 3), "std": ",".join([str(STD)] * 3)})
    if steps_adv or dm:
        metadata.update({"attack": args.adv if steps_adv else "none", "epsilon": str(eps) if steps_adv else "0",
                         "attack_step": f"{step_adv} eps" if steps_adv else "0", "epochs": str(args.epochs),
                         "seed": str(args.seed)})
    attack_generator = torch.Generator().manual_seed(args.seed + 1)
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
            xb = augment(x[idx], generator, args.crop, lo).to(device)
            yb = y[idx].to(device)
            if steps_adv:
                xb = attack(model, xb, yb, eps * scale, steps_adv, step_adv * eps * scale, attack_generator, lo, hi)
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
        monitor = ""
        if steps_adv or dm:
            # Fixed seed per evaluation so that epochs compare on the same random starts.
            rob = robust_accuracy(model, test_x[:ROBUST_MONITOR], test_y[:ROBUST_MONITOR], eps * scale,
                                  torch.Generator().manual_seed(args.seed + 2), lo, hi)
            monitor = f", PGD-{PGD_EVAL_STEPS} accuracy on test[0:{ROBUST_MONITOR}] {rob * 100:.1f}%"
        print(f"epoch {epoch + 1}: train loss {total / seen:.4f}, test accuracy {acc * 100:.2f}%{monitor} "
              f"({time.time() - started:.0f}s)", flush=True)
        export(model, side / f"{out.stem}.epoch{epoch + 1}.safetensors", torch.float16, metadata)

    train_seconds = round(time.time() - started)
    summary = {"arch": args.arch, "epochs": args.epochs, "seed": args.seed, "torch_test_accuracy": acc,
               "train_seconds": train_seconds, "device": device, "torch": torch.__version__}
    if steps_adv or dm:
        subset = slice(0, ROBUST_SUBSET)
        clean = accuracy(model, test_x[subset], test_y[subset])
        rob = robust_accuracy(model, test_x[subset], test_y[subset], eps * scale, torch.Generator().manual_seed(args.seed + 3), lo, hi)
        print(f"clean {clean * 100:.2f}%, PGD-{PGD_EVAL_STEPS} {rob * 100:.2f}% on test[0:{ROBUST_SUBSET}] "
              f"({time.time() - started:.0f}s)", flush=True)
        summary.update({"adv": args.adv, "eps": args.eps, "activation": args.activation if dm else None,
                        "torch_clean_accuracy_test1000": clean, "torch_pgd10_accuracy_test1000": rob})
        metadata.update({"train_seconds": str(train_seconds), "torch_clean_accuracy_test": f"{acc:.4f}",
                         "torch_clean_accuracy_test1000": f"{clean:.4f}", "torch_pgd10_accuracy_test1000": f"{rob:.4f}",
                         "robust_eval": f"PGD-{PGD_EVAL_STEPS}, eps {args.eps}, step eps/4, random start, test[0:{ROBUST_SUBSET}]"})
    model = model.cpu()
    export(model, out, torch.float16, metadata)
    export(model, side / f"{out.stem}.f32.safetensors", torch.float32, metadata)
    print(json.dumps(summary))
    (side / f"{out.stem}.train.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
