//! OpenMax (OpenOOD's `openmax_postprocessor`, on the logits as activation vectors): per class
//! the mean logit vector (MAV) of the correctly classified profiling samples, a Weibull fitted to
//! the `tail` largest Euclidean distances to it (libMR's `FitHigh` with the Python binding's
//! translation of 1: `y = d + 1 − smallest tail distance`), and per sample the top-`alpha`
//! classes' logits damped by `1 − w·(alpha + 1 − rank)/alpha`, `w` the Weibull CDF of its
//! distance; the score is minus the unknown class's probability
//! `exp(Σ damping) / (Σ_c exp(damped l_c) + exp(Σ damping))`.
//!
//! Deviations: the Weibull is fitted by its exact maximum-likelihood equation in f64 (libMR ports
//! MATLAB's `wblfit`, whose root finder stops at 1e-6); a class with fewer than `tail` correctly
//! classified profiling samples is an error (libMR returns −1 and OpenOOD scores with an
//! invalid model); OpenOOD's tail 20 and alpha 3 are parameters here (it hard-codes them).

use super::gaussian::argmax;
use super::{per_row, Context, Detector, PassSet};
use crate::error::{Error, Result};

/// Scale and shape of the Weibull maximum-likelihood fit of positive `y`: the root in `k` of
/// `Σ yᵏ ln y / Σ yᵏ − 1/k − mean(ln y)` (increasing in k), by safeguarded Newton steps, with
/// `yᵏ` scaled by the largest value so that no power overflows.
pub fn weibull_fit(y: &[f64]) -> Result<(f64, f64)> {
    if y.len() < 2 || y.iter().any(|&v| !(v.is_finite() && v > 0.0)) {
        return Err(Error::Input(format!("a Weibull fit needs at least 2 positive values, got {y:?}")));
    }
    let logs: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let top = logs.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let mean_log = logs.iter().sum::<f64>() / logs.len() as f64;
    let spread = (logs.iter().map(|l| (l - mean_log).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
    if spread == 0.0 {
        return Err(Error::Input("a Weibull fit of values that are all equal".into()));
    }
    // (f(k), f'(k)) with weights exp(k (ln y − top)).
    let equation = |k: f64| {
        let w: Vec<f64> = logs.iter().map(|l| (k * (l - top)).exp()).collect();
        let sw: f64 = w.iter().sum();
        let m1: f64 = w.iter().zip(&logs).map(|(w, l)| w * l).sum::<f64>() / sw;
        let m2: f64 = w.iter().zip(&logs).map(|(w, l)| w * l * l).sum::<f64>() / sw;
        (m1 - 1.0 / k - mean_log, m2 - m1 * m1 + 1.0 / (k * k))
    };
    let (mut lo, mut hi) = (0.0f64, f64::INFINITY);
    let mut k = 1.2825 / spread; // the Gumbel moment estimate of 1/σ on ln y
    for _ in 0..200 {
        let (f, df) = equation(k);
        if f > 0.0 {
            hi = hi.min(k)
        } else {
            lo = lo.max(k)
        }
        let mut next = k - f / df;
        if !(next > lo && next < hi) {
            next = if hi.is_finite() { 0.5 * (lo + hi) } else { 2.0 * k };
        }
        if (next - k).abs() <= 1e-15 * k {
            k = next;
            break;
        }
        k = next;
    }
    let mean_power = logs.iter().map(|l| (k * (l - top)).exp()).sum::<f64>() / logs.len() as f64;
    Ok(((top + mean_power.ln() / k).exp(), k))
}

/// `1 − exp(−(x/λ)ᵏ)`, 0 below 0 (libMR's `weibull_cdf`).
fn weibull_cdf(x: f64, scale: f64, shape: f64) -> f64 {
    if x < 0.0 {
        return 0.0;
    }
    1.0 - (-(x / scale).powf(shape)).exp()
}

struct ClassModel {
    mav: Vec<f64>,
    /// The smallest distance of the tail (libMR's `small_score`), scale, shape.
    small: f64,
    scale: f64,
    shape: f64,
}

pub struct OpenMax {
    pub tail: usize,
    pub alpha: usize,
    classes: Vec<ClassModel>,
}

impl OpenMax {
    pub fn new(tail: usize, alpha: usize) -> Self {
        OpenMax { tail, alpha, classes: Vec::new() }
    }
}

fn euclidean(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt()
}

impl Detector for OpenMax {
    fn fit(&mut self, _: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let labels = train.labels_for("OpenMax")?;
        let mut rows: Vec<Vec<&[f64]>> = vec![Vec::new(); train.classes];
        for (l, &label) in train.logit_rows().zip(labels) {
            if argmax(l) == label {
                rows[label].push(l);
            }
        }
        self.classes = rows
            .iter()
            .enumerate()
            .map(|(c, rows)| {
                if rows.len() < self.tail {
                    return Err(Error::Input(format!(
                        "OpenMax: class {c} has {} correctly classified profiling samples, fewer than tail={}",
                        rows.len(),
                        self.tail
                    )));
                }
                let mav: Vec<f64> = (0..train.classes).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64).collect();
                let mut d: Vec<f64> = rows.iter().map(|r| euclidean(r, &mav)).collect();
                d.sort_by(|a, b| b.total_cmp(a));
                let tail = &d[..self.tail];
                let small = tail[self.tail - 1];
                let translated: Vec<f64> = tail.iter().map(|v| v + 1.0 - small).collect();
                let (scale, shape) = weibull_fit(&translated).map_err(|e| Error::Input(format!("OpenMax, class {c}: {e}")))?;
                Ok(ClassModel { mav, small, scale, shape })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "OpenMax", |l| {
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
            let mut omega = vec![0f64; l.len()];
            for (rank, &c) in order.iter().take(self.alpha).enumerate() {
                omega[c] = (self.alpha - rank) as f64 / self.alpha as f64;
            }
            let (mut known, mut unknown) = (0f64, 0f64);
            for (c, m) in self.classes.iter().enumerate() {
                let w = weibull_cdf(euclidean(l, &m.mav) + 1.0 - m.small, m.scale, m.shape);
                let damped = l[c] * (1.0 - w * omega[c]);
                known += damped.exp();
                unknown += l[c] - damped;
            }
            -unknown.exp() / (known + unknown.exp())
        })
    }
}
