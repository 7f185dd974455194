#!/usr/bin/env python3
"""Goldens for tests/corruptions.rs from the original CIFAR-10-C functions.

Usage: tools/corruption_reference.py ROBUSTNESS_REPO [OUT_DIR]
  ROBUSTNESS_REPO: a checkout of github:hendrycks/robustness (the functions are taken from
  ImageNet-C/create_c/make_cifar_c.py, everything before its dataset loop);
  OUT_DIR: default tests/golden/corruptions.
Needs: pip install numpy scipy scikit-image opencv-python-headless wand pillow, and ImageMagick
(apt-get install libmagickwand-dev) for wand's motion blur.

Writes inputs.npy (2×32×32×3 RGB), gray.npy (28×28), and per corruption NAME_rgb.npy
(2 images × 5 severities × 32×32×3) and NAME_gray.npy (5×28×28): each the reference's output
cast with np.uint8 (truncation, as the released CIFAR-10-C files were written) after
np.random.seed(100·image + severity), the gray image replicated to RGB with channel 0 kept
(seed 200 + severity; only where the reference runs on 28×28: some functions hard-code 32).
Frost reads five synthetic pictures (frost_picture below; the Rust test builds the same ones).
"""
import os
import sys
import tempfile
import types

import numpy as np
import skimage
import skimage.filters
import skimage.util
from PIL import Image

repo = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "corruptions")
os.makedirs(out, exist_ok=True)

# Shims for today's libraries; the functions themselves run unchanged.
np.float_ = np.float64  # removed in NumPy 2
np.fromstring = lambda s, dtype: np.frombuffer(s, dtype)  # binary mode removed in NumPy 2
for name in ["torchvision", "torchvision.datasets", "torchvision.transforms"]:
    sys.modules.setdefault(name, types.ModuleType(name))
_gaussian = skimage.filters.gaussian


def gaussian(image, sigma=1, multichannel=False, **kw):  # `multichannel` is `channel_axis` now
    return _gaussian(image, sigma=sigma, channel_axis=-1 if multichannel else None, **kw)


skimage.filters.gaussian = gaussian
seed_now = [0]
_random_noise = skimage.util.random_noise
# scikit-image draws from an unseeded default_rng: seed it so the goldens are reproducible.
skimage.util.random_noise = lambda image, **kw: _random_noise(image, rng=seed_now[0], **kw)

source = open(os.path.join(repo, "ImageNet-C", "create_c", "make_cifar_c.py")).read()
source = source[: source.index("# /////////////// End Distortions ///////////////")]
ns = {"__name__": "make_cifar_c"}
exec(compile(source, "make_cifar_c.py", "exec"), ns)
ns["gaussian"] = gaussian

NAMES = [
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
]


def rgb_inputs():
    """A smooth picture with a disk and a bar, and uniform noise."""
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    a = np.stack([40 + 5 * x, 30 + 6 * y, 200 - 3 * (x + y)], axis=-1)
    a[(x - 20) ** 2 + (y - 12) ** 2 < 36] = [250, 240, 40]
    a[22:27, 4:20] = [10, 20, 90]
    b = np.random.RandomState(1).randint(0, 256, size=(32, 32, 3))
    return np.stack([a, b]).clip(0, 255).astype(np.uint8)


def gray_input():
    y, x = np.mgrid[0:28, 0:28].astype(np.float64)
    g = 30 + 6 * x + 2 * y
    g[(x - 14) ** 2 + (y - 14) ** 2 < 30] = 245
    g[3:6, :] = 0
    return g.clip(0, 255).astype(np.uint8)


def frost_picture(k):
    """Synthetic frost picture k (0-4): 200×200 RGB, so the 0.2 resize samples whole pixels."""
    y, x, c = np.mgrid[0:200, 0:200, 0:3]
    return ((x * (3 + k) + y * (5 + c) + 17 * k) % 256).astype(np.uint8)


def run(name, img, severity, seed):
    np.random.seed(seed)
    seed_now[0] = seed
    result = ns[name](Image.fromarray(img), severity)
    return np.uint8(np.asarray(result))


rgb, gray = rgb_inputs(), gray_input()
np.save(os.path.join(out, "inputs.npy"), rgb)
np.save(os.path.join(out, "gray.npy"), gray)
frost_dir = tempfile.mkdtemp()
for k, file in enumerate(["frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"]):
    # PNG content under the reference's names (cv2.imread goes by content): lossless.
    Image.fromarray(frost_picture(k)).save(os.path.join(frost_dir, file), format="PNG")
os.chdir(frost_dir)
for name in NAMES:
    per_image = [[run(name, img, s, 100 * i + s) for s in range(1, 6)] for i, img in enumerate(rgb)]
    np.save(os.path.join(out, f"{name}_rgb.npy"), np.array(per_image, dtype=np.uint8))
    gray_rgb = np.repeat(gray[..., None], 3, axis=-1)
    try:
        results = [run(name, gray_rgb, s, 200 + s) for s in range(1, 6)]
        if any(r.shape != gray_rgb.shape for r in results):
            raise ValueError(f"output of shape {results[0].shape}")
        golden = np.array([r[..., 0] for r in results], dtype=np.uint8)
        np.save(os.path.join(out, f"{name}_gray.npy"), golden)
        print(name)
    except Exception as e:  # the reference hard-codes 32×32 here
        print(f"{name}: rgb only (the reference fails on 28×28: {type(e).__name__}: {e})")
