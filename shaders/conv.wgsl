// 2-D convolution as a tiled implicit GEMM over NHWC activations.
//
// Forward (BACKWARD = false):  out[m, n] = Σ_k A[m, k] · W[k, n]
//   m = (b, oy, ox) output pixel, n = output channel, k = (ky, kx, ci) with ci fastest,
//   A[m, k] = in[b, oy·s + ky − p, ox·s + kx − p, ci] (0 outside the image).
// Backward data (BACKWARD = true): the same GEMM computes ∂L/∂in from ∂L/∂out:
//   m = (b, iy, ix) input pixel, n = input channel, k = (ky, kx, co) with co fastest,
//   A[m, k] = dout[b, oy, ox, co] where oy·s = iy + p − ky (0 unless divisible and in range).
// Weights are packed on the host as [K][N] (N contiguous) for each direction.
//
// Tiles: 64 (m) × 64 (n) per workgroup, K in steps of 16, 16×16 threads, 4×4 outputs each.

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
    _pad0: u32,
    _pad1: u32,
}

// Epilogue, applied in this order:
// v = acc; +channel[n] (BIAS); +residual (RESIDUAL unless RESIDUAL_LAST); max(v,0) (RELU);
// ·[mask>0] (MASK); ·channel[n] (SCALE); +residual (RESIDUAL with RESIDUAL_LAST).
const FLAG_BIAS: u32 = 1u;
const FLAG_RESIDUAL: u32 = 2u;
const FLAG_RELU: u32 = 4u;
const FLAG_MASK: u32 = 8u;
const FLAG_SCALE: u32 = 16u;
const FLAG_RESIDUAL_LAST: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> weights: array<f32>;
@group(0) @binding(3) var<storage, read> channel: array<f32>;
@group(0) @binding(4) var<storage, read> residual: array<f32>;
@group(0) @binding(5) var<storage, read> mask: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst: array<f32>;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const THREADS: u32 = 256u;

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

fn load_a_forward(m: u32, k: u32) -> f32 {
    let pixels = p.out_h * p.out_w;
    let b = m / pixels;
    let r = m - b * pixels;
    let oy = r / p.out_w;
    let ox = r - oy * p.out_w;
    let ci = k % p.in_c;
    let t = k / p.in_c;
    let ky = t / p.kernel;
    let kx = t - ky * p.kernel;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
        return 0.0;
    }
    return src[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci];
}

fn load_a_backward(m: u32, k: u32) -> f32 {
    let pixels = p.in_h * p.in_w;
    let b = m / pixels;
    let r = m - b * pixels;
    let iy = r / p.in_w;
    let ix = r - iy * p.in_w;
    let co = k % p.out_c;
    let t = k / p.out_c;
    let ky = t / p.kernel;
    let kx = t - ky * p.kernel;
    let ny = i32(iy + p.pad) - i32(ky);
    let nx = i32(ix + p.pad) - i32(kx);
    if (ny < 0 || nx < 0) {
        return 0.0;
    }
    let oy = u32(ny) / p.stride;
    let ox = u32(nx) / p.stride;
    if (oy * p.stride != u32(ny) || ox * p.stride != u32(nx) || oy >= p.out_h || ox >= p.out_w) {
        return 0.0;
    }
    return src[((b * p.out_h + oy) * p.out_w + ox) * p.out_c + co];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < p.k_total; k0 += BK) {
        // Each thread stages 4 elements of A (fixed k, 4 rows) and 4 of B (fixed n, 4 k rows).
        for (var i = 0u; i < 4u; i++) {
            let e = tid + THREADS * i;
            let kk = e % BK;
            let mm = e / BK;
            let m = m0 + mm;
            let k = k0 + kk;
            var a = 0.0;
            if (m < p.m_total && k < p.k_total) {
                if (BACKWARD) {
                    a = load_a_backward(m, k);
                } else {
                    a = load_a_forward(m, k);
                }
            }
            tile_a[kk * BM + mm] = a;

            let nn = e % BN;
            let kb = e / BN;
            let n = n0 + nn;
            let kw = k0 + kb;
            var w = 0.0;
            if (n < p.n_total && kw < p.k_total) {
                w = weights[kw * p.n_total + n];
            }
            tile_b[kb * BN + nn] = w;
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_a[kk * BM + lid.y * 4u + i];
                b[i] = tile_b[kk * BN + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y * 4u + i;
        if (m >= p.m_total) {
            break;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n >= p.n_total) {
                break;
            }
            let idx = m * p.n_total + n;
            var v = acc[i * 4u + j];
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
            if ((p.flags & FLAG_SCALE) != 0u) {
                v *= channel[n];
            }
            if ((p.flags & (FLAG_RESIDUAL | FLAG_RESIDUAL_LAST)) == (FLAG_RESIDUAL | FLAG_RESIDUAL_LAST)) {
                v += residual[idx];
            }
            dst[idx] = v;
        }
    }
}
