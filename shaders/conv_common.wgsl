// 2-D convolution as an implicit GEMM over NHWC activations.
//
// Forward (BACKWARD = false):  out[m, n] = Σ_k A[m, k] · W[k, n]
//   m = (b, oy, ox) output pixel, n = output channel, k = (ky, kx, ci) with ci fastest,
//   A[m, k] = in[b, oy·s + ky − p, ox·s + kx − p, ci] (0 outside the image).
// Backward data (BACKWARD = true): the same GEMM computes ∂L/∂in from ∂L/∂out:
//   m = (b, iy, ix) input pixel, n = input channel, k = (ky, kx, co) with co fastest,
//   A[m, k] = dout[b, oy, ox, co] where oy·s = iy + p − ky (0 unless divisible and in range).
// Weights are packed on the host as [K][N] (N contiguous) for each direction.
//
// This file is shared by the variants (`conv.wgsl`: workgroup-memory tiles; `conv_direct.wgsl`:
// register tiles); the engine prepends it to each. The weights' storage type is `WEIGHT` and
// the type of the K loops' operands, products and sums is `REAL`: both f32, or with f16 weights
// WEIGHT = f16 (each weight widened to f32 where it is read), or with f16 arithmetic both f16
// (activations rounded to f16 where they are read, the sums widened to f32 for the epilogue).
// The engine enables f16 and rewrites the aliases below.

alias WEIGHT = f32;
alias REAL = f32;

override BACKWARD: bool = false;

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    in_c: u32,
    out_h: u32,
    out_w: u32,
    out_c: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
    m_total: u32,
    n_total: u32,
    k_total: u32,
    flags: u32,
    splits: u32,  // split K into this many parts (0 or 1: no split)
    _pad1: u32,
}

// Epilogue, applied in this order:
// v = acc; +channel[n] (BIAS); +residual (RESIDUAL unless RESIDUAL_LAST); max(v,0) (RELU);
// ·[mask>0] (MASK) or ·swish'(mask) (MASK_SWISH: the mask holds a Swish's input);
// ·channel[n] (SCALE); +residual (RESIDUAL with RESIDUAL_LAST).
const FLAG_BIAS: u32 = 1u;
const FLAG_RESIDUAL: u32 = 2u;
const FLAG_RELU: u32 = 4u;
const FLAG_MASK: u32 = 8u;
const FLAG_SCALE: u32 = 16u;
const FLAG_RESIDUAL_LAST: u32 = 32u;
const FLAG_MASK_SWISH: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<WEIGHT>;
@group(0) @binding(3) var<storage, read> channel: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

// d swish(u)/du = s·(1 + u·(1 − s)) with s = sigmoid(u), as RobustBench's `_Swish.backward`
// (the exponent capped as in `shaders/elementwise.wgsl`'s swish).
fn swish_grad(u: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(min(-u, 80.0)));
    return s * (1.0 + u * (1.0 - s));
}

// Split K (p.splits > 1), for grids too small to fill a device: the dispatch's workgroup z is
// phase · splits + split; split i sums the K range `split_range(i)` and writes its raw partial
// sums to dst[(i · m_total + m) · n_total + n]; `split_reduce` adds the partials in split order
// and applies the epilogue. Unsplit calls sum all of K in one part, in the same order as before.
fn split_count() -> u32 {
    return max(p.splits, 1u);
}

// [begin, end) of the K indices split `i` sums: equal parts rounded up to whole steps of 32.
fn split_range(i: u32) -> vec2<u32> {
    let part = (((p.k_total + split_count() - 1u) / split_count() + 31u) / 32u) * 32u;
    let begin = min(i * part, p.k_total);
    return vec2<u32>(begin, min(begin + part, p.k_total));
}

// The end of every variant: the epilogue and store, or (split K) this split's partial sums.
fn store_result(split: u32, m: u32, n0: u32, acc: vec4<f32>) {
    if (p.splits <= 1u) {
        store_row(m, n0, acc);
        return;
    }
    if (m >= p.m_total) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n0 + j >= p.n_total) {
            return;
        }
        dst[(split * p.m_total + m) * p.n_total + n0 + j] = acc[j];
    }
}

// Split K's second dispatch: one invocation per (row, four columns); `src` holds the partials.
@compute @workgroup_size(256)
fn split_reduce(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let quads = (p.n_total + 3u) / 4u;
    let i = (wid.y * groups.x + wid.x) * 256u + lid.x;
    if (i >= p.m_total * quads) {
        return;
    }
    let m = i / quads;
    let n0 = (i - m * quads) * 4u;
    var acc = vec4<f32>(0.0);
    for (var s = 0u; s < split_count(); s++) {
        let row = (s * p.m_total + m) * p.n_total + n0;
        for (var j = 0u; j < 4u; j++) {
            if (n0 + j < p.n_total) {
                acc[j] += src[row + j];
            }
        }
    }
    store_row(m, n0, acc);
}

// Applies the epilogue to four consecutive columns of row m and stores those in range.
fn store_row(m: u32, n0: u32, acc: vec4<f32>) {
    if (m >= p.m_total) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        if (n >= p.n_total) {
            return;
        }
        let idx = m * p.n_total + n;
        var v = acc[j];
        if ((p.flags & FLAG_BIAS) != 0u) {
            v += channel[n];
        }
        if ((p.flags & (FLAG_RESIDUAL | FLAG_RESIDUAL_LAST)) == FLAG_RESIDUAL) {
            v += residual[idx];
        }
        if ((p.flags & FLAG_RELU) != 0u) {
            v = max(v, 0.0);
        }
        if ((p.flags & FLAG_MASK) != 0u && !(mask[idx] > 0.0)) {
            v = 0.0;
        }
        if ((p.flags & FLAG_MASK_SWISH) != 0u) {
            v *= swish_grad(mask[idx]);
        }
        if ((p.flags & FLAG_SCALE) != 0u) {
            v *= channel[n];
        }
        if ((p.flags & (FLAG_RESIDUAL | FLAG_RESIDUAL_LAST)) == (FLAG_RESIDUAL | FLAG_RESIDUAL_LAST)) {
            v += residual[idx];
        }
        dst[idx] = v;
    }
}
