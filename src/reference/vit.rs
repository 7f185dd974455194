//! The f64 reference of torchvision's `VisionTransformer` in eval mode (no dropout), written from
//! its definition: `conv_proj` (kernel = stride = patch, with bias) turns the image into patch
//! tokens in row-major grid order (patch `(py, px)` is token `1 + py·n + px`), the class token is
//! prepended as token 0 and `encoder.pos_embedding` added; each encoder block computes
//! `x = x + out_proj(MHA(ln_1(x)))`, then `x = x + mlp_2(gelu(mlp_1(ln_2(x))))` (exact erf GELU,
//! LayerNorm with the biased variance and eps 1e-6, softmax over the keys of `q·k/√dh`); then
//! `encoder.ln`, and the head reads the class token.
//!
//! Activations are token-major `[B][T][D]` inside and in the per-op functions. The NAC layers
//! are handed out NCHW like the convolutional networks': `layer_i` (block i's `ln_2` output) as
//! `[B, D, T, 1]` unpooled, so that summing over H×W sums over every token, class token included
//! (the official `pooling_vit_mlp`); `layer_norm` (`encoder.ln`, class token only) as `[B, D, 1, 1]`.
//!
//! A block's `ln_2` output alone cannot continue the forward pass (the block's residual needs
//! its input too), so [`logits_from_layer`] continues from `layer_norm` only, and the gradient
//! of every layer is checked through [`loss_with_perturbation`] instead.

use std::f64::consts::{FRAC_1_SQRT_2, FRAC_2_SQRT_PI};

use super::{
    add, ce_loss_and_grad, conv2d, conv2d_backward_data, for_each_chunk, linear, linear_backward_data, loss_targets, pixel_major_to_nchw,
    LayerTensors, ReferenceOutput,
};
use crate::engine::{Loss, Target};
use crate::error::{Error, Result};
use crate::model::arch::{Body, Conv, EncoderBlock, LayerNorm, Network, VitSpec, LN_EPS};

// ---------------------------------------------------------------------------------------------
// erf and GELU
// ---------------------------------------------------------------------------------------------

/// Where erf switches from its series to erfc's continued fraction.
const ERF_SPLIT: f64 = 2.0;

/// `erf(x)`, absolute error below 2e-15.
pub fn erf(x: f64) -> f64 {
    if x < 0.0 {
        -erf(-x)
    } else if x < ERF_SPLIT {
        erf_series(x)
    } else {
        1.0 - erfc_continued_fraction(x)
    }
}

/// `erfc(x) = 1 − erf(x)`; relative error below 3e-14 (about an ulp from 2 on), so the GELU of
/// a very negative input keeps its digits.
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        2.0 - erfc(-x)
    } else if x < ERF_SPLIT {
        1.0 - erf_series(x)
    } else {
        erfc_continued_fraction(x)
    }
}

/// `e^{−x²}` without the rounding of `x²` (W. J. Cody's split of `x` at a multiple of 1/16).
fn exp_minus_square(x: f64) -> f64 {
    let xs = (x * 16.0).trunc() / 16.0;
    (-xs * xs).exp() * (-(x - xs) * (x + xs)).exp()
}

/// `erf(x) = 2/√π · e^{−x²} · Σ_{n≥0} 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` for `0 ≤ x < 2`: every term
/// is positive, so nothing cancels; at most 45 terms.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    while term > 1e-17 * sum {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    FRAC_2_SQRT_PI * exp_minus_square(x) * sum
}

/// `erfc(x)` for `x ≥ 2` from its continued fraction
/// `e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …))))`, evaluated bottom-up from 60
/// levels (converged to an ulp from x = 2 on).
fn erfc_continued_fraction(x: f64) -> f64 {
    if x > 27.0 {
        return 0.0; // e^{−x²} underflows
    }
    let mut f = x;
    for n in (1..=60).rev() {
        f = x + (n as f64 / 2.0) / f;
    }
    0.5 * FRAC_2_SQRT_PI * exp_minus_square(x) / f
}

/// `1/√(2π)`, the standard normal density at 0.
const INV_SQRT_2PI: f64 = FRAC_2_SQRT_PI * FRAC_1_SQRT_2 / 2.0;

/// Exact GELU elementwise (PyTorch's `approximate='none'`): `x·Φ(x) = x/2 · erfc(−x/√2)`.
pub fn gelu(x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; x.len()];
    for_each_chunk(&mut y, 4096, x.len() * 64, |i, ch| {
        for (v, &a) in ch.iter_mut().zip(&x[i * 4096..]) {
            *v = 0.5 * a * erfc(-a * FRAC_1_SQRT_2);
        }
    });
    y
}

/// Data gradient of [`gelu`] at its input `pre`: `dy · (Φ(x) + x·φ(x))`, φ the normal density.
pub fn gelu_backward(dy: &[f64], pre: &[f64]) -> Vec<f64> {
    assert_eq!(dy.len(), pre.len(), "gelu_backward: dy and pre differ in length");
    let mut dx = vec![0.0; dy.len()];
    for_each_chunk(&mut dx, 4096, dy.len() * 64, |i, ch| {
        for ((v, &d), &a) in ch.iter_mut().zip(&dy[i * 4096..]).zip(&pre[i * 4096..]) {
            *v = d * (0.5 * erfc(-a * FRAC_1_SQRT_2) + a * (-0.5 * a * a).exp() * INV_SQRT_2PI);
        }
    });
    dx
}

// ---------------------------------------------------------------------------------------------
// LayerNorm, attention, tokens
// ---------------------------------------------------------------------------------------------

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc[i] += a · x[i]`.
fn axpy(acc: &mut [f64], a: f64, x: &[f64]) {
    for (y, &v) in acc.iter_mut().zip(x) {
        *y += a * v;
    }
}

fn check_layer_norm(len: usize, rows: usize, d: usize, ln: &LayerNorm, what: &str) {
    assert_eq!(len, rows * d, "{what}: {len} values, expected {rows}×{d}");
    assert!(ln.gamma.len() == d && ln.beta.len() == d, "LayerNorm `{}`: {} channels, the rows have {d}", ln.name, ln.gamma.len());
}

/// A row's mean and `1/sqrt(var + 1e-6)`, var the biased variance.
fn row_stats(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, 1.0 / (var + LN_EPS).sqrt())
}

/// LayerNorm of each of `rows` rows of `d` values (`[rows][d]`):
/// `y = (x − mean)/sqrt(var + 1e-6)·gamma + beta`, mean and biased variance of the row.
pub fn layer_norm(x: &[f64], rows: usize, d: usize, ln: &LayerNorm) -> Vec<f64> {
    check_layer_norm(x.len(), rows, d, ln, "layer_norm input");
    let mut y = vec![0.0; x.len()];
    for_each_chunk(&mut y, d, rows * d * 8, |r, yr| {
        let xr = &x[r * d..][..d];
        let (mean, rstd) = row_stats(xr);
        for i in 0..d {
            yr[i] = (xr[i] - mean) * rstd * ln.gamma[i] as f64 + ln.beta[i] as f64;
        }
    });
    y
}

/// Data gradient of [`layer_norm`] at its input `x` (`[rows][d]`, as `dy`): per row, with
/// `x̂ = (x − mean)·rstd` and `ĝ = dy·gamma`, `dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))`.
pub fn layer_norm_backward_data(dy: &[f64], x: &[f64], rows: usize, d: usize, ln: &LayerNorm) -> Vec<f64> {
    check_layer_norm(x.len(), rows, d, ln, "layer_norm_backward_data x");
    check_layer_norm(dy.len(), rows, d, ln, "layer_norm_backward_data dy");
    let mut dx = vec![0.0; x.len()];
    for_each_chunk(&mut dx, d, rows * d * 12, |r, out| {
        let (xr, dyr) = (&x[r * d..][..d], &dy[r * d..][..d]);
        let (mean, rstd) = row_stats(xr);
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
        let ghat: Vec<f64> = dyr.iter().zip(&ln.gamma).map(|(g, &w)| g * w as f64).collect();
        let mean_g = ghat.iter().sum::<f64>() / d as f64;
        let mean_gx = dot(&ghat, &xhat) / d as f64;
        for i in 0..d {
            out[i] = rstd * (ghat[i] - mean_g - xhat[i] * mean_gx);
        }
    });
    dx
}

fn check_attention(len: usize, b: usize, t: usize, d: usize, heads: usize, what: &str) {
    assert!(heads > 0 && d.is_multiple_of(heads), "attention: {heads} heads do not divide the width {d}");
    assert_eq!(len, b * t * d, "{what}: {len} values, expected {b}×{t}×{d}");
}

/// Multi-head self-attention of `b` sequences of `t` tokens (`nn.MultiheadAttention` between
/// its projections). `qkv` is `[B][T][3D]`: each token's q, then k, then v, head `h` reading
/// columns `h·dh..(h+1)·dh` of each (dh = D/heads). Returns `out` `[B][T][D]`,
/// `out[b,i,h·dh+c] = Σ_j P[b,h,i,j]·v[b,j,h·dh+c]`, and `P = softmax_j(q_i·k_j/√dh)`
/// `[B][H][T][T]` (the row maximum subtracted before exp, so huge scores do not overflow).
pub fn attention(qkv: &[f64], b: usize, t: usize, d: usize, heads: usize) -> (Vec<f64>, Vec<f64>) {
    check_attention(qkv.len(), b, t, 3 * d, heads, "attention qkv");
    let dh = d / heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let tok = |bi: usize, j: usize, part: usize, h: usize| &qkv[(bi * t + j) * 3 * d + part * d + h * dh..][..dh];
    let mut probs = vec![0.0; b * heads * t * t];
    for_each_chunk(&mut probs, t, b * heads * t * t * dh, |row, p| {
        let (bi, h, i) = (row / (heads * t), row / t % heads, row % t);
        let q = tok(bi, i, 0, h);
        for (j, s) in p.iter_mut().enumerate() {
            *s = dot(q, tok(bi, j, 1, h)) * scale;
        }
        let m = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        p.iter_mut().for_each(|s| *s = (*s - m).exp());
        let sum: f64 = p.iter().sum();
        p.iter_mut().for_each(|s| *s /= sum);
    });
    let mut out = vec![0.0; b * t * d];
    for_each_chunk(&mut out, d, b * t * t * d, |row, o| {
        let (bi, i) = (row / t, row % t);
        for h in 0..heads {
            let p = &probs[((bi * heads + h) * t + i) * t..][..t];
            for (j, &pj) in p.iter().enumerate() {
                axpy(&mut o[h * dh..][..dh], pj, tok(bi, j, 2, h));
            }
        }
    });
    (out, probs)
}

/// Data gradient of [`attention`]: from `d_out` (`[B][T][D]`), the forward's `qkv` and `probs`,
/// returns `∂L/∂qkv` (`[B][T][3D]`). Per head, with `dS_ij = P_ij·(dout_i·v_j − Σ_j' P_ij'·dout_i·v_j')`:
/// `dq_i = Σ_j dS_ij·k_j/√dh`, `dk_j = Σ_i dS_ij·q_i/√dh`, `dv_j = Σ_i P_ij·dout_i`.
pub fn attention_backward(d_out: &[f64], qkv: &[f64], probs: &[f64], b: usize, t: usize, d: usize, heads: usize) -> Vec<f64> {
    check_attention(qkv.len(), b, t, 3 * d, heads, "attention_backward qkv");
    check_attention(d_out.len(), b, t, d, heads, "attention_backward d_out");
    assert_eq!(probs.len(), b * heads * t * t, "attention_backward: probs length");
    let dh = d / heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let tok = |bi: usize, j: usize, part: usize, h: usize| &qkv[(bi * t + j) * 3 * d + part * d + h * dh..][..dh];
    let dout = |bi: usize, i: usize, h: usize| &d_out[(bi * t + i) * d + h * dh..][..dh];
    let mut ds = vec![0.0; probs.len()];
    for_each_chunk(&mut ds, t, b * heads * t * t * dh, |row, s| {
        let (bi, h, i) = (row / (heads * t), row / t % heads, row % t);
        let p = &probs[row * t..][..t];
        let g = dout(bi, i, h);
        for (j, v) in s.iter_mut().enumerate() {
            *v = dot(g, tok(bi, j, 2, h));
        }
        let inner = dot(p, s);
        for (v, &pj) in s.iter_mut().zip(p) {
            *v = pj * (*v - inner);
        }
    });
    let mut dqkv = vec![0.0; qkv.len()];
    for_each_chunk(&mut dqkv, 3 * d, b * heads * t * t * dh * 3, |row, out| {
        let (bi, n) = (row / t, row % t);
        let (dq, rest) = out.split_at_mut(d);
        let (dk, dv) = rest.split_at_mut(d);
        for h in 0..heads {
            let base = (bi * heads + h) * t * t;
            let r = h * dh..(h + 1) * dh;
            for j in 0..t {
                axpy(&mut dq[r.clone()], ds[base + n * t + j] * scale, tok(bi, j, 1, h));
                axpy(&mut dk[r.clone()], ds[base + j * t + n] * scale, tok(bi, j, 0, h));
                axpy(&mut dv[r.clone()], probs[base + j * t + n], dout(bi, j, h));
            }
        }
    });
    dqkv
}

/// The encoder's input `[B][T][D]`: each image's patch embeddings `patches` (`[B][T−1][D]`,
/// `conv_proj` output plus its bias, in row-major grid order) after the class token, plus the
/// positions `pos` (`[T][D]`). Its data gradient at `patches` is tokens `1..T` of the gradient.
pub fn tokens_forward(patches: &[f64], b: usize, class_token: &[f32], pos: &[f32]) -> Vec<f64> {
    let d = class_token.len();
    assert!(d > 0 && pos.len().is_multiple_of(d) && pos.len() >= 2 * d, "tokens_forward: {} positions for width {d}", pos.len());
    let t = pos.len() / d;
    assert_eq!(patches.len(), b * (t - 1) * d, "tokens_forward: patches length, expected {b}×{}×{d}", t - 1);
    let mut x = vec![0.0; b * t * d];
    for bi in 0..b {
        for ti in 0..t {
            let row = &mut x[(bi * t + ti) * d..][..d];
            for c in 0..d {
                let v = if ti == 0 { class_token[c] as f64 } else { patches[(bi * (t - 1) + ti - 1) * d + c] };
                row[c] = v + pos[ti * d + c] as f64;
            }
        }
    }
    x
}

/// NCHW `[B, C, P, 1]` (or `[B, C, h, w]` with P = h·w) to token-major `[B][P][C]`.
fn nchw_to_token_major(x: &[f64], b: usize, c: usize, npix: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..npix {
                out[(bi * npix + p) * c + ci] = x[(bi * c + ci) * npix + p];
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Whole network
// ---------------------------------------------------------------------------------------------

/// The parts of a Vision Transformer's body.
struct Vit<'a> {
    spec: &'a VitSpec,
    conv_proj: &'a Conv,
    conv_proj_bias: &'a [f32],
    class_token: &'a [f32],
    pos_embedding: &'a [f32],
    blocks: &'a [EncoderBlock],
    ln: &'a LayerNorm,
}

impl Vit<'_> {
    /// Patches per image side.
    fn grid(&self) -> usize {
        self.spec.image / self.spec.patch
    }
    fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    fn width(&self) -> usize {
        self.spec.width
    }
}

fn parts(net: &Network) -> Result<Vit<'_>> {
    match &net.body {
        Body::VisionTransformer { spec, conv_proj, conv_proj_bias, class_token, pos_embedding, blocks, ln } => {
            Ok(Vit { spec, conv_proj, conv_proj_bias, class_token, pos_embedding, blocks, ln })
        }
        _ => Err(Error::Input(format!("reference::vit: {} is not a Vision Transformer", net.spec))),
    }
}

/// The input is `[B ≥ 1, 3, image, image]` with all its values.
fn check_input(net: &Network, v: &Vit, input: &[f64], shape: [usize; 4]) -> Result<()> {
    let [b, c, h, w] = shape;
    let side = v.spec.image;
    if b == 0 || c != v.conv_proj.in_channels || h != side || w != side {
        return Err(Error::Input(format!(
            "reference: {} takes input of shape [B ≥ 1, {}, {side}, {side}] (its learned positions fix the image size), got {shape:?}",
            net.spec, v.conv_proj.in_channels
        )));
    }
    if input.len() != b * c * h * w {
        return Err(Error::Input(format!("reference: input has {} values but shape {shape:?} needs {}", input.len(), b * c * h * w)));
    }
    Ok(())
}

/// Labels, one per sample and below the class count, are given exactly when the loss needs them.
fn check_labels(loss: Loss, labels: Option<&[usize]>, b: usize, classes: usize) -> Result<()> {
    match labels {
        None if loss.target == Target::Label => Err(Error::Input("reference: a loss to the labels needs labels".into())),
        Some(l) if l.len() != b || l.iter().any(|&v| v >= classes) => {
            Err(Error::Input(format!("reference: {} labels for {b} samples of {classes} classes", l.len())))
        }
        _ => Ok(()),
    }
}

/// What a block's backward pass needs from its forward pass (token-major).
struct BlockCache {
    /// Block input (ln_1's input), attention projections and probabilities.
    x: Vec<f64>,
    qkv: Vec<f64>,
    probs: Vec<f64>,
    /// ln_2's input `x + out_proj(…)` and the GELU's input.
    x1: Vec<f64>,
    h: Vec<f64>,
}

struct Forward {
    /// Block i's ln_2 output (token-major), for the blocks in `want_z`.
    zs: Vec<Option<Vec<f64>>>,
    /// Caches of the blocks from `keep_from` on.
    caches: Vec<Option<BlockCache>>,
    /// The encoder output's class tokens (`B × D`, encoder.ln's input) and encoder.ln of them.
    cls: Vec<f64>,
    feat: Vec<f64>,
    logits: Vec<f64>,
}

/// The forward pass; `perturb = (layer index, delta)` adds `delta` (token-major `[B][T][D]` for
/// a block, `B × D` for `layer_norm`) to that layer's output on the way.
fn forward(
    net: &Network,
    v: &Vit,
    input: &[f64],
    shape: [usize; 4],
    keep_from: usize,
    want_z: &[usize],
    perturb: Option<(usize, &[f64])>,
) -> Forward {
    let b = shape[0];
    let (t, d, heads) = (v.tokens(), v.width(), v.spec.heads);
    let rows = b * t;
    let add_delta = |layer: usize, y: &mut [f64]| {
        if let Some((l, delta)) = perturb {
            if l == layer {
                axpy(y, 1.0, delta);
            }
        }
    };
    let (y, ys) = conv2d(input, shape, v.conv_proj);
    let mut patches = nchw_to_token_major(&y, b, d, ys[2] * ys[3]);
    for (i, p) in patches.iter_mut().enumerate() {
        *p += v.conv_proj_bias[i % d] as f64;
    }
    let mut x = tokens_forward(&patches, b, v.class_token, v.pos_embedding);
    let depth = v.blocks.len();
    let (mut zs, mut caches) = (Vec::with_capacity(depth), Vec::with_capacity(depth));
    for (i, blk) in v.blocks.iter().enumerate() {
        let a = layer_norm(&x, rows, d, &blk.ln_1);
        let qkv = linear(&a, rows, &blk.in_proj);
        let (att, probs) = attention(&qkv, b, t, d, heads);
        let x1 = add(&x, &linear(&att, rows, &blk.out_proj));
        let mut z = layer_norm(&x1, rows, d, &blk.ln_2);
        add_delta(i, &mut z);
        let h = linear(&z, rows, &blk.mlp_1);
        let x2 = add(&x1, &linear(&gelu(&h), rows, &blk.mlp_2));
        zs.push(want_z.contains(&i).then_some(z));
        caches.push((i >= keep_from).then(|| BlockCache { x: std::mem::take(&mut x), qkv, probs, x1, h }));
        x = x2;
    }
    let cls: Vec<f64> = (0..b).flat_map(|bi| x[bi * t * d..][..d].to_vec()).collect();
    let mut feat = layer_norm(&cls, b, d, v.ln);
    add_delta(depth, &mut feat);
    let logits = linear(&feat, b, &net.fc);
    Forward { zs, caches, cls, feat, logits }
}

/// [`super::run_with`] for a Vision Transformer: `input` is f64 NCHW `[B, 3, image, image]`;
/// `layer_i` is returned as `[B, D, T, 1]`, `layer_norm` as `[B, D, 1, 1]` (see the module
/// doc). The backward pass stops at the shallowest requested layer's `ln_2` output, or goes
/// through the positions, class token and `conv_proj` to the image with `input_gradient`.
pub fn run_with(
    net: &Network,
    input: &[f64],
    shape: [usize; 4],
    layers: &[&str],
    loss: Loss,
    labels: Option<&[usize]>,
    input_gradient: bool,
) -> Result<ReferenceOutput> {
    let v = parts(net)?;
    check_input(net, &v, input, shape)?;
    let idxs: Vec<usize> = layers.iter().map(|l| net.layer_index(l)).collect::<Result<_>>()?;
    let (b, classes) = (shape[0], net.num_classes());
    check_labels(loss, labels, b, classes)?;
    let (t, d, heads, depth) = (v.tokens(), v.width(), v.spec.heads, v.blocks.len());
    let rows = b * t;
    // The shallowest layer whose gradient is needed: block 0's for the input gradient.
    let shallowest = if input_gradient { Some(0) } else { idxs.iter().copied().min() };
    let fwd = forward(net, &v, input, shape, shallowest.unwrap_or(depth), &idxs, None);
    let targets = loss_targets(&fwd.logits, b, classes, loss, labels);
    let (loss_value, g_logits) = ce_loss_and_grad(&fwd.logits, b, classes, &targets, loss.temperature as f64);

    let mut gs: Vec<Option<Vec<f64>>> = vec![None; depth + 1];
    let mut input_grad = None;
    if let Some(m) = shallowest {
        let g_feat = linear_backward_data(&g_logits, b, &net.fc);
        if m < depth || input_gradient {
            // encoder.ln reads the class tokens only; the other tokens get no gradient there.
            let g_cls = layer_norm_backward_data(&g_feat, &fwd.cls, b, d, v.ln);
            let mut gx = vec![0.0; rows * d];
            for bi in 0..b {
                gx[bi * t * d..][..d].copy_from_slice(&g_cls[bi * d..][..d]);
            }
            for i in (m..depth).rev() {
                let (blk, c) = (&v.blocks[i], fwd.caches[i].as_ref().expect("blocks from the shallowest on keep their caches"));
                let g_h = gelu_backward(&linear_backward_data(&gx, rows, &blk.mlp_2), &c.h);
                let g_z = linear_backward_data(&g_h, rows, &blk.mlp_1);
                if i == m && !input_gradient {
                    gs[i] = Some(g_z);
                    break;
                }
                let g_x1 = add(&gx, &layer_norm_backward_data(&g_z, &c.x1, rows, d, &blk.ln_2));
                if idxs.contains(&i) {
                    gs[i] = Some(g_z);
                }
                let g_qkv = attention_backward(&linear_backward_data(&g_x1, rows, &blk.out_proj), &c.qkv, &c.probs, b, t, d, heads);
                let g_a = linear_backward_data(&g_qkv, rows, &blk.in_proj);
                gx = add(&g_x1, &layer_norm_backward_data(&g_a, &c.x, rows, d, &blk.ln_1));
            }
            if input_gradient {
                let np = t - 1;
                let g_patches: Vec<f64> = (0..b).flat_map(|bi| gx[(bi * t + 1) * d..][..np * d].to_vec()).collect();
                let n = v.grid();
                let g_conv = pixel_major_to_nchw(&g_patches, b, d, np);
                input_grad = Some(conv2d_backward_data(&g_conv, [b, d, n, n], v.conv_proj, (shape[2], shape[3])));
            }
        }
        gs[depth] = Some(g_feat);
    }

    let out_layers = layers
        .iter()
        .zip(&idxs)
        .map(|(name, &i)| {
            let g = gs[i].as_ref().expect("gradient computed for every requested layer");
            if i == depth {
                LayerTensors { name: name.to_string(), shape: [b, d, 1, 1], z: fwd.feat.clone(), g: g.clone() }
            } else {
                let z = fwd.zs[i].as_ref().expect("z kept for every requested layer");
                LayerTensors {
                    name: name.to_string(),
                    shape: [b, d, t, 1],
                    z: pixel_major_to_nchw(z, b, d, t),
                    g: pixel_major_to_nchw(g, b, d, t),
                }
            }
        })
        .collect();
    Ok(ReferenceOutput { logits: fwd.logits, loss: loss_value, layers: out_layers, input_grad })
}

/// The loss of [`run_with`] with `delta` added to layer `layer`'s output inside the forward
/// pass, `delta` in that layer's layout in [`LayerTensors`] (`[B, D, T, 1]` for `layer_i`,
/// `[B, D, 1, 1]` for `layer_norm`): the function whose gradient at 0 `run_with` reports as `g`.
pub fn loss_with_perturbation(
    net: &Network,
    input: &[f64],
    shape: [usize; 4],
    layer: &str,
    delta: &[f64],
    loss: Loss,
    labels: Option<&[usize]>,
) -> Result<f64> {
    let v = parts(net)?;
    check_input(net, &v, input, shape)?;
    let (b, classes) = (shape[0], net.num_classes());
    check_labels(loss, labels, b, classes)?;
    let idx = net.layer_index(layer)?;
    let (t, d, depth) = (v.tokens(), v.width(), v.blocks.len());
    let per_sample = if idx == depth { d } else { d * t };
    if delta.len() != b * per_sample {
        return Err(Error::Input(format!("reference: `{layer}` perturbation has {} values, expected {}", delta.len(), b * per_sample)));
    }
    let delta = if idx == depth { delta.to_vec() } else { nchw_to_token_major(delta, b, d, t) };
    let fwd = forward(net, &v, input, shape, depth, &[], Some((idx, &delta)));
    let targets = loss_targets(&fwd.logits, b, classes, loss, labels);
    Ok(ce_loss_and_grad(&fwd.logits, b, classes, &targets, loss.temperature as f64).0)
}

/// [`super::logits_from_layer`] for a Vision Transformer: from `layer_norm`'s z (`[B, D, 1, 1]`)
/// the head alone. A block's `ln_2` output cannot continue the pass on its own (the residual
/// after the MLP needs the block's pre-`ln_2` input too), so `layer_i` is an error; perturb it
/// inside the pass with [`loss_with_perturbation`] instead.
pub fn logits_from_layer(net: &Network, layer: &str, z: &[f64], shape: [usize; 4]) -> Result<Vec<f64>> {
    let v = parts(net)?;
    let idx = net.layer_index(layer)?;
    if idx < v.blocks.len() {
        return Err(Error::Input(format!(
            "reference: cannot continue {} from `{layer}` (block {idx}'s ln_2 output) alone: the block's residual also needs its input; use `reference::vit::loss_with_perturbation`",
            net.spec
        )));
    }
    let [b, c, h, w] = shape;
    if b == 0 || c != v.width() || h != 1 || w != 1 || z.len() != b * c {
        return Err(Error::Input(format!(
            "reference: `{layer}` must have shape [B ≥ 1, {}, 1, 1] and as many values, got {shape:?} with {} values",
            v.width(),
            z.len()
        )));
    }
    Ok(linear(z, b, &net.fc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::ArchSpec;
    use crate::model::synthetic::SyntheticModel;
    use crate::rng::Rng;

    fn normal_vec(rng: &mut Rng, n: usize) -> Vec<f64> {
        (0..n).map(|_| rng.normal() as f64).collect()
    }

    fn ln(gamma: &[f32], beta: &[f32]) -> LayerNorm {
        LayerNorm { name: "ln".into(), gamma: gamma.to_vec(), beta: beta.to_vec() }
    }

    fn tiny_vit(seed: u64) -> Network {
        let spec = VitSpec { image: 8, patch: 4, depth: 2, width: 8, heads: 2, mlp: 12 };
        SyntheticModel::new(ArchSpec::VisionTransformer(spec), 3, seed).unwrap().network
    }

    /// Central difference of `f` along `delta`, step `eps`.
    fn central(f: &dyn Fn(&[f64]) -> f64, x: &[f64], delta: &[f64], eps: f64) -> f64 {
        let xp: Vec<f64> = x.iter().zip(delta).map(|(a, d)| a + eps * d).collect();
        let xm: Vec<f64> = x.iter().zip(delta).map(|(a, d)| a - eps * d).collect();
        (f(&xp) - f(&xm)) / (2.0 * eps)
    }

    /// Checks every element of the gradient `g` of `f` at `x` against a central difference with
    /// step 3e-5 (on the tiny ViT the loss's rounding, ≈ 1e-15, dominates the error below that
    /// and the O(step²) truncation above it); the error of element i is relative to
    /// max(|g_i|, 1e-3·max|g|), so that elements far below the largest are compared on the
    /// gradient's scale. Returns the worst error.
    fn fd_check(what: &str, f: &dyn Fn(&[f64]) -> f64, x: &[f64], g: &[f64], tol: f64) -> f64 {
        let scale = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: the gradient is all zeros");
        let mut worst = 0f64;
        for i in 0..x.len() {
            let mut e = vec![0.0; x.len()];
            e[i] = 1.0;
            let fd = central(f, x, &e, 3e-5);
            let err = (fd - g[i]).abs() / g[i].abs().max(1e-3 * scale);
            assert!(err <= tol, "{what} element {i}: finite difference {fd:e}, gradient {:e}, rel err {err:e}", g[i]);
            worst = worst.max(err);
        }
        worst
    }

    #[test]
    fn erf_and_gelu_known_values() {
        // erf and erfc from mpmath at 30 digits, rounded to f64.
        let erf_table = [
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (1.99, 0.995111413199617),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.5, 0.9999992569016276),
            (5.0, 0.9999999999984626),
        ];
        for (x, want) in erf_table {
            assert!((erf(x) - want).abs() <= 2e-16, "erf({x}) = {} vs {want}", erf(x));
            assert!((erf(-x) + want).abs() <= 2e-16, "erf(−{x})");
        }
        assert_eq!(erf(0.0), 0.0);
        for (x, want) in
            [(2.0, 0.004677734981047266), (5.0, 1.537459794428035e-12), (10.0, 2.088487583762545e-45), (26.0, 5.663192408856143e-296)]
        {
            assert!((erfc(x) - want).abs() <= 4e-16 * want, "erfc({x}) = {:e} vs {want:e}", erfc(x));
        }
        assert_eq!(erfc(30.0), 0.0);
        assert!(erf(f64::NAN).is_nan());

        let gelu_table = [
            (1.0, 0.8413447460685429),
            (-1.0, -0.15865525393145705),
            (0.5, 0.34573123063700656),
            (3.0, 2.99595030590511),
            (-3.0, -0.0040496940948902835),
        ];
        let xs: Vec<f64> = gelu_table.iter().map(|p| p.0).collect();
        for (&(x, want), got) in gelu_table.iter().zip(gelu(&xs)) {
            // 4e-15: erfc's condition number 2u² at u = −x/√2 magnifies the rounding of u.
            assert!((got - want).abs() <= 4e-15 * want.abs(), "gelu({x}) = {got} vs {want}");
        }
        // Far in the negative tail the value keeps its relative precision.
        let tail = gelu(&[-10.0])[0];
        assert!((tail + 7.619853024160526e-23).abs() <= 4e-14 * 7.6e-23, "gelu(−10) = {tail:e}");
        assert_eq!(gelu(&[0.0]), [0.0]);

        // gelu'(x) = Φ(x) + x·φ(x), mpmath values; and central differences of gelu.
        let dg_table =
            [(1.0, 1.0833154705876864), (-1.0, -0.0833154705876863), (-3.0, -0.011945647204183927), (0.5, 0.8674951246561629), (0.0, 0.5)];
        let xs: Vec<f64> = dg_table.iter().map(|p| p.0).collect();
        for (&(x, want), got) in dg_table.iter().zip(gelu_backward(&[1.0; 5], &xs)) {
            assert!((got - want).abs() <= 1e-15, "gelu'({x}) = {got} vs {want}");
            let fd = (gelu(&[x + 1e-6])[0] - gelu(&[x - 1e-6])[0]) / 2e-6;
            assert!((fd - got).abs() <= 1e-9, "gelu'({x}): fd {fd}");
        }
        assert_eq!(gelu_backward(&[2.0, -3.0], &[1.0, 1.0]), [2.0 * 1.0833154705876864, -3.0 * 1.0833154705876864]);
    }

    #[test]
    fn layer_norm_hand_computed() {
        let l = ln(&[1.0, 2.0, 0.5, 1.0], &[0.0, 1.0, 0.0, -1.0]);
        // Row 0: mean 2.5, biased variance 1.25. Row 1 is constant: variance 0, y = beta.
        let x = [1.0, 2.0, 3.0, 4.0, 3.0, 3.0, 3.0, 3.0];
        let y = layer_norm(&x, 2, 4, &l);
        let sd = (1.25f64 + 1e-6).sqrt();
        let want = [-1.5 / sd, 2.0 * -0.5 / sd + 1.0, 0.5 * 0.5 / sd, 1.5 / sd - 1.0, 0.0, 1.0, 0.0, -1.0];
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-15, "{y:?} vs {want:?}");
        }
        // With gamma = 1: Σ dx = 0 (shifts of the row do not change y), Σ dx·x̂ = rstd·Σ dy·x̂ ·
        // eps/(var + eps) (scalings change y only through eps); a constant row gives
        // dx = (dy − mean(dy))/sqrt(eps).
        let unit = ln(&[1.0; 4], &[0.0; 4]);
        let dy = [0.3, -1.0, 2.0, 0.5, 1.0, 2.0, 3.0, 6.0];
        let dx = layer_norm_backward_data(&dy, &x, 2, 4, &unit);
        let xhat: Vec<f64> = [-1.5, -0.5, 0.5, 1.5].iter().map(|v| v / sd).collect();
        let want_dot = dot(&dy[..4], &xhat) / sd * 1e-6 / (1.25 + 1e-6);
        assert!(dx[..4].iter().sum::<f64>().abs() < 1e-15, "{dx:?}");
        assert!((dot(&dx[..4], &xhat) - want_dot).abs() < 1e-15, "{} vs {want_dot}", dot(&dx[..4], &xhat));
        for (i, want) in [-2.0, -1.0, 0.0, 3.0].iter().enumerate() {
            assert!((dx[4 + i] - want / 1e-3).abs() <= 1e-9, "{dx:?}");
        }

        // Central differences of <dy, layer_norm(x)> on random rows.
        let mut rng = Rng::new(3);
        let (rows, d) = (3, 7);
        let l = LayerNorm { name: "ln".into(), gamma: (0..d).map(|_| rng.uniform(0.5, 1.5)).collect(), beta: vec![0.3; d] };
        let x = normal_vec(&mut rng, rows * d);
        let dy = normal_vec(&mut rng, rows * d);
        let dx = layer_norm_backward_data(&dy, &x, rows, d, &l);
        let f = |v: &[f64]| dot(&dy, &layer_norm(v, rows, d, &l));
        let worst = fd_check("layer_norm_backward_data", &f, &x, &dx, 1e-7);
        eprintln!("layer_norm backward: worst FD rel err {worst:.2e}");
    }

    #[test]
    fn attention_one_head_hand_computed() {
        // T = 2, D = dh = 2: scores q·k/√2 are ((ln 3, 0), (0, ln 3)), so P = ((¾, ¼), (¼, ¾));
        // v = ((4, 0), (0, 8)) gives out = ((3, 2), (1, 6)).
        let (s2, l3) = (2f64.sqrt(), 3f64.ln());
        #[rustfmt::skip]
        let qkv = [
            s2, 0.0, l3, 0.0, 4.0, 0.0,
            0.0, s2 * l3, 0.0, 1.0, 0.0, 8.0,
        ];
        let (out, probs) = attention(&qkv, 1, 2, 2, 1);
        for (a, b) in probs.iter().zip(&[0.75, 0.25, 0.25, 0.75]) {
            assert!((a - b).abs() <= 1e-15, "{probs:?}");
        }
        for (a, b) in out.iter().zip(&[3.0, 2.0, 1.0, 6.0]) {
            assert!((a - b).abs() <= 1e-14, "{out:?}");
        }
    }

    #[test]
    fn attention_heads_and_samples_are_independent() {
        // Two heads of width 2 equal two one-head attentions on their columns; two sequences
        // equal each run alone.
        let mut rng = Rng::new(5);
        let (b, t, d) = (2, 3, 4);
        let qkv = normal_vec(&mut rng, b * t * 3 * d);
        let (out, probs) = attention(&qkv, b, t, d, 2);
        for bi in 0..b {
            for h in 0..2 {
                let sub: Vec<f64> = (0..t)
                    .flat_map(|j| (0..3).flat_map(move |part| (0..2).map(move |c| (j, part, c))))
                    .map(|(j, part, c)| qkv[(bi * t + j) * 3 * d + part * d + h * 2 + c])
                    .collect();
                let (o1, p1) = attention(&sub, 1, t, 2, 1);
                assert_eq!(&probs[(bi * 2 + h) * t * t..][..t * t], &p1[..]);
                for j in 0..t {
                    assert_eq!(&out[(bi * t + j) * d + h * 2..][..2], &o1[j * 2..][..2]);
                }
            }
        }
    }

    #[test]
    fn softmax_is_stable_for_huge_scores() {
        // dh = 1, q = 2^17: scores (2^17, 2^17 − 1, −2^17), exact in f64; exp of them overflows.
        let q = 131072.0;
        let ks = [1.0, 1.0 - 1.0 / 131072.0, -1.0];
        let qkv: Vec<f64> = ks.iter().flat_map(|&k| [q, k, 1.0]).collect();
        let (_, probs) = attention(&qkv, 1, 3, 1, 1);
        let e = (-1f64).exp();
        let want = [1.0 / (1.0 + e), e / (1.0 + e), 0.0];
        for (a, b) in probs[..3].iter().zip(&want) {
            assert!((a - b).abs() <= 1e-15, "{:?} vs {want:?}", &probs[..3]);
        }
        assert!(probs.iter().all(|p| p.is_finite()));
    }

    #[test]
    fn attention_backward_matches_finite_differences() {
        let mut rng = Rng::new(7);
        let (b, t, d, heads) = (2, 4, 6, 3);
        let qkv = normal_vec(&mut rng, b * t * 3 * d);
        let d_out = normal_vec(&mut rng, b * t * d);
        let (_, probs) = attention(&qkv, b, t, d, heads);
        let g = attention_backward(&d_out, &qkv, &probs, b, t, d, heads);
        let f = |v: &[f64]| dot(&d_out, &attention(v, b, t, d, heads).0);
        let worst = fd_check("attention_backward", &f, &qkv, &g, 1e-7);
        eprintln!("attention backward: worst FD rel err {worst:.2e}");
    }

    #[test]
    fn tokens_layout() {
        // Two patches of width 2 per image, two images: class token first, then the patches, plus positions.
        let patches = [1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0];
        let x = tokens_forward(&patches, 2, &[0.5, -0.5], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(x, [0.5, 0.5, 3.0, 5.0, 7.0, 9.0, 0.5, 0.5, 12.0, 23.0, 34.0, 45.0]);

        // The patch embedding orders patches row-major: with a conv_proj that copies the top-left
        // pixel of the red channel, token 1 + py·n + px holds pixel (4·py, 4·px).
        let mut net = tiny_vit(1);
        let Body::VisionTransformer { conv_proj, conv_proj_bias, class_token, pos_embedding, .. } = &mut net.body else { unreachable!() };
        conv_proj.weight.iter_mut().for_each(|w| *w = 0.0);
        conv_proj.weight[0] = 1.0; // output channel 0, input channel 0, (0, 0)
        conv_proj_bias.iter_mut().for_each(|b| *b = 0.0);
        class_token.iter_mut().for_each(|v| *v = 0.0);
        pos_embedding.iter_mut().for_each(|v| *v = 0.0);
        let image: Vec<f64> = (0..3 * 64).map(|i| i as f64).collect();
        let v = parts(&net).unwrap();
        let fwd = forward(&net, &v, &image, [1, 3, 8, 8], 0, &[], None);
        let x0 = &fwd.caches[0].as_ref().unwrap().x;
        let channel0: Vec<f64> = (0..5).map(|ti| x0[ti * 8]).collect();
        assert_eq!(channel0, [0.0, 0.0, 4.0, 32.0, 36.0]);
    }

    /// Every layer's g and the input gradient against central differences of every element, for
    /// the NAC loss, a label loss and a prediction loss at temperature 3.
    #[test]
    fn fd_every_layer_and_input() {
        let net = tiny_vit(21);
        let shape = [2, 3, 8, 8];
        let mut rng = Rng::new(22);
        let x = normal_vec(&mut rng, 2 * 3 * 64);
        let names = net.layer_names();
        assert_eq!(names, ["layer_0", "layer_1", "layer_norm"]);
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let labels = [2, 0];
        let losses = [Loss::NAC, Loss { target: Target::Label, temperature: 1.0 }, Loss { target: Target::Prediction, temperature: 3.0 }];
        for loss in losses {
            let labels = (loss.target == Target::Label).then_some(&labels[..]);
            let out = run_with(&net, &x, shape, &refs, loss, labels, true).unwrap();
            let shapes: Vec<[usize; 4]> = out.layers.iter().map(|l| l.shape).collect();
            assert_eq!(shapes, [[2, 8, 5, 1], [2, 8, 5, 1], [2, 8, 1, 1]]);
            // Forward-only gives the same logits and loss; the perturbation at 0 gives the loss.
            let fwd = run_with(&net, &x, shape, &[], loss, labels, false).unwrap();
            assert_eq!((fwd.logits.clone(), fwd.loss), (out.logits.clone(), out.loss));
            for lt in &out.layers {
                let at = |dz: &[f64]| loss_with_perturbation(&net, &x, shape, &lt.name, dz, loss, labels).unwrap();
                let zero = vec![0.0; lt.z.len()];
                assert_eq!(at(&zero), out.loss);
                let worst = fd_check(&format!("{loss:?} {}", lt.name), &at, &zero, &lt.g, 1e-6);
                eprintln!("{loss:?} {:>10}: worst FD rel err {worst:.2e}", lt.name);
            }
            let at = |v: &[f64]| run_with(&net, v, shape, &[], loss, labels, false).unwrap().loss;
            let worst = fd_check(&format!("{loss:?} input"), &at, &x, out.input_grad.as_ref().unwrap(), 1e-6);
            eprintln!("{loss:?}      input: worst FD rel err {worst:.2e}");

            // Fewer layers, no input gradient: the same z and g (the pass stops earlier).
            let some = run_with(&net, &x, shape, &["layer_norm", "layer_1"], loss, labels, false).unwrap();
            assert!(some.input_grad.is_none());
            assert_eq!((&some.layers[0].z, &some.layers[0].g), (&out.layers[2].z, &out.layers[2].g));
            let diff = some.layers[1].g.iter().zip(&out.layers[1].g).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff == 0.0 && some.layers[1].z == out.layers[1].z, "layer_1 differs by {diff:e}");
        }
        // The head continues from layer_norm's z.
        let out = run_with(&net, &x, shape, &["layer_norm"], Loss::NAC, None, false).unwrap();
        let lt = &out.layers[0];
        let l = super::super::loss_from_layer(&net, "layer_norm", &lt.z, lt.shape).unwrap();
        assert!((l - out.loss).abs() <= 1e-15 * out.loss, "{l} vs {}", out.loss);
    }

    /// A sample alone gives bit-equal results to the same sample in a batch (on a network big
    /// enough for the loops to run on several threads).
    #[test]
    fn batch_independence() {
        let spec = VitSpec { image: 16, patch: 4, depth: 2, width: 32, heads: 4, mlp: 128 };
        let net = SyntheticModel::new(ArchSpec::VisionTransformer(spec), 5, 31).unwrap().network;
        let mut rng = Rng::new(32);
        let per = 3 * 16 * 16;
        let x = normal_vec(&mut rng, 4 * per);
        let names = net.layer_names();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let loss = Loss { target: Target::Label, temperature: 2.0 };
        let all = run_with(&net, &x, [4, 3, 16, 16], &refs, loss, Some(&[0, 1, 2, 3]), true).unwrap();
        let one = run_with(&net, &x[2 * per..3 * per], [1, 3, 16, 16], &refs, loss, Some(&[2]), true).unwrap();
        assert_eq!(&all.logits[10..15], &one.logits[..]);
        for (a, o) in all.layers.iter().zip(&one.layers) {
            let n = o.z.len();
            assert_eq!(&a.z[2 * n..3 * n], &o.z[..], "{} z", o.name);
            assert_eq!(&a.g[2 * n..3 * n], &o.g[..], "{} g", o.name);
        }
        assert_eq!(&all.input_grad.unwrap()[2 * per..3 * per], &one.input_grad.unwrap()[..]);
    }

    /// torchvision's own `VisionTransformer` in float64 (`tools/vit_reference_check.py`): its
    /// checkpoint loaded the way a user's is (heads from the `num_heads` metadata), then logits,
    /// loss, every layer's z and g and the input gradient for the NAC loss and a label loss.
    /// Both sides are f64 on the same f32 weights, so only summation order separates them
    /// (normwise below 1e-15 at the time of writing; the bound is 1e-14).
    #[test]
    fn matches_torchvision() {
        use safetensors::{Dtype, SafeTensors};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let net = crate::model::load(&dir.join("vit_tiny.model.safetensors"), None).unwrap();
        assert_eq!(net.spec.to_string(), "vit-i8-p4-d2-w8-h2-m12");
        let bytes = std::fs::read(dir.join("vit_tiny.golden.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let get = |name: &str| -> Vec<f64> {
            let t = st.tensor(name).unwrap_or_else(|e| panic!("golden `{name}`: {e}"));
            assert_eq!(t.dtype(), Dtype::F64);
            t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
        };
        let (x, labels) = (get("input"), get("labels").iter().map(|&l| l as usize).collect::<Vec<_>>());
        let (b, t, d) = (2, 5, 8);
        let names = net.layer_names();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        for (key, loss, labels) in
            [("nac", Loss::NAC, None), ("label", Loss { target: Target::Label, temperature: 1.0 }, Some(&labels[..]))]
        {
            let out = run_with(&net, &x, [b, 3, 8, 8], &refs, loss, labels, true).unwrap();
            let check = |what: &str, got: &[f64], want: &[f64]| {
                let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
                let diff = got.iter().zip(want).fold(0f64, |m, (g, w)| m.max((g - w).abs()));
                assert!(
                    got.len() == want.len() && scale > 0.0 && diff <= 1e-14 * scale,
                    "{key} {what}: max diff {diff:e}, scale {scale:e}"
                );
            };
            check("logits", &out.logits, &get(&format!("{key}.logits")));
            check("loss", &[out.loss], &get(&format!("{key}.loss")));
            check("input gradient", out.input_grad.as_ref().unwrap(), &get(&format!("{key}.input_grad")));
            for lt in &out.layers {
                for (what, got) in [("z", &lt.z), ("g", &lt.g)] {
                    let mut want = get(&format!("{key}.{}.{what}", lt.name));
                    if lt.name != "layer_norm" {
                        // [B, T, D] to the reference's [B, D, T, 1].
                        want = pixel_major_to_nchw(&want, b, d, t);
                    }
                    check(&format!("{} {what}", lt.name), got, &want);
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let net = tiny_vit(41);
        let x = vec![0.5; 2 * 3 * 64];
        let nac = |input: &[f64], shape, layers: &[&str]| run_with(&net, input, shape, layers, Loss::NAC, None, false);
        assert!(nac(&x, [2, 3, 8, 8], &["layer_1"]).is_ok());
        for (input, shape) in [(&x[..], [2, 3, 4, 16]), (&x[..], [2, 1, 8, 24]), (&x[..], [0, 3, 8, 8]), (&x[1..], [2, 3, 8, 8])] {
            assert!(matches!(nac(input, shape, &[]), Err(Error::Input(_))), "{shape:?}");
        }
        assert!(matches!(nac(&x, [2, 3, 8, 8], &["layer_2"]), Err(Error::Input(_))));
        let label = Loss { target: Target::Label, temperature: 1.0 };
        for labels in [Some(&[0, 3][..]), Some(&[0][..]), None] {
            assert!(matches!(run_with(&net, &x, [2, 3, 8, 8], &[], label, labels, false), Err(Error::Input(_))), "{labels:?}");
        }
        let err = logits_from_layer(&net, "layer_0", &[0.0; 80], [2, 8, 5, 1]).unwrap_err();
        assert!(err.to_string().contains("loss_with_perturbation"), "{err}");
        assert!(logits_from_layer(&net, "layer_norm", &[0.0; 16], [2, 8, 1, 1]).is_ok());
        assert!(logits_from_layer(&net, "layer_norm", &[0.0; 16], [2, 4, 2, 1]).is_err());
        assert!(logits_from_layer(&net, "layer_norm", &[0.0; 15], [2, 8, 1, 1]).is_err());
        assert!(loss_with_perturbation(&net, &x, [2, 3, 8, 8], "layer_0", &[0.0; 79], Loss::NAC, None).is_err());
        // A ResNet is not for this module.
        let resnet = SyntheticModel::new(ArchSpec::ResNet18_32x32, 3, 1).unwrap().network;
        assert!(matches!(run_with(&resnet, &x, [2, 3, 8, 8], &[], Loss::NAC, None, false), Err(Error::Input(_))));
    }
}
