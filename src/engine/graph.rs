//! The static graph of one forward + backward pass (to layers, or to the input): a list of
//! kernel calls over symbolic tensors (NHWC, per-sample shapes). Built once per (input size,
//! requested layers, loss).

use crate::kernels::{
    conv_flags, loss_targets, pool_flags, ConvParams, ConvVariant, ElementwiseParams, Kernel, LinearParams, PoolParams, TransformerParams,
    ATTENTION_TOKENS_PER_THREAD, ELEMENTWISE_RELU, ELEMENTWISE_SWISH, TRANSFORMER_RESIDUAL,
};
use crate::model::arch::{Activation, VitSpec, LN_EPS};

use super::{Loss, Target};

use super::weights::{GpuBody, GpuConv, GpuEncoderBlock, GpuHead, GpuLayerNorm, GpuScaleShift, GpuWeights};

pub type TensorId = usize;

/// Per-sample shape of an activation, NHWC (`h = w = 1` for pooled features and logits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorShape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl TensorShape {
    pub fn elements(&self) -> usize {
        self.h * self.w * self.c
    }
}

/// What a read binding of a kernel call refers to.
#[derive(Clone, Debug)]
pub enum Input {
    Tensor(TensorId),
    Weight(wgpu::Buffer),
    Unused,
}

/// Parameters of a call with the batch left open; `per_sample` is the thread count per sample
/// for flat kernels. `ConvReduce` is the reduction of a split-K conv call (see
/// [`Graph::split_conv_calls`]).
#[derive(Clone, Copy, Debug)]
pub enum ParamTemplate {
    Conv { p: ConvParams, backward: bool },
    ConvReduce { p: ConvParams, backward: bool },
    Elementwise { p: ElementwiseParams, per_sample: u32 },
    Pool { p: PoolParams, per_sample: u32 },
    Linear { p: LinearParams, per_sample: u32 },
    Transformer { p: TransformerParams, per_sample: u32 },
}

impl ParamTemplate {
    /// The parameter bytes and thread count for `batch` samples; conv calls return their
    /// parameters instead of a thread count (the variant sizes the dispatch).
    pub fn at_batch(&self, batch: u32) -> (Vec<u8>, Dispatch) {
        match *self {
            ParamTemplate::Conv { mut p, backward } => {
                p.batch = batch;
                p.m_total = batch * if backward { p.in_h * p.in_w } else { p.out_h * p.out_w };
                (bytemuck::bytes_of(&p).to_vec(), Dispatch::Conv { p, backward })
            }
            ParamTemplate::ConvReduce { p, backward } => {
                let (bytes, dispatch) = ParamTemplate::Conv { p, backward }.at_batch(batch);
                let Dispatch::Conv { p, .. } = dispatch else { unreachable!("a conv template dispatches as a conv") };
                (bytes, Dispatch::Flat(p.split_reduce_threads()))
            }
            ParamTemplate::Elementwise { mut p, per_sample } => {
                p.batch = batch;
                p.total = batch * per_sample;
                (bytemuck::bytes_of(&p).to_vec(), Dispatch::Flat(p.total))
            }
            ParamTemplate::Pool { mut p, per_sample } => {
                p.batch = batch;
                p.total = batch * per_sample;
                (bytemuck::bytes_of(&p).to_vec(), Dispatch::Flat(p.total))
            }
            ParamTemplate::Linear { mut p, per_sample } => {
                p.batch = batch;
                p.total = batch * per_sample;
                (bytemuck::bytes_of(&p).to_vec(), Dispatch::Flat(p.total))
            }
            ParamTemplate::Transformer { mut p, per_sample } => {
                p.batch = batch;
                p.total = batch * per_sample;
                (bytemuck::bytes_of(&p).to_vec(), Dispatch::Flat(p.total))
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Dispatch {
    Conv { p: ConvParams, backward: bool },
    Flat(u32),
}

#[derive(Clone, Debug)]
pub struct Call {
    pub kernel: Kernel,
    pub params: ParamTemplate,
    pub reads: Vec<Input>,
    pub output: TensorId,
    /// How a conv call runs (the engine chooses it per shape before binding the plan).
    pub variant: ConvVariant,
    /// The part of the network it belongs to (`stem`, `layer2 forward`, `head`, …), for
    /// per-stage timing.
    pub stage: String,
}

impl Call {
    /// Floating-point operations per sample: `2·m·n·k` of a convolution's GEMM, and the
    /// multiply-adds of attention (`2·H·T²·dh` per product of a query, key or value with the
    /// scores; the other kernels are memory-bound and counted as 0).
    pub fn flop_per_sample(&self) -> u64 {
        match self.params {
            ParamTemplate::Conv { p, backward } => {
                let m = if backward { p.in_h * p.in_w } else { p.out_h * p.out_w } as u64;
                2 * m * p.n_total as u64 * p.k_total as u64
            }
            ParamTemplate::Transformer { p, .. } => {
                let products = match self.kernel {
                    Kernel::AttentionProbs | Kernel::AttentionValues | Kernel::AttentionBackwardScores => 1,
                    Kernel::AttentionBackwardQkv => 3,
                    _ => 0,
                };
                products * 2 * p.heads as u64 * (p.tokens as u64).pow(2) * p.head_dim as u64
            }
            _ => 0,
        }
    }
}

/// A requested layer: its activation and gradient tensors.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    pub name: String,
    pub z: TensorId,
    pub g: TensorId,
}

/// What an encoder block's backward pass reads from its forward pass.
struct EncoderSaved {
    x: TensorId,
    ln1: TensorId,
    qkv: TensorId,
    probs: TensorId,
    attended: TensorId,
    mid: TensorId,
    ln2: TensorId,
    hidden_pre: TensorId,
    hidden: TensorId,
}

#[derive(Default)]
pub struct Graph {
    pub tensors: Vec<TensorShape>,
    pub calls: Vec<Call>,
    /// The NCHW input written by the host.
    pub input: TensorId,
    /// Class labels (as f32) written by the host, when the loss targets them.
    pub labels: Option<TensorId>,
    /// ∂L/∂input, NCHW, when asked for.
    pub input_grad: Option<TensorId>,
    pub logits: TensorId,
    pub layers: Vec<LayerTensors>,
    /// The calls before this index compute the forward pass and ∂L/∂feat at the feature layer;
    /// the rest only read it (and forward activations): a pass seeded with a gradient of the
    /// host's at the feature layer runs the two parts with that gradient written in between.
    pub head_backward_end: usize,
    /// The stage the next pushed call belongs to.
    stage: String,
}

impl Graph {
    /// Gives each conv call whose (chosen) variant splits K its reduction: the call writes its
    /// partial sums to a scratch tensor, and a [`Kernel::ConvSplitReduce`] call right after it
    /// adds them and applies the epilogue into the original output. Run once, after the
    /// variants are chosen and before the graph is bound.
    pub fn split_conv_calls(&mut self) {
        let mut i = 0;
        while i < self.calls.len() {
            let splits = self.calls[i].variant.splits();
            if let (ParamTemplate::Conv { mut p, backward }, true) = (self.calls[i].params, splits > 1) {
                p.splits = splits;
                let out = self.tensors[self.calls[i].output];
                let scratch = self.tensor(TensorShape { c: out.c * splits as usize, ..out });
                let mut reduce = self.calls[i].clone();
                reduce.kernel = Kernel::ConvSplitReduce;
                reduce.params = ParamTemplate::ConvReduce { p, backward };
                reduce.reads[0] = Input::Tensor(scratch);
                reduce.reads[1] = Input::Unused;
                let partial = &mut self.calls[i];
                partial.params = ParamTemplate::Conv { p, backward };
                partial.output = scratch;
                // The epilogue's reads belong to the reduction.
                partial.reads.truncate(2);
                partial.reads.extend([Input::Unused, Input::Unused, Input::Unused]);
                self.calls.insert(i + 1, reduce);
                if self.head_backward_end > i {
                    self.head_backward_end += 1;
                }
                i += 1;
            }
            i += 1;
        }
    }

    fn tensor(&mut self, shape: TensorShape) -> TensorId {
        self.tensors.push(shape);
        self.tensors.len() - 1
    }

    fn push(&mut self, kernel: Kernel, params: ParamTemplate, reads: Vec<Input>, out: TensorShape) -> TensorId {
        let output = self.tensor(out);
        self.calls.push(Call { kernel, params, reads, output, variant: ConvVariant::TILED, stage: self.stage.clone() });
        output
    }

    fn tensor_or_unused(t: Option<TensorId>) -> Input {
        t.map(Input::Tensor).unwrap_or(Input::Unused)
    }

    /// Forward conv with its folded bias, optional residual add and optional ReLU.
    fn conv(&mut self, conv: &GpuConv, x: TensorId, residual: Option<TensorId>, relu: bool) -> TensorId {
        let g = conv.geometry;
        let s = self.tensors[x];
        let (oh, ow) = g.out_size(s.h, s.w);
        let mut flags = 0;
        if conv.bias.is_some() {
            flags |= conv_flags::BIAS;
        }
        if residual.is_some() {
            flags |= conv_flags::RESIDUAL;
        }
        if relu {
            flags |= conv_flags::RELU;
        }
        let p = ConvParams {
            in_h: s.h as u32,
            in_w: s.w as u32,
            in_c: g.in_c as u32,
            out_h: oh as u32,
            out_w: ow as u32,
            out_c: g.out_c as u32,
            kernel: g.kernel as u32,
            stride: g.stride as u32,
            pad: g.pad as u32,
            n_total: g.out_c as u32,
            k_total: (g.kernel * g.kernel * g.in_c) as u32,
            flags,
            ..Default::default()
        };
        let reads = vec![
            Input::Tensor(x),
            Input::Weight(conv.forward.clone()),
            conv.bias.clone().map(Input::Weight).unwrap_or(Input::Unused),
            Self::tensor_or_unused(residual),
            Input::Unused,
        ];
        self.push(Kernel::ConvForward, ParamTemplate::Conv { p, backward: false }, reads, TensorShape { h: oh, w: ow, c: g.out_c })
    }

    /// Data gradient of a conv: from `dy` (shape of the conv output) to the conv input of
    /// shape `input`, with the epilogue of `flags` (mask, scale, residual). The mask is a
    /// ReLU's output, or a Swish's input.
    fn conv_backward(
        &mut self,
        conv: &GpuConv,
        dy: TensorId,
        input: TensorShape,
        residual: Option<(TensorId, bool)>,
        mask: Option<(TensorId, Activation)>,
        scale: Option<&wgpu::Buffer>,
    ) -> TensorId {
        let g = conv.geometry;
        let s = self.tensors[dy];
        let mut flags = 0;
        if let Some((_, last)) = residual {
            flags |= conv_flags::RESIDUAL | if last { conv_flags::RESIDUAL_LAST } else { 0 };
        }
        match mask {
            Some((_, Activation::Relu)) => flags |= conv_flags::MASK,
            Some((_, Activation::Swish)) => flags |= conv_flags::MASK_SWISH,
            None => {}
        }
        if scale.is_some() {
            flags |= conv_flags::SCALE;
        }
        let p = ConvParams {
            in_h: input.h as u32,
            in_w: input.w as u32,
            in_c: g.in_c as u32,
            out_h: s.h as u32,
            out_w: s.w as u32,
            out_c: g.out_c as u32,
            kernel: g.kernel as u32,
            stride: g.stride as u32,
            pad: g.pad as u32,
            n_total: g.in_c as u32,
            k_total: (g.kernel * g.kernel * g.out_c) as u32,
            flags,
            ..Default::default()
        };
        let weights = conv.backward.clone().expect("data-gradient weights are packed for every conv after the stem");
        let reads = vec![
            Input::Tensor(dy),
            Input::Weight(weights),
            scale.cloned().map(Input::Weight).unwrap_or(Input::Unused),
            Self::tensor_or_unused(residual.map(|r| r.0)),
            Self::tensor_or_unused(mask.map(|m| m.0)),
        ];
        self.push(Kernel::ConvBackwardData, ParamTemplate::Conv { p, backward: true }, reads, input)
    }

    fn elementwise(&mut self, kernel: Kernel, reads: Vec<Input>, shape: TensorShape, flags: u32) -> TensorId {
        let p = ElementwiseParams { channels: shape.c as u32, height: shape.h as u32, width: shape.w as u32, flags, ..Default::default() };
        self.push(kernel, ParamTemplate::Elementwise { p, per_sample: shape.elements() as u32 }, reads, shape)
    }

    fn scale_shift(&mut self, x: TensorId, bn: &GpuScaleShift, act: Option<Activation>) -> TensorId {
        let shape = self.tensors[x];
        let reads = vec![Input::Tensor(x), Input::Weight(bn.scale.clone()), Input::Weight(bn.shift.clone())];
        let flags = match act {
            Some(Activation::Relu) => ELEMENTWISE_RELU,
            Some(Activation::Swish) => ELEMENTWISE_SWISH,
            None => 0,
        };
        self.elementwise(Kernel::ScaleShift, reads, shape, flags)
    }

    fn swish(&mut self, x: TensorId) -> TensorId {
        let shape = self.tensors[x];
        self.elementwise(Kernel::Swish, vec![Input::Tensor(x), Input::Unused, Input::Unused], shape, 0)
    }

    fn relu_mask(&mut self, g: TensorId, z: TensorId) -> TensorId {
        let shape = self.tensors[g];
        self.elementwise(Kernel::ReluMask, vec![Input::Tensor(g), Input::Tensor(z), Input::Unused], shape, 0)
    }

    /// A pooling-family call from `input` to `out`, writing a tensor of shape `result`.
    #[allow(clippy::too_many_arguments)]
    fn pool_into(
        &mut self,
        kernel: Kernel,
        reads: Vec<Input>,
        input: TensorShape,
        out: TensorShape,
        result: TensorShape,
        flags: u32,
        per_sample: usize,
    ) -> TensorId {
        let p = PoolParams {
            in_h: input.h as u32,
            in_w: input.w as u32,
            channels: input.c as u32,
            out_h: out.h as u32,
            out_w: out.w as u32,
            flags,
            ..Default::default()
        };
        self.push(kernel, ParamTemplate::Pool { p, per_sample: per_sample as u32 }, reads, result)
    }

    fn pool(&mut self, kernel: Kernel, reads: Vec<Input>, input: TensorShape, out: TensorShape, flags: u32, per_sample: usize) -> TensorId {
        self.pool_into(kernel, reads, input, out, out, flags, per_sample)
    }

    fn max_pool(&mut self, x: TensorId) -> TensorId {
        let s = self.tensors[x];
        let out = TensorShape { h: (s.h - 1) / 2 + 1, w: (s.w - 1) / 2 + 1, c: s.c };
        self.pool(Kernel::MaxPool, vec![Input::Tensor(x), Input::Unused, Input::Unused], s, out, 0, out.elements())
    }

    fn avg_pool(&mut self, x: TensorId) -> TensorId {
        let s = self.tensors[x];
        let out = TensorShape { h: 1, w: 1, c: s.c };
        self.pool(Kernel::AvgPool, vec![Input::Tensor(x), Input::Unused, Input::Unused], s, out, 0, s.c)
    }

    /// ∂L/∂x for x pooled into `dfeat`, optionally through `act(scale·x + shift)` (the mask as
    /// in [`Graph::conv_backward`]).
    fn avg_pool_backward(
        &mut self,
        dfeat: TensorId,
        x: TensorShape,
        mask: Option<(TensorId, Activation)>,
        scale: Option<&wgpu::Buffer>,
    ) -> TensorId {
        let mut flags = 0;
        match mask {
            Some((_, Activation::Relu)) => flags |= pool_flags::MASK,
            Some((_, Activation::Swish)) => flags |= pool_flags::MASK_SWISH,
            None => {}
        }
        if scale.is_some() {
            flags |= pool_flags::SCALE;
        }
        let reads = vec![
            Input::Tensor(dfeat),
            Self::tensor_or_unused(mask.map(|m| m.0)),
            scale.cloned().map(Input::Weight).unwrap_or(Input::Unused),
        ];
        self.pool(Kernel::AvgPoolBackward, reads, x, x, flags, x.elements())
    }

    fn linear_call(&mut self, kernel: Kernel, x: TensorId, head: &GpuHead, out_c: usize, per_sample: usize) -> TensorId {
        let p = LinearParams { in_features: head.in_features as u32, out_features: head.classes as u32, ..Default::default() };
        let reads = vec![Input::Tensor(x), Input::Weight(head.weight.clone()), Input::Weight(head.bias.clone())];
        self.push(kernel, ParamTemplate::Linear { p, per_sample: per_sample as u32 }, reads, TensorShape { h: 1, w: 1, c: out_c })
    }

    /// ∂L/∂feat of `loss` (the NAC loss: `softmax − 1/C` at the logits), back through the fc
    /// layer.
    fn loss_gradient_at_feature(&mut self, head: &GpuHead, loss: Loss) -> TensorId {
        let target = match loss.target {
            Target::Uniform => loss_targets::UNIFORM,
            Target::Label => loss_targets::LABEL,
            Target::Prediction => loss_targets::PREDICTION,
        };
        let p = LinearParams {
            in_features: head.in_features as u32,
            out_features: head.classes as u32,
            target,
            temperature: loss.temperature,
            ..Default::default()
        };
        let reads = vec![Input::Tensor(self.logits), Self::tensor_or_unused(self.labels), Input::Unused];
        let dlogits =
            self.push(Kernel::LossGrad, ParamTemplate::Linear { p, per_sample: 1 }, reads, TensorShape { h: 1, w: 1, c: head.classes });
        let dfeat = self.linear_call(Kernel::LinearBackward, dlogits, head, head.in_features, head.in_features);
        self.head_backward_end = self.calls.len();
        dfeat
    }

    fn max_pool_backward(&mut self, dy: TensorId, x: TensorId) -> TensorId {
        let s = self.tensors[x];
        let out = self.tensors[dy];
        self.pool_into(Kernel::MaxPoolBackward, vec![Input::Tensor(dy), Input::Tensor(x), Input::Unused], s, out, s, 0, s.elements())
    }

    /// A call of `shaders/transformer.wgsl` writing a tensor of `out` with `per_sample` threads.
    fn transformer(&mut self, kernel: Kernel, p: TransformerParams, reads: Vec<Input>, out: TensorShape, per_sample: usize) -> TensorId {
        self.push(kernel, ParamTemplate::Transformer { p, per_sample: per_sample as u32 }, reads, out)
    }

    fn vit_params(spec: &VitSpec) -> TransformerParams {
        TransformerParams {
            tokens: spec.tokens() as u32,
            width: spec.width as u32,
            heads: spec.heads as u32,
            head_dim: spec.head_dim() as u32,
            row_stride: 1,
            eps: LN_EPS as f32,
            scale: 1.0 / (spec.head_dim() as f32).sqrt(),
            ..Default::default()
        }
    }

    /// LayerNorm of every token of `x`, or (`class_token`) of each sample's first token only.
    fn layer_norm(&mut self, spec: &VitSpec, x: TensorId, ln: &GpuLayerNorm, class_token: bool) -> TensorId {
        let s = self.tensors[x];
        let rows = if class_token { 1 } else { s.h * s.w };
        let p = TransformerParams { row_stride: if class_token { s.h as u32 } else { 1 }, ..Self::vit_params(spec) };
        let reads = vec![Input::Tensor(x), Input::Weight(ln.gamma.clone()), Input::Weight(ln.beta.clone()), Input::Unused];
        self.transformer(Kernel::LayerNorm, p, reads, TensorShape { h: rows, w: 1, c: s.c }, rows)
    }

    /// ∂L/∂x of [`Graph::layer_norm`] from `dy`, plus `residual` (the other branch's gradient).
    fn layer_norm_backward(
        &mut self,
        spec: &VitSpec,
        dy: TensorId,
        x: TensorId,
        ln: &GpuLayerNorm,
        residual: Option<TensorId>,
    ) -> TensorId {
        let (s, xs) = (self.tensors[dy], self.tensors[x]);
        let rows = s.h * s.w;
        let p = TransformerParams {
            row_stride: (xs.h * xs.w / rows) as u32,
            flags: if residual.is_some() { TRANSFORMER_RESIDUAL } else { 0 },
            ..Self::vit_params(spec)
        };
        let reads = vec![Input::Tensor(x), Input::Tensor(dy), Input::Weight(ln.gamma.clone()), Self::tensor_or_unused(residual)];
        self.transformer(Kernel::LayerNormBackward, p, reads, s, rows)
    }

    /// A kernel of one thread per element of its output `out` (`width` stays the model's).
    fn vit_elementwise(&mut self, spec: &VitSpec, kernel: Kernel, reads: [Input; 4], out: TensorShape) -> TensorId {
        self.transformer(kernel, Self::vit_params(spec), reads.to_vec(), out, out.elements())
    }

    /// One encoder block's forward pass; returns (block output, saved tensors for its backward).
    fn encoder_block(&mut self, spec: &VitSpec, block: &GpuEncoderBlock, x: TensorId) -> (TensorId, EncoderSaved) {
        let (t, h) = (spec.tokens(), spec.heads);
        let ln1 = self.layer_norm(spec, x, &block.ln_1, false);
        let qkv = self.conv(&block.in_proj, ln1, None, false);
        let probs_shape = TensorShape { h: h * t, w: 1, c: t };
        let p = Self::vit_params(spec);
        let probs = self.transformer(
            Kernel::AttentionProbs,
            p,
            vec![Input::Tensor(qkv), Input::Unused, Input::Unused, Input::Unused],
            probs_shape,
            h * t,
        );
        let quads = t.div_ceil(ATTENTION_TOKENS_PER_THREAD);
        let reads = vec![Input::Tensor(probs), Input::Tensor(qkv), Input::Unused, Input::Unused];
        let attended = self.transformer(Kernel::AttentionValues, p, reads, self.tensors[ln1], quads * spec.width);
        let mid = self.conv(&block.out_proj, attended, Some(x), false);
        let ln2 = self.layer_norm(spec, mid, &block.ln_2, false);
        let hidden_pre = self.conv(&block.mlp_1, ln2, None, false);
        let hidden = self.vit_elementwise(
            spec,
            Kernel::Gelu,
            [Input::Tensor(hidden_pre), Input::Unused, Input::Unused, Input::Unused],
            self.tensors[hidden_pre],
        );
        let out = self.conv(&block.mlp_2, hidden, Some(mid), false);
        (out, EncoderSaved { x, ln1, qkv, probs, attended, mid, ln2, hidden_pre, hidden })
    }

    /// From ∂L/∂(block output) to ∂L/∂(ln_2 output) (the layer's g), then, unless `stop`, on
    /// to ∂L/∂(block input).
    fn encoder_block_backward(
        &mut self,
        spec: &VitSpec,
        block: &GpuEncoderBlock,
        saved: &EncoderSaved,
        d_out: TensorId,
        stop: bool,
    ) -> (TensorId, Option<TensorId>) {
        let d_hidden = self.conv_backward(&block.mlp_2, d_out, self.tensors[saved.hidden], None, None, None);
        let d_hidden_pre = self.vit_elementwise(
            spec,
            Kernel::GeluBackward,
            [Input::Tensor(d_hidden), Input::Tensor(saved.hidden_pre), Input::Unused, Input::Unused],
            self.tensors[saved.hidden_pre],
        );
        let d_ln2 = self.conv_backward(&block.mlp_1, d_hidden_pre, self.tensors[saved.ln2], None, None, None);
        if stop {
            return (d_ln2, None);
        }
        let d_mid = self.layer_norm_backward(spec, d_ln2, saved.mid, &block.ln_2, Some(d_out));
        let d_attended = self.conv_backward(&block.out_proj, d_mid, self.tensors[saved.attended], None, None, None);
        let (t, h) = (spec.tokens(), spec.heads);
        let p = Self::vit_params(spec);
        let d_scores = self.transformer(
            Kernel::AttentionBackwardScores,
            p,
            vec![Input::Tensor(d_attended), Input::Tensor(saved.qkv), Input::Tensor(saved.probs), Input::Unused],
            self.tensors[saved.probs],
            h * t,
        );
        let reads = vec![Input::Tensor(d_scores), Input::Tensor(saved.qkv), Input::Tensor(saved.probs), Input::Tensor(d_attended)];
        let quads = t.div_ceil(ATTENTION_TOKENS_PER_THREAD);
        let d_qkv = self.transformer(Kernel::AttentionBackwardQkv, p, reads, self.tensors[saved.qkv], quads * 3 * spec.width);
        let d_ln1 = self.conv_backward(&block.in_proj, d_qkv, self.tensors[saved.ln1], None, None, None);
        let d_x = self.layer_norm_backward(spec, d_ln1, saved.x, &block.ln_1, Some(d_mid));
        (d_ln2, Some(d_x))
    }

    /// The NHWC gradient at the input, as the user's NCHW.
    fn finish_input_gradient(&mut self, dx: TensorId) {
        let shape = self.tensors[dx];
        self.input_grad = Some(self.elementwise(Kernel::NhwcToNchw, vec![Input::Tensor(dx), Input::Unused, Input::Unused], shape, 0));
    }

    /// Builds the pass for one input size. `wanted` are indices into `layer_names` of the
    /// layers whose z and g are kept; the backward pass of `loss` goes down to the shallowest
    /// of them, or to the input with `input_gradient` (neither: forward only).
    pub fn build(
        weights: &GpuWeights,
        in_shape: TensorShape,
        layer_names: &[String],
        wanted: &[usize],
        loss: Loss,
        input_gradient: bool,
    ) -> Graph {
        let mut g = Graph { stage: "input".into(), ..Graph::default() };
        g.input = g.tensor(in_shape);
        if loss.target == Target::Label {
            g.labels = Some(g.tensor(TensorShape { h: 1, w: 1, c: 1 }));
        }
        let nhwc = g.elementwise(Kernel::NchwToNhwc, vec![Input::Tensor(g.input), Input::Unused, Input::Unused], in_shape, 0);
        let head = &weights.head;
        let pooled_index = layer_names.len() - 1;
        // The backward pass differentiates the stages after the shallowest wanted layer, or
        // every stage and the stem for the input gradient.
        let shallowest = wanted.iter().copied().min();
        let backward = shallowest.is_some() || input_gradient;
        let first_stage = if input_gradient { 0 } else { shallowest.map_or(usize::MAX, |m| m + 1) };

        match &weights.body {
            GpuBody::ResNet { stem, max_pool, stages } => {
                g.stage = "stem".into();
                let stem_out = g.conv(stem, nhwc, None, true);
                let mut x = stem_out;
                if *max_pool {
                    x = g.max_pool(x);
                }
                // Per block: input, inner activations (ReLU outputs feeding convs 2..), output.
                let mut saved: Vec<Vec<(TensorId, Vec<TensorId>, TensorId)>> = Vec::new();
                let mut stage_out = Vec::new();
                for (s, stage) in stages.iter().enumerate() {
                    g.stage = format!("{} forward", layer_names[s]);
                    let mut blocks = Vec::new();
                    for block in stage {
                        let input = x;
                        let mut h = x;
                        let mut inner = Vec::new();
                        for conv in &block.convs[..block.convs.len() - 1] {
                            h = g.conv(conv, h, None, true);
                            inner.push(h);
                        }
                        let shortcut = match &block.projection {
                            Some(p) => g.conv(p, input, None, false),
                            None => input,
                        };
                        x = g.conv(block.convs.last().unwrap(), h, Some(shortcut), true);
                        blocks.push((input, inner, x));
                    }
                    saved.push(blocks);
                    stage_out.push(x);
                }
                g.stage = "head".into();
                let feat = g.avg_pool(x);
                g.logits = g.linear_call(Kernel::LinearForward, feat, head, head.classes, head.classes);
                let mut grads: Vec<Option<TensorId>> = vec![None; layer_names.len()];
                if backward {
                    let dfeat = g.loss_gradient_at_feature(head, loss);
                    grads[pooled_index] = Some(dfeat);
                    let last = stages.len() - 1;
                    if first_stage <= stages.len() {
                        let last_shape = g.tensors[stage_out[last]];
                        let mut grad = g.avg_pool_backward(dfeat, last_shape, None, None);
                        grads[last] = Some(grad);
                        for s in (first_stage..stages.len()).rev() {
                            g.stage = format!("{} backward", layer_names[s]);
                            for (block, (input, inner, out)) in stages[s].iter().zip(&saved[s]).rev() {
                                let d_pre = g.relu_mask(grad, *out);
                                let mut d = d_pre;
                                for i in (1..block.convs.len()).rev() {
                                    let act = inner[i - 1];
                                    d = g.conv_backward(&block.convs[i], d, g.tensors[act], None, Some((act, Activation::Relu)), None);
                                }
                                let shortcut_grad = match &block.projection {
                                    Some(p) => g.conv_backward(p, d_pre, g.tensors[*input], None, None, None),
                                    None => d_pre,
                                };
                                grad = g.conv_backward(&block.convs[0], d, g.tensors[*input], Some((shortcut_grad, false)), None, None);
                            }
                            if s > 0 {
                                grads[s - 1] = Some(grad);
                            }
                        }
                        if input_gradient {
                            g.stage = "stem backward".into();
                            if *max_pool {
                                grad = g.max_pool_backward(grad, stem_out);
                            }
                            let d = g.relu_mask(grad, stem_out);
                            let dx = g.conv_backward(stem, d, in_shape, None, None, None);
                            g.finish_input_gradient(dx);
                        }
                    }
                }
                g.finish_layers(layer_names, wanted, &stage_out, feat, &grads);
            }
            GpuBody::WideResNet { stem, stages, final_bn, activation } => {
                let act = *activation;
                g.stage = "stem".into();
                let mut x = g.conv(stem, nhwc, None, false);
                // What the backward pass reads as masks: a ReLU's output, or a Swish's input
                // (u = bn1(x) and conv1's output before its activation).
                let swish = act == Activation::Swish;
                // Per block: pre-activation a = act(bn1(x)) and its mask, inner h and its mask,
                // input shape.
                let mut saved: Vec<Vec<(TensorId, TensorId, TensorShape)>> = Vec::new();
                let mut stage_out = Vec::new();
                for (s, stage) in stages.iter().enumerate() {
                    g.stage = format!("{} forward", layer_names[s]);
                    let mut blocks = Vec::new();
                    for block in stage {
                        let input_shape = g.tensors[x];
                        let a = g.scale_shift(x, &block.bn1, Some(act));
                        // The same fma as `a`'s, so the mask sees exactly a's input.
                        let a_mask = if swish && backward && s >= first_stage { g.scale_shift(x, &block.bn1, None) } else { a };
                        let (h, h_mask) = if swish {
                            let u = g.conv(&block.conv1, a, None, false);
                            (g.swish(u), u)
                        } else {
                            let h = g.conv(&block.conv1, a, None, true);
                            (h, h)
                        };
                        let shortcut = match &block.shortcut {
                            Some(sc) => g.conv(sc, a, None, false),
                            None => x,
                        };
                        x = g.conv(&block.conv2, h, Some(shortcut), false);
                        blocks.push((a_mask, h_mask, input_shape));
                    }
                    saved.push(blocks);
                    stage_out.push(x);
                }
                g.stage = "head".into();
                let f = g.scale_shift(x, final_bn, Some(act));
                let feat = g.avg_pool(f);
                g.logits = g.linear_call(Kernel::LinearForward, feat, head, head.classes, head.classes);
                let mut grads: Vec<Option<TensorId>> = vec![None; layer_names.len()];
                if backward {
                    let dfeat = g.loss_gradient_at_feature(head, loss);
                    grads[pooled_index] = Some(dfeat);
                    let last = stages.len() - 1;
                    if first_stage <= stages.len() {
                        let last_shape = g.tensors[stage_out[last]];
                        let f_mask = if swish { g.scale_shift(stage_out[last], final_bn, None) } else { f };
                        let mut grad = g.avg_pool_backward(dfeat, last_shape, Some((f_mask, act)), Some(&final_bn.scale));
                        grads[last] = Some(grad);
                        for s in (first_stage..stages.len()).rev() {
                            g.stage = format!("{} backward", layer_names[s]);
                            for (block, (a, h, input_shape)) in stages[s].iter().zip(&saved[s]).rev() {
                                let dh = g.conv_backward(&block.conv2, grad, g.tensors[*h], None, Some((*h, act)), None);
                                grad = match &block.shortcut {
                                    Some(sc) => {
                                        let sc_grad = g.conv_backward(sc, grad, *input_shape, None, None, None);
                                        g.conv_backward(
                                            &block.conv1,
                                            dh,
                                            *input_shape,
                                            Some((sc_grad, false)),
                                            Some((*a, act)),
                                            Some(&block.bn1.scale),
                                        )
                                    }
                                    None => g.conv_backward(
                                        &block.conv1,
                                        dh,
                                        *input_shape,
                                        Some((grad, true)),
                                        Some((*a, act)),
                                        Some(&block.bn1.scale),
                                    ),
                                };
                            }
                            if s > 0 {
                                grads[s - 1] = Some(grad);
                            }
                        }
                        if input_gradient {
                            g.stage = "stem backward".into();
                            let dx = g.conv_backward(stem, grad, in_shape, None, None, None);
                            g.finish_input_gradient(dx);
                        }
                    }
                }
                g.finish_layers(layer_names, wanted, &stage_out, feat, &grads);
            }
            GpuBody::VisionTransformer { spec, conv_proj, class_token, pos_embedding, blocks, ln } => {
                g.stage = "stem".into();
                let patches = g.conv(conv_proj, nhwc, None, false);
                let tokens = TensorShape { h: spec.tokens(), w: 1, c: spec.width };
                let mut x = g.vit_elementwise(
                    spec,
                    Kernel::TokensForward,
                    [Input::Tensor(patches), Input::Weight(class_token.clone()), Input::Weight(pos_embedding.clone()), Input::Unused],
                    tokens,
                );
                let mut saved = Vec::with_capacity(blocks.len());
                for (i, block) in blocks.iter().enumerate() {
                    g.stage = format!("{} forward", layer_names[i]);
                    let (out, s) = g.encoder_block(spec, block, x);
                    saved.push(s);
                    x = out;
                }
                g.stage = "head".into();
                let feat = g.layer_norm(spec, x, ln, true);
                g.logits = g.linear_call(Kernel::LinearForward, feat, head, head.classes, head.classes);
                let mut grads: Vec<Option<TensorId>> = vec![None; layer_names.len()];
                if backward {
                    let dfeat = g.loss_gradient_at_feature(head, loss);
                    grads[pooled_index] = Some(dfeat);
                    if first_stage <= blocks.len() {
                        let d_class = g.layer_norm_backward(spec, dfeat, x, ln, None);
                        let mut d = g.vit_elementwise(
                            spec,
                            Kernel::ScatterClassToken,
                            [Input::Tensor(d_class), Input::Unused, Input::Unused, Input::Unused],
                            tokens,
                        );
                        // Layer i's g is reached inside block i: the shallowest wanted block
                        // stops there unless the gradient goes on to the input.
                        let first_block = if input_gradient { 0 } else { first_stage - 1 };
                        for i in (first_block..blocks.len()).rev() {
                            g.stage = format!("{} backward", layer_names[i]);
                            let stop = i == first_block && !input_gradient;
                            let (d_ln2, d_in) = g.encoder_block_backward(spec, &blocks[i], &saved[i], d, stop);
                            grads[i] = Some(d_ln2);
                            if let Some(d_in) = d_in {
                                d = d_in;
                            }
                        }
                        if input_gradient {
                            g.stage = "stem backward".into();
                            let side = spec.image / spec.patch;
                            let d_patches = g.vit_elementwise(
                                spec,
                                Kernel::TokensBackward,
                                [Input::Tensor(d), Input::Unused, Input::Unused, Input::Unused],
                                TensorShape { h: side, w: side, c: spec.width },
                            );
                            let dx = g.conv_backward(conv_proj, d_patches, in_shape, None, None, None);
                            g.finish_input_gradient(dx);
                        }
                    }
                }
                let ln2: Vec<TensorId> = saved.iter().map(|s| s.ln2).collect();
                g.finish_layers(layer_names, wanted, &ln2, feat, &grads);
            }
        }
        g
    }

    /// What a pass hands back, in readback order: the logits, z and g of each layer, then the
    /// input gradient.
    pub fn outputs(&self) -> Vec<TensorId> {
        std::iter::once(self.logits).chain(self.layers.iter().flat_map(|l| [l.z, l.g])).chain(self.input_grad).collect()
    }

    fn finish_layers(&mut self, names: &[String], wanted: &[usize], stage_out: &[TensorId], feat: TensorId, grads: &[Option<TensorId>]) {
        for &i in wanted {
            let z = if i == names.len() - 1 { feat } else { stage_out[i] };
            let g = grads[i].expect("the backward pass reaches every wanted layer");
            self.layers.push(LayerTensors { name: names[i].clone(), z, g });
        }
    }
}
