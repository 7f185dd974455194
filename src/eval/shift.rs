//! `nac shift CONFIG.toml`: NAC-UE, MSP and energy under distribution shift. The clean ID test
//! set against corrupted copies of it (the CIFAR-10-C corruptions × severities, generated with
//! `corrupt:` or read from the released files with `cifar10c:`), natural-shift sets, and pairs
//! of corruptions combined in both orders (`then:`). Every set is pooled once per model and
//! scored right away (one set's pairs on the GPU at a time); NAC's parameters are the config's
//! or those an `nac eval` search chose, never tuned on a shifted set. Example
//! (`eval/fmnist-shift.toml` runs the Fashion-MNIST study):
//!
//! ```toml
//! preprocessing = "fmnist"
//! batch = 128                       # optional
//! # params_from = "out/fmnist/results.json"      # the parameters an `nac eval` search chose
//! # params_method = "NAC-UE (ID-only selection)" # which of its methods (this one by default)
//! [[models]]
//! path = "weights/fmnist_resnet18_32x32.safetensors"
//! [profile]                         # as in `nac eval`
//! data = "idx:data/fashion-mnist/train-images-idx3-ubyte.gz[0:55000]"
//! samples = 1000
//! [nac]                             # as in `nac eval`: layers, preset, params
//! [shift]
//! clean = "idx:data/fashion-mnist/t10k-images-idx3-ubyte.gz[0:1000]"  # the clean ID test set
//! corruptions = ["cifar10-c"]       # the 15 (default), or names; [] for none
//! severities = [1, 2, 3, 4, 5]      # default all
//! # released = "data/CIFAR-10-C"    # read DIR/NAME.npy instead of generating from `clean`
//! # released_slice = "[0:1000]"     # rows of each released severity (match `clean`)
//! pairs = [["gaussian_noise:3", "contrast:3"]]   # each run as A then B and as B then A
//! histograms = ["contrast:5"]       # sets drawn against clean (default: three of the sweep)
//! attacks = ["fgsm:2/255", "pgd:8/255:10", "apgd:4/255"]  # each on `clean`, per model
//! [[shift.natural]]                 # natural shifts: any labelled dataset spec
//! name = "cifar10.1"
//! data = "npy:data/cifar10.1_v6_data.npy:data/cifar10.1_v6_labels.npy"
//! ```
//!
//! Set names: `NAME:SEVERITY` for the sweep, `A:S>B:T` for A then B, the given name for a
//! natural shift, the attack as written (`pgd:8/255:10`) for an attack on the clean set, made
//! against each model in turn (an attack composes with corruptions in any spec, e.g. a natural
//! set `corrupt:fog:3:pgd:8/255:10:CLEAN`). Correlations and overall means are over the shifted
//! sets (clean excluded). With several models, the report puts them side by side on every set
//! (standard against robust) and draws each model's pictures in `pictures/<model>/`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{EvalConfig, Group, IdSets, ModelEntry, NacSettings, OodSet, ProfileSet};
use super::run::{self, EvalOptions, EvalReport, Sets};
use super::{metrics, plots};
use crate::data::{Corruption, Dataset, Transform};
use crate::engine::Engine;
use crate::error::{check_writable, write_atomic, Error, Result};
use crate::model;
use crate::nac::{pearson, spearman, LayerParams, PooledStates, Predicted, Profile};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub preprocessing: String,
    #[serde(default = "default_batch")]
    pub batch: usize,
    pub models: Vec<ModelEntry>,
    pub profile: ProfileSet,
    #[serde(default)]
    pub nac: NacSettings,
    /// `results.json` of an `nac eval` run: each model takes the parameters chosen for it there
    /// (matched by fingerprint).
    pub params_from: Option<PathBuf>,
    /// The method of `params_from` whose parameters are used.
    pub params_method: Option<String>,
    pub shift: ShiftSettings,
    #[serde(default = "yes")]
    pub pictures: bool,
}

fn default_batch() -> usize {
    64
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftSettings {
    pub clean: String,
    #[serde(default = "cifar10_c")]
    pub corruptions: Vec<String>,
    #[serde(default = "all_severities")]
    pub severities: Vec<u8>,
    pub released: Option<String>,
    pub released_slice: Option<String>,
    #[serde(default)]
    pub pairs: Vec<[String; 2]>,
    #[serde(default)]
    pub histograms: Vec<String>,
    #[serde(default)]
    pub natural: Vec<NaturalSet>,
    /// Attacks on `clean` (a spec's attack prefix: `fgsm:EPS`, `pgd:EPS:STEPS[:RESTARTS]`,
    /// `apgd:EPS[:ITERATIONS[:RESTARTS]]`).
    #[serde(default)]
    pub attacks: Vec<String>,
}

fn cifar10_c() -> Vec<String> {
    vec![CIFAR10_C.into()]
}

fn all_severities() -> Vec<u8> {
    vec![1, 2, 3, 4, 5]
}

const CIFAR10_C: &str = "cifar10-c";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaturalSet {
    pub name: String,
    pub data: String,
}

/// What a shifted set is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    Corruption {
        corruption: String,
        severity: u8,
    },
    Natural,
    /// `first` applied, then `second` (each `NAME:SEVERITY`).
    Pair {
        first: String,
        second: String,
    },
    /// An attack on the clean set against the model (as written, e.g. `pgd:8/255:10`), with
    /// its radius in pixel units.
    Attack {
        attack: String,
        epsilon: f64,
    },
}

/// One shifted set as the config asks for it.
#[derive(Clone, Debug)]
struct Planned {
    name: String,
    spec: String,
    kind: SetKind,
}

impl ShiftConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        ShiftConfig::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` (the file's name) starts every error.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: ShiftConfig = toml::from_str(text).map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        config.validate().map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Checks the config from its text alone (no file opened): the eval-shaped parts as
    /// `nac eval` checks them, then corruption names, severities, pairs, set names and the
    /// histogram choices. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        let plan = self.plan()?;
        self.eval_config(&plan).validate()?;
        if self.params_method.is_some() && self.params_from.is_none() {
            return Err(Error::Input("params_method needs params_from (the results.json of an `nac eval` run)".into()));
        }
        if self.params_from.is_some() && (self.nac.preset.is_some() || !self.nac.params.is_empty()) {
            return Err(Error::Input("params_from gives the parameters: leave nac.preset and nac.params out".into()));
        }
        Ok(())
    }

    /// The shifted sets, named and specified, in report order: the sweep (corruption-major),
    /// the natural sets, then each pair in both orders.
    fn plan(&self) -> Result<Vec<Planned>> {
        let s = &self.shift;
        let mut corruptions = Vec::new();
        for (i, name) in s.corruptions.iter().enumerate() {
            if name == CIFAR10_C {
                corruptions.extend_from_slice(Corruption::cifar10_c());
            } else {
                corruptions.push(Corruption::parse(name).map_err(|e| Error::Input(format!("shift.corruptions[{i}]: {e}")))?);
            }
        }
        if let Some(i) = s.severities.iter().position(|v| !(1..=5).contains(v)) {
            return Err(Error::Input(format!("shift.severities[{i}] is {}: expected 1 to 5", s.severities[i])));
        }
        if s.severities.is_empty() && !corruptions.is_empty() {
            return Err(Error::Input("shift.severities is empty: give at least one of 1-5".into()));
        }
        if s.released_slice.is_some() && s.released.is_none() {
            return Err(Error::Input("shift.released_slice needs shift.released (the CIFAR-10-C folder)".into()));
        }
        if let Some(slice) = &s.released_slice {
            if !(slice.starts_with('[') && slice.ends_with(']')) {
                return Err(Error::Input(format!("shift.released_slice `{slice}`: expected a slice such as [0:1000]")));
            }
        }
        Dataset::check_spec(&s.clean).map_err(|e| Error::Input(format!("shift.clean: {e}")))?;
        for (i, n) in s.natural.iter().enumerate() {
            Dataset::check_spec(&n.data).map_err(|e| Error::Input(format!("shift.natural[{i}].data (`{}`): {e}", n.name)))?;
        }
        let mut plan = Vec::new();
        let mut seen = BTreeSet::new();
        for &c in &corruptions {
            for &severity in &s.severities {
                let spec = match &s.released {
                    Some(dir) => format!("cifar10c:{dir}:{}:{severity}{}", c.name(), s.released_slice.as_deref().unwrap_or("")),
                    None => format!("corrupt:{}:{severity}:{}", c.name(), s.clean),
                };
                plan.push(Planned {
                    name: format!("{}:{severity}", c.name()),
                    spec,
                    kind: SetKind::Corruption { corruption: c.name().into(), severity },
                });
            }
        }
        for (i, n) in s.natural.iter().enumerate() {
            if n.name.trim().is_empty() {
                return Err(Error::Input(format!("shift.natural[{i}].name is empty")));
            }
            plan.push(Planned { name: n.name.clone(), spec: n.data.clone(), kind: SetKind::Natural });
        }
        for (i, attack) in s.attacks.iter().enumerate() {
            let spec = format!("{}:{}", attack.trim(), s.clean);
            let bad = |e: Error| Error::Input(format!("shift.attacks[{i}] `{attack}`: {e}"));
            Dataset::check_spec(&spec).map_err(bad)?;
            let epsilon = Dataset::attack_of(&spec).map_err(bad)?.ok_or_else(|| {
                bad(Error::Input("not an attack: expected fgsm:EPS, pgd:EPS:STEPS[:RESTARTS] or apgd:EPS[:ITERATIONS[:RESTARTS]]".into()))
            })?;
            plan.push(Planned {
                name: attack.trim().to_string(),
                spec,
                kind: SetKind::Attack { attack: attack.trim().to_string(), epsilon: epsilon.epsilon as f64 },
            });
        }
        for (i, [a, b]) in s.pairs.iter().enumerate() {
            let step = |text: &str| -> Result<(Corruption, u8)> {
                let bad = |why: String| Error::Input(format!("shift.pairs[{i}]: `{text}`: {why}; expected NAME:SEVERITY"));
                let (name, severity) = text.split_once(':').ok_or_else(|| bad("no `:`".into()))?;
                let c = Corruption::parse(name).map_err(|e| bad(e.to_string()))?;
                let severity =
                    severity.trim().parse::<u8>().ok().filter(|v| (1..=5).contains(v)).ok_or_else(|| bad("severity not 1-5".into()))?;
                Ok((c, severity))
            };
            let (a, b) = (step(a)?, step(b)?);
            if a == b {
                return Err(Error::Input(format!(
                    "shift.pairs[{i}]: both steps are {}:{}; a pair needs two different steps",
                    a.0.name(),
                    a.1
                )));
            }
            for (x, y) in [(a, b), (b, a)] {
                let (first, second) = (format!("{}:{}", x.0.name(), x.1), format!("{}:{}", y.0.name(), y.1));
                plan.push(Planned {
                    name: format!("{first}>{second}"),
                    spec: format!("then:{first}:{second}:{}", s.clean),
                    kind: SetKind::Pair { first, second },
                });
            }
        }
        for p in &plan {
            if !seen.insert(p.name.clone()) {
                return Err(Error::Input(format!(
                    "shift: the set `{}` is asked for twice (names are unique: NAME:SEVERITY, A:S>B:T, natural names)",
                    p.name
                )));
            }
        }
        if plan.is_empty() {
            return Err(Error::Input("shift: no shifted sets: give corruptions, natural sets, attacks or pairs".into()));
        }
        for (i, h) in s.histograms.iter().enumerate() {
            if !seen.contains(h) {
                return Err(Error::Input(format!("shift.histograms[{i}]: `{h}` is not one of the shifted sets")));
            }
        }
        if self.pictures && self.models.len() > 1 {
            let mut folders = BTreeSet::new();
            for (i, m) in self.models.iter().enumerate() {
                if !folders.insert(model_slug(&m.path)) {
                    return Err(Error::Input(format!(
                        "models[{i}] ({}): its pictures folder `pictures/{}` is another model's too (rename the file)",
                        m.path.display(),
                        model_slug(&m.path)
                    )));
                }
            }
        }
        if self.pictures {
            let mut files = BTreeSet::new();
            for p in &plan {
                if !files.insert(run::slug(&p.name)) {
                    return Err(Error::Input(format!("shift: set `{}` would share its picture file name with another set", p.name)));
                }
            }
        }
        Ok(plan)
    }

    /// The `nac eval` config of the same models, profile and parameters with the clean set as
    /// ID test and every shifted set as an OOD set: what the checks, the set opening and the
    /// model preparation of `nac eval` take (and what the equality test runs).
    pub fn as_eval_config(&self) -> Result<EvalConfig> {
        Ok(self.eval_config(&self.plan()?))
    }

    fn eval_config(&self, plan: &[Planned]) -> EvalConfig {
        EvalConfig {
            preprocessing: self.preprocessing.clone(),
            batch: self.batch,
            models: self.models.clone(),
            profile: self.profile.clone(),
            id: IdSets { test: self.shift.clean.clone(), val: None, sanity: None },
            ood: plan.iter().map(|p| OodSet { name: p.name.clone(), group: Group::Near, data: p.spec.clone() }).collect(),
            nac: self.nac.clone(),
            search: None,
            // MSP and energy, which the suite reports beside NAC-UE.
            detectors: vec!["msp".into(), "ebo".into()],
            pictures: false,
        }
    }
}

/// Everything `results.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShiftReport {
    pub preprocessing: String,
    pub models: Vec<ModelShift>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelShift {
    pub path: PathBuf,
    pub arch: String,
    pub fingerprint: String,
    pub params: Vec<LayerParams>,
    /// Where the parameters come from (the preset, or a method of an `nac eval` run).
    pub params_source: String,
    pub clean: CleanSet,
    pub sets: Vec<ShiftSet>,
    /// Per corruption of the sweep: means over its severities.
    pub corruptions: Vec<Aggregate>,
    /// Means over every corruption set of the sweep.
    pub sweep_mean: Option<Aggregate>,
    /// Correlation of mean NAC-UE score with accuracy across the shifted sets with labels.
    pub correlation: Option<Correlation>,
    pub pairs: Vec<PairOrder>,
    pub pooling_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CleanSet {
    pub spec: String,
    pub samples: usize,
    pub accuracy: Option<f64>,
    pub mean_nac: f64,
    pub mean_msp: f64,
    pub mean_energy: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShiftSet {
    pub name: String,
    pub spec: String,
    pub kind: SetKind,
    pub samples: usize,
    pub accuracy: Option<f64>,
    pub nac: Shifted,
    pub msp: Shifted,
    pub energy: Shifted,
}

/// One score on one shifted set against clean (clean = the positive, in-distribution class).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shifted {
    pub mean: f64,
    /// `mean` minus the clean set's mean.
    pub delta: f64,
    pub auroc: f64,
    pub fpr95: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Aggregate {
    pub name: String,
    pub sets: usize,
    pub accuracy: Option<f64>,
    pub nac: Shifted,
    pub msp: Shifted,
    pub energy: Shifted,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Correlation {
    pub sets: usize,
    pub pearson: Option<f64>,
    pub spearman: Option<f64>,
    /// Least-squares line mean NAC = slope · accuracy + intercept.
    pub slope: f64,
    pub intercept: f64,
}

/// A pair in both orders: `|A→B − B→A|` of the mean NAC-UE score and of the accuracy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairOrder {
    pub a: String,
    pub b: String,
    pub score_difference: f64,
    pub accuracy_difference: Option<f64>,
}

/// Runs the suite and writes `results.{json,csv,md}` (and `pictures/`) under `options.out`.
/// Everything that can be checked from the config, the models, the sets' headers and the
/// `params_from` report is checked before the first network pass.
pub fn run(engine: &mut Engine, config: &ShiftConfig, options: &EvalOptions) -> Result<ShiftReport> {
    let started = Instant::now();
    let plan = config.plan()?;
    let eval = config.eval_config(&plan);
    eval.validate()?;
    let transform = Transform::parse(&config.preprocessing)?;
    std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
    check_writable(&options.out.join("results.json"))?;
    let chosen = config.params_from.as_deref().map(read_params_report).transpose()?;
    let sets = Sets::open(&eval)?;
    let prepared = config
        .models
        .iter()
        .map(|entry| {
            let arch = entry.arch.as_deref().map(str::parse).transpose()?;
            let network = model::load(&entry.path, arch)?;
            let fail = |e: Error| Error::Input(format!("model {}: {e}", entry.path.display()));
            let mut prepared = run::prepare(engine, network, &eval, &sets, &transform).map_err(fail)?;
            let source = match &chosen {
                Some(report) => {
                    let (params, source) = chosen_params(report, config, &prepared.network.fingerprint()).map_err(fail)?;
                    for p in &params {
                        prepared.network.layer_index(&p.layer).map_err(|e| fail(Error::Input(format!("params_from: {e}"))))?;
                        if !prepared.pooled_layers.contains(&p.layer) {
                            prepared.pooled_layers.push(p.layer.clone());
                        }
                    }
                    prepared.defaults = params;
                    source
                }
                None if config.nac.params.is_empty() => format!("preset `{}`", prepared.preset),
                None => format!("preset `{}` with nac.params {}", prepared.preset, config.nac.params.join(", ")),
            };
            check_shift_labels(&sets, &plan, prepared.network.num_classes()).map_err(fail)?;
            Ok((prepared, source))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut models = Vec::with_capacity(prepared.len());
    let several = config.models.len() > 1;
    let mut all_scores = Vec::with_capacity(config.models.len());
    for ((prepared, source), entry) in prepared.into_iter().zip(&config.models) {
        let model = evaluate_model(engine, prepared, source, &sets, &plan, &entry.path, config, &transform, options)?;
        if config.pictures {
            let dir = if several { options.out.join("pictures").join(model_slug(&entry.path)) } else { options.out.join("pictures") };
            draw_pictures(&dir, &model.0, &model.1, config)?;
        }
        models.push(model.0);
        all_scores.push(model.1);
    }
    let report = ShiftReport { preprocessing: transform.describe(), models, seconds: started.elapsed().as_secs_f64() };
    if config.pictures && several {
        draw_comparison(&options.out.join("pictures"), &report, &all_scores)?;
    }
    write_all(&report, &options.out)?;
    Ok(report)
}

/// A model's folder name under `pictures/`: its file stem.
fn model_slug(path: &Path) -> String {
    run::slug(&path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned()))
}

/// The `results.json` of an `nac eval` run.
fn read_params_report(path: &Path) -> Result<EvalReport> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Input(format!("params_from {}: not an `nac eval` results.json: {e}", path.display())))
}

/// The parameters `report` gives the model with `fingerprint`, and a note of where from.
fn chosen_params(report: &EvalReport, config: &ShiftConfig, fingerprint: &str) -> Result<(Vec<LayerParams>, String)> {
    let from = config.params_from.as_deref().unwrap_or(Path::new("")).display();
    let model = report.models.iter().find(|m| m.fingerprint == fingerprint).ok_or_else(|| {
        let known: Vec<&str> = report.models.iter().map(|m| m.fingerprint.as_str()).collect();
        Error::Input(format!("params_from {from}: no model with fingerprint {fingerprint} (it has {})", known.join(", ")))
    })?;
    let wanted = config.params_method.as_deref().unwrap_or(run::ID_ONLY);
    let method = model.methods.iter().find(|m| m.name == wanted && m.params.is_some()).ok_or_else(|| {
        let known: Vec<&str> = model.methods.iter().filter(|m| m.params.is_some()).map(|m| m.name.as_str()).collect();
        Error::Input(format!("params_from {from}: no NAC method `{wanted}` (it has {}); set params_method", known.join(", ")))
    })?;
    Ok((method.params.clone().expect("filtered"), format!("`{wanted}` of {from}")))
}

/// Every shifted set's labels (when it has them) must name classes of the model.
fn check_shift_labels(sets: &Sets, plan: &[Planned], classes: usize) -> Result<()> {
    for (set, p) in sets.ood.iter().zip(plan) {
        if let Some((i, label)) = set.labels().and_then(|l| l.iter().position(|&c| c >= classes).map(|i| (i, l[i]))) {
            return Err(Error::Input(format!(
                "shifted set `{}`: {} has label {label}, but the model has {classes} classes",
                p.name,
                set.locate(i)
            )));
        }
    }
    Ok(())
}

/// Per-sample scores of one set: NAC-UE and the two baselines from the same pass.
struct SetScores {
    nac: Vec<f32>,
    predicted: Predicted,
    accuracy: Option<f64>,
}

fn mean(values: &[f32]) -> f64 {
    values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64
}

fn shifted(clean: &[f32], set: &[f32]) -> Result<Shifted> {
    let m = metrics::ood_metrics(clean, set)?;
    Ok(Shifted { mean: mean(set), delta: mean(set) - mean(clean), auroc: m.auroc, fpr95: m.fpr95 })
}

#[allow(clippy::too_many_arguments)]
fn evaluate_model(
    engine: &mut Engine,
    prepared: run::Prepared,
    params_source: String,
    sets: &Sets,
    plan: &[Planned],
    path: &Path,
    config: &ShiftConfig,
    transform: &Transform,
    options: &EvalOptions,
) -> Result<(ModelShift, Vec<SetScores>)> {
    let run::Prepared { network, defaults: params, pooled_layers, profile: profile_set, .. } = prepared;
    let model = &mut engine.upload(network);
    let preprocessing = transform.describe();
    let layers: Vec<&str> = pooled_layers.iter().map(String::as_str).collect();
    let mut pooling = 0.0;
    let mut pooled = |engine: &mut Engine, model: &mut crate::engine::Model, what: &str, set: &Dataset| -> Result<PooledStates> {
        let t = Instant::now();
        let p = run::pool_set(engine, model, what, set, set.labels().is_some(), transform, (&layers, None), config.batch, options);
        pooling += t.elapsed().as_secs_f64();
        p
    };
    let profile_pool = pooled(engine, model, "profile", &profile_set)?;
    let mut profile = Profile::new(engine, &model.network, &params, &preprocessing)?;
    profile.add_pooled(engine, &profile_pool)?;
    drop(profile_pool);
    // Each set is scored as soon as it is pooled, and its pairs dropped.
    let mut score = |engine: &mut Engine, model: &mut crate::engine::Model, what: &str, set: &Dataset| -> Result<SetScores> {
        let pool = pooled(engine, model, what, set)?;
        let nac = profile.score_pooled(engine, &pool).map_err(|e| Error::Input(format!("NAC-UE on the {what} set: {e}")))?.score;
        let predicted = pool.predictions();
        let accuracy = set.labels().map(|labels| metrics::accuracy(&predicted.class, labels));
        Ok(SetScores { nac, predicted, accuracy })
    };
    let clean = score(engine, model, "clean", &sets.id_test)?;
    let mut scores = Vec::with_capacity(plan.len());
    for (p, set) in plan.iter().zip(&sets.ood) {
        scores.push(score(engine, model, &p.name, set)?);
    }
    let mut shift_sets = Vec::with_capacity(plan.len());
    for ((p, set), s) in plan.iter().zip(&sets.ood).zip(&scores) {
        let fail = |e: Error| Error::Input(format!("set `{}`: {e}", p.name));
        shift_sets.push(ShiftSet {
            name: p.name.clone(),
            spec: set.spec().to_string(),
            kind: p.kind.clone(),
            samples: set.len(),
            accuracy: s.accuracy,
            nac: shifted(&clean.nac, &s.nac).map_err(fail)?,
            msp: shifted(&clean.predicted.max_softmax, &s.predicted.max_softmax).map_err(fail)?,
            energy: shifted(&clean.predicted.energy, &s.predicted.energy).map_err(fail)?,
        });
    }
    let corruptions = aggregate_corruptions(&shift_sets);
    let sweep: Vec<&ShiftSet> = shift_sets.iter().filter(|s| matches!(s.kind, SetKind::Corruption { .. })).collect();
    let report = ModelShift {
        path: path.to_path_buf(),
        arch: model.network.spec.to_string(),
        fingerprint: model.fingerprint().to_string(),
        params,
        params_source,
        clean: CleanSet {
            spec: sets.id_test.spec().to_string(),
            samples: sets.id_test.len(),
            accuracy: clean.accuracy,
            mean_nac: mean(&clean.nac),
            mean_msp: mean(&clean.predicted.max_softmax),
            mean_energy: mean(&clean.predicted.energy),
        },
        sweep_mean: (!sweep.is_empty()).then(|| aggregate("sweep", &sweep)),
        correlation: correlation(&shift_sets),
        pairs: pair_orders(&shift_sets),
        corruptions,
        sets: shift_sets,
        pooling_seconds: pooling,
    };
    let mut all = vec![clean];
    all.extend(scores);
    Ok((report, all))
}

/// Means over `sets` of every number.
fn aggregate(name: &str, sets: &[&ShiftSet]) -> Aggregate {
    let n = sets.len() as f64;
    let avg = |pick: fn(&ShiftSet) -> &Shifted| Shifted {
        mean: sets.iter().map(|s| pick(s).mean).sum::<f64>() / n,
        delta: sets.iter().map(|s| pick(s).delta).sum::<f64>() / n,
        auroc: sets.iter().map(|s| pick(s).auroc).sum::<f64>() / n,
        fpr95: sets.iter().map(|s| pick(s).fpr95).sum::<f64>() / n,
    };
    let accuracies: Vec<f64> = sets.iter().filter_map(|s| s.accuracy).collect();
    Aggregate {
        name: name.into(),
        sets: sets.len(),
        accuracy: (accuracies.len() == sets.len()).then(|| accuracies.iter().sum::<f64>() / n),
        nac: avg(|s| &s.nac),
        msp: avg(|s| &s.msp),
        energy: avg(|s| &s.energy),
    }
}

/// Per corruption of the sweep (in sweep order), the means over its severities.
fn aggregate_corruptions(sets: &[ShiftSet]) -> Vec<Aggregate> {
    let mut names: Vec<&str> = Vec::new();
    for s in sets {
        if let SetKind::Corruption { corruption, .. } = &s.kind {
            if !names.contains(&corruption.as_str()) {
                names.push(corruption);
            }
        }
    }
    names
        .iter()
        .map(|name| {
            let members: Vec<&ShiftSet> =
                sets.iter().filter(|s| matches!(&s.kind, SetKind::Corruption { corruption, .. } if corruption == name)).collect();
            aggregate(name, &members)
        })
        .collect()
}

fn correlation(sets: &[ShiftSet]) -> Option<Correlation> {
    let (acc, nac): (Vec<f64>, Vec<f64>) = sets.iter().filter_map(|s| s.accuracy.map(|a| (a, s.nac.mean))).unzip();
    if acc.len() < 2 {
        return None;
    }
    let (slope, intercept) = line_fit(&acc, &nac);
    Some(Correlation { sets: acc.len(), pearson: pearson(&acc, &nac), spearman: spearman(&acc, &nac), slope, intercept })
}

/// Least-squares `y = slope · x + intercept` (slope 0 through the mean when x is constant).
fn line_fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxx: f64 = x.iter().map(|v| (v - mx).powi(2)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (slope, my - slope * mx)
}

fn pair_orders(sets: &[ShiftSet]) -> Vec<PairOrder> {
    let mut out = Vec::new();
    for s in sets {
        let SetKind::Pair { first, second } = &s.kind else { continue };
        let reverse = sets.iter().find(|r| r.kind == SetKind::Pair { first: second.clone(), second: first.clone() });
        // Each pair once, from the order the config wrote first.
        if let Some(r) = reverse.filter(|_| !out.iter().any(|p: &PairOrder| &p.a == second && &p.b == first)) {
            out.push(PairOrder {
                a: first.clone(),
                b: second.clone(),
                score_difference: (s.nac.mean - r.nac.mean).abs(),
                accuracy_difference: s.accuracy.zip(r.accuracy).map(|(x, y)| (x - y).abs()),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// report files

pub fn write_all(report: &ShiftReport, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Input(format!("serialising the report: {e}")))?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    write_atomic(&dir.join("results.csv"), csv(report).as_bytes())?;
    write_atomic(&dir.join("results.md"), markdown(report).as_bytes())
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{:.2}", 100.0 * v))
}

/// One line per (model, set), clean first; fractions ×100, means and deltas as they are.
pub fn csv(report: &ShiftReport) -> String {
    let mut out = String::from(
        "model,set,kind,samples,acc,nac_mean,nac_delta,nac_auroc,nac_fpr95,msp_mean,msp_delta,msp_auroc,msp_fpr95,energy_mean,energy_delta,energy_auroc,energy_fpr95\n",
    );
    for m in &report.models {
        let c = &m.clean;
        let _ = writeln!(
            out,
            "{},clean,clean,{},{},{:.6},0,,,{:.6},0,,,{:.6},0,,",
            m.path.display(),
            c.samples,
            pct(c.accuracy),
            c.mean_nac,
            c.mean_msp,
            c.mean_energy
        );
        for s in &m.sets {
            let kind = match s.kind {
                SetKind::Corruption { .. } => "corruption",
                SetKind::Natural => "natural",
                SetKind::Pair { .. } => "pair",
                SetKind::Attack { .. } => "attack",
            };
            let cells = |x: &Shifted| format!("{:.6},{:.6},{:.4},{:.4}", x.mean, x.delta, 100.0 * x.auroc, 100.0 * x.fpr95);
            let _ = writeln!(
                out,
                "{},{},{kind},{},{},{},{},{}",
                m.path.display(),
                s.name,
                s.samples,
                pct(s.accuracy),
                cells(&s.nac),
                cells(&s.msp),
                cells(&s.energy)
            );
        }
    }
    out
}

/// Per model: the sweep as corruption × severity tables (AUROC, accuracy), per-corruption
/// means, every set, the pairs' order differences and the correlation.
pub fn markdown(report: &ShiftReport) -> String {
    let mut out = String::from("# NAC under distribution shift\n\n");
    let _ = writeln!(out, "- preprocessing `{}`; {:.1} s in all", report.preprocessing, report.seconds);
    if report.models.len() > 1 {
        out.push_str(&side_by_side(report));
    }
    for m in &report.models {
        let _ = writeln!(out, "\n## `{}` ({}, fingerprint {})\n", m.path.display(), m.arch, m.fingerprint);
        let params: Vec<String> = m.params.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(out, "- NAC-UE parameters (O/M/α) {} from {}", params.join(", "), m.params_source);
        let _ = writeln!(
            out,
            "- clean `{}`: {} samples, accuracy {}, mean NAC-UE {:.4}; pooling {:.1} s",
            m.clean.spec,
            m.clean.samples,
            pct(m.clean.accuracy),
            m.clean.mean_nac,
            m.pooling_seconds
        );
        if let Some(c) = &m.correlation {
            let r = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
            let _ = writeln!(
                out,
                "- mean NAC-UE against accuracy over {} shifted sets: Pearson {}, Spearman {}",
                c.sets,
                r(c.pearson),
                r(c.spearman)
            );
        }
        out.push_str(&sweep_tables(m));
        let _ = writeln!(out, "\n### Every set (AUROC, FPR@95 and accuracy ×100; clean = ID)\n");
        out.push_str("| set | ACC | NAC mean | NAC Δ | NAC AUROC | NAC FPR@95 | MSP AUROC | MSP FPR@95 | Energy AUROC | Energy FPR@95 |\n|---|---|---|---|---|---|---|---|---|---|\n");
        let aggregates = m.corruptions.iter().map(|a| (format!("**{} (mean)**", a.name), a));
        let rows: Vec<(String, Option<f64>, &Shifted, &Shifted, &Shifted)> = m
            .sets
            .iter()
            .map(|s| (s.name.clone(), s.accuracy, &s.nac, &s.msp, &s.energy))
            .chain(
                aggregates
                    .chain(m.sweep_mean.iter().map(|a| ("**sweep (mean)**".to_string(), a)))
                    .map(|(n, a)| (n, a.accuracy, &a.nac, &a.msp, &a.energy)),
            )
            .collect();
        for (name, acc, nac, msp, energy) in rows {
            let _ = writeln!(
                out,
                "| {name} | {} | {:.4} | {:+.4} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                pct(acc),
                nac.mean,
                nac.delta,
                100.0 * nac.auroc,
                100.0 * nac.fpr95,
                100.0 * msp.auroc,
                100.0 * msp.fpr95,
                100.0 * energy.auroc,
                100.0 * energy.fpr95
            );
        }
        if !m.pairs.is_empty() {
            out.push_str(
                "\n### Order of combined perturbations: |A→B − B→A|\n\n| A | B | mean NAC-UE | accuracy ×100 |\n|---|---|---|---|\n",
            );
            for p in &m.pairs {
                let _ = writeln!(out, "| {} | {} | {:.2e} | {} |", p.a, p.b, p.score_difference, pct(p.accuracy_difference));
            }
        }
    }
    out
}

/// Every model on every set: accuracy, the mean NAC-UE score's change from clean and the
/// AUROC of clean against the set (×100), one column group per model.
fn side_by_side(report: &ShiftReport) -> String {
    let names: Vec<String> = report
        .models
        .iter()
        .map(|m| m.path.file_stem().map_or_else(|| m.path.display().to_string(), |s| s.to_string_lossy().into()))
        .collect();
    let mut out = String::from("\n## Models side by side (accuracy, NAC-UE Δ mean and AUROC clean vs set, ×100 but Δ)\n\n| set |");
    for n in &names {
        let _ = write!(out, " {n} ACC | {n} NAC Δ | {n} NAC AUROC | {n} MSP AUROC |");
    }
    out.push_str("\n|---|");
    out.push_str(&"---|---|---|---|".repeat(names.len()));
    out.push('\n');
    out.push_str("| clean |");
    for m in &report.models {
        let _ = write!(out, " {} | 0 | – | – |", pct(m.clean.accuracy));
    }
    out.push('\n');
    for (i, set) in report.models[0].sets.iter().enumerate() {
        let _ = write!(out, "| {} |", set.name);
        for m in &report.models {
            let s = &m.sets[i];
            let _ = write!(out, " {} | {:+.4} | {:.2} | {:.2} |", pct(s.accuracy), s.nac.delta, 100.0 * s.nac.auroc, 100.0 * s.msp.auroc);
        }
        out.push('\n');
    }
    out
}

/// The sweep as two corruption × severity tables: NAC-UE AUROC and accuracy (×100).
fn sweep_tables(m: &ModelShift) -> String {
    let severities: BTreeSet<u8> = m
        .sets
        .iter()
        .filter_map(|s| match s.kind {
            SetKind::Corruption { severity, .. } => Some(severity),
            _ => None,
        })
        .collect();
    if severities.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let header: Vec<String> = severities.iter().map(|s| format!("s{s}")).collect();
    for (title, pick) in
        [("NAC-UE AUROC", (|s: &ShiftSet| Some(s.nac.auroc)) as fn(&ShiftSet) -> Option<f64>), ("accuracy", |s: &ShiftSet| s.accuracy)]
    {
        let _ = writeln!(
            out,
            "\n### {title} ×100 by severity\n\n| corruption | {} | mean |\n|---|{}---|",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for a in &m.corruptions {
            let cells: Vec<String> = severities.iter().map(|&sev| pct(find_sweep(m, &a.name, sev).and_then(pick))).collect();
            let mean = if title == "accuracy" { a.accuracy } else { Some(a.nac.auroc) };
            let _ = writeln!(out, "| {} | {} | {} |", a.name, cells.join(" | "), pct(mean));
        }
    }
    out
}

fn find_sweep<'a>(m: &'a ModelShift, name: &str, severity: u8) -> Option<&'a ShiftSet> {
    m.sets.iter().find(|s| s.kind == SetKind::Corruption { corruption: name.into(), severity })
}

// ---------------------------------------------------------------------------------------------
// pictures

/// Several models compared: NAC-UE AUROC (clean vs set) and accuracy per set as grouped bars,
/// and for each attack the NAC-UE score histograms of clean and attacked, every model.
fn draw_comparison(dir: &Path, report: &ShiftReport, scores: &[Vec<SetScores>]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let names: Vec<String> = report.models.iter().map(|m| model_slug(&m.path)).collect();
    let models: Vec<&str> = names.iter().map(String::as_str).collect();
    let first = &report.models[0];
    // One group per set, one bar per model; accuracy only on the sets every model has it for.
    let auroc_sets: Vec<&str> = first.sets.iter().map(|s| s.name.as_str()).collect();
    let auroc: Vec<Vec<f64>> = (0..first.sets.len()).map(|i| report.models.iter().map(|m| 100.0 * m.sets[i].nac.auroc).collect()).collect();
    plots::grouped_bars(
        &dir.join("models_auroc.png"),
        "NAC-UE AUROC, clean vs set (x100), per model",
        "AUROC",
        &auroc_sets,
        &models,
        &auroc,
    )?;
    let labelled: Vec<usize> = (0..first.sets.len()).filter(|&i| report.models.iter().all(|m| m.sets[i].accuracy.is_some())).collect();
    if !labelled.is_empty() {
        // Clean first, as the reference each set's accuracy falls from.
        let sets: Vec<&str> = std::iter::once("clean").chain(labelled.iter().map(|&i| first.sets[i].name.as_str())).collect();
        let clean: Vec<f64> = report.models.iter().map(|m| 100.0 * m.clean.accuracy.unwrap_or_default()).collect();
        let accuracy: Vec<Vec<f64>> = std::iter::once(clean)
            .chain(labelled.iter().map(|&i| report.models.iter().map(|m| 100.0 * m.sets[i].accuracy.unwrap_or_default()).collect()))
            .collect();
        plots::grouped_bars(
            &dir.join("models_accuracy.png"),
            "accuracy on each set (x100), per model",
            "accuracy",
            &sets,
            &models,
            &accuracy,
        )?;
    }
    for (i, set) in report.models[0].sets.iter().enumerate().filter(|(_, s)| matches!(s.kind, SetKind::Attack { .. })) {
        let labels: Vec<(String, String)> = names.iter().map(|n| (format!("{n} clean"), format!("{n} {}", set.name))).collect();
        let series: Vec<plots::Series> = scores
            .iter()
            .zip(&labels)
            .flat_map(|(model, (clean, attacked))| {
                [plots::Series { label: clean, values: &model[0].nac }, plots::Series { label: attacked, values: &model[i + 1].nac }]
            })
            .collect();
        plots::score_histogram(
            &dir.join(format!("models_hist_{}.png", run::slug(&set.name))),
            &format!("NAC-UE: clean vs {} for each model", set.name),
            "NAC-UE score (higher = more in-distribution)",
            &series,
        )?;
    }
    Ok(())
}

/// Heatmaps of the sweep (AUROC, accuracy), NAC against accuracy, Δ mean NAC per set, the pairs'
/// Δ and order-difference heatmaps, and score histograms of clean against chosen shifts.
fn draw_pictures(dir: &Path, m: &ModelShift, scores: &[SetScores], config: &ShiftConfig) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let corruptions: Vec<String> = m.corruptions.iter().map(|a| a.name.clone()).collect();
    let severities: Vec<u8> = m
        .sets
        .iter()
        .filter_map(|s| match s.kind {
            SetKind::Corruption { severity, .. } => Some(severity),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !corruptions.is_empty() {
        let cols: Vec<String> = severities.iter().map(|s| format!("severity {s}")).collect();
        for (file, title, pick) in [
            (
                "heatmap_auroc.png",
                "NAC-UE AUROC, clean vs corrupted (x100)",
                (|s: &ShiftSet| Some(s.nac.auroc)) as fn(&ShiftSet) -> Option<f64>,
            ),
            ("heatmap_accuracy.png", "accuracy under corruption (x100)", |s: &ShiftSet| s.accuracy),
        ] {
            let values: Vec<Vec<Option<f64>>> = corruptions
                .iter()
                .map(|c| severities.iter().map(|&sev| find_sweep(m, c, sev).and_then(pick).map(|v| 100.0 * v)).collect())
                .collect();
            plots::heatmap(&dir.join(file), title, &corruptions, &cols, &values, plots::Scale::Sequential)?;
        }
    }
    if let Some(c) = &m.correlation {
        let points: Vec<(f64, f64)> = m.sets.iter().filter_map(|s| s.accuracy.map(|a| (100.0 * a, s.nac.mean))).collect();
        let r = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.3}"));
        let title = format!("mean NAC-UE vs accuracy: Pearson {}, Spearman {}", r(c.pearson), r(c.spearman));
        plots::scatter(
            &dir.join("scatter_nac_accuracy.png"),
            &title,
            "accuracy (%)",
            "mean NAC-UE score",
            &points,
            Some((c.slope / 100.0, c.intercept)),
        )?;
    }
    let labels: Vec<String> = m.sets.iter().map(|s| s.name.clone()).collect();
    let deltas: Vec<f64> = m.sets.iter().map(|s| s.nac.delta).collect();
    plots::bar_chart(&dir.join("bar_delta_nac.png"), "mean NAC-UE score: shifted minus clean", &labels, &deltas)?;
    if !m.pairs.is_empty() {
        let mut steps: Vec<String> = Vec::new();
        for p in &m.pairs {
            for s in [&p.a, &p.b] {
                if !steps.contains(s) {
                    steps.push(s.clone());
                }
            }
        }
        let pair = |a: &str, b: &str| m.sets.iter().find(|s| s.kind == SetKind::Pair { first: a.into(), second: b.into() });
        let delta: Vec<Vec<Option<f64>>> = steps.iter().map(|a| steps.iter().map(|b| pair(a, b).map(|s| s.nac.delta)).collect()).collect();
        plots::heatmap(
            &dir.join("pairs_delta.png"),
            "A then B: mean NAC-UE minus clean (rows A, columns B)",
            &steps,
            &steps,
            &delta,
            plots::Scale::Diverging,
        )?;
        let order: Vec<Vec<Option<f64>>> = steps
            .iter()
            .map(|a| steps.iter().map(|b| pair(a, b).zip(pair(b, a)).map(|(ab, ba)| ab.nac.mean - ba.nac.mean)).collect())
            .collect();
        plots::heatmap(
            &dir.join("pairs_order.png"),
            "order: mean NAC-UE of A then B minus B then A",
            &steps,
            &steps,
            &order,
            plots::Scale::Diverging,
        )?;
    }
    // The chosen sets, or the last severity of the first three corruptions (else the first sets).
    let mut shown: Vec<usize> = config.shift.histograms.iter().filter_map(|h| m.sets.iter().position(|s| &s.name == h)).collect();
    if shown.is_empty() {
        let last = severities.last().copied();
        shown = corruptions
            .iter()
            .take(3)
            .filter_map(|c| {
                last.and_then(|sev| m.sets.iter().position(|s| s.kind == SetKind::Corruption { corruption: c.clone(), severity: sev }))
            })
            .collect();
        if shown.is_empty() {
            shown = (0..m.sets.len().min(3)).collect();
        }
    }
    for i in shown {
        let set = &m.sets[i];
        let series =
            [plots::Series { label: "clean", values: &scores[0].nac }, plots::Series { label: &set.name, values: &scores[i + 1].nac }];
        let title = format!("NAC-UE: clean vs {} (AUROC {:.2})", set.name, 100.0 * set.nac.auroc);
        plots::score_histogram(
            &dir.join(format!("hist_{}.png", run::slug(&set.name))),
            &title,
            "NAC-UE score (higher = more in-distribution)",
            &series,
        )?;
    }
    Ok(())
}
