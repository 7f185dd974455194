//! The `nac eval` configuration file (TOML). Example (`eval/fmnist.toml` runs the real
//! benchmark):
//!
//! ```toml
//! preprocessing = "fmnist"              # a transform preset or step list (nac::data::Transform)
//! batch = 64                            # optional
//! # detectors beside NAC-UE, from the same passes (default ["msp", "ebo"]); `key:sweep` searches
//! # OpenOOD's lists and `key:NAME=V|V` the given values, on the [search] criterion sets
//! detectors = ["msp", "mls", "ebo", "gen:sweep", "gradnorm", "react", "knn:K=50", "vim:dim=256",
//!              "mds", "rmds", "she", "dice", "ash", "ddu", "kde"]
//!
//! [[models]]                            # one or more: several checkpoints/seeds → mean ± std
//! path = "weights/fmnist_resnet18_32x32.safetensors"
//! # arch = "resnet18_32x32"             # optional: detected from the tensors
//!
//! [profile]                             # the profiling set: histograms of ID training data
//! data = "idx:data/fashion-mnist/train-images-idx3-ubyte.gz[0:55000]"
//! samples = 1000                        # optional: class-balanced subset (needs labels)
//! seed = 1                              # optional: the official subset's seed (default 1)
//!
//! [id]
//! test = "idx:data/fashion-mnist/t10k-images-idx3-ubyte.gz"
//! val = "idx:data/fashion-mnist/train-images-idx3-ubyte.gz[55000:57000]"   # thresholds, search
//! sanity = "idx:data/fashion-mnist/train-images-idx3-ubyte.gz[50000:51000]" # optional
//!
//! [[ood]]                               # the test OOD sets, grouped near/far
//! name = "mnist"
//! group = "far"
//! data = "csv:data/mnist_5k.csv.gz"
//!
//! [nac]
//! # layers = ["avgpool", "layer3", "layer2", "layer1"]   # default: the official list
//! preset = "cifar10"                    # default parameters (spec §4); cifar10 when absent;
//!                                       # a Vision Transformer always takes imagenet-vit (§8)
//! params = ["avgpool:50/50/10"]         # optional per-layer overrides NAME:O/M/ALPHA
//!
//! [search]                              # optional: parameter search on cached pooled pairs
//! grid = "cifar10"                      # an official grid (spec §5; imagenet-vit for a ViT), or [[search.layers]] tables
//! ood_val = "corrupt:gaussian_blur:3:idx:...[57000:58000]"  # APS criterion set (never a test set)
//! id_only = true                        # also select against synthetic outliers of id.val
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Transform};
use crate::detect::DetectorSpec;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::Network;
use crate::nac::search::{Grid, LayerGrid};
use crate::nac::{params, LayerParams, Preset};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub preprocessing: String,
    #[serde(default = "default_batch")]
    pub batch: usize,
    pub models: Vec<ModelEntry>,
    pub profile: ProfileSet,
    pub id: IdSets,
    #[serde(default)]
    pub ood: Vec<OodSet>,
    #[serde(default)]
    pub nac: NacSettings,
    pub search: Option<SearchSettings>,
    /// Detectors scored beside NAC-UE from the same passes (`crate::detect::DetectorSpec`:
    /// `key`, `key:sweep` or `key:NAME=V|V,...`; the input-perturbation methods add passes of
    /// their own, `crate::detect::perturb`); MSP and energy when absent.
    #[serde(default = "default_detectors")]
    pub detectors: Vec<String>,
    /// Write the PNG pictures (histograms, ROC curves, top/bottom grids).
    #[serde(default = "yes")]
    pub pictures: bool,
}

fn official_seed() -> u64 {
    crate::nac::select::OFFICIAL_SEED as u64
}

fn default_batch() -> usize {
    64
}

fn default_detectors() -> Vec<String> {
    vec!["msp".into(), "ebo".into()]
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub path: PathBuf,
    pub arch: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSet {
    pub data: String,
    /// Class-balanced subset of this many samples (all samples when absent).
    pub samples: Option<usize>,
    /// Seed of the balanced subset (the official default, 1, when absent).
    #[serde(default = "official_seed")]
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdSets {
    pub test: String,
    /// ID validation: ID-only thresholds, parameter search, synthetic outliers.
    pub val: Option<String>,
    /// Training-domain samples outside the profiling set, for the search's sanity check
    /// (AUROC of ID-val against them should stay near 50).
    pub sanity: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodSet {
    pub name: String,
    pub group: Group,
    pub data: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    Near,
    Far,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NacSettings {
    pub layers: Option<Vec<String>>,
    pub preset: Option<String>,
    #[serde(default)]
    pub params: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// An official grid by name (`cifar10`, `cifar100`, `imagenet`, `imagenet-vit`; a Vision
    /// Transformer always takes `imagenet-vit`'s).
    pub grid: Option<String>,
    /// Or a user grid, one table per layer.
    #[serde(default)]
    pub layers: Vec<LayerGrid>,
    /// Real OOD validation set for APS.
    pub ood_val: Option<String>,
    /// Select against synthetic outliers made from `id.val` (no real OOD data).
    #[serde(default)]
    pub id_only: bool,
}

impl EvalConfig {
    /// Reads, parses and validates a config file (see [`EvalConfig::parse`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        EvalConfig::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` (the file's name) starts every error.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let config: EvalConfig = toml::from_str(text).map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        config.validate().map_err(|e| Error::Input(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Checks what TOML typing cannot, from the text alone (no file is opened): non-empty
    /// lists, unique names, sizes within `crate::limits`, the grammar of the preprocessing and
    /// of every dataset spec, a search with a criterion. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str, e: Error| Error::Input(format!("{name}: {e}"));
        if self.models.is_empty() {
            return Err(Error::Input("no [[models]] given".into()));
        }
        for (i, model) in self.models.iter().enumerate() {
            if model.path.as_os_str().is_empty() {
                return Err(Error::Input(format!("models[{i}].path is empty: expected a weights file")));
            }
        }
        if self.batch == 0 {
            return Err(Error::Input("batch must be at least 1".into()));
        }
        limits::check("batch", self.batch, limits::MAX_BATCH, "MAX_BATCH")?;
        Transform::parse(&self.preprocessing).map_err(|e| field("preprocessing", e))?;
        let mut specs: Vec<(String, &str)> = vec![("profile.data".into(), &self.profile.data), ("id.test".into(), &self.id.test)];
        specs.extend(self.id.val.as_deref().map(|s| ("id.val".into(), s)));
        specs.extend(self.id.sanity.as_deref().map(|s| ("id.sanity".into(), s)));
        specs.extend(self.ood.iter().enumerate().map(|(i, o)| (format!("ood[{i}].data (`{}`)", o.name), o.data.as_str())));
        if let Some(ood_val) = self.search.as_ref().and_then(|s| s.ood_val.as_deref()) {
            specs.push(("search.ood_val".into(), ood_val));
        }
        for (name, spec) in specs {
            Dataset::check_spec(spec).map_err(|e| field(&name, e))?;
        }
        if let Some(samples) = self.profile.samples {
            if samples == 0 {
                return Err(Error::Input("profile.samples must be at least 1 (or absent for all samples)".into()));
            }
            limits::check("profile.samples", samples, limits::MAX_SAMPLES, "MAX_SAMPLES")?;
        }
        for (i, set) in self.ood.iter().enumerate() {
            if set.name.is_empty() || self.ood[..i].iter().any(|o| o.name == set.name) {
                return Err(Error::Input(format!("ood[{i}].name: OOD set names must be non-empty and unique; `{}` is not", set.name)));
            }
        }
        if let Some(layers) = &self.nac.layers {
            if layers.is_empty() {
                return Err(Error::Input("nac.layers is empty: list at least one layer, or leave it out for the official list".into()));
            }
            limits::check("nac.layers: the number of layers", layers.len(), limits::MAX_LAYERS, "MAX_LAYERS")?;
            if let Some(i) = layers.iter().position(|l| l.trim().is_empty()) {
                return Err(Error::Input(format!("nac.layers[{i}] is empty: expected a layer name")));
            }
        }
        if let Some(preset) = &self.nac.preset {
            preset.parse::<Preset>().map_err(|e| field("nac.preset", e))?;
        }
        for (i, p) in self.nac.params.iter().enumerate() {
            LayerParams::parse(p).map_err(|e| field(&format!("nac.params[{i}]"), e))?;
        }
        for (i, text) in self.detectors.iter().enumerate() {
            let spec = DetectorSpec::parse(text).map_err(|e| field(&format!("detectors[{i}]"), e))?;
            if self.detectors[..i].iter().any(|t| t == text) {
                return Err(Error::Input(format!("detectors[{i}]: `{text}` is listed twice")));
            }
            if spec.values.iter().any(|v| v.len() > 1) && self.search.is_none() {
                return Err(Error::Input(format!(
                    "detectors[{i}]: `{text}` sweeps its parameters, which needs a [search] section with `ood_val` or `id_only` (and id.val)"
                )));
            }
        }
        if let Some(search) = &self.search {
            if let Some(grid) = &search.grid {
                grid.parse::<Preset>().map_err(|e| field("search.grid", e))?;
            }
            if search.grid.is_some() != search.layers.is_empty() {
                return Err(Error::Input("[search] needs exactly one of `grid` (a preset name) or [[search.layers]] tables".into()));
            }
            if search.ood_val.is_none() && !search.id_only {
                return Err(Error::Input("[search] selects nothing: give `ood_val` (APS) and/or `id_only = true`".into()));
            }
            if self.id.val.is_none() {
                return Err(Error::Input("[search] needs an ID validation set: set `val` in [id]".into()));
            }
            if let Some(ood_val) = &search.ood_val {
                if let Some(test) = self.ood.iter().find(|o| &o.data == ood_val) {
                    return Err(Error::Input(format!(
                        "[search] ood_val is the test set `{}`: a test set never takes part in selection",
                        test.name
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn overrides(&self) -> Result<Vec<LayerParams>> {
        self.nac.params.iter().map(|p| LayerParams::parse(p)).collect()
    }

    /// The preset of the default parameters as named (CIFAR-10's when none is); the one used
    /// for a network is `Preset::for_network` of it (`imagenet-vit` for any ViT).
    pub fn preset(&self) -> Result<Preset> {
        self.nac.preset.as_deref().map_or(Ok(Preset::Cifar10), str::parse)
    }

    /// What `[nac]` and `[search]` give for `network`, checked against its layers: the layer
    /// list (the official one for its architecture when none is named), the preset used (for a
    /// Vision Transformer `imagenet-vit`, whatever the config names, so a config written for
    /// CNNs runs unchanged), the default parameters and the search grid: a named grid covers
    /// the layer list (`imagenet-vit`'s for a ViT); user tables name their own layers (the
    /// searched scores use exactly those).
    pub fn nac_setup(&self, network: &Network) -> Result<NacSetup> {
        let layers = self.nac.layers.clone().unwrap_or_else(|| Preset::layers_for(network));
        for layer in &layers {
            network.layer_index(layer).map_err(|e| Error::Input(format!("[nac] layers: {e}")))?;
        }
        let preset = self.preset()?.for_network(network)?;
        let defaults = params::resolve(network, &layers, Some(preset), &self.overrides()?)?;
        let grid = match &self.search {
            None => None,
            Some(search) => {
                let grid = match &search.grid {
                    Some(name) => Grid::preset(name.parse()?, network, &layers)?,
                    None => Grid { layers: search.layers.clone() },
                };
                grid.validate()?;
                for l in &grid.layers {
                    network.layer_index(&l.layer).map_err(|e| Error::Input(format!("[[search.layers]]: {e}")))?;
                }
                Some(grid)
            }
        };
        Ok(NacSetup { layers, preset, defaults, grid })
    }
}

/// The NAC settings of an evaluation for one network ([`EvalConfig::nac_setup`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NacSetup {
    pub layers: Vec<String>,
    /// The preset the defaults (and a named grid) come from.
    pub preset: Preset,
    pub defaults: Vec<LayerParams>,
    pub grid: Option<Grid>,
}
