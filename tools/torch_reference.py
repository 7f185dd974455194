#!/usr/bin/env python3
"""PyTorch reference for the NAC golden tests.

What it implements (see /work/shared/spec/nac-algorithm.md, sections 1, 2, 3, 4, 6, 8):
the official NAC code's semantics (BierOne/ood_coverage, OpenOOD v1.5 fork, postprocessor `nac`)
on random-weight networks, in float32 for the network and the neuron states and float64 for
the bin edges, the bin comparison and the scores:

* the networks: OpenOOD's ResNet18_32x32, RobustBench's WideResNet (here WRN-16-4) and
  torchvision's own `VisionTransformer` class (case arch `vit-iIMAGE-pPATCH-dDEPTH-wWIDTH-hHEADS-mMLP`,
  the heads also checked against the checkpoint's `num_heads` metadata), eval mode;
* neuron states: loss L = sum_c -(1/C) log_softmax(logits)_c summed over the batch, one backward
  pass, g = dL/dz at every NAC layer, s = sigmoid(alpha * (sum z) * (sum g)) per channel, the
  sums over H x W for a CNN; for a ViT (spec section 8) over all tokens of each block's `ln_2`
  output (`layer_i`, class token included) and the class token alone of `encoder.ln`
  (`layer_norm`), as forward hooks on those modules capture them;
* NAC-UE: log-spaced edges symmetric around 0.5, a histogram of the profiling samples' states
  (all of them), coverage min(count / O, 1), layer score = mean over neurons, score = mean over
  layers, for several hyperparameter settings;
* NAC-ME: the feature layer (avgpool, a ViT's layer_norm), alpha = 0.1, uniform edges linspace(0, 1, 50), O = 500, only correctly
  classified samples counted, value = mean_n(sum_bins min(count / O, 1) / 50);
* the gradient to the input of the first inputs for the NAC loss, cross-entropy to the labels,
  and ODIN's cross-entropy of logits / 1000 to the predicted class.

Inputs: `<inputs>/<case>.json`, `<case>.model.safetensors` (float32 weights, public naming) and
`<case>.inputs.npy` (float32 N x 3 x H x W; the first n_profile samples profile, the last n_test
are scored), written by the Rust side:

    cargo run --release --example golden_inputs -- target/golden-inputs

Output: `<out>/<case>.safetensors` per case (tensors described in `write_golden`). Regenerate with

    python3 tools/torch_reference.py --inputs target/golden-inputs --out tests/golden

Requires: torch (2.x, CPU is enough), torchvision (for the ViT cases), numpy, safetensors.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.numpy import save_file
from safetensors.torch import load_file

FORMAT = "nac-golden"
VERSION = 1

# --------------------------------------------------------------------------------------------
# Hyperparameter settings: per layer (name, O, M, alpha), in the official layer order
# (avgpool first, then deeper to shallower stages).
# --------------------------------------------------------------------------------------------


def uniform_setting(layers, o, m, alpha):
    return [(layer, o, m, alpha) for layer in layers]


RESNET_LAYERS = ["avgpool", "layer3", "layer2", "layer1"]
WRN_LAYERS = ["avgpool", "block3", "block2", "block1"]

SETTINGS = {
    "resnet18_32x32": {
        "cifar10": [("avgpool", 50, 50, 100.0), ("layer3", 100, 500, 1000.0), ("layer2", 5, 50, 0.001), ("layer1", 100, 500, 0.001)],
        "cifar100": [("avgpool", 50, 50, 50.0), ("layer3", 500, 1000, 10.0), ("layer2", 500, 50, 1.0), ("layer1", 5, 50, 0.005)],
        "imagenet": [("avgpool", 10, 50, 3000.0), ("layer3", 500, 50, 300.0), ("layer2", 50, 500, 0.01), ("layer1", 5000, 1000, 1.0)],
        "alpha0.001_m50": uniform_setting(RESNET_LAYERS, 5, 50, 0.001),
        "alpha5000_m1000": uniform_setting(RESNET_LAYERS, 2, 1000, 5000.0),
        "alpha1_m500": uniform_setting(RESNET_LAYERS, 3, 500, 1.0),
    },
    "wrn-16-4": {
        "cifar10": [("avgpool", 50, 50, 100.0), ("block3", 100, 500, 1000.0), ("block2", 5, 50, 0.001), ("block1", 100, 500, 0.001)],
        "alpha0.001_m50": uniform_setting(WRN_LAYERS, 5, 50, 0.001),
        "alpha5000_m1000": uniform_setting(WRN_LAYERS, 2, 1000, 5000.0),
    },
}


def vit_settings(depth):
    """The official ViT layers (spec section 8): layer_norm and the last three blocks (all of them
    below depth 3), which take the official values of layer_11, layer_10, layer_9 by distance from
    the end; then uniform settings that spread the states over the bins."""
    blocks = [f"layer_{depth - 1 - k}" for k in range(min(3, depth))]
    official = [(500, 50, 100.0), (50, 500, 1.0), (10, 500, 10.0), (10, 1000, 1.0)]
    layers = ["layer_norm"] + blocks
    return {
        "imagenet-vit": [(layer, *values) for layer, values in zip(layers, official)],
        "alpha10_m50": uniform_setting(layers, 5, 50, 10.0),
        "alpha1000_m1000": uniform_setting(layers, 2, 1000, 1000.0),
        "alpha0.1_m500": uniform_setting(layers, 3, 500, 0.1),
    }


def settings_for(case):
    if case["arch"].startswith("vit-"):
        return vit_settings(parse_vit(case["arch"])["num_layers"])
    return SETTINGS[case["case"]]


# The official NAC-ME setting first; with O = 500 and a few dozen samples every counted state adds
# exactly 1/500 wherever it lands, so two small-O settings follow that make the value depend on
# the bins (M = 51 puts an edge exactly at 0.5, where states with v = 0 sit). FEATURE is replaced
# by the network's feature layer (avgpool, or a ViT's layer_norm).
FEATURE = "feature"
NAC_ME = [
    {"layer": FEATURE, "alpha": 0.1, "m": 50, "o": 500},
    {"layer": FEATURE, "alpha": 0.1, "m": 50, "o": 2},
    {"layer": FEATURE, "alpha": 100.0, "m": 51, "o": 2},
]

# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class ResNetBasicBlock(nn.Module):
    """OpenOOD ResNet18_32x32 BasicBlock (post-activation)."""

    expansion = 1

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet18_32x32(nn.Module):
    """OpenOOD ResNet18_32x32: 3x3 stem, no max-pool, 4 stages of 2 BasicBlocks, avgpool, fc."""

    nac_layers = {name: (name, "spatial") for name in ["layer1", "layer2", "layer3", "layer4", "avgpool"]}
    feature_layer = "avgpool"

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks = []
            for s in [stride, 1]:
                blocks.append(ResNetBasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.avgpool(out)
        return self.fc(torch.flatten(out, 1))


class WrnBasicBlock(nn.Module):
    """RobustBench WideResNet BasicBlock (pre-activation), dropout 0."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x):
        if not self.equal_in_out:
            x = F.relu(self.bn1(x))
            out = x
        else:
            out = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(out)))
        out = self.conv2(out)
        return (x if self.equal_in_out else self.convShortcut(x)) + out


class WrnNetworkBlock(nn.Module):
    def __init__(self, n_layers, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[WrnBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n_layers)]
        )

    def forward(self, x):
        return self.layer(x)


class GlobalAvgPool(nn.Module):
    """Mean over H x W, kept as B x C x 1 x 1 (the NAC `avgpool` layer)."""

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


class WideResNet(nn.Module):
    """RobustBench WideResNet-depth-width: conv1, block1..3, final bn1 + ReLU, avg pool, fc."""

    nac_layers = {name: (name, "spatial") for name in ["block1", "block2", "block3", "avgpool"]}
    feature_layer = "avgpool"

    def __init__(self, depth, width, num_classes):
        super().__init__()
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WrnNetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = WrnNetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = WrnNetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.avgpool = GlobalAvgPool()
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = self.avgpool(out)
        return self.fc(torch.flatten(out, 1))


def parse_vit(arch):
    """`vit-i32-p4-d4-w64-h4-m128` as torchvision's VisionTransformer arguments."""
    fields = {f[0]: int(f[1:]) for f in arch[len("vit-"):].split("-")}
    assert sorted(fields) == sorted("ipdwhm"), f"{arch}: expected the full vit-iN-pN-dN-wN-hN-mN form"
    keys = {"i": "image_size", "p": "patch_size", "d": "num_layers", "w": "hidden_dim", "h": "num_heads", "m": "mlp_dim"}
    return {keys[k]: v for k, v in fields.items()}


def build_vit(arch, num_classes):
    """torchvision's VisionTransformer (dropout 0), with the NAC layers of spec section 8: block
    i's `ln_2` as `layer_i` (summed over the tokens) and `encoder.ln` as `layer_norm` (class token)."""
    from torchvision.models.vision_transformer import VisionTransformer

    args = parse_vit(arch)
    model = VisionTransformer(**args, num_classes=num_classes)
    model.nac_layers = {f"layer_{i}": (f"encoder.layers.encoder_layer_{i}.ln_2", "tokens") for i in range(args["num_layers"])}
    model.nac_layers["layer_norm"] = ("encoder.ln", "class_token")
    model.feature_layer = "layer_norm"
    return model


def build_model(arch, num_classes):
    if arch.startswith("vit-"):
        return build_vit(arch, num_classes)
    if arch == "resnet18_32x32":
        return ResNet18_32x32(num_classes)
    if arch.startswith("wrn-"):
        depth, width = (int(v) for v in arch[len("wrn-"):].split("-"))
        return WideResNet(depth, width, num_classes)
    raise ValueError(f"unknown architecture {arch}")


def load_model(arch, num_classes, path, widen=False):
    """Builds the network and loads every weight of `path`; fails on any unused or missing key
    other than BatchNorm's `num_batches_tracked`. With `widen`, float16/bfloat16 weights are
    widened to float32 (as the engine does on load); otherwise they must be float32."""
    model = build_model(arch, num_classes)
    weights = load_file(str(path))
    if widen:
        weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{path}: missing keys {missing}, unexpected keys {unexpected}")
    for k, v in weights.items():
        if v.dtype != torch.float32:
            raise RuntimeError(f"{path}: {k} is {v.dtype}, expected float32")
    if arch.startswith("vit-"):
        with safe_open(str(path), framework="pt") as f:
            heads = (f.metadata() or {}).get("num_heads")
        if heads != str(parse_vit(arch)["num_heads"]):
            raise RuntimeError(f"{path}: metadata num_heads is {heads!r}, the case's arch {arch} says otherwise")
    return model.float().eval(), len(weights)


# --------------------------------------------------------------------------------------------
# Capture of z and g: forward hooks, one backward pass of the uniform-target cross-entropy
# --------------------------------------------------------------------------------------------


def uniform_kl_loss(logits):
    """L = sum over the batch of sum_c -(1/C) log_softmax(logits)_c (official NAC loss)."""
    targets = torch.ones_like(logits) / logits.shape[1]
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).sum()


def pool(t, how):
    """B x C x H x W summed over H x W, or B x T x C summed over the tokens or at the class token."""
    if how == "spatial":
        assert t.dim() == 4
        return t.sum(dim=(2, 3))
    assert t.dim() == 3
    return t.sum(dim=1) if how == "tokens" else t[:, 0]


def capture(model, inputs):
    """Returns (logits [N, C], {layer: (sum_z [N, C_l], sum_g [N, C_l])}), float32."""
    outputs = {}

    def hook(name):
        def fn(_module, _inputs, output):
            output.retain_grad()
            outputs[name] = output

        return fn

    modules = dict(model.named_modules())
    handles = [modules[path].register_forward_hook(hook(name)) for name, (path, _) in model.nac_layers.items()]
    try:
        x = torch.from_numpy(inputs)
        logits = model(x)
        uniform_kl_loss(logits).backward()
    finally:
        for h in handles:
            h.remove()
    pooled = {}
    with torch.no_grad():
        for name, (_, how) in model.nac_layers.items():
            z = outputs[name]
            assert z.grad is not None and z.grad.dtype == torch.float32
            pooled[name] = (pool(z.detach(), how), pool(z.grad, how))
    return logits.detach(), pooled


def input_gradients(model, inputs, labels, n):
    """d loss / d input (NCHW) of the first `n` inputs for three losses: the NAC loss,
    cross-entropy to `labels`, and ODIN's cross-entropy of logits / 1000 to the prediction."""
    out = {}
    for name in ("nac", "label", "prediction_t1000"):
        x = torch.from_numpy(inputs[:n].copy()).requires_grad_(True)
        logits = model(x)
        if name == "nac":
            loss = uniform_kl_loss(logits)
        elif name == "label":
            loss = F.cross_entropy(logits, torch.from_numpy(labels[:n]), reduction="sum")
        else:
            loss = F.cross_entropy(logits / 1000.0, logits.argmax(dim=1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        out[f"input_grad.{name}"] = grad.numpy().astype(np.float32)
    return out


def states(sum_z, sum_g, alpha):
    """s = sigmoid(alpha * sum_z * sum_g), float32 as in torch."""
    with torch.no_grad():
        return torch.sigmoid(alpha * (sum_z * sum_g))


# --------------------------------------------------------------------------------------------
# Bin edges and bins (float64)
# --------------------------------------------------------------------------------------------


def nac_ue_edges(m):
    """M log-spaced edges symmetric around 0.5 (spec section 2), float64."""
    assert m % 2 == 0 and m >= 4
    n = m // 2
    x = np.log(np.linspace(1, np.sqrt(1000), n)) / np.log(1000)
    edges = np.concatenate([x[: n - 1], (1 - x)[::-1]])
    edges[-1] += 0.01
    return np.append(edges, 1.2).astype(np.float64)


def uniform_edges(m):
    """NAC-ME edges: linspace(0, 1, M), float64."""
    return np.linspace(0, 1, m).astype(np.float64)


def bin_of(state, edges):
    """Bin index of each float32 state, compared in float64: searchsorted(side='right') - 1,
    -1 where the state lies in no bin [t_i, t_{i+1}), i = 0..M-2."""
    s = np.asarray(state, dtype=np.float32).astype(np.float64)
    idx = np.searchsorted(edges, s, side="right") - 1
    idx[(idx < 0) | (idx > len(edges) - 2)] = -1
    return idx.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Profile, score, NAC-ME
# --------------------------------------------------------------------------------------------


def profile(bins, n_bins):
    """count[bin][n] over the given samples' bins [S, C] (-1 skipped), int64 [n_bins, C]."""
    count = np.zeros((n_bins, bins.shape[1]), dtype=np.int64)
    for sample in bins:
        valid = sample >= 0
        count[sample[valid], np.nonzero(valid)[0]] += 1
    return count


def layer_score(count, bins, o):
    """Per sample mean_n min(count[bin_n][n] / O, 1) (0 for no bin), float64 [S]."""
    coverage = np.minimum(count.astype(np.float64) / o, 1.0)
    channels = np.arange(bins.shape[1])
    phi = np.where(bins >= 0, coverage[np.maximum(bins, 0), channels], 0.0)
    return phi.mean(axis=1)


def nac_me(sum_z, sum_g, correct, alpha, m, o):
    """NAC-ME value over the correctly classified samples (spec section 6)."""
    s = states(sum_z, sum_g, alpha).numpy()
    bins = bin_of(s, uniform_edges(m))
    count = profile(bins[correct], m - 1)
    coverage = np.minimum(count.astype(np.float64) / o, 1.0)
    return float(np.mean(coverage.sum(axis=0) / m))


# --------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------


def edge_proximity(sum_z, sum_g, alpha, edges, rel=1e-5, tol=1e-6):
    """Diagnostics of how fragile the bins are (printed, not stored). Edge 0 is left out: no
    state lies below it, so a state at or near 0 is never ambiguous. Returns counts of
    - `dead`: v = sum_z * sum_g exactly 0 (a channel that is all zero, or whose gradient is),
      so s = 0.5 exactly, on the 0.5 edge; robust as long as v is computed as exactly 0;
    - `rounded`: v < 0 but the f32 sigmoid rounds to exactly 0.5, so the state lands in the bin
      above 0.5; an implementation must round sigmoid of tiny negative arguments the same way;
    - `near`: other states within `tol` of an edge;
    - `fragile`: states whose float64 bin changes when v is scaled by 1 +- `rel`."""
    s32 = states(sum_z, sum_g, alpha).numpy().reshape(-1)
    s = s32.astype(np.float64)
    v = (sum_z * sum_g).numpy().astype(np.float64).reshape(-1)
    inner = edges[1:]
    pos = np.clip(np.searchsorted(inner, s), 1, len(inner) - 1)
    distance = np.minimum(np.abs(s - inner[pos - 1]), np.abs(s - inner[pos]))
    dead = v == 0
    rounded = (v < 0) & (s32 == np.float32(0.5))
    near = (distance < tol) & ~dead & ~rounded
    with np.errstate(over="ignore"):
        exact = np.searchsorted(edges, 1.0 / (1.0 + np.exp(-alpha * v)), side="right")
        fragile = np.zeros(len(s), dtype=bool)
        for scale in (1 - rel, 1 + rel):
            fragile |= np.searchsorted(edges, 1.0 / (1.0 + np.exp(-alpha * v * scale)), side="right") != exact
    return int(dead.sum()), int(rounded.sum()), int(near.sum()), int(fragile.sum())


def check_bins(s, bins, edges):
    """Every bin agrees with its edges in float64."""
    s64 = np.asarray(s, dtype=np.float32).astype(np.float64)
    valid = bins >= 0
    b = bins[valid]
    assert np.all(edges[b] <= s64[valid]) and np.all(s64[valid] < edges[b + 1])
    outside = s64[~valid]
    assert np.all((outside < edges[0]) | (outside >= edges[-2]))


def run_case(case, inputs_dir, out_dir):
    name = case["case"]
    n_profile, n_test, classes = case["n_profile"], case["n_test"], case["classes"]
    model, n_weights = load_model(case["arch"], classes, inputs_dir / f"{name}.model.safetensors")
    inputs = np.load(inputs_dir / f"{name}.inputs.npy")
    assert inputs.dtype == np.float32
    assert inputs.shape == (n_profile + n_test, 3, case["height"], case["width"]), inputs.shape
    print(f"== {name}: {n_weights} weight tensors, all used; inputs {inputs.shape}")

    logits, pooled = capture(model, inputs)
    tensors = {"logits": logits.numpy().astype(np.float32)}
    for layer, (sz, sg) in pooled.items():
        tensors[f"sum_z.{layer}"] = sz.numpy().astype(np.float32)
        tensors[f"sum_g.{layer}"] = sg.numpy().astype(np.float32)

    settings_meta = []
    for setting, layers in settings_for(case).items():
        layer_scores = []
        summary = []
        for layer, o, m, alpha in layers:
            s = states(*pooled[layer], alpha).numpy()
            edges = nac_ue_edges(m)
            bins = bin_of(s, edges)
            check_bins(s, bins, edges)
            count = profile(bins[:n_profile], m - 1)
            layer_scores.append(layer_score(count, bins[n_profile:], o))
            tensors[f"edges.{setting}.{layer}"] = edges
            tensors[f"bins.{setting}.{layer}"] = bins.astype(np.int16)
            dead, rounded, near, fragile = edge_proximity(*pooled[layer], alpha, edges)
            summary.append(
                f"{layer}: no-bin {np.mean(bins < 0):.3f}, bins used {len(np.unique(bins[bins >= 0]))}/{m - 1}; "
                f"of {bins.size} states: v=0 {dead}, v<0 rounded to 0.5 {rounded}, other within 1e-6 of an edge {near}, "
                f"bin moves under 1e-5 relative change of v {fragile}"
            )
        layer_scores = np.stack(layer_scores).astype(np.float64)
        scores = layer_scores.mean(axis=0)
        tensors[f"layer_scores.{setting}"] = layer_scores
        tensors[f"scores.{setting}"] = scores
        settings_meta.append(
            {"name": setting, "layers": [{"name": l, "o": o, "m": m, "alpha": a} for l, o, m, a in layers]}
        )
        print(f"  {setting}: mean score {scores.mean():.6f}")
        for line in summary:
            print(f"    {line}")

    preds = logits.argmax(dim=1).numpy().astype(np.int64)
    labels = np.where(np.arange(len(preds)) % 2 == 0, preds, (preds + 1) % classes).astype(np.int64)
    tensors["labels"] = labels
    tensors.update(input_gradients(model, inputs, labels, case["n_grad"]))
    correct = preds == labels
    me_results = []
    for me in NAC_ME:
        me = {**me, "layer": model.feature_layer}
        value = nac_me(*pooled[me["layer"]], correct, me["alpha"], me["m"], me["o"])
        me_results.append({**me, "correct": int(correct.sum()), "value": value})
        print(f"  NAC-ME {me}: correct {int(correct.sum())}/{len(correct)}, value {value!r}")

    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "case": case,
        "torch_version": torch.__version__,
        "settings": settings_meta,
        "nac_me": me_results,
    }
    out = out_dir / f"{name}.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out), metadata={"golden": json.dumps(metadata)})
    print(f"  wrote {out} ({out.stat().st_size} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, default=Path("target/golden-inputs"))
    parser.add_argument("--out", type=Path, default=Path("tests/golden"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = sorted(args.inputs.glob("*.json"))
    if not cases:
        sys.exit(f"no <case>.json in {args.inputs}")
    for path in cases:
        run_case(json.loads(path.read_text()), args.inputs, args.out)


if __name__ == "__main__":
    main()
