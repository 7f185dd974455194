//! `nac bench`: absolute times on the adapter in use, written as JSON (criterion covers the
//! same paths in `benches/engine.rs`). Random weights and inputs: speed does not depend on them.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::Result;
use crate::model::synthetic::{random_inputs, SyntheticModel};
use crate::model::ArchSpec;
use crate::nac::search::{search, Grid, SearchSets};
use crate::nac::{CachedValues, PooledStates, Preset};
use crate::rng::Rng;

#[derive(Clone, Debug)]
pub struct BenchSettings {
    pub arch: ArchSpec,
    pub batch: usize,
    pub size: usize,
    /// Timed repetitions per measurement (after one warm-up); the median is reported.
    pub repeats: usize,
    /// Cached samples per set for the CIFAR-10 grid search timing (profile, ID val, OOD val).
    pub search_samples: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub adapter: String,
    pub backend: String,
    pub device_type: String,
    pub arch: String,
    pub batch: usize,
    pub size: usize,
    /// Median seconds per batch: forward only (logits).
    pub forward_s: f64,
    /// Median seconds per batch: forward, backward to the official NAC layers, pooled pairs
    /// and predictions (what `nac eval` runs once per sample).
    pub nac_pass_s: f64,
    pub forward_images_per_s: f64,
    pub nac_pass_images_per_s: f64,
    /// The official CIFAR-10 grid (256 combinations) over cached pairs.
    pub search_combinations: usize,
    pub search_samples_per_set: usize,
    pub search_s: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn time(repeats: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

pub fn run_bench(engine: &Engine, settings: &BenchSettings) -> Result<BenchReport> {
    let synthetic = SyntheticModel::new(settings.arch, 10, 0)?;
    let mut model = engine.upload(synthetic.network);
    let shape = [settings.batch, 3, settings.size, settings.size];
    let input = random_inputs(settings.batch, 3, settings.size, settings.size, 1);
    let layers = Preset::layers_for(&model.network.stage_names());
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let forward_s = time(settings.repeats, || engine.predict(&mut model, &input, shape).map(drop))?;
    let nac_pass_s = time(settings.repeats, || {
        let pooled = PooledStates::compute(engine, &mut model, &input, shape, &refs, None)?;
        pooled.read_predictions(engine).map(drop)
    })?;

    // Cached pairs with the official layers' neuron counts, from a random source.
    let neurons: Vec<usize> = {
        let one = PooledStates::compute(engine, &mut model, &input[..3 * settings.size * settings.size], [1, 3, settings.size, settings.size], &refs, None)?;
        refs.iter().map(|l| one.read_values(engine, l).map(|v| v.len() / 2)).collect::<Result<_>>()?
    };
    let n = settings.search_samples;
    let mut rng = Rng::new(7);
    let mut cache = |shift: f32| -> Result<PooledStates> {
        let values: Vec<Vec<f32>> = neurons.iter().map(|&k| (0..n * k * 2).map(|_| rng.normal() * 0.1 + shift).collect()).collect();
        let layers: Vec<(&str, usize, &[f32])> = refs.iter().zip(&neurons).zip(&values).map(|((l, &k), v)| (*l, k, v.as_slice())).collect();
        PooledStates::from_host(engine, model.fingerprint(), CachedValues::Pairs, n, &layers, None)
    };
    let (profile, id_val, ood_val) = (cache(0.0)?, cache(0.0)?, cache(0.05)?);
    let grid = Grid::preset(Preset::Cifar10, &layers)?;
    let started = Instant::now();
    let found = search(engine, &model.network, &grid, &SearchSets { profile: &profile, id_val: &id_val, ood_val: &ood_val }, "bench")?;
    let search_s = started.elapsed().as_secs_f64();

    let info = &engine.gpu.info;
    Ok(BenchReport {
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        arch: settings.arch.to_string(),
        batch: settings.batch,
        size: settings.size,
        forward_s,
        nac_pass_s,
        forward_images_per_s: settings.batch as f64 / forward_s,
        nac_pass_images_per_s: settings.batch as f64 / nac_pass_s,
        search_combinations: found.trials.len(),
        search_samples_per_set: n,
        search_s,
    })
}
