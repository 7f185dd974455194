#!/usr/bin/env python3
"""Attack parity: the engine's FGSM, PGD and APGD-CE examples (`nac export --model` of the
`fgsm:`, `pgd:`, `apgd:` specs) beside the reference implementations on the same model and the
same images, in one run:

* FGSM against torchattacks' `FGSM`: the perturbations compared sign for sign; a sign that
  differs is counted, and counted again as "within rounding of 0" when |dL/dx| there is at most
  1e-6 of the sample's largest |dL/dx| (PyTorch's gradient at the clean image), and the largest
  such relative |dL/dx| among the differing signs is reported; both sets of signs are also
  compared with the gradient in float64 (PyTorch on the same weights), away from the box;
* PGD against torchattacks' `PGD` (random start, steps of 2.5·eps/steps as the spec grammar
  uses) and APGD-CE against AutoAttack's own `APGDAttack` (from a checkout of
  github.com/fra31/auto-attack given with --autoattack; 100 iterations, rho 0.75, one restart,
  loss `ce`): robust accuracy of both sets of examples, judged by the same PyTorch model;
* every example of the engine inside the eps-ball and the [0, 1] box.

The random starts differ (ours are drawn per sample from its index), so PGD and APGD are
compared by robust accuracy, not example by example.

    cargo build --release --bin nac
    pip install torchattacks   # 3.5.1; its requirements pin an old `requests`: --no-deps is fine
    python3 tools/attack_reference.py --model weights/fmnist_wrn-16-2.safetensors --arch wrn-16-2 \\
        --autoattack /path/to/auto-attack --first 1000 --eps 1/255,2/255 --out attack_parity.json

The model is the shipped kind (torch_reference.load_model or torchvision's ViT, fmnist
preprocessing: pad 28 -> 32, gray -> 3 channels, normalise); the attacks see pixel-space inputs
in [0, 1] and the normalisation inside the wrapped model, as the engine's attacks do.
Requires torch, numpy, safetensors, torchattacks; prints and writes one JSON report.
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_accuracy import torch_model  # noqa: E402
from train import MEAN, STD  # noqa: E402


class PixelModel(torch.nn.Module):
    """The network on pixel-space input: normalisation first, as the engine's attack sees it."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net((x - MEAN) / STD)


def export(nac, spec, model, arch, out):
    """Runs `nac export` of `spec` with the fmnist preprocessing; returns pixel-space examples."""
    command = [nac, "export", "--data", spec, "--preprocessing", "fmnist", "--out", str(out)]
    if model is not None:
        command += ["--model", str(model)]
        if arch and arch.startswith("vit-"):
            command += ["--arch", arch]
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - started
    return np.load(out) * STD + MEAN, seconds


def accuracy(model, x, y):
    with torch.no_grad():
        predictions = torch.cat([model(x[i: i + 250]).argmax(1) for i in range(0, len(x), 250)])
    return float((predictions == y).double().mean())


def check_ball(name, ours, clean, eps):
    moved = float(np.abs(ours - clean).max())
    outside = float(max(-ours.min(), ours.max() - 1.0, 0.0))
    # The examples come back normalised in float32; 1e-6 covers undoing that.
    if moved > eps + 1e-6 or outside > 1e-6:
        raise SystemExit(f"{name}: an example leaves the ball ({moved} > {eps}) or the box (by {outside})")
    return moved


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--arch", required=True, help="as tools/engine_accuracy.py takes it")
    parser.add_argument("--images", default="data/fashion-mnist/t10k-images-idx3-ubyte.gz")
    parser.add_argument("--first", type=int, default=1000)
    parser.add_argument("--eps", default="2/255", help="comma-separated radii, e.g. 1/255,2/255")
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--apgd-iterations", type=int, default=100)
    parser.add_argument("--autoattack", help="a checkout of github.com/fra31/auto-attack (for APGD-CE)")
    parser.add_argument("--attacks", default="fgsm,pgd,apgd", help="which of fgsm, pgd, apgd to compare")
    parser.add_argument("--nac", default="target/release/nac")
    parser.add_argument("--out")
    args = parser.parse_args()
    import torchattacks

    torch.manual_seed(0)
    model = PixelModel(torch_model(args.model, args.arch)).eval()
    data = f"idx:{args.images}[0:{args.first}]"
    report = {"model": args.model, "arch": args.arch, "images": data, "torchattacks": torchattacks.__version__, "radii": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean, _ = export(args.nac, data, None, None, tmp / "clean.npy")
        labels = torch.from_numpy(np.load(tmp / "clean.labels.npy"))
        x = torch.from_numpy(clean.astype(np.float32))
        report["clean_accuracy"] = accuracy(model, x, labels)
        for text in args.eps.split(","):
            eps = float(Fraction(text))
            row = {"eps": text}
            attacks = args.attacks.split(",")
            if "fgsm" in attacks:
                fgsm(args, model, x, labels, clean, data, text, eps, tmp, row)
            if "pgd" in attacks:
                pgd(args, model, x, labels, clean, data, text, eps, tmp, row)
            if "apgd" in attacks and args.autoattack:
                apgd(args, model, x, labels, clean, data, text, eps, tmp, row)
            report["radii"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "radii"}))


def fgsm(args, model, x, labels, clean, data, text, eps, tmp, row):
    """FGSM, sign for sign, with PyTorch's gradient at the clean images."""
    import torchattacks

    ours, row["fgsm_nac_seconds"] = export(args.nac, f"fgsm:{text}:{data}", args.model, args.arch, tmp / "fgsm.npy")
    row["fgsm_max_move"] = check_ball("FGSM", ours, clean, eps)
    theirs = torchattacks.FGSM(model, eps=eps)(x, labels).numpy()
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), labels, reduction="sum").backward()
    grad = xg.grad.numpy()
    ours_sign, theirs_sign = np.sign(np.round((ours - clean) * 255 * 64)), np.sign(np.round((theirs - clean) * 255 * 64))
    differ = ours_sign != theirs_sign
    largest = np.abs(grad).reshape(len(grad), -1).max(1)[:, None, None, None]
    near_zero = np.abs(grad) <= 1e-6 * largest
    # The same gradient in float64: where PyTorch's own float32 sign differs from it, the sign
    # is decided by rounding (a ReLU or Swish input within rounding of 0, cancellation).
    x64 = x.double().clone().requires_grad_(True)
    model64 = copy.deepcopy(model).double()
    torch.nn.functional.cross_entropy(model64(x64), labels, reduction="sum").backward()
    sign64 = np.sign(x64.grad.numpy())
    at_box = (ours_sign == 0) | (theirs_sign == 0)  # a pixel held at 0 or 1 by the box
    row.update(
        fgsm_signs_nac_vs_float64=int(((ours_sign != sign64) & ~at_box).sum()),
        fgsm_signs_reference_vs_float64=int(((theirs_sign != sign64) & ~at_box).sum()),
        fgsm_elements=int(differ.size),
        fgsm_signs_differ=int(differ.sum()),
        fgsm_signs_differ_near_zero_gradient=int((differ & near_zero).sum()),
        # How small the gradient is where signs differ, relative to the sample's largest.
        fgsm_differ_largest_relative_gradient=float((np.abs(grad) / largest)[differ].max()) if differ.any() else 0.0,
        fgsm_accuracy_nac=accuracy(model, torch.from_numpy(ours.astype(np.float32)), labels),
        fgsm_accuracy_reference=accuracy(model, torch.from_numpy(theirs), labels),
    )


def pgd(args, model, x, labels, clean, data, text, eps, tmp, row):
    """PGD: robust accuracy of ours and of torchattacks' PGD."""
    import torchattacks

    steps = args.pgd_steps
    ours, row["pgd_nac_seconds"] = export(args.nac, f"pgd:{text}:{steps}:{data}", args.model, args.arch, tmp / "pgd.npy")
    row["pgd_max_move"] = check_ball("PGD", ours, clean, eps)
    started = time.time()
    attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    theirs = torch.cat([attack(x[i: i + 250], labels[i: i + 250]) for i in range(0, len(x), 250)])
    row["pgd_reference_seconds"] = time.time() - started
    row["pgd_accuracy_nac"] = accuracy(model, torch.from_numpy(ours.astype(np.float32)), labels)
    row["pgd_accuracy_reference"] = accuracy(model, theirs, labels)


def apgd(args, model, x, labels, clean, data, text, eps, tmp, row):
    """APGD-CE: robust accuracy of ours and of AutoAttack's own APGDAttack."""
    sys.path.insert(0, args.autoattack)
    from autoattack.autopgd_base import APGDAttack

    iterations = args.apgd_iterations
    spec = f"apgd:{text}:{iterations}:{data}"
    ours, row["apgd_nac_seconds"] = export(args.nac, spec, args.model, args.arch, tmp / "apgd.npy")
    row["apgd_max_move"] = check_ball("APGD", ours, clean, eps)
    started = time.time()
    apgd = APGDAttack(model, n_iter=iterations, norm="Linf", n_restarts=1, eps=eps, seed=0, loss="ce", rho=0.75, device="cpu")
    theirs = torch.cat([apgd.perturb(x[i: i + 250], labels[i: i + 250]) for i in range(0, len(x), 250)])
    row["apgd_reference_seconds"] = time.time() - started
    row["apgd_accuracy_nac"] = accuracy(model, torch.from_numpy(ours.astype(np.float32)), labels)
    row["apgd_accuracy_reference"] = accuracy(model, theirs, labels)


if __name__ == "__main__":
    main()
