//! The `nac eval` pipeline: pool every set once per model (one network pass per sample, decode
//! overlapped with the GPU), then score every method from the cached pairs — defaults, ID-only
//! selection, APS — beside MSP and energy from the same pass, compute the OpenOOD metrics, and
//! write the report and pictures.

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::{EvalConfig, Group};
use super::metrics::{self, IdOnlyThreshold, OodMetrics};
use super::{plots, report};
use crate::data::{self, Dataset, Image, Transform};
use crate::engine::{Engine, Model};
use crate::error::{Error, Result};
use crate::nac::search::{search, SearchSets};
use crate::nac::{class_balanced_subset, params, LayerParams, PooledStates, Predicted, Preset, Profile};

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
    pub fingerprint: String,
    /// ID test accuracy (fraction), when the ID test set has labels.
    pub accuracy: Option<f64>,
    pub samples: SetSizes,
    pub pooling_seconds: f64,
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
    /// NAC parameters (absent for MSP and energy).
    pub params: Option<Vec<LayerParams>>,
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
pub const MSP: &str = "MSP";
pub const ENERGY: &str = "Energy";

/// Runs the whole evaluation and writes `results.json`, `results.csv`, `results.md` and the
/// pictures under `options.out`.
pub fn run(engine: &mut Engine, config: &EvalConfig, options: &EvalOptions) -> Result<EvalReport> {
    config.validate()?;
    let started = Instant::now();
    let transform = Transform::parse(&config.preprocessing)?;
    std::fs::create_dir_all(&options.out).map_err(|e| Error::io(&options.out, e))?;
    let mut models = Vec::with_capacity(config.models.len());
    for (index, entry) in config.models.iter().enumerate() {
        let arch = entry.arch.as_deref().map(str::parse).transpose()?;
        let mut model = engine.load_model(&entry.path, arch)?;
        let pictures = (config.pictures && index == 0).then_some(options.out.as_path());
        models.push(evaluate_model(engine, &mut model, &entry.path, config, &transform, options, pictures)?);
    }
    let report = EvalReport {
        preprocessing: transform.describe(),
        summary: summarize(&models),
        models,
        seconds: started.elapsed().as_secs_f64(),
    };
    report::write_all(&report, &options.out)?;
    Ok(report)
}

/// The pooled sets of one model.
struct Pools {
    profile: PooledStates,
    id_test: PooledStates,
    id_val: Option<PooledStates>,
    sanity: Option<PooledStates>,
    ood: Vec<PooledStates>,
    ood_val: Option<PooledStates>,
    outliers: Option<PooledStates>,
}

/// Scores of one method on every set.
struct MethodScores {
    name: String,
    params: Option<Vec<LayerParams>>,
    selection: Option<Selection>,
    id_test: Vec<f32>,
    id_val: Option<Vec<f32>>,
    sanity: Option<Vec<f32>>,
    ood: Vec<Vec<f32>>,
}

fn evaluate_model(
    engine: &mut Engine,
    model: &mut Model,
    path: &Path,
    config: &EvalConfig,
    transform: &Transform,
    options: &EvalOptions,
    pictures: Option<&Path>,
) -> Result<ModelReport> {
    let network_layers = model.network.stage_names();
    let layers = config.nac.layers.clone().unwrap_or_else(|| Preset::layers_for(&network_layers));
    let defaults = params::resolve(&layers, Some(config.preset()?), &config.overrides()?)?;
    let grid = config.grid(&layers)?;
    let mut pooled_layers = layers.clone();
    for l in grid.iter().flat_map(|g| &g.layers) {
        if !pooled_layers.contains(&l.layer) {
            pooled_layers.push(l.layer.clone());
        }
    }
    let preprocessing = transform.describe();

    // Every set is opened before the first network pass, so a bad spec fails fast.
    let profile_all = Dataset::open(&config.profile.data)?;
    let profile_set = match config.profile.samples {
        Some(n) => {
            let labels = profile_all.labels().ok_or_else(|| {
                Error::Input(format!("profile.samples needs labels for a class-balanced subset, but `{}` has none", profile_all.spec()))
            })?;
            profile_all.subset(&class_balanced_subset(labels, model.network.num_classes(), n, config.profile.seed)?)?
        }
        None => profile_all,
    };
    let id_test = Dataset::open(&config.id.test)?;
    let id_val = config.id.val.as_deref().map(Dataset::open).transpose()?;
    let sanity = config.id.sanity.as_deref().map(Dataset::open).transpose()?;
    let ood: Vec<Dataset> = config.ood.iter().map(|o| Dataset::open(&o.data)).collect::<Result<_>>()?;
    let search_settings = config.search.as_ref();
    let ood_val = search_settings.and_then(|s| s.ood_val.as_deref()).map(Dataset::open).transpose()?;
    let outliers = match (search_settings.is_some_and(|s| s.id_only), &id_val) {
        (true, Some(val)) => Some(data::synthetic_outliers(val, 0)),
        _ => None,
    };

    let pool_started = Instant::now();
    let layer_refs: Vec<&str> = pooled_layers.iter().map(String::as_str).collect();
    let mut pool = |what: &str, set: &Dataset, labelled: bool| -> Result<PooledStates> {
        pool_set(engine, model, what, set, labelled, transform, &layer_refs, config.batch, options)
    };
    let pools = Pools {
        profile: pool("profile", &profile_set, true)?,
        id_test: pool("ID test", &id_test, true)?,
        id_val: id_val.as_ref().map(|s| pool("ID val", s, true)).transpose()?,
        sanity: sanity.as_ref().map(|s| pool("sanity", s, true)).transpose()?,
        ood: config.ood.iter().zip(&ood).map(|(o, s)| pool(&o.name, s, false)).collect::<Result<_>>()?,
        ood_val: ood_val.as_ref().map(|s| pool("OOD val", s, false)).transpose()?,
        outliers: outliers.as_ref().map(|s| pool("outliers", s, false)).transpose()?,
    };
    let pooling_seconds = pool_started.elapsed().as_secs_f64();
    let engine: &Engine = engine;

    let mut methods = vec![nac_scores(engine, model, &pools, DEFAULTS, defaults, None, &preprocessing)?];
    if let Some(grid) = &grid {
        let id_val = pools.id_val.as_ref().expect("validated: a search has ID validation");
        let mut select = |name: &str, criterion_set: &PooledStates, criterion: String| -> Result<()> {
            let sets = SearchSets { profile: &pools.profile, id_val, ood_val: criterion_set };
            let found = search(engine, &model.network, grid, &sets, &preprocessing)?;
            let selection = Selection {
                criterion,
                validation_auroc: found.best_auroc,
                combinations: found.trials.len(),
                layer_evaluations: found.layer_evaluations,
                seconds: found.seconds,
            };
            methods.push(nac_scores(engine, model, &pools, name, found.best, Some(selection), &preprocessing)?);
            Ok(())
        };
        if let Some(outliers) = &pools.outliers {
            select(ID_ONLY, outliers, "AUROC of ID val against synthetic outliers of ID val".into())?;
        }
        if let (Some(set), Some(spec)) = (&pools.ood_val, search_settings.and_then(|s| s.ood_val.as_deref())) {
            select(APS, set, format!("AUROC of ID val against OOD val `{spec}`"))?;
        }
    }
    // One readback per set serves both baselines.
    let read = |set: &PooledStates| set.read_predictions(engine);
    let test_pred = read(&pools.id_test)?;
    let val_pred = pools.id_val.as_ref().map(read).transpose()?;
    let sanity_pred = pools.sanity.as_ref().map(read).transpose()?;
    let ood_pred: Vec<Predicted> = pools.ood.iter().map(read).collect::<Result<_>>()?;
    let baseline = |name: &str, pick: fn(&Predicted) -> Vec<f32>| MethodScores {
        name: name.into(),
        params: None,
        selection: None,
        id_test: pick(&test_pred),
        id_val: val_pred.as_ref().map(pick),
        sanity: sanity_pred.as_ref().map(pick),
        ood: ood_pred.iter().map(pick).collect(),
    };
    methods.push(baseline(MSP, |p| p.max_softmax.clone()));
    methods.push(baseline(ENERGY, |p| p.energy.clone()));

    let accuracy = id_test.labels().map(|labels| metrics::accuracy(&test_pred.class, labels));
    let reports = methods.iter().map(|m| method_report(m, config)).collect::<Result<Vec<_>>>()?;
    if let Some(dir) = pictures {
        let sets: Vec<&Dataset> = std::iter::once(&id_test).chain(&ood).collect();
        draw_pictures(dir, config, &methods, &reports, &sets)?;
    }
    Ok(ModelReport {
        path: path.to_path_buf(),
        arch: model.network.spec.to_string(),
        fingerprint: model.fingerprint().to_string(),
        accuracy,
        samples: SetSizes {
            profile: pools.profile.samples,
            id_test: pools.id_test.samples,
            id_val: pools.id_val.as_ref().map_or(0, |s| s.samples),
            ood: config.ood.iter().zip(&pools.ood).map(|(o, s)| (o.name.clone(), s.samples)).collect(),
        },
        pooling_seconds,
        methods: reports,
    })
}

/// One network pass over `set` (decoded on worker threads while the GPU runs), keeping the
/// pooled pairs of `layers`; `labelled` marks predictions correct against the set's labels.
#[allow(clippy::too_many_arguments)]
fn pool_set(
    engine: &mut Engine,
    model: &mut Model,
    what: &str,
    set: &Dataset,
    labelled: bool,
    transform: &Transform,
    layers: &[&str],
    batch: usize,
    options: &EvalOptions,
) -> Result<PooledStates> {
    if set.is_empty() {
        return Err(Error::Input(format!("{what} set `{}` has no samples", set.spec())));
    }
    let bar = if options.progress { ProgressBar::new(set.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{prefix:>12} {bar:30} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    bar.set_prefix(what.to_string());
    engine.set_progress(Some(bar.clone()));
    let labels = if labelled { set.labels() } else { None };
    let batches = data::batches(set, transform, None, batch, options.threads).map(|b| b.map(|b| (b.start, b.input, b.shape)));
    let pooled = PooledStates::compute_streamed(engine, model, set.len(), layers, labels, batches)
        .map_err(|e| Error::Input(format!("{what} set `{}`: {e}", set.spec())));
    engine.set_progress(None);
    bar.finish_and_clear();
    pooled
}

/// NAC-UE with `params`: a profile of the cached profiling pairs, then every set scored.
fn nac_scores(
    engine: &Engine,
    model: &Model,
    pools: &Pools,
    name: &str,
    params: Vec<LayerParams>,
    selection: Option<Selection>,
    preprocessing: &str,
) -> Result<MethodScores> {
    let mut profile = Profile::new(engine, &model.network, &params, preprocessing)?;
    profile.add_pooled(engine, &pools.profile)?;
    let score = |set: &PooledStates| profile.score_pooled(engine, set).map(|s| s.score);
    Ok(MethodScores {
        name: name.into(),
        id_test: score(&pools.id_test)?,
        id_val: pools.id_val.as_ref().map(score).transpose()?,
        sanity: pools.sanity.as_ref().map(score).transpose()?,
        ood: pools.ood.iter().map(score).collect::<Result<_>>()?,
        params: Some(params),
        selection,
    })
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
                    SummaryRow { fpr95: stat(|m| m.fpr95), auroc: stat(|m| m.auroc), aupr_in: stat(|m| m.aupr_in), aupr_out: stat(|m| m.aupr_out), name }
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
fn slug(text: &str) -> String {
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
