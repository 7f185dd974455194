#!/usr/bin/env python3
"""Goldens for the official class-balanced profiling subset (tests/subset.rs).

Reproduces `TrainSubset(dataset, valid_num=n, balanced=True, rand_seed=seed)` of the official NAC
code (openood/postprocessors/nac/utils.py) with NumPy's legacy RandomState on label lists made
here, and writes the chosen indices (ascending) with the raw MT19937 outputs of a few seeds.

    python3 tools/subset_reference.py > tests/golden/balanced_subsets.json
"""
import json
from collections import defaultdict

import numpy as np


def official_subset(labels, valid_num, seed):
    cls_to_idxes = defaultdict(list)
    for idx, label in enumerate(labels):
        cls_to_idxes[label].append(idx)
    min_len = min(len(inds) for inds in cls_to_idxes.values())
    sub_num = int(valid_num / len(cls_to_idxes))
    sub_num = min_len if sub_num > min_len else sub_num
    valid = []
    for cls in cls_to_idxes:
        inds = cls_to_idxes[cls]
        np.random.RandomState(seed).shuffle(inds)
        valid += inds[:sub_num]
    return sorted(valid)


def labels_of(kind, count, classes):
    """Label lists both sides build from a formula, so the goldens stay small."""
    if kind == "mod":
        return [i % classes for i in range(count)]
    if kind == "skewed":  # class c holds about (c + 1) / Σ of the samples, interleaved
        return [int((i * 2654435761) % 1000 * (classes * (classes + 1) // 2) / 1000) for i in range(count)]
    raise ValueError(kind)


def skewed_class(v, classes):
    # Map a triangular index back to its class: class c covers [c(c+1)/2, (c+1)(c+2)/2).
    c = 0
    while (c + 1) * (c + 2) // 2 <= v:
        c += 1
    return c


cases = []
for kind, count, classes, n, seed in [
    ("mod", 30, 3, 12, 1),
    ("mod", 100, 10, 1000, 1),  # more than there are: capped at the class size
    ("mod", 12000, 10, 1000, 1),  # the official CIFAR-10 shape at a fifth of the size
    ("mod", 5000, 7, 700, 0),
    ("mod", 997, 4, 50, 12345),
    ("skewed", 3000, 5, 1500, 1),  # a class smaller than n / C caps every class
    ("skewed", 600, 3, 600, 4294967295),
    ("skewed", 600, 3, 90, 7),
]:
    raw = labels_of(kind, count, classes)
    labels = raw if kind == "mod" else [skewed_class(v, classes) for v in raw]
    cases.append({"labels": kind, "count": count, "classes": classes, "n": n, "seed": seed,
                  "class_sizes": [labels.count(c) for c in range(classes)],
                  "chosen": official_subset(labels, n, seed)})

streams = [{"seed": s, "first": [int(v) for v in np.random.RandomState(s).randint(0, 2**32, size=8, dtype=np.uint64)]}
           for s in (0, 1, 5489, 4294967295)]
print(json.dumps({"numpy": np.__version__, "cases": cases, "streams": streams}, indent=None))
