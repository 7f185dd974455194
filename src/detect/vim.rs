//! ViM: the norm of the feature's residual outside the principal space of the profiling
//! features (origin `u = −W⁺b`), scaled to the logits and subtracted from the energy.

use super::linalg::{mat_vec, pinvh, symmetric_eigen};
use super::{logsumexp, per_row, Context, Detector, PassSet};
use crate::error::Result;

pub struct Vim {
    /// Dimension of the principal space.
    dim: usize,
    u: Vec<f64>,
    /// Eigenvectors beyond the first `dim` (the residual space), one per row.
    residual: Vec<Vec<f64>>,
    alpha: f64,
}

impl Vim {
    pub fn new(dim: usize) -> Self {
        Vim { dim, u: Vec::new(), residual: Vec::new(), alpha: f64::NAN }
    }

    fn residual_norm(&self, f: &[f32]) -> f64 {
        let x: Vec<f64> = f.iter().zip(&self.u).map(|(&v, u)| v as f64 - u).collect();
        self.residual.iter().map(|e| e.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>().powi(2)).sum::<f64>().sqrt()
    }
}

impl Detector for Vim {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let fc = &cx.network.fc;
        let (c, d) = (fc.out_features, fc.in_features);
        // W⁺ = Wᵀ (W Wᵀ)⁺ (NumPy's pinv through the SVD gives the same for these shapes).
        let w: Vec<f64> = fc.weight.iter().map(|&v| v as f64).collect();
        let wwt: Vec<f64> = (0..c * c).map(|e| (0..d).map(|k| w[e / c * d + k] * w[e % c * d + k]).sum()).collect();
        let y = mat_vec(&pinvh(&wwt, c, 1e-30), c, &fc.bias.iter().map(|&b| b as f64).collect::<Vec<_>>());
        self.u = (0..d).map(|k| -(0..c).map(|j| w[j * d + k] * y[j]).sum::<f64>()).collect();
        // Covariance about u, denominator N (EmpiricalCovariance with assume_centered).
        let mut cov = vec![0f64; d * d];
        let mut x = vec![0f64; d];
        for f in train.feature_rows() {
            x.iter_mut().zip(f.iter().zip(&self.u)).for_each(|(x, (&v, u))| *x = v as f64 - u);
            for i in 0..d {
                let xi = x[i];
                cov[i * d..(i + 1) * d].iter_mut().zip(&x).for_each(|(a, &xj)| *a += xi * xj);
            }
        }
        let n = train.samples() as f64;
        cov.iter_mut().for_each(|v| *v /= n);
        let (values, vectors) = symmetric_eigen(&cov, d);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        self.residual = order[self.dim..].iter().map(|&k| (0..d).map(|i| vectors[i * d + k]).collect()).collect();
        let max_logit: f64 = train.logit_rows().map(|l| l.iter().copied().fold(f64::NEG_INFINITY, f64::max)).sum::<f64>() / n;
        let vlogit: f64 = train.feature_rows().map(|f| self.residual_norm(f)).sum::<f64>() / n;
        self.alpha = max_logit / vlogit;
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.feature_rows().zip(set.logit_rows()), "ViM", |(f, l)| logsumexp(l) - self.alpha * self.residual_norm(f))
    }
}
