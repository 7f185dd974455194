//! Pooled pairs `(Σ_hw z, Σ_hw g)` per sample and neuron, cached on the GPU. They do not depend
//! on any NAC hyperparameter, so one network pass serves every (O, M, α): profiling and scoring
//! from the cache is a re-binning (parameter search, parity checks). A cache can also hold
//! pairs or finished states computed elsewhere (`from_host`).

use super::gpu::{pairs_call, run_set, NacCall, PlanCalls, SetBatch};
use super::profile::check_labels;
use crate::engine::{ChunkBuffers, Engine, Model, StageTime, TimedWork};
use crate::error::{Error, Result, NOT_FINITE_HELP};
use crate::kernels::{nac_flags, Kernel, NacParams, MAX_GRAM_POWERS};

/// Sets pooled by a network pass in this process (see [`PooledStates::passes`]).
static PASSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// f32 values per sample in a prediction summary.
pub(crate) const SUMMARY_STRIDE: usize = 4;

/// Per sample of a set, on the GPU: (predicted class, max softmax, correct, energy) as four f32,
/// where "correct" is 1 when the prediction equals the label, or when there are no labels.
pub(crate) struct Predictions {
    pub summary: wgpu::Buffer,
    labels: Option<wgpu::Buffer>,
}

impl Predictions {
    pub fn new(engine: &Engine, total: usize, labels: Option<&[usize]>) -> Self {
        let labels = labels.map(|l| engine.gpu.upload_f32("labels", &l.iter().map(|&c| c as f32).collect::<Vec<_>>()));
        Predictions { summary: engine.gpu.upload_f32("predictions", &vec![f32::NAN; SUMMARY_STRIDE * total]), labels }
    }

    /// The predict call over a chunk's logits.
    pub fn call(&self, engine: &Engine, logits: &wgpu::Buffer, classes: usize) -> NacCall {
        let flags = if self.labels.is_some() { nac_flags::HAS_LABELS } else { 0 };
        let params = NacParams { classes: classes as u32, flags, ..Default::default() };
        NacCall::new(engine, Kernel::NacPredict, params, [Some(logits), self.labels.as_ref(), None, None], &self.summary)
    }

    /// The first sample whose summary (from the logits) is not finite, as an error.
    pub fn check_finite(summary: &[f32]) -> Result<()> {
        match summary.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(Error::NotFinite { sample: i / SUMMARY_STRIDE, message: NOT_FINITE_HELP.into() }),
            None => Ok(()),
        }
    }

    /// Reads the summary of `total` samples back and checks it (see [`Predictions::check_finite`]).
    pub fn read_checked(&self, engine: &Engine, total: usize) -> Result<Vec<f32>> {
        let summary = engine.gpu.read_f32(&self.summary, SUMMARY_STRIDE * total)?;
        Self::check_finite(&summary)?;
        Ok(summary)
    }

    /// The per-sample columns of a read-back summary.
    pub fn unpack(summary: &[f32]) -> Predicted {
        let rows = summary.chunks_exact(SUMMARY_STRIDE);
        Predicted {
            class: rows.clone().map(|r| r[0] as usize).collect(),
            max_softmax: rows.clone().map(|r| r[1]).collect(),
            correct: rows.clone().map(|r| r[2] != 0.0).collect(),
            energy: rows.map(|r| r[3]).collect(),
        }
    }
}

/// What the forward pass says about each sample, besides NAC: the predicted class, and the two
/// classic confidence scores from the same logits (higher = more in-distribution).
#[derive(Clone, Debug, PartialEq)]
pub struct Predicted {
    pub class: Vec<usize>,
    /// Maximum softmax probability (MSP baseline).
    pub max_softmax: Vec<f32>,
    /// Prediction equals the label (true for every sample of an unlabelled set).
    pub correct: Vec<bool>,
    /// Energy score `logsumexp(logits)` (the negative free energy at temperature 1).
    pub energy: Vec<f32>,
}

/// The pooling of one set: its caches (created on the first chunk, when the layers' widths are
/// known) and the calls that fill them from each plan's buffers.
struct Pooling {
    predictions: Predictions,
    total: usize,
    classes: usize,
    calls: PlanCalls,
    caches: Vec<(String, usize, wgpu::Buffer)>,
    /// Gram powers of the layer statistics, when asked for.
    stats_powers: Option<usize>,
    /// Per layer: the statistics buffer `[samples][(1 + powers) · neurons]`.
    stats: Vec<wgpu::Buffer>,
}

impl Pooling {
    fn new(engine: &Engine, total: usize, classes: usize, labels: Option<&[usize]>, stats_powers: Option<usize>) -> Self {
        Pooling {
            predictions: Predictions::new(engine, total, labels),
            total,
            classes,
            calls: PlanCalls::new(),
            caches: Vec::new(),
            stats_powers,
            stats: Vec::new(),
        }
    }

    fn record(
        &mut self,
        engine: &Engine,
        chunk: &ChunkBuffers,
        encoder: &mut wgpu::CommandEncoder,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
    ) -> Result<()> {
        let total = self.total;
        if self.caches.is_empty() {
            for lb in &chunk.layers {
                let neurons = lb.shape.c;
                let bytes = (total * neurons * 8) as u64;
                if bytes > engine.gpu.max_binding_bytes() {
                    return Err(Error::Input(format!(
                        "pooled pairs of layer `{}` for {total} samples need {bytes} bytes, over this adapter's binding limit; use fewer samples",
                        lb.name
                    )));
                }
                let out = engine.gpu.upload_f32(&format!("{} pairs", lb.name), &vec![f32::NAN; total * neurons * 2]);
                self.caches.push((lb.name.to_string(), neurons, out));
                if let Some(powers) = self.stats_powers {
                    let values = total * neurons * (1 + powers);
                    if (values * 4) as u64 > engine.gpu.max_binding_bytes() {
                        return Err(Error::Input(format!(
                            "statistics of layer `{}` for {total} samples need {} bytes, over this adapter's binding limit; use fewer samples",
                            lb.name,
                            values * 4
                        )));
                    }
                    self.stats.push(engine.gpu.upload_f32(&format!("{} statistics", lb.name), &vec![f32::NAN; values]));
                }
            }
        }
        let (predictions, caches, classes, stats) = (&self.predictions, &self.caches, self.classes, &self.stats);
        let powers = self.stats_powers.unwrap_or(0) as u32;
        self.calls.record_timed(engine, encoder, chunk, timestamps, |chunk| {
            let mut calls = vec![predictions.call(engine, chunk.logits, classes)];
            for (i, (lb, (_, _, out))) in chunk.layers.iter().zip(caches).enumerate() {
                calls.push(pairs_call(engine, lb, out, 0));
                if let Some(stats) = stats.get(i) {
                    let params =
                        NacParams { hw: (lb.shape.h * lb.shape.w) as u32, neurons: lb.shape.c as u32, powers, ..Default::default() };
                    calls.push(NacCall::new(engine, Kernel::NacLayerStats, params, [Some(lb.z), None, None, None], stats));
                }
            }
            Ok(calls)
        })
    }
}

/// What a cache holds per sample and neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedValues {
    /// `(Σz, Σg)`: states are formed with each layer's α when binned.
    Pairs,
    /// Finished states `s ∈ [0, 1]`: α is not applied again.
    States,
}

/// Pooled pairs (or states) of a set of samples for some layers, and their predictions.
pub struct PooledStates {
    pub samples: usize,
    pub model_fingerprint: String,
    pub values: CachedValues,
    /// (layer, neurons, values `[samples][neurons]`, two per neuron for pairs).
    layers: Vec<(String, usize, wgpu::Buffer)>,
    pub(crate) predictions: Predictions,
    /// Whether the predictions' "correct" flags come from labels.
    labelled: bool,
    /// The prediction summary on the host, read back (and checked finite) once when pooled.
    summary: Vec<f32>,
    /// Gram powers and per layer the statistics buffer, when computed.
    stats: Option<(usize, Vec<wgpu::Buffer>)>,
}

/// What the detectors beyond Σz read of one layer, per sample: the channel means and the Gram
/// row sums of powers 1..=`powers` (see `layer_stats` in `shaders/nac.wgsl`).
#[derive(Clone, Debug)]
pub struct LayerStats {
    pub layer: String,
    pub channels: usize,
    pub powers: usize,
    /// `[samples][(1 + powers) · channels]`: means, then each power's row sums.
    pub values: Vec<f32>,
}

impl LayerStats {
    fn row(&self, sample: usize) -> &[f32] {
        let len = (1 + self.powers) * self.channels;
        &self.values[sample * len..(sample + 1) * len]
    }

    pub fn samples(&self) -> usize {
        self.values.len() / ((1 + self.powers) * self.channels).max(1)
    }

    /// The channel means `Σ_hw z / hw` of one sample.
    pub fn mean(&self, sample: usize) -> &[f32] {
        &self.row(sample)[..self.channels]
    }

    /// The Gram row sums of power `q` (1-based) of one sample.
    pub fn gram(&self, sample: usize, q: usize) -> &[f32] {
        &self.row(sample)[q * self.channels..(q + 1) * self.channels]
    }
}

impl PooledStates {
    /// One network pass over an NCHW batch; keeps the pooled pairs of `layers` (and the
    /// predictions, marked correct against `labels` if given) on the GPU.
    pub fn compute(
        engine: &Engine,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        layers: &[&str],
        labels: Option<&[usize]>,
    ) -> Result<Self> {
        Self::compute_streamed(engine, model, shape[0], layers, labels, [Ok((0, input, shape))])
    }

    /// [`Engine::time_stages`] of the pass that pooling an NCHW batch makes, its NAC kernels
    /// (predictions and pooled pairs) timed as a last stage, `NAC kernels`.
    pub fn time_stages(engine: &Engine, model: &mut Model, input: &[f32], shape: [usize; 4], layers: &[&str]) -> Result<Vec<StageTime>> {
        let mut pooling = Pooling::new(engine, shape[0], model.network.num_classes(), None, None);
        let mut record = |chunk: &ChunkBuffers, encoder: &mut wgpu::CommandEncoder, timestamps: wgpu::ComputePassTimestampWrites<'_>| {
            pooling.record(engine, chunk, encoder, Some(timestamps))
        };
        engine.time_stages(model, input, shape, layers, Some(TimedWork { name: "NAC kernels", record: &mut record }))
    }

    /// Like [`PooledStates::compute`] for `total` samples that arrive as NCHW batches
    /// `(first sample, input, shape)` in any order, e.g. from the prefetching loader
    /// ([`crate::data::batches`]): while the GPU works on one batch, the next is decoded, and at
    /// most two chunks are in flight across batches.
    pub fn compute_streamed<I: AsRef<[f32]>>(
        engine: &Engine,
        model: &mut Model,
        total: usize,
        layers: &[&str],
        labels: Option<&[usize]>,
        batches: impl IntoIterator<Item = SetBatch<I>>,
    ) -> Result<Self> {
        Self::compute_streamed_with_stats(engine, model, total, layers, labels, None, batches)
    }

    /// Like [`PooledStates::compute_streamed`], and with `stats_powers` also every layer's
    /// [`LayerStats`] with that many Gram powers (0: channel means only), from the same pass.
    pub fn compute_streamed_with_stats<I: AsRef<[f32]>>(
        engine: &Engine,
        model: &mut Model,
        total: usize,
        layers: &[&str],
        labels: Option<&[usize]>,
        stats_powers: Option<usize>,
        batches: impl IntoIterator<Item = SetBatch<I>>,
    ) -> Result<Self> {
        let classes = model.network.num_classes();
        if let Some(l) = labels {
            check_labels(l, total, classes)?;
        }
        if let Some(p) = stats_powers.filter(|&p| p > MAX_GRAM_POWERS) {
            return Err(Error::Input(format!("{p} Gram powers: at most {MAX_GRAM_POWERS}")));
        }
        let mut pooling = Pooling::new(engine, total, classes, labels, stats_powers);
        PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_set(engine, model, total, layers, batches, &mut |chunk, encoder| pooling.record(engine, chunk, encoder, None))?;
        engine.gpu.check_while(&format!("pooling layers {}", layers.join(", ")))?;
        let summary = pooling.predictions.read_checked(engine, total)?;
        Ok(PooledStates {
            summary,
            samples: total,
            model_fingerprint: model.fingerprint().to_string(),
            values: CachedValues::Pairs,
            layers: pooling.caches,
            predictions: pooling.predictions,
            labelled: labels.is_some(),
            stats: stats_powers.map(|p| (p, pooling.stats)),
        })
    }

    /// A cache from host values: per layer `(name, neurons, values)` with `samples × neurons`
    /// states or `samples × neurons × 2` pairs, for the model with `model_fingerprint`, with
    /// the samples' predictions `(class, max softmax, correct)` if known (else zeros: such a
    /// cache cannot feed a profile that counts only correct samples); energies are left 0.
    pub fn from_host(
        engine: &Engine,
        model_fingerprint: &str,
        values: CachedValues,
        samples: usize,
        layers: &[(&str, usize, &[f32])],
        predictions: Option<&[(usize, f32, bool)]>,
    ) -> Result<Self> {
        let per_neuron = if values == CachedValues::Pairs { 2 } else { 1 };
        let mut buffers = Vec::with_capacity(layers.len());
        for (name, neurons, data) in layers {
            if data.len() != samples * neurons * per_neuron {
                return Err(Error::Input(format!(
                    "layer `{name}`: {} values, expected {samples} samples × {neurons} neurons × {per_neuron}",
                    data.len()
                )));
            }
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(Error::Input(format!("layer `{name}`: value {i} is {}", data[i])));
            }
            buffers.push((name.to_string(), *neurons, engine.gpu.upload_f32(&format!("{name} cache"), data)));
        }
        let mut summary = vec![0f32; SUMMARY_STRIDE * samples];
        if let Some(p) = predictions {
            if p.len() != samples {
                return Err(Error::Input(format!("{} predictions for {samples} samples", p.len())));
            }
            for (row, &(class, softmax, correct)) in summary.chunks_exact_mut(SUMMARY_STRIDE).zip(p) {
                row[..3].copy_from_slice(&[class as f32, softmax, correct as u8 as f32]);
            }
        }
        Ok(PooledStates {
            samples,
            model_fingerprint: model_fingerprint.to_string(),
            values,
            layers: buffers,
            predictions: Predictions { summary: engine.gpu.upload_f32("predictions", &summary), labels: None },
            labelled: predictions.is_some(),
            summary,
            stats: None,
        })
    }

    /// How many sets have been pooled by a network pass in this process (each set is one pass
    /// over its samples): lets tests check that detectors add no pass.
    pub fn passes() -> usize {
        PASSES.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kernel flag that tells how to read this cache.
    pub(crate) fn source_flag(&self) -> u32 {
        match self.values {
            CachedValues::Pairs => 0,
            CachedValues::States => nac_flags::GIVEN_STATES,
        }
    }

    pub fn has_labels(&self) -> bool {
        self.labelled
    }

    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    pub(crate) fn pairs(&self, layer: &str) -> Result<&wgpu::Buffer> {
        self.layers
            .iter()
            .find(|(n, _, _)| n == layer)
            .map(|(_, _, b)| b)
            .ok_or_else(|| Error::Input(format!("layer `{layer}` was not pooled (pooled layers: {})", self.layer_names().join(", "))))
    }

    pub(crate) fn neurons(&self, layer: &str) -> usize {
        self.layers.iter().find(|(n, _, _)| n == layer).map_or(0, |l| l.1)
    }

    /// Reads the cached values of `layer` back: `[samples][neurons]`, as `(Σz, Σg)` pairs or
    /// states.
    pub fn read_values(&self, engine: &Engine, layer: &str) -> Result<Vec<f32>> {
        let neurons = self.neurons(layer);
        let per_neuron = if self.values == CachedValues::Pairs { 2 } else { 1 };
        engine.gpu.read_f32(self.pairs(layer)?, self.samples * neurons * per_neuron)
    }

    /// Every pooled layer's statistics read back (checked finite), or none if they were not
    /// computed.
    pub fn read_stats(&self, engine: &Engine) -> Result<Vec<LayerStats>> {
        let Some((powers, buffers)) = &self.stats else { return Ok(Vec::new()) };
        self.layers
            .iter()
            .zip(buffers)
            .map(|((layer, channels, _), buffer)| {
                let values = engine.gpu.read_f32(buffer, self.samples * channels * (1 + powers))?;
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    let message = format!("a non-finite Gram statistic of layer `{layer}` (activations too large for its powers in f32)");
                    return Err(Error::NotFinite { sample: i / (channels * (1 + powers)), message });
                }
                Ok(LayerStats { layer: layer.clone(), channels: *channels, powers: *powers, values })
            })
            .collect()
    }

    /// The predictions, as read back once when the set was pooled.
    pub fn predictions(&self) -> Predicted {
        Predictions::unpack(&self.summary)
    }
}
