//! `nac bench`: absolute times on the adapter in use, written as JSON (criterion covers the
//! same paths in `benches/engine.rs`). Random weights and inputs: speed does not depend on them.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, StageTime};
use crate::error::{Error, Result};
use crate::kernels::tune::Tuning;
use crate::kernels::{flat_workgroups, ElementwiseParams, Kernel};
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
    /// Also measure the adapter's FP32 FMA peak and report each stage's fraction of it.
    pub peak: bool,
}

/// GPU time of one stage of the NAC pass, with its convolution work.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    /// Median GPU seconds per batch (timestamp queries).
    pub gpu_s: f64,
    pub gflop: f64,
    pub gflops: f64,
    /// `gflops / peak_gflops`, with `--peak`.
    pub fraction_of_peak: Option<f64>,
}

/// The kernel variant one conv call of the NAC pass runs with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvChoice {
    pub stage: String,
    pub variant: String,
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
    /// Per stage of the NAC pass (forward, backward to the official layers) on one batch,
    /// from GPU timestamps; empty when the adapter has no timestamp queries.
    pub stages: Vec<StageReport>,
    /// Sum of the stages' GPU time, their GFLOP, and the whole pass's GFLOP/s on the GPU.
    pub pass_gpu_s: Option<f64>,
    pub pass_gflop: f64,
    pub pass_gflops: Option<f64>,
    /// FP32 FMA throughput measured by `shaders/peak.wgsl`, with `--peak`.
    pub peak_gflops: Option<f64>,
    /// `fixed` (`--no-tune`) or `measured`, and the variant of each conv call of the NAC pass.
    pub tuning: String,
    /// How conv weights are stored: `f32`, or `f16` with `--f16-weights`.
    pub weights: String,
    pub conv_variants: Vec<ConvChoice>,
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
    let layers = Preset::layers_for(&model.network);
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let forward_s = time(settings.repeats, || engine.predict(&mut model, &input, shape).map(drop))?;
    // Pooling reads the predictions back once, so the time includes that readback.
    let nac_pass_s = time(settings.repeats, || PooledStates::compute(engine, &mut model, &input, shape, &refs, None).map(drop))?;

    // Cached pairs with the official layers' neuron counts, from a random source.
    let neurons: Vec<usize> = {
        let one = PooledStates::compute(
            engine,
            &mut model,
            &input[..3 * settings.size * settings.size],
            [1, 3, settings.size, settings.size],
            &refs,
            None,
        )?;
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
    let grid = Grid::preset(Preset::Cifar10, &model.network, &layers)?;
    let started = Instant::now();
    let found = search(engine, &model.network, &grid, &SearchSets { profile: &profile, id_val: &id_val, ood_val: &ood_val }, "bench")?;
    let search_s = started.elapsed().as_secs_f64();

    let peak_gflops = settings.peak.then(|| peak_gflops(engine)).transpose()?;
    let timed = engine.gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY);
    let mut runs: Vec<Vec<StageTime>> = Vec::new();
    if timed {
        for _ in 0..settings.repeats.max(1) + 1 {
            runs.push(PooledStates::time_stages(engine, &mut model, &input, shape, &refs)?);
        }
        runs.remove(0); // warm-up
    }
    let stages: Vec<StageReport> = runs
        .first()
        .map(|first| {
            first
                .iter()
                .enumerate()
                .map(|(i, stage)| {
                    let gpu_s = median(runs.iter().map(|r| r[i].seconds).collect());
                    let gflop = stage.flop as f64 * 1e-9;
                    let gflops = gflop / gpu_s.max(1e-12);
                    StageReport { name: stage.name.clone(), gpu_s, gflop, gflops, fraction_of_peak: peak_gflops.map(|p| gflops / p) }
                })
                .collect()
        })
        .unwrap_or_default();
    let pass_gflop = stages.iter().map(|s| s.gflop).sum::<f64>();
    let pass_gpu_s = timed.then(|| stages.iter().map(|s| s.gpu_s).sum::<f64>());

    let conv_variants =
        engine.conv_variants(&mut model, shape, &refs)?.into_iter().map(|(stage, variant)| ConvChoice { stage, variant }).collect();
    let tuning = match engine.tuning() {
        Tuning::Fixed => "fixed",
        Tuning::Measure { .. } => "measured",
    };
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
        stages,
        pass_gpu_s,
        pass_gflop,
        pass_gflops: pass_gpu_s.map(|s| pass_gflop / s.max(1e-12)),
        peak_gflops,
        tuning: tuning.into(),
        weights: engine.weight_storage().name().into(),
        conv_variants,
    })
}

/// FP32 GFLOP/s of `shaders/peak.wgsl` over 2^20 invocations, its iteration count grown until
/// one run takes at least 0.25 s (so submit and readback overheads do not count).
pub fn peak_gflops(engine: &Engine) -> Result<f64> {
    const THREADS: u32 = 1 << 20;
    let workgroups = flat_workgroups(THREADS, engine.gpu.max_workgroups_per_dim());
    let mut iterations: u32 = 16;
    loop {
        let params = ElementwiseParams { total: THREADS, width: iterations, ..Default::default() };
        let run = || {
            engine.kernels.run_single(
                &engine.gpu,
                Kernel::PeakFma,
                bytemuck::bytes_of(&params),
                workgroups,
                &[None, None, None],
                THREADS as usize,
            )
        };
        run()?;
        let started = Instant::now();
        let out = run()?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::Gpu(format!("the peak kernel left invocation {i} at {}", out[i])));
        }
        if seconds >= 0.25 || iterations >= 1 << 24 {
            return Ok(THREADS as f64 * iterations as f64 * 64.0 / seconds * 1e-9);
        }
        iterations = iterations.saturating_mul(((0.3 / seconds.max(1e-4)) as u32).clamp(2, 64));
    }
}
