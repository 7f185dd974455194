//! A graph bound to GPU memory: tensors mapped to pooled buffers by lifetime, one uniform and
//! one bind group per call, all created once; running a batch is a few buffer writes, one
//! encoder, one submit.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::kernels::{flat_workgroups, Kernels};

use super::graph::{Dispatch, Graph, Input, TensorId};

/// Source of [`Plan::id`]s.
static NEXT_PLAN_ID: AtomicU64 = AtomicU64::new(0);

pub struct Plan {
    /// Unique for the process: work bound to this plan's buffers (NAC calls) is keyed by it, so
    /// it never outlives the plan into a rebuilt one.
    pub id: u64,
    pub graph: Graph,
    /// Samples the buffers hold; larger batches are run in chunks of this size.
    pub capacity: usize,
    /// The most samples the adapter's limits allow for this graph.
    pub limit_capacity: usize,
    /// Physical buffer of each tensor.
    tensor_buffer: Vec<usize>,
    buffers: Vec<wgpu::Buffer>,
    params: Vec<wgpu::Buffer>,
    bind_groups: Vec<wgpu::BindGroup>,
    /// Pipeline of each call (conv calls: their variant's).
    pipelines: Vec<wgpu::ComputePipeline>,
    /// Batch size the parameter buffers currently describe.
    params_batch: usize,
    workgroups: Vec<[u32; 3]>,
    /// Mappable copies of `graph.outputs()`, sized for `capacity`.
    readback: Vec<wgpu::Buffer>,
}

/// Largest batch whose every tensor fits one storage binding and whose every dispatch fits the
/// per-dimension workgroup limit.
pub fn max_capacity(graph: &Graph, max_binding_bytes: u64, max_per_dim: u32) -> usize {
    let largest = graph.tensors.iter().map(|t| t.elements()).max().unwrap_or(1).max(1) as u64;
    let mut cap = (max_binding_bytes / (4 * largest)) as usize;
    for call in &graph.calls {
        if let (_, Dispatch::Conv { p, backward }) = call.params.at_batch(1) {
            cap = cap.min(call.variant.max_batch(&p, backward, max_per_dim).min(usize::MAX as u64) as usize);
        }
    }
    cap
}

impl Plan {
    pub fn new(gpu: &Gpu, kernels: &Kernels, graph: Graph, capacity: usize, limit_capacity: usize) -> Result<Self> {
        let keep = graph.outputs();
        let n_calls = graph.calls.len();
        // Lifetime of each tensor in call indices: [first write, last read].
        let mut first = vec![0usize; graph.tensors.len()];
        let mut last = vec![0usize; graph.tensors.len()];
        for (i, call) in graph.calls.iter().enumerate() {
            first[call.output] = i;
            last[call.output] = last[call.output].max(i);
            for r in &call.reads {
                if let Input::Tensor(t) = r {
                    last[*t] = last[*t].max(i);
                }
            }
        }
        // Outputs, and the host-written tensors (an attack updates the input in place between
        // passes), live to the end.
        for &t in keep.iter().chain([&graph.input]).chain(&graph.labels) {
            last[t] = n_calls;
        }
        // Greedy best-fit reuse of freed buffers, in call order.
        let bytes = |t: TensorId| (graph.tensors[t].elements() * capacity * 4) as u64;
        let mut buffers: Vec<wgpu::Buffer> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut tensor_buffer = vec![usize::MAX; graph.tensors.len()];
        let allocate = |t: TensorId, buffers: &mut Vec<wgpu::Buffer>, free: &mut Vec<usize>| -> usize {
            let need = bytes(t);
            let best =
                free.iter().enumerate().filter(|(_, &b)| buffers[b].size() >= need).min_by_key(|(_, &b)| buffers[b].size()).map(|(i, _)| i);
            match best {
                Some(i) => free.swap_remove(i),
                None => {
                    buffers.push(gpu.storage_buffer(&format!("activation{}", buffers.len()), need));
                    buffers.len() - 1
                }
            }
        };
        // Host-written tensors live from the start.
        for t in std::iter::once(graph.input).chain(graph.labels) {
            tensor_buffer[t] = allocate(t, &mut buffers, &mut free);
        }
        let mut ends_at: Vec<Vec<TensorId>> = vec![Vec::new(); n_calls + 1];
        for t in 0..graph.tensors.len() {
            ends_at[last[t]].push(t);
        }
        for (i, call) in graph.calls.iter().enumerate() {
            tensor_buffer[call.output] = allocate(call.output, &mut buffers, &mut free);
            for &t in &ends_at[i] {
                free.push(tensor_buffer[t]);
            }
        }
        if buffers.iter().any(|b| b.size() > gpu.max_binding_bytes()) {
            return Err(Error::Gpu(format!("a plan buffer exceeds the binding limit of {} bytes", gpu.max_binding_bytes())));
        }

        let pipelines = graph
            .calls
            .iter()
            .map(|call| match call.params {
                super::graph::ParamTemplate::Conv { backward, .. } => kernels.conv_pipeline(gpu, backward, call.variant),
                _ => Ok(kernels.pipeline(call.kernel).clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut params = Vec::with_capacity(n_calls);
        let mut bind_groups = Vec::with_capacity(n_calls);
        let mut workgroups = Vec::with_capacity(n_calls);
        for call in &graph.calls {
            let (bytes, dispatch) = call.params.at_batch(capacity as u32);
            let uniform = gpu.uniform_buffer(&format!("{:?} params", call.kernel), &bytes);
            let reads: Vec<&wgpu::Buffer> = call
                .reads
                .iter()
                .map(|r| match r {
                    Input::Tensor(t) => &buffers[tensor_buffer[*t]],
                    Input::Weight(b) => b,
                    Input::Unused => kernels.placeholder(),
                })
                .collect();
            bind_groups.push(kernels.bind_group(gpu, call.kernel, &uniform, &reads, &buffers[tensor_buffer[call.output]]));
            params.push(uniform);
            workgroups.push(Self::workgroups(gpu, call, dispatch));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("binding the plan: {e}")));
        }
        let readback = keep.iter().map(|&t| gpu.readback_buffer((graph.tensors[t].elements() * capacity * 4) as u64)).collect();
        Ok(Plan {
            id: NEXT_PLAN_ID.fetch_add(1, Ordering::Relaxed),
            graph,
            capacity,
            limit_capacity,
            tensor_buffer,
            buffers,
            params,
            bind_groups,
            pipelines,
            params_batch: capacity,
            workgroups,
            readback,
        })
    }

    fn workgroups(gpu: &Gpu, call: &super::graph::Call, dispatch: Dispatch) -> [u32; 3] {
        match dispatch {
            Dispatch::Conv { p, backward } => call.variant.workgroups(&p, backward),
            Dispatch::Flat(threads) => flat_workgroups(threads, gpu.max_workgroups_per_dim()),
        }
    }

    pub fn buffer(&self, t: TensorId) -> &wgpu::Buffer {
        &self.buffers[self.tensor_buffer[t]]
    }

    /// Rewrites the call parameters for a batch of `batch` samples (≤ capacity).
    pub fn set_batch(&mut self, gpu: &Gpu, batch: usize) {
        assert!(batch >= 1 && batch <= self.capacity);
        if batch == self.params_batch {
            return;
        }
        for (i, call) in self.graph.calls.iter().enumerate() {
            let (bytes, dispatch) = call.params.at_batch(batch as u32);
            gpu.queue.write_buffer(&self.params[i], 0, &bytes);
            self.workgroups[i] = Self::workgroups(gpu, call, dispatch);
        }
        self.params_batch = batch;
    }

    /// Records copies of the outputs of a `batch`-sample chunk into the readback buffers;
    /// returns each buffer with its length in f32 values, for `Gpu::read_back` after the submit.
    pub fn copy_outputs(&self, encoder: &mut wgpu::CommandEncoder, batch: usize) -> Vec<(&wgpu::Buffer, usize)> {
        self.copy_outputs_of(encoder, batch, &self.graph.outputs())
    }

    /// [`Plan::copy_outputs`] for the outputs among `wanted` only, in output order.
    pub fn copy_outputs_of(&self, encoder: &mut wgpu::CommandEncoder, batch: usize, wanted: &[TensorId]) -> Vec<(&wgpu::Buffer, usize)> {
        self.graph
            .outputs()
            .into_iter()
            .zip(&self.readback)
            .filter(|(t, _)| wanted.contains(t))
            .map(|(t, staging)| {
                let len = self.graph.tensors[t].elements() * batch;
                encoder.copy_buffer_to_buffer(self.buffer(t), 0, staging, 0, (len * 4) as u64);
                (staging, len)
            })
            .collect()
    }

    /// Records every call of the pass into one compute pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        self.encode_calls(encoder, 0..self.graph.calls.len());
    }

    /// Records the calls in `calls` only, as one compute pass.
    pub fn encode_calls(&self, encoder: &mut wgpu::CommandEncoder, calls: std::ops::Range<usize>) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("nac pass"), timestamp_writes: None });
        self.dispatch(&mut pass, calls);
    }

    /// The stages of the pass in call order, each with its range of calls.
    pub fn stages(&self) -> Vec<(String, std::ops::Range<usize>)> {
        let mut stages: Vec<(String, std::ops::Range<usize>)> = Vec::new();
        for (i, call) in self.graph.calls.iter().enumerate() {
            match stages.last_mut() {
                Some((name, range)) if *name == call.stage => range.end = i + 1,
                _ => stages.push((call.stage.clone(), i..i + 1)),
            }
        }
        stages
    }

    /// Records the pass as one compute pass per stage (see [`Plan::stages`]), stage `i` writing
    /// its start and end timestamps to queries `2i` and `2i + 1`.
    pub fn encode_timed(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet) {
        for (i, (_, range)) in self.stages().into_iter().enumerate() {
            let timestamp_writes = wgpu::ComputePassTimestampWrites {
                query_set: queries,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            };
            let mut pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("timed stage"), timestamp_writes: Some(timestamp_writes) });
            self.dispatch(&mut pass, range);
        }
    }

    fn dispatch(&self, pass: &mut wgpu::ComputePass, calls: std::ops::Range<usize>) {
        for i in calls {
            let [x, y, z] = self.workgroups[i];
            pass.set_pipeline(&self.pipelines[i]);
            pass.set_bind_group(0, &self.bind_groups[i], &[]);
            pass.dispatch_workgroups(x, y, z);
        }
    }
}
