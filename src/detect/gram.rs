//! Gram matrices (Sastry & Oore, 2020) as OpenOOD v1.5's `gram_postprocessor` computes them:
//! per layer and power q, the row sums of the Gram matrix of the elementwise q-th power of the
//! layer's map (`G_p`, from the pass's [`crate::nac::LayerStats`]); per predicted class their
//! minima and maxima over the profiling samples, less a held-out tenth per class whose mean
//! total deviation normalises each layer; and the score
//! `−Σ_layers Σ_q δ(x) / norm_layer / max softmax`, with
//! `δ = Σ_c relu(min_c − x_c)/|min_c + 1e-6| + relu(x_c − max_c)/|max_c + 1e-6|`.
//!
//! Deviations from OpenOOD, and why:
//! - Layers: OpenOOD hooks the output of every `nn.Conv2d` and `nn.ReLU` module, which depends
//!   on how a model's Python class is written (its ResNet-18 calls `F.relu`, so only the convs
//!   count). The engine fuses convolutions with their BatchNorm and activation, so the maps it
//!   has are the pooled layers' (each stage's output); Gram reads every pooled layer but the
//!   feature layer (whose 1×1 map OpenOOD does not hook either).
//! - The held-out tenth: OpenOOD draws it with Python's unseeded `random.sample`, so its scores
//!   change from run to run; here it is the first ⌊L/10⌋ of NumPy's
//!   `RandomState(SPLIT_SEED).permutation(L)` per class (one stream, classes in order), which
//!   `tools/detector_reference.py` reproduces.
//! - A layer whose held-out deviations are all 0 would divide by 0 (OpenOOD returns inf/NaN):
//!   that is an error naming the layer.

use super::gaussian::argmax;
use super::{per_row, softmax, Context, Detector, PassSet};
use crate::error::{Error, Result};
use crate::rng::Mt19937;

/// Seed of the per-class held-out split.
pub const SPLIT_SEED: u32 = 0;

/// Per layer: per power, per class, (minima, maxima) of the row sums.
type Bounds = Vec<Vec<Vec<(Vec<f64>, Vec<f64>)>>>;

pub struct Gram {
    powers: usize,
    layers: Vec<String>,
    bounds: Bounds,
    /// Per layer: the mean held-out deviation.
    norms: Vec<f64>,
}

impl Gram {
    pub fn new(powers: usize) -> Self {
        Gram { powers, layers: Vec::new(), bounds: Vec::new(), norms: Vec::new() }
    }
}

/// OpenOOD's `delta`: how far `x` lies outside `[min, max]`, relative to the bounds.
fn deviation((mins, maxs): &(Vec<f64>, Vec<f64>), x: &[f32]) -> f64 {
    mins.iter()
        .zip(maxs)
        .zip(x)
        .map(|((&lo, &hi), &x)| {
            let x = x as f64;
            (lo - x).max(0.0) / (lo + 1e-6).abs() + (x - hi).max(0.0) / (hi + 1e-6).abs()
        })
        .sum()
}

/// Per class (in class order): its samples in set order, split into (fitted, held out).
fn split(labels: &[usize], classes: usize) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    let mut rng = Mt19937::new(SPLIT_SEED);
    (0..classes)
        .map(|c| {
            let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
            if members.is_empty() {
                return Err(Error::Input(format!("Gram: class {c} has no profiling sample to take bounds from")));
            }
            let mut order: Vec<usize> = (0..members.len()).collect();
            rng.shuffle(&mut order);
            let held = members.len() / 10;
            let pick = |at: &[usize]| at.iter().map(|&k| members[k]).collect::<Vec<usize>>();
            Ok((pick(&order[held..]), pick(&order[..held])))
        })
        .collect()
}

impl Detector for Gram {
    fn fit(&mut self, cx: &Context, train: &PassSet, _: Option<&PassSet>) -> Result<()> {
        let labels = train.labels_for("Gram")?;
        let feature = cx.network.feature_layer();
        self.layers = train.layer_stats.iter().filter(|s| s.layer != feature).map(|s| s.layer.clone()).collect();
        if self.layers.is_empty() {
            return Err(Error::Input(format!("Gram reads the maps of layers before `{feature}`, and none was pooled")));
        }
        let parts = split(labels, train.classes)?;
        if parts.iter().all(|(_, held)| held.is_empty()) {
            return Err(Error::Input("Gram holds out a tenth of each class to normalise by, and no class has 10 profiling samples".into()));
        }
        self.bounds.clear();
        self.norms.clear();
        for layer in &self.layers {
            let stats = train.stats(layer, self.powers, "Gram")?;
            let mut per_power = Vec::with_capacity(self.powers);
            for q in 1..=self.powers {
                let per_class: Vec<(Vec<f64>, Vec<f64>)> = parts
                    .iter()
                    .map(|(fitted, _)| {
                        let mut lo = vec![f64::INFINITY; stats.channels];
                        let mut hi = vec![f64::NEG_INFINITY; stats.channels];
                        for &i in fitted {
                            for (c, &v) in stats.gram(i, q).iter().enumerate() {
                                lo[c] = lo[c].min(v as f64);
                                hi[c] = hi[c].max(v as f64);
                            }
                        }
                        (lo, hi)
                    })
                    .collect();
                per_power.push(per_class);
            }
            let held: Vec<f64> = parts
                .iter()
                .enumerate()
                .flat_map(|(c, (_, held))| held.iter().map(move |&i| (c, i)))
                .map(|(c, i)| (1..=self.powers).map(|q| deviation(&per_power[q - 1][c], stats.gram(i, q))).sum())
                .collect();
            let norm = held.iter().sum::<f64>() / held.len() as f64;
            if norm == 0.0 {
                return Err(Error::Input(format!(
                    "Gram: every held-out profiling sample lies within the bounds at layer `{layer}`, so it has no scale to normalise by; use more profiling samples"
                )));
            }
            self.bounds.push(per_power);
            self.norms.push(norm);
        }
        Ok(())
    }

    fn score(&self, _: &Context, set: &PassSet) -> Result<Vec<f32>> {
        let stats: Vec<_> = self.layers.iter().map(|l| set.stats(l, self.powers, "Gram")).collect::<Result<_>>()?;
        per_row(set.logit_rows().enumerate(), "Gram", |(i, logits)| {
            let class = argmax(logits);
            let confidence = softmax(logits)[class];
            let total: f64 = stats
                .iter()
                .zip(&self.bounds)
                .zip(&self.norms)
                .map(|((s, bounds), norm)| (1..=self.powers).map(|q| deviation(&bounds[q - 1][class], s.gram(i, q))).sum::<f64>() / norm)
                .sum();
            -total / confidence
        })
    }
}
