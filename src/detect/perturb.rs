//! Input perturbation before scoring (ODIN; the density models' "+ip"): per batch one gradient
//! pass to the input, then `x' = x − ε·sign⁺(∇ₓL)/std` (sign⁺(0) = +1, OpenOOD's
//! `ge(grad, 0)`; `std` the preprocessing's per-channel standard deviation, so ε is in pixel
//! units), and one forward pass per ε that reads the features of `x'`. The perturbed sets are
//! ordinary [`PassSet`]s, scored by the method's detector. Batches are streamed: one batch of
//! images is on the host at a time.
//!
//! Cost per scored set: one gradient pass per gradient setting (ODIN's T; the fitted density
//! model of a "+ip" method) plus one forward pass per ε; [`passes`] counts them.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{fit_one, Context, Detector, Fitted, Method, Params, PassSet};
use crate::engine::{Engine, Loss, Model, PassRequest};
use crate::error::{Error, Result};
use crate::metrics;

/// The parameter that makes a method an input-perturbation method: ε, in pixel units.
pub const EPS: &str = "eps";

/// What an input-perturbation detector differentiates.
pub enum InputLoss<'a> {
    /// A loss of the logits the engine differentiates itself (ODIN: CE to the prediction at T).
    Logits(Loss),
    /// A loss of the feature rows (the density model's negative score).
    Features(&'a dyn FeatureLoss),
}

/// A loss of the penultimate features whose gradient the host computes.
pub trait FeatureLoss {
    /// `∂loss/∂features` of rows `[n][dim]`, in f64.
    fn gradient(&self, features: &[f32]) -> Result<Vec<f64>>;
}

/// The feature gradient for the engine: each row scaled to a largest magnitude of 1 (only the
/// sign of ∂L/∂x is used, and backpropagation is linear per sample, so this changes nothing but
/// keeps a sharp density's gradient inside f32).
fn seed_rows(loss: &dyn FeatureLoss, features: &[f32], dim: usize) -> Result<Vec<f32>> {
    let g = loss.gradient(features)?;
    Ok(g.chunks(dim)
        .flat_map(|row| {
            let m = row.iter().fold(0f64, |m, v| m.max(v.abs()));
            row.iter().map(move |v| if m > 0.0 { (v / m) as f32 } else { 0.0 })
        })
        .collect())
}

static PASSES: AtomicUsize = AtomicUsize::new(0);

/// Network passes over a whole set run for input perturbation in this process (a gradient pass
/// and each forward pass count one each): lets tests count what a configuration costs.
pub fn passes() -> usize {
    PASSES.load(Ordering::Relaxed)
}

/// `x − ε·sign⁺(g)/std` per NCHW value, in f32 as OpenOOD computes it.
fn perturb(x: &[f32], g: &[f32], shape: [usize; 4], std: &[f32], eps: f64) -> Vec<f32> {
    let plane = shape[2] * shape[3];
    x.iter()
        .zip(g)
        .enumerate()
        .map(|(i, (&x, &g))| {
            let sign = if g >= 0.0 { 1f32 } else { -1f32 };
            x + -(eps as f32) * (sign / std[i / plane % shape[1]])
        })
        .collect()
}

/// The perturbed versions of one set of `total` samples, one [`PassSet`] per ε (features of
/// `x'` and their logits), from batches in any order.
#[allow(clippy::too_many_arguments)]
pub fn perturbed_sets<I: AsRef<[f32]>>(
    engine: &Engine,
    model: &mut Model,
    loss: &InputLoss,
    std: &[f32],
    epsilons: &[f64],
    total: usize,
    labels: Option<&[usize]>,
    batches: impl IntoIterator<Item = Result<(usize, I, [usize; 4])>>,
) -> Result<Vec<PassSet>> {
    PASSES.fetch_add(1 + epsilons.len(), Ordering::Relaxed);
    let feature = model.network.feature_layer();
    let dim = model.network.fc.in_features;
    let mut features = vec![vec![0f32; total * dim]; epsilons.len()];
    let mut seen = vec![false; total];
    for batch in batches {
        let (start, input, shape) = batch?;
        let (input, n) = (input.as_ref(), shape[0]);
        if start + n > total || seen[start..start + n].iter().any(|&s| s) {
            return Err(Error::Input(format!("samples {start}..{} are outside the set of {total} or came twice", start + n)));
        }
        seen[start..start + n].iter_mut().for_each(|s| *s = true);
        if std.len() != shape[1] {
            return Err(Error::Input(format!("{} std values for inputs of {} channels", std.len(), shape[1])));
        }
        let grad = match loss {
            InputLoss::Logits(loss) => {
                engine.pass(model, input, shape, &PassRequest { layers: &[], loss: *loss, input_gradient: true, labels: None })?.input_grad
            }
            InputLoss::Features(loss) => engine.input_gradient_from_features(model, input, shape, &|f| seed_rows(*loss, f, dim))?,
        };
        for (eps, out) in epsilons.iter().zip(&mut features) {
            let moved = perturb(input, &grad, shape, std, *eps);
            let pass = engine.pass(model, &moved, shape, &PassRequest::nac(&[feature]))?;
            out[start * dim..(start + n) * dim].copy_from_slice(&pass.layers[0].z);
        }
    }
    if let Some(missing) = seen.iter().position(|&s| !s) {
        return Err(Error::Input(format!("sample {missing} of {total} never came")));
    }
    features.into_iter().map(|f| PassSet::from_features(&model.network, f, labels.map(<[usize]>::to_vec))).collect()
}

/// Which criterion set a perturbation is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    IdVal,
    OodVal,
}

/// Runs a set's perturbation passes: `(model, detector, epsilons, which set)` → one perturbed
/// set per ε.
pub type Perturber<'a> = dyn FnMut(&mut Model, &dyn Detector, &[f64], Criterion) -> Result<Vec<PassSet>> + 'a;

/// A candidate's (ID val scores, OOD val scores, perturbed ID val set).
type Trialled = (Vec<f32>, Vec<f32>, PassSet);

/// Fits and selects an input-perturbation method like [`super::fit_and_select`] (fitted on the
/// clean profiling set, selected by the AUROC of the perturbed criterion sets). Candidates that
/// differ only in ε share a gradient pass: `perturb(model, detector, epsilons, set)` returns
/// the set perturbed with each ε. Returns the fitted winner and, when there was a sweep, its
/// perturbed ID validation set (reused for the report, not recomputed).
#[allow(clippy::too_many_arguments)]
pub fn fit_and_select_perturbed(
    engine: &Engine,
    model: &mut Model,
    preprocessing: &str,
    method: &Method,
    candidates: Vec<Params>,
    train: &PassSet,
    id_val: Option<&PassSet>,
    has_criterion: bool,
    perturb: &mut Perturber,
) -> Result<(Fitted, Option<PassSet>)> {
    let started = std::time::Instant::now();
    let fit = |model: &Model, p: &Params| fit_one(&Context { engine, network: &model.network, preprocessing }, method, p, train, id_val);
    if candidates.len() == 1 {
        let params = candidates.into_iter().next().expect("one candidate");
        let detector = fit(model, &params)?;
        return Ok((Fitted { detector, params, trials: Vec::new(), fit_seconds: started.elapsed().as_secs_f64() }, None));
    }
    if !has_criterion {
        return Err(Error::Input(format!(
            "{} has {} candidate settings but no search criterion: add [search] ood_val or id_only",
            method.name,
            candidates.len()
        )));
    }
    // Groups of candidates equal but for ε, in order of first appearance.
    let without_eps = |p: &Params| Params(p.0.iter().filter(|(n, _)| n != EPS).cloned().collect());
    let mut groups: Vec<(Params, Vec<usize>)> = Vec::new();
    for (i, p) in candidates.iter().enumerate() {
        let key = without_eps(p);
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut scored: Vec<Option<Trialled>> = (0..candidates.len()).map(|_| None).collect();
    for (_, members) in &groups {
        let detectors: Vec<Box<dyn Detector>> = members.iter().map(|&i| fit(model, &candidates[i])).collect::<Result<_>>()?;
        let epsilons: Vec<f64> = members.iter().map(|&i| candidates[i].get(EPS)).collect();
        let id_sets = perturb(model, detectors[0].as_ref(), &epsilons, Criterion::IdVal)?;
        let ood_sets = perturb(model, detectors[0].as_ref(), &epsilons, Criterion::OodVal)?;
        let cx = Context { engine, network: &model.network, preprocessing };
        for (((&i, d), id), ood) in members.iter().zip(&detectors).zip(id_sets).zip(&ood_sets) {
            scored[i] = Some((d.score(&cx, &id)?, d.score(&cx, ood)?, id));
        }
    }
    // `select_by_auroc` asks for the candidates in order.
    let mut next = 0;
    let (best, trials) = metrics::select_by_auroc(candidates, |_| {
        let (id, ood, _) = scored[next].as_ref().expect("every candidate scored");
        next += 1;
        Ok((id.clone(), ood.clone()))
    })?;
    let params = trials[best].params.clone();
    let detector = fit(model, &params)?;
    let id_val_set = scored.swap_remove(best).map(|s| s.2);
    Ok((Fitted { detector, params, trials, fit_seconds: started.elapsed().as_secs_f64() }, id_val_set))
}
