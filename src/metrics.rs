//! OOD metrics exactly as OpenOOD v1.5 computes them with scikit-learn (spec section 7).
//!
//! Scores are confidences (higher = ID); OOD is the positive class, scored by −conf. Tied scores
//! form one threshold, as in scikit-learn. Everything is accumulated in f64.

use crate::error::{Error, Result};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct OodMetrics {
    /// Fractions in [0, 1]; reports multiply by 100.
    pub auroc: f64,
    pub fpr95: f64,
    pub aupr_in: f64,
    pub aupr_out: f64,
}

/// Score with −0.0 folded into +0.0 so `total_cmp` orders like `==` compares (sklearn ties them).
fn key(x: f32) -> f32 {
    x + 0.0
}

/// Distinct scores in ascending confidence (= descending −conf, sklearn's threshold order), with
/// the number of ID and OOD samples at each.
fn threshold_groups(id: &[f32], ood: &[f32]) -> Vec<(u64, u64)> {
    let mut all: Vec<(f32, bool)> = id.iter().map(|&s| (key(s), false)).chain(ood.iter().map(|&s| (key(s), true))).collect();
    all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut groups: Vec<(u64, u64)> = Vec::new();
    for (i, &(s, is_ood)) in all.iter().enumerate() {
        if i == 0 || s != all[i - 1].0 {
            groups.push((0, 0));
        }
        let g = groups.last_mut().unwrap();
        if is_ood {
            g.1 += 1
        } else {
            g.0 += 1
        }
    }
    groups
}

/// Cumulative (fps, tps) per threshold of a curve whose positives are `pos` of each group.
fn cumulative(groups: impl Iterator<Item = (u64, u64)>) -> Vec<(f64, f64)> {
    let (mut fp, mut tp) = (0u64, 0u64);
    groups
        .map(|(neg, pos)| {
            fp += neg;
            tp += pos;
            (fp as f64, tp as f64)
        })
        .collect()
}

fn roc_from_groups(groups: &[(u64, u64)]) -> (Vec<f64>, Vec<f64>) {
    let pts = cumulative(groups.iter().copied());
    let (n, p) = *pts.last().unwrap();
    std::iter::once((0.0, 0.0)).chain(pts).map(|(f, t)| (f / n, t / p)).unzip()
}

/// `auc(recall, precision)` of sklearn's `precision_recall_curve` for thresholds `pts` (fps, tps)
/// in descending-score order: all thresholds (no stop at full recall in sklearn ≥ 1.1), reversed,
/// then the point (recall 0, precision 1) appended.
fn pr_area(pts: &[(f64, f64)]) -> f64 {
    let p = pts.last().unwrap().1;
    let curve: Vec<(f64, f64)> = pts.iter().rev().map(|&(fp, tp)| (tp / p, tp / (tp + fp))).chain(std::iter::once((0.0, 1.0))).collect();
    // recall decreases along the curve, so sklearn's auc takes direction −1
    curve.windows(2).map(|w| (w[0].0 - w[1].0) * (w[0].1 + w[1].1) / 2.0).sum()
}

/// OpenOOD's `fpr[np.argmax(tpr >= 0.95)]` on `roc_curve(...)` with its default
/// `drop_intermediate=True`: thresholds collinear with both neighbours are dropped first, which
/// matters only for tied scores (a tie group that moves both FPR and TPR).
fn fpr_at_95(pts: &[(f64, f64)]) -> f64 {
    let (n, p) = *pts.last().unwrap();
    let m = pts.len();
    let kept = |i: usize| {
        m <= 2 || i == 0 || i == m - 1 || {
            let d2 = |k: fn(&(f64, f64)) -> f64| k(&pts[i + 1]) - 2.0 * k(&pts[i]) + k(&pts[i - 1]);
            d2(|q| q.0) != 0.0 || d2(|q| q.1) != 0.0
        }
    };
    (0..m).find(|&i| kept(i) && pts[i].1 / p >= 0.95).map_or(0.0, |i| pts[i].0 / n)
}

fn check(set: &str, scores: &[f32]) -> Result<()> {
    if scores.is_empty() {
        return Err(Error::Input(format!("OOD metrics: the {set} score set is empty")));
    }
    match scores.iter().position(|s| !s.is_finite()) {
        Some(i) => Err(Error::Input(format!("OOD metrics: {set} score {i} is {} (scores must be finite)", scores[i]))),
        None => Ok(()),
    }
}

/// AUROC, FPR@95, AUPR-IN and AUPR-OUT as OpenOOD's `auc_and_fpr_recall` computes them.
pub fn ood_metrics(id_scores: &[f32], ood_scores: &[f32]) -> Result<OodMetrics> {
    check("ID", id_scores)?;
    check("OOD", ood_scores)?;
    let groups = threshold_groups(id_scores, ood_scores);
    let (fpr, tpr) = roc_from_groups(&groups);
    let auroc = (1..fpr.len()).map(|i| (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2.0).sum();
    let out = cumulative(groups.iter().copied());
    let inn = cumulative(groups.iter().rev().map(|&(id, ood)| (ood, id)));
    Ok(OodMetrics { auroc, fpr95: fpr_at_95(&out), aupr_in: pr_area(&inn), aupr_out: pr_area(&out) })
}

/// AUROC alone, for parameter search: the Mann–Whitney statistic P(conf_id > conf_ood) + ½·P(tie),
/// counted exactly in integers (equal to the trapezoidal ROC area). Precondition: finite scores,
/// both sets non-empty.
pub fn auroc(id_scores: &[f32], ood_scores: &[f32]) -> f64 {
    let sorted = |s: &[f32]| {
        let mut v: Vec<f32> = s.iter().map(|&x| key(x)).collect();
        v.sort_unstable_by(f32::total_cmp);
        v
    };
    let (id, ood) = (sorted(id_scores), sorted(ood_scores));
    // twice the U statistic: 2 per ID score above an OOD score, 1 per tie
    let (mut lt, mut le, mut u2) = (0usize, 0usize, 0u64);
    for &o in &ood {
        while lt < id.len() && id[lt] < o {
            lt += 1;
        }
        le = le.max(lt);
        while le < id.len() && id[le] <= o {
            le += 1;
        }
        u2 += 2 * (id.len() - le) as u64 + (le - lt) as u64;
    }
    u2 as f64 / (2.0 * id.len() as f64 * ood.len() as f64)
}

/// sklearn's `roc_curve(ood_indicator, -conf, drop_intermediate=False)`: FPR and TPR per distinct
/// threshold, descending −conf, starting at (0, 0). Precondition: finite, non-empty sets.
pub fn roc_curve(id_scores: &[f32], ood_scores: &[f32]) -> (Vec<f64>, Vec<f64>) {
    roc_from_groups(&threshold_groups(id_scores, ood_scores))
}

/// A threshold chosen from ID validation scores alone (the deployable setting).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IdOnlyThreshold {
    pub target_id_fpr: f64,
    pub threshold: f64,
    /// Fraction of ID test scores below the threshold (flagged OOD).
    pub id_test_fpr: f64,
    /// Fraction of OOD scores below the threshold (detected).
    pub ood_tpr: f64,
}

/// Convention: a score is flagged OOD when `score < threshold`. With the ID validation scores
/// sorted ascending s₀ ≤ … ≤ s₍ₙ₋₁₎ and k = ⌊q·n⌋ (q·n rounded down after a 1e-9 allowance for
/// q·n landing just below an integer), threshold = s_k, so at most k ≤ q·n validation samples
/// are flagged (exactly k without ties at s_k); k = n gives +∞ (everything flagged).
/// Fractions of empty sets are NaN.
pub fn id_only_threshold(id_val: &[f32], id_test: &[f32], ood: &[f32], target_id_fpr: f64) -> IdOnlyThreshold {
    let mut val: Vec<f32> = id_val.to_vec();
    val.sort_unstable_by(|a, b| key(*a).total_cmp(&key(*b)));
    let n = val.len();
    let k = ((target_id_fpr.clamp(0.0, 1.0) * n as f64 + 1e-9).floor() as usize).min(n);
    let threshold = if n == 0 { f64::NAN } else { val.get(k).map_or(f64::INFINITY, |&s| s as f64) };
    let below = |s: &[f32]| s.iter().filter(|&&x| (x as f64) < threshold).count() as f64 / s.len() as f64;
    IdOnlyThreshold { target_id_fpr, threshold, id_test_fpr: below(id_test), ood_tpr: below(ood) }
}

/// Mean and sample standard deviation (n − 1; 0 for a single value; NaN for none).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, if values.is_empty() { f64::NAN } else { 0.0 });
    }
    (mean, (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}

/// Fraction of predictions equal to their label (NaN for none). Panics on a length mismatch.
pub fn accuracy(predicted: &[usize], labels: &[usize]) -> f64 {
    assert_eq!(predicted.len(), labels.len(), "accuracy: {} predictions for {} labels", predicted.len(), labels.len());
    predicted.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

/// One candidate of a hyperparameter search and its validation AUROC.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Trial<P> {
    pub params: P,
    pub auroc: f64,
}

/// The selection rule of every hyperparameter search (NAC's APS and each detector's sweep):
/// `score` gives a candidate's (ID validation, OOD validation) scores, the criterion is their
/// AUROC, and the first candidate with the highest wins. Returns the winner's index and every
/// trial in candidate order.
pub fn select_by_auroc<P>(
    candidates: impl IntoIterator<Item = P>,
    mut score: impl FnMut(&P) -> Result<(Vec<f32>, Vec<f32>)>,
) -> Result<(usize, Vec<Trial<P>>)> {
    let mut trials: Vec<Trial<P>> = Vec::new();
    for params in candidates {
        let (id, ood) = score(&params)?;
        trials.push(Trial { auroc: auroc(&id, &ood), params });
    }
    if trials.is_empty() {
        return Err(Error::Input("a search needs at least one candidate".into()));
    }
    let best = trials.iter().enumerate().fold(0, |b, (i, t)| if t.auroc > trials[b].auroc { i } else { b });
    Ok((best, trials))
}
