#!/usr/bin/env python3
"""Checkpoints written by `torch.save` for tests/pth.rs (read there without PyTorch).

Each `NAME.pth` has a `NAME.safetensors` beside it holding the tensors the reader must find
(public naming, same dtypes, contiguous); hostile files have none and must be refused.

    python3 tools/pth_goldens.py tests/golden/pth
"""
import collections
import io
import os
import pickle
import sys
import zipfile

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from torch_reference import build_model  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


def expect(name, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, name + ".safetensors"))


# A real network's state dict (BatchNorm counters, _metadata), in the naming nac detects.
wrn = build_model("wrn-10-1", 3).eval().half()  # f16 keeps the file small
sd = wrn.state_dict()
torch.save(sd, os.path.join(out, "wrn_state_dict.pth"))
expect("wrn_state_dict", sd)

# RobustBench / DataParallel style: {'state_dict': …} with `module.` prefixes, plus metadata.
head = collections.OrderedDict(list(sd.items())[:6])
wrapped = collections.OrderedDict(("module." + k, v) for k, v in head.items())
torch.save({"state_dict": wrapped, "epoch": 3, "best_acc": 0.93, "arch": "wrn-10-1"}, os.path.join(out, "wrapped_module.pth"))
expect("wrapped_module", head)

# Dtypes and layouts: f16, bf16, a transposed (non-contiguous) view, a storage offset.
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
odd = collections.OrderedDict()
odd["model.half"] = torch.linspace(-1, 1, 10).half()
odd["model.bf16"] = torch.linspace(-2, 2, 6).bfloat16()
odd["model.transposed"] = base.t()
odd["model.sliced"] = base[1:3, 2:5]
odd["model.scalar"] = torch.tensor(7.5)
torch.save({"model": odd}, os.path.join(out, "layouts.pth"))
expect("layouts", {k[len("model."):]: v for k, v in odd.items()})


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# Hostile: a pickle that would run os.system, in a torch.save-shaped archive.
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
    z.writestr("evil/data.pkl", pickle.dumps({"w": Exploit()}, protocol=2))
    z.writestr("evil/version", "3\n")
open(os.path.join(out, "hostile_os_system.pth"), "wb").write(buffer.getvalue())

# Hostile: a broadcast view claiming 2^40 elements of a one-element storage.
torch.save({"w": torch.zeros(1).expand(2**40)}, os.path.join(out, "hostile_broadcast.pth"))

# Hostile: truncated archive, and a storage shorter than the pickle claims.
good = open(os.path.join(out, "layouts.pth"), "rb").read()
open(os.path.join(out, "hostile_truncated.pth"), "wb").write(good[: len(good) // 2])
buffer = io.BytesIO()
with zipfile.ZipFile(os.path.join(out, "layouts.pth")) as src, zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data/0"):
            data = data[: len(data) // 2]
        dst.writestr(info.filename, data)
open(os.path.join(out, "hostile_lying_storage.pth"), "wb").write(buffer.getvalue())
for name in os.listdir(out):
    os.chmod(os.path.join(out, name), 0o644)
print("torch", torch.__version__, "->", sorted(os.listdir(out)))
