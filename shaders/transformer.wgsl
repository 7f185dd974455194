// Vision Transformer kernels over token sequences `[B][T][C]` (the engine's NHWC with H = T,
// W = 1: channels fastest, so a token's features are contiguous). One thread per output element
// or per row (token), flat 2-D dispatch like the element-wise kernels. Every sum runs in a fixed
// order, so results do not depend on the batch or on which other samples share it.

struct Params {
    total: u32,
    batch: u32,
    // T
    tokens: u32,
    // D: width of a token row (LayerNorm), of the model (attention)
    width: u32,
    heads: u32,
    head_dim: u32,
    flags: u32,
    // LayerNorm: input row r is row r · row_stride (T for the class token of each sample).
    row_stride: u32,
    eps: f32,
    // 1 / sqrt(head_dim)
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

// layer_norm_backward: add `extra` (the residual branch's gradient).
const FLAG_RESIDUAL: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> aux_a: array<f32>;
@group(0) @binding(3) var<storage, read> aux_b: array<f32>;
@group(0) @binding(4) var<storage, read> aux_c: array<f32>;
@group(0) @binding(5) var<storage, read_write> dst: array<f32>;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// Patch embeddings [B][T−1][D] (src) → tokens [B][T][D]: the class token (aux_a) first, then
// the patches, plus the position embedding (aux_b, [T][D]).
@compute @workgroup_size(256)
fn tokens_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let d = i % p.width;
    let row = i / p.width;
    let t = row % p.tokens;
    let b = row / p.tokens;
    var v: f32;
    if (t == 0u) {
        v = aux_a[d];
    } else {
        v = src[(b * (p.tokens - 1u) + t - 1u) * p.width + d];
    }
    dst[i] = v + aux_b[t * p.width + d];
}

// Gradient at the tokens [B][T][D] → at the patch embeddings [B][T−1][D] (the class token and
// position embedding are parameters: their gradients are not needed).
@compute @workgroup_size(256)
fn tokens_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let d = i % p.width;
    let row = i / p.width;
    let t = row % (p.tokens - 1u);
    let b = row / (p.tokens - 1u);
    dst[i] = src[(b * p.tokens + t + 1u) * p.width + d];
}

// Mean and 1/sqrt(var + eps) of row `r` of src (biased variance, two passes for stability).
fn row_stats(base: u32) -> vec2<f32> {
    var sum = 0.0;
    for (var d = 0u; d < p.width; d++) {
        sum += src[base + d];
    }
    let mean = sum / f32(p.width);
    var sq = 0.0;
    for (var d = 0u; d < p.width; d++) {
        let c = src[base + d] - mean;
        sq += c * c;
    }
    return vec2<f32>(mean, inverseSqrt(sq / f32(p.width) + p.eps));
}

// LayerNorm of each row: one thread per output row; gamma (aux_a), beta (aux_b).
@compute @workgroup_size(256)
fn layer_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_index(lid, wid, groups);
    if (r >= p.total) {
        return;
    }
    let base = r * p.row_stride * p.width;
    let stats = row_stats(base);
    for (var d = 0u; d < p.width; d++) {
        dst[r * p.width + d] = (src[base + d] - stats.x) * stats.y * aux_a[d] + aux_b[d];
    }
}

// Data gradient of LayerNorm, one thread per row: dy (aux_a), the forward input (src, rows at
// row_stride), gamma (aux_b); with RESIDUAL, + aux_c.
//   dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)),  ĝ = dy · gamma,  x̂ = (x − mean) · rstd
@compute @workgroup_size(256)
fn layer_norm_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_index(lid, wid, groups);
    if (r >= p.total) {
        return;
    }
    let base = r * p.row_stride * p.width;
    let stats = row_stats(base);
    let out = r * p.width;
    var sum_g = 0.0;
    var sum_gx = 0.0;
    for (var d = 0u; d < p.width; d++) {
        let g = aux_a[out + d] * aux_b[d];
        sum_g += g;
        sum_gx += g * (src[base + d] - stats.x) * stats.y;
    }
    let n = f32(p.width);
    let mean_g = sum_g / n;
    let mean_gx = sum_gx / n;
    for (var d = 0u; d < p.width; d++) {
        let xhat = (src[base + d] - stats.x) * stats.y;
        var v = stats.y * (aux_a[out + d] * aux_b[d] - mean_g - xhat * mean_gx);
        if ((p.flags & FLAG_RESIDUAL) != 0u) {
            v += aux_c[out + d];
        }
        dst[out + d] = v;
    }
}

// erf(x) for f32: Abramowitz & Stegun 7.1.26 on |x| (absolute error ≤ 1.5e-7), odd extension.
fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let y = 1.0 - poly * exp(-a * a);
    return select(y, -y, x < 0.0);
}

const SQRT_HALF: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;

// GELU, exact (erf) form: x · Φ(x).
@compute @workgroup_size(256)
fn gelu(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let x = src[i];
    dst[i] = 0.5 * x * (1.0 + erf_f32(x * SQRT_HALF));
}

// dy (src) · GELU'(x) with x the pre-activation (aux_a): Φ(x) + x · φ(x).
@compute @workgroup_size(256)
fn gelu_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let x = aux_a[i];
    let cdf = 0.5 * (1.0 + erf_f32(x * SQRT_HALF));
    dst[i] = src[i] * (cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x));
}

// Attention probabilities: one thread per (sample, head, query) row of P [B][H][T][T], from the
// fused projections qkv [B][T][3D] (q, k, v each D wide, head h at channels h·dh ..).
// P[i, j] = softmax_j(scale · q_i · k_j), stabilised by the row maximum.
@compute @workgroup_size(256)
fn attention_probs(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_index(lid, wid, groups);
    if (r >= p.total) {
        return;
    }
    let t = p.tokens;
    let i = r % t;
    let bh = r / t;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let row = 3u * p.width;
    let q = (b * t + i) * row + h * p.head_dim;
    let k0 = b * t * row + p.width + h * p.head_dim;
    let out = r * t;
    var peak = -3.4028235e38;
    for (var j = 0u; j < t; j++) {
        let k = k0 + j * row;
        var s = 0.0;
        for (var e = 0u; e < p.head_dim; e++) {
            s += src[q + e] * src[k + e];
        }
        s *= p.scale;
        dst[out + j] = s;
        peak = max(peak, s);
    }
    var sum = 0.0;
    for (var j = 0u; j < t; j++) {
        let w = exp(dst[out + j] - peak);
        dst[out + j] = w;
        sum += w;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < t; j++) {
        dst[out + j] *= inv;
    }
}

// Attention output O [B][T][D]: O[i, h·dh + e] = Σ_j P[h, i, j] · v[j, h·dh + e]; P (src),
// qkv (aux_a).
@compute @workgroup_size(256)
fn attention_values(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(lid, wid, groups);
    if (o >= p.total) {
        return;
    }
    let t = p.tokens;
    let c = o % p.width;
    let bi = o / p.width;
    let i = bi % t;
    let b = bi / t;
    let h = c / p.head_dim;
    let row = 3u * p.width;
    let probs = ((b * p.heads + h) * t + i) * t;
    let v0 = b * t * row + 2u * p.width + c;
    var acc = 0.0;
    for (var j = 0u; j < t; j++) {
        acc += src[probs + j] * aux_a[v0 + j * row];
    }
    dst[o] = acc;
}

// Gradient at the attention scores, one thread per (sample, head, query) row of dS:
// dP[i, j] = dO_i · v_j, dS[i, j] = P[i, j] · (dP[i, j] − Σ_j' P[i, j'] · dP[i, j']);
// dO (src), qkv (aux_a), P (aux_b).
@compute @workgroup_size(256)
fn attention_backward_scores(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                             @builtin(num_workgroups) groups: vec3<u32>) {
    let r = flat_index(lid, wid, groups);
    if (r >= p.total) {
        return;
    }
    let t = p.tokens;
    let i = r % t;
    let bh = r / t;
    let h = bh % p.heads;
    let b = bh / p.heads;
    let row = 3u * p.width;
    let d_out = (b * t + i) * p.width + h * p.head_dim;
    let v0 = b * t * row + 2u * p.width + h * p.head_dim;
    let out = r * t;
    var dot = 0.0;
    for (var j = 0u; j < t; j++) {
        let v = v0 + j * row;
        var dp = 0.0;
        for (var e = 0u; e < p.head_dim; e++) {
            dp += src[d_out + e] * aux_a[v + e];
        }
        dst[out + j] = dp;
        dot += aux_b[out + j] * dp;
    }
    for (var j = 0u; j < t; j++) {
        dst[out + j] = aux_b[out + j] * (dst[out + j] - dot);
    }
}

// Gradient at the fused projections dqkv [B][T][3D], one thread per element: dS (src), qkv
// (aux_a), P (aux_b), dO (aux_c).
//   dq_i = scale · Σ_j dS[i, j] · k_j,  dk_j = scale · Σ_i dS[i, j] · q_i,  dv_j = Σ_i P[i, j] · dO_i
@compute @workgroup_size(256)
fn attention_backward_qkv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(lid, wid, groups);
    if (o >= p.total) {
        return;
    }
    let t = p.tokens;
    let row = 3u * p.width;
    let c3 = o % row;
    let bi = o / row;
    let n = bi % t;
    let b = bi / t;
    let part = c3 / p.width;
    let c = c3 % p.width;
    let h = c / p.head_dim;
    let scores = (b * p.heads + h) * t * t;
    let qkv0 = b * t * row;
    var acc = 0.0;
    if (part == 0u) {
        for (var j = 0u; j < t; j++) {
            acc += src[scores + n * t + j] * aux_a[qkv0 + j * row + p.width + c];
        }
        acc *= p.scale;
    } else if (part == 1u) {
        for (var i = 0u; i < t; i++) {
            acc += src[scores + i * t + n] * aux_a[qkv0 + i * row + c];
        }
        acc *= p.scale;
    } else {
        let d_out0 = b * t * p.width + c;
        for (var i = 0u; i < t; i++) {
            acc += aux_b[scores + i * t + n] * aux_c[d_out0 + i * p.width];
        }
    }
    dst[o] = acc;
}

// A token sequence's gradient [B][T][D] that is the class token's (src, [B][D]) and zero
// elsewhere: the head reads the class token only.
@compute @workgroup_size(256)
fn scatter_class_token(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let d = i % p.width;
    let row = i / p.width;
    let t = row % p.tokens;
    let b = row / p.tokens;
    dst[i] = select(0.0, src[b * p.width + d], t == 0u);
}
