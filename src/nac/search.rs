//! Automatic parameter search (spec §5) on cached pooled pairs: every (O, M, α) combination is a
//! re-binning of pairs already on the GPU, never another network pass.
//!
//! The combined score is the mean of the layer scores, and a layer's score depends only on that
//! layer's own (O, M, α). So the search scores each layer once per entry of its own grid (a
//! few dozen GPU re-binnings for the official grids) and then walks the full Cartesian product
//! on the CPU, averaging per-sample layer scores and taking the AUROC of ID-validation against
//! OOD-validation. Combinations are enumerated layer by layer in the given order, the last layer
//! varying fastest, and within a layer O, then M, then α; the first maximum wins.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::file::Binning;
use super::params::{official_role, LayerParams, Preset, OFFICIAL_LAYERS, OFFICIAL_VIT_LAYERS};
use super::pooled::PooledStates;
use super::profile::Profile;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::limits;
use crate::metrics;
use crate::model::Network;

/// Candidate values of one layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerGrid {
    pub layer: String,
    pub o: Vec<f64>,
    pub m: Vec<usize>,
    pub alpha: Vec<f64>,
}

impl LayerGrid {
    /// `|O| × |M| × |α|`, saturating.
    fn candidate_count(&self) -> usize {
        self.o.len().saturating_mul(self.m.len()).saturating_mul(self.alpha.len())
    }

    /// This layer's candidates, O outermost and α fastest.
    fn candidates(&self) -> Vec<LayerParams> {
        let mut out = Vec::with_capacity(self.o.len() * self.m.len() * self.alpha.len());
        for &o in &self.o {
            for &m in &self.m {
                for &alpha in &self.alpha {
                    out.push(LayerParams::new(&self.layer, o, m, alpha));
                }
            }
        }
        out
    }
}

/// A search grid: one [`LayerGrid`] per layer, in the layer order of the final score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub layers: Vec<LayerGrid>,
}

impl Grid {
    /// The official grid of a benchmark (spec §5; §8 for a ViT) for `layers` of `network`, each
    /// taking the values of its [`official_role`]; the preset as [`Preset::for_network`] resolves
    /// it (a ViT's grid is always `imagenet-vit`'s). A layer the grid has no values for is an
    /// error naming it.
    pub fn preset(preset: Preset, network: &Network, layers: &[String]) -> Result<Grid> {
        type Entry = (&'static [f64], &'static [usize], &'static [f64]);
        let preset = preset.for_network(network)?;
        let table: [(&str, Entry); 4] = match preset {
            Preset::Cifar10 => [
                ("avgpool", (&[10.0, 50.0], &[50], &[100.0])),
                ("layer3", (&[100.0], &[50, 500], &[1000.0, 5000.0])),
                ("layer2", (&[5.0, 10.0], &[50], &[0.001])),
                ("layer1", (&[5.0, 10.0, 50.0, 100.0], &[50, 500], &[0.001, 0.005])),
            ],
            Preset::Cifar100 => [
                ("avgpool", (&[50.0], &[50, 500], &[1.0, 50.0])),
                ("layer3", (&[500.0], &[50, 500, 1000], &[10.0, 50.0, 100.0])),
                ("layer2", (&[100.0, 500.0], &[50, 500], &[1.0])),
                ("layer1", (&[5.0, 50.0], &[50], &[0.005])),
            ],
            Preset::Imagenet => [
                ("avgpool", (&[10.0, 50.0, 500.0], &[50, 500], &[3000.0])),
                ("layer3", (&[100.0, 500.0], &[50, 500], &[50.0, 100.0, 300.0])),
                ("layer2", (&[50.0, 500.0], &[500], &[0.01])),
                ("layer1", (&[5000.0], &[500, 1000], &[0.1, 1.0])),
            ],
            Preset::ImagenetVit => [
                (OFFICIAL_VIT_LAYERS[0], (&[500.0], &[50, 500], &[100.0])),
                (OFFICIAL_VIT_LAYERS[1], (&[50.0, 500.0], &[50, 500], &[1.0, 10.0])),
                (OFFICIAL_VIT_LAYERS[2], (&[10.0, 50.0], &[50, 500], &[10.0])),
                (OFFICIAL_VIT_LAYERS[3], (&[10.0, 50.0], &[500, 1000], &[1.0])),
            ],
        };
        let covered = if preset == Preset::ImagenetVit { Preset::layers_for(network) } else { OFFICIAL_LAYERS.map(String::from).to_vec() };
        let layers = layers
            .iter()
            .map(|layer| {
                let role = official_role(network, layer);
                let (_, (o, m, alpha)) = table.iter().find(|(name, _)| Some(*name) == role.as_deref()).ok_or_else(|| {
                    Error::Input(format!("the {preset} search grid has no values for layer `{layer}` (it covers {})", covered.join(", ")))
                })?;
                Ok(LayerGrid { layer: layer.clone(), o: o.to_vec(), m: m.to_vec(), alpha: alpha.to_vec() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Grid { layers })
    }

    /// Number of combinations in the full Cartesian product (saturating: [`Grid::validate`]
    /// refuses grids past [`limits::MAX_GRID_COMBINATIONS`]).
    pub fn combinations(&self) -> usize {
        self.layers.iter().fold(1usize, |acc, l| acc.saturating_mul(l.candidate_count()))
    }

    /// Non-empty, within the limits, and every candidate valid: counted before any candidate
    /// list is built, so an astronomically large grid is refused with its size.
    pub fn validate(&self) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::Input("the search grid names no layers".into()));
        }
        limits::check("the number of layers in the search grid", self.layers.len(), limits::MAX_LAYERS, "MAX_LAYERS")?;
        for l in &self.layers {
            if l.o.is_empty() || l.m.is_empty() || l.alpha.is_empty() {
                return Err(Error::Input(format!("search grid for layer `{}`: O, M and α each need at least one value", l.layer)));
            }
            let what = format!("the search grid for layer `{}` (O × M × α candidates)", l.layer);
            limits::check(&what, l.candidate_count(), limits::MAX_LAYER_CANDIDATES, "MAX_LAYER_CANDIDATES")?;
        }
        let what = format!(
            "the search grid's number of combinations ({})",
            self.layers.iter().map(|l| l.candidate_count().to_string()).collect::<Vec<_>>().join(" × ")
        );
        limits::check(&what, self.combinations(), limits::MAX_GRID_COMBINATIONS, "MAX_GRID_COMBINATIONS")?;
        for l in &self.layers {
            for p in l.candidates() {
                p.validate_for(Binning::LogSymmetric).map_err(|e| Error::Input(format!("search grid: {e}")))?;
            }
        }
        Ok(())
    }
}

/// The cached sets a search reads: profiling samples (histograms), ID validation and OOD
/// validation (the criterion). Never a test set.
pub struct SearchSets<'a> {
    pub profile: &'a PooledStates,
    pub id_val: &'a PooledStates,
    pub ood_val: &'a PooledStates,
}

/// One evaluated combination.
pub type Trial = metrics::Trial<Vec<LayerParams>>;

/// Outcome of a search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchResult {
    /// The first combination with the highest validation AUROC.
    pub best: Vec<LayerParams>,
    pub best_auroc: f64,
    /// Every combination in enumeration order.
    pub trials: Vec<Trial>,
    /// GPU re-binnings done (one per layer candidate).
    pub layer_evaluations: usize,
    pub seconds: f64,
}

/// Histogram counts the search keeps on the GPU at once (candidates are binned in groups).
const SEARCH_COUNT_BYTES: u64 = 256 << 20;

/// One layer candidate with its ID-val and OOD-val layer scores.
type ScoredCandidate = (LayerParams, Vec<f32>, Vec<f32>);

/// Runs the search over `grid` on cached pairs; `preprocessing` is recorded in the profiles.
pub fn search(engine: &Engine, network: &Network, grid: &Grid, sets: &SearchSets, preprocessing: &str) -> Result<SearchResult> {
    grid.validate()?;
    let started = Instant::now();
    // Every layer's candidates binned and scored together: one profile, one histogram
    // submission and one scoring readback per set for each group of candidates whose counts
    // fit the budget, instead of an allocation and three submissions per candidate.
    let candidates: Vec<(usize, LayerParams)> =
        grid.layers.iter().enumerate().flat_map(|(l, layer)| layer.candidates().into_iter().map(move |p| (l, p))).collect();
    let channels = network.layer_channels();
    let count_bytes = |p: &LayerParams| {
        let neurons = channels.iter().find(|(n, _)| *n == p.layer).map_or(0, |c| c.1) as u64;
        (p.m as u64).saturating_sub(1) * neurons * 4
    };
    let mut per_layer: Vec<Vec<ScoredCandidate>> = vec![Vec::new(); grid.layers.len()];
    let mut start = 0;
    while start < candidates.len() {
        let mut end = start + 1;
        let mut bytes = count_bytes(&candidates[start].1);
        while end < candidates.len() && bytes + count_bytes(&candidates[end].1) <= SEARCH_COUNT_BYTES {
            bytes += count_bytes(&candidates[end].1);
            end += 1;
        }
        let group: Vec<LayerParams> = candidates[start..end].iter().map(|(_, p)| p.clone()).collect();
        let mut profile = Profile::for_candidates(engine, network, &group, preprocessing)?;
        profile.add_pooled(engine, sets.profile)?;
        let id = profile.score_pooled(engine, sets.id_val)?.layer_scores;
        let ood = profile.score_pooled(engine, sets.ood_val)?.layer_scores;
        for (((l, params), id), ood) in candidates[start..end].iter().zip(id).zip(ood) {
            per_layer[*l].push((params.clone(), id, ood));
        }
        start = end;
    }
    let layer_evaluations = candidates.len();

    // Every combination, last layer fastest (an odometer over the layers' candidates).
    let mut combos: Vec<Vec<usize>> = vec![Vec::new()];
    for candidates in &per_layer {
        combos = combos.into_iter().flat_map(|c| (0..candidates.len()).map(move |k| [c.as_slice(), &[k]].concat())).collect();
    }
    let layers = per_layer.len() as f64;
    let mean = |choice: &[usize], pick: fn(&ScoredCandidate) -> &Vec<f32>, n: usize| -> Vec<f32> {
        let mut sum = vec![0f64; n];
        for (candidates, &c) in per_layer.iter().zip(choice) {
            sum.iter_mut().zip(pick(&candidates[c])).for_each(|(s, &v)| *s += v as f64);
        }
        sum.iter().map(|s| (s / layers) as f32).collect()
    };
    let (best, trials) = metrics::select_by_auroc(combos, |choice| {
        Ok((mean(choice, |c| &c.1, sets.id_val.samples), mean(choice, |c| &c.2, sets.ood_val.samples)))
    })?;
    let trials: Vec<Trial> = trials
        .into_iter()
        .map(|t| Trial {
            params: per_layer.iter().zip(&t.params).map(|(candidates, &c)| candidates[c].0.clone()).collect(),
            auroc: t.auroc,
        })
        .collect();
    Ok(SearchResult {
        best: trials[best].params.clone(),
        best_auroc: trials[best].auroc,
        trials,
        layer_evaluations,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nac::params::tests::{net, vit};

    fn grid_of(layer: &str, o: &[f64], m: &[usize], alpha: &[f64]) -> LayerGrid {
        LayerGrid { layer: layer.into(), o: o.to_vec(), m: m.to_vec(), alpha: alpha.to_vec() }
    }

    #[test]
    fn the_vit_grid_is_the_official_one_by_distance_from_the_end() {
        let b16 = vit(12);
        let grid = Grid::preset(Preset::ImagenetVit, &b16, &Preset::layers_for(&b16)).unwrap();
        let want = [
            grid_of("layer_norm", &[500.0], &[50, 500], &[100.0]),
            grid_of("layer_11", &[50.0, 500.0], &[50, 500], &[1.0, 10.0]),
            grid_of("layer_10", &[10.0, 50.0], &[50, 500], &[10.0]),
            grid_of("layer_9", &[10.0, 50.0], &[500, 1000], &[1.0]),
        ];
        assert_eq!(grid.layers, want);
        assert_eq!(grid.combinations(), 2 * 8 * 4 * 4);
        grid.validate().unwrap();
        // A shallower ViT: its last blocks take layer_11, layer_10, layer_9's candidates, and a
        // CNN grid name resolves to the ViT grid.
        let four = vit(4);
        let layers = Preset::layers_for(&four);
        for preset in [Preset::Cifar10, Preset::Cifar100, Preset::Imagenet, Preset::ImagenetVit] {
            let g = Grid::preset(preset, &four, &layers).unwrap();
            let renamed: Vec<LayerGrid> = want.iter().zip(&layers).map(|(w, l)| LayerGrid { layer: l.clone(), ..w.clone() }).collect();
            assert_eq!(g.layers, renamed, "{preset}");
        }
        let err = Grid::preset(Preset::Cifar10, &four, &["layer_0".to_string()]).unwrap_err().to_string();
        assert!(err.contains("imagenet-vit") && err.contains("layer_0") && err.contains("layer_norm, layer_3, layer_2, layer_1"), "{err}");
        let one = vit(1);
        let g = Grid::preset(Preset::Cifar10, &one, &Preset::layers_for(&one)).unwrap();
        assert_eq!(g.layers, [want[0].clone(), LayerGrid { layer: "layer_0".into(), ..want[1].clone() }]);
    }

    #[test]
    fn cnn_grids_are_unchanged_and_refuse_the_vit_preset() {
        let (resnet, wrn) = (net("resnet18_32x32"), net("wrn-10-1"));
        let g = Grid::preset(Preset::Cifar10, &resnet, &Preset::layers_for(&resnet)).unwrap();
        assert_eq!(g.layers[1], grid_of("layer3", &[100.0], &[50, 500], &[1000.0, 5000.0]));
        assert_eq!(g.combinations(), 256);
        let w = Grid::preset(Preset::Cifar10, &wrn, &Preset::layers_for(&wrn)).unwrap();
        assert_eq!(w.layers[1], grid_of("block3", &[100.0], &[50, 500], &[1000.0, 5000.0]));
        let err = Grid::preset(Preset::ImagenetVit, &resnet, &Preset::layers_for(&resnet)).unwrap_err().to_string();
        assert!(err.contains("imagenet-vit"), "{err}");
        let err = Grid::preset(Preset::Cifar10, &resnet, &["layer4".to_string()]).unwrap_err().to_string();
        assert!(err.contains("layer4") && err.contains("avgpool, layer3, layer2, layer1"), "{err}");
    }
}
