#!/usr/bin/env python3
"""PyTorch throughput of the forward pass and of the NAC pass, to set beside `nac bench`.

    python3 tools/torch_bench.py --arch resnet18_32x32 --batch 64 --size 32 --repeats 3 \
        --threads 2 --out torch.json [--device cpu|cuda]

`tools/bench_side_by_side.sh` runs this and `nac bench` one after the other and writes the ratios.

The networks are `tools/torch_reference.py`'s (OpenOOD ResNet18_32x32 and RobustBench-style
WideResNet `wrn-D-W`, the project's safetensors naming) or torchvision's own `VisionTransformer`
(`--arch vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP`, `nac`'s spelling; needs torchvision), built
with PyTorch's default random initialisation from `--seed`, in eval mode, float32; the inputs are seeded standard normals,
N x 3 x size x size. Weights and inputs do not change the speed. Every measurement is one
untimed warm-up then `--repeats` timed runs; the median is reported (seconds per batch and
images per second; as in `nac bench`, the upper middle run of an even count) with every run. On CUDA every run ends with `torch.cuda.synchronize()`.

Measurements
------------
`forward`: `model(x)` under `torch.no_grad()` (logits only).

`official_nac`: one profiling batch as the official code (github BierOne/ood_coverage,
OpenOOD v1.5 fork, `openood/postprocessors/nac/coverage.py` `KMNC.assess` with `Estimator`,
`nac/instr_state.py` `kl_grad`, `nac/utils.py` `avg_pooling`, `get_state_func`, `sigmoid`, `acc`)
does it, reproduced from reading that code (not copied, not imported):
  * forward with the autograd graph (no `no_grad`), the outputs of the official layers retained
    live by hooks (the official `nethook.InstrumentedModel.retain_layers(detach=False)` wraps the
    modules' forward; a forward hook that keeps the output tensor is equivalent);
  * `acc(p, y)`: argmax of the logits against labels, with its `.item()` (random labels here);
  * for every layer in the official order avgpool, layer3, layer2, layer1 (WRN: avgpool, block3,
    block2, block1), `kl_grad`: the loss `sum_c -(1/C) log_softmax(p)_c`, summed over the batch,
    rebuilt for each layer, and ONE `torch.autograd.grad(loss, z_layer, retain_graph=True)` PER
    LAYER (`retain_graph=False` for the last one), so the backward through the deep stages is
    repeated for every shallower layer;
  * `avg_pooling`: z and g each SUMMED over H x W (`.detach()`), then the state
    `1 / (1 + exp(-alpha * (sum z) * (sum g)))` (the official `sigmoid`, float32);
  * `Estimator.update`: DENSE comparison binning against the edges `logspace(1e3, M)` (float64,
    stored as an [M, neurons] tensor, as the official `thresh`):
    `((s[:, None, :] >= t[None, :M-1]) & (s[:, None, :] < t[None, 1:])).sum(0)`, i.e. two
    [batch, M-1, neurons] float64 comparisons, then added to a float32 [M-1, neurons] `t_act`;
  * M per layer: the CIFAR-10 defaults avgpool 50, layer3 500, layer2 50, layer1 500 (the WRN
    layers at the same positions get the same M). O and alpha do not change the work (alpha is
    set to the CIFAR-10 defaults 100, 1000, 0.001, 0.001 anyway). A ViT uses the official
    ViT-B/16 layers and defaults instead: `encoder.ln` (class token, M 50, alpha 100) and the
    `ln_2` outputs of the last three blocks (summed over all tokens, the official
    `pooling_vit_mlp`; M 500, 500, 1000, alpha 1, 10, 1).

`single_backward_nac`: the same outputs from ONE `torch.autograd.grad(loss, [z_avgpool, z3, z2,
z1])`, `torch.sigmoid`, and `torch.bucketize` binning (float64, right=True, so bin i is
[t_i, t_{i+1}) as above) with the histogram from `torch.bincount` into int64 counts.

`pairs_only` (extra): forward + one backward to the four layers + the pooled pairs (sum z,
sum g) + argmax predictions, no states and no histogram. This is the work `nac bench`'s
`nac_pass` times (forward, backward to the official layers, pooled pairs, predictions), so it is
the like-for-like comparison; the two NAC variants above add the per-layer state and histogram
work the official profiling does on every batch.

On the first (warm-up) batch the histograms of `official_nac` and `single_backward_nac` are
compared; the JSON records how many counts differ (expected 0).

What is not reproduced
----------------------
* The official layer names: `get_intr_name` only maps ResNet, ViT and Swin. The WRN layers
  (block1..3 outputs, the pooled feature after the final bn1 + ReLU) follow the project's spec,
  section 8; the official code has no WRN path (its `StatePooling` would sum over H x W, as here).
* Data loading (the official DataLoader with 8 workers, batch 64, pin_memory) and the `.cuda()`
  copies: inputs here are already on the device, as in `nac bench`.
* Scoring (`assess_ood` / `Estimator.ood_test`) and the coverage update are not timed: the timed
  NAC pass is the profiling pass (`assess`), once per batch. The edges are computed with
  `np.log(x) / np.log(1000)` (`torch_reference.nac_ue_edges`) rather than `np.emath.logn`;
  the values may differ in the last ulp, which does not change the time.
* The official `kl_grad` builds `LogSoftmax().cuda()`; this runs on `--device` instead.
"""

import argparse
import datetime
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # tools/__pycache__/torch_reference.*.pyc is tracked; leave it alone
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_reference import build_model, nac_ue_edges, uniform_kl_loss  # noqa: E402

FORMAT = "nac-torch-bench"
VERSION = 1
CLASSES = 10

# Official order, CIFAR-10 defaults (M, alpha) per position: avgpool, then deeper to shallower.
CIFAR10_M_ALPHA = [(50, 100.0), (500, 1000.0), (50, 0.001), (500, 0.001)]


# The official ViT-B/16 (M, alpha) of layer_norm, layer_11, layer_10, layer_9.
VIT_M_ALPHA = [(50, 100.0), (500, 1.0), (500, 10.0), (1000, 1.0)]


def parse_vit(arch):
    """`vit-i32-p4-d4-w64-h4-m256` -> dict of the six fields, or None for other architectures."""
    if not arch.startswith("vit-"):
        return None
    fields = {f[0]: int(f[1:]) for f in arch[4:].split("-")}
    if sorted(fields) != sorted("ipdwhm"):
        raise ValueError(f"architecture {arch}: expected vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP")
    return fields


def nac_layers(arch):
    """(layer name, module path, pooling) in the official order: `hw` sums over H x W, `cls` takes
    the class token, `tokens` sums over all tokens."""
    if arch == "resnet18_32x32":
        return [(n, n, "hw") for n in ["avgpool", "layer3", "layer2", "layer1"]]
    if arch.startswith("wrn-"):
        return [(n, n, "hw") for n in ["avgpool", "block3", "block2", "block1"]]
    vit = parse_vit(arch)
    if vit:
        deep = [i for i in range(vit["d"] - 1, vit["d"] - 4, -1) if i >= 0]
        return [("layer_norm", "encoder.ln", "cls")] + [(f"layer_{i}", f"encoder.layers.encoder_layer_{i}.ln_2", "tokens") for i in deep]
    raise ValueError(f"unknown architecture {arch}")


def pool(x, kind):
    if kind == "hw":
        return x.sum(dim=[2, 3])
    if kind == "cls":
        return x[:, 0]
    return x.sum(dim=1)


def make_model(arch):
    vit = parse_vit(arch)
    if vit is None:
        return build_model(arch, CLASSES)
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=vit["i"], patch_size=vit["p"], num_layers=vit["d"], num_heads=vit["h"], hidden_dim=vit["w"],
                             mlp_dim=vit["m"], num_classes=CLASSES)


class Retainer:
    """Keeps the live output of each named module of the last forward pass."""

    def __init__(self, model, layers):
        self.outputs = {}
        self.handles = [model.get_submodule(path).register_forward_hook(self._hook(name)) for name, path, _ in layers]

    def _hook(self, name):
        def fn(_module, _inputs, output):
            self.outputs[name] = output

        return fn

    def close(self):
        for h in self.handles:
            h.remove()


def official_sigmoid(x, alpha):
    return 1 / (1 + torch.exp(-alpha * x))


class Bench:
    def __init__(self, args):
        self.device = torch.device(args.device)
        torch.manual_seed(args.seed)
        self.model = make_model(args.arch).float().eval().to(self.device)
        gen = torch.Generator().manual_seed(args.seed + 1)
        self.x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(self.device)
        self.y = torch.randint(0, CLASSES, (args.batch,), generator=gen).to(self.device)
        hooked = nac_layers(args.arch)
        self.layers = [name for name, _, _ in hooked]
        self.pooling = {name: kind for name, _, kind in hooked}
        self.retainer = Retainer(self.model, hooked)
        with torch.no_grad():
            self.model(self.x[:1])
        self.neurons = {ln: pool(self.retainer.outputs[ln], self.pooling[ln]).shape[1] for ln in self.layers}
        m_alpha = VIT_M_ALPHA if parse_vit(args.arch) else CIFAR10_M_ALPHA
        self.m = {ln: m for ln, (m, _) in zip(self.layers, m_alpha)}
        self.alpha = {ln: a for ln, (_, a) in zip(self.layers, m_alpha)}
        # Official `Estimator.thresh`: float64 [M, neurons]; `t_act`: float32 [M-1, neurons].
        self.thresh = {
            ln: torch.from_numpy(nac_ue_edges(self.m[ln])).view(-1, 1).repeat(1, self.neurons[ln]).to(self.device)
            for ln in self.layers
        }
        self.t_act = {ln: torch.zeros(self.m[ln] - 1, self.neurons[ln], device=self.device) for ln in self.layers}
        self.edges = {ln: torch.from_numpy(nac_ue_edges(self.m[ln])).to(self.device) for ln in self.layers}
        self.counts = {ln: torch.zeros(self.m[ln] - 1, self.neurons[ln], dtype=torch.int64, device=self.device) for ln in self.layers}

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def forward(self):
        with torch.no_grad():
            return self.model(self.x)

    def official_nac(self):
        p = self.model(self.x)
        correct = (p.argmax(1) == self.y).float().sum().item()  # official `acc`
        for j, ln in enumerate(self.layers):
            z = self.retainer.outputs[ln]
            loss = torch.sum(-(torch.ones_like(p) / p.shape[-1]) * F.log_softmax(p, dim=-1), dim=-1)
            g = torch.autograd.grad(loss.sum(), z, retain_graph=j < len(self.layers) - 1)[0]
            sz, sg = pool(z.detach(), self.pooling[ln]), pool(g.detach(), self.pooling[ln])
            s = official_sigmoid(sz * sg, self.alpha[ln])
            t, m = self.thresh[ln], self.m[ln]
            with torch.no_grad():
                b_act = (s.unsqueeze(1) >= t[: m - 1].unsqueeze(0)) & (s.unsqueeze(1) < t[1:m].unsqueeze(0))
                self.t_act[ln] += b_act.sum(dim=0)
        return correct

    def backward_pairs(self):
        p = self.model(self.x)
        zs = [self.retainer.outputs[ln] for ln in self.layers]
        gs = torch.autograd.grad(uniform_kl_loss(p), zs)
        pairs = {ln: (pool(z.detach(), self.pooling[ln]), pool(g, self.pooling[ln])) for ln, z, g in zip(self.layers, zs, gs)}
        return p.detach(), pairs

    def pairs_only(self):
        p, pairs = self.backward_pairs()
        return p.argmax(1), pairs

    def single_backward_nac(self):
        p, pairs = self.backward_pairs()
        preds = p.argmax(1)
        with torch.no_grad():
            for ln, (sz, sg) in pairs.items():
                s = official_sigmoid(sz * sg, self.alpha[ln])
                m, n = self.m[ln], self.neurons[ln]
                idx = torch.bucketize(s.double(), self.edges[ln], right=True) - 1
                valid = (idx >= 0) & (idx <= m - 2)
                flat = (idx * n + torch.arange(n, device=s.device))[valid]
                self.counts[ln] += torch.bincount(flat, minlength=(m - 1) * n).view(m - 1, n)
        return preds

    def histograms_differ(self):
        """Runs both NAC variants once from empty histograms; counts that differ."""
        for ln in self.layers:
            self.t_act[ln].zero_()
            self.counts[ln].zero_()
        self.official_nac()
        self.single_backward_nac()
        self.sync()
        return {ln: int((self.t_act[ln].to(torch.int64) != self.counts[ln]).sum().item()) for ln in self.layers}


def timed(bench, fn, repeats):
    fn()
    bench.sync()
    times = []
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        fn()
        bench.sync()
        times.append(time.perf_counter() - started)
    return times


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18_32x32",
                        help="resnet18_32x32, wrn-DEPTH-WIDTH (e.g. wrn-16-2) or vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all CPUs)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="forward,official_nac,single_backward_nac,pairs_only", help="comma-separated measurements")
    parser.add_argument("--out", type=Path, default=Path("torch.json"))
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("torch_bench: --device cuda but torch.cuda.is_available() is False")
    torch.set_num_threads(args.threads)

    bench = Bench(args)
    differ = bench.histograms_differ()
    measurements = [m.strip() for m in args.only.split(",") if m.strip()]
    timings = {}
    for name in measurements:
        fn = getattr(bench, name)
        started = time.perf_counter()
        times = timed(bench, fn, args.repeats)
        s = sorted(times)[len(times) // 2]  # `nac bench`'s median: the upper one of an even count
        timings[name] = {
            "s_per_batch": s,
            "images_per_s": args.batch / s,
            "runs_s": times,
        }
        print(f"torch_bench: {args.arch} batch {args.batch} {name}: {s * 1e3:.1f} ms/batch, {args.batch / s:.1f} images/s "
              f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)

    device_name = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else cpu_name()
    report = {
        "format": FORMAT,
        "version": VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(bench.device),
        "device_name": device_name,
        "arch": args.arch,
        "batch": args.batch,
        "size": args.size,
        "classes": CLASSES,
        "repeats": args.repeats,
        "seed": args.seed,
        "layers": [{"name": ln, "neurons": bench.neurons[ln], "m": bench.m[ln], "alpha": bench.alpha[ln]} for ln in bench.layers],
        "histogram_counts_differing_official_vs_single_backward": differ,
        "timings": timings,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
