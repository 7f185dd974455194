#!/usr/bin/env python3
"""Golden scores of the post-hoc detectors (tests/golden/detectors/case.json) for tests/detectors.rs.

A small random classifier head (fc weight and bias) and float32 penultimate features of a
profiling set (labelled), an ID validation set and an evaluation set are drawn from a seed;
every detector is then computed here in float64 following OpenOOD v1.5's postprocessors
(openood/postprocessors/*_postprocessor.py, with its defaults scaled down to these sizes),
using scikit-learn's EmpiricalCovariance where OpenOOD does, torch autograd for GradNorm's
definition, and an exact NumPy K-nearest-neighbour search in place of faiss's IndexFlatL2
(which returns squared L2 distances). DDU follows its authors' gmm_utils (float64, jitter loop). OpenMax runs libMR (pip install
cython; pip install --no-build-isolation libmr).

One feature dimension is zero in every sample, so the covariances are singular and the
pseudo-inverse (pinvh) is exercised.

Gram and MDSEns read layer maps: two small random layers (`block1`, `block2`) per sample, from
which this script forms the layer statistics the engine's `layer_stats` kernel computes (channel
means; Gram row sums by OpenOOD's `G_p`: elementwise power, F F^T, sum over the rows, signed
p-th root) and hands them to the test. Gram's held-out tenth per class is the first L // 10 of
np.random.RandomState(0).permutation(L), classes in order (OpenOOD draws it unseeded with
random.sample). Run: python3 tools/detector_reference.py [out.json]
"""

import json
import sys
from pathlib import Path

import libmr
import numpy as np
import scipy.linalg
import scipy.spatial.distance as spd
import scipy.stats
import sklearn.covariance
import torch
import torch.nn.functional as F

SEED = 7
CLASSES, DIM = 4, 40
N_TRAIN, N_VAL, N_EVAL = 240, 40, 48


def draw():
    rng = np.random.default_rng(SEED)
    centres = rng.uniform(0.0, 2.0, (CLASSES, DIM))
    # A head that mostly classifies by the nearest centre, so every class has correct samples.
    w = (centres - centres.mean(0) + 0.3 * rng.standard_normal((CLASSES, DIM))).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, CLASSES).astype(np.float32)

    def features(n, labels, shift):
        x = centres[labels] + shift + 0.5 * rng.standard_normal((n, DIM))
        x = np.maximum(x, 0.0)
        x[:, 3] = 0.0  # a dead unit: singular covariances
        return x.astype(np.float32)

    train_labels = np.arange(N_TRAIN) % CLASSES
    train = features(N_TRAIN, train_labels, 0.0)
    val = features(N_VAL, rng.integers(0, CLASSES, N_VAL), 0.0)
    half = N_EVAL // 2
    eval_id = features(half, rng.integers(0, CLASSES, half), 0.0)
    eval_ood = features(N_EVAL - half, rng.integers(0, CLASSES, N_EVAL - half), rng.uniform(-1.0, 1.5, DIM))
    return w, b, train, train_labels, val, np.concatenate([eval_id, eval_ood])


GRAM_POWERS = 5
GRAM_SPLIT_SEED = 0
# (name, channels, height, width) of the layer maps.
MAPS = [("block1", 6, 4, 4), ("block2", 5, 2, 3)]


def draw_maps(train_labels, n_val, n_eval):
    """Per layer, NCHW maps of the profiling, validation and evaluation sets: a per-class
    pattern plus noise (the second half of the evaluation set shifted), with negative values
    in `block2` so odd powers keep their sign."""
    rng = np.random.default_rng(SEED + 1)
    out = {}
    for name, c, h, w in MAPS:
        pattern = rng.uniform(0.0, 1.5, (CLASSES, c, h, w))
        low = -0.5 if name == "block2" else 0.0

        def maps(labels, shift):
            x = pattern[labels] + shift + 0.4 * rng.standard_normal((len(labels), c, h, w))
            return np.maximum(x, low).astype(np.float32)

        half = n_eval // 2
        eval_maps = np.concatenate([maps(rng.integers(0, CLASSES, half), 0.0), maps(rng.integers(0, CLASSES, n_eval - half), 0.7)])
        out[name] = {"train": maps(train_labels, 0.0), "val": maps(rng.integers(0, CLASSES, n_val), 0.0), "eval": eval_maps}
    return out


def gram_rows(maps, p):
    """OpenOOD's G_p in float64: row sums of the Gram matrix of the p-th power, signed root."""
    t = torch.from_numpy(maps.astype(np.float64)) ** p
    t = t.reshape(t.shape[0], t.shape[1], -1)
    t = torch.matmul(t, t.transpose(2, 1)).sum(dim=2)
    return (t.sign() * torch.abs(t) ** (1 / p)).numpy()


def layer_stats(maps):
    """The engine's layout per sample: channel means, then each power's Gram row sums."""
    means = maps.astype(np.float64).mean(axis=(2, 3))
    return np.concatenate([means] + [gram_rows(maps, p) for p in range(1, GRAM_POWERS + 1)], axis=1)


def logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def softmax(x):
    return np.exp(x - logsumexp(x)[:, None])


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/detectors/case.json")
    w32, b32, train32, labels, val32, eval32 = draw()
    w, b = w32.astype(np.float64), b32.astype(np.float64)
    train, val, x = (a.astype(np.float64) for a in (train32, val32, eval32))
    fc = lambda f: f @ w.T + b
    logits, train_logits = fc(x), fc(train)
    scores = {}

    scores["msp"] = softmax(logits).max(1)
    scores["mls"] = logits.max(1)
    t = 2.0
    scores["ebo:T=2"] = t * logsumexp(logits / t)
    # ODIN's score (OpenOOD: softmax(output / T).max) of the logits it is given: the perturbed
    # input's; the perturbation itself is checked against the f64 network reference
    # (tests/detectors.rs, odin_perturbation_matches_the_reference).
    scores["odin:T=10"] = softmax(logits / 10.0).max(1)
    gamma, m = 0.1, 3
    p = np.sort(softmax(logits), axis=1)[:, -m:]
    scores["gen:gamma=0.1,M=3"] = -np.sum(p**gamma * (1 - p) ** gamma, axis=1)

    # GradNorm: OpenOOD's definition, by autograd, one sample at a time.
    lin = torch.nn.Linear(DIM, CLASSES).double()
    lin.weight.data[...] = torch.from_numpy(w)
    lin.bias.data[...] = torch.from_numpy(b)
    targets = torch.ones((1, CLASSES), dtype=torch.float64)
    grad_norms = []
    for f in torch.from_numpy(x):
        lin.zero_grad()
        loss = torch.mean(torch.sum(-targets * F.log_softmax(lin(f[None]), dim=-1), dim=-1))
        loss.backward()
        grad_norms.append(torch.sum(torch.abs(lin.weight.grad.data)).item())
    grad_norms = np.array(grad_norms)
    closed = np.abs(x).sum(1) * np.abs(CLASSES * softmax(logits) - 1).sum(1)
    assert np.max(np.abs(closed - grad_norms)) <= 1e-12 * np.max(grad_norms), "GradNorm closed form"
    scores["gradnorm"] = grad_norms

    # ReAct: percentile of the ID validation activations.
    threshold = np.percentile(val.flatten(), 90)
    scores["react:percentile=90"] = logsumexp(fc(np.minimum(x, threshold)))

    # DICE: weights whose contribution mean_act * w is above the p-th percentile.
    contrib = train.mean(0)[None, :] * w
    mask = contrib > np.percentile(contrib, 90)
    scores["dice:p=90"] = logsumexp(x @ (w * mask).T + b)

    # ASH-B
    pct = 65
    k = DIM - int(np.round(DIM * pct / 100.0))
    shaped = np.zeros_like(x)
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    np.put_along_axis(shaped, order, (x.sum(1) / k)[:, None], axis=1)
    scores["ash:percentile=65"] = logsumexp(fc(shaped))

    # KNN on normalised features (x / ||x|| + 1e-10), minus the K-th squared distance.
    normed = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True) + 1e-10
    bank, q = normed(train), normed(x)
    d2 = ((q[:, None, :] - bank[None, :, :]) ** 2).sum(-1)
    kk = 5
    scores["knn:K=5"] = -np.sort(d2, axis=1)[:, kk - 1]
    h = 0.5
    scores["kde:bandwidth=0.5"] = logsumexp(-d2 / (2 * h * h)) - np.log(len(bank))
    # KDE+ip: the same score of the features it is given; its loss gradient below.
    scores["kde+ip:bandwidth=0.5"] = scores["kde:bandwidth=0.5"]
    xt = torch.from_numpy(x).requires_grad_(True)
    qt = xt / torch.linalg.norm(xt, dim=-1, keepdim=True) + 1e-10
    d2t = ((qt[:, None, :] - torch.from_numpy(bank)[None]) ** 2).sum(-1)
    (-(torch.logsumexp(-d2t / (2 * h * h), 1) - np.log(len(bank))).sum()).backward()
    kde_gradient = xt.grad.numpy()

    # ViM
    vim_dim = 8
    u = -np.matmul(np.linalg.pinv(w), b)
    ec = sklearn.covariance.EmpiricalCovariance(assume_centered=True)
    ec.fit(train - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    ns = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[vim_dim:]]).T)
    alpha = train_logits.max(axis=-1).mean() / np.linalg.norm(np.matmul(train - u, ns), axis=-1).mean()
    scores["vim:dim=8"] = -np.linalg.norm(np.matmul(x - u, ns), axis=-1) * alpha + logsumexp(logits)

    # MDS / RMDS (sklearn's pinvh of the float64 covariance; the Rust side uses float32's
    # cutoff, which drops the same single zero eigenvalue here).
    class_mean = np.stack([train[labels == c].mean(0) for c in range(CLASSES)])
    centred = np.concatenate([train[labels == c] - class_mean[c] for c in range(CLASSES)])
    precision = sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    maha = lambda a, mu, prec: np.einsum("ij,jk,ik->i", a - mu, prec, a - mu)
    class_d = np.stack([maha(x, class_mean[c], precision) for c in range(CLASSES)], 1)
    scores["mds"] = (-class_d).max(1)
    whole = train.mean(0)
    whole_precision = sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(train - whole).precision_
    background = maha(x, whole, whole_precision)
    scores["rmds"] = (-class_d + background[:, None]).max(1)

    # SHE: inner product with the mean of correctly classified training samples of the predicted class.
    pred_train = train_logits.argmax(1)
    assert all(np.any((labels == c) & (pred_train == c)) for c in range(CLASSES)), "a class without correct samples"
    she_means = np.stack([train[(labels == c) & (pred_train == c)].mean(0) for c in range(CLASSES)])
    scores["she"] = np.sum(x * she_means[logits.argmax(1)], axis=1)

    # DDU: class Gaussians (covariance / (n - 1)), one jitter for all classes.
    means = [train[labels == c].mean(0) for c in range(CLASSES)]
    covs = [(train[labels == c] - means[c]).T @ (train[labels == c] - means[c]) / (np.sum(labels == c) - 1) for c in range(CLASSES)]
    jitters = [0, np.finfo(np.float64).tiny] + [10.0**e for e in range(-308, 0, 1)]
    for jitter in jitters:
        try:
            chol = [np.linalg.cholesky(cv + jitter * np.eye(DIM)) for cv in covs]
        except np.linalg.LinAlgError:
            continue
        break
    log_p = []
    for mu, lower in zip(means, chol):
        y = scipy.linalg.solve_triangular(lower, (x - mu).T, lower=True)
        log_det = 2 * np.log(np.diag(lower)).sum()
        log_p.append(-0.5 * ((y**2).sum(0) + DIM * np.log(2 * np.pi) + log_det))
    scores["ddu"] = logsumexp(np.stack(log_p, 1), axis=1)

    # DDU+ip: DDU's score of the features it is given (the perturbed input's), and the gradient
    # of its loss -score with respect to the features by autograd: what the perturbation
    # backpropagates to the input (that part is checked against finite differences of the f64
    # network reference in tests/input_gradient.rs).
    scores["ddu+ip"] = scores["ddu"]
    xt = torch.from_numpy(x).requires_grad_(True)
    log_p_t = []
    for mu, lower in zip(means, chol):
        lt = torch.from_numpy(lower)
        y = torch.linalg.solve_triangular(lt, (xt - torch.from_numpy(mu)).T, upper=False)
        log_det = 2 * torch.log(torch.diag(lt)).sum()
        log_p_t.append(-0.5 * ((y**2).sum(0) + DIM * np.log(2 * np.pi) + log_det))
    (-torch.logsumexp(torch.stack(log_p_t, 1), 1).sum()).backward()
    feature_gradients = {"ddu+ip": xt.grad.numpy(), "kde+ip:bandwidth=0.5": kde_gradient}

    # OpenMax as OpenOOD's openmax_postprocessor computes it (libMR's FitHigh, 'euclidean',
    # tail 20, alpha 3), on the logits; and each class's Weibull fit by libMR and by SciPy.
    tail, om_alpha = 20, 3
    pred = train_logits.argmax(1)
    mavs, models, weibull = [], [], []
    for c in range(CLASSES):
        rows_c = train_logits[(labels == c) & (pred == c)]
        mav = rows_c.mean(0)
        tailtofit = np.sort([spd.euclidean(mav, r) for r in rows_c])[-tail:]
        mr = libmr.MR()
        mr.fit_high(tailtofit, len(tailtofit))
        scale, shape, _, translate, small = mr.get_params()
        assert translate == 1 and small == tailtofit.min()
        y = tailtofit + translate - small
        sp_shape, _, sp_scale = scipy.stats.weibull_min.fit(y, floc=0)
        weibull.append({"y": [float(v) for v in y], "libmr": [scale, shape], "scipy": [float(sp_scale), float(sp_shape)]})
        mavs.append(mav)
        models.append(mr)
    om = []
    for l in logits:
        ranked = l.argsort()[::-1][:om_alpha]
        omega = np.zeros(CLASSES)
        omega[ranked] = [((om_alpha + 1) - i) / float(om_alpha) for i in range(1, om_alpha + 1)]
        wscore = np.array([models[c].w_score(spd.euclidean(l, mavs[c])) for c in range(CLASSES)])
        modified = l * (1 - wscore * omega)
        unknown = np.exp(np.sum(l - modified))
        om.append(-unknown / (np.exp(modified).sum() + unknown))
    scores["openmax"] = np.array(om)

    # Gram: bounds per (layer, power, class) on all but a held-out tenth per class, each layer
    # normalised by the held-out samples' mean deviation; score -sum(dev / norm) / max softmax.
    maps = draw_maps(labels, N_VAL, N_EVAL)
    stats = {name: {k: layer_stats(v) for k, v in sets.items()} for name, sets in maps.items()}
    # The statistics pass through float32, as the engine's do.
    stats = {name: {k: v.astype(np.float32).astype(np.float64) for k, v in sets.items()} for name, sets in stats.items()}
    split_rng = np.random.RandomState(GRAM_SPLIT_SEED)
    members = [np.flatnonzero(labels == c) for c in range(CLASSES)]
    held, fitted = [], []
    for m in members:
        order = split_rng.permutation(len(m))
        held.append(m[order[: len(m) // 10]])
        fitted.append(m[order[len(m) // 10 :]])

    def delta(lo, hi, x):
        return (np.maximum(lo - x, 0) / np.abs(lo + 1e-6)).sum(1) + (np.maximum(x - hi, 0) / np.abs(hi + 1e-6)).sum(1)

    probs = softmax(logits)
    pred, conf = probs.argmax(1), probs.max(1)
    deviation = np.zeros(len(x))
    for name, c, _, _ in MAPS:
        train_stats, eval_stats = stats[name]["train"], stats[name]["eval"]
        gram = lambda a, p: a[:, p * c : (p + 1) * c]
        bounds = {(p, k): (gram(train_stats[fitted[k]], p).min(0), gram(train_stats[fitted[k]], p).max(0)) for p in range(1, GRAM_POWERS + 1) for k in range(CLASSES)}
        held_dev = np.concatenate([sum(delta(*bounds[p, k], gram(train_stats[held[k]], p)) for p in range(1, GRAM_POWERS + 1)) for k in range(CLASSES)])
        norm = held_dev.mean()
        for k in range(CLASSES):
            sel = pred == k
            deviation[sel] += sum(delta(*bounds[p, k], gram(eval_stats[sel], p)) for p in range(1, GRAM_POWERS + 1)) / norm
    scores["gram"] = -deviation / conf

    # MDSEns (OpenOOD's config: the first layer's channel means, no reduction, weight 1): class
    # means, sklearn's shared precision, and max_k -0.5 (f - mu_k)^T P (f - mu_k) of the
    # features it is given; its loss 0.5 d to the closest class, differentiated by autograd.
    c1 = MAPS[0][1]
    f_train, f_eval = stats["block1"]["train"][:, :c1], stats["block1"]["eval"][:, :c1]
    mds_mean = np.stack([f_train[labels == k].mean(0) for k in range(CLASSES)])
    centred = np.concatenate([f_train[labels == k] - mds_mean[k] for k in range(CLASSES)])
    mds_precision = sklearn.covariance.EmpiricalCovariance(assume_centered=False).fit(centred).precision_
    gauss = np.stack([-0.5 * maha(f_eval, mds_mean[k], mds_precision) for k in range(CLASSES)], 1)
    scores["mdsens"] = gauss.max(1)
    ft = torch.from_numpy(f_eval).requires_grad_(True)
    closest = torch.from_numpy(mds_mean[gauss.argmax(1)])
    zero_f = ft - closest
    (0.5 * torch.einsum("ij,jk,ik->i", zero_f, torch.from_numpy(mds_precision), zero_f)).sum().backward()
    feature_gradients["mdsens"] = ft.grad.numpy()

    rows = lambda a: [float(v) for v in a.flatten()]
    golden = {
        "seed": SEED,
        "classes": CLASSES,
        "dim": DIM,
        "fc_weight": rows(w32),
        "fc_bias": rows(b32),
        "train_features": rows(train32),
        "train_labels": [int(v) for v in labels],
        "val_features": rows(val32),
        "eval_features": rows(eval32),
        "ddu_jitter": float(jitter),
        "openmax_weibull": weibull,
        "layer_stats": {name: {k: rows(v) for k, v in sets.items()} for name, sets in stats.items()},
        "layer_channels": {name: c for name, c, _, _ in MAPS},
        "gram_powers": GRAM_POWERS,
        "scores": {k: rows(v) for k, v in scores.items()},
        "feature_gradients": {k: rows(v) for k, v in feature_gradients.items()},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(golden))
    print(f"wrote {out}: {len(scores)} detectors, DDU jitter {jitter}")


if __name__ == "__main__":
    main()
