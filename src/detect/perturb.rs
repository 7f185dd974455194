//! Input perturbation before scoring (ODIN; the density models' "+ip"; MDSEns): per batch one
//! gradient pass to the input, then `x' = x − ε·sign⁺(∇ₓL)/std` (sign⁺(0) = +1, OpenOOD's
//! `ge(grad, 0)`; `std` the preprocessing's per-channel standard deviation, so ε is in pixel
//! units), and one forward pass per ε that reads the features of `x'` (and the channel means of
//! the layer a layer loss is of). The perturbed sets are
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
use crate::nac::LayerStats;

/// The parameter that makes a method an input-perturbation method: ε, in pixel units.
pub const EPS: &str = "eps";

/// What an input-perturbation detector differentiates.
pub enum InputLoss<'a> {
    /// A loss of the logits the engine differentiates itself (ODIN: CE to the prediction at T).
    Logits(Loss),
    /// A loss of one layer's channel means `Σ_hw z / hw` (`None`: the feature layer, whose
    /// means are the features), whose gradient the host computes: a density model's negative
    /// score ("+ip"), MDSEns's Mahalanobis distance.
    Layer { layer: Option<&'a str>, loss: &'a dyn FeatureLoss },
}

/// A loss of feature rows (a layer's channel means) whose gradient the host computes.
pub trait FeatureLoss {
    /// `∂loss/∂features` of rows `[n][dim]`, in f64.
    fn gradient(&self, features: &[f32]) -> Result<Vec<f64>>;
}

/// Channel means `[n][c]` of NCHW maps, summed in f64.
fn channel_means(z: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let hw = h * w;
    (0..n * c).map(|i| (z[i * hw..(i + 1) * hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect()
}

/// The layer gradient for the engine from the loss of the channel means of the NCHW maps `z`:
/// `∂loss/∂mean / hw` at every position, each sample's rows scaled to a largest magnitude of 1
/// (only the sign of ∂L/∂x is used, and backpropagation is linear per sample, so this changes
/// nothing but keeps a sharp density's gradient inside f32).
fn seed_maps(loss: &dyn FeatureLoss, z: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let [_, c, h, w] = shape;
    let g = loss.gradient(&channel_means(z, shape))?;
    Ok(g.chunks(c)
        .flat_map(|row| {
            let m = row.iter().fold(0f64, |m, v| m.max(v.abs()));
            row.iter().flat_map(move |v| std::iter::repeat_n(if m > 0.0 { (v / m) as f32 } else { 0.0 }, h * w))
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
    // The layer whose channel means a layer loss reads, when it is not the feature layer.
    let read = match loss {
        InputLoss::Layer { layer: Some(layer), .. } => {
            let channels = model.network.layer_channels();
            let c = channels
                .iter()
                .find(|(n, _)| n == layer)
                .map(|l| l.1)
                .ok_or_else(|| Error::Input(format!("{} has no layer `{layer}`", model.network.spec)))?;
            Some((*layer, c))
        }
        _ => None,
    };
    let mut features = vec![vec![0f32; total * dim]; epsilons.len()];
    let mut means = vec![vec![0f32; read.map_or(0, |r| total * r.1)]; epsilons.len()];
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
            InputLoss::Layer { layer, loss } => {
                engine.input_gradient_from_layer(model, input, shape, layer.unwrap_or(feature), &|z, s| seed_maps(*loss, z, s))?
            }
        };
        for ((eps, out), out_means) in epsilons.iter().zip(&mut features).zip(&mut means) {
            let moved = perturb(input, &grad, shape, std, *eps);
            // The forward pass alone, reading the features and the layer (if any).
            let (maps, f) = engine.forward_to_layer(model, &moved, shape, read.map_or(feature, |r| r.0))?;
            out[start * dim..(start + n) * dim].copy_from_slice(&f);
            if let Some((_, c)) = read {
                let hw = maps.len() / (n * c);
                out_means[start * c..(start + n) * c].copy_from_slice(&channel_means(&maps, [n, c, hw, 1]));
            }
        }
    }
    if let Some(missing) = seen.iter().position(|&s| !s) {
        return Err(Error::Input(format!("sample {missing} of {total} never came")));
    }
    features
        .into_iter()
        .zip(means)
        .map(|(f, values)| {
            let mut set = PassSet::from_features(&model.network, f, labels.map(<[usize]>::to_vec))?;
            if let Some((layer, channels)) = read {
                set.layer_stats = vec![LayerStats { layer: layer.to_string(), channels, powers: 0, values }];
            }
            Ok(set)
        })
        .collect()
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
