#!/usr/bin/env python3
"""scikit-learn reference for the OOD metrics (spec section 7, OpenOOD v1.5 after its AUPR fix).

Scores are "confidence" (higher = ID); OOD is the positive class. For every case this computes,
exactly as OpenOOD's `auc_and_fpr_recall` does:

* auroc    = auc(fpr, tpr) of roc_curve(ood_indicator, -conf)   (== roc_auc_score)
* fpr95    = fpr[np.argmax(tpr >= 0.95)] on that roc_curve (default drop_intermediate=True;
             `fpr95_all_thresholds` is the same formula with drop_intermediate=False, which differs
             only when collinear tied thresholds are dropped, see case `collinear_ties`)
* aupr_in  = auc(recall, precision) of precision_recall_curve(1 - ood_indicator, conf)
* aupr_out = auc(recall, precision) of precision_recall_curve(ood_indicator, -conf)

and, for a few small cases, the full roc_curve(..., drop_intermediate=False) arrays.
Scores are float32; each is written as its shortest decimal that parses back (through float64,
as serde_json does) to the identical float32. Deterministic (numpy seed 20240607).

Run from the crate root (writes tests/golden/metrics.json):

    python3 tools/metrics_reference.py

Requires numpy and scikit-learn.
"""

import json
from pathlib import Path

import numpy as np
import sklearn
from sklearn import metrics

OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "metrics.json"


def f32_text(v):
    """Shortest decimal of float32 `v` that round-trips through float64 -> float32."""
    v = np.float32(v)
    s = np.format_float_positional(v, unique=True, trim="-") if abs(v) >= 1e-4 or v == 0 else \
        np.format_float_scientific(v, unique=True, trim="-")
    if np.float32(float(s)) != v:
        s = repr(float(v))
    if not any(c in s for c in ".en"):
        s += ".0"  # "-0" would read back as the integer 0 in some JSON readers
    assert np.float32(float(s)) == v and (np.signbit(v) == s.startswith("-"))
    return s


def openood(id_scores, ood_scores):
    conf = np.concatenate([id_scores, ood_scores]).astype(np.float64)
    ood = np.concatenate([np.zeros(len(id_scores), int), np.ones(len(ood_scores), int)])
    fpr, tpr, _ = metrics.roc_curve(ood, -conf)
    fpr_all, tpr_all, _ = metrics.roc_curve(ood, -conf, drop_intermediate=False)
    p_in, r_in, _ = metrics.precision_recall_curve(1 - ood, conf)
    p_out, r_out, _ = metrics.precision_recall_curve(ood, -conf)
    auroc = metrics.auc(fpr, tpr)
    assert abs(auroc - metrics.roc_auc_score(ood, -conf)) < 1e-12
    return {
        "auroc": float(auroc),
        "fpr95": float(fpr[np.argmax(tpr >= 0.95)]),
        "fpr95_all_thresholds": float(fpr_all[np.argmax(tpr_all >= 0.95)]),
        "aupr_in": float(metrics.auc(r_in, p_in)),
        "aupr_out": float(metrics.auc(r_out, p_out)),
    }, (fpr_all, tpr_all)


def cases(rng):
    f = np.float32
    r4 = lambda x: np.round(x, 4).astype(f)  # 4 decimals keep the file small (and add some ties)
    yield "single_1_1", f([0.75]), f([0.25]), True
    yield "single_tied_1_1", f([0.5]), f([0.5]), True
    yield "small_3_5", rng.normal(1, 1, 3).astype(f), rng.normal(0, 1, 5).astype(f), True
    yield "tied_small_7_9", rng.integers(0, 6, 7).astype(f), rng.integers(0, 6, 9).astype(f), True
    # OOD groups (ascending conf): 18 OOD | 1 ID + 1 OOD | 1 ID + 1 OOD | 10 ID: the point where
    # TPR reaches 0.95 is collinear with its neighbours, so roc_curve's default drops it.
    yield "collinear_ties", f([1, 2] + [3] * 10), f([0] * 18 + [1, 2]), True
    yield "n100_100", rng.normal(1, 1, 100).astype(f), rng.normal(0, 1, 100).astype(f), False
    yield "tied_int_300_200", rng.integers(1, 6, 300).astype(f), rng.integers(0, 5, 200).astype(f), False
    yield "all_tied_50_40", np.full(50, 0.5, f), np.full(40, 0.5, f), False
    yield "separated_200_150", r4(rng.uniform(0.6, 1, 200)), r4(rng.uniform(0, 0.4, 150)), False
    yield "inverted_200_150", r4(rng.uniform(0, 0.4, 200)), r4(rng.uniform(0.6, 1, 150)), False
    # signed zeros (tied in sklearn), subnormal, tiny and large magnitudes, full float32 mantissas
    special = f([0.0, -0.0, 1e-8, -1e-8, 1e-40, 3e6, -3e6, 0.1, 0.1])
    yield "float32_special", np.concatenate([special, rng.normal(0, 1, 40).astype(f)]), \
        np.concatenate([f([-0.0, 0.0, 0.1, 1e-40, -2.5e6]), rng.normal(-0.3, 1, 30).astype(f)]), False
    yield "energy_800_600", (rng.normal(-8, 2.5, 800)).astype(f), (rng.normal(-11, 3, 600)).astype(f), False
    yield "n1000_700", r4(rng.beta(5, 2, 1000)), r4(rng.beta(2, 3, 700)), False
    yield "n5000_5000", r4(rng.normal(0.6, 0.2, 5000)), r4(rng.normal(0.4, 0.2, 5000)), False


def main():
    rng = np.random.default_rng(20240607)
    out, raw = [], {}
    for name, id_s, ood_s, with_curve in cases(rng):
        m, (fpr, tpr) = openood(id_s, ood_s)
        case = {"name": name, "id": f"@@{name}.id@@", "ood": f"@@{name}.ood@@", **m}
        raw[f'"@@{name}.id@@"'] = "[" + ", ".join(f32_text(v) for v in id_s) + "]"
        raw[f'"@@{name}.ood@@"'] = "[" + ", ".join(f32_text(v) for v in ood_s) + "]"
        if with_curve:
            case["roc_fpr"], case["roc_tpr"] = fpr.tolist(), tpr.tolist()
        out.append(case)
        print(f"{name:20s} auroc {m['auroc']:.6f} fpr95 {m['fpr95']:.6f} (all {m['fpr95_all_thresholds']:.6f}) "
              f"aupr_in {m['aupr_in']:.6f} aupr_out {m['aupr_out']:.6f}")
    doc = {
        "generator": "tools/metrics_reference.py",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "seed": 20240607,
        "cases": out,
    }
    # scores as JSON numbers in their shortest float32 text (json.dumps would write float64 reprs)
    text = json.dumps(doc, indent=1)
    for key, value in raw.items():
        text = text.replace(key, value)
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
