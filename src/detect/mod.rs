//! Post-hoc OOD detectors beside NAC, all on the outputs of one shared pass per set: the pooled
//! `(Σz, Σg)` cache NAC re-bins, and on the host the penultimate features (`Σ_hw z` of the
//! feature layer — `avgpool`, or a ViT's class token after `encoder.ln` (`layer_norm`), both of
//! spatial size 1×1) and the logits `fc(features)` in f64.
//! Formulas and defaults follow OpenOOD v1.5 (`openood/postprocessors`,
//! `configs/postprocessors`); where a method deviates, its file says so.
//!
//! A detector is fitted once per model on ID data (the profiling set; ReAct's percentile on ID
//! validation as in OpenOOD) and then scores any set; higher = more in-distribution. Adding a
//! method is one file and one [`METHODS`] entry. A hyperparameter sweep uses
//! [`crate::metrics::select_by_auroc`], the selection rule of NAC's APS.

mod clip;
mod gaussian;
mod gram;
pub(crate) mod linalg;
mod logits;
mod nac_ue;
mod neighbours;
mod openmax;
pub mod perturb;
mod vim;

pub use nac_ue::NacUe;
pub use openmax::weibull_fit;
pub use perturb::InputLoss;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::{self, Trial};
use crate::model::Network;
use crate::nac::{LayerStats, PooledStates};

/// One set after its pass: the pooled cache (for NAC) and the host copies detectors read.
pub struct PassSet {
    pub pooled: Option<PooledStates>,
    /// `[samples][dim]` penultimate features.
    pub features: Vec<f32>,
    /// `[samples][classes]` logits `fc(features)`, computed in f64.
    pub logits: Vec<f64>,
    pub labels: Option<Vec<usize>>,
    pub dim: usize,
    pub classes: usize,
    /// Channel means and Gram row sums of the pooled layers, for the methods that read them
    /// (MDSEns, Gram); empty unless the pass computed them.
    pub layer_stats: Vec<LayerStats>,
}

impl PassSet {
    /// Reads the features of a pooled set back (one readback) and forms its logits.
    pub fn from_pooled(engine: &Engine, network: &Network, pooled: PooledStates, labels: Option<Vec<usize>>) -> Result<Self> {
        let pairs = pooled.read_values(engine, network.feature_layer())?;
        let features: Vec<f32> = pairs.iter().step_by(2).copied().collect();
        let mut set = PassSet::from_features(network, features, labels)?;
        set.layer_stats = pooled.read_stats(engine)?;
        set.pooled = Some(pooled);
        Ok(set)
    }

    /// A set that only NAC-UE reads (no detector configured): no features are read back.
    pub fn pooled_only(pooled: PooledStates, labels: Option<Vec<usize>>) -> Self {
        PassSet { pooled: Some(pooled), features: Vec::new(), logits: Vec::new(), labels, dim: 1, classes: 1, layer_stats: Vec::new() }
    }

    /// A set from host features `[samples][fc.in_features]` (tests, goldens).
    pub fn from_features(network: &Network, features: Vec<f32>, labels: Option<Vec<usize>>) -> Result<Self> {
        let fc = &network.fc;
        let dim = fc.in_features;
        if dim == 0 || !features.len().is_multiple_of(dim) {
            return Err(Error::Input(format!("{} feature values are not whole rows of {dim}", features.len())));
        }
        let samples = features.len() / dim;
        if let Some(l) = &labels {
            if l.len() != samples || l.iter().any(|&c| c >= fc.out_features) {
                return Err(Error::Input(format!("{} labels for {samples} samples of {} classes", l.len(), fc.out_features)));
            }
        }
        let logits = features.chunks_exact(dim).flat_map(|f| linear(network, f)).collect();
        Ok(PassSet { pooled: None, features, logits, labels, dim, classes: fc.out_features, layer_stats: Vec::new() })
    }

    /// The statistics of `layer`, with at least `powers` Gram powers, or an error naming
    /// what the method needs.
    pub(crate) fn stats(&self, layer: &str, powers: usize, method: &str) -> Result<&LayerStats> {
        let found = self.layer_stats.iter().find(|s| s.layer == layer && s.powers >= powers);
        if let Some(s) = found.filter(|s| s.samples() != self.samples() || s.values.len() != s.samples() * (1 + s.powers) * s.channels) {
            return Err(Error::Input(format!(
                "{method}: the statistics of layer `{layer}` hold {} values, not whole rows for the set's {} samples",
                s.values.len(),
                self.samples()
            )));
        }
        found.ok_or_else(|| {
            let have: Vec<String> = self.layer_stats.iter().map(|s| format!("{} ({} powers)", s.layer, s.powers)).collect();
            Error::Input(format!(
                "{method} reads the statistics of layer `{layer}` with {powers} Gram powers, which this pass did not compute (it has: {})",
                if have.is_empty() { "none".to_string() } else { have.join(", ") }
            ))
        })
    }

    /// The same samples with `layer`'s channel means as their features (no logits): the view
    /// the class statistics of [`gaussian`] fit and score for a layer other than the feature
    /// layer.
    pub(crate) fn layer_view(&self, layer: &str, method: &str) -> Result<PassSet> {
        let stats = self.stats(layer, 0, method)?;
        let features = (0..stats.samples()).flat_map(|i| stats.mean(i).to_vec()).collect();
        let (dim, classes, labels) = (stats.channels, self.classes, self.labels.clone());
        Ok(PassSet { pooled: None, features, logits: Vec::new(), labels, dim, classes, layer_stats: Vec::new() })
    }

    pub fn samples(&self) -> usize {
        self.features.len() / self.dim
    }

    pub fn feature_rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.features.chunks_exact(self.dim)
    }

    pub fn logit_rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.logits.chunks_exact(self.classes)
    }

    pub(crate) fn pooled(&self) -> Result<&PooledStates> {
        self.pooled.as_ref().ok_or_else(|| Error::Input("NAC-UE needs a pooled set (features alone do not carry its pairs)".into()))
    }

    /// Labels of a fitting set, or an error naming the method that needs them.
    fn labels_for(&self, method: &str) -> Result<&[usize]> {
        self.labels.as_deref().ok_or_else(|| Error::Input(format!("{method} fits class statistics and needs labels on the profile set")))
    }
}

/// `fc(f)` in f64 for one feature row (any values in place of the features, e.g. clipped).
pub(crate) fn linear<T: Copy + Into<f64>>(network: &Network, f: &[T]) -> Vec<f64> {
    let fc = &network.fc;
    (0..fc.out_features)
        .map(|j| {
            let w = &fc.weight[j * fc.in_features..(j + 1) * fc.in_features];
            fc.bias[j] as f64 + w.iter().zip(f).map(|(&w, &x)| w as f64 * x.into()).sum::<f64>()
        })
        .collect()
}

/// `log Σ exp(x)`, stable.
pub(crate) fn logsumexp(x: &[f64]) -> f64 {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

pub(crate) fn softmax(x: &[f64]) -> Vec<f64> {
    let l = logsumexp(x);
    x.iter().map(|v| (v - l).exp()).collect()
}

/// Per-row `f`, in f32 scores, checked finite.
pub(crate) fn per_row<T>(rows: impl Iterator<Item = T>, method: &str, f: impl Fn(T) -> f64) -> Result<Vec<f32>> {
    let scores: Vec<f32> = rows.map(|r| f(r) as f32).collect();
    match scores.iter().position(|s| !s.is_finite()) {
        Some(i) => Err(Error::NotFinite { sample: i, message: format!("{method} gave a non-finite score") }),
        None => Ok(scores),
    }
}

/// What a detector may read besides the set it scores.
pub struct Context<'a> {
    pub engine: &'a Engine,
    pub network: &'a Network,
    pub preprocessing: &'a str,
}

/// A post-hoc detector: fitted on ID data, then scores sets (higher = more in-distribution).
pub trait Detector {
    /// Fits the statistics on the profiling set `train` (labelled) and, where the method uses
    /// it, ID validation.
    fn fit(&mut self, _cx: &Context, _train: &PassSet, _id_val: Option<&PassSet>) -> Result<()> {
        Ok(())
    }
    /// One score per sample of `set`.
    fn score(&self, cx: &Context, set: &PassSet) -> Result<Vec<f32>>;
    /// An input-perturbation method's loss ([`perturb`]): such a detector scores the sets
    /// perturbed along its gradient, not the shared pass.
    fn input_loss(&self) -> Option<InputLoss<'_>> {
        None
    }
}

/// Hyperparameter values of one detector, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params(pub Vec<(String, f64)>);

impl Params {
    pub fn get(&self, name: &str) -> f64 {
        self.0.iter().find(|(n, _)| n == name).map(|p| p.1).expect("every parameter of a method has a value")
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let text: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        write!(f, "{}", text.join(", "))
    }
}

/// A hyperparameter: its default and OpenOOD's sweep list.
pub struct ParamDef {
    pub name: &'static str,
    pub default: f64,
    pub sweep: &'static [f64],
}

/// Sizes a method's parameters are checked against before any pass.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub dim: usize,
    pub classes: usize,
    pub train_samples: usize,
    /// The network's layers (stages and the feature layer).
    pub layers: usize,
}

/// A detector method: its key in configs, report name, parameters and constructor. A method
/// with an [`perturb::EPS`] parameter perturbs its input and costs extra passes.
pub struct Method {
    pub key: &'static str,
    pub name: &'static str,
    pub params: &'static [ParamDef],
    /// Refuses parameter values that cannot work for these sizes, naming them.
    pub check: fn(&Params, &Dims) -> Result<()>,
    pub build: fn(&Params) -> Box<dyn Detector>,
}

impl Method {
    pub fn perturbs_input(&self) -> bool {
        self.params.iter().any(|p| p.name == perturb::EPS)
    }

    /// The Gram powers of the [`LayerStats`] a setting reads from the shared pass (0: the
    /// channel means only), or `None` if it reads none: a method with a [`POWERS`] parameter
    /// reads that many, one with a [`LAYER`] parameter the means.
    pub fn stats_powers(&self, p: &Params) -> Option<usize> {
        let has = |name: &str| self.params.iter().any(|d| d.name == name);
        if has(POWERS) {
            Some(p.get(POWERS) as usize)
        } else {
            has(LAYER).then_some(0)
        }
    }
}

/// The parameter of a method that reads Gram row sums of powers 1..=P.
pub const POWERS: &str = "powers";
/// The parameter of a method that reads one layer's channel means: an index into the
/// network's layers.
pub const LAYER: &str = "layer";

fn no_check(_: &Params, _: &Dims) -> Result<()> {
    Ok(())
}

/// `value` is within `[lo, hi]`, or an error naming the parameter.
fn check_range(params: &Params, name: &str, lo: f64, hi: f64, integer: bool) -> Result<()> {
    let v = params.get(name);
    if !(lo..=hi).contains(&v) || (integer && v.fract() != 0.0) {
        let kind = if integer { "an integer" } else { "a value" };
        return Err(Error::Input(format!("{name}={v}: expected {kind} in [{lo}, {hi}]")));
    }
    Ok(())
}

const PERCENTILE: fn(&Params, &Dims) -> Result<()> = |p, _| check_range(p, "percentile", 0.0, 100.0, false);

/// Every detector besides NAC-UE, in report order.
pub const METHODS: &[Method] = &[
    Method { key: "msp", name: "MSP", params: &[], check: no_check, build: |_| Box::new(logits::Msp) },
    Method { key: "mls", name: "MaxLogit", params: &[], check: no_check, build: |_| Box::new(logits::MaxLogit) },
    Method {
        key: "ebo",
        name: "Energy",
        params: &[ParamDef { name: "T", default: 1.0, sweep: &[1.0] }],
        check: |p, _| check_range(p, "T", 1e-6, 1e6, false),
        build: |p| Box::new(logits::Energy { t: p.get("T") }),
    },
    Method {
        key: "gen",
        name: "GEN",
        params: &[
            ParamDef { name: "gamma", default: 0.1, sweep: &[0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0] },
            ParamDef { name: "M", default: 100.0, sweep: &[10.0, 50.0, 100.0, 200.0, 500.0, 1000.0] },
        ],
        check: |p, _| check_range(p, "gamma", 1e-6, 1e3, false).and(check_range(p, "M", 1.0, 1e9, true)),
        build: |p| Box::new(logits::Gen { gamma: p.get("gamma"), m: p.get("M") as usize }),
    },
    Method {
        key: "odin",
        name: "ODIN",
        params: &[
            ParamDef { name: "T", default: 1000.0, sweep: &[1.0, 10.0, 100.0, 1000.0] },
            ParamDef { name: perturb::EPS, default: 0.0014, sweep: &[0.0014, 0.0028] },
        ],
        check: |p, _| check_range(p, "T", 1e-6, 1e6, false).and(check_range(p, perturb::EPS, 0.0, 1.0, false)),
        build: |p| Box::new(logits::Odin { t: p.get("T") }),
    },
    Method {
        key: "openmax",
        name: "OpenMax",
        params: &[ParamDef { name: "tail", default: 20.0, sweep: &[20.0] }, ParamDef { name: "alpha", default: 3.0, sweep: &[3.0] }],
        check: |p, d| check_range(p, "tail", 2.0, d.train_samples as f64, true).and(check_range(p, "alpha", 1.0, d.classes as f64, true)),
        build: |p| Box::new(openmax::OpenMax::new(p.get("tail") as usize, p.get("alpha") as usize)),
    },
    Method { key: "gradnorm", name: "GradNorm", params: &[], check: no_check, build: |_| Box::new(logits::GradNorm) },
    Method {
        key: "react",
        name: "ReAct",
        params: &[ParamDef { name: "percentile", default: 90.0, sweep: &[85.0, 90.0, 95.0, 99.0] }],
        check: PERCENTILE,
        build: |p| Box::new(clip::React { percentile: p.get("percentile"), threshold: f64::NAN }),
    },
    Method {
        key: "dice",
        name: "DICE",
        params: &[ParamDef { name: "p", default: 90.0, sweep: &[90.0] }],
        check: |p, _| check_range(p, "p", 0.0, 100.0, false),
        build: |p| Box::new(clip::Dice { p: p.get("p"), masked: Vec::new() }),
    },
    Method {
        key: "ash",
        name: "ASH-B",
        params: &[ParamDef { name: "percentile", default: 90.0, sweep: &[65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0] }],
        check: |p, d| {
            PERCENTILE(p, d)?;
            match clip::ash_keep(d.dim, p.get("percentile")) {
                0 => Err(Error::Input(format!("percentile={} keeps no activation of {}", p.get("percentile"), d.dim))),
                _ => Ok(()),
            }
        },
        build: |p| Box::new(clip::AshB { percentile: p.get("percentile") }),
    },
    Method {
        key: "knn",
        name: "KNN",
        params: &[ParamDef { name: "K", default: 50.0, sweep: &[50.0, 100.0, 200.0, 500.0, 1000.0] }],
        check: |p, d| check_range(p, "K", 1.0, d.train_samples as f64, true),
        build: |p| Box::new(neighbours::Knn::new(p.get("K") as usize)),
    },
    Method {
        key: "vim",
        name: "ViM",
        params: &[ParamDef { name: "dim", default: 256.0, sweep: &[256.0, 1000.0] }],
        check: |p, d| check_range(p, "dim", 1.0, d.dim as f64 - 1.0, true),
        build: |p| Box::new(vim::Vim::new(p.get("dim") as usize)),
    },
    Method { key: "mds", name: "MDS", params: &[], check: no_check, build: |_| Box::new(gaussian::Mds::default()) },
    Method { key: "rmds", name: "RMDS", params: &[], check: no_check, build: |_| Box::new(gaussian::Rmds::default()) },
    Method { key: "she", name: "SHE", params: &[], check: no_check, build: |_| Box::new(gaussian::She::default()) },
    Method { key: "ddu", name: "DDU (class Gaussians)", params: &[], check: no_check, build: |_| Box::new(gaussian::Ddu::default()) },
    Method {
        key: "ddu+ip",
        name: "DDU+ip",
        params: &[ParamDef { name: perturb::EPS, default: 0.0014, sweep: IP_EPS }],
        check: |p, _| check_range(p, perturb::EPS, 0.0, 1.0, false),
        build: |_| Box::new(gaussian::DduIp::default()),
    },
    Method {
        key: "mdsens",
        name: "MDSEns",
        params: &[
            ParamDef { name: LAYER, default: 0.0, sweep: &[0.0] },
            ParamDef { name: perturb::EPS, default: 0.0014, sweep: &[0.0014] },
        ],
        check: |p, d| check_range(p, LAYER, 0.0, d.layers as f64 - 1.0, true).and(check_range(p, perturb::EPS, 0.0, 1.0, false)),
        build: |p| Box::new(gaussian::MdsEnsemble::new(p.get(LAYER) as usize)),
    },
    Method {
        key: "gram",
        name: "Gram",
        params: &[ParamDef { name: POWERS, default: 5.0, sweep: &[5.0] }],
        check: |p, _| check_range(p, POWERS, 1.0, crate::kernels::MAX_GRAM_POWERS as f64, true),
        build: |p| Box::new(gram::Gram::new(p.get(POWERS) as usize)),
    },
    Method {
        key: "kde",
        name: "KDE",
        params: &[ParamDef { name: "bandwidth", default: 0.2, sweep: &[0.05, 0.1, 0.2, 0.5, 1.0] }],
        check: |p, _| check_range(p, "bandwidth", 1e-4, 1e4, false),
        build: |p| Box::new(neighbours::Kde::new(p.get("bandwidth"))),
    },
    Method {
        key: "kde+ip",
        name: "KDE+ip",
        params: &[
            ParamDef { name: "bandwidth", default: 0.2, sweep: &[0.05, 0.1, 0.2, 0.5, 1.0] },
            ParamDef { name: perturb::EPS, default: 0.0014, sweep: IP_EPS },
        ],
        check: |p, _| check_range(p, "bandwidth", 1e-4, 1e4, false).and(check_range(p, perturb::EPS, 0.0, 1.0, false)),
        build: |p| Box::new(neighbours::Kde::with_input_perturbation(p.get("bandwidth"))),
    },
];

/// The "+ip" methods' ε sweep: 0 (no perturbation) and noise magnitudes of Lee et al. (2018)'s
/// list around OpenOOD's MDSEns default 0.0014, cut to four to bound the passes (one forward
/// pass per value on each criterion set).
const IP_EPS: &[f64] = &[0.0, 0.0005, 0.0014, 0.005];

/// A configured detector: `key`, `key:sweep` (OpenOOD's sweep lists) or
/// `key:NAME=V[|V...],...` (values separated by `|` are swept).
#[derive(Clone)]
pub struct DetectorSpec {
    pub method: &'static Method,
    /// Candidate values per parameter, in the method's parameter order.
    pub values: Vec<Vec<f64>>,
}

impl DetectorSpec {
    pub fn parse(text: &str) -> Result<Self> {
        let (key, rest) = text.split_once(':').map_or((text, None), |(k, r)| (k, Some(r)));
        let method = METHODS.iter().find(|m| m.key == key.trim()).ok_or_else(|| {
            let keys: Vec<&str> = METHODS.iter().map(|m| m.key).collect();
            Error::Input(format!("unknown detector `{key}`; expected one of {} (NAC-UE runs always)", keys.join(", ")))
        })?;
        let mut values: Vec<Vec<f64>> = method.params.iter().map(|p| vec![p.default]).collect();
        match rest.map(str::trim) {
            None => {}
            Some("sweep") => values = method.params.iter().map(|p| p.sweep.to_vec()).collect(),
            Some(list) => {
                for item in list.split(',') {
                    let (name, vals) = item.split_once('=').ok_or_else(|| {
                        Error::Input(format!("detector `{text}`: `{item}` is not NAME=VALUE (or `{key}:sweep` for OpenOOD's lists)"))
                    })?;
                    let at = method.params.iter().position(|p| p.name == name.trim()).ok_or_else(|| {
                        let names: Vec<&str> = method.params.iter().map(|p| p.name).collect();
                        Error::Input(format!(
                            "detector `{text}`: {key} has no parameter `{name}` (it has: {})",
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ))
                    })?;
                    values[at] = vals
                        .split('|')
                        .map(|v| {
                            v.trim()
                                .parse::<f64>()
                                .ok()
                                .filter(|v| v.is_finite())
                                .ok_or_else(|| Error::Input(format!("detector `{text}`: `{v}` is not a finite number")))
                        })
                        .collect::<Result<_>>()?;
                }
            }
        }
        Ok(DetectorSpec { method, values })
    }

    /// Every combination of the candidate values (the last parameter fastest).
    fn combinations(&self) -> Vec<Params> {
        let mut out: Vec<Vec<(String, f64)>> = vec![Vec::new()];
        for (def, vals) in self.method.params.iter().zip(&self.values) {
            out = out.into_iter().flat_map(|c| vals.iter().map(move |&v| [c.clone(), vec![(def.name.to_string(), v)]].concat())).collect();
        }
        out.into_iter().map(Params).collect()
    }

    /// The candidates that fit these sizes. Values given by hand must all fit; values from
    /// OpenOOD's lists that cannot (KNN's K over the profile size, ViM's dim over the feature
    /// dimension) are dropped, and an error names the method if none is left.
    pub fn candidates(&self, dims: &Dims, text: &str) -> Result<Vec<Params>> {
        let swept_by_default = self.method.params.iter().zip(&self.values).all(|(d, v)| v == d.sweep);
        let mut out = Vec::new();
        for p in self.combinations() {
            match (self.method.check)(&p, dims) {
                Ok(()) => out.push(p),
                Err(e) if !swept_by_default => return Err(Error::Input(format!("detector `{text}`: {e}"))),
                Err(_) => {}
            }
        }
        if out.is_empty() {
            return Err(Error::Input(format!("detector `{text}`: no value of OpenOOD's sweep fits {dims:?}; give values by hand")));
        }
        Ok(out)
    }
}

/// A fitted detector and how it was chosen.
pub struct Fitted {
    pub detector: Box<dyn Detector>,
    pub params: Params,
    /// Every candidate with its validation AUROC, when there were several.
    pub trials: Vec<Trial<Params>>,
    pub fit_seconds: f64,
}

/// `method` built with `p` and fitted.
pub(crate) fn fit_one(cx: &Context, method: &Method, p: &Params, train: &PassSet, id_val: Option<&PassSet>) -> Result<Box<dyn Detector>> {
    let mut d = (method.build)(p);
    d.fit(cx, train, id_val).map_err(|e| Error::Input(format!("{} ({p}): fitting: {e}", method.name)))?;
    Ok(d)
}

/// Fits `method` with `candidates`; with more than one, each is fitted and scored on
/// (`criterion.0`, `criterion.1`) = (ID val, OOD val or outliers) and the first with the highest
/// AUROC is kept ([`metrics::select_by_auroc`]).
pub fn fit_and_select(
    cx: &Context,
    method: &Method,
    candidates: Vec<Params>,
    train: &PassSet,
    id_val: Option<&PassSet>,
    criterion: Option<(&PassSet, &PassSet)>,
) -> Result<Fitted> {
    let started = std::time::Instant::now();
    let fit = |p: &Params| fit_one(cx, method, p, train, id_val);
    if candidates.len() == 1 {
        let params = candidates.into_iter().next().expect("one candidate");
        return Ok(Fitted { detector: fit(&params)?, params, trials: Vec::new(), fit_seconds: started.elapsed().as_secs_f64() });
    }
    let (id, ood) = criterion.ok_or_else(|| {
        Error::Input(format!(
            "{} has {} candidate settings but no search criterion: add [search] ood_val or id_only",
            method.name,
            candidates.len()
        ))
    })?;
    let (best, trials) = metrics::select_by_auroc(candidates, |p| {
        let d = fit(p)?;
        Ok((d.score(cx, id)?, d.score(cx, ood)?))
    })?;
    let params = trials[best].params.clone();
    Ok(Fitted { detector: fit(&params)?, params, trials, fit_seconds: started.elapsed().as_secs_f64() })
}
