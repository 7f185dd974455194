//! The engine: a device with its kernels, models uploaded to it, and the forward +
//! backward-to-layer pass run in chunks that respect the adapter's limits.

mod attack;
mod graph;
mod plan;
mod weights;

pub use attack::{Attack, AttackKind, PixelSpace};

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result, NOT_FINITE_HELP};
use crate::gpu::{Gpu, GpuOptions};
use crate::kernels::tune::{Tuner, Tuning};
use crate::kernels::{Kernels, WeightStorage};
use crate::model::{self, ArchSpec, Network};

pub use graph::TensorShape;
use graph::{Graph, ParamTemplate, TensorId};
use plan::Plan;
use weights::GpuWeights;
pub use weights::{as_stored, pack_backward, pack_forward};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub gpu: GpuOptions,
    /// Most samples per submission; larger batches are chunked.
    pub max_batch: usize,
    /// Caps the storage binding size below the adapter's (to test chunking, or to bound
    /// memory per buffer).
    pub max_binding_bytes: Option<u64>,
    /// How conv kernel variants are chosen: fixed per adapter type (the default, deterministic)
    /// or measured once per shape and cached (the CLI's default; `--no-tune` fixes them).
    pub tuning: Tuning,
    /// How conv weights are stored on the GPU (f32 by default; f16 needs `SHADER_F16`).
    pub weights: WeightStorage,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            gpu: GpuOptions::from_env(),
            max_batch: 64,
            max_binding_bytes: None,
            tuning: Tuning::Fixed,
            weights: WeightStorage::F32,
        }
    }
}

pub struct Engine {
    pub gpu: Gpu,
    pub(crate) kernels: Kernels,
    tuner: Tuner,
    options: EngineOptions,
    progress: Option<indicatif::ProgressBar>,
    /// The last chunk [`Engine::run_chunks`] submitted and nobody has waited for yet, with its
    /// sample count: kept across calls, so consecutive batches keep two chunks in flight.
    in_flight: std::sync::Mutex<Option<(wgpu::SubmissionIndex, usize)>>,
    /// The host side of the streamed passes since [`Engine::take_host_times`].
    host: std::sync::Mutex<HostTimes>,
}

/// What a plan is built for: input size, kept layers, the loss and whether the gradient
/// reaches the input (temperature as bits: it is baked into the plan's parameters).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    h: usize,
    w: usize,
    layers: Vec<usize>,
    target: Target,
    temperature: u32,
    input_gradient: bool,
}

/// ∂L/∂z of a layer's NCHW activation `z` of shape `[n, c, h, w]`, computed by the host
/// ([`Engine::input_gradient_from_layer`]).
pub type LayerSeed<'a> = dyn Fn(&[f32], [usize; 4]) -> Result<Vec<f32>> + 'a;

/// The cross-entropy target of a pass's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The uniform distribution: the NAC loss (spec §2).
    Uniform,
    /// Each sample's label (attacks).
    Label,
    /// Each sample's predicted class, the first maximum logit (ODIN-style input perturbation).
    Prediction,
}

/// The loss a pass differentiates: `CE(softmax(logits / temperature), target)` per sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loss {
    pub target: Target,
    pub temperature: f32,
}

impl Loss {
    /// The NAC loss: cross-entropy to the uniform distribution at temperature 1.
    pub const NAC: Loss = Loss { target: Target::Uniform, temperature: 1.0 };
}

/// What one pass computes besides the logits.
#[derive(Clone, Copy, Debug)]
pub struct PassRequest<'a> {
    /// Layers whose activation z and gradient g are read back.
    pub layers: &'a [&'a str],
    pub loss: Loss,
    /// Also read back ∂L/∂input (NCHW, the shape of the input).
    pub input_gradient: bool,
    /// One label per sample, needed by [`Target::Label`] only.
    pub labels: Option<&'a [usize]>,
}

impl<'a> PassRequest<'a> {
    /// The NAC pass: the NAC loss, back to `layers`.
    pub fn nac(layers: &'a [&'a str]) -> Self {
        PassRequest { layers, loss: Loss::NAC, input_gradient: false, labels: None }
    }
}

/// Checks a request against the batch: a finite, positive temperature; labels exactly for a
/// [`Target::Label`] loss, one per sample and each a class. Returns the labels as f32.
fn check_request(request: &PassRequest, batch: usize, classes: usize) -> Result<Vec<f32>> {
    let t = request.loss.temperature;
    if !(t.is_finite() && t > 0.0) {
        return Err(Error::Input(format!("loss temperature {t}: expected a finite value > 0")));
    }
    match (request.loss.target, request.labels) {
        (Target::Label, None) => Err(Error::Input("a loss to the labels needs one label per sample".into())),
        (Target::Label, Some(labels)) => {
            if labels.len() != batch {
                return Err(Error::Input(format!("{} labels for {batch} samples", labels.len())));
            }
            if let Some(i) = labels.iter().position(|&l| l >= classes) {
                return Err(Error::Input(format!("label {} of sample {i} is not a class of this {classes}-class model", labels[i])));
            }
            Ok(labels.iter().map(|&l| l as f32).collect())
        }
        (_, Some(_)) => Err(Error::Input("labels were given, but the loss does not use them".into())),
        (_, None) => Ok(Vec::new()),
    }
}

/// A network uploaded to the GPU, with its execution plans (one per input size and layer set).
pub struct Model {
    pub network: Network,
    /// `network.fingerprint()`, computed once at upload.
    fingerprint: String,
    weights: GpuWeights,
    plans: HashMap<PlanKey, Plan>,
}

impl Model {
    /// Identity of the weights (see `Network::fingerprint`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Activation and gradient of one requested layer, NCHW (`[B, C, 1, 1]` for `avgpool`).
#[derive(Clone, Debug)]
pub struct LayerOutput {
    pub name: String,
    pub shape: [usize; 4],
    pub z: Vec<f32>,
    pub g: Vec<f32>,
}

/// What one pass returns: logits `[B, classes]` row-major, and the requested layers in the
/// order they were asked for.
#[derive(Clone, Debug)]
pub struct PassOutput {
    pub classes: usize,
    pub logits: Vec<f32>,
    pub layers: Vec<LayerOutput>,
    /// ∂L/∂input in the input's NCHW layout, if asked for (else empty).
    pub input_grad: Vec<f32>,
}

impl PassOutput {
    /// The first sample with a non-finite logit, activation or gradient, as an error.
    fn check_finite(&self) -> Result<()> {
        let batch = self.logits.len() / self.classes.max(1);
        let first_bad = |values: &[f32], per_sample: usize| values.iter().position(|v| !v.is_finite()).map(|i| i / per_sample.max(1));
        let bad = std::iter::once(first_bad(&self.logits, self.classes))
            .chain(self.layers.iter().flat_map(|l| [first_bad(&l.z, l.z.len() / batch.max(1)), first_bad(&l.g, l.g.len() / batch.max(1))]))
            .chain(std::iter::once(first_bad(&self.input_grad, self.input_grad.len() / batch.max(1))))
            .flatten()
            .min();
        match bad {
            Some(sample) => Err(Error::NotFinite { sample, message: NOT_FINITE_HELP.into() }),
            None => Ok(()),
        }
    }
}

impl Engine {
    pub fn new(options: EngineOptions) -> Result<Self> {
        let gpu = Gpu::new(&options.gpu)?;
        let kernels = Kernels::with_weights(&gpu, options.weights)?;
        let tuner = Tuner::new(options.tuning.clone());
        Ok(Engine { gpu, kernels, tuner, options, progress: None, in_flight: Default::default(), host: Default::default() })
    }

    /// Loads a safetensors checkpoint (architecture detected unless given) and uploads it.
    pub fn load_model(&self, path: &Path, arch: Option<ArchSpec>) -> Result<Model> {
        Ok(self.upload(model::load(path, arch)?))
    }

    pub fn upload(&self, network: Network) -> Model {
        let weights = GpuWeights::upload(&self.gpu, &network, self.kernels.weights);
        Model { fingerprint: network.fingerprint(), network, weights, plans: HashMap::new() }
    }

    fn binding_limit(&self) -> u64 {
        let adapter = self.gpu.max_binding_bytes();
        self.options.max_binding_bytes.map_or(adapter, |cap| cap.min(adapter))
    }

    /// Logits for an NCHW batch.
    pub fn predict(&self, model: &mut Model, input: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        Ok(self.forward_backward(model, input, shape, &[])?.logits)
    }

    /// Runs the forward pass and, if `layers` is not empty, one backward pass of the NAC loss
    /// down to the shallowest of them; returns logits and each layer's z and g.
    pub fn forward_backward(&self, model: &mut Model, input: &[f32], shape: [usize; 4], layers: &[&str]) -> Result<PassOutput> {
        self.pass(model, input, shape, &PassRequest::nac(layers))
    }

    /// One forward pass and, where `request` asks for gradients, one backward pass of its loss
    /// serving the layers and the input gradient together.
    pub fn pass(&self, model: &mut Model, input: &[f32], shape: [usize; 4], request: &PassRequest) -> Result<PassOutput> {
        let classes = model.network.num_classes();
        let batch = shape[0];
        let labels = check_request(request, batch, classes)?;
        let plan = self.plan_for(model, input, shape, request)?;
        let mut out = PassOutput { classes, logits: Vec::with_capacity(batch * classes), layers: Vec::new(), input_grad: Vec::new() };
        for l in &plan.graph.layers {
            let s = plan.graph.tensors[l.z];
            out.layers.push(LayerOutput { name: l.name.clone(), shape: [batch, s.c, s.h, s.w], z: Vec::new(), g: Vec::new() });
        }
        for start in (0..batch).step_by(plan.capacity) {
            let n = plan.capacity.min(batch - start);
            if let Some(t) = plan.graph.labels {
                self.gpu.queue.write_buffer(plan.buffer(t), 0, bytemuck::cast_slice(&labels[start..start + n]));
            }
            let mut encoder = self.encode_chunk(plan, input, shape, start, n, Record::Pass);
            let reads = plan.copy_outputs(&mut encoder, n);
            self.gpu.queue.submit([encoder.finish()]);
            let mut values = self.gpu.read_back(&reads)?.into_iter();
            self.tick(n);
            out.logits.extend(values.next().unwrap());
            for layer in out.layers.iter_mut() {
                let [_, c, lh, lw] = layer.shape;
                layer.z.extend(nhwc_to_nchw(&values.next().unwrap(), n, c, lh, lw));
                layer.g.extend(nhwc_to_nchw(&values.next().unwrap(), n, c, lh, lw));
            }
            if let Some(dx) = values.next() {
                out.input_grad.extend(dx);
            }
        }
        out.check_finite()?;
        Ok(out)
    }

    /// ∂L/∂input of a loss of one layer's activation whose gradient the host computes (the
    /// input perturbations of `crate::detect`): per chunk, the forward pass in one submission,
    /// the layer's z read back (NCHW `[n][c][h][w]`; `[n][dim]` for the feature layer),
    /// `seed(z, [n, c, h, w])` = ∂L/∂z (same layout) written as the layer's gradient, then the backward pass
    /// from there to the input in a second submission. Returns ∂L/∂input in the input's NCHW
    /// layout. A ViT takes its feature layer only (`Network::seeds_backward_at`).
    pub fn input_gradient_from_layer(
        &self,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        layer: &str,
        seed: &LayerSeed,
    ) -> Result<Vec<f32>> {
        let net = &model.network;
        let feature = net.feature_layer();
        if !net.seeds_backward_at(layer) {
            return Err(Error::Input(format!(
                "a gradient seeded at `{layer}` of {}: a Vision Transformer is seeded at its feature layer `{feature}` only",
                net.spec
            )));
        }
        let layers = seeded_layers(layer, feature);
        let request = PassRequest { layers: &layers, loss: Loss::NAC, input_gradient: true, labels: None };
        let plan = self.plan_for(model, input, shape, &request)?;
        let graph = &plan.graph;
        let (calls, z, g) = (graph.calls.len(), graph.layers[0].z, graph.layers[0].g);
        let dx = graph.input_grad.expect("the plan computes the input gradient");
        let seeded_from = graph.calls.iter().position(|c| c.output == g).expect("the pass computes the layer's gradient") + 1;
        let z_shape = graph.tensors[z];
        let (c, lh, lw) = (z_shape.c, z_shape.h, z_shape.w);
        let per_sample = shape[1] * shape[2] * shape[3];
        let mut out = Vec::with_capacity(input.len());
        for start in (0..shape[0]).step_by(plan.capacity) {
            let n = plan.capacity.min(shape[0] - start);
            let z = nhwc_to_nchw(&self.forward_chunk(plan, input, shape, start, n, &[z])?.swap_remove(0), n, c, lh, lw);
            if let Some(i) = z.iter().position(|v| !v.is_finite()) {
                return Err(Error::NotFinite { sample: start + i / (c * lh * lw), message: NOT_FINITE_HELP.into() });
            }
            let grad: Vec<f32> = seed(&z, [n, c, lh, lw])?;
            if grad.len() != z.len() || grad.iter().any(|v| !v.is_finite()) {
                return Err(Error::Input(format!(
                    "a gradient at `{layer}` of {} values (finite, {n} × {c} × {lh} × {lw} expected)",
                    grad.len()
                )));
            }
            self.gpu.queue.write_buffer(plan.buffer(g), 0, bytemuck::cast_slice(&nchw_to_nhwc(&grad, n, c, lh, lw)));
            let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("seeded backward") });
            plan.encode_calls(&mut encoder, seeded_from..calls);
            let reads = plan.copy_outputs_of(&mut encoder, n, &[dx]);
            self.gpu.queue.submit([encoder.finish()]);
            out.extend(self.gpu.read_back(&reads)?.swap_remove(0));
            self.tick(n);
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::NotFinite { sample: i / per_sample, message: NOT_FINITE_HELP.into() });
        }
        Ok(out)
    }

    /// The forward pass alone, reading one layer's activation (NCHW) and the features
    /// (`[n][dim]`), so a perturbed input is read without a backward pass. Below the feature
    /// layer it runs the forward part of [`Engine::input_gradient_from_layer`]'s plan (no second
    /// plan); at the feature layer, that of the small plan whose backward stops there.
    pub fn forward_to_layer(&self, model: &mut Model, input: &[f32], shape: [usize; 4], layer: &str) -> Result<(Vec<f32>, Vec<f32>)> {
        let feature = model.network.feature_layer();
        let layers = seeded_layers(layer, feature);
        let request = PassRequest { layers: &layers, loss: Loss::NAC, input_gradient: layer != feature, labels: None };
        let plan = self.plan_for(model, input, shape, &request)?;
        let graph = &plan.graph;
        // The layer's z, and the features' z (the same tensor at the feature layer).
        let zs: Vec<TensorId> = graph.layers.iter().map(|l| l.z).collect();
        let s = graph.tensors[zs[0]];
        let (mut maps, mut features) = (Vec::new(), Vec::new());
        for start in (0..shape[0]).step_by(plan.capacity) {
            let n = plan.capacity.min(shape[0] - start);
            let values = self.forward_chunk(plan, input, shape, start, n, &zs)?;
            maps.extend(nhwc_to_nchw(&values[0], n, s.c, s.h, s.w));
            features.extend_from_slice(values.last().expect("the features are read"));
            self.tick(n);
        }
        if let Some(i) = maps.iter().chain(&features).position(|v| !v.is_finite()) {
            let sample = if i < maps.len() { i / (maps.len() / shape[0]) } else { (i - maps.len()) / (features.len() / shape[0]) };
            return Err(Error::NotFinite { sample, message: NOT_FINITE_HELP.into() });
        }
        Ok((maps, features))
    }

    /// Runs the pass chunk by chunk like [`Engine::forward_backward`], but instead of reading
    /// anything back hands each chunk's GPU buffers to `record`, which appends its own work
    /// (NAC kernels) to the chunk's encoder: one submit per chunk, nothing leaves the GPU.
    /// Returns after the last submit without waiting for it, so the next call's first chunk
    /// (the next batch of a set) is queued while it runs; [`Engine::finish`] waits for it.
    pub fn run_chunks(
        &self,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        layers: &[&str],
        record: &mut dyn FnMut(&ChunkBuffers, &mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        let batch = shape[0];
        let plan = self.plan_for(model, input, shape, &PassRequest::nac(layers))?;
        for start in (0..batch).step_by(plan.capacity) {
            let n = plan.capacity.min(batch - start);
            let submitting = std::time::Instant::now();
            let mut encoder = self.encode_chunk(plan, input, shape, start, n, Record::Pass);
            record(&ChunkBuffers::of(plan, start, n), &mut encoder)?;
            let submitted = self.gpu.queue.submit([encoder.finish()]);
            self.add_host_time(|t| &mut t.submit_s, submitting);
            // Keep at most two chunks in flight: bounds queued uploads and makes progress real.
            let previous = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).replace((submitted, n));
            if let Some((index, len)) = previous {
                let waiting = std::time::Instant::now();
                self.gpu
                    .device
                    .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
                    .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
                self.add_host_time(|t| &mut t.gpu_wait_s, waiting);
                self.tick(len);
            }
        }
        Ok(())
    }

    /// Waits for everything submitted, including the chunk [`Engine::run_chunks`] left in flight.
    pub fn finish(&self) -> Result<()> {
        let last = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).take();
        let waiting = std::time::Instant::now();
        self.gpu.wait()?;
        self.add_host_time(|t| &mut t.gpu_wait_s, waiting);
        if let Some((_, len)) = last {
            self.tick(len);
        }
        Ok(())
    }

    /// What the host spent on the streamed passes ([`Engine::run_chunks`], e.g. pooling a set in
    /// `nac eval`) since the last call, and starts counting afresh.
    pub fn take_host_times(&self) -> HostTimes {
        std::mem::take(&mut *self.host.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds the time since `since` to one of the host times.
    pub(crate) fn add_host_time(&self, field: impl FnOnce(&mut HostTimes) -> &mut f64, since: std::time::Instant) {
        *field(&mut self.host.lock().unwrap_or_else(|p| p.into_inner())) += since.elapsed().as_secs_f64();
    }

    fn tick(&self, samples: usize) {
        if let Some(bar) = &self.progress {
            bar.inc(samples as u64);
        }
    }

    /// Shows chunk progress of every later pass on `bar` (the CLI's progress bars).
    pub fn set_progress(&mut self, bar: Option<indicatif::ProgressBar>) {
        self.progress = bar;
    }

    /// Validates a batch and returns the plan for its input size and layer set, built on first use.
    fn plan_for<'m>(&self, model: &'m mut Model, input: &[f32], shape: [usize; 4], request: &PassRequest) -> Result<&'m mut Plan> {
        let layers = request.layers;
        let [batch, channels, h, w] = shape;
        let net = &model.network;
        if channels != net.in_channels() || h == 0 || w == 0 || batch == 0 {
            return Err(Error::Input(format!(
                "input shape {shape:?}: expected [N ≥ 1, {}, H ≥ 1, W ≥ 1] for {}",
                net.in_channels(),
                net.spec
            )));
        }
        if let Some(problem) = net.input_size_problem(h, w) {
            return Err(Error::Input(format!("input shape {shape:?}: {} {problem}; resize or crop the input", net.spec)));
        }
        if input.len() != batch * channels * h * w {
            return Err(Error::Input(format!("input has {} values, but shape {shape:?} needs {}", input.len(), batch * channels * h * w)));
        }
        if let Some(i) = input.iter().position(|v| !v.is_finite()) {
            return Err(Error::Input(format!("input value {i} is {} (inputs must be finite)", input[i])));
        }
        let names = net.layer_names();
        let wanted = layers.iter().map(|l| net.layer_index(l)).collect::<Result<Vec<_>>>()?;
        if let Some(dup) = wanted.iter().enumerate().find(|(i, x)| wanted[..*i].contains(x)) {
            return Err(Error::Input(format!("layer `{}` is requested twice", names[*dup.1])));
        }

        let key = PlanKey {
            h,
            w,
            layers: wanted.clone(),
            target: request.loss.target,
            temperature: request.loss.temperature.to_bits(),
            input_gradient: request.input_gradient,
        };
        let max_batch = self.options.max_batch.max(1);
        let fits = |p: &Plan| p.capacity >= p.limit_capacity.min(max_batch).min(batch);
        if !model.plans.get(&key).is_some_and(fits) {
            let mut graph =
                Graph::build(&model.weights, TensorShape { h, w, c: channels }, &names, &wanted, request.loss, request.input_gradient);
            self.choose_conv_variants(&mut graph, max_batch.min(batch))?;
            let limit_capacity = plan::max_capacity(&graph, self.binding_limit(), self.gpu.max_workgroups_per_dim());
            if limit_capacity == 0 {
                return Err(Error::Input(format!(
                    "input size {h}×{w} is too large for this adapter: one sample's largest activation exceeds the {} byte storage binding limit",
                    self.binding_limit()
                )));
            }
            let capacity = limit_capacity.min(max_batch).min(batch);
            model.plans.insert(key.clone(), Plan::new(&self.gpu, &self.kernels, graph, capacity, limit_capacity)?);
        }
        Ok(model.plans.get_mut(&key).unwrap())
    }

    /// How this engine chooses conv variants.
    pub fn tuning(&self) -> &Tuning {
        self.tuner.tuning()
    }

    /// How this engine stores conv weights.
    pub fn weight_storage(&self) -> WeightStorage {
        self.kernels.weights
    }

    /// Sets the variant of every conv call (measured at up to `batch` samples when tuning).
    fn choose_conv_variants(&self, graph: &mut Graph, batch: usize) -> Result<()> {
        for call in &mut graph.calls {
            if let ParamTemplate::Conv { p, backward } = call.params {
                call.variant = self.tuner.choose(&self.gpu, &self.kernels, &p, backward, batch as u32)?;
            }
        }
        self.tuner.save(&self.gpu);
        graph.split_conv_calls();
        Ok(())
    }

    /// The conv variant of each conv call of the plan for this input size and layer set, in
    /// call order, as (stage, variant name): what `nac bench` reports.
    pub fn conv_variants(&self, model: &mut Model, shape: [usize; 4], layers: &[&str]) -> Result<Vec<(String, String)>> {
        let input = vec![0.0; shape.iter().product()];
        let plan = self.plan_for(model, &input, shape, &PassRequest::nac(layers))?;
        Ok(plan
            .graph
            .calls
            .iter()
            .filter(|c| matches!(c.params, ParamTemplate::Conv { .. }))
            .map(|c| (c.stage.clone(), c.variant.name()))
            .collect())
    }

    /// Points `plan` at the `n` samples of `input` from `start` and writes them to its input.
    fn load_chunk(&self, plan: &mut Plan, input: &[f32], shape: [usize; 4], start: usize, n: usize) {
        let per_sample = shape[1] * shape[2] * shape[3];
        plan.set_batch(&self.gpu, n);
        let chunk = &input[start * per_sample..(start + n) * per_sample];
        self.gpu.queue.write_buffer(plan.buffer(plan.graph.input), 0, bytemuck::cast_slice(chunk));
    }

    /// The forward part of a chunk's pass (through the head's loss gradient) in one
    /// submission; returns the tensors among `wanted` read back, in output order.
    fn forward_chunk(
        &self,
        plan: &mut Plan,
        input: &[f32],
        shape: [usize; 4],
        start: usize,
        n: usize,
        wanted: &[TensorId],
    ) -> Result<Vec<Vec<f32>>> {
        let mut encoder = self.encode_chunk(plan, input, shape, start, n, Record::Forward);
        let reads = plan.copy_outputs_of(&mut encoder, n, wanted);
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.read_back(&reads)
    }

    /// Writes chunk `[start, start + n)` of the input and records `what` of the pass over it.
    fn encode_chunk(
        &self,
        plan: &mut Plan,
        input: &[f32],
        shape: [usize; 4],
        start: usize,
        n: usize,
        what: Record,
    ) -> wgpu::CommandEncoder {
        self.load_chunk(plan, input, shape, start, n);
        let mut encoder = self.gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("nac batch") });
        match what {
            Record::Pass => plan.encode(&mut encoder),
            Record::Timed(queries) => plan.encode_timed(&mut encoder, queries),
            Record::Forward => plan.encode_calls(&mut encoder, 0..plan.graph.head_backward_end),
        }
        encoder
    }

    /// GPU time of each stage of one pass (forward, and backward to `layers`) over the first
    /// chunk of `input`, from timestamp queries, with the stage's floating-point work; `after`,
    /// the work recorded after the pass (NAC kernels), is timed as one more stage. Fails on an
    /// adapter without `TIMESTAMP_QUERY`.
    pub fn time_stages(
        &self,
        model: &mut Model,
        input: &[f32],
        shape: [usize; 4],
        layers: &[&str],
        after: Option<TimedWork>,
    ) -> Result<Vec<StageTime>> {
        if !self.gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::Input(format!(
                "{} has no timestamp queries (TIMESTAMP_QUERY): per-stage GPU times are not available",
                self.gpu.info.name
            )));
        }
        let plan = self.plan_for(model, input, shape, &PassRequest::nac(layers))?;
        let samples = plan.capacity.min(shape[0]);
        let mut stages = plan.stages();
        let count = 2 * (stages.len() + after.is_some() as usize) as u32;
        let queries = self.gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("stage times"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let resolved = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stage times"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.gpu.readback_buffer(count as u64 * 8);
        let mut encoder = self.encode_chunk(plan, input, shape, 0, samples, Record::Timed(&queries));
        if let Some(work) = after {
            let timestamps = wgpu::ComputePassTimestampWrites {
                query_set: &queries,
                beginning_of_pass_write_index: Some(count - 2),
                end_of_pass_write_index: Some(count - 1),
            };
            (work.record)(&ChunkBuffers::of(plan, 0, samples), &mut encoder, timestamps)?;
            // No calls of the plan: no convolution work.
            stages.push((work.name.to_string(), 0..0));
        }
        encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
        encoder.copy_buffer_to_buffer(&resolved, 0, &staging, 0, count as u64 * 8);
        self.gpu.queue.submit([encoder.finish()]);
        let words = self.gpu.read_back(&[(&staging, 2 * count as usize)])?.remove(0);
        let ticks: Vec<u64> = words.chunks_exact(2).map(|w| w[0].to_bits() as u64 | (w[1].to_bits() as u64) << 32).collect();
        let period_ns = self.gpu.queue.get_timestamp_period() as f64;
        Ok(stages
            .into_iter()
            .enumerate()
            .map(|(i, (name, calls))| StageTime {
                name,
                samples,
                seconds: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period_ns * 1e-9,
                flop: plan.graph.calls[calls].iter().map(|c| c.flop_per_sample() * samples as u64).sum(),
            })
            .collect())
    }
}

/// Work timed after a pass as a stage of its own (see [`Engine::time_stages`]): its name, and
/// what records it over the chunk's buffers in one compute pass with the given timestamp writes.
pub struct TimedWork<'a> {
    pub name: &'a str,
    #[allow(clippy::type_complexity)]
    pub record: &'a mut dyn FnMut(&ChunkBuffers, &mut wgpu::CommandEncoder, wgpu::ComputePassTimestampWrites) -> Result<()>,
}

/// Where the host's time goes while it streams passes ([`Engine::take_host_times`]), in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostTimes {
    /// Waiting for the next batch from the loader (decoded and transformed on worker threads,
    /// attacked where the set is adversarial).
    pub batch_wait_s: f64,
    /// Writing each chunk's input to the GPU, recording its work and submitting it.
    pub submit_s: f64,
    /// Waiting for the GPU to finish submitted chunks.
    pub gpu_wait_s: f64,
}

/// GPU time of one stage of a pass (see [`Engine::time_stages`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StageTime {
    /// `input`, `stem`, `layer1 forward`, …, `head`, …, `layer2 backward`.
    pub name: String,
    pub samples: usize,
    pub seconds: f64,
    /// Floating-point operations of its convolutions (`2·m·n·k` each).
    pub flop: u64,
}

/// The GPU buffers of one chunk of a pass, for work recorded after it (see [`Engine::run_chunks`]):
/// samples `start .. start + len` of the whole batch, logits `[len, classes]`, and each requested
/// layer's z and g in NHWC. The buffers belong to the plan `plan`: another input size, or a plan
/// rebuilt with more capacity, hands out other buffers under another id.
pub struct ChunkBuffers<'a> {
    pub plan: u64,
    /// The most samples a chunk of this plan holds.
    pub capacity: usize,
    pub start: usize,
    pub len: usize,
    pub logits: &'a wgpu::Buffer,
    pub layers: Vec<LayerBuffers<'a>>,
}

impl<'a> ChunkBuffers<'a> {
    /// The buffers of samples `start .. start + len` of `plan`'s pass.
    fn of(plan: &'a Plan, start: usize, len: usize) -> Self {
        ChunkBuffers {
            plan: plan.id,
            capacity: plan.capacity,
            start,
            len,
            logits: plan.buffer(plan.graph.logits),
            layers: plan
                .graph
                .layers
                .iter()
                .map(|l| LayerBuffers { name: &l.name, shape: plan.graph.tensors[l.z], z: plan.buffer(l.z), g: plan.buffer(l.g) })
                .collect(),
        }
    }
}

#[derive(Clone)]
pub struct LayerBuffers<'a> {
    pub name: &'a str,
    /// Per-sample shape (NHWC).
    pub shape: TensorShape,
    pub z: &'a wgpu::Buffer,
    pub g: &'a wgpu::Buffer,
}

/// What [`Engine::encode_chunk`] records of a plan's pass.
enum Record<'q> {
    /// Every call.
    Pass,
    /// Every call, stage `i` writing its start and end to queries `2i`, `2i + 1` ([`Plan::encode_timed`]).
    Timed(&'q wgpu::QuerySet),
    /// The forward part, through the head's loss gradient.
    Forward,
}

/// The layers a seeded pass keeps: the seeded layer, and the feature layer if it is another.
fn seeded_layers<'a>(layer: &'a str, feature: &'a str) -> Vec<&'a str> {
    if layer == feature {
        vec![layer]
    } else {
        vec![layer, feature]
    }
}

fn nhwc_to_nchw(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    relayout(x, [n, c, h, w], true)
}

fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    relayout(x, [n, c, h, w], false)
}

/// NHWC → NCHW (`to_nchw`) or NCHW → NHWC for `n` samples of `c × h × w`.
fn relayout(x: &[f32], [n, c, h, w]: [usize; 4], to_nchw: bool) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for ch in 0..c {
                    let (nchw, nhwc) = (((b * c + ch) * h + y) * w + xx, ((b * h + y) * w + xx) * c + ch);
                    let (to, from) = if to_nchw { (nchw, nhwc) } else { (nhwc, nchw) };
                    out[to] = x[from];
                }
            }
        }
    }
    out
}
