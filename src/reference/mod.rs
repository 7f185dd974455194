//! An independent, plain f64 CPU reference of the NAC forward pass and data-gradient backward
//! pass, used to validate the GPU kernels.
//!
//! Everything here is NCHW `f64`, written as straightforward loops, and shares no code with the
//! GPU path: only the typed [`Network`] description from `model::arch` is read. BatchNorm is
//! applied literally as `(x − mean)/sqrt(var + eps)·gamma + beta` (never folded into convs), max
//! pooling pads with −∞, and every layer follows PyTorch eval-mode semantics. Convolutions are
//! im2col + one dot product per output (their data gradient the exact adjoint: one weighted row
//! sum per output pixel + col2im), split over threads by output-pixel tiles; ResNet-18 at 32×32,
//! batch 3, forward + backward takes about a second in release.
//!
//! Vision Transformers run in [`vit`] (token-major inside, reusing the convolution, linear and
//! loss functions here), which [`run_with`] and [`logits_from_layer`] branch to; their NAC
//! layers come out NCHW too (`layer_i` as `[B, width, tokens, 1]`, unpooled).
//!
//! The loss is `L = Σ_b Σ_c −(1/C)·log_softmax(logits_b)_c` (the NAC loss), or, with
//! [`run_with`], the cross-entropy of `softmax(logits / T)` to the label or the predicted class;
//! `g = ∂L/∂z` is the gradient with respect to a stage output `z` (after the block's final ReLU
//! for ResNet, the residual sum for WideResNet blocks, the pooled feature for `avgpool`, a ViT
//! block's `ln_2` output, the class token after `encoder.ln` for `layer_norm`).
//!
//! Besides [`run`], the per-op building blocks are public so per-kernel GPU tests can compare
//! against them, and [`loss_from_layer`] / [`logits_from_layer`] continue the forward pass from
//! a given stage output (for finite-difference checks; a ViT from `layer_norm` only, see
//! [`vit::loss_with_perturbation`]).

pub mod vit;

use crate::engine::{Loss, Target};
use crate::error::{Error, Result};
use crate::model::arch::{Activation, BatchNorm, Body, Conv, Linear, Network, ResBlock, WrnBlock, BN_EPS, POOLED_LAYER};

/// Activation `z` and gradient `g = ∂L/∂z` at one named layer.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    /// Layer name as requested (`layer1`…, `block1`…, `avgpool`, or a ViT's `layer_0`…, `layer_norm`).
    pub name: String,
    /// `[B, C, H, W]`; `[B, C, 1, 1]` for `avgpool` and `layer_norm`; `[B, width, tokens, 1]` for a
    /// ViT's `layer_i`.
    pub shape: [usize; 4],
    /// Stage output, NCHW.
    pub z: Vec<f64>,
    /// `∂L/∂z`, NCHW, same shape as `z`.
    pub g: Vec<f64>,
}

/// Result of a reference run.
#[derive(Clone, Debug)]
pub struct ReferenceOutput {
    /// Logits, `B × classes` row-major.
    pub logits: Vec<f64>,
    /// The loss summed over the batch (the NAC loss `Σ_b Σ_c −(1/C)·log_softmax(logits_b)_c`
    /// unless [`run_with`] names another).
    pub loss: f64,
    /// One entry per requested layer, in the order requested.
    pub layers: Vec<LayerTensors>,
    /// `∂L/∂input`, NCHW, when asked for.
    pub input_grad: Option<Vec<f64>>,
}

// ---------------------------------------------------------------------------------------------
// Per-op building blocks
// ---------------------------------------------------------------------------------------------

/// Output length of a convolution / pooling along one axis: `(n + 2p − k)/s + 1` (floor).
/// Panics when the padded input is smaller than the kernel or the stride is 0.
pub fn conv_out_size(n: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    assert!(stride > 0, "stride must be positive");
    assert!(n + 2 * padding >= kernel, "input length {n} with padding {padding} is smaller than the kernel {kernel}");
    (n + 2 * padding - kernel) / stride + 1
}

/// Output size of `conv` on an `h × w` input, with its padding before (`padding`) and after
/// (`padding_end`) the image. Panics when the padded input is smaller than the kernel.
fn conv_out_hw(conv: &Conv, h: usize, w: usize) -> (usize, usize) {
    let len = |n: usize| {
        let padded = n + conv.padding + conv.padding_end;
        assert!(padded >= conv.kernel && conv.stride > 0, "conv `{}`: input length {n} padded is smaller than the kernel", conv.name);
        (padded - conv.kernel) / conv.stride + 1
    };
    (len(h), len(w))
}

/// Output pixels per work item of the convolutions: each weight row is used for `TILE` pixels
/// while it is in cache.
pub(super) const TILE: usize = 16;

/// Calls `f(chunk_index, chunk)` for every `chunk_len`-sized chunk of `out` (the last may be
/// shorter), on several threads when `work` (a rough multiply-add count) makes it worthwhile.
pub(super) fn for_each_chunk<F>(out: &mut [f64], chunk_len: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f64]) + Sync,
{
    if chunk_len == 0 || out.is_empty() {
        return;
    }
    let chunks = out.len().div_ceil(chunk_len);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(chunks);
    if threads <= 1 || work < (1 << 18) {
        for (i, ch) in out.chunks_mut(chunk_len).enumerate() {
            f(i, ch);
        }
        return;
    }
    let per = chunks.div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, part) in out.chunks_mut(per * chunk_len).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (i, ch) in part.chunks_mut(chunk_len).enumerate() {
                    f(t * per + i, ch);
                }
            });
        }
    });
}

fn check_len(x: &[f64], shape: [usize; 4], what: &str) {
    let n: usize = shape.iter().product();
    assert_eq!(x.len(), n, "{what}: data has {} elements but shape {shape:?} needs {n}", x.len());
}

fn check_conv_weight(conv: &Conv) {
    let k = conv.kernel;
    assert_eq!(
        conv.weight.len(),
        conv.out_channels * conv.in_channels * k * k,
        "conv `{}`: weight length does not match [{}, {}, {k}, {k}]",
        conv.name,
        conv.out_channels,
        conv.in_channels
    );
}

/// `Σ_i w[i]·x[i]` with the f32 weights widened to f64 (eight partial sums, so it vectorises).
pub(super) fn dot_w(w: &[f32], x: &[f64]) -> f64 {
    assert_eq!(w.len(), x.len());
    let mut acc = [0.0f64; 8];
    let (wc, xc) = (w.chunks_exact(8), x.chunks_exact(8));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..8 {
            acc[l] += a[l] as f64 * b[l];
        }
    }
    let mut sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (a, b) in wr.iter().zip(xr) {
        sum += *a as f64 * b;
    }
    sum
}

/// `acc[i] += a · w[i]` with the f32 weights widened to f64.
pub(super) fn axpy_w(acc: &mut [f64], a: f64, w: &[f32]) {
    assert_eq!(acc.len(), w.len());
    for (y, &r) in acc.iter_mut().zip(w) {
        *y += a * r as f64;
    }
}

/// Converts a pixel-major buffer `[B][H·W][C]` to NCHW.
pub(super) fn pixel_major_to_nchw(pm: &[f64], b: usize, c: usize, npix: usize) -> Vec<f64> {
    let mut out = vec![0.0; b * c * npix];
    for bi in 0..b {
        for pix in 0..npix {
            let src = &pm[(bi * npix + pix) * c..][..c];
            for (ci, &v) in src.iter().enumerate() {
                out[(bi * c + ci) * npix + pix] = v;
            }
        }
    }
    out
}

/// Input position read by output position `o` through kernel offset `kk`, if not padding.
fn conv_source(o: usize, kk: usize, stride: usize, padding: usize, in_len: usize) -> Option<usize> {
    let i = (o * stride + kk).checked_sub(padding)?;
    (i < in_len).then_some(i)
}

/// Visits every (column entry, input element) pair of im2col: `visit(col, x)` where `col`
/// indexes the row-per-output-pixel matrix (row `(b, oy, ox)`, entry in the weight's
/// `[in, kh, kw]` order) and `x` the NCHW input element it reads. Taps on padding are skipped.
fn for_each_tap(shape: [usize; 4], conv: &Conv, (oh, ow): (usize, usize), mut visit: impl FnMut(usize, usize)) {
    let [b, c, h, w] = shape;
    let (k, s, p) = (conv.kernel, conv.stride, conv.padding);
    let ckk = c * k * k;
    for bi in 0..b {
        for oy in 0..oh {
            for ox in 0..ow {
                let row = ((bi * oh + oy) * ow + ox) * ckk;
                for ci in 0..c {
                    for kh in 0..k {
                        let Some(iy) = conv_source(oy, kh, s, p, h) else { continue };
                        for kw in 0..k {
                            let Some(ix) = conv_source(ox, kw, s, p, w) else { continue };
                            visit(row + (ci * k + kh) * k + kw, ((bi * c + ci) * h + iy) * w + ix);
                        }
                    }
                }
            }
        }
    }
}

/// im2col: one row per output pixel `(b, oy, ox)` holding its receptive field in the weight's
/// `[in, kh, kw]` order, so that `conv(x)[b, o, pixel] = ⟨w[o], row⟩`. Padding reads as 0.
fn im2col(x: &[f64], shape: [usize; 4], conv: &Conv, out_hw: (usize, usize)) -> Vec<f64> {
    let [b, c, _, _] = shape;
    let mut cols = vec![0.0; b * out_hw.0 * out_hw.1 * c * conv.kernel * conv.kernel];
    for_each_tap(shape, conv, out_hw, |col, xi| cols[col] = x[xi]);
    cols
}

/// col2im, the adjoint of [`im2col`]: adds every row entry back onto the input position it was
/// read from (entries that read padding are dropped). Returns NCHW data of shape `shape`.
fn col2im(cols: &[f64], shape: [usize; 4], conv: &Conv, out_hw: (usize, usize)) -> Vec<f64> {
    let mut x = vec![0.0; shape.iter().product()];
    for_each_tap(shape, conv, out_hw, |col, xi| x[xi] += cols[col]);
    x
}

/// 2-D convolution (no bias, zero padding), PyTorch semantics:
/// `y[b,o,i,j] = Σ_{c,kh,kw} w[o,c,kh,kw] · x[b,c, i·s+kh−p, j·s+kw−p]` (out-of-range x = 0),
/// `p` the padding before the image; the padding after it only adds output rows/columns.
/// Returns the output and its shape `[B, out_channels, H', W']`.
///
/// Computed as im2col followed by one dot product per output element.
pub fn conv2d(x: &[f64], shape: [usize; 4], conv: &Conv) -> (Vec<f64>, [usize; 4]) {
    let [b, c, h, w] = shape;
    check_len(x, shape, "conv2d input");
    check_conv_weight(conv);
    assert_eq!(c, conv.in_channels, "conv `{}`: input has {c} channels, expected {}", conv.name, conv.in_channels);
    let k = conv.kernel;
    let oc = conv.out_channels;
    let (oh, ow) = conv_out_hw(conv, h, w);
    let (npix, ckk) = (oh * ow, c * k * k);
    let cols = im2col(x, shape, conv, (oh, ow));
    // Pixel-major output `[B][pixel][o]`, TILE output pixels per work item.
    let mut ypm = vec![0.0; b * npix * oc];
    for_each_chunk(&mut ypm, TILE * oc, b * npix * oc * ckk, |tile, chunk| {
        for o in 0..oc {
            let wrow = &conv.weight[o * ckk..][..ckk];
            for (t, yrow) in chunk.chunks_mut(oc).enumerate() {
                let gp = tile * TILE + t;
                yrow[o] = dot_w(wrow, &cols[gp * ckk..][..ckk]);
            }
        }
    });
    (pixel_major_to_nchw(&ypm, b, oc, npix), [b, oc, oh, ow])
}

/// Data gradient of [`conv2d`] (a transposed convolution): given `dy = ∂L/∂y` of shape
/// `[B, out_channels, H', W']`, returns `∂L/∂x` of shape `[B, in_channels, in_h, in_w]`:
/// `dx[b,c,iy,ix] = Σ w[o,c,kh,kw] · dy[b,o,oy,ox]` over all `(o, kh, kw, oy, ox)` with
/// `oy·s + kh − p = iy` and `ox·s + kw − p = ix`.
/// `in_hw` is the forward input size (ambiguous from `dy` alone when the stride is > 1);
/// it must map to `H' × W'` under the conv's output-size formula.
///
/// Computed as the adjoint of [`conv2d`]'s two steps: `dcols[b,pixel] = Σ_o dy[b,o,pixel]·w[o]`,
/// then col2im.
pub fn conv2d_backward_data(dy: &[f64], dy_shape: [usize; 4], conv: &Conv, in_hw: (usize, usize)) -> Vec<f64> {
    let [b, oc, oh, ow] = dy_shape;
    check_len(dy, dy_shape, "conv2d_backward_data dy");
    check_conv_weight(conv);
    assert_eq!(oc, conv.out_channels, "conv `{}`: dy has {oc} channels, expected {}", conv.name, conv.out_channels);
    let (h, w) = in_hw;
    let k = conv.kernel;
    assert_eq!(conv_out_hw(conv, h, w), (oh, ow), "conv `{}`: input {h}×{w} does not give the dy size {oh}×{ow}", conv.name);
    let c = conv.in_channels;
    let (npix, ckk) = (oh * ow, c * k * k);
    let mut dcols = vec![0.0; b * npix * ckk];
    for_each_chunk(&mut dcols, TILE * ckk, b * npix * oc * ckk, |tile, chunk| {
        for o in 0..oc {
            let wrow = &conv.weight[o * ckk..][..ckk];
            for (t, drow) in chunk.chunks_mut(ckk).enumerate() {
                let gp = tile * TILE + t;
                let (bi, pix) = (gp / npix, gp % npix);
                axpy_w(drow, dy[(bi * oc + o) * npix + pix], wrow);
            }
        }
    });
    col2im(&dcols, [b, c, h, w], conv, (oh, ow))
}

/// Eval-mode BatchNorm, applied literally per element:
/// `y = (x − mean)/sqrt(var + 1e-5)·gamma + beta`, per channel.
pub fn batch_norm(x: &[f64], shape: [usize; 4], bn: &BatchNorm) -> Vec<f64> {
    let [b, c, h, w] = shape;
    check_len(x, shape, "batch_norm input");
    assert_eq!(bn.gamma.len(), c, "bn `{}`: {} channels, input has {c}", bn.name, bn.gamma.len());
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            let (mean, var) = (bn.mean[ci] as f64, bn.var[ci] as f64);
            let (gamma, beta) = (bn.gamma[ci] as f64, bn.beta[ci] as f64);
            let sd = (var + BN_EPS).sqrt();
            let off = (bi * c + ci) * h * w;
            for i in off..off + h * w {
                y[i] = (x[i] - mean) / sd * gamma + beta;
            }
        }
    }
    y
}

/// Data gradient of eval-mode [`batch_norm`]: `dx = dy · gamma / sqrt(var + 1e-5)`.
pub fn batch_norm_backward_data(dy: &[f64], shape: [usize; 4], bn: &BatchNorm) -> Vec<f64> {
    let [b, c, h, w] = shape;
    check_len(dy, shape, "batch_norm_backward_data dy");
    assert_eq!(bn.gamma.len(), c, "bn `{}`: {} channels, dy has {c}", bn.name, bn.gamma.len());
    let mut dx = vec![0.0; dy.len()];
    for bi in 0..b {
        for ci in 0..c {
            let factor = bn.gamma[ci] as f64 / (bn.var[ci] as f64 + BN_EPS).sqrt();
            let off = (bi * c + ci) * h * w;
            for i in off..off + h * w {
                dx[i] = dy[i] * factor;
            }
        }
    }
    dx
}

/// `max(x, 0)` elementwise.
pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

/// Data gradient of ReLU given its output `y` (PyTorch: the gradient passes where `y > 0`).
pub fn relu_backward(dy: &[f64], y: &[f64]) -> Vec<f64> {
    assert_eq!(dy.len(), y.len(), "relu_backward: dy and y differ in length");
    dy.iter().zip(y).map(|(&d, &v)| if v > 0.0 { d } else { 0.0 }).collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Swish `x·sigmoid(x)` elementwise.
pub fn swish(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v * sigmoid(v)).collect()
}

/// Data gradient of Swish given its input `x`: `dy·(σ(x) + x·σ(x)·(1 − σ(x)))`.
pub fn swish_backward(dy: &[f64], x: &[f64]) -> Vec<f64> {
    assert_eq!(dy.len(), x.len(), "swish_backward: dy and x differ in length");
    dy.iter()
        .zip(x)
        .map(|(&d, &v)| {
            let s = sigmoid(v);
            d * (s + v * s * (1.0 - s))
        })
        .collect()
}

fn activate(x: &[f64], act: Activation) -> Vec<f64> {
    match act {
        Activation::Relu => relu(x),
        Activation::Swish => swish(x),
    }
}

/// Data gradient of `act` given its input `x` (ReLU's output is positive exactly where its
/// input is).
fn activate_backward(dy: &[f64], x: &[f64], act: Activation) -> Vec<f64> {
    match act {
        Activation::Relu => relu_backward(dy, x),
        Activation::Swish => swish_backward(dy, x),
    }
}

/// Max pooling 3×3, stride 2, padding 1 (padding counts as −∞, no ceil mode), as torchvision's
/// ResNet stem. Returns the output and its shape.
pub fn max_pool_3x3_s2(x: &[f64], shape: [usize; 4]) -> (Vec<f64>, [usize; 4]) {
    let [b, c, h, w] = shape;
    check_len(x, shape, "max_pool_3x3_s2 input");
    let (oh, ow) = (conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1));
    let mut y = vec![f64::NEG_INFINITY; b * c * oh * ow];
    for plane in 0..b * c {
        let xp = &x[plane * h * w..][..h * w];
        let yp = &mut y[plane * oh * ow..][..oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for dy in 0..3 {
                    let iy = (oy * 2 + dy) as isize - 1;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for dx in 0..3 {
                        let ix = (ox * 2 + dx) as isize - 1;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        m = m.max(xp[iy as usize * w + ix as usize]);
                    }
                }
                yp[oy * ow + ox] = m;
            }
        }
    }
    (y, [b, c, oh, ow])
}

/// Data gradient of [`max_pool_3x3_s2`] at its input `x`: each window's gradient goes to its
/// first maximum in scan order (PyTorch's recorded index).
pub fn max_pool_3x3_s2_backward(dy: &[f64], x: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [b, c, h, w] = shape;
    check_len(x, shape, "max_pool_3x3_s2_backward input");
    let (oh, ow) = (conv_out_size(h, 3, 2, 1), conv_out_size(w, 3, 2, 1));
    assert_eq!(dy.len(), b * c * oh * ow, "max_pool_3x3_s2_backward: dy length");
    let mut dx = vec![0.0; x.len()];
    for plane in 0..b * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f64, usize)> = None;
                for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                    for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                        let at = plane * h * w + iy * w + ix;
                        if best.is_none_or(|(m, _)| x[at] > m) {
                            best = Some((x[at], at));
                        }
                    }
                }
                dx[best.expect("every window holds a pixel").1] += dy[plane * oh * ow + oy * ow + ox];
            }
        }
    }
    dx
}

/// Global average pool over H×W: returns `B × C` row-major.
pub fn global_avg_pool(x: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [b, c, h, w] = shape;
    check_len(x, shape, "global_avg_pool input");
    let n = (h * w) as f64;
    (0..b * c).map(|plane| x[plane * h * w..][..h * w].iter().sum::<f64>() / n).collect()
}

/// Data gradient of [`global_avg_pool`]: `dy` is `B × C`; returns `dy/(H·W)` broadcast to `shape`.
pub fn global_avg_pool_backward(dy: &[f64], shape: [usize; 4]) -> Vec<f64> {
    let [b, c, h, w] = shape;
    assert_eq!(dy.len(), b * c, "global_avg_pool_backward: dy has {} elements, expected {}", dy.len(), b * c);
    let n = (h * w) as f64;
    let mut dx = vec![0.0; b * c * h * w];
    for plane in 0..b * c {
        dx[plane * h * w..][..h * w].fill(dy[plane] / n);
    }
    dx
}

/// Fully connected layer: `y[b,o] = Σ_i W[o,i]·x[b,i] + bias[o]`; `x` is `batch × in`,
/// the result `batch × out`, both row-major. Rows are split over threads in tiles of `TILE`
/// (a ViT applies it to every token); each row's result does not depend on the others.
pub fn linear(x: &[f64], batch: usize, fc: &Linear) -> Vec<f64> {
    let (fin, fout) = (fc.in_features, fc.out_features);
    assert_eq!(x.len(), batch * fin, "linear: input has {} elements, expected {batch}×{fin}", x.len());
    let mut y = vec![0.0; batch * fout];
    for_each_chunk(&mut y, TILE * fout, batch * fin * fout, |tile, chunk| {
        for o in 0..fout {
            let wr = &fc.weight[o * fin..][..fin];
            for (t, yrow) in chunk.chunks_mut(fout).enumerate() {
                yrow[o] = dot_w(wr, &x[(tile * TILE + t) * fin..][..fin]) + fc.bias[o] as f64;
            }
        }
    });
    y
}

/// Data gradient of [`linear`]: `dx[b,i] = Σ_o W[o,i]·dy[b,o]`; `dy` is `batch × out`.
pub fn linear_backward_data(dy: &[f64], batch: usize, fc: &Linear) -> Vec<f64> {
    let (fin, fout) = (fc.in_features, fc.out_features);
    assert_eq!(dy.len(), batch * fout, "linear_backward_data: dy has {} elements, expected {batch}×{fout}", dy.len());
    let mut dx = vec![0.0; batch * fin];
    for_each_chunk(&mut dx, TILE * fin, batch * fin * fout, |tile, chunk| {
        for o in 0..fout {
            let wr = &fc.weight[o * fin..][..fin];
            for (t, xrow) in chunk.chunks_mut(fin).enumerate() {
                axpy_w(xrow, dy[(tile * TILE + t) * fout + o], wr);
            }
        }
    });
    dx
}

/// Cross-entropy to the uniform target, summed over the batch:
/// `L = Σ_b Σ_c −(1/C)·log_softmax(logits_b)_c = Σ_b (logsumexp(logits_b) − mean_c logits_b)`.
pub fn uniform_ce_loss(logits: &[f64], batch: usize, classes: usize) -> f64 {
    assert_eq!(logits.len(), batch * classes, "uniform_ce_loss: logits length");
    let mut total = 0.0;
    for bi in 0..batch {
        let l = &logits[bi * classes..][..classes];
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + l.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        let mut s = 0.0;
        for &v in l {
            s += -(v - lse) / classes as f64;
        }
        total += s;
    }
    total
}

/// Per-sample target distributions (`B × C`) of `loss`: uniform, one-hot at the label, or
/// one-hot at the first maximum logit.
pub fn loss_targets(logits: &[f64], batch: usize, classes: usize, loss: Loss, labels: Option<&[usize]>) -> Vec<f64> {
    let mut t = vec![0.0; batch * classes];
    for bi in 0..batch {
        let row = &mut t[bi * classes..][..classes];
        match loss.target {
            Target::Uniform => row.iter_mut().for_each(|v| *v = 1.0 / classes as f64),
            Target::Label => row[labels.expect("a loss to the labels needs labels")[bi]] = 1.0,
            Target::Prediction => {
                let l = &logits[bi * classes..][..classes];
                let first_max = (0..classes).fold(0, |m, c| if l[c] > l[m] { c } else { m });
                row[first_max] = 1.0;
            }
        }
    }
    t
}

/// `Σ_b CE(softmax(logits_b / T), targets_b)` and its gradient at the logits,
/// `(softmax(logits_b / T) − targets_b) / T`.
pub fn ce_loss_and_grad(logits: &[f64], batch: usize, classes: usize, targets: &[f64], temperature: f64) -> (f64, Vec<f64>) {
    assert_eq!(logits.len(), batch * classes, "ce_loss_and_grad: logits length");
    let mut loss = 0.0;
    let mut g = vec![0.0; batch * classes];
    for bi in 0..batch {
        let l: Vec<f64> = logits[bi * classes..][..classes].iter().map(|v| v / temperature).collect();
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + l.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        let p: Vec<f64> = l.iter().map(|v| (v - lse).exp()).collect();
        for c in 0..classes {
            let t = targets[bi * classes + c];
            loss -= t * (l[c] - lse);
            // At a one-hot target, p − 1 = −Σ of the other classes: exact where p rounds to 1.
            let d = if t == 1.0 { -(0..classes).filter(|&o| o != c).map(|o| p[o]).sum::<f64>() } else { p[c] - t };
            g[bi * classes + c] = d / temperature;
        }
    }
    (loss, g)
}

/// Gradient of [`uniform_ce_loss`] at the logits: `softmax(logits_b) − 1/C` per sample.
pub fn uniform_ce_logit_grad(logits: &[f64], batch: usize, classes: usize) -> Vec<f64> {
    assert_eq!(logits.len(), batch * classes, "uniform_ce_logit_grad: logits length");
    let mut g = vec![0.0; batch * classes];
    for bi in 0..batch {
        let l = &logits[bi * classes..][..classes];
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = l.iter().map(|&v| (v - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (c, ev) in e.iter().enumerate() {
            g[bi * classes + c] = ev / sum - 1.0 / classes as f64;
        }
    }
    g
}

pub(super) fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    assert_eq!(a.len(), b.len(), "residual add: operands differ in length");
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Normwise relative error of a GPU result against the reference: `max|got − want| / max|want|`;
/// infinite when the lengths differ or any value is not finite, so a NaN never passes.
pub fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) || want.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks, stages, stem and head
// ---------------------------------------------------------------------------------------------

/// What one block's backward pass needs from its forward pass.
struct BlockCache {
    in_shape: [usize; 4],
    out_shape: [usize; 4],
    /// ResNet: post-ReLU inputs of convs 2..k. WRN: the activations' inputs `[bn1(x), bn2(conv1(a))]`.
    hidden: Vec<(Vec<f64>, [usize; 4])>,
    /// ResNet: block output (for the final ReLU mask). WRN: unused (empty).
    out: Vec<f64>,
}

fn res_block_forward(blk: &ResBlock, x: &[f64], shape: [usize; 4], keep: bool) -> (Vec<f64>, [usize; 4], Option<BlockCache>) {
    let n = blk.convs.len();
    let mut hidden = Vec::new();
    let mut h = x.to_vec();
    let mut hs = shape;
    for (i, (conv, bn)) in blk.convs.iter().enumerate() {
        let (y, ys) = conv2d(&h, hs, conv);
        let y = batch_norm(&y, ys, bn);
        h = if i + 1 < n { relu(&y) } else { y };
        hs = ys;
        if i + 1 < n && keep {
            hidden.push((h.clone(), hs));
        }
    }
    let sc = match &blk.projection {
        Some((conv, bn)) => {
            let (t, ts) = conv2d(x, shape, conv);
            assert_eq!(ts, hs, "projection `{}` output shape differs from the main path", conv.name);
            batch_norm(&t, ts, bn)
        }
        None => {
            assert_eq!(shape, hs, "identity shortcut: block input and output shapes differ");
            x.to_vec()
        }
    };
    let out = relu(&add(&h, &sc));
    let cache = keep.then(|| BlockCache { in_shape: shape, out_shape: hs, hidden, out: out.clone() });
    (out, hs, cache)
}

fn res_block_backward(blk: &ResBlock, cache: &BlockCache, g_out: &[f64]) -> Vec<f64> {
    let n = blk.convs.len();
    let d_out = relu_backward(g_out, &cache.out);
    let mut d = d_out.clone();
    for i in (0..n).rev() {
        let (conv, bn) = &blk.convs[i];
        let ys = if i + 1 == n { cache.out_shape } else { cache.hidden[i].1 };
        let xs = if i == 0 { cache.in_shape } else { cache.hidden[i - 1].1 };
        d = batch_norm_backward_data(&d, ys, bn);
        d = conv2d_backward_data(&d, ys, conv, (xs[2], xs[3]));
        if i > 0 {
            d = relu_backward(&d, &cache.hidden[i - 1].0);
        }
    }
    let d_sc = match &blk.projection {
        Some((conv, bn)) => {
            let t = batch_norm_backward_data(&d_out, cache.out_shape, bn);
            conv2d_backward_data(&t, cache.out_shape, conv, (cache.in_shape[2], cache.in_shape[3]))
        }
        None => d_out,
    };
    add(&d, &d_sc)
}

fn wrn_block_forward(
    blk: &WrnBlock,
    act: Activation,
    x: &[f64],
    shape: [usize; 4],
    keep: bool,
) -> (Vec<f64>, [usize; 4], Option<BlockCache>) {
    let u = batch_norm(x, shape, &blk.bn1);
    let a = activate(&u, act);
    let (t, ts) = conv2d(&a, shape, &blk.conv1);
    let v = batch_norm(&t, ts, &blk.bn2);
    let h = activate(&v, act);
    let (r, rs) = conv2d(&h, ts, &blk.conv2);
    let sc = match &blk.shortcut {
        Some(conv) => {
            let (s, ss) = conv2d(&a, shape, conv);
            assert_eq!(ss, rs, "shortcut `{}` output shape differs from the main path", conv.name);
            s
        }
        None => {
            assert_eq!(shape, rs, "identity shortcut: block input and output shapes differ");
            x.to_vec()
        }
    };
    let out = add(&r, &sc);
    let cache = keep.then(|| BlockCache { in_shape: shape, out_shape: rs, hidden: vec![(u, shape), (v, ts)], out: Vec::new() });
    (out, rs, cache)
}

fn wrn_block_backward(blk: &WrnBlock, act: Activation, cache: &BlockCache, g_out: &[f64]) -> Vec<f64> {
    let (u, xs) = (&cache.hidden[0].0, cache.in_shape);
    let (v, ts) = (&cache.hidden[1].0, cache.hidden[1].1);
    let rs = cache.out_shape;
    let dh = conv2d_backward_data(g_out, rs, &blk.conv2, (ts[2], ts[3]));
    let dv = activate_backward(&dh, v, act);
    let dt = batch_norm_backward_data(&dv, ts, &blk.bn2);
    let mut da = conv2d_backward_data(&dt, ts, &blk.conv1, (xs[2], xs[3]));
    match &blk.shortcut {
        Some(conv) => {
            let ds = conv2d_backward_data(g_out, rs, conv, (xs[2], xs[3]));
            da = add(&da, &ds);
            batch_norm_backward_data(&activate_backward(&da, u, act), xs, &blk.bn1)
        }
        None => {
            let dx = batch_norm_backward_data(&activate_backward(&da, u, act), xs, &blk.bn1);
            add(g_out, &dx)
        }
    }
}

fn num_stages(net: &Network) -> usize {
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { stages, .. } => stages.len(),
        Body::WideResNet { stages, .. } => stages.len(),
    }
}

/// Runs stage `s`; returns its output, shape, and (when `keep`) the caches of its blocks.
fn stage_forward(net: &Network, s: usize, x: &[f64], shape: [usize; 4], keep: bool) -> (Vec<f64>, [usize; 4], Vec<BlockCache>) {
    let mut cur = x.to_vec();
    let mut cs = shape;
    let mut caches = Vec::new();
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { stages, .. } => {
            for blk in &stages[s] {
                let (y, ys, c) = res_block_forward(blk, &cur, cs, keep);
                cur = y;
                cs = ys;
                caches.extend(c);
            }
        }
        Body::WideResNet { stages, activation, .. } => {
            for blk in &stages[s] {
                let (y, ys, c) = wrn_block_forward(blk, *activation, &cur, cs, keep);
                cur = y;
                cs = ys;
                caches.extend(c);
            }
        }
    }
    (cur, cs, caches)
}

/// Backpropagates `g` (gradient at stage `s`'s output) to stage `s`'s input.
fn stage_backward(net: &Network, s: usize, caches: &[BlockCache], g: &[f64]) -> Vec<f64> {
    let mut d = g.to_vec();
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { stages, .. } => {
            for (blk, cache) in stages[s].iter().zip(caches).rev() {
                d = res_block_backward(blk, cache, &d);
            }
        }
        Body::WideResNet { stages, activation, .. } => {
            for (blk, cache) in stages[s].iter().zip(caches).rev() {
                d = wrn_block_backward(blk, *activation, cache, &d);
            }
        }
    }
    d
}

/// An activation with its NCHW shape.
type Tensor = (Vec<f64>, [usize; 4]);

/// The stem: `relu(bn(conv(x)))` (+ max-pool) for ResNet, the bare conv for WideResNet. Also
/// returns the ResNet stem's `relu(bn(conv(x)))` and its shape, which its backward needs.
fn stem_forward(net: &Network, x: &[f64], shape: [usize; 4]) -> (Vec<f64>, [usize; 4], Option<Tensor>) {
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { stem: (conv, bn), max_pool, .. } => {
            let (y, ys) = conv2d(x, shape, conv);
            let y = relu(&batch_norm(&y, ys, bn));
            if *max_pool {
                let (p, ps) = max_pool_3x3_s2(&y, ys);
                (p, ps, Some((y, ys)))
            } else {
                (y.clone(), ys, Some((y, ys)))
            }
        }
        Body::WideResNet { stem, .. } => {
            let (y, ys) = conv2d(x, shape, stem);
            (y, ys, None)
        }
    }
}

/// From the gradient at the stem's output to the gradient at the input.
fn stem_backward(net: &Network, g: &[f64], shape: [usize; 4], cache: Option<&Tensor>) -> Vec<f64> {
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { stem: (conv, bn), max_pool, .. } => {
            let (y, ys) = cache.expect("the ResNet stem keeps its output");
            let g = if *max_pool { max_pool_3x3_s2_backward(g, y, *ys) } else { g.to_vec() };
            let g = batch_norm_backward_data(&relu_backward(&g, y), *ys, bn);
            conv2d_backward_data(&g, *ys, conv, (shape[2], shape[3]))
        }
        Body::WideResNet { stem, .. } => {
            let (oh, ow) = conv_out_hw(stem, shape[2], shape[3]);
            let ys = [shape[0], stem.out_channels, oh, ow];
            conv2d_backward_data(g, ys, stem, (shape[2], shape[3]))
        }
    }
}

/// From the last stage output to the pooled feature (`B × C`). For WideResNet also returns
/// `final_bn(x)`, the activation's input, which the backward pass needs.
fn head_forward(net: &Network, x: &[f64], shape: [usize; 4]) -> (Vec<f64>, Option<Vec<f64>>) {
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { .. } => (global_avg_pool(x, shape), None),
        Body::WideResNet { final_bn, activation, .. } => {
            let u = batch_norm(x, shape, final_bn);
            (global_avg_pool(&activate(&u, *activation), shape), Some(u))
        }
    }
}

/// Gradient at the last stage output from the gradient at the pooled feature.
fn head_backward(net: &Network, g_pooled: &[f64], shape: [usize; 4], pre: Option<&[f64]>) -> Vec<f64> {
    let g = global_avg_pool_backward(g_pooled, shape);
    match &net.body {
        Body::VisionTransformer { .. } => unreachable!("a Vision Transformer runs in `reference::vit`"),
        Body::ResNet { .. } => g,
        Body::WideResNet { final_bn, activation, .. } => {
            let pre = pre.expect("WideResNet head keeps final_bn(x)");
            batch_norm_backward_data(&activate_backward(&g, pre, *activation), shape, final_bn)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole network
// ---------------------------------------------------------------------------------------------

/// Runs the network in f64 on `input` (f32 NCHW of shape `[B, C, H, W]`), computes the NAC loss
/// and, for each requested layer (names from `net.layer_names()`), the stage output `z` and the
/// data gradient `g = ∂L/∂z`. An empty `layers` runs the forward pass only (the loss is still
/// computed). The backward pass stops at the shallowest requested layer.
pub fn run(net: &Network, input: &[f32], shape: [usize; 4], layers: &[&str]) -> Result<ReferenceOutput> {
    let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
    run_with(net, &x, shape, layers, Loss::NAC, None, false)
}

/// [`run`] for any [`Loss`] on f64 inputs, optionally with `∂L/∂input` (the backward pass then
/// goes through every stage and the stem).
pub fn run_with(
    net: &Network,
    input: &[f64],
    shape: [usize; 4],
    layers: &[&str],
    loss: Loss,
    labels: Option<&[usize]>,
    input_gradient: bool,
) -> Result<ReferenceOutput> {
    if matches!(net.body, Body::VisionTransformer { .. }) {
        return vit::run_with(net, input, shape, layers, loss, labels, input_gradient);
    }
    let [b, c, h, w] = shape;
    if b == 0 || h == 0 || w == 0 {
        return Err(Error::Input(format!("reference: input shape {shape:?} has an empty dimension")));
    }
    if c != net.in_channels() {
        return Err(Error::Input(format!("reference: input has {c} channels but {} expects {}", net.spec, net.in_channels())));
    }
    if input.len() != b * c * h * w {
        return Err(Error::Input(format!("reference: input has {} values but shape {shape:?} needs {}", input.len(), b * c * h * w)));
    }
    if let Some(problem) = net.input_size_problem(h, w) {
        return Err(Error::Input(format!("reference: {} {problem}", net.spec)));
    }
    let idxs: Vec<usize> = layers.iter().map(|l| net.layer_index(l)).collect::<Result<_>>()?;
    let nst = num_stages(net);
    // The shallowest stage whose output gradient is needed: 0 for the input gradient.
    let shallowest = if input_gradient { Some(0) } else { idxs.iter().copied().min() };
    let classes = net.num_classes();
    if let Some(l) = labels {
        if l.len() != b || l.iter().any(|&v| v >= classes) {
            return Err(Error::Input(format!("reference: {} labels for {b} samples of {classes} classes", l.len())));
        }
    }

    let (mut x, mut xs, stem_cache) = stem_forward(net, input, shape);
    let mut zs: Vec<(Vec<f64>, [usize; 4])> = Vec::with_capacity(nst);
    let mut caches: Vec<Vec<BlockCache>> = Vec::with_capacity(nst);
    for s in 0..nst {
        // Stage s's caches are needed to carry the gradient from its output to its input.
        let keep = shallowest.is_some_and(|m| s > m || (input_gradient && s == m));
        let (y, ys, cache) = stage_forward(net, s, &x, xs, keep);
        zs.push((if idxs.contains(&s) { y.clone() } else { Vec::new() }, ys));
        caches.push(cache);
        x = y;
        xs = ys;
    }
    let (pooled, post) = head_forward(net, &x, xs);
    let logits = linear(&pooled, b, &net.fc);
    let targets = loss_targets(&logits, b, classes, loss, labels);
    let (loss_value, g_logits) = ce_loss_and_grad(&logits, b, classes, &targets, loss.temperature as f64);

    let mut gs: Vec<Option<Vec<f64>>> = vec![None; nst + 1];
    let mut input_grad = None;
    if let Some(m) = shallowest {
        let g_pooled = linear_backward_data(&g_logits, b, &net.fc);
        if m < nst {
            let mut g = head_backward(net, &g_pooled, xs, post.as_deref());
            for s in (m..nst).rev() {
                if idxs.contains(&s) {
                    gs[s] = Some(g.clone());
                }
                if s > m || input_gradient {
                    g = stage_backward(net, s, &caches[s], &g);
                }
            }
            if input_gradient {
                input_grad = Some(stem_backward(net, &g, shape, stem_cache.as_ref()));
            }
        }
        gs[nst] = Some(g_pooled);
    }

    let feat = net.fc.in_features;
    let out_layers = layers
        .iter()
        .zip(&idxs)
        .map(|(name, &i)| {
            let g = gs[i].clone().expect("gradient computed for every requested layer");
            if i == nst {
                LayerTensors { name: name.to_string(), shape: [b, feat, 1, 1], z: pooled.clone(), g }
            } else {
                LayerTensors { name: name.to_string(), shape: zs[i].1, z: zs[i].0.clone(), g }
            }
        })
        .collect();
    Ok(ReferenceOutput { logits, loss: loss_value, layers: out_layers, input_grad })
}

/// Continues the forward pass from layer `layer`'s output `z` (shape `[B, C, H, W]`; for
/// `avgpool`, the pooled feature with shape `[B, C, 1, 1]`) and returns the logits (`B × classes`).
/// A Vision Transformer continues from `layer_norm` only ([`vit::logits_from_layer`]).
pub fn logits_from_layer(net: &Network, layer: &str, z: &[f64], shape: [usize; 4]) -> Result<Vec<f64>> {
    if matches!(net.body, Body::VisionTransformer { .. }) {
        return vit::logits_from_layer(net, layer, z, shape);
    }
    let idx = net.layer_index(layer)?;
    let nst = num_stages(net);
    let [b, c, h, w] = shape;
    if z.len() != b * c * h * w {
        return Err(Error::Input(format!("reference: `{layer}` data has {} values but shape {shape:?} needs {}", z.len(), b * c * h * w)));
    }
    if idx == nst {
        if c != net.fc.in_features || h != 1 || w != 1 {
            return Err(Error::Input(format!(
                "reference: `{POOLED_LAYER}` must have shape [B, {}, 1, 1], got {shape:?}",
                net.fc.in_features
            )));
        }
        return Ok(linear(z, b, &net.fc));
    }
    let expected = net.stage_channels()[idx];
    if c != expected || b == 0 || h == 0 || w == 0 {
        return Err(Error::Input(format!("reference: `{layer}` must have {expected} channels and a non-empty shape, got {shape:?}")));
    }
    let mut x = z.to_vec();
    let mut xs = shape;
    for s in idx + 1..nst {
        let (y, ys, _) = stage_forward(net, s, &x, xs, false);
        x = y;
        xs = ys;
    }
    let (pooled, _) = head_forward(net, &x, xs);
    Ok(linear(&pooled, b, &net.fc))
}

/// Continues the forward pass from layer `layer`'s output `z` (see [`logits_from_layer`]) and
/// returns the NAC loss — the function whose gradient [`run`] reports as `g` for that layer.
pub fn loss_from_layer(net: &Network, layer: &str, z: &[f64], shape: [usize; 4]) -> Result<f64> {
    let logits = logits_from_layer(net, layer, z, shape)?;
    Ok(uniform_ce_loss(&logits, shape[0], net.num_classes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ArchSpec, ResBlock, WrnBlock};
    use crate::model::synthetic::SyntheticModel;
    use crate::rng::Rng;

    fn normal_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.normal() as f64).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn rms(a: &[f64]) -> f64 {
        (dot(a, a) / a.len().max(1) as f64).sqrt()
    }

    fn random_conv(rng: &mut Rng, cin: usize, cout: usize, k: usize, s: usize, p: usize) -> Conv {
        Conv {
            name: "test".into(),
            out_channels: cout,
            in_channels: cin,
            kernel: k,
            stride: s,
            padding: p,
            padding_end: p,
            weight: (0..cout * cin * k * k).map(|_| rng.normal()).collect(),
        }
    }

    /// Direct transcription of the conv formula, with a bounds check per tap.
    fn naive_conv(x: &[f64], shape: [usize; 4], conv: &Conv) -> Vec<f64> {
        let [b, c, h, w] = shape;
        let (k, s, p) = (conv.kernel, conv.stride, conv.padding);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut y = vec![0.0; b * conv.out_channels * oh * ow];
        for bi in 0..b {
            for o in 0..conv.out_channels {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0.0;
                        for ci in 0..c {
                            for kh in 0..k {
                                for kw in 0..k {
                                    let iy = (i * s + kh) as isize - p as isize;
                                    let ix = (j * s + kw) as isize - p as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        acc += conv.weight[((o * c + ci) * k + kh) * k + kw] as f64
                                            * x[((bi * c + ci) * h + iy as usize) * w + ix as usize];
                                    }
                                }
                            }
                        }
                        y[((bi * conv.out_channels + o) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        y
    }

    // ---- finite differences through whole networks ----

    /// Checks `g·δ` against central differences of `loss_from_layer`; returns (relative error,
    /// g·δ, best finite difference). The step is `ε·rms(z)` for ε = 1e-4, 1e-5, 1e-3, 1e-6 in
    /// turn, stopping at the first that agrees to 1e-7, so that a step that happens to cross a
    /// ReLU kink (the network is piecewise linear up to the softmax) does not fail the check.
    /// The error is relative to max(|g·δ|, |fd|, 0.1·rms(g)·‖δ‖): an element whose gradient is
    /// far below the layer's typical size is compared on the layer's scale, since the rounding
    /// noise of the loss (≈ 1e-16·L/step) would swamp a purely relative check there.
    fn fd_rel_error(net: &Network, layer: &str, z: &[f64], shape: [usize; 4], g: &[f64], delta: &[f64]) -> (f64, f64, f64) {
        let gd = dot(g, delta);
        let floor = 0.1 * rms(g) * dot(delta, delta).sqrt();
        let step = rms(z).max(1e-3);
        let mut best = (f64::INFINITY, f64::NAN);
        for rel_eps in [1e-4, 1e-5, 1e-3, 1e-6] {
            let eps = rel_eps * step;
            let zp: Vec<f64> = z.iter().zip(delta).map(|(a, d)| a + eps * d).collect();
            let zm: Vec<f64> = z.iter().zip(delta).map(|(a, d)| a - eps * d).collect();
            let lp = loss_from_layer(net, layer, &zp, shape).unwrap();
            let lm = loss_from_layer(net, layer, &zm, shape).unwrap();
            let fd = (lp - lm) / (2.0 * eps);
            let err = (fd - gd).abs() / gd.abs().max(fd.abs()).max(floor).max(f64::MIN_POSITIVE);
            if err < best.0 {
                best = (err, fd);
            }
            if err <= 1e-7 {
                break;
            }
        }
        (best.0, gd, best.1)
    }

    fn check_network(spec: ArchSpec, hw: usize, seed: u64, shapes: &[[usize; 4]]) {
        let net = SyntheticModel::new(spec, 10, seed).unwrap().network;
        let shape = [2, 3, hw, hw];
        let mut rng = Rng::new(seed + 1000);
        let input: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.normal()).collect();
        let names = net.layer_names();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let out = run(&net, &input, shape, &refs).unwrap();
        assert_eq!(out.layers.len(), names.len());
        let got: Vec<[usize; 4]> = out.layers.iter().map(|l| l.shape).collect();
        assert_eq!(got, shapes, "{spec}: layer shapes");
        assert!(out.loss.is_finite() && out.loss > 0.0);

        // Forward-only run gives the same logits and loss.
        let fwd = run(&net, &input, shape, &[]).unwrap();
        assert!(fwd.layers.is_empty());
        assert_eq!(fwd.logits, out.logits);
        assert_eq!(fwd.loss, out.loss);

        for lt in &out.layers {
            assert_eq!(lt.z.len(), lt.shape.iter().product::<usize>());
            assert_eq!(lt.g.len(), lt.z.len());
            assert_eq!(lt.shape[0], 2);
            // Continuing from the stored z reproduces the loss.
            let l = loss_from_layer(&net, &lt.name, &lt.z, lt.shape).unwrap();
            assert!((l - out.loss).abs() <= 1e-12 * out.loss.abs(), "{spec} {}: loss {l} vs {}", lt.name, out.loss);
            assert!(rms(&lt.g) > 0.0, "{spec} {}: zero gradient", lt.name);

            let n = lt.z.len();
            let mut worst = 0.0f64;
            for t in 0..7 {
                let delta = if t < 6 {
                    let mut d = vec![0.0; n];
                    d[rng.below(n)] = 1.0;
                    d
                } else {
                    normal_vec(&mut rng, n)
                };
                let (err, gd, fd) = fd_rel_error(&net, &lt.name, &lt.z, lt.shape, &lt.g, &delta);
                assert!(err <= 1e-6, "{spec} {} probe {t}: g·δ = {gd:e}, finite difference {fd:e}, rel err {err:e}", lt.name);
                worst = worst.max(err);
            }
            eprintln!("{spec} {:>8} {:?}: worst FD rel err {worst:.2e}", lt.name, lt.shape);
        }
    }

    #[test]
    fn fd_resnet18_32x32() {
        check_network(ArchSpec::ResNet18_32x32, 8, 11, &[[2, 64, 8, 8], [2, 128, 4, 4], [2, 256, 2, 2], [2, 512, 1, 1], [2, 512, 1, 1]]);
    }

    #[test]
    fn fd_torch_resnet50() {
        check_network(
            ArchSpec::TorchResNet { depth: 50 },
            32,
            12,
            &[[2, 256, 8, 8], [2, 512, 4, 4], [2, 1024, 2, 2], [2, 2048, 1, 1], [2, 2048, 1, 1]],
        );
    }

    #[test]
    fn fd_wide_resnet_10_2() {
        check_network(ArchSpec::WideResNet { depth: 10, width: 2 }, 8, 13, &[[2, 32, 8, 8], [2, 64, 4, 4], [2, 128, 2, 2], [2, 128, 1, 1]]);
    }

    #[test]
    fn fd_dm_wide_resnet() {
        // ReLU and Swish; depth 10 (one block per stage: every block has a shortcut) and 16 (two:
        // the second of each stage has none). The final map must be 8×8: 32×32 inputs.
        for (depth, act, seed) in [(10, Activation::Swish, 14), (16, Activation::Relu, 15)] {
            let spec = ArchSpec::DmWideResNet { depth, width: 1, activation: act };
            check_network(spec, 32, seed, &[[2, 16, 32, 32], [2, 32, 16, 16], [2, 64, 8, 8], [2, 64, 1, 1]]);
        }
    }

    #[test]
    fn dm_wide_resnet_takes_32x32_only() {
        let net = SyntheticModel::new(ArchSpec::DmWideResNet { depth: 10, width: 1, activation: Activation::Swish }, 3, 1).unwrap().network;
        assert!(run(&net, &[0.1; 3 * 32 * 32], [1, 3, 32, 32], &[]).is_ok());
        let e = run(&net, &[0.1; 3 * 33 * 32], [1, 3, 33, 32], &[]).unwrap_err().to_string();
        assert!(e.contains("takes 32×32 images only"), "{e}");
    }

    #[test]
    fn partial_layers_match_full_run() {
        let net = SyntheticModel::new(ArchSpec::ResNet18_32x32, 10, 5).unwrap().network;
        let shape = [2, 3, 8, 8];
        let mut rng = Rng::new(6);
        let input: Vec<f32> = (0..2 * 3 * 64).map(|_| rng.normal()).collect();
        let all = run(&net, &input, shape, &["layer1", "layer2", "layer3", "layer4", "avgpool"]).unwrap();
        let some = run(&net, &input, shape, &["avgpool", "layer3"]).unwrap();
        assert_eq!(some.layers[0].name, "avgpool");
        assert_eq!(some.layers[1].name, "layer3");
        assert_eq!(some.layers[0].g, all.layers[4].g);
        assert_eq!(some.layers[1].z, all.layers[2].z);
        assert_eq!(some.layers[1].g, all.layers[2].g);
        assert_eq!(some.layers[0].shape, [2, 512, 1, 1]);
        assert_eq!(all.layers[0].shape, [2, 64, 8, 8]);
        assert_eq!(all.layers[3].shape, [2, 512, 1, 1]);
        // The ResNet stage outputs are post-ReLU.
        assert!(all.layers[0].z.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let net = SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 4, 1).unwrap().network;
        let input = vec![0.5f32; 2 * 3 * 4 * 4];
        assert!(matches!(run(&net, &input, [2, 3, 4, 4], &["nope"]), Err(Error::Input(_))));
        assert!(matches!(run(&net, &input, [2, 4, 4, 3], &[]), Err(Error::Input(_))));
        assert!(matches!(run(&net, &input[1..], [2, 3, 4, 4], &[]), Err(Error::Input(_))));
        assert!(matches!(run(&net, &[], [0, 3, 4, 4], &[]), Err(Error::Input(_))));
        assert!(run(&net, &input, [2, 3, 4, 4], &["block2", "avgpool"]).is_ok());
        assert!(loss_from_layer(&net, "avgpool", &[0.0; 64], [1, 64, 1, 1]).is_ok());
        assert!(loss_from_layer(&net, "avgpool", &[0.0; 64], [1, 32, 2, 1]).is_err());
        assert!(loss_from_layer(&net, "block1", &[0.0; 64], [1, 16, 2, 2]).is_ok());
        assert!(loss_from_layer(&net, "block1", &[0.0; 64], [1, 32, 2, 1]).is_err());
        assert!(loss_from_layer(&net, "layer1", &[0.0; 64], [1, 16, 2, 2]).is_err());
    }

    // ---- hand-computed scalar networks (1 channel, 1×1 images): block semantics ----

    fn conv1x1(w: f32) -> Conv {
        Conv { name: "c".into(), out_channels: 1, in_channels: 1, kernel: 1, stride: 1, padding: 0, padding_end: 0, weight: vec![w] }
    }

    /// BatchNorm with unit standard deviation: var + 1e-5 = 1 up to f32 rounding of the var.
    fn bn1(gamma: f32, beta: f32, mean: f32) -> BatchNorm {
        BatchNorm { name: "bn".into(), gamma: vec![gamma], beta: vec![beta], mean: vec![mean], var: vec![(1.0 - 1e-5) as f32] }
    }

    fn two_class_fc(bias0: f32) -> Linear {
        Linear { out_features: 2, in_features: 1, weight: vec![1.0, -1.0], bias: vec![bias0, 0.0] }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-7 * b.abs().max(1.0)
    }

    #[test]
    fn resnet_blocks_hand_computed() {
        // Block A (identity shortcut): h = relu(bn(2·x)), a = bn(−0.5·h), out = relu(a + x).
        let a = ResBlock { convs: vec![(conv1x1(2.0), bn1(1.0, -1.0, 0.0)), (conv1x1(-0.5), bn1(0.5, 0.25, 0.0))], projection: None };
        // Block B (projection): h = relu(bn(x)), a = bn(4·h), sc = bn(2·x), out = relu(a + sc).
        let b = ResBlock {
            convs: vec![(conv1x1(1.0), bn1(1.0, 0.0, 1.0)), (conv1x1(4.0), bn1(1.0, 0.0, 0.0))],
            projection: Some((conv1x1(2.0), bn1(1.0, 0.5, 0.0))),
        };
        let net = Network {
            spec: ArchSpec::ResNet18_32x32,
            body: Body::ResNet { stem: (conv1x1(1.0), bn1(1.0, 0.0, 0.0)), max_pool: false, stages: vec![vec![a], vec![b]] },
            fc: two_class_fc(0.5),
        };
        let out = run(&net, &[1.5], [1, 1, 1, 1], &["layer1", "layer2", "avgpool"]).unwrap();
        // stem 1.5; block A: h = relu(3 − 1) = 2, a = 0.5·(−1) + 0.25 = −0.25, out = relu(1.25) = 1.25.
        // block B: h = relu(1.25 − 1) = 0.25, a = 1, sc = 2.5 + 0.5 = 3, out = 4. logits (4.5, −4).
        assert!(close(out.layers[0].z[0], 1.25), "{:?}", out.layers[0].z);
        assert!(close(out.layers[1].z[0], 4.0), "{:?}", out.layers[1].z);
        assert!(close(out.layers[2].z[0], 4.0));
        assert!(close(out.logits[0], 4.5) && close(out.logits[1], -4.0), "{:?}", out.logits);
        let loss = (4.5f64.exp() + (-4f64).exp()).ln() - 0.25;
        assert!(close(out.loss, loss));
        // ∂L/∂pooled = p0 − p1 = tanh(4.25); through block B: main path 4·G, shortcut 2·G.
        let g = 4.25f64.tanh();
        assert!(close(out.layers[2].g[0], g) && close(out.layers[1].g[0], g));
        assert!(close(out.layers[0].g[0], 6.0 * g), "{} vs {}", out.layers[0].g[0], 6.0 * g);
    }

    #[test]
    fn wide_resnet_blocks_hand_computed() {
        // Block 1 (identity): a = relu(bn1(x)), out = x + 0.5·relu(bn2(3·a)).
        let b1 = WrnBlock { bn1: bn1(2.0, -1.0, 0.0), conv1: conv1x1(3.0), bn2: bn1(1.0, -2.0, 0.0), conv2: conv1x1(0.5), shortcut: None };
        // Block 2 (conv shortcut on a): a = relu(x), out = 2·relu(a) − 0.5·a.
        let b2 = WrnBlock {
            bn1: bn1(1.0, 0.0, 0.0),
            conv1: conv1x1(1.0),
            bn2: bn1(1.0, 0.0, 0.0),
            conv2: conv1x1(2.0),
            shortcut: Some(conv1x1(-0.5)),
        };
        let net = Network {
            spec: ArchSpec::WideResNet { depth: 10, width: 1 },
            body: Body::WideResNet {
                stem: conv1x1(1.0),
                stages: vec![vec![b1], vec![b2]],
                final_bn: bn1(1.0, -0.5, 0.0),
                activation: Activation::Relu,
            },
            fc: two_class_fc(0.0),
        };
        let out = run(&net, &[1.5], [1, 1, 1, 1], &["block1", "block2", "avgpool"]).unwrap();
        // block 1: a = relu(3 − 1) = 2, h = relu(6 − 2) = 4, out = 1.5 + 2 = 3.5.
        // block 2: a = 3.5, h = 3.5, out = 7 − 1.75 = 5.25. final relu(bn) = 4.75; logits (4.75, −4.75).
        assert!(close(out.layers[0].z[0], 3.5), "{:?}", out.layers[0].z);
        assert!(close(out.layers[1].z[0], 5.25), "{:?}", out.layers[1].z);
        assert!(close(out.layers[2].z[0], 4.75));
        assert!(close(out.logits[0], 4.75) && close(out.logits[1], -4.75));
        let g = 4.75f64.tanh();
        assert!(close(out.layers[2].g[0], g) && close(out.layers[1].g[0], g));
        // Through block 2: main path 2·G, shortcut −0.5·G, both before relu(bn1).
        assert!(close(out.layers[0].g[0], 1.5 * g), "{} vs {}", out.layers[0].g[0], 1.5 * g);

        // The final ReLU masks the gradient: a negative pooled input stops it.
        let out = run(&net, &[-1.0], [1, 1, 1, 1], &["block2"]).unwrap();
        assert_eq!(out.layers[0].g, [0.0]);
    }

    // ---- per-op checks ----

    #[test]
    fn conv_matches_naive_formula() {
        let mut rng = Rng::new(21);
        for &(cin, cout, k, s, p, h, w) in
            &[(3, 4, 3, 2, 1, 7, 9), (2, 3, 1, 2, 0, 7, 9), (3, 2, 7, 2, 3, 11, 13), (4, 5, 3, 1, 1, 6, 5), (2, 2, 3, 1, 0, 5, 4)]
        {
            let conv = random_conv(&mut rng, cin, cout, k, s, p);
            let shape = [2, cin, h, w];
            let x = normal_vec(&mut rng, 2 * cin * h * w);
            let (y, ys) = conv2d(&x, shape, &conv);
            assert_eq!(ys, [2, cout, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1]);
            let yn = naive_conv(&x, shape, &conv);
            for (a, b) in y.iter().zip(&yn) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn conv_backward_is_adjoint() {
        let mut rng = Rng::new(22);
        for &(cin, cout, k, s, p, h, w) in
            &[(3, 4, 3, 2, 1, 7, 9), (3, 5, 1, 2, 0, 7, 9), (3, 2, 7, 2, 3, 11, 13), (4, 3, 3, 1, 1, 6, 5), (2, 3, 3, 2, 1, 8, 8)]
        {
            let conv = random_conv(&mut rng, cin, cout, k, s, p);
            let shape = [2, cin, h, w];
            let x = normal_vec(&mut rng, 2 * cin * h * w);
            let (y, ys) = conv2d(&x, shape, &conv);
            let dy = normal_vec(&mut rng, y.len());
            let dx = conv2d_backward_data(&dy, ys, &conv, (h, w));
            assert_eq!(dx.len(), x.len());
            let (lhs, rhs) = (dot(&dy, &y), dot(&dx, &x));
            let scale = dy.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum::<f64>();
            assert!((lhs - rhs).abs() <= 1e-10 * scale, "k{k} s{s} p{p} {h}×{w}: <dy, conv x> = {lhs}, <convᵀ dy, x> = {rhs}");

            // Finite differences of f(x) = <dy, conv(x)> at a few elements (f is linear).
            for _ in 0..4 {
                let i = rng.below(x.len());
                let eps = 1e-3;
                let mut xp = x.clone();
                xp[i] += eps;
                let mut xm = x.clone();
                xm[i] -= eps;
                let fd = (dot(&dy, &conv2d(&xp, shape, &conv).0) - dot(&dy, &conv2d(&xm, shape, &conv).0)) / (2.0 * eps);
                assert!((fd - dx[i]).abs() <= 1e-8 * (1.0 + dx[i].abs()), "fd {fd} vs dx {}", dx[i]);
            }
        }
    }

    /// TF-style SAME padding (0 before, 1 after, as RobustBench's `F.pad(v, (0, 1, 0, 1))`)
    /// equals the unpadded conv of the input with a zero row and column appended; its data
    /// gradient is the adjoint.
    #[test]
    fn asymmetric_padding_is_an_explicitly_padded_input() {
        let mut rng = Rng::new(23);
        for &(cin, cout, h, w) in &[(3, 4, 7, 8), (2, 5, 6, 5), (1, 2, 2, 3)] {
            let mut conv = random_conv(&mut rng, cin, cout, 3, 2, 0);
            let shape = [2, cin, h, w];
            let x = normal_vec(&mut rng, 2 * cin * h * w);
            let mut padded = vec![0.0; 2 * cin * (h + 1) * (w + 1)];
            for (plane, rows) in x.chunks(h * w).enumerate() {
                for (y, row) in rows.chunks(w).enumerate() {
                    padded[(plane * (h + 1) + y) * (w + 1)..][..w].copy_from_slice(row);
                }
            }
            let want = naive_conv(&padded, [2, cin, h + 1, w + 1], &conv);
            conv.padding_end = 1;
            let (y, ys) = conv2d(&x, shape, &conv);
            assert_eq!(ys, [2, cout, (h - 2) / 2 + 1, (w - 2) / 2 + 1]);
            assert!(y.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + b.abs())), "{h}×{w}");
            let dy = normal_vec(&mut rng, y.len());
            let dx = conv2d_backward_data(&dy, ys, &conv, (h, w));
            let (lhs, rhs) = (dot(&dy, &y), dot(&dx, &x));
            assert!((lhs - rhs).abs() <= 1e-10 * (lhs.abs() + 1.0), "{h}×{w}: <dy, conv x> = {lhs}, <convᵀ dy, x> = {rhs}");
        }
    }

    #[test]
    fn swish_and_its_gradient() {
        let x = [-30.0, -2.0, -0.5, 0.0, 0.7, 3.0];
        for (&v, y) in x.iter().zip(swish(&x)) {
            assert!((y - v / (1.0 + (-v).exp())).abs() <= 1e-15);
        }
        let g = swish_backward(&[1.0; 6], &x);
        for (&v, d) in x.iter().zip(g) {
            let eps = 1e-6;
            let fd = (swish(&[v + eps])[0] - swish(&[v - eps])[0]) / (2.0 * eps);
            assert!((d - fd).abs() <= 1e-8, "swish'({v}) = {d}, finite difference {fd}");
        }
        assert_eq!(swish_backward(&[2.0], &[0.0]), [1.0]);
    }

    #[test]
    fn conv_hand_computed() {
        let x: Vec<f64> = (1..=9).map(|v| v as f64).collect();
        // 2×2 all-ones kernel, padding 1, stride 1 on [[1,2,3],[4,5,6],[7,8,9]]: 4×4 window sums.
        let ones = Conv {
            name: "ones".into(),
            out_channels: 1,
            in_channels: 1,
            kernel: 2,
            stride: 1,
            padding: 1,
            padding_end: 1,
            weight: vec![1.0; 4],
        };
        let (y, ys) = conv2d(&x, [1, 1, 3, 3], &ones);
        assert_eq!(ys, [1, 1, 4, 4]);
        #[rustfmt::skip]
        let expected = [
            1.0, 3.0, 5.0, 3.0,
            5.0, 12.0, 16.0, 9.0,
            11.0, 24.0, 28.0, 15.0,
            7.0, 15.0, 17.0, 9.0,
        ];
        assert_eq!(y, expected);

        // 3×3 kernel [[3,0,0],[0,1,0],[0,0,2]], stride 2, padding 1: y[i,j] = 3·x[2i−1,2j−1] + x[2i,2j] + 2·x[2i+1,2j+1].
        let diag = Conv {
            name: "diag".into(),
            out_channels: 1,
            in_channels: 1,
            kernel: 3,
            stride: 2,
            padding: 1,
            padding_end: 1,
            weight: vec![3.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.0],
        };
        let (y, ys) = conv2d(&x, [1, 1, 3, 3], &diag);
        assert_eq!(ys, [1, 1, 2, 2]);
        assert_eq!(y, [11.0, 3.0, 7.0, 24.0]);
        // Its transpose scatters dy back: dy = [1,0,0,0] touches x[0,0] (·1) and x[1,1] (·2).
        let dx = conv2d_backward_data(&[1.0, 0.0, 0.0, 0.0], ys, &diag, (3, 3));
        assert_eq!(dx, [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        // dy = [0,0,0,1] (output (1,1)) touches x[1,1] (·3) and x[2,2] (·1).
        let dx = conv2d_backward_data(&[0.0, 0.0, 0.0, 1.0], ys, &diag, (3, 3));
        assert_eq!(dx, [0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 1.0]);
        // Same dy with a 4×4 input (also gives 2×2): output (1,1) now also reaches x[3,3] (·2).
        let dx = conv2d_backward_data(&[0.0, 0.0, 0.0, 1.0], ys, &diag, (4, 4));
        let mut e = vec![0.0; 16];
        e[5] = 3.0;
        e[10] = 1.0;
        e[15] = 2.0;
        assert_eq!(dx, e);
    }

    #[test]
    fn max_pool_hand_computed() {
        // All negative: zero padding would give 0 at the borders, −∞ padding gives the window max.
        let x: Vec<f64> = (1..=16).map(|v| -(v as f64)).collect();
        let (y, ys) = max_pool_3x3_s2(&x, [1, 1, 4, 4]);
        assert_eq!(ys, [1, 1, 2, 2]);
        assert_eq!(y, [-1.0, -2.0, -5.0, -6.0]);
        let x: Vec<f64> = (1..=9).map(|v| v as f64).collect();
        let (y, ys) = max_pool_3x3_s2(&x, [1, 1, 3, 3]);
        assert_eq!(ys, [1, 1, 2, 2]);
        assert_eq!(y, [5.0, 6.0, 8.0, 9.0]);
        // 5×6 input, two planes: output 3×3; checks odd/even sizes and plane offsets.
        let x: Vec<f64> = (0..60).map(|v| ((v * 37) % 23) as f64 - 11.0).collect();
        let (y, ys) = max_pool_3x3_s2(&x, [1, 2, 5, 6]);
        assert_eq!(ys, [1, 2, 3, 3]);
        for p in 0..2usize {
            for i in 0..3usize {
                for j in 0..3usize {
                    let mut m = f64::NEG_INFINITY;
                    for r in (2 * i).saturating_sub(1)..(2 * i + 2).min(5) {
                        for c in (2 * j).saturating_sub(1)..(2 * j + 2).min(6) {
                            m = m.max(x[p * 30 + r * 6 + c]);
                        }
                    }
                    assert_eq!(y[p * 9 + i * 3 + j], m);
                }
            }
        }
    }

    #[test]
    fn batch_norm_pool_linear_small_cases() {
        let bn = BatchNorm {
            name: "bn".into(),
            gamma: vec![2.0, 0.5],
            beta: vec![1.0, -1.0],
            mean: vec![1.0, 0.0],
            var: vec![4.0 - 1e-5, 1.0 - 1e-5],
        };
        let x = [3.0, 5.0, 2.0, -2.0];
        let y = batch_norm(&x, [1, 2, 1, 2], &bn);
        // channel 0: (x−1)/2·2+1 = x; channel 1: x/1·0.5−1.
        let expected = [3.0, 5.0, 0.0, -2.0];
        for (a, b) in y.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        let d = batch_norm_backward_data(&[1.0, 1.0, 1.0, 1.0], [1, 2, 1, 2], &bn);
        for (a, b) in d.iter().zip(&[1.0, 1.0, 0.5, 0.5]) {
            assert!((a - b).abs() < 1e-6, "{d:?}");
        }
        assert_eq!(relu(&[-1.0, 0.0, 2.0]), [0.0, 0.0, 2.0]);
        assert_eq!(relu_backward(&[5.0, 5.0, 5.0], &[0.0, 1.0, 0.0]), [0.0, 5.0, 0.0]);
        assert_eq!(global_avg_pool(&[1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0], [1, 2, 2, 2]), [3.0, 1.0]);
        assert_eq!(global_avg_pool_backward(&[4.0, 8.0], [1, 2, 1, 2]), [2.0, 2.0, 4.0, 4.0]);

        let fc = Linear { out_features: 2, in_features: 3, weight: vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0], bias: vec![0.5, -0.5] };
        assert_eq!(linear(&[1.0, 1.0, 1.0, 0.0, 1.0, 0.0], 2, &fc), [6.5, -0.5, 2.5, -0.5]);
        assert_eq!(linear_backward_data(&[1.0, 0.0, 1.0, 2.0], 2, &fc), [1.0, 2.0, 3.0, -1.0, 2.0, 5.0]);
        // Adjoint identity for the linear part.
        let mut rng = Rng::new(31);
        let fc = Linear { out_features: 7, in_features: 5, weight: (0..35).map(|_| rng.normal()).collect(), bias: vec![0.0; 7] };
        let x = normal_vec(&mut rng, 15);
        let dy = normal_vec(&mut rng, 21);
        let lhs = dot(&dy, &linear(&x, 3, &fc));
        let rhs = dot(&linear_backward_data(&dy, 3, &fc), &x);
        assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
    }

    #[test]
    fn uniform_ce_gradient() {
        let mut rng = Rng::new(41);
        let (b, c) = (3, 7);
        let logits: Vec<f64> = normal_vec(&mut rng, b * c).iter().map(|v| 3.0 * v).collect();
        let g = uniform_ce_logit_grad(&logits, b, c);
        for bi in 0..b {
            let s: f64 = g[bi * c..][..c].iter().sum();
            assert!(s.abs() < 1e-15, "sample {bi}: gradient sums to {s}");
        }
        for i in 0..b * c {
            let eps = 1e-5;
            let mut lp = logits.clone();
            lp[i] += eps;
            let mut lm = logits.clone();
            lm[i] -= eps;
            let fd = (uniform_ce_loss(&lp, b, c) - uniform_ce_loss(&lm, b, c)) / (2.0 * eps);
            assert!((fd - g[i]).abs() <= 1e-8 * g[i].abs().max(1e-3), "logit {i}: fd {fd} vs {}", g[i]);
        }
        // Equal logits: p = u, so L = B·log C and the gradient vanishes.
        let flat = vec![2.5; b * c];
        assert!((uniform_ce_loss(&flat, b, c) - b as f64 * (c as f64).ln()).abs() < 1e-12);
        assert!(uniform_ce_logit_grad(&flat, b, c).iter().all(|v| v.abs() < 1e-16));
        // Hand value: logits (0, ln 3) → p = (1/4, 3/4); L = −½(ln ¼ + ln ¾); g = (¼ − ½, ¾ − ½).
        let l = [0.0, 3f64.ln()];
        let expected = -0.5 * (0.25f64.ln() + 0.75f64.ln());
        assert!((uniform_ce_loss(&l, 1, 2) - expected).abs() < 1e-15);
        let g = uniform_ce_logit_grad(&l, 1, 2);
        assert!((g[0] + 0.25).abs() < 1e-15 && (g[1] - 0.25).abs() < 1e-15);
    }

    #[test]
    fn input_gradient_matches_finite_differences() {
        // ResNet with the max-pool stem, ResNet without it, WideResNet; every loss target.
        let cases = [
            (ArchSpec::TorchResNet { depth: 18 }, [2, 3, 19, 17]),
            (ArchSpec::ResNet18_32x32, [1, 3, 6, 5]),
            (ArchSpec::WideResNet { depth: 10, width: 1 }, [2, 3, 7, 6]),
            (ArchSpec::DmWideResNet { depth: 10, width: 1, activation: Activation::Swish }, [1, 3, 32, 32]),
        ];
        let losses = [Loss::NAC, Loss { target: Target::Label, temperature: 1.0 }, Loss { target: Target::Prediction, temperature: 7.0 }];
        for (case, (spec, shape)) in cases.into_iter().enumerate() {
            let net = SyntheticModel::new(spec, 5, 70 + case as u64).unwrap().network;
            let mut rng = Rng::new(80 + case as u64);
            let x = normal_vec(&mut rng, shape.iter().product());
            let labels: Vec<usize> = (0..shape[0]).map(|i| (i * 3 + 1) % 5).collect();
            for loss in losses {
                let labels = (loss.target == Target::Label).then_some(&labels[..]);
                let out = run_with(&net, &x, shape, &[], loss, labels, true).unwrap();
                let g = out.input_grad.unwrap();
                let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
                assert!(scale > 0.0, "{spec}: the input gradient is all zeros");
                let at = |v: &[f64]| run_with(&net, v, shape, &[], loss, labels, false).unwrap().loss;
                for _ in 0..12 {
                    let i = rng.below(x.len());
                    let eps = 1e-5;
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[i] += eps;
                    xm[i] -= eps;
                    let fd = (at(&xp) - at(&xm)) / (2.0 * eps);
                    assert!((fd - g[i]).abs() <= 1e-6 * scale, "{spec} {loss:?} input {i}: fd {fd} vs {}", g[i]);
                }
            }
        }
    }
}
