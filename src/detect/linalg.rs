//! Dense f64 linear algebra on the host for the detectors' statistics (covariances of a few
//! hundred dimensions): symmetric eigendecomposition (cyclic Jacobi), pseudo-inverse, Cholesky.
//! Matrices are row-major `n × n`.

/// Mean of the rows and their covariance `Σ (x − μ)(x − μ)ᵀ / (N − ddof)`.
pub fn mean_cov<'a>(rows: impl Iterator<Item = &'a [f64]> + Clone, n: usize, ddof: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0f64; n];
    let mut count = 0usize;
    for r in rows.clone() {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
        count += 1;
    }
    mean.iter_mut().for_each(|m| *m /= count as f64);
    let mut cov = vec![0f64; n * n];
    let mut centred = vec![0f64; n];
    for r in rows {
        centred.iter_mut().zip(r.iter().zip(&mean)).for_each(|(c, (v, m))| *c = v - m);
        for i in 0..n {
            let ci = centred[i];
            if ci != 0.0 {
                cov[i * n..(i + 1) * n].iter_mut().zip(&centred).for_each(|(a, &cj)| *a += ci * cj);
            }
        }
    }
    let denom = count.saturating_sub(ddof).max(1) as f64;
    cov.iter_mut().for_each(|c| *c /= denom);
    (mean, cov)
}

/// Eigenvalues and eigenvectors of a symmetric matrix: `(λ, V)` with eigenvector `i` in column
/// `i` of `V`, unsorted. Cyclic Jacobi rotations until the off-diagonal mass is below 1e-30 of
/// the total (eigenvalues to ~1e-14 relative).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|p| (p + 1..n).map(move |q| (p, q))).map(|(p, q)| a[p * n + q].powi(2)).sum();
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Pseudo-inverse of a symmetric matrix as `scipy.linalg.pinvh` forms it: eigenvalues at or
/// below `rtol · max|λ|` are dropped.
pub fn pinvh(a: &[f64], n: usize, rtol: f64) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(a, n);
    let cutoff = rtol * values.iter().fold(0f64, |m, v| m.max(v.abs()));
    let mut out = vec![0f64; n * n];
    for (k, &l) in values.iter().enumerate() {
        if l.abs() > cutoff {
            for i in 0..n {
                let vik = vectors[i * n + k] / l;
                if vik != 0.0 {
                    out[i * n..(i + 1) * n].iter_mut().enumerate().for_each(|(j, o)| *o += vik * vectors[j * n + k]);
                }
            }
        }
    }
    out
}

/// Lower Cholesky factor, or `None` when the matrix is not (numerically) positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum::<f64>();
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// `L⁻¹ x` for a lower-triangular `L` (forward substitution).
pub fn forward_solve(l: &[f64], n: usize, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0f64; n];
    for i in 0..n {
        let s: f64 = x[i] - l[i * n..i * n + i].iter().zip(&y).map(|(a, b)| a * b).sum::<f64>();
        y[i] = s / l[i * n + i];
    }
    y
}

/// `L⁻ᵀ y` for a lower-triangular `L` (back substitution): with [`forward_solve`], `(LLᵀ)⁻¹ x`.
pub fn backward_solve(l: &[f64], n: usize, y: &[f64]) -> Vec<f64> {
    let mut z = vec![0f64; n];
    for i in (0..n).rev() {
        let s: f64 = y[i] - (i + 1..n).map(|k| l[k * n + i] * z[k]).sum::<f64>();
        z[i] = s / l[i * n + i];
    }
    z
}

/// `‖L⁻¹ x‖²` for a lower-triangular `L`.
pub fn whitened_norm2(l: &[f64], n: usize, x: &[f64]) -> f64 {
    forward_solve(l, n, x).iter().map(|v| v * v).sum()
}

/// `M x` for a row-major `n × n` matrix.
pub fn mat_vec(m: &[f64], n: usize, x: &[f64]) -> Vec<f64> {
    m.chunks_exact(n).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_spd(n: usize, rank: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let b: Vec<f64> = (0..n * rank).map(|_| rng.normal() as f64).collect();
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..rank).map(|k| b[i * rank + k] * b[j * rank + k]).sum();
            }
        }
        a
    }

    #[test]
    fn eigen_reconstructs_and_pinvh_inverts() {
        let n = 12;
        let a = random_spd(n, n + 3, 1);
        let (l, v) = symmetric_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v[i * n + k] * l[k] * v[j * n + k]).sum();
                assert!((r - a[i * n + j]).abs() < 1e-12 * 50.0, "A[{i}][{j}] {r} vs {}", a[i * n + j]);
            }
        }
        let inv = pinvh(&a, n, 1e-12);
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                assert!((r - (i == j) as u8 as f64).abs() < 1e-9, "A·A⁺ [{i}][{j}] = {r}");
            }
        }
        let chol = cholesky(&a, n).expect("positive definite");
        let x: Vec<f64> = (0..n).map(|i| i as f64 - 3.0).collect();
        let maha: f64 = x.iter().zip(mat_vec(&inv, n, &x)).map(|(a, b)| a * b).sum();
        assert!((whitened_norm2(&chol, n, &x) - maha).abs() < 1e-9 * maha);
    }

    #[test]
    fn pinvh_of_a_singular_matrix_is_a_pseudo_inverse_and_cholesky_refuses_it() {
        let n = 10;
        let a = random_spd(n, 4, 2);
        assert!(cholesky(&a, n).is_none());
        let p = pinvh(&a, n, 1e-10);
        // A · A⁺ · A = A
        let ap: Vec<f64> = (0..n * n).map(|e| (0..n).map(|k| a[e / n * n + k] * p[k * n + e % n]).sum()).collect();
        for e in 0..n * n {
            let r: f64 = (0..n).map(|k| ap[e / n * n + k] * a[k * n + e % n]).sum();
            assert!((r - a[e]).abs() < 1e-9, "(A A⁺ A)[{e}] = {r} vs {}", a[e]);
        }
    }
}
