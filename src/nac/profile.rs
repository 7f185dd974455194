//! Profiles on the GPU: per-layer histograms `count[bin][neuron]` filled by the fused histogram
//! kernel, and NAC-UE scoring against them. Counts stay on the GPU; they are read back only to
//! save the profile.

use std::path::Path;

use super::bins::BinEdges;
use super::file::{push_index_ranges, Binning, Counted, LayerHeader, ProfileData, ProfileHeader, Shard, PROFILE_FORMAT, PROFILE_VERSION};
use super::gpu::{chunk_pairs, histogram_params, record, run_set, NacCall, PlanCalls, SetBatch};
use super::params::LayerParams;
use super::pooled::{PooledStates, Predictions, SUMMARY_STRIDE};
use crate::engine::{ChunkBuffers, Engine, Model};
use crate::error::{Error, Result, NOT_FINITE_HELP};
use crate::kernels::{nac_flags, Kernel, NacParams};
use crate::model::Network;

struct GpuLayer {
    edges: BinEdges,
    thresholds: wgpu::Buffer,
    counts: wgpu::Buffer,
}

/// Which weights a profile belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    pub arch: String,
    pub fingerprint: String,
}

/// A NAC profile of one model: settings and per-layer histograms on the GPU.
pub struct Profile {
    header: ProfileHeader,
    layers: Vec<GpuLayer>,
}

/// NAC-UE scores of a batch, with what users inspect beside them.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub layers: Vec<String>,
    /// Per sample: mean of the layer scores; higher = more in-distribution.
    pub score: Vec<f32>,
    /// `layer_scores[l][i]`: mean coverage of sample `i`'s states in layer `l`.
    pub layer_scores: Vec<Vec<f32>>,
    pub predicted: Vec<usize>,
    /// Maximum softmax probability and energy `logsumexp(logits)` from the same pass.
    pub max_softmax: Vec<f32>,
    pub energy: Vec<f32>,
}

impl Scores {
    /// One row per sample: index, score, each layer's score, predicted class, max softmax, energy.
    pub fn to_csv(&self) -> String {
        self.to_csv_from(0)
    }

    /// [`Scores::to_csv`] with indices starting at `first` (a shard's rows carry the positions
    /// of its samples in the whole run, so shards concatenate into the one-run file).
    pub fn to_csv_from(&self, first: usize) -> String {
        let mut out = String::from("index,score");
        for l in &self.layers {
            out.push_str(&format!(",{l}"));
        }
        out.push_str(",predicted,max_softmax,energy\n");
        for i in 0..self.score.len() {
            out.push_str(&format!("{},{}", first + i, self.score[i]));
            for layer in &self.layer_scores {
                out.push_str(&format!(",{}", layer[i]));
            }
            out.push_str(&format!(",{},{},{}\n", self.predicted[i], self.max_softmax[i], self.energy[i]));
        }
        out
    }
}

impl Profile {
    /// An empty NAC-UE profile of `network` (log-symmetric bins, every sample counted).
    pub fn new(engine: &Engine, network: &Network, layers: &[LayerParams], preprocessing: &str) -> Result<Self> {
        Self::with_binning(engine, network, layers, preprocessing, Binning::LogSymmetric, Counted::All)
    }

    pub fn with_binning(
        engine: &Engine,
        network: &Network,
        layers: &[LayerParams],
        preprocessing: &str,
        binning: Binning,
        counted: Counted,
    ) -> Result<Self> {
        let (identity, sized) = sized_layers(network, layers)?;
        Self::for_layout(engine, &identity, &sized, preprocessing, binning, counted)
    }

    /// A profile whose entries may repeat a layer with other parameters: the parameter
    /// search bins and scores many candidates of each layer in one submission. Never saved.
    pub(crate) fn for_candidates(engine: &Engine, network: &Network, candidates: &[LayerParams], preprocessing: &str) -> Result<Self> {
        let (identity, sized) = sized_layers(network, candidates)?;
        Self::build(engine, &identity, &sized, preprocessing, Binning::LogSymmetric, Counted::All, true)
    }

    /// An empty profile over named groups of neurons `(params, neurons)` of the model
    /// `identity`, for states that come from elsewhere ([`PooledStates::from_host`]).
    pub fn for_layout(
        engine: &Engine,
        identity: &ModelIdentity,
        layers: &[(LayerParams, usize)],
        preprocessing: &str,
        binning: Binning,
        counted: Counted,
    ) -> Result<Self> {
        Self::build(engine, identity, layers, preprocessing, binning, counted, false)
    }

    fn build(
        engine: &Engine,
        identity: &ModelIdentity,
        layers: &[(LayerParams, usize)],
        preprocessing: &str,
        binning: Binning,
        counted: Counted,
        repeats: bool,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Input("a profile needs at least one layer".into()));
        }
        let mut headers: Vec<LayerHeader> = Vec::with_capacity(layers.len());
        for (p, neurons) in layers {
            p.validate_for(binning)?;
            if !repeats && headers.iter().any(|h| h.name == p.layer) {
                return Err(Error::Input(format!("layer `{}` is listed twice", p.layer)));
            }
            if *neurons == 0 {
                return Err(Error::Input(format!("layer `{}` has no neurons", p.layer)));
            }
            let edges = binning.edges(p.m).map_err(|e| Error::Input(format!("layer `{}`: {e}", p.layer)))?;
            check_counts_fit(engine, &p.layer, p.m, *neurons)?;
            headers.push(LayerHeader { name: p.layer.clone(), neurons: *neurons, o: p.o, m: p.m, alpha: p.alpha, edges: edges.edges });
        }
        let header = ProfileHeader {
            format: PROFILE_FORMAT.into(),
            version: PROFILE_VERSION,
            arch: identity.arch.clone(),
            model_fingerprint: identity.fingerprint.clone(),
            preprocessing: preprocessing.to_string(),
            binning,
            counted,
            samples: 0,
            layers: headers,
            shard: None,
            sources: Vec::new(),
        };
        let zeros: Vec<Vec<u32>> = header.layers.iter().map(|l| vec![0; (l.m - 1) * l.neurons]).collect();
        Self::upload(engine, header, &zeros)
    }

    fn upload(engine: &Engine, header: ProfileHeader, counts: &[Vec<u32>]) -> Result<Self> {
        let mut layers = Vec::with_capacity(header.layers.len());
        if counts.len() != header.layers.len() {
            return Err(Error::Input(format!("{} count arrays for {} layers", counts.len(), header.layers.len())));
        }
        for (l, c) in header.layers.iter().zip(counts) {
            if c.len() != (l.m - 1) * l.neurons {
                return Err(Error::Input(format!(
                    "layer `{}`: {} counts, expected {} bins × {} neurons",
                    l.name,
                    c.len(),
                    l.m - 1,
                    l.neurons
                )));
            }
            let edges = header.binning.edges(l.m)?;
            check_counts_fit(engine, &l.name, l.m, l.neurons)?;
            layers.push(GpuLayer {
                thresholds: engine.gpu.upload(&format!("{} thresholds", l.name), &edges.thresholds),
                counts: engine.gpu.upload(&format!("{} counts", l.name), c),
                edges,
            });
        }
        Ok(Profile { header, layers })
    }

    pub fn header(&self) -> &ProfileHeader {
        &self.header
    }

    /// Marks the profile as part `shard` of a sharded run (recorded in its file).
    pub fn set_shard(&mut self, shard: Option<Shard>) {
        self.header.shard = shard;
    }

    /// Records which source samples (indices into the input array or dataset) were counted.
    pub fn record_sources(&mut self, indices: impl IntoIterator<Item = usize>) {
        push_index_ranges(&mut self.header.sources, indices.into_iter().map(|i| i as u64));
    }

    pub fn layer_names(&self) -> Vec<&str> {
        self.header.layer_names()
    }

    pub fn edges(&self, layer: usize) -> &BinEdges {
        &self.layers[layer].edges
    }

    /// Fails unless `network` is the model this profile was built with.
    pub fn check_model(&self, network: &Network) -> Result<()> {
        self.check_fingerprint(&network.fingerprint())
    }

    fn check_fingerprint(&self, fingerprint: &str) -> Result<()> {
        if fingerprint != self.header.model_fingerprint {
            return Err(Error::Input(format!(
                "the profile was built with model {} but this model is {fingerprint}: profiles only apply to the weights they were built with",
                self.header.model_fingerprint
            )));
        }
        Ok(())
    }

    /// Fails unless `layers` are the profile's layers, in order.
    pub fn check_layers(&self, layers: &[String]) -> Result<()> {
        if self.layer_names() != layers.iter().map(|s| s.as_str()).collect::<Vec<_>>() {
            return Err(Error::Input(format!("the profile covers layers {}, not {}", self.layer_names().join(","), layers.join(","))));
        }
        Ok(())
    }

    /// Fails unless `preprocessing` is the one the profile was built with.
    pub fn check_preprocessing(&self, preprocessing: &str) -> Result<()> {
        if preprocessing != self.header.preprocessing {
            return Err(Error::Input(format!(
                "the profile was built with preprocessing `{}`, not `{preprocessing}`",
                self.header.preprocessing
            )));
        }
        Ok(())
    }

    /// Runs the network on an NCHW batch and adds every sample's states to the histograms. On
    /// an error (e.g. a sample whose pass overflows) the histograms may hold part of the batch:
    /// discard the profile.
    pub fn add(&mut self, engine: &Engine, model: &mut Model, input: &[f32], shape: [usize; 4]) -> Result<()> {
        self.add_streamed(engine, model, shape[0], None, [Ok((0, input, shape))])
    }

    /// Like [`Profile::add`] for a profile that counts only correctly classified samples.
    pub fn add_labelled(&mut self, engine: &Engine, model: &mut Model, input: &[f32], shape: [usize; 4], labels: &[usize]) -> Result<()> {
        self.add_streamed(engine, model, shape[0], Some(labels), [Ok((0, input, shape))])
    }

    /// Adds a set of `total` samples that arrive as NCHW batches `(first sample, input, shape)`
    /// in any order and of any input size (e.g. from the prefetching loader), with their
    /// `labels` when the profile counts only correctly classified samples. The histogram calls
    /// are bound once per plan for the whole set; a non-finite sample is an error naming its
    /// position in the set.
    pub fn add_streamed<I: AsRef<[f32]>>(
        &mut self,
        engine: &Engine,
        model: &mut Model,
        total: usize,
        labels: Option<&[usize]>,
        batches: impl IntoIterator<Item = SetBatch<I>>,
    ) -> Result<()> {
        match (self.header.counted, labels) {
            (Counted::Correct, None) => {
                return Err(Error::Input("this profile counts only correctly classified samples: give labels".into()))
            }
            (Counted::All, Some(_)) => return Err(Error::Input("this profile counts every sample: give no labels".into())),
            _ => {}
        }
        self.check_fingerprint(model.fingerprint())?;
        let classes = model.network.num_classes();
        if let Some(l) = labels {
            check_labels(l, total, classes)?;
        }
        // Predictions are made even when every sample counts: a non-finite one must fail the run.
        let predictions = Predictions::new(engine, total, labels);
        let flags = if labels.is_some() { nac_flags::MASKED } else { 0 };
        let names = self.layer_names();
        let mut calls = PlanCalls::new();
        let (header, layers) = (&self.header, &self.layers);
        run_set(engine, model, total, &names, batches, &mut |chunk: &ChunkBuffers, encoder| {
            calls.record(engine, encoder, chunk, |chunk| {
                let mut calls = vec![predictions.call(engine, chunk.logits, classes)];
                for ((layer, gpu_layer), lb) in header.layers.iter().zip(layers).zip(&chunk.layers) {
                    let (pooling, pairs) = chunk_pairs(engine, chunk, lb)?;
                    let params = histogram_params(layer.neurons, layer.m, layer.alpha, flags | nac_flags::CHUNK_PAIRS);
                    let summary = labels.is_some().then_some(&predictions.summary);
                    calls.push(pooling);
                    calls.push(NacCall::new(
                        engine,
                        Kernel::NacHistogram,
                        params,
                        [Some(&pairs), None, Some(&gpu_layer.thresholds), summary],
                        &gpu_layer.counts,
                    ));
                }
                Ok(calls)
            })
        })?;
        engine.gpu.check_while(&format!("profiling layers {}", names.join(", ")))?;
        predictions.read_checked(engine, total)?;
        self.header.samples += total as u64;
        Ok(())
    }

    /// Adds cached pooled states (see [`PooledStates`]) to the histograms: a re-binning, no
    /// network pass.
    pub fn add_pooled(&mut self, engine: &Engine, pooled: &PooledStates) -> Result<()> {
        let masked = self.header.counted == Counted::Correct;
        if masked && !pooled.has_labels() {
            return Err(Error::Input("this profile counts only correctly classified samples, but the pooled states have no labels".into()));
        }
        let flags = pooled.source_flag() | if masked { nac_flags::MASKED } else { 0 };
        let calls = self.pooled_calls(pooled, |_, layer, gpu_layer, pairs| {
            let mut params = histogram_params(layer.neurons, layer.m, layer.alpha, flags);
            params.batch = pooled.samples as u32;
            let summary = masked.then_some(&pooled.predictions.summary);
            NacCall::new(engine, Kernel::NacHistogram, params, [Some(pairs), None, Some(&gpu_layer.thresholds), summary], &gpu_layer.counts)
        })?;
        let mut encoder = engine.gpu.device.create_command_encoder(&Default::default());
        record(engine, &mut encoder, &calls);
        engine.gpu.queue.submit([encoder.finish()]);
        engine.gpu.check_while("adding cached pairs to a profile")?;
        self.header.samples += pooled.samples as u64;
        Ok(())
    }

    /// Builds one call per profile layer over the matching cached pairs.
    fn pooled_calls(
        &self,
        pooled: &PooledStates,
        make: impl Fn(usize, &LayerHeader, &GpuLayer, &wgpu::Buffer) -> NacCall,
    ) -> Result<Vec<NacCall>> {
        if pooled.model_fingerprint != self.header.model_fingerprint {
            return Err(Error::Input(format!(
                "the pooled states come from model {} but the profile is for {}",
                pooled.model_fingerprint, self.header.model_fingerprint
            )));
        }
        self.header
            .layers
            .iter()
            .zip(&self.layers)
            .enumerate()
            .map(|(l, (layer, gpu_layer))| {
                let pairs = pooled.pairs(&layer.name)?;
                let neurons = pooled.neurons(&layer.name);
                if neurons != layer.neurons {
                    return Err(Error::Input(format!(
                        "layer `{}`: the cache has {neurons} neurons, the profile {}",
                        layer.name, layer.neurons
                    )));
                }
                Ok(make(l, layer, gpu_layer, pairs))
            })
            .collect()
    }

    /// NAC-UE scores of an NCHW batch (spec §3): per layer the mean over neurons of
    /// `min(count[bin(s)] / O, 1)`, then the mean over layers. One readback at the end.
    pub fn score(&self, engine: &Engine, model: &mut Model, input: &[f32], shape: [usize; 4]) -> Result<Scores> {
        self.score_streamed(engine, model, shape[0], [Ok((0, input, shape))])
    }

    /// [`Profile::score`] of a set of `total` samples arriving as batches, like
    /// [`Profile::add_streamed`]: the scoring calls are bound once per plan, the outputs hold the
    /// whole set, and they are read back once.
    pub fn score_streamed<I: AsRef<[f32]>>(
        &self,
        engine: &Engine,
        model: &mut Model,
        total: usize,
        batches: impl IntoIterator<Item = SetBatch<I>>,
    ) -> Result<Scores> {
        self.check_fingerprint(model.fingerprint())?;
        let classes = model.network.num_classes();
        let outputs = ScoreOutputs::new(engine, self.layers.len(), total);
        let predictions = Predictions::new(engine, total, None);
        let names = self.layer_names();
        let mut calls = PlanCalls::new();
        run_set(engine, model, total, &names, batches, &mut |chunk: &ChunkBuffers, encoder| {
            calls.record(engine, encoder, chunk, |chunk| {
                let mut calls = vec![predictions.call(engine, chunk.logits, classes)];
                for (l, ((layer, gpu_layer), lb)) in self.header.layers.iter().zip(&self.layers).zip(&chunk.layers).enumerate() {
                    let (pooling, pairs) = chunk_pairs(engine, chunk, lb)?;
                    calls.push(pooling);
                    calls.push(outputs.score_call(engine, score_params(layer, l, total, nac_flags::CHUNK_PAIRS), &pairs, gpu_layer));
                }
                Ok(calls)
            })
        })?;
        outputs.finish(engine, engine.gpu.device.create_command_encoder(&Default::default()), self, &predictions)
    }

    /// NAC-UE scores of cached pooled states: a re-binning, no network pass; one submit.
    pub fn score_pooled(&self, engine: &Engine, pooled: &PooledStates) -> Result<Scores> {
        let outputs = ScoreOutputs::new(engine, self.layers.len(), pooled.samples);
        let calls = self.pooled_calls(pooled, |l, layer, gpu_layer, pairs| {
            let mut params = score_params(layer, l, pooled.samples, pooled.source_flag());
            params.batch = pooled.samples as u32;
            outputs.score_call(engine, params, pairs, gpu_layer)
        })?;
        let mut encoder = engine.gpu.device.create_command_encoder(&Default::default());
        record(engine, &mut encoder, &calls);
        outputs.finish(engine, encoder, self, &pooled.predictions)
    }

    /// Per layer, the mean over neurons of `Σ_bins min(count / O, 1) / M` (the NAC-ME value of
    /// spec §6 when the profile uses uniform bins and counts correct samples).
    pub fn coverage(&self, engine: &Engine) -> Result<Vec<f64>> {
        let out = engine.gpu.upload_f32("coverage", &vec![f32::NAN; self.layers.len()]);
        let calls: Vec<NacCall> = self
            .header
            .layers
            .iter()
            .zip(&self.layers)
            .enumerate()
            .map(|(l, (layer, gpu_layer))| {
                let params = NacParams {
                    neurons: layer.neurons as u32,
                    edges: layer.m as u32,
                    o: layer.o as f32,
                    layer: l as u32,
                    ..Default::default()
                };
                NacCall::new(engine, Kernel::NacCoverage, params, [None, None, None, Some(&gpu_layer.counts)], &out)
            })
            .collect();
        let mut encoder = engine.gpu.device.create_command_encoder(&Default::default());
        record(engine, &mut encoder, &calls);
        engine.gpu.queue.submit([encoder.finish()]);
        let values = engine.gpu.read_f32(&out, self.layers.len())?;
        if let Some(l) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Gpu(format!("coverage of layer `{}` came back as {}", self.header.layers[l].name, values[l])));
        }
        Ok(values.into_iter().map(f64::from).collect())
    }

    /// Reads the histograms back: `[bins][neurons]` per layer.
    pub fn counts(&self, engine: &Engine) -> Result<Vec<Vec<u32>>> {
        self.header.layers.iter().zip(&self.layers).map(|(l, g)| engine.gpu.read_u32(&g.counts, (l.m - 1) * l.neurons)).collect()
    }

    pub fn to_data(&self, engine: &Engine) -> Result<ProfileData> {
        Ok(ProfileData { header: self.header.clone(), counts: self.counts(engine)? })
    }

    /// Saves header and counts atomically.
    pub fn save(&self, engine: &Engine, path: &Path) -> Result<()> {
        self.to_data(engine)?.save(path)
    }

    /// Uploads a saved profile for use with `network`, which must be the profiled model.
    pub fn from_data(engine: &Engine, network: &Network, data: ProfileData) -> Result<Self> {
        let channels = network.layer_channels();
        for l in &data.header.layers {
            match channels.iter().find(|(n, _)| *n == l.name) {
                Some((_, c)) if *c == l.neurons => {}
                Some((_, c)) => {
                    return Err(Error::Input(format!("profile layer `{}` has {} neurons, the model's has {c}", l.name, l.neurons)))
                }
                None => return Err(Error::Input(format!("profile layer `{}` does not exist in {}", l.name, network.spec))),
            }
        }
        let profile = Self::upload(engine, data.header, &data.counts)?;
        profile.check_model(network)?;
        Ok(profile)
    }

    pub fn load(engine: &Engine, network: &Network, path: &Path) -> Result<Self> {
        Self::from_data(engine, network, ProfileData::load(path)?).map_err(|e| match e {
            Error::Input(m) => Error::Input(format!("profile {}: {m}", path.display())),
            other => other,
        })
    }
}

/// Fails unless a layer's `(m − 1) × neurons` u32 counts fit one storage binding of the adapter
/// (checked before anything is allocated for them).
/// The model's identity and each layer's parameters with its neuron count (layer names checked).
fn sized_layers(network: &Network, layers: &[LayerParams]) -> Result<(ModelIdentity, Vec<(LayerParams, usize)>)> {
    let channels = network.layer_channels();
    let mut sized = Vec::with_capacity(layers.len());
    for p in layers {
        network.layer_index(&p.layer)?;
        sized.push((p.clone(), channels.iter().find(|(n, _)| *n == p.layer).unwrap().1));
    }
    Ok((ModelIdentity { arch: network.spec.to_string(), fingerprint: network.fingerprint() }, sized))
}

fn check_counts_fit(engine: &Engine, layer: &str, m: usize, neurons: usize) -> Result<()> {
    let limit = engine.gpu.max_binding_bytes();
    let bytes = (m.saturating_sub(1) as u64).saturating_mul(neurons as u64).saturating_mul(4);
    if bytes > limit {
        return Err(Error::Input(format!(
            "layer `{layer}`: {} bins × {neurons} neurons of counts need {bytes} bytes, over this adapter's binding limit of {limit} bytes",
            m.saturating_sub(1)
        )));
    }
    Ok(())
}

pub(crate) fn check_labels(labels: &[usize], samples: usize, classes: usize) -> Result<()> {
    if labels.len() != samples {
        return Err(Error::Input(format!("{} labels for {samples} samples", labels.len())));
    }
    if let Some(i) = labels.iter().position(|&l| l >= classes) {
        return Err(Error::Input(format!("label {i} is {}, but the model has {classes} classes", labels[i])));
    }
    Ok(())
}

fn score_params(layer: &LayerHeader, index: usize, total: usize, flags: u32) -> NacParams {
    NacParams {
        neurons: layer.neurons as u32,
        edges: layer.m as u32,
        alpha: layer.alpha as f32,
        o: layer.o as f32,
        flags,
        layer: index as u32,
        total_samples: total as u32,
        ..Default::default()
    }
}

/// The score buffers of one scoring run, NaN-poisoned so an unwritten value cannot pass.
struct ScoreOutputs {
    layers: usize,
    total: usize,
    layer_scores: wgpu::Buffer,
    scores: wgpu::Buffer,
}

impl ScoreOutputs {
    fn new(engine: &Engine, layers: usize, total: usize) -> Self {
        ScoreOutputs {
            layers,
            total,
            layer_scores: engine.gpu.upload_f32("layer scores", &vec![f32::NAN; layers * total]),
            scores: engine.gpu.upload_f32("scores", &vec![f32::NAN; total]),
        }
    }

    /// The score call of one layer, binning `pairs` (or states).
    fn score_call(&self, engine: &Engine, params: NacParams, pairs: &wgpu::Buffer, layer: &GpuLayer) -> NacCall {
        NacCall::new(
            engine,
            Kernel::NacScore,
            params,
            [Some(pairs), None, Some(&layer.thresholds), Some(&layer.counts)],
            &self.layer_scores,
        )
    }

    /// Means over layers on the GPU (recorded after whatever `encoder` holds), then the one
    /// readback of the run.
    fn finish(self, engine: &Engine, mut encoder: wgpu::CommandEncoder, profile: &Profile, predictions: &Predictions) -> Result<Scores> {
        let params = NacParams { total_samples: self.total as u32, layer: self.layers as u32, ..Default::default() };
        let combine = NacCall::new(engine, Kernel::NacCombine, params, [Some(&self.layer_scores), None, None, None], &self.scores);
        record(engine, &mut encoder, std::slice::from_ref(&combine));
        let staging = [
            engine.gpu.readback_buffer((self.total * 4) as u64),
            engine.gpu.readback_buffer((self.layers * self.total * 4) as u64),
            engine.gpu.readback_buffer((SUMMARY_STRIDE * self.total * 4) as u64),
        ];
        let sources = [
            (&self.scores, self.total),
            (&self.layer_scores, self.layers * self.total),
            (&predictions.summary, SUMMARY_STRIDE * self.total),
        ];
        for ((src, len), dst) in sources.iter().zip(&staging) {
            encoder.copy_buffer_to_buffer(src, 0, dst, 0, (*len * 4) as u64);
        }
        engine.gpu.queue.submit([encoder.finish()]);
        let mut values = engine.gpu.read_back(&staging.iter().zip(sources).map(|(b, (_, len))| (b, len)).collect::<Vec<_>>())?.into_iter();
        let (score, layer_scores, summary) = (values.next().unwrap(), values.next().unwrap(), values.next().unwrap());
        Predictions::check_finite(&summary)?;
        if let Some(i) = layer_scores.iter().position(|v| !v.is_finite()) {
            let layer = &profile.header.layers[i / self.total].name;
            return Err(Error::NotFinite {
                sample: i % self.total,
                message: format!("its NAC score of layer `{layer}` is {}: {NOT_FINITE_HELP}", layer_scores[i]),
            });
        }
        if let Some(i) = score.iter().position(|v| !v.is_finite()) {
            return Err(Error::NotFinite { sample: i, message: format!("its NAC score is {}: {NOT_FINITE_HELP}", score[i]) });
        }
        let predicted = Predictions::unpack(&summary);
        Ok(Scores {
            layers: profile.layer_names().iter().map(|s| s.to_string()).collect(),
            score,
            layer_scores: layer_scores.chunks(self.total).map(|c| c.to_vec()).collect(),
            predicted: predicted.class,
            max_softmax: predicted.max_softmax,
            energy: predicted.energy,
        })
    }
}
