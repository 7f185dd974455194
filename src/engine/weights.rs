//! A network's parameters on the GPU: BatchNorm folded into the preceding convolution where
//! that is exact, conv weights re-packed once for the forward and the data-gradient GEMMs.

use crate::gpu::Gpu;
use crate::kernels::WeightStorage;
use crate::model::arch::{Activation, BatchNorm, Body, Conv, LayerNorm, Linear, Network, VitSpec};

/// Shape of a convolution, as the kernels see it.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Zero padding before the image (top, left): the kernels' `pad`.
    pub pad: usize,
    /// Zero padding after it (bottom, right): only the output size sees it, since the kernels
    /// read zeros wherever a tap falls outside the image.
    pub pad_end: usize,
}

impl ConvGeometry {
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let len = |n: usize| (n + self.pad + self.pad_end - self.kernel) / self.stride + 1;
        (len(h), len(w))
    }
}

/// A convolution on the GPU. `forward` is `[(ky, kx, ci)][co]`, `backward` is
/// `[(ky, kx, co)][ci]`; both carry the folded BatchNorm scale. `bias` is the folded shift.
pub struct GpuConv {
    pub geometry: ConvGeometry,
    pub forward: wgpu::Buffer,
    pub backward: Option<wgpu::Buffer>,
    pub bias: Option<wgpu::Buffer>,
}

/// Eval-mode BatchNorm that cannot be folded (it precedes a ReLU on a residual sum).
pub struct GpuScaleShift {
    pub scale: wgpu::Buffer,
    pub shift: wgpu::Buffer,
}

pub struct GpuResBlock {
    pub convs: Vec<GpuConv>,
    pub projection: Option<GpuConv>,
}

pub struct GpuWrnBlock {
    pub bn1: GpuScaleShift,
    /// conv1 with bn2 folded in (its activation follows).
    pub conv1: GpuConv,
    pub conv2: GpuConv,
    pub shortcut: Option<GpuConv>,
}

pub struct GpuLayerNorm {
    pub gamma: wgpu::Buffer,
    pub beta: wgpu::Buffer,
}

/// A ViT encoder block; its linear layers are 1×1 convolutions over the `[tokens, 1, width]`
/// NHWC token sequence (the same GEMM kernels, with the bias in the epilogue).
pub struct GpuEncoderBlock {
    pub ln_1: GpuLayerNorm,
    pub in_proj: GpuConv,
    pub out_proj: GpuConv,
    pub ln_2: GpuLayerNorm,
    pub mlp_1: GpuConv,
    pub mlp_2: GpuConv,
}

pub enum GpuBody {
    ResNet {
        stem: GpuConv,
        max_pool: bool,
        stages: Vec<Vec<GpuResBlock>>,
    },
    WideResNet {
        stem: GpuConv,
        stages: Vec<Vec<GpuWrnBlock>>,
        final_bn: GpuScaleShift,
        activation: Activation,
    },
    VisionTransformer {
        spec: VitSpec,
        /// `conv_proj` (kernel = stride = patch) with its bias.
        conv_proj: GpuConv,
        class_token: wgpu::Buffer,
        pos_embedding: wgpu::Buffer,
        blocks: Vec<GpuEncoderBlock>,
        ln: GpuLayerNorm,
    },
}

pub struct GpuHead {
    pub in_features: usize,
    pub classes: usize,
    pub weight: wgpu::Buffer,
    pub bias: wgpu::Buffer,
}

pub struct GpuWeights {
    pub body: GpuBody,
    pub head: GpuHead,
}

/// Packs conv weights `[co][ci][ky][kx]`, each output channel multiplied by `scale[co]`, for the
/// forward GEMM: `[(ky, kx, ci)][co]`.
pub fn pack_forward(conv: &Conv, scale: &[f64]) -> Vec<f32> {
    pack(conv, scale, |tap, ci, co| (tap * conv.in_channels + ci) * conv.out_channels + co)
}

/// Packs conv weights (scaled as in [`pack_forward`]) for the data-gradient GEMM:
/// `[(ky, kx, co)][ci]`.
pub fn pack_backward(conv: &Conv, scale: &[f64]) -> Vec<f32> {
    pack(conv, scale, |tap, ci, co| (tap * conv.out_channels + co) * conv.in_channels + ci)
}

fn pack(conv: &Conv, scale: &[f64], index: impl Fn(usize, usize, usize) -> usize) -> Vec<f32> {
    let (cout, cin, k) = (conv.out_channels, conv.in_channels, conv.kernel);
    let mut packed = vec![0f32; cout * cin * k * k];
    for co in 0..cout {
        for ci in 0..cin {
            for tap in 0..k * k {
                packed[index(tap, ci, co)] = (conv.weight[(co * cin + ci) * k * k + tap] as f64 * scale[co]) as f32;
            }
        }
    }
    packed
}

/// Folds `bn` (if any) into `conv` in f64 and packs the weights for both GEMM directions.
fn upload_conv(gpu: &Gpu, w: WeightStorage, conv: &Conv, bn: Option<&BatchNorm>, with_backward: bool) -> GpuConv {
    let (scale, shift) = match bn {
        Some(bn) => bn.scale_shift(),
        None => (vec![1.0; conv.out_channels], vec![0.0; conv.out_channels]),
    };
    let bias: Vec<f32> = shift.iter().map(|&b| b as f32).collect();
    upload_packed(gpu, w, conv, &scale, bn.map(|_| bias.as_slice()), with_backward)
}

/// A linear layer over tokens: a 1×1 convolution with its bias.
fn upload_linear(gpu: &Gpu, w: WeightStorage, name: &str, linear: &Linear) -> GpuConv {
    let conv = Conv {
        name: name.to_string(),
        out_channels: linear.out_features,
        in_channels: linear.in_features,
        kernel: 1,
        stride: 1,
        padding: 0,
        padding_end: 0,
        weight: linear.weight.clone(),
    };
    upload_packed(gpu, w, &conv, &vec![1.0; linear.out_features], Some(&linear.bias), true)
}

fn upload_layer_norm(gpu: &Gpu, ln: &LayerNorm) -> GpuLayerNorm {
    GpuLayerNorm {
        gamma: gpu.upload_f32(&format!("{}.weight", ln.name), &ln.gamma),
        beta: gpu.upload_f32(&format!("{}.bias", ln.name), &ln.beta),
    }
}

fn upload_packed(gpu: &Gpu, w: WeightStorage, conv: &Conv, scale: &[f64], bias: Option<&[f32]>, with_backward: bool) -> GpuConv {
    GpuConv {
        geometry: ConvGeometry {
            in_c: conv.in_channels,
            out_c: conv.out_channels,
            kernel: conv.kernel,
            stride: conv.stride,
            pad: conv.padding,
            pad_end: conv.padding_end,
        },
        forward: w.upload(gpu, &format!("{}.forward", conv.name), &pack_forward(conv, scale)),
        backward: with_backward.then(|| w.upload(gpu, &format!("{}.backward", conv.name), &pack_backward(conv, scale))),
        bias: bias.map(|b| gpu.upload_f32(&format!("{}.bias", conv.name), b)),
    }
}

fn upload_scale_shift(gpu: &Gpu, bn: &BatchNorm) -> GpuScaleShift {
    let (scale, shift) = bn.scale_shift();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    GpuScaleShift {
        scale: gpu.upload_f32(&format!("{}.scale", bn.name), &to_f32(scale)),
        shift: gpu.upload_f32(&format!("{}.shift", bn.name), &to_f32(shift)),
    }
}

impl GpuWeights {
    /// Uploads every parameter, the conv weights stored as `w`. Data-gradient weights are
    /// packed for all convolutions after the stem too (the gradient to the input goes through
    /// it).
    pub fn upload(gpu: &Gpu, net: &Network, w: WeightStorage) -> Self {
        let body = match &net.body {
            Body::ResNet { stem, max_pool, stages } => {
                let stem = upload_conv(gpu, w, &stem.0, Some(&stem.1), true);
                let stages = stages
                    .iter()
                    .map(|stage| {
                        stage
                            .iter()
                            .map(|b| GpuResBlock {
                                convs: b.convs.iter().map(|(c, bn)| upload_conv(gpu, w, c, Some(bn), true)).collect(),
                                projection: b.projection.as_ref().map(|(c, bn)| upload_conv(gpu, w, c, Some(bn), true)),
                            })
                            .collect()
                    })
                    .collect();
                GpuBody::ResNet { stem, max_pool: *max_pool, stages }
            }
            Body::WideResNet { stem, stages, final_bn, activation } => {
                let stem = upload_conv(gpu, w, stem, None, true);
                let stages = stages
                    .iter()
                    .map(|stage| {
                        stage
                            .iter()
                            .map(|b| GpuWrnBlock {
                                bn1: upload_scale_shift(gpu, &b.bn1),
                                conv1: upload_conv(gpu, w, &b.conv1, Some(&b.bn2), true),
                                conv2: upload_conv(gpu, w, &b.conv2, None, true),
                                shortcut: b.shortcut.as_ref().map(|c| upload_conv(gpu, w, c, None, true)),
                            })
                            .collect()
                    })
                    .collect();
                GpuBody::WideResNet { stem, stages, final_bn: upload_scale_shift(gpu, final_bn), activation: *activation }
            }
            Body::VisionTransformer { spec, conv_proj, conv_proj_bias, class_token, pos_embedding, blocks, ln } => {
                GpuBody::VisionTransformer {
                    spec: *spec,
                    conv_proj: upload_packed(gpu, w, conv_proj, &vec![1.0; conv_proj.out_channels], Some(conv_proj_bias), true),
                    class_token: gpu.upload_f32("class_token", class_token),
                    pos_embedding: gpu.upload_f32("encoder.pos_embedding", pos_embedding),
                    blocks: blocks
                        .iter()
                        .map(|b| GpuEncoderBlock {
                            ln_1: upload_layer_norm(gpu, &b.ln_1),
                            in_proj: upload_linear(gpu, w, &format!("{}.self_attention.in_proj", b.name), &b.in_proj),
                            out_proj: upload_linear(gpu, w, &format!("{}.self_attention.out_proj", b.name), &b.out_proj),
                            ln_2: upload_layer_norm(gpu, &b.ln_2),
                            mlp_1: upload_linear(gpu, w, &b.mlp_names[0], &b.mlp_1),
                            mlp_2: upload_linear(gpu, w, &b.mlp_names[1], &b.mlp_2),
                        })
                        .collect(),
                    ln: upload_layer_norm(gpu, ln),
                }
            }
        };
        let head = GpuHead {
            in_features: net.fc.in_features,
            classes: net.fc.out_features,
            weight: gpu.upload_f32(&format!("{}.weight", net.head_name()), &net.fc.weight),
            bias: gpu.upload_f32(&format!("{}.bias", net.head_name()), &net.fc.bias),
        };
        GpuWeights { body, head }
    }
}

/// The network whose weights an engine storing conv weights as `w` computes with, in f32: each
/// conv's (and linear layer's) weights replaced by the stored value of its folded weights
/// divided back by the BatchNorm scale folded into it, so that folding them again gives the
/// stored values to f32 precision. For f32 storage, the network itself. Lets tests hold an
/// engine with f16 weights to the f64 reference at the f32 tolerances.
pub fn as_stored(net: &Network, w: WeightStorage) -> Network {
    let mut net = net.clone();
    if w == WeightStorage::F32 {
        return net;
    }
    let round = |weights: &mut [f32], per_out: usize, scale: &[f64]| {
        for (i, v) in weights.iter_mut().enumerate() {
            let s = scale.get(i / per_out).copied().unwrap_or(1.0);
            let stored = half::f16::from_f32((*v as f64 * s) as f32).to_f64();
            *v = (stored / s) as f32;
        }
    };
    let conv = |c: &mut Conv, bn: Option<&BatchNorm>| {
        let scale = bn.map_or_else(|| vec![1.0; c.out_channels], |bn| bn.scale_shift().0);
        let per_out = c.weight.len() / c.out_channels;
        round(&mut c.weight, per_out, &scale);
    };
    let linear = |l: &mut Linear| round(&mut l.weight, l.in_features, &[]);
    match &mut net.body {
        Body::ResNet { stem, stages, .. } => {
            conv(&mut stem.0, Some(&stem.1));
            for b in stages.iter_mut().flatten() {
                b.convs.iter_mut().chain(b.projection.as_mut()).for_each(|(c, bn)| conv(c, Some(bn)));
            }
        }
        Body::WideResNet { stem, stages, .. } => {
            conv(stem, None);
            for b in stages.iter_mut().flatten() {
                conv(&mut b.conv1, Some(&b.bn2));
                conv(&mut b.conv2, None);
                if let Some(s) = b.shortcut.as_mut() {
                    conv(s, None);
                }
            }
        }
        Body::VisionTransformer { conv_proj, blocks, .. } => {
            conv(conv_proj, None);
            for b in blocks {
                [&mut b.in_proj, &mut b.out_proj, &mut b.mlp_1, &mut b.mlp_2].into_iter().for_each(linear);
            }
        }
    }
    net
}
