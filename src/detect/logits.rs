//! Detectors of the logits alone (and GradNorm, of the logits and the feature norm; ODIN, of
//! the logits of its perturbed input).

use super::{per_row, softmax, Context, Detector, InputLoss, PassSet};
use crate::engine::{Loss, Target};
use crate::error::Result;

/// Maximum softmax probability.
pub struct Msp;

/// Maximum logit (OpenOOD's MLS).
pub struct MaxLogit;

/// `T · logsumexp(logits / T)` (OpenOOD's EBO).
pub struct Energy {
    pub t: f64,
}

/// Generalized entropy: `−Σ p^γ (1 − p)^γ` over the `M` largest probabilities (all of them
/// when there are fewer classes, as `sort(p)[:, -M:]` gives).
pub struct Gen {
    pub gamma: f64,
    pub m: usize,
}

/// ‖∂L/∂W_fc‖₁ with `L = −Σ_c log softmax(logits)_c` (OpenOOD's all-ones target, T = 1). Since
/// `∂L/∂W_jk = (C·p_j − 1)·f_k`, the norm factors as `‖f‖₁ · Σ_j |C·p_j − 1|`: no backward pass.
pub struct GradNorm;

/// ODIN (OpenOOD's `odin_postprocessor`): the maximum of `softmax(f(x')/T)` with
/// `x' = x − ε·sign⁺(∇ₓ CE(softmax(f(x)/T), argmax f(x)))/std` (see [`super::perturb`]).
/// Deviations: the std is the configured preprocessing's (OpenOOD falls back to 0.5 per channel
/// for a dataset outside its `normalization_dict`); the perturbed logits are `fc` of the
/// perturbed features in f64 on the host (OpenOOD: the network's f32 logits), as for every
/// other detector here.
pub struct Odin {
    pub t: f64,
}

impl Detector for Odin {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "ODIN", |l| softmax(&l.iter().map(|v| v / self.t).collect::<Vec<_>>()).into_iter().fold(0.0, f64::max))
    }

    fn input_loss(&self) -> Option<InputLoss<'_>> {
        Some(InputLoss::Logits(Loss { target: Target::Prediction, temperature: self.t as f32 }))
    }
}

impl Detector for Msp {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "MSP", |l| softmax(l).into_iter().fold(0.0, f64::max))
    }
}

impl Detector for MaxLogit {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "MaxLogit", |l| l.iter().copied().fold(f64::NEG_INFINITY, f64::max))
    }
}

impl Detector for Energy {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "Energy", |l| self.t * super::logsumexp(&l.iter().map(|v| v / self.t).collect::<Vec<_>>()))
    }
}

impl Detector for Gen {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.logit_rows(), "GEN", |l| {
            let mut p = softmax(l);
            p.sort_by(f64::total_cmp);
            -p[p.len().saturating_sub(self.m)..].iter().map(|&p| p.powf(self.gamma) * (1.0 - p).powf(self.gamma)).sum::<f64>()
        })
    }
}

impl Detector for GradNorm {
    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let c = set.classes as f64;
        per_row(set.feature_rows().zip(set.logit_rows()), "GradNorm", |(f, l)| {
            let f_norm: f64 = f.iter().map(|&x| (x as f64).abs()).sum();
            f_norm * softmax(l).iter().map(|p| (c * p - 1.0).abs()).sum::<f64>()
        })
    }
}
