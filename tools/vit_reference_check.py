#!/usr/bin/env python3
"""PyTorch golden for the f64 Vision Transformer reference (`src/reference/vit.rs`).

Builds torchvision's own `VisionTransformer` (image 8, patch 4, 2 blocks, width 8, 2 heads,
MLP 12, 3 classes), draws every parameter at random (torchvision's init zeroes the head and
leaves the positions tiny), stores the weights in float32 and runs the network in float64, eval
mode, on two random images. For the NAC loss sum_b sum_c -(1/C) log_softmax(logits_b)_c and for
the cross-entropy to the labels it records the logits, the loss, z and g = dL/dz at every NAC
layer (`layer_i` = encoder.layers.encoder_layer_i.ln_2's output, all tokens, [B, T, D];
`layer_norm` = encoder.ln's output, class token, [B, D]) and dL/dinput.

Writes `<out>/vit_tiny.model.safetensors` (the float32 state dict, torchvision names, with the
number of heads as `num_heads` metadata) and `<out>/vit_tiny.golden.safetensors` (float64:
`input`, `labels`, then `<loss>.logits`, `<loss>.loss`, `<loss>.<layer>.z`, `<loss>.<layer>.g`,
`<loss>.input_grad` for loss in nac, label). Regenerate with

    python3 tools/vit_reference_check.py --out tests/golden

Requires: torch, torchvision, numpy, safetensors.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models.vision_transformer import VisionTransformer

IMAGE, PATCH, DEPTH, WIDTH, HEADS, MLP, CLASSES, BATCH = 8, 4, 2, 8, 2, 12, 3, 2
LABELS = [2, 0]


def randomise(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln.weight")):
                v = 1.0 + 0.3 * r
            elif name in ("class_token", "encoder.pos_embedding"):
                v = 0.5 * r
            elif name.endswith("bias"):
                v = 0.1 * r
            else:  # weights: fan-in scaled
                v = r / (p[0].numel() ** 0.5)
            p.copy_(v.float())


def run(model, x, loss_name):
    states = {}

    def keep(name, index=None):
        def hook(_module, _inputs, out):
            out.retain_grad()
            states[name] = (out, index)

        return hook

    handles = [blk.ln_2.register_forward_hook(keep(f"layer_{i}")) for i, blk in enumerate(model.encoder.layers)]
    handles.append(model.encoder.ln.register_forward_hook(keep("layer_norm", 0)))
    x = x.clone().requires_grad_(True)
    logits = model(x)
    for h in handles:
        h.remove()
    if loss_name == "nac":
        loss = -(F.log_softmax(logits, dim=1) / CLASSES).sum()
    else:
        loss = F.cross_entropy(logits, torch.tensor(LABELS), reduction="sum")
    loss.backward()
    out = {f"{loss_name}.logits": logits.detach(), f"{loss_name}.loss": loss.detach().reshape(1), f"{loss_name}.input_grad": x.grad}
    for name, (t, index) in states.items():
        z, g = t.detach(), t.grad
        if index is not None:
            z, g = z[:, index], g[:, index]
        out[f"{loss_name}.{name}.z"] = z
        out[f"{loss_name}.{name}.g"] = g
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(16)
    model = VisionTransformer(IMAGE, PATCH, DEPTH, HEADS, WIDTH, MLP, num_classes=CLASSES)
    randomise(model, gen)
    model.eval()
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    x = torch.randn(BATCH, 3, IMAGE, IMAGE, generator=gen, dtype=torch.float64).float().double()
    model = model.double()
    golden = {"input": x, "labels": torch.tensor(LABELS, dtype=torch.float64)}
    for loss_name in ("nac", "label"):
        golden.update(run(model, x, loss_name))
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out / "vit_tiny.model.safetensors"), metadata={"num_heads": str(HEADS)})
    save_file({k: v.contiguous() for k, v in golden.items()}, str(args.out / "vit_tiny.golden.safetensors"))
    print(f"wrote {args.out}/vit_tiny.{{model,golden}}.safetensors ({len(state)} parameters, {len(golden)} golden tensors)")


if __name__ == "__main__":
    main()
