//! The `nac eval` pipeline: pool every set once per model (one network pass per sample, decode
//! overlapped with the GPU), then score every method from the cached pairs — defaults, ID-only
//! selection, APS — beside the configured detectors (`crate::detect`) from the same pass, compute
//! the OpenOOD metrics, and write the report and pictures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::adversarial::Attacker;
use super::config::{EvalConfig, Group, NacSetup};
use super::metrics::{self, IdOnlyThreshold, OodMetrics};
use super::{plots, report};
use crate::data::{self, Dataset, Image, Transform};
use crate::detect::{self, perturb, Context, Detector, DetectorSpec, Dims, NacUe, Params, PassSet};
use crate::engine::{Engine, HostTimes, Model};
use crate::error::{check_writable, Error, Result};
use crate::model::{self, Network};
use crate::nac::search::{search, Grid, SearchSets};
use crate::nac::{class_balanced_subset, LayerParams, PooledStates, Preset};

/// How a run reports and where it writes.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub out: PathBuf,
    /// CPU threads decoding and transforming images.
    pub threads: usize,
    pub progress: bool,
}

/// Everything `results.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub preprocessing: String,
    pub models: Vec<ModelReport>,
    /// Mean and sample standard deviation over the models, per method.
    pub summary: Vec<MethodSummary>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelReport {
    pub path: PathBuf,
    pub arch: String,
    /// The preset used for this network's defaults and a named grid: the config's, or
    /// `imagenet-vit` for a Vision Transformer whatever the config names (`Preset::for_network`).
    #[serde(default)]
    pub preset: String,
    pub fingerprint: String,
    /// ID test accuracy (fraction), when the ID test set has labels.
    pub accuracy: Option<f64>,
    pub samples: SetSizes,
    pub pooling_seconds: f64,
    /// The host side of the pooling passes: waiting for decoded batches, writing and submitting
    /// chunks, waiting for the GPU.
    #[serde(default)]
    pub pooling_host: HostTimes,
    pub methods: Vec<MethodReport>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SetSizes {
    pub profile: usize,
    pub id_test: usize,
    pub id_val: usize,
    pub ood: Vec<(String, usize)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodReport {
    pub name: String,
    /// NAC parameters (absent for the other detectors).
    pub params: Option<Vec<LayerParams>>,
    /// A detector's hyperparameters (`NAME=VALUE, ...`; absent for NAC-UE).
    pub settings: Option<String>,
    /// Seconds to fit the statistics (with the sweep, if any) and to score every set, on top
    /// of the shared passes.
    pub fit_seconds: f64,
    pub score_seconds: f64,
    pub selection: Option<Selection>,
    pub sets: Vec<SetMetrics>,
    pub near: Option<OodMetrics>,
    pub far: Option<OodMetrics>,
    /// AUROC of ID validation against training-domain samples outside the profile (≈ 0.5 is
    /// healthy; far from it means the score separates seen from unseen ID data).
    pub sanity_auroc: Option<f64>,
}

/// How a method's parameters were chosen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Selection {
    pub criterion: String,
    pub validation_auroc: f64,
    pub combinations: usize,
    pub layer_evaluations: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetMetrics {
    pub name: String,
    pub group: Group,
    pub metrics: OodMetrics,
    /// OOD TPR at thresholds set on ID validation only (1 % and 5 % ID FPR).
    pub thresholds: Vec<IdOnlyThreshold>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodSummary {
    pub name: String,
    pub accuracy: Option<(f64, f64)>,
    /// (set name or "near"/"far", mean and std of FPR@95, AUROC, AUPR-IN, AUPR-OUT).
    pub rows: Vec<SummaryRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SummaryRow {
    pub name: String,
    pub fpr95: (f64, f64),
    pub auroc: (f64, f64),
    pub aupr_in: (f64, f64),
    pub aupr_out: (f64, f64),
}

pub const DEFAULTS: &str = "NAC-UE (defaults)";
pub const ID_ONLY: &str = "NAC-UE (ID-only selection)";
pub const APS: &str = "NAC-UE (APS)";

/// Runs the whole evaluation and writes `results.json`, `results.csv`, `results.md` and the
/// pictures under `options.out`. Everything that can be checked from the config, the model
/// files and the dataset headers is checked before the first network pass.
pub fn run(engine: &mut Engine, config: &EvalConfig, options: &EvalOptions) -> Result<EvalReport> {
    config.validate()?;
    let started = Instant::now();
    let transform = Transform::parse(&config.preprocessing)?;
    if config.pictures {
        check_picture_names(config)?;
    }
    std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
    check_writable(&options.out.join("results.json"))?;
    let sets = Sets::open(config)?;
    let prepared = config
        .models
        .iter()
        .map(|entry| {
            let arch = entry.arch.as_deref().map(str::parse).transpose()?;
            let network = model::load(&entry.path, arch)?;
            prepare(engine, network, config, &sets, &transform).map_err(|e| Error::Input(format!("model {}: {e}", entry.path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut models = Vec::with_capacity(config.models.len());
    for (index, (entry, prepared)) in config.models.iter().zip(prepared).enumerate() {
        let pictures = (config.pictures && index == 0).then_some(options.out.as_path());
        models.push(evaluate_model(engine, prepared, &sets, &entry.path, config, &transform, options, pictures)?);
    }
    let report =
        EvalReport { preprocessing: transform.describe(), summary: summarize(&models), models, seconds: started.elapsed().as_secs_f64() };
    report::write_all(&report, &options.out)?;
    Ok(report)
}

/// Every dataset of the config, opened (headers read) once for all models.
pub(crate) struct Sets {
    profile: Dataset,
    pub id_test: Dataset,
    id_val: Option<Dataset>,
    sanity: Option<Dataset>,
    pub ood: Vec<Dataset>,
    ood_val: Option<Dataset>,
    outliers: Option<Dataset>,
}

impl Sets {
    pub fn open(config: &EvalConfig) -> Result<Self> {
        let id_val = config.id.val.as_deref().map(Dataset::open).transpose()?;
        let search = config.search.as_ref();
        let outliers = match (search.is_some_and(|s| s.id_only), &id_val) {
            (true, Some(val)) => Some(data::synthetic_outliers(val, 0)),
            _ => None,
        };
        Ok(Sets {
            profile: Dataset::open(&config.profile.data)?,
            id_test: Dataset::open(&config.id.test)?,
            id_val,
            sanity: config.id.sanity.as_deref().map(Dataset::open).transpose()?,
            ood: config.ood.iter().map(|o| Dataset::open(&o.data)).collect::<Result<_>>()?,
            ood_val: search.and_then(|s| s.ood_val.as_deref()).map(Dataset::open).transpose()?,
            outliers,
        })
    }

    /// (role, set, whose labels count) of every set that is pooled.
    fn pooled(&self, config: &EvalConfig) -> Vec<(String, &Dataset, bool)> {
        let mut out = vec![("ID test".to_string(), &self.id_test, true)];
        out.extend(self.id_val.iter().map(|s| ("ID val".to_string(), s, true)));
        out.extend(self.sanity.iter().map(|s| ("sanity".to_string(), s, true)));
        out.extend(config.ood.iter().zip(&self.ood).map(|(o, s)| (format!("OOD set `{}`", o.name), s, false)));
        out.extend(self.ood_val.iter().map(|s| ("OOD val".to_string(), s, false)));
        out.extend(self.outliers.iter().map(|s| ("outliers".to_string(), s, false)));
        out
    }
}

/// What one model's run needs, checked against its network before any pass.
pub(crate) struct Prepared {
    pub network: Network,
    /// The preset the defaults (and a named grid) come from for this network.
    pub preset: Preset,
    pub defaults: Vec<LayerParams>,
    grid: Option<Grid>,
    pub pooled_layers: Vec<String>,
    pub profile: Dataset,
    /// (config text, spec, candidate settings) of each detector.
    detectors: Vec<(String, DetectorSpec, Vec<Params>)>,
    /// The Gram powers of the layer statistics the detectors read, if any does.
    stats_powers: Option<usize>,
}

/// Checks the config against `network` and the sets (layer names, parameters, the grid,
/// labels against the class count, the balanced subset, cache sizes against the adapter).
pub(crate) fn prepare(engine: &Engine, network: Network, config: &EvalConfig, sets: &Sets, transform: &Transform) -> Result<Prepared> {
    let NacSetup { layers, preset, defaults, grid } = config.nac_setup(&network)?;
    let mut pooled_layers = layers;
    for l in grid.iter().flat_map(|g| &g.layers) {
        if !pooled_layers.contains(&l.layer) {
            pooled_layers.push(l.layer.clone());
        }
    }
    let feature_layer = network.feature_layer();
    if !config.detectors.is_empty() && !pooled_layers.iter().any(|l| l == feature_layer) {
        pooled_layers.push(feature_layer.to_string());
    }
    let classes = network.num_classes();
    let check_labels = |what: &str, set: &Dataset| -> Result<()> {
        match set.labels().and_then(|l| l.iter().position(|&c| c >= classes).map(|i| (i, l[i]))) {
            Some((i, label)) => {
                Err(Error::Input(format!("{what} set: {} has label {label}, but the model has {classes} classes", set.locate(i))))
            }
            None => Ok(()),
        }
    };
    check_labels("profile", &sets.profile)?;
    let profile = match config.profile.samples {
        Some(n) => {
            let labels = sets.profile.labels().ok_or_else(|| {
                Error::Input(format!("profile.samples needs labels for a class-balanced subset, but `{}` has none", sets.profile.spec()))
            })?;
            let chosen = class_balanced_subset(labels, classes, n, config.profile.seed)
                .map_err(|e| Error::Input(format!("profile.samples: {e}")))?;
            sets.profile.subset(&chosen)?
        }
        None => sets.profile.clone(),
    };
    let names = network.layer_names();
    let dims = Dims { dim: network.fc.in_features, classes, train_samples: profile.len(), layers: names.len() };
    let detectors = config
        .detectors
        .iter()
        .map(|text| {
            let spec = DetectorSpec::parse(text)?;
            let candidates = spec.candidates(&dims, text)?;
            Ok((text.clone(), spec, candidates))
        })
        .collect::<Result<Vec<_>>>()?;
    // The layers whose statistics a detector reads are pooled too.
    let mut stats_powers = None;
    for (text, spec, candidates) in &detectors {
        for p in candidates {
            let Some(powers) = spec.method.stats_powers(p) else { continue };
            stats_powers = stats_powers.max(Some(powers));
            if spec.method.params.iter().any(|d| d.name == detect::LAYER) {
                let layer = &names[p.get(detect::LAYER) as usize];
                if spec.method.perturbs_input() && !network.seeds_backward_at(layer) {
                    return Err(Error::Input(format!(
                        "detector `{text}`: layer {} (`{layer}`) of {} cannot start its input gradient; a Vision Transformer's is its feature layer `{feature_layer}` (layer={})",
                        p.get(detect::LAYER),
                        network.spec,
                        names.len() - 1
                    )));
                }
                if !pooled_layers.contains(layer) {
                    pooled_layers.push(layer.clone());
                }
            } else if !pooled_layers.iter().any(|l| l != feature_layer) {
                return Err(Error::Input(format!(
                    "detector `{text}` reads the maps of the layers before `{feature_layer}`, and none is pooled: add one to [nac] layers"
                )));
            }
        }
    }
    let channels = network.layer_channels();
    let limit = engine.gpu.max_binding_bytes();
    for (what, set, labelled) in std::iter::once(("profile".to_string(), &profile, true)).chain(sets.pooled(config)) {
        if set.is_empty() {
            return Err(Error::Input(format!("{what} set `{}` has no samples", set.spec())));
        }
        if labelled {
            check_labels(&what, set)?;
        }
        // A ViT takes one image size, a DMWideResNet a few: the first sample shows a set's
        // size before any pass (a folder mixing sizes still fails at its first odd sample,
        // named by the loader).
        let (h, w) = transform.output_size(&set.image(0)?)?;
        if let Some(problem) = network.input_size_problem(h as usize, w as usize) {
            return Err(Error::Input(format!(
                "{what} set `{}`: {} is {h}×{w} after the preprocessing, but {} {problem}; add resize/center_crop steps",
                set.spec(),
                set.locate(0),
                network.spec
            )));
        }
        for layer in &pooled_layers {
            let neurons = channels.iter().find(|(n, _)| n == layer).map_or(0, |c| c.1);
            // Pairs: 8 bytes per neuron; statistics: 4 per neuron and value.
            let per_neuron = stats_powers.map_or(8, |p| (4 * (1 + p) as u64).max(8));
            let bytes = (set.len() as u64).saturating_mul(neurons as u64 * per_neuron);
            if bytes > limit {
                return Err(Error::Input(format!(
                    "{what} set `{}`: the pooled pairs (and statistics) of layer `{layer}` for its {} samples need {bytes} bytes, over this adapter's binding limit of {limit}; use fewer samples",
                    set.spec(),
                    set.len()
                )));
            }
        }
    }
    Ok(Prepared { network, preset, defaults, grid, pooled_layers, profile, detectors, stats_powers })
}

/// Refuses OOD set names whose pictures would share a file name (with each other, or with the
/// ID test set's `id_test` grids).
fn check_picture_names(config: &EvalConfig) -> Result<()> {
    let mut seen = vec![("id_test".to_string(), "the ID test set".to_string())];
    for o in &config.ood {
        let file = slug(&o.name);
        if file.is_empty() {
            return Err(Error::Input(format!("OOD set name `{}` has no letters or digits to name its pictures after", o.name)));
        }
        if let Some((_, other)) = seen.iter().find(|(f, _)| *f == file) {
            return Err(Error::Input(format!(
                "OOD set `{}` would write its pictures as grid_{file}_*.png, like {other}; give the sets names that differ in letters or digits",
                o.name
            )));
        }
        seen.push((file, format!("OOD set `{}`", o.name)));
    }
    Ok(())
}

/// The pooled sets of one model.
struct Pools {
    profile: PassSet,
    id_test: PassSet,
    id_val: Option<PassSet>,
    sanity: Option<PassSet>,
    ood: Vec<PassSet>,
    ood_names: Vec<String>,
    ood_val: Option<PassSet>,
    outliers: Option<PassSet>,
}

/// The sets a fitted method scores.
struct Scored<'a> {
    id_test: &'a PassSet,
    id_val: Option<&'a PassSet>,
    sanity: Option<&'a PassSet>,
    ood: Vec<&'a PassSet>,
}

impl Pools {
    fn scored(&self) -> Scored<'_> {
        Scored { id_test: &self.id_test, id_val: self.id_val.as_ref(), sanity: self.sanity.as_ref(), ood: self.ood.iter().collect() }
    }
}

/// The scored sets perturbed for one input-perturbation method.
struct PerturbedSets {
    id_test: PassSet,
    id_val: Option<PassSet>,
    sanity: Option<PassSet>,
    ood: Vec<PassSet>,
}

impl PerturbedSets {
    fn scored(&self) -> Scored<'_> {
        Scored { id_test: &self.id_test, id_val: self.id_val.as_ref(), sanity: self.sanity.as_ref(), ood: self.ood.iter().collect() }
    }
}

/// An input-perturbation method (`detect::perturb`): fitted on the clean profiling pass,
/// selected on the perturbed criterion sets (ID val, then OOD val or the outliers), then every
/// scored set perturbed with the chosen setting. Returns the seconds of the scored sets' passes.
#[allow(clippy::too_many_arguments)]
fn perturbed_sets(
    engine: &Engine,
    model: &mut Model,
    preprocessing: &str,
    method: &detect::Method,
    candidates: Vec<Params>,
    pools: &Pools,
    sets: &Sets,
    criterion: Option<(&Dataset, &Dataset)>,
    config: &EvalConfig,
    transform: &Transform,
    options: &EvalOptions,
) -> Result<(detect::Fitted, (PerturbedSets, f64))> {
    // The preprocessing's std per channel (its `normalize` steps together).
    let std = transform.pixel_space().1;
    let run = |model: &mut Model, what: &str, set: &Dataset, labelled: bool, detector: &dyn Detector, epsilons: &[f64]| {
        let loss = detector.input_loss().expect("an input-perturbation method has an input loss");
        let labels = if labelled { set.labels() } else { None };
        let batches = data::batches(set, transform, None, config.batch, options.threads).map(|b| b.map(|b| (b.start, b.input, b.shape)));
        perturb::perturbed_sets(engine, model, &loss, &std, epsilons, set.len(), labels, batches).map_err(|e| match e {
            Error::NotFinite { .. } => Error::Input(format!("{what} set, perturbed: {}", e.locate_sample(|i| set.locate(i)))),
            e => Error::Input(format!("{what} set `{}`, perturbed: {e}", set.spec())),
        })
    };
    let (fitted, id_val) = perturb::fit_and_select_perturbed(
        engine,
        model,
        preprocessing,
        method,
        candidates,
        &pools.profile,
        pools.id_val.as_ref(),
        criterion.is_some(),
        &mut |model, detector, epsilons, which| {
            let (id, ood) = criterion.expect("perturbed for a search only with its criterion sets");
            match which {
                perturb::Criterion::IdVal => run(model, "ID val", id, true, detector, epsilons),
                perturb::Criterion::OodVal => run(model, "OOD val", ood, false, detector, epsilons),
            }
        },
    )?;
    let started = Instant::now();
    let epsilon = [fitted.params.get(perturb::EPS)];
    let detector = fitted.detector.as_ref();
    let mut one = |what: &str, set: &Dataset, labelled: bool| run(model, what, set, labelled, detector, &epsilon).map(|mut s| s.remove(0));
    let id_val = match (id_val, &sets.id_val) {
        (Some(done), _) => Some(done),
        (None, Some(set)) => Some(one("ID val", set, true)?),
        (None, None) => None,
    };
    let perturbed = PerturbedSets {
        id_test: one("ID test", &sets.id_test, true)?,
        id_val,
        sanity: sets.sanity.as_ref().map(|s| one("sanity", s, true)).transpose()?,
        ood: config.ood.iter().zip(&sets.ood).map(|(o, s)| one(&o.name, s, false)).collect::<Result<_>>()?,
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok((fitted, (perturbed, seconds)))
}

/// Scores of one method on every set.
struct MethodScores {
    name: String,
    params: Option<Vec<LayerParams>>,
    settings: Option<String>,
    selection: Option<Selection>,
    fit_seconds: f64,
    score_seconds: f64,
    id_test: Vec<f32>,
    id_val: Option<Vec<f32>>,
    sanity: Option<Vec<f32>>,
    ood: Vec<Vec<f32>>,
}

#[allow(clippy::too_many_arguments)]
fn evaluate_model(
    engine: &mut Engine,
    prepared: Prepared,
    sets: &Sets,
    path: &Path,
    config: &EvalConfig,
    transform: &Transform,
    options: &EvalOptions,
    pictures: Option<&Path>,
) -> Result<ModelReport> {
    let Prepared { network, preset, defaults, grid, pooled_layers, profile: profile_set, detectors, stats_powers } = prepared;
    let model = &mut engine.upload(network);
    let preprocessing = transform.describe();
    let search_settings = config.search.as_ref();
    let pool_started = Instant::now();
    engine.take_host_times();
    let layer_refs: Vec<&str> = pooled_layers.iter().map(String::as_str).collect();
    let with_features = !detectors.is_empty();
    let mut pool = |what: &str, set: &Dataset, labelled: bool| -> Result<PassSet> {
        let pooled = pool_set(engine, model, what, set, labelled, transform, (&layer_refs, stats_powers), config.batch, options)?;
        let labels = if labelled { set.labels().map(<[usize]>::to_vec) } else { None };
        if with_features {
            PassSet::from_pooled(engine, &model.network, pooled, labels).map_err(|e| Error::Input(format!("{what} set: {e}")))
        } else {
            Ok(PassSet::pooled_only(pooled, labels))
        }
    };
    let pools = Pools {
        profile: pool("profile", &profile_set, true)?,
        id_test: pool("ID test", &sets.id_test, true)?,
        id_val: sets.id_val.as_ref().map(|s| pool("ID val", s, true)).transpose()?,
        sanity: sets.sanity.as_ref().map(|s| pool("sanity", s, true)).transpose()?,
        ood: config.ood.iter().zip(&sets.ood).map(|(o, s)| pool(&o.name, s, false)).collect::<Result<_>>()?,
        ood_names: config.ood.iter().map(|o| o.name.clone()).collect(),
        ood_val: sets.ood_val.as_ref().map(|s| pool("OOD val", s, false)).transpose()?,
        outliers: sets.outliers.as_ref().map(|s| pool("outliers", s, false)).transpose()?,
    };
    let pooling_seconds = pool_started.elapsed().as_secs_f64();
    let pooling_host = engine.take_host_times();
    let engine: &Engine = engine;

    let cx = Context { engine, network: &model.network, preprocessing: &preprocessing };
    let mut methods = vec![nac_scores(&cx, &pools, DEFAULTS, defaults, None)?];
    if let Some(grid) = &grid {
        let id_val = pools.id_val.as_ref().expect("validated: a search has ID validation");
        let mut select = |name: &str, criterion_set: &PassSet, criterion: String| -> Result<()> {
            let sets = SearchSets { profile: pools.profile.pooled()?, id_val: id_val.pooled()?, ood_val: criterion_set.pooled()? };
            let found = search(engine, &model.network, grid, &sets, &preprocessing)?;
            let selection = Selection {
                criterion,
                validation_auroc: found.best_auroc,
                combinations: found.trials.len(),
                layer_evaluations: found.layer_evaluations,
                seconds: found.seconds,
            };
            methods.push(nac_scores(&cx, &pools, name, found.best, Some(selection))?);
            Ok(())
        };
        if let Some(outliers) = &pools.outliers {
            select(ID_ONLY, outliers, "AUROC of ID val against synthetic outliers of ID val".into())?;
        }
        if let (Some(set), Some(spec)) = (&pools.ood_val, search_settings.and_then(|s| s.ood_val.as_deref())) {
            select(APS, set, format!("AUROC of ID val against OOD val `{spec}`"))?;
        }
    }
    // A swept detector is selected like NAC: on OOD val (APS) when given, else on outliers.
    let criterion = match (&pools.id_val, &pools.ood_val, &pools.outliers) {
        (Some(id), Some(ood), _) => Some((id, ood, "APS", "OOD val")),
        (Some(id), None, Some(outliers)) => Some((id, outliers, "ID-only selection", "synthetic outliers of ID val")),
        _ => None,
    };
    for (text, spec, candidates) in detectors {
        let method = spec.method;
        let swept = candidates.len() > 1;
        let context = |e: Error| Error::Input(format!("detector `{text}`: {e}"));
        let (fitted, perturbed) = if method.perturbs_input() {
            let criterion_sets = match (&sets.id_val, &sets.ood_val, &sets.outliers) {
                (Some(id), Some(ood), _) => Some((id, ood)),
                (Some(id), None, Some(outliers)) => Some((id, outliers)),
                _ => None,
            };
            let (fitted, sets) =
                perturbed_sets(engine, model, &preprocessing, method, candidates, &pools, sets, criterion_sets, config, transform, options)
                    .map_err(context)?;
            (fitted, Some(sets))
        } else {
            let cx = Context { engine, network: &model.network, preprocessing: &preprocessing };
            let fitted =
                detect::fit_and_select(&cx, method, candidates, &pools.profile, pools.id_val.as_ref(), criterion.map(|c| (c.0, c.1)))
                    .map_err(context)?;
            (fitted, None)
        };
        let defaults = Params(method.params.iter().map(|p| (p.name.to_string(), p.default)).collect());
        let name = match criterion {
            Some((.., tag, _)) if swept => format!("{} ({tag})", method.name),
            _ if fitted.params == defaults => method.name.to_string(),
            _ => format!("{} ({})", method.name, fitted.params),
        };
        let selection = swept.then(|| Selection {
            criterion: format!("AUROC of ID val against {}", criterion.map_or("", |c| c.3)),
            validation_auroc: fitted.trials.iter().map(|t| t.auroc).fold(f64::NEG_INFINITY, f64::max),
            combinations: fitted.trials.len(),
            layer_evaluations: fitted.trials.len(),
            seconds: fitted.fit_seconds,
        });
        let cx = Context { engine, network: &model.network, preprocessing: &preprocessing };
        let mut scores = match &perturbed {
            Some((perturbed, seconds)) => {
                let mut scores = scores_of(&cx, &name, fitted.detector.as_ref(), &perturbed.scored(), &pools.ood_names)?;
                scores.score_seconds += seconds;
                scores
            }
            None => scores_of(&cx, &name, fitted.detector.as_ref(), &pools.scored(), &pools.ood_names)?,
        };
        scores.settings = (!fitted.params.0.is_empty()).then(|| fitted.params.to_string());
        scores.selection = selection;
        scores.fit_seconds = fitted.fit_seconds;
        methods.push(scores);
    }
    let test_pred = pools.id_test.pooled()?.predictions();
    let accuracy = sets.id_test.labels().map(|labels| metrics::accuracy(&test_pred.class, labels));
    let reports = methods.iter().map(|m| method_report(m, config)).collect::<Result<Vec<_>>>()?;
    if let Some(dir) = pictures {
        let shown: Vec<&Dataset> = std::iter::once(&sets.id_test).chain(&sets.ood).collect();
        draw_pictures(dir, config, &methods, &reports, &shown)?;
    }
    Ok(ModelReport {
        path: path.to_path_buf(),
        arch: model.network.spec.to_string(),
        preset: preset.to_string(),
        fingerprint: model.fingerprint().to_string(),
        accuracy,
        samples: SetSizes {
            profile: pools.profile.pooled()?.samples,
            id_test: pools.id_test.pooled()?.samples,
            id_val: pools.id_val.as_ref().map_or(Ok(0), |s| s.pooled().map(|p| p.samples))?,
            ood: config.ood.iter().zip(&pools.ood).map(|(o, s)| Ok((o.name.clone(), s.pooled()?.samples))).collect::<Result<_>>()?,
        },
        pooling_seconds,
        pooling_host,
        methods: reports,
    })
}

/// One network pass over `set` (decoded on worker threads while the GPU runs), keeping the
/// pooled pairs of `layers` (and their statistics with `stats_powers`); `labelled` marks
/// predictions correct against the set's labels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pool_set(
    engine: &mut Engine,
    model: &mut Model,
    what: &str,
    set: &Dataset,
    labelled: bool,
    transform: &Transform,
    (layers, stats_powers): (&[&str], Option<usize>),
    batch: usize,
    options: &EvalOptions,
) -> Result<PooledStates> {
    // The bar counts samples through the network: each run of an attack, then the pooling.
    let runs = 1 + set.adversarial().map_or(0, |a| a.attack.restarts());
    let bar = if options.progress { ProgressBar::new((set.len() * runs) as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{prefix:>12} {bar:30} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    bar.set_prefix(what.to_string());
    engine.set_progress(Some(bar.clone()));
    let network = model.network.clone();
    let mut attacker = Attacker::new(engine, &network, set, transform);
    let labels = if labelled { set.labels() } else { None };
    let batches = data::batches(set, transform, None, batch, options.threads).map(|b| {
        let mut b = b?;
        if let Some(attacker) = attacker.as_mut() {
            attacker.attack(&mut b, None)?;
        }
        Ok((b.start, b.input, b.shape))
    });
    let pooled =
        PooledStates::compute_streamed_with_stats(engine, model, set.len(), layers, labels, stats_powers, batches).map_err(|e| match e {
            Error::NotFinite { .. } => Error::Input(format!("{what} set: {}", e.locate_sample(|i| set.locate(i)))),
            e => Error::Input(format!("{what} set `{}`: {e}", set.spec())),
        });
    engine.set_progress(None);
    bar.finish_and_clear();
    pooled
}

/// NAC-UE with `params`: a profile of the cached profiling pairs, then every set scored.
fn nac_scores(cx: &Context, pools: &Pools, name: &str, params: Vec<LayerParams>, selection: Option<Selection>) -> Result<MethodScores> {
    let started = Instant::now();
    let mut nac = NacUe::new(params.clone());
    nac.fit(cx, &pools.profile, None)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let mut scores = scores_of(cx, name, &nac, &pools.scored(), &pools.ood_names)?;
    scores.params = Some(params);
    scores.selection = selection;
    scores.fit_seconds = fit_seconds;
    Ok(scores)
}

/// A fitted detector's scores of every set (and the time they took).
fn scores_of(cx: &Context, name: &str, detector: &dyn Detector, sets: &Scored, ood_names: &[String]) -> Result<MethodScores> {
    let started = Instant::now();
    let score = |what: &str, set: &PassSet| detector.score(cx, set).map_err(|e| Error::Input(format!("{name} on the {what} set: {e}")));
    let mut scores = MethodScores {
        name: name.into(),
        id_test: score("ID test", sets.id_test)?,
        id_val: sets.id_val.map(|s| score("ID val", s)).transpose()?,
        sanity: sets.sanity.map(|s| score("sanity", s)).transpose()?,
        ood: ood_names.iter().zip(&sets.ood).map(|(n, s)| score(n, s)).collect::<Result<_>>()?,
        params: None,
        settings: None,
        selection: None,
        fit_seconds: 0.0,
        score_seconds: 0.0,
    };
    scores.score_seconds = started.elapsed().as_secs_f64();
    Ok(scores)
}

fn method_report(m: &MethodScores, config: &EvalConfig) -> Result<MethodReport> {
    let mut sets = Vec::with_capacity(m.ood.len());
    for (set, scores) in config.ood.iter().zip(&m.ood) {
        let metrics = metrics::ood_metrics(&m.id_test, scores).map_err(|e| Error::Input(format!("{} on `{}`: {e}", m.name, set.name)))?;
        let thresholds = m
            .id_val
            .as_ref()
            .map(|val| [0.01, 0.05].iter().map(|&q| metrics::id_only_threshold(val, &m.id_test, scores, q)).collect())
            .unwrap_or_default();
        sets.push(SetMetrics { name: set.name.clone(), group: set.group, metrics, thresholds });
    }
    let group_mean = |group: Group| -> Option<OodMetrics> {
        let members: Vec<&OodMetrics> = sets.iter().filter(|s| s.group == group).map(|s| &s.metrics).collect();
        (!members.is_empty()).then(|| {
            let mean = |f: fn(&OodMetrics) -> f64| members.iter().map(|m| f(m)).sum::<f64>() / members.len() as f64;
            OodMetrics { auroc: mean(|m| m.auroc), fpr95: mean(|m| m.fpr95), aupr_in: mean(|m| m.aupr_in), aupr_out: mean(|m| m.aupr_out) }
        })
    };
    let sanity_auroc = match (&m.id_val, &m.sanity) {
        (Some(val), Some(sanity)) => Some(metrics::auroc(val, sanity)),
        _ => None,
    };
    Ok(MethodReport {
        name: m.name.clone(),
        params: m.params.clone(),
        settings: m.settings.clone(),
        fit_seconds: m.fit_seconds,
        score_seconds: m.score_seconds,
        selection: m.selection.clone(),
        near: group_mean(Group::Near),
        far: group_mean(Group::Far),
        sets,
        sanity_auroc,
    })
}

/// Mean ± std over models of every metric, per method and row.
fn summarize(models: &[ModelReport]) -> Vec<MethodSummary> {
    let Some(first) = models.first() else { return Vec::new() };
    let accuracies: Vec<f64> = models.iter().filter_map(|m| m.accuracy).collect();
    let accuracy = (accuracies.len() == models.len()).then(|| metrics::mean_std(&accuracies));
    first
        .methods
        .iter()
        .enumerate()
        .map(|(k, method)| {
            let mut names: Vec<String> = method.sets.iter().map(|s| s.name.clone()).collect();
            names.extend(method.near.as_ref().map(|_| "near".to_string()));
            names.extend(method.far.as_ref().map(|_| "far".to_string()));
            let rows = names
                .into_iter()
                .map(|name| {
                    let values: Vec<&OodMetrics> = models.iter().filter_map(|m| report::row(&m.methods[k], &name)).collect();
                    let stat = |f: fn(&OodMetrics) -> f64| metrics::mean_std(&values.iter().map(|v| f(v)).collect::<Vec<_>>());
                    SummaryRow {
                        fpr95: stat(|m| m.fpr95),
                        auroc: stat(|m| m.auroc),
                        aupr_in: stat(|m| m.aupr_in),
                        aupr_out: stat(|m| m.aupr_out),
                        name,
                    }
                })
                .collect();
            MethodSummary { name: method.name.clone(), accuracy, rows }
        })
        .collect()
}

/// Score histograms and ROC curves per method; top-100 / bottom-100 grids of every set by the
/// NAC score that was chosen with the least outside information beyond the defaults (ID-only
/// selection when run, else APS, else the defaults).
fn draw_pictures(dir: &Path, config: &EvalConfig, methods: &[MethodScores], reports: &[MethodReport], sets: &[&Dataset]) -> Result<()> {
    let pictures = dir.join("pictures");
    std::fs::create_dir_all(&pictures).map_err(|e| Error::io(&pictures, e))?;
    for (m, r) in methods.iter().zip(reports) {
        let slug = slug(&m.name);
        let mut series = vec![plots::Series { label: "ID test", values: &m.id_test }];
        series.extend(config.ood.iter().zip(&m.ood).map(|(o, s)| plots::Series { label: &o.name, values: s }));
        plots::score_histogram(&pictures.join(format!("hist_{slug}.png")), &m.name, "score (higher = more in-distribution)", &series)?;
        let curves: Vec<(String, Vec<f64>, Vec<f64>)> = config
            .ood
            .iter()
            .zip(&m.ood)
            .zip(&r.sets)
            .map(|((o, s), set)| {
                let (fpr, tpr) = metrics::roc_curve(&m.id_test, s);
                (format!("{} AUROC {:.2}", o.name, 100.0 * set.metrics.auroc), fpr, tpr)
            })
            .collect();
        let refs: Vec<(&str, &[f64], &[f64])> = curves.iter().map(|(l, f, t)| (l.as_str(), f.as_slice(), t.as_slice())).collect();
        plots::roc_plot(&pictures.join(format!("roc_{slug}.png")), &m.name, &refs)?;
    }
    let set_names: Vec<&str> = config.ood.iter().map(|o| o.name.as_str()).collect();
    let rows: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
    let auroc: Vec<Vec<f64>> = reports.iter().map(|r| r.sets.iter().map(|s| 100.0 * s.metrics.auroc).collect()).collect();
    plots::grouped_bars(&pictures.join("auroc_methods.png"), "AUROC per method and OOD set", "AUROC x100", &rows, &set_names, &auroc)?;
    let primary = [ID_ONLY, APS, DEFAULTS].iter().find_map(|name| methods.iter().find(|m| m.name == *name)).expect("defaults always run");
    let names: Vec<&str> = std::iter::once("id_test").chain(config.ood.iter().map(|o| o.name.as_str())).collect();
    let scores: Vec<&Vec<f32>> = std::iter::once(&primary.id_test).chain(&primary.ood).collect();
    for ((name, set), scores) in names.iter().zip(sets).zip(scores) {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let count = order.len().min(100);
        // Top: highest score first; bottom: lowest score first.
        let bottom: Vec<usize> = order.iter().rev().take(count).copied().collect();
        for (which, picked) in [("top", &order[..count]), ("bottom", &bottom[..])] {
            let images: Vec<Image> = picked.iter().map(|&i| set.image(i)).collect::<Result<_>>()?;
            let captions: Vec<String> = picked.iter().map(|&i| format!("{:.3}", scores[i])).collect();
            let title = format!("{name}: {which} {count} by {}", primary.name);
            plots::image_grid(&pictures.join(format!("grid_{}_{which}.png", slug(name))), &title, &images, &captions, 10)?;
        }
    }
    Ok(())
}

/// A file-name-safe version of a label.
pub(crate) fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}
