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

// The attention kernels keep four keys (or tokens) per thread in registers: each load of the
// operand that differs between neighbouring threads then feeds four multiply-adds, and the
// other operand is read at addresses shared by the threads of one head (broadcasts). Indices
// past the sequence are clamped for the loads and never stored.

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
    for (var j = 0u; j < t; j += 4u) {
        let k = vec4<u32>(k0) + vec4<u32>(min(vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(t - 1u))) * row;
        var s = vec4<f32>(0.0);
        for (var e = 0u; e < p.head_dim; e++) {
            s += src[q + e] * vec4<f32>(src[k.x + e], src[k.y + e], src[k.z + e], src[k.w + e]);
        }
        s *= p.scale;
        for (var c = 0u; c < 4u && j + c < t; c++) {
            dst[out + j + c] = s[c];
            peak = max(peak, s[c]);
        }
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

// Attention output O [B][T][D], one thread per (sample, four queries, channel):
// O[i, h·dh + e] = Σ_j P[h, i, j] · v[j, h·dh + e]; P (src), qkv (aux_a).
@compute @workgroup_size(256)
fn attention_values(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(lid, wid, groups);
    if (o >= p.total) {
        return;
    }
    let t = p.tokens;
    let quads = (t + 3u) / 4u;
    let c = o % p.width;
    let bq = o / p.width;
    let i0 = (bq % quads) * 4u;
    let b = bq / quads;
    let h = c / p.head_dim;
    let row = 3u * p.width;
    let rows = ((b * p.heads + h) * t + min(vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(t - 1u))) * t;
    let v0 = b * t * row + 2u * p.width + c;
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < t; j++) {
        acc += aux_a[v0 + j * row] * vec4<f32>(src[rows.x + j], src[rows.y + j], src[rows.z + j], src[rows.w + j]);
    }
    for (var q = 0u; q < 4u && i0 + q < t; q++) {
        dst[(b * t + i0 + q) * p.width + c] = acc[q];
    }
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
    for (var j = 0u; j < t; j += 4u) {
        let v = vec4<u32>(v0) + vec4<u32>(min(vec4<u32>(j) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(t - 1u))) * row;
        var dp = vec4<f32>(0.0);
        for (var e = 0u; e < p.head_dim; e++) {
            dp += src[d_out + e] * vec4<f32>(aux_a[v.x + e], aux_a[v.y + e], aux_a[v.z + e], aux_a[v.w + e]);
        }
        for (var c = 0u; c < 4u && j + c < t; c++) {
            dst[out + j + c] = dp[c];
            dot += aux_b[out + j + c] * dp[c];
        }
    }
    for (var j = 0u; j < t; j++) {
        dst[out + j] = aux_b[out + j] * (dst[out + j] - dot);
    }
}

// Gradient at the fused projections dqkv [B][T][3D], one thread per (sample, four tokens,
// channel of q, k or v): dS (src), qkv (aux_a), P (aux_b), dO (aux_c).
//   dq_n = scale · Σ_j dS[n, j] · k_j,  dk_n = scale · Σ_i dS[i, n] · q_i,  dv_n = Σ_i P[i, n] · dO_i
@compute @workgroup_size(256)
fn attention_backward_qkv(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                          @builtin(num_workgroups) groups: vec3<u32>) {
    let o = flat_index(lid, wid, groups);
    if (o >= p.total) {
        return;
    }
    let t = p.tokens;
    let quads = (t + 3u) / 4u;
    let row = 3u * p.width;
    let c3 = o % row;
    let bq = o / row;
    let n0 = (bq % quads) * 4u;
    let b = bq / quads;
    let part = c3 / p.width;
    let c = c3 % p.width;
    let h = c / p.head_dim;
    let scores = (b * p.heads + h) * t * t;
    let qkv0 = b * t * row;
    let n = min(vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(t - 1u));
    var acc = vec4<f32>(0.0);
    if (part == 0u) {
        let rows = vec4<u32>(scores) + n * t;
        for (var j = 0u; j < t; j++) {
            acc += aux_a[qkv0 + j * row + p.width + c] * vec4<f32>(src[rows.x + j], src[rows.y + j], src[rows.z + j], src[rows.w + j]);
        }
        acc *= p.scale;
    } else if (part == 1u) {
        let cols = vec4<u32>(scores) + n;
        for (var i = 0u; i < t; i++) {
            let at = i * t;
            acc += aux_a[qkv0 + i * row + c] * vec4<f32>(src[cols.x + at], src[cols.y + at], src[cols.z + at], src[cols.w + at]);
        }
        acc *= p.scale;
    } else {
        let cols = vec4<u32>(scores) + n;
        let d_out0 = b * t * p.width + c;
        for (var i = 0u; i < t; i++) {
            let at = i * t;
            acc += aux_c[d_out0 + i * p.width] * vec4<f32>(aux_b[cols.x + at], aux_b[cols.y + at], aux_b[cols.z + at], aux_b[cols.w + at]);
        }
    }
    for (var q = 0u; q < 4u && n0 + q < t; q++) {
        dst[(b * t + n0 + q) * row + c3] = acc[q];
    }
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
