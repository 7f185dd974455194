//! Recording the NAC kernels (`shaders/nac.wgsl`): one uniform and one bind group per call,
//! created once per batch run and re-parameterised per chunk.

use crate::engine::{ChunkBuffers, Engine, LayerBuffers, Model};
use crate::error::{Error, Result};
use crate::kernels::{flat_workgroups, nac_flags, pairs_workgroups, Kernel, NacParams, FLAT_WORKGROUP, NAC_LOCAL_SLOTS};

/// A bound NAC kernel call.
pub(crate) struct NacCall {
    kernel: Kernel,
    params: NacParams,
    uniform: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

impl NacCall {
    /// Binds `reads` (z, g, thresholds, summary-or-counts; `None` binds a placeholder) and `out`.
    pub fn new(engine: &Engine, kernel: Kernel, params: NacParams, reads: [Option<&wgpu::Buffer>; 4], out: &wgpu::Buffer) -> Self {
        let placeholder = engine.kernels.placeholder();
        let reads: Vec<&wgpu::Buffer> = reads.iter().map(|r| r.unwrap_or(placeholder)).collect();
        let uniform = engine.gpu.uniform_buffer(&format!("{kernel:?} params"), bytemuck::bytes_of(&params));
        let bind_group = engine.kernels.bind_group(&engine.gpu, kernel, &uniform, &reads, out);
        NacCall { kernel, params, uniform, bind_group }
    }

    /// Points the call at `batch` samples starting at set-wide index `offset`.
    pub fn set_chunk(&mut self, engine: &Engine, batch: usize, offset: usize) {
        if (self.params.batch, self.params.sample_offset) != (batch as u32, offset as u32) {
            self.params.batch = batch as u32;
            self.params.sample_offset = offset as u32;
            engine.gpu.queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(&self.params));
        }
    }

    fn workgroups(&self, engine: &Engine) -> [u32; 3] {
        let p = &self.params;
        let max = engine.gpu.max_workgroups_per_dim();
        match self.kernel {
            Kernel::NacHistogram => [p.neurons.div_ceil(p.block_neurons), p.batch.div_ceil(p.block_samples), 1],
            Kernel::NacScore => flat_workgroups(p.batch * FLAT_WORKGROUP, max),
            Kernel::NacCoverage => [1, 1, 1],
            Kernel::NacPairs => pairs_workgroups(p.batch, p.neurons, max),
            Kernel::NacCombine => flat_workgroups(p.total_samples, max),
            Kernel::NacPredict => flat_workgroups(p.batch, max),
            Kernel::NacLayerStats => flat_workgroups(p.batch * p.neurons.div_ceil(FLAT_WORKGROUP) * FLAT_WORKGROUP, max),
            other => unreachable!("{other:?} is not a NAC kernel"),
        }
    }

    pub fn dispatch(&self, engine: &Engine, pass: &mut wgpu::ComputePass) {
        let [x, y, z] = self.workgroups(engine);
        pass.set_pipeline(engine.kernels.pipeline(self.kernel));
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// The pooling call of one layer of a chunk: its pairs `(Σz, Σg)` into `out`, at set-wide
/// sample positions (a cache), or at the chunk's own with `CHUNK_PAIRS` in `flags`.
pub(crate) fn pairs_call(engine: &Engine, layer: &LayerBuffers, out: &wgpu::Buffer, flags: u32) -> NacCall {
    let params = NacParams { hw: (layer.shape.h * layer.shape.w) as u32, neurons: layer.shape.c as u32, flags, ..Default::default() };
    NacCall::new(engine, Kernel::NacPairs, params, [Some(layer.z), Some(layer.g), None, None], out)
}

/// The pooling call of one layer of a chunk into pairs of its own, sized for the plan's capacity,
/// and those pairs, for binning calls that read them with `CHUNK_PAIRS`. (The calls' bind
/// groups keep the buffer alive.)
pub(crate) fn chunk_pairs(engine: &Engine, chunk: &ChunkBuffers, layer: &LayerBuffers) -> Result<(NacCall, wgpu::Buffer)> {
    let bytes = (chunk.capacity * layer.shape.c * 2 * 4) as u64;
    if bytes > engine.gpu.max_binding_bytes() {
        return Err(Error::Input(format!(
            "pooled pairs of layer `{}` for a chunk of {} samples need {bytes} bytes, over this adapter's binding limit; use a smaller batch",
            layer.name, chunk.capacity
        )));
    }
    let pairs = engine.gpu.storage_buffer(&format!("{} chunk pairs", layer.name), bytes);
    Ok((pairs_call(engine, layer, &pairs, nac_flags::CHUNK_PAIRS), pairs))
}

/// NAC calls bound to the buffers of the plan that ran each chunk. A call's bind group names a
/// plan's z/g/logits buffers, so a chunk run by another plan (another input size, or a plan
/// rebuilt with more capacity) needs calls of its own: they are built on the first chunk of each
/// plan and reused for its later chunks. Calls built for a plan that no longer exists are never
/// recorded again, since plan ids are unique.
pub(crate) struct PlanCalls {
    bound: Vec<(u64, Vec<NacCall>)>,
}

impl PlanCalls {
    pub fn new() -> Self {
        PlanCalls { bound: Vec::new() }
    }

    /// Records the calls for `chunk`'s plan after the chunk, building them with `build` on
    /// that plan's first chunk.
    pub fn record(
        &mut self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        chunk: &ChunkBuffers,
        build: impl FnOnce(&ChunkBuffers) -> Result<Vec<NacCall>>,
    ) -> Result<()> {
        self.record_timed(engine, encoder, chunk, None, build)
    }

    /// [`PlanCalls::record`] with the compute pass writing `timestamps`.
    pub fn record_timed(
        &mut self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        chunk: &ChunkBuffers,
        timestamps: Option<wgpu::ComputePassTimestampWrites>,
        build: impl FnOnce(&ChunkBuffers) -> Result<Vec<NacCall>>,
    ) -> Result<()> {
        let at = match self.bound.iter().position(|(plan, _)| *plan == chunk.plan) {
            Some(at) => at,
            None => {
                self.bound.push((chunk.plan, build(chunk)?));
                self.bound.len() - 1
            }
        };
        let calls = &mut self.bound[at].1;
        for call in calls.iter_mut() {
            call.set_chunk(engine, chunk.len, chunk.start);
        }
        record_pass(engine, encoder, calls, timestamps);
        Ok(())
    }
}

/// One NCHW batch of a set: (position of its first sample in the set, values, shape).
pub type SetBatch<I> = Result<(usize, I, [usize; 4])>;

/// Runs the pass to `layers` over a set of `total` samples that arrive as batches in any order
/// and of any input size (the prefetching loader's, or one whole array), handing every chunk to
/// `record` with set-wide sample positions, and waits for the last; every sample must arrive
/// exactly once. NAC work over a whole set (pooling, profiling, scoring) is recorded once per
/// plan here (see [`PlanCalls`]), not once per batch.
pub(crate) fn run_set<I: AsRef<[f32]>>(
    engine: &Engine,
    model: &mut Model,
    total: usize,
    layers: &[&str],
    batches: impl IntoIterator<Item = SetBatch<I>>,
    record: &mut dyn FnMut(&ChunkBuffers, &mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<()> {
    let mut seen = vec![false; total];
    let mut batches = batches.into_iter();
    loop {
        let waiting = std::time::Instant::now();
        let Some(batch) = batches.next() else { break };
        engine.add_host_time(|t| &mut t.batch_wait_s, waiting);
        let (first, input, shape) = batch?;
        let range = first..first.saturating_add(shape[0]);
        if range.end > total || seen[range.clone()].iter().any(|&s| s) {
            return Err(Error::Input(format!("a batch of samples {range:?} overlaps another or exceeds the {total} samples")));
        }
        seen[range].iter_mut().for_each(|s| *s = true);
        engine.run_chunks(model, input.as_ref(), shape, layers, &mut |chunk: &ChunkBuffers, encoder| {
            record(&ChunkBuffers { start: first + chunk.start, layers: chunk.layers.clone(), ..*chunk }, encoder)
        })?;
    }
    engine.finish()?;
    match seen.iter().position(|&s| !s) {
        Some(missing) => Err(Error::Input(format!("no batch delivered sample {missing} of {total}"))),
        None => Ok(()),
    }
}

/// Records `calls` into one compute pass.
pub(crate) fn record(engine: &Engine, encoder: &mut wgpu::CommandEncoder, calls: &[NacCall]) {
    record_pass(engine, encoder, calls, None);
}

fn record_pass(
    engine: &Engine,
    encoder: &mut wgpu::CommandEncoder,
    calls: &[NacCall],
    timestamp_writes: Option<wgpu::ComputePassTimestampWrites>,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("nac"), timestamp_writes });
    for call in calls {
        call.dispatch(engine, &mut pass);
    }
}

/// Histogram parameters for a layer of `neurons` with `edges` thresholds: blocks of neurons
/// whose `bins × neurons` counts fit workgroup memory, ~1024 (sample, neuron) pairs per
/// workgroup; global atomics when even one neuron's bins do not fit.
pub(crate) fn histogram_params(neurons: usize, edges: usize, alpha: f64, flags: u32) -> NacParams {
    let bins = (edges - 1) as u32;
    let (block_neurons, flags) =
        if bins <= NAC_LOCAL_SLOTS { ((NAC_LOCAL_SLOTS / bins).clamp(1, 64), flags) } else { (64, flags | nac_flags::GLOBAL_ATOMICS) };
    NacParams {
        neurons: neurons as u32,
        edges: edges as u32,
        alpha: alpha as f32,
        flags,
        block_neurons,
        block_samples: (1024 / block_neurons).max(1),
        ..Default::default()
    }
}
