//! Detectors that rectify the features and take the energy of the resulting logits.

use super::{linear, logsumexp, per_row, Context, Detector, PassSet};
use crate::error::{Error, Result};

/// NumPy's `percentile` (linear interpolation between the closest ranks) of `values`.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = (values.len() - 1) as f64 * q / 100.0;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// ReAct: features clipped at the `percentile` of every ID validation activation (the profile
/// set's when there is no ID validation), then the energy.
pub struct React {
    pub percentile: f64,
    pub threshold: f64,
}

impl Detector for React {
    fn fit(&mut self, _: &Context, train: &PassSet, id_val: Option<&PassSet>) -> Result<()> {
        let mut all: Vec<f64> = id_val.unwrap_or(train).features.iter().map(|&v| v as f64).collect();
        self.threshold = percentile(&mut all, self.percentile);
        Ok(())
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.feature_rows(), "ReAct", |f| {
            let clipped: Vec<f64> = f.iter().map(|&v| (v as f64).min(self.threshold)).collect();
            logsumexp(&linear(cx.network, &clipped))
        })
    }
}

/// DICE: fc weights kept where their contribution `mean_feature_k · W_jk` on the profile set is
/// above its `p`-th percentile, then the energy.
pub struct Dice {
    pub p: f64,
    /// `[classes][dim]` masked weights.
    pub masked: Vec<f64>,
}

impl Detector for Dice {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let n = train.samples() as f64;
        let mut mean = vec![0f64; train.dim];
        for f in train.feature_rows() {
            mean.iter_mut().zip(f).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let w = &cx.network.fc.weight;
        let contrib: Vec<f64> = w.iter().enumerate().map(|(i, &w)| mean[i % train.dim] * w as f64).collect();
        let threshold = percentile(&mut contrib.clone(), self.p);
        self.masked = contrib.iter().zip(w).map(|(&c, &w)| if c > threshold { w as f64 } else { 0.0 }).collect();
        Ok(())
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let fc = &cx.network.fc;
        per_row(set.feature_rows(), "DICE", |f| {
            let logits: Vec<f64> = (0..fc.out_features)
                .map(|j| {
                    let w = &self.masked[j * set.dim..(j + 1) * set.dim];
                    fc.bias[j] as f64 + w.iter().zip(f).map(|(w, &x)| w * x as f64).sum::<f64>()
                })
                .collect();
            logsumexp(&logits)
        })
    }
}

/// Activations ASH keeps of `n`: `n − round(n · percentile / 100)`, rounding half to even as
/// NumPy does.
pub(crate) fn ash_keep(n: usize, percentile: f64) -> usize {
    n - ((n as f64 * percentile / 100.0).round_ties_even() as usize).min(n)
}

/// ASH-B: the largest `ash_keep` features each set to (sum of all features) / kept, the rest
/// 0, then the energy. Ties at the cut keep the lower index (torch's `topk` leaves it open).
pub struct AshB {
    pub percentile: f64,
}

impl Detector for AshB {
    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let k = ash_keep(set.dim, self.percentile);
        if k == 0 {
            return Err(Error::Input(format!("ASH-B: percentile {} keeps no activation", self.percentile)));
        }
        per_row(set.feature_rows(), "ASH-B", |f| {
            let sum: f64 = f.iter().map(|&v| v as f64).sum();
            let mut order: Vec<usize> = (0..f.len()).collect();
            order.sort_by(|&a, &b| f[b].total_cmp(&f[a]).then(a.cmp(&b)));
            let mut shaped = vec![0f64; f.len()];
            order[..k].iter().for_each(|&i| shaped[i] = sum / k as f64);
            logsumexp(&linear(cx.network, &shaped))
        })
    }
}
