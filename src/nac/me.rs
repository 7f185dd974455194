//! NAC-ME (spec §6): model evaluation without OOD data. The feature layer's states (`avgpool`,
//! a ViT's `layer_norm`) with
//! α = 0.1, uniform bins `linspace(0, 1, M)`, only correctly classified samples, O = 500; the
//! value is the mean over neurons of `Σ_bins min(count / O, 1) / M`. Used to pick a checkpoint.

use std::path::PathBuf;

use super::file::{Binning, Counted};
use super::params::LayerParams;
use super::pooled::PooledStates;
use super::profile::Profile;
use crate::engine::{Engine, Model};
use crate::error::{Error, Result};
use crate::model::{ArchSpec, Network};

#[derive(Clone, Debug, PartialEq)]
pub struct MeSettings {
    /// `None`: the network's feature layer (`Network::feature_layer`), the official choice, so
    /// one setting serves checkpoints of any architecture.
    pub layer: Option<String>,
    pub alpha: f64,
    pub m: usize,
    pub o: f64,
}

impl Default for MeSettings {
    fn default() -> Self {
        MeSettings { layer: None, alpha: 0.1, m: 50, o: 500.0 }
    }
}

impl MeSettings {
    /// The layer measured on `network`.
    pub fn layer_of<'a>(&'a self, network: &Network) -> &'a str {
        self.layer.as_deref().unwrap_or(network.feature_layer())
    }
}

/// NAC-ME of one model on labelled data.
#[derive(Clone, Debug, PartialEq)]
pub struct MeResult {
    pub value: f64,
    /// The layer measured.
    pub layer: String,
    /// Samples the model classifies correctly (the only ones counted).
    pub correct: usize,
    pub samples: usize,
}

/// Labelled images: NCHW `input` of `shape`, one label per sample.
#[derive(Clone, Copy, Debug)]
pub struct LabelledImages<'a> {
    pub input: &'a [f32],
    pub shape: [usize; 4],
    pub labels: &'a [usize],
}

pub fn nac_me(engine: &Engine, model: &mut Model, data: LabelledImages, settings: &MeSettings) -> Result<MeResult> {
    let layer = settings.layer_of(&model.network);
    let pooled = PooledStates::compute(engine, model, data.input, data.shape, &[layer], Some(data.labels))?;
    nac_me_pooled(engine, &model.network, &pooled, settings)
}

/// NAC-ME from labelled pooled states of `network` (several settings, one network pass).
pub fn nac_me_pooled(engine: &Engine, network: &Network, pooled: &PooledStates, settings: &MeSettings) -> Result<MeResult> {
    let layer = settings.layer_of(network);
    let params = [LayerParams::new(layer, settings.o, settings.m, settings.alpha)];
    let mut profile = Profile::with_binning(engine, network, &params, "", Binning::Uniform, Counted::Correct)?;
    profile.add_pooled(engine, pooled)?;
    let value = profile.coverage(engine)?[0];
    let correct = pooled.predictions().correct.iter().filter(|&&c| c).count();
    Ok(MeResult { value, layer: layer.to_string(), correct, samples: pooled.samples })
}

/// NAC-ME of a list of checkpoints on the same data, the checkpoint it selects and, given each
/// checkpoint's test accuracy, how well NAC-ME ranks them.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointReport {
    pub checkpoints: Vec<PathBuf>,
    pub results: Vec<MeResult>,
    /// Index of the checkpoint with the highest NAC-ME (the first, on ties).
    pub chosen: usize,
    pub test_accuracies: Option<Vec<f64>>,
    /// Spearman rank correlation between NAC-ME and test accuracy.
    pub spearman: Option<f64>,
}

pub fn evaluate_checkpoints(
    engine: &Engine,
    checkpoints: &[PathBuf],
    arch: Option<ArchSpec>,
    data: LabelledImages,
    settings: &MeSettings,
    test_accuracies: Option<&[f64]>,
) -> Result<CheckpointReport> {
    if checkpoints.is_empty() {
        return Err(Error::Input("no checkpoints to evaluate".into()));
    }
    if let Some(acc) = test_accuracies {
        if acc.len() != checkpoints.len() {
            return Err(Error::Input(format!("{} accuracies for {} checkpoints", acc.len(), checkpoints.len())));
        }
    }
    let mut results = Vec::with_capacity(checkpoints.len());
    for path in checkpoints {
        let mut model: Model = engine.load_model(path, arch)?;
        results.push(nac_me(engine, &mut model, data, settings)?);
    }
    let chosen = results.iter().enumerate().fold(0, |best, (i, r)| if r.value > results[best].value { i } else { best });
    let values: Vec<f64> = results.iter().map(|r| r.value).collect();
    Ok(CheckpointReport {
        checkpoints: checkpoints.to_vec(),
        results,
        chosen,
        spearman: test_accuracies.and_then(|acc| spearman(&values, acc)),
        test_accuracies: test_accuracies.map(|a| a.to_vec()),
    })
}

/// Ranks from 1, ties sharing their average rank (as scipy.stats.rankdata does).
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        for &k in &order[i..=j] {
            ranks[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (Pearson correlation of the ranks); `None` for fewer than two
/// values or when either side is constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    pearson(&ranks(a), &ranks(b))
}

/// Pearson's correlation; `None` for fewer than two values or when either side is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_matches_scipy() {
        // scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233
        let r = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5.0, 6.0, 7.0, 8.0, 7.0]).unwrap();
        assert!((r - 0.820_782_681_668_123_3).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(ranks(&[10.0, 20.0, 10.0, 5.0]), vec![2.5, 4.0, 2.5, 1.0]);
        // numpy.corrcoef([1, 2, 3, 4, 5], [2, 1, 4, 3, 7])[0, 1] = 0.8241633836921342
        let r = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 7.0]).unwrap();
        assert!((r - 0.824_163_383_692_134_2).abs() < 1e-12, "{r}");
    }
}
