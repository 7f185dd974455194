//! Detectors of class statistics of the profiling features: Mahalanobis (MDS), its relative
//! form (RMDS), SHE's class means, and DDU's class-conditional Gaussians. Statistics in f64.

use super::linalg::{backward_solve, cholesky, forward_solve, mat_vec, mean_cov, pinvh, whitened_norm2};
use super::perturb::{FeatureLoss, InputLoss};
use super::{logsumexp, per_row, softmax, Context, Detector, PassSet};
use crate::error::{Error, Result};

/// Profiling features in f64 grouped by label: `[class] → rows`, every class non-empty.
fn by_class(train: &PassSet, method: &str, keep: impl Fn(usize) -> bool) -> Result<Vec<Vec<Vec<f64>>>> {
    let labels = train.labels_for(method)?;
    let mut classes = vec![Vec::new(); train.classes];
    for (i, f) in train.feature_rows().enumerate() {
        if keep(i) {
            classes[labels[i]].push(f.iter().map(|&v| v as f64).collect::<Vec<f64>>());
        }
    }
    match classes.iter().position(Vec::is_empty) {
        Some(c) => Err(Error::Input(format!("{method}: class {c} has no profiling sample to fit its statistics on"))),
        None => Ok(classes),
    }
}

fn mean(rows: &[Vec<f64>], n: usize) -> Vec<f64> {
    mean_cov(rows.iter().map(Vec::as_slice), n, 0).0
}

/// sklearn's `EmpiricalCovariance().fit(X).precision_` on float32 `X`: covariance with
/// denominator N, `pinvh` with SciPy's cutoff for float32 (`n · ε₃₂`).
fn precision<'a>(rows: impl Iterator<Item = &'a [f64]> + Clone, n: usize) -> Vec<f64> {
    let (_, cov) = mean_cov(rows, n, 0);
    pinvh(&cov, n, n as f64 * f32::EPSILON as f64)
}

/// `(x − μ)ᵀ P (x − μ)` for many μ at once, from `P x`: `xᵀPx − 2 (Pμ)ᵀx + μᵀPμ`.
struct Mahalanobis {
    precision: Vec<f64>,
    /// Per centre: (P μ, μᵀ P μ).
    centres: Vec<(Vec<f64>, f64)>,
}

impl Mahalanobis {
    fn new(precision: Vec<f64>, centres: &[Vec<f64>]) -> Self {
        let n = centres[0].len();
        let centres = centres
            .iter()
            .map(|mu| {
                let pm = mat_vec(&precision, n, mu);
                let mpm = pm.iter().zip(mu).map(|(a, b)| a * b).sum();
                (pm, mpm)
            })
            .collect();
        Mahalanobis { precision, centres }
    }

    fn distances(&self, x: &[f64]) -> impl Iterator<Item = f64> + '_ {
        let px = mat_vec(&self.precision, x.len(), x);
        let xpx: f64 = px.iter().zip(x).map(|(a, b)| a * b).sum();
        let x = x.to_vec();
        self.centres.iter().map(move |(pm, mpm)| xpx - 2.0 * pm.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>() + mpm)
    }
}

fn f64_row(f: &[f32]) -> Vec<f64> {
    f.iter().map(|&v| v as f64).collect()
}

/// MDS: `max_c −(x − μ_c)ᵀ Σ⁺ (x − μ_c)`, class means and one shared covariance of the
/// class-centred profiling features.
#[derive(Default)]
pub struct Mds {
    model: Option<Mahalanobis>,
}

fn class_model(train: &PassSet, method: &str) -> Result<(Vec<Vec<f64>>, Mahalanobis)> {
    let classes = by_class(train, method, |_| true)?;
    let n = train.dim;
    let means: Vec<Vec<f64>> = classes.iter().map(|rows| mean(rows, n)).collect();
    let centred: Vec<Vec<f64>> = classes
        .iter()
        .zip(&means)
        .flat_map(|(rows, mu)| rows.iter().map(move |r| r.iter().zip(mu).map(|(a, b)| a - b).collect()))
        .collect();
    let model = Mahalanobis::new(precision(centred.iter().map(Vec::as_slice), n), &means);
    Ok((means, model))
}

impl Detector for Mds {
    fn fit(&mut self, _: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        self.model = Some(class_model(train, "MDS")?.1);
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let m = self.model.as_ref().expect("fitted");
        per_row(set.feature_rows(), "MDS", |f| m.distances(&f64_row(f)).map(|d| -d).fold(f64::NEG_INFINITY, f64::max))
    }
}

/// RMDS: MDS's class distances minus the distance to one Gaussian of all profiling features:
/// `max_c (−d_c(x) + d_0(x))`.
#[derive(Default)]
pub struct Rmds {
    model: Option<(Mahalanobis, Mahalanobis)>,
}

impl Detector for Rmds {
    fn fit(&mut self, _: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let (_, classes) = class_model(train, "RMDS")?;
        let rows: Vec<Vec<f64>> = train.feature_rows().map(f64_row).collect();
        let whole = mean(&rows, train.dim);
        let background = Mahalanobis::new(precision(rows.iter().map(Vec::as_slice), train.dim), &[whole]);
        self.model = Some((classes, background));
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let (classes, background) = self.model.as_ref().expect("fitted");
        per_row(set.feature_rows(), "RMDS", |f| {
            let x = f64_row(f);
            let d0 = background.distances(&x).next().expect("one centre");
            classes.distances(&x).map(|d| d0 - d).fold(f64::NEG_INFINITY, f64::max)
        })
    }
}

/// First index of the largest value (torch's `argmax`).
pub(crate) fn argmax(x: &[f64]) -> usize {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b })
}

/// SHE (inner-product metric): `f · μ_pred`, with `μ_c` the mean feature of the profiling
/// samples of class `c` that the model classifies correctly.
#[derive(Default)]
pub struct She {
    means: Vec<Vec<f64>>,
}

impl Detector for She {
    fn fit(&mut self, _: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let labels = train.labels_for("SHE")?;
        let predicted: Vec<usize> = train.logit_rows().map(argmax).collect();
        let classes = by_class(train, "SHE (correctly classified)", |i| predicted[i] == labels[i])?;
        self.means = classes.iter().map(|rows| mean(rows, train.dim)).collect();
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.feature_rows().zip(set.logit_rows()), "SHE", |(f, l)| {
            self.means[argmax(l)].iter().zip(f).map(|(m, &x)| m * x as f64).sum()
        })
    }
}

/// DDU's Gaussian discriminant: per class mean and covariance (denominator N − 1), one jitter
/// `ε·I` for all classes, the first of `0, f64::MIN_POSITIVE, 1e-308, 1e-307, …, 0.1` at which
/// every covariance has a Cholesky factor (DDU's `JITTERS`), and the score
/// `logsumexp_c log N(x; μ_c, Σ_c + εI)`.
#[derive(Default)]
pub struct Ddu {
    /// Per class: (mean, Cholesky factor, log normaliser `−½(D log 2π + log|Σ|)`).
    classes: Vec<(Vec<f64>, Vec<f64>, f64)>,
    pub jitter: f64,
}

impl Detector for Ddu {
    fn fit(&mut self, _: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let n = train.dim;
        let classes = by_class(train, "DDU", |_| true)?;
        let stats: Vec<(Vec<f64>, Vec<f64>)> = classes.iter().map(|rows| mean_cov(rows.iter().map(Vec::as_slice), n, 1)).collect();
        let jitters = [0.0, f64::MIN_POSITIVE].into_iter().chain((-308..0).map(|e| format!("1e{e}").parse::<f64>().expect("a number")));
        for jitter in jitters {
            let factors: Option<Vec<Vec<f64>>> = stats
                .iter()
                .map(|(_, cov)| {
                    let mut c = cov.clone();
                    (0..n).for_each(|i| c[i * n + i] += jitter);
                    cholesky(&c, n)
                })
                .collect();
            if let Some(factors) = factors {
                self.jitter = jitter;
                self.classes = stats
                    .into_iter()
                    .zip(factors)
                    .map(|((mu, _), l)| {
                        let log_det: f64 = (0..n).map(|i| 2.0 * l[i * n + i].ln()).sum();
                        let norm = -0.5 * (n as f64 * (2.0 * std::f64::consts::PI).ln() + log_det);
                        (mu, l, norm)
                    })
                    .collect();
                return Ok(());
            }
        }
        Err(Error::Input("DDU: no jitter up to 0.1 makes every class covariance positive definite".into()))
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        per_row(set.feature_rows(), "DDU", |f| logsumexp(&self.log_densities(f)))
    }
}

impl Ddu {
    /// `log N(f; μ_c, Σ_c + εI)` per class.
    fn log_densities(&self, f: &[f32]) -> Vec<f64> {
        let n = f.len();
        self.classes
            .iter()
            .map(|(mu, l, norm)| {
                let x: Vec<f64> = f.iter().zip(mu).map(|(&v, m)| v as f64 - m).collect();
                norm - 0.5 * whitened_norm2(l, n, &x)
            })
            .collect()
    }
}

/// DDU with input perturbation ("+ip"): DDU's score of `x' = x − ε·sign⁺(∇ₓ loss)/std` with
/// the loss `−logsumexp_c log N(f(x); μ_c, Σ_c)`, whose feature gradient is
/// `Σ_c w_c Σ_c⁻¹ (f − μ_c)`, `w = softmax_c log N` (Lee et al. 2018 perturb against the
/// closest class's Mahalanobis distance; this is the same idea for DDU's mixture score).
#[derive(Default)]
pub struct DduIp(pub Ddu);

impl FeatureLoss for Ddu {
    fn gradient(&self, features: &[f32]) -> Result<Vec<f64>> {
        let n = self.classes.first().map_or(1, |c| c.0.len());
        Ok(features
            .chunks(n)
            .flat_map(|f| {
                let w = softmax(&self.log_densities(f));
                let mut g = vec![0f64; n];
                for ((mu, l, _), w) in self.classes.iter().zip(w) {
                    let x: Vec<f64> = f.iter().zip(mu).map(|(&v, m)| v as f64 - m).collect();
                    let solved = backward_solve(l, n, &forward_solve(l, n, &x));
                    g.iter_mut().zip(solved).for_each(|(g, s)| *g += w * s);
                }
                g
            })
            .collect())
    }
}

impl Detector for DduIp {
    fn fit(&mut self, cx: &Context, train: &PassSet, id_val: Option<&PassSet>) -> Result<()> {
        self.0.fit(cx, train, id_val)
    }

    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>> {
        self.0.score(cx, set)
    }

    fn input_loss(&self) -> Option<InputLoss<'_>> {
        Some(InputLoss::Layer { layer: None, loss: &self.0 })
    }
}

/// MDSEns (Lee et al. 2018) as OpenOOD v1.5's `mds_ensemble_postprocessor` with its config
/// (`feature_type_list: [mean]`, `reduce_dim_list: [none]`, `alpha_list: [1]`): on the channel
/// means of one layer (`layer`, an index into the network's layers; OpenOOD's is the first of
/// its feature list), class means and one shared covariance as MDS, the input moved by
/// `x' = x − ε·sign⁺(∇ₓ ½ d_ĉ(x))/std` against the Mahalanobis distance to the closest class ĉ,
/// and the score `max_c −½ (f(x') − μ_c)ᵀ Σ⁺ (f(x') − μ_c)`.
///
/// Deviations: the step is divided by the preprocessing's std per channel, as ODIN's is here;
/// OpenOOD's MDSEns divides by a hard-coded 0.5 on three channels. The per-layer ensemble with
/// logistic-regression weights (OpenOOD's `alpha_list: []`, fitted on OOD validation data) is
/// not built: OpenOOD's own setting is the single layer with weight 1.
pub struct MdsEnsemble {
    layer: usize,
    layer_name: String,
    model: Option<(Vec<Vec<f64>>, Mahalanobis)>,
}

impl MdsEnsemble {
    pub fn new(layer: usize) -> Self {
        MdsEnsemble { layer, layer_name: String::new(), model: None }
    }
}

impl Detector for MdsEnsemble {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let names = cx.network.layer_names();
        self.layer_name = names.get(self.layer).cloned().ok_or_else(|| {
            Error::Input(format!(
                "MDSEns: layer={} but {} has layers 0..{} ({})",
                self.layer,
                cx.network.spec,
                names.len() - 1,
                names.join(", ")
            ))
        })?;
        self.model = Some(class_model(&train.layer_view(&self.layer_name, "MDSEns")?, "MDSEns")?);
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let (_, m) = self.model.as_ref().expect("fitted");
        let view = set.layer_view(&self.layer_name, "MDSEns")?;
        per_row(view.feature_rows(), "MDSEns", |f| m.distances(&f64_row(f)).map(|d| -0.5 * d).fold(f64::NEG_INFINITY, f64::max))
    }

    fn input_loss(&self) -> Option<InputLoss<'_>> {
        Some(InputLoss::Layer { layer: Some(&self.layer_name), loss: self })
    }
}

impl FeatureLoss for MdsEnsemble {
    /// `∂ ½ d_ĉ / ∂f = Σ⁺ (f − μ_ĉ)` per row, ĉ the closest class (OpenOOD's `sample_pred`).
    fn gradient(&self, features: &[f32]) -> Result<Vec<f64>> {
        let (means, m) = self.model.as_ref().expect("fitted");
        let n = means[0].len();
        Ok(features
            .chunks(n)
            .flat_map(|f| {
                let f = f64_row(f);
                let d: Vec<f64> = m.distances(&f).map(|d| -d).collect();
                let x: Vec<f64> = f.iter().zip(&means[argmax(&d)]).map(|(a, b)| a - b).collect();
                mat_vec(&m.precision, n, &x)
            })
            .collect())
    }
}
