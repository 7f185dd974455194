//! Compute kernels: one WGSL file per family under `shaders/`, compiled once per device into
//! pipelines with explicit bind group layouts, plus the parameter blocks each one reads.

use std::sync::{Mutex, OnceLock};

use bytemuck::{Pod, Zeroable};

use crate::error::{Error, Result};
use crate::gpu::Gpu;

mod conv;
pub mod tune;
pub use conv::ConvVariant;

// Each conv variant is the shared part (parameters, bindings, epilogue) followed by its body.
const CONV_WGSL: &str = concat!(include_str!("../../shaders/conv_common.wgsl"), include_str!("../../shaders/conv.wgsl"));
const CONV_DIRECT_WGSL: &str = concat!(include_str!("../../shaders/conv_common.wgsl"), include_str!("../../shaders/conv_direct.wgsl"));
const ELEMENTWISE_WGSL: &str = include_str!("../../shaders/elementwise.wgsl");
const POOL_WGSL: &str = include_str!("../../shaders/pool.wgsl");
const LINEAR_WGSL: &str = include_str!("../../shaders/linear.wgsl");
const NAC_WGSL: &str = include_str!("../../shaders/nac.wgsl");
const PEAK_WGSL: &str = include_str!("../../shaders/peak.wgsl");
const ATTACK_WGSL: &str = include_str!("../../shaders/attack.wgsl");
const APGD_WGSL: &str = include_str!("../../shaders/apgd.wgsl");
const TRANSFORMER_WGSL: &str = include_str!("../../shaders/transformer.wgsl");

/// Every kernel the engine dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    ConvForward,
    ConvBackwardData,
    ConvSplitReduce,
    NchwToNhwc,
    ScaleShift,
    Swish,
    ReluMask,
    MaxPool,
    AvgPool,
    AvgPoolBackward,
    LinearForward,
    LossGrad,
    MaxPoolBackward,
    NhwcToNchw,
    LinearBackward,
    NacHistogram,
    NacScore,
    NacCoverage,
    NacPairs,
    NacCombine,
    NacPredict,
    NacLayerStats,
    PeakFma,
    AttackStep,
    ApgdTrack,
    ApgdCommit,
    ApgdStep,
    ApgdEmit,
    TokensForward,
    TokensBackward,
    LayerNorm,
    LayerNormBackward,
    Gelu,
    GeluBackward,
    AttentionProbs,
    AttentionValues,
    AttentionBackwardScores,
    AttentionBackwardQkv,
    ScatterClassToken,
}

impl Kernel {
    pub const ALL: [Kernel; 39] = [
        Kernel::ConvForward,
        Kernel::ConvBackwardData,
        Kernel::ConvSplitReduce,
        Kernel::NchwToNhwc,
        Kernel::ScaleShift,
        Kernel::Swish,
        Kernel::ReluMask,
        Kernel::MaxPool,
        Kernel::AvgPool,
        Kernel::AvgPoolBackward,
        Kernel::LinearForward,
        Kernel::LossGrad,
        Kernel::MaxPoolBackward,
        Kernel::NhwcToNchw,
        Kernel::LinearBackward,
        Kernel::NacHistogram,
        Kernel::NacScore,
        Kernel::NacCoverage,
        Kernel::NacPairs,
        Kernel::NacCombine,
        Kernel::NacPredict,
        Kernel::NacLayerStats,
        Kernel::PeakFma,
        Kernel::AttackStep,
        Kernel::ApgdTrack,
        Kernel::ApgdCommit,
        Kernel::ApgdStep,
        Kernel::ApgdEmit,
        Kernel::TokensForward,
        Kernel::TokensBackward,
        Kernel::LayerNorm,
        Kernel::LayerNormBackward,
        Kernel::Gelu,
        Kernel::GeluBackward,
        Kernel::AttentionProbs,
        Kernel::AttentionValues,
        Kernel::AttentionBackwardScores,
        Kernel::AttentionBackwardQkv,
        Kernel::ScatterClassToken,
    ];

    /// (source, entry point, pipeline-overridable constants).
    fn source(self) -> (&'static str, &'static str, &'static [(&'static str, f64)]) {
        match self {
            Kernel::ConvForward => (CONV_WGSL, "main", &[("BACKWARD", 0.0)]),
            Kernel::ConvBackwardData => (CONV_WGSL, "main", &[("BACKWARD", 1.0)]),
            Kernel::ConvSplitReduce => (CONV_WGSL, "split_reduce", &[]),
            Kernel::NchwToNhwc => (ELEMENTWISE_WGSL, "nchw_to_nhwc", &[]),
            Kernel::ScaleShift => (ELEMENTWISE_WGSL, "scale_shift", &[]),
            Kernel::Swish => (ELEMENTWISE_WGSL, "swish_forward", &[]),
            Kernel::ReluMask => (ELEMENTWISE_WGSL, "relu_mask", &[]),
            Kernel::MaxPool => (POOL_WGSL, "max_pool", &[]),
            Kernel::AvgPool => (POOL_WGSL, "avg_pool", &[]),
            Kernel::AvgPoolBackward => (POOL_WGSL, "avg_pool_backward", &[]),
            Kernel::LinearForward => (LINEAR_WGSL, "linear_forward", &[]),
            Kernel::LossGrad => (LINEAR_WGSL, "loss_grad", &[]),
            Kernel::MaxPoolBackward => (POOL_WGSL, "max_pool_backward", &[]),
            Kernel::NhwcToNchw => (ELEMENTWISE_WGSL, "nhwc_to_nchw", &[]),
            Kernel::LinearBackward => (LINEAR_WGSL, "linear_backward", &[]),
            Kernel::NacHistogram => (NAC_WGSL, "histogram", &[]),
            Kernel::NacScore => (NAC_WGSL, "score", &[]),
            Kernel::NacCoverage => (NAC_WGSL, "coverage", &[]),
            Kernel::NacPairs => (NAC_WGSL, "pairs", &[]),
            Kernel::NacCombine => (NAC_WGSL, "combine", &[]),
            Kernel::NacPredict => (NAC_WGSL, "predict", &[]),
            Kernel::NacLayerStats => (NAC_WGSL, "layer_stats", &[]),
            Kernel::PeakFma => (PEAK_WGSL, "peak_fma", &[]),
            Kernel::AttackStep => (ATTACK_WGSL, "attack_step", &[]),
            Kernel::ApgdTrack => (APGD_WGSL, "apgd_track", &[]),
            Kernel::ApgdCommit => (APGD_WGSL, "apgd_commit", &[]),
            Kernel::ApgdStep => (APGD_WGSL, "apgd_step", &[]),
            Kernel::ApgdEmit => (APGD_WGSL, "apgd_emit", &[]),
            Kernel::TokensForward => (TRANSFORMER_WGSL, "tokens_forward", &[]),
            Kernel::TokensBackward => (TRANSFORMER_WGSL, "tokens_backward", &[]),
            Kernel::LayerNorm => (TRANSFORMER_WGSL, "layer_norm", &[]),
            Kernel::LayerNormBackward => (TRANSFORMER_WGSL, "layer_norm_backward", &[]),
            Kernel::Gelu => (TRANSFORMER_WGSL, "gelu", &[]),
            Kernel::GeluBackward => (TRANSFORMER_WGSL, "gelu_backward", &[]),
            Kernel::AttentionProbs => (TRANSFORMER_WGSL, "attention_probs", &[]),
            Kernel::AttentionValues => (TRANSFORMER_WGSL, "attention_values", &[]),
            Kernel::AttentionBackwardScores => (TRANSFORMER_WGSL, "attention_backward_scores", &[]),
            Kernel::AttentionBackwardQkv => (TRANSFORMER_WGSL, "attention_backward_qkv", &[]),
            Kernel::ScatterClassToken => (TRANSFORMER_WGSL, "scatter_class_token", &[]),
        }
    }

    /// The kernels of `shaders/transformer.wgsl` (parameters: [`TransformerParams`]).
    pub fn is_transformer(self) -> bool {
        matches!(
            self,
            Kernel::TokensForward
                | Kernel::TokensBackward
                | Kernel::LayerNorm
                | Kernel::LayerNormBackward
                | Kernel::Gelu
                | Kernel::GeluBackward
                | Kernel::AttentionProbs
                | Kernel::AttentionValues
                | Kernel::AttentionBackwardScores
                | Kernel::AttentionBackwardQkv
                | Kernel::ScatterClassToken
        )
    }

    /// Read-only storage bindings after the uniform; one read-write output follows them.
    pub fn read_bindings(self) -> usize {
        match self {
            Kernel::ConvForward | Kernel::ConvBackwardData | Kernel::ConvSplitReduce => 5,
            Kernel::NacHistogram
            | Kernel::NacScore
            | Kernel::NacCoverage
            | Kernel::NacPairs
            | Kernel::NacCombine
            | Kernel::NacPredict
            | Kernel::NacLayerStats => 4,
            k if k.is_transformer() => 4,
            Kernel::ApgdTrack | Kernel::ApgdCommit | Kernel::ApgdStep | Kernel::ApgdEmit => 4,
            _ => 3,
        }
    }
}

/// Parameters of `shaders/attack.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttackParams {
    pub total: u32,
    pub channels: u32,
    pub hw: u32,
    pub _pad0: u32,
    pub step: f32,
    pub epsilon: f32,
    pub _pad1: [u32; 2],
}

/// Parameters of `shaders/apgd.wgsl` (field meanings there).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ApgdParams {
    pub total: u32,
    pub channels: u32,
    pub hw: u32,
    pub per_sample: u32,
    pub samples: u32,
    pub classes: u32,
    pub phase: u32,
    pub checkpoint: u32,
    pub first: u32,
    pub _pad: [u32; 3],
    pub momentum: f32,
    pub epsilon: f32,
    pub threshold: f32,
    pub initial_step: f32,
}

/// Conv epilogue flags; see `shaders/conv.wgsl` for the order they apply in.
pub mod conv_flags {
    pub const BIAS: u32 = 1;
    pub const RESIDUAL: u32 = 2;
    pub const RELU: u32 = 4;
    pub const MASK: u32 = 8;
    pub const SCALE: u32 = 16;
    pub const RESIDUAL_LAST: u32 = 32;
    /// The mask binding holds a Swish's input: multiply by the Swish's derivative there.
    pub const MASK_SWISH: u32 = 64;
}

/// Pool-backward flags.
pub mod pool_flags {
    pub const MASK: u32 = 1;
    pub const SCALE: u32 = 2;
    /// As `conv_flags::MASK_SWISH`.
    pub const MASK_SWISH: u32 = 4;
}

pub const ELEMENTWISE_RELU: u32 = 1;
pub const ELEMENTWISE_SWISH: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub in_c: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub out_c: u32,
    pub kernel: u32,
    pub stride: u32,
    pub pad: u32,
    pub m_total: u32,
    pub n_total: u32,
    pub k_total: u32,
    pub flags: u32,
    /// Parts K is split into by a split-K variant (0 or 1: one); set from the variant.
    pub splits: u32,
    pub _pad: u32,
}

impl ConvParams {
    /// Bytes of the partial sums of a call split into `splits` parts: `[split][m][n]` f32.
    pub fn partial_sums_bytes(&self, splits: u32) -> u64 {
        splits as u64 * self.m_total as u64 * self.n_total as u64 * 4
    }

    /// Invocations of the split-K reduction: one per output row and four columns.
    pub fn split_reduce_threads(&self) -> u32 {
        self.m_total * self.n_total.div_ceil(4)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ElementwiseParams {
    pub total: u32,
    pub batch: u32,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub flags: u32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PoolParams {
    pub batch: u32,
    pub in_h: u32,
    pub in_w: u32,
    pub channels: u32,
    pub out_h: u32,
    pub out_w: u32,
    pub total: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LinearParams {
    pub batch: u32,
    pub in_features: u32,
    pub out_features: u32,
    pub total: u32,
    /// `loss_grad`: the cross-entropy target (`loss_targets`) and the temperature T.
    pub target: u32,
    pub temperature: f32,
    pub _pad: [u32; 2],
}

/// Parameters of `shaders/transformer.wgsl`; fields a kernel does not use are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TransformerParams {
    pub total: u32,
    pub batch: u32,
    pub tokens: u32,
    pub width: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub flags: u32,
    /// LayerNorm: output row r reads input row `r · row_stride` (the class tokens: T).
    pub row_stride: u32,
    pub eps: f32,
    /// `1 / sqrt(head_dim)`.
    pub scale: f32,
    pub _pad: [u32; 2],
}

/// Tokens (queries of `attention_values`, rows of `attention_backward_qkv`) one thread of those
/// kernels computes: they run `ceil(T / 4)` threads per channel and sample.
pub const ATTENTION_TOKENS_PER_THREAD: usize = 4;

/// `layer_norm_backward`: adds the residual branch's gradient.
pub const TRANSFORMER_RESIDUAL: u32 = 1;

/// Targets of the `loss_grad` kernel: ∂/∂logits of `CE(softmax(logits / T), target)`.
pub mod loss_targets {
    /// The uniform distribution (the NAC loss at T = 1).
    pub const UNIFORM: u32 = 0;
    /// The label bound as the kernel's second input (class index as f32).
    pub const LABEL: u32 = 1;
    /// The predicted class (ODIN's input perturbation).
    pub const PREDICTION: u32 = 2;
}

/// Parameters of the NAC kernels (`shaders/nac.wgsl`); fields a kernel does not use are ignored.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NacParams {
    pub batch: u32,
    pub hw: u32,
    pub neurons: u32,
    pub edges: u32,
    pub alpha: f32,
    pub o: f32,
    pub flags: u32,
    pub block_neurons: u32,
    pub block_samples: u32,
    pub sample_offset: u32,
    pub total_samples: u32,
    pub layer: u32,
    pub classes: u32,
    /// Layer statistics: powers 1..=`powers` of the Gram row sums.
    pub powers: u32,
    pub _pad: [u32; 2],
}

/// NAC kernel flags.
pub mod nac_flags {
    /// Pairs are indexed by the sample's place in the chunk (a chunk's own pairs), not by its
    /// set-wide index `sample_offset + b` (a set-wide cache).
    pub const CHUNK_PAIRS: u32 = 1;
    /// Histogram: count only samples the prediction summary marks correct.
    pub const MASKED: u32 = 2;
    /// Histogram: more bins than fit workgroup memory; update global counts directly.
    pub const GLOBAL_ATOMICS: u32 = 4;
    /// Predict: labels are bound.
    pub const HAS_LABELS: u32 = 8;
    /// The z binding holds states `[sample][neuron]` computed elsewhere.
    pub const GIVEN_STATES: u32 = 16;
}

/// Most Gram powers the layer-statistics kernel computes (`MAX_POWERS` in `shaders/nac.wgsl`).
pub const MAX_GRAM_POWERS: usize = 10;

/// Histogram slots in workgroup memory (`LOCAL_SLOTS` in `shaders/nac.wgsl`).
pub const NAC_LOCAL_SLOTS: u32 = 4096;

/// Tile edge of the tiled conv GEMM in both M and N (see `shaders/conv.wgsl`).
pub const CONV_TILE: u32 = 64;
/// Threads per workgroup of the flat (one thread per element) kernels.
pub const FLAT_WORKGROUP: u32 = 256;
/// Zero weights after a conv's packed weights: the direct variants read the weights of a whole
/// block of 4·VECS ≤ 16 columns unconditionally, so the last K row's block may reach up to 15
/// elements past the packed end (`shaders/conv_direct.wgsl`); the tail keeps those reads inside
/// the buffer with shader runtime checks off.
pub const CONV_WEIGHT_TAIL: usize = 16;
/// Neurons per workgroup of the pooling kernel `pairs` (`POOL_NEURONS` in `shaders/nac.wgsl`).
pub const POOL_NEURONS: u32 = 32;

/// Workgroups of the pooling kernel `pairs` over `batch` samples of `neurons`: one per (sample,
/// block of [`POOL_NEURONS`]), folded like [`flat_workgroups`].
pub fn pairs_workgroups(batch: u32, neurons: u32, max_per_dim: u32) -> [u32; 3] {
    flat_workgroups(batch * neurons.div_ceil(POOL_NEURONS) * FLAT_WORKGROUP, max_per_dim)
}

/// Workgroup counts for `threads` flat threads, folded into 2-D to respect `max_per_dim`.
pub fn flat_workgroups(threads: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = threads.div_ceil(FLAT_WORKGROUP).max(1);
    let x = groups.min(max_per_dim);
    [x, groups.div_ceil(x), 1]
}

/// How conv weights are stored on the GPU, and in what precision the conv kernels' K loops
/// compute (`WEIGHT` and `REAL` in `shaders/conv_common.wgsl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightStorage {
    #[default]
    F32,
    /// Weights stored in f16 (half the memory and bandwidth); every weight is widened to f32
    /// where it is read, so only the rounding of the weights differs.
    F16,
    /// Weights stored in f16 and the K loops in f16: activations rounded to f16 where they are
    /// read, products and sums in f16, the sums widened to f32 for the epilogue.
    F16Compute,
}

impl WeightStorage {
    /// The WGSL of a conv source for this storage: the f16 forms enable f16 and rewrite the
    /// `WEIGHT` (and for f16 arithmetic the `REAL`) alias.
    fn conv_source(self, source: &str) -> std::borrow::Cow<'_, str> {
        let weights_f16 = |s: &str| s.replacen("alias WEIGHT = f32;", "alias WEIGHT = f16;", 1);
        match self {
            WeightStorage::F32 => source.into(),
            WeightStorage::F16 => format!("enable f16;\n{}", weights_f16(source)).into(),
            WeightStorage::F16Compute => {
                format!("enable f16;\n{}", weights_f16(source).replacen("alias REAL = f32;", "alias REAL = f16;", 1)).into()
            }
        }
    }

    /// Packed weights as the conv kernels' `weights` binding holds them, followed by
    /// [`CONV_WEIGHT_TAIL`] zeros.
    pub fn upload(self, gpu: &Gpu, label: &str, packed: &[f32]) -> wgpu::Buffer {
        let tail = [0.0; CONV_WEIGHT_TAIL];
        match self {
            WeightStorage::F32 => gpu.upload_f32(label, &[packed, &tail].concat()),
            WeightStorage::F16 | WeightStorage::F16Compute => {
                // Whole 4-byte words: an odd count is padded with a zero.
                let mut half: Vec<u16> = packed.iter().chain(&tail).map(|&v| half::f16::from_f32(v).to_bits()).collect();
                if half.len() % 2 == 1 {
                    half.push(0);
                }
                gpu.upload(label, &half)
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightStorage::F32 => "f32",
            WeightStorage::F16 => "f16",
            WeightStorage::F16Compute => "f16-compute",
        }
    }
}

/// All pipelines, built once per device; conv variants other than the tiled one are built on
/// first use.
pub struct Kernels {
    /// How the conv kernels read their weights.
    pub weights: WeightStorage,
    pipelines: Vec<(Kernel, wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
    /// Bound where a call leaves a read binding unused.
    placeholder: wgpu::Buffer,
    direct_module: OnceLock<wgpu::ShaderModule>,
    /// (backward, variant) → pipeline, for the variants built so far.
    conv_pipelines: Mutex<Vec<((bool, ConvVariant), wgpu::ComputePipeline)>>,
}

fn layout_for(gpu: &Gpu, reads: usize) -> wgpu::BindGroupLayout {
    let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    }];
    for i in 0..reads {
        entries.push(storage(1 + i as u32, true));
    }
    entries.push(storage(1 + reads as u32, false));
    gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries })
}

impl Kernels {
    /// Every kernel with f32 weights.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        Self::with_weights(gpu, WeightStorage::F32)
    }

    /// Every kernel, the convs reading weights stored as `weights`; f16 needs the adapter's
    /// `SHADER_F16`.
    pub fn with_weights(gpu: &Gpu, weights: WeightStorage) -> Result<Self> {
        if weights != WeightStorage::F32 && !gpu.device.features().contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Gpu(format!(
                "{} conv weights need the SHADER_F16 feature, which {} does not offer",
                weights.name(),
                gpu.info.name
            )));
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules: Vec<(&'static str, wgpu::ShaderModule)> = Vec::new();
        let mut pipelines = Vec::new();
        for kernel in Kernel::ALL {
            let (source, entry, constants) = kernel.source();
            if !modules.iter().any(|(s, _)| std::ptr::eq(*s, source)) {
                let code = if std::ptr::eq(source, CONV_WGSL) { weights.conv_source(source) } else { source.into() };
                let module = gpu.shader_module(entry, code);
                modules.push((source, module));
            }
            let module = &modules.iter().find(|(s, _)| std::ptr::eq(*s, source)).unwrap().1;
            let bgl = layout_for(gpu, kernel.read_bindings());
            let layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
            let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions { constants, zero_initialize_workgroup_memory: false },
                cache: None,
            });
            pipelines.push((kernel, pipeline, bgl));
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling kernels: {e}")));
        }
        Ok(Kernels {
            weights,
            pipelines,
            placeholder: gpu.storage_buffer("unused binding", 16),
            direct_module: OnceLock::new(),
            conv_pipelines: Mutex::new(Vec::new()),
        })
    }

    /// The pipeline of a conv variant in one direction, compiled on first use. Conv calls of
    /// every variant share the bind group layout of [`Kernel::ConvForward`].
    pub fn conv_pipeline(&self, gpu: &Gpu, backward: bool, variant: ConvVariant) -> Result<wgpu::ComputePipeline> {
        if !variant.is_known() {
            return Err(Error::Input(format!("conv variant {} is not one of ConvVariant::CANDIDATES", variant.name())));
        }
        let variant = variant.unsplit();
        if variant == ConvVariant::TILED {
            return Ok(self.pipeline(if backward { Kernel::ConvBackwardData } else { Kernel::ConvForward }).clone());
        }
        let mut built = self.conv_pipelines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pipeline)) = built.iter().find(|(key, _)| *key == (backward, variant)) {
            return Ok(pipeline.clone());
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.direct_module.get_or_init(|| gpu.shader_module("conv direct", self.weights.conv_source(CONV_DIRECT_WGSL)));
        let layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&self.entry(Kernel::ConvForward).2)],
            immediate_size: 0,
        });
        let mut constants = vec![("BACKWARD", if backward { 1.0 } else { 0.0 })];
        constants.extend(variant.constants());
        let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("conv direct"),
            layout: Some(&layout),
            module,
            entry_point: Some("direct"),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, zero_initialize_workgroup_memory: false },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling conv variant {}: {e}", variant.name())));
        }
        built.push(((backward, variant), pipeline.clone()));
        Ok(pipeline)
    }

    fn entry(&self, kernel: Kernel) -> &(Kernel, wgpu::ComputePipeline, wgpu::BindGroupLayout) {
        self.pipelines.iter().find(|(k, _, _)| *k == kernel).expect("every kernel is built")
    }

    pub fn placeholder(&self) -> &wgpu::Buffer {
        &self.placeholder
    }

    pub fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        &self.entry(kernel).1
    }

    /// Binds `params`, the read-only inputs (in binding order) and the output.
    pub fn bind_group(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        params: &wgpu::Buffer,
        reads: &[&wgpu::Buffer],
        output: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        assert_eq!(reads.len(), kernel.read_bindings(), "{kernel:?} takes {} inputs", kernel.read_bindings());
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
        for (i, b) in reads.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: 1 + i as u32, resource: b.as_entire_binding() });
        }
        entries.push(wgpu::BindGroupEntry { binding: 1 + reads.len() as u32, resource: output.as_entire_binding() });
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &self.entry(kernel).2, entries: &entries })
    }
}

impl Kernels {
    /// Runs one call of `kernel` on host data and returns its output: for kernel tests and
    /// micro-benchmarks. The output buffer is filled with NaN first, so an element the kernel
    /// fails to write can never pass for a result. `None` inputs bind a placeholder.
    pub fn run_single(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        params: &[u8],
        workgroups: [u32; 3],
        reads: &[Option<&[f32]>],
        output_len: usize,
    ) -> Result<Vec<f32>> {
        let uniform = gpu.uniform_buffer("params", params);
        let inputs = self.upload_reads(gpu, kernel, reads);
        let output = gpu.upload_f32("output", &vec![f32::NAN; output_len]);
        let refs: Vec<&wgpu::Buffer> = inputs.iter().collect();
        let bind_group = self.bind_group(gpu, kernel, &uniform, &refs, &output);
        let dispatch = (self.pipeline(kernel).clone(), bind_group, workgroups);
        self.submit_and_read(gpu, &[dispatch], &format!("running kernel {kernel:?}"), &output, output_len)
    }

    /// [`Kernels::run_single`] for one conv variant (reads: source, weights, channel, residual,
    /// mask; the weights stored as [`Kernels::weights`]), with the variant's own dispatches.
    pub fn run_conv(
        &self,
        gpu: &Gpu,
        variant: ConvVariant,
        backward: bool,
        params: &ConvParams,
        reads: &[Option<&[f32]>],
        output_len: usize,
    ) -> Result<Vec<f32>> {
        let inputs = self.upload_reads(gpu, Kernel::ConvForward, reads);
        let output = gpu.upload_f32("output", &vec![f32::NAN; output_len]);
        let refs: Vec<&wgpu::Buffer> = inputs.iter().collect();
        let dispatches = self.conv_dispatches(gpu, variant, backward, params, &refs, &output)?;
        self.submit_and_read(gpu, &dispatches, "running a conv variant", &output, output_len)
    }

    /// The dispatches of one conv call outside a plan (tuning, tests): the variant's, and for
    /// split K the reduction, through a scratch buffer of partial sums. `p.splits` is set from
    /// the variant. (In a plan, [`crate::engine`] makes the reduction a call of its own.)
    pub fn conv_dispatches(
        &self,
        gpu: &Gpu,
        variant: ConvVariant,
        backward: bool,
        p: &ConvParams,
        reads: &[&wgpu::Buffer],
        output: &wgpu::Buffer,
    ) -> Result<Vec<BoundDispatch>> {
        let mut p = *p;
        p.splits = variant.splits();
        let uniform = gpu.uniform_buffer("conv params", bytemuck::bytes_of(&p));
        let kernel = if backward { Kernel::ConvBackwardData } else { Kernel::ConvForward };
        let pipeline = self.conv_pipeline(gpu, backward, variant)?;
        if p.splits == 1 {
            return Ok(vec![(pipeline, self.bind_group(gpu, kernel, &uniform, reads, output), variant.workgroups(&p, backward))]);
        }
        let scratch = gpu.storage_buffer("split-K partials", p.partial_sums_bytes(p.splits));
        let unused = self.placeholder();
        let partial = self.bind_group(gpu, kernel, &uniform, &[reads[0], reads[1], unused, unused, unused], &scratch);
        let reduce = self.bind_group(gpu, Kernel::ConvSplitReduce, &uniform, &[&scratch, unused, reads[2], reads[3], reads[4]], output);
        let reduce_workgroups = flat_workgroups(p.split_reduce_threads(), gpu.max_workgroups_per_dim());
        Ok(vec![
            (pipeline, partial, variant.workgroups(&p, backward)),
            (self.pipeline(Kernel::ConvSplitReduce).clone(), reduce, reduce_workgroups),
        ])
    }

    /// Host data as the read bindings of `kernel` (a conv's second read is its weights, stored
    /// as the kernels read them; `None` binds a small zero buffer).
    fn upload_reads(&self, gpu: &Gpu, kernel: Kernel, reads: &[Option<&[f32]>]) -> Vec<wgpu::Buffer> {
        let is_conv = matches!(kernel, Kernel::ConvForward | Kernel::ConvBackwardData);
        reads
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(w) if is_conv && i == 1 => self.weights.upload(gpu, "weights", w),
                r => gpu.upload_f32("input", r.unwrap_or(&[0.0; 4])),
            })
            .collect()
    }

    /// Runs `dispatches` in one compute pass and reads `output` back.
    fn submit_and_read(
        &self,
        gpu: &Gpu,
        dispatches: &[BoundDispatch],
        what: &str,
        output: &wgpu::Buffer,
        output_len: usize,
    ) -> Result<Vec<f32>> {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            encode_dispatches(&mut pass, dispatches, 1);
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.check_while(what)?;
        gpu.read_f32(output, output_len)
    }
}

/// A pipeline, its bind group and its workgroup counts.
pub type BoundDispatch = (wgpu::ComputePipeline, wgpu::BindGroup, [u32; 3]);

/// Records `dispatches` in order, `repeats` times over.
pub fn encode_dispatches(pass: &mut wgpu::ComputePass, dispatches: &[BoundDispatch], repeats: u32) {
    for _ in 0..repeats {
        for (pipeline, bind_group, [x, y, z]) in dispatches {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*x, *y, *z);
        }
    }
}
