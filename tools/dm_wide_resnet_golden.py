#!/usr/bin/env python3
"""Goldens for RobustBench's DMWideResNet (`tests/dm_wide_resnet.rs`), from the RobustBench class.

Builds random-weight `DMWideResNet`s with the class itself
(`robustbench/model_zoo/architectures/dm_wide_resnet.py`, imported from its file, so the
package's other dependencies are not needed), ReLU and Swish, BatchNorm running statistics,
scales and shifts drawn away from the identity, and writes per case under `--out`:

* `<case>.model.safetensors`: the model's own `state_dict()` in float32 (the public naming,
  no metadata: the activation is not in a state dict; the test gives it as `--arch` would);
* `<case>.golden.safetensors`: `inputs` (float32 N x 3 x 32 x 32 in [0, 1], pixel space: the
  class normalises with its own mean/std, recorded in the metadata), `labels` (int64), and from
  the same model in float64: `logits`, `features` (the pooled penultimate, the input of
  `logits`), `grad_nac` (dL/dinputs of the NAC loss sum_b sum_c -(1/C) log_softmax_c),
  `grad_ce` (of the cross-entropy to `labels`, summed), `features_grad_nac` (dL/dfeatures of
  the NAC loss). Metadata `golden`: JSON with the case's arch, mean and std.

Regenerate (a few seconds on a CPU):

    pip install --no-deps robustbench==1.1.1   # or pass the file with --module
    python3 tools/dm_wide_resnet_golden.py --out tests/golden/dm_wrn

Requires torch, numpy, safetensors.
"""

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

# (case, depth, width, activation, classes, seed)
CASES = [("dm_wrn_10_1_swish", 10, 1, "swish", 10, 1), ("dm_wrn_10_1_relu", 10, 1, "relu", 7, 2)]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2471, 0.2435, 0.2616)
BATCH = 2


def load_module(path):
    if path is None:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("robustbench is not installed: pip install --no-deps robustbench, or pass --module PATH")
        path = Path(spec.submodule_search_locations[0]) / "model_zoo" / "architectures" / "dm_wide_resnet.py"
    spec = importlib.util.spec_from_file_location("dm_wide_resnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def build(module, depth, width, activation, classes, seed):
    torch.manual_seed(seed)
    act = module.Swish if activation == "swish" else torch.nn.ReLU
    model = module.DMWideResNet(num_classes=classes, depth=depth, width=width, activation_fn=act, mean=MEAN, std=STD)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                # He-scaled, so activations keep their size through the blocks.
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(c, generator=g) * 0.6 - 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
        model.logits.weight.copy_(torch.randn(model.logits.weight.shape, generator=g) * 2.0 / model.num_channels**0.5)
        model.logits.bias.copy_(torch.rand(classes, generator=g) * 0.2 - 0.1)
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", type=Path, help="dm_wide_resnet.py (default: the installed robustbench package's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    module, path = load_module(args.module)
    args.out.mkdir(parents=True, exist_ok=True)
    for case, depth, width, activation, classes, seed in CASES:
        model = build(module, depth, width, activation, classes, seed)
        state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
        save_file(state, str(args.out / f"{case}.model.safetensors"))
        g = torch.Generator().manual_seed(seed + 200)
        inputs = torch.rand(BATCH, 3, 32, 32, generator=g)
        labels = torch.arange(BATCH) * 3 % classes
        # The same f32 weights, evaluated in float64.
        model64 = build(module, depth, width, activation, classes, seed).double()
        out = {"inputs": inputs.numpy(), "labels": labels.numpy().astype(np.int64)}
        feats = {}
        model64.logits.register_forward_hook(lambda _m, inp, _o: feats.__setitem__("f", inp[0]))
        for loss_name in ["nac", "ce"]:
            x = inputs.double().requires_grad_(True)
            logits = model64(x)
            feats["f"].retain_grad()
            if loss_name == "nac":
                loss = -(F.log_softmax(logits, dim=1).mean(dim=1)).sum()
            else:
                loss = F.cross_entropy(logits, labels, reduction="sum")
            loss.backward()
            out[f"grad_{loss_name}"] = x.grad.numpy()
            if loss_name == "nac":
                out["logits"] = logits.detach().numpy()
                out["features"] = feats["f"].detach().numpy()
                out["features_grad_nac"] = feats["f"].grad.numpy()
        meta = {"arch": f"dm-wrn-{depth}-{width}-{activation}", "mean": MEAN, "std": STD, "source": path.name}
        save_file(out, str(args.out / f"{case}.golden.safetensors"), metadata={"golden": json.dumps(meta)})
        print(case, "logits", out["logits"][0][:3], "|grad_nac|", np.abs(out["grad_nac"]).max())


if __name__ == "__main__":
    main()
