// Pooling over NHWC activations: 3×3/2 max-pool (padding 1) and its backward, global average
// pool and its backward (broadcast of ∂L/∂pooled over H×W, optionally through a ReLU mask and a BN scale).

struct Params {
    batch: u32,
    in_h: u32,
    in_w: u32,
    channels: u32,
    out_h: u32,
    out_w: u32,
    total: u32,
    flags: u32,
}

const FLAG_MASK: u32 = 1u;
const FLAG_SCALE: u32 = 2u;
const FLAG_MASK_SWISH: u32 = 4u;

// d swish(u)/du = s·(1 + u·(1 − s)) with s = sigmoid(u), as RobustBench's `_Swish.backward`
// (the exponent capped as in `shaders/elementwise.wgsl`'s swish).
fn swish_grad(u: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(min(-u, 80.0)));
    return s * (1.0 + u * (1.0 - s));
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> aux_a: array<f32>;
@group(0) @binding(3) var<storage, read> aux_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// PyTorch semantics: padding is −∞, so a window always has at least one real pixel.
@compute @workgroup_size(256)
fn max_pool(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    let pixel = i / p.channels;
    let ohw = p.out_h * p.out_w;
    let b = pixel / ohw;
    let r = pixel - b * ohw;
    let oy = r / p.out_w;
    let ox = r - oy * p.out_w;
    var best = -3.4028235e38;
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = i32(oy * 2u + ky) - 1;
        if (iy < 0 || iy >= i32(p.in_h)) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let ix = i32(ox * 2u + kx) - 1;
            if (ix < 0 || ix >= i32(p.in_w)) {
                continue;
            }
            best = max(best, src[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.channels + c]);
        }
    }
    dst[i] = best;
}

// One thread per (sample, channel): mean over H×W.
@compute @workgroup_size(256)
fn avg_pool(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    let b = i / p.channels;
    let hw = p.in_h * p.in_w;
    var sum = 0.0;
    for (var j = 0u; j < hw; j++) {
        sum += src[(b * hw + j) * p.channels + c];
    }
    dst[i] = sum / f32(hw);
}

// One thread per input element: ∂L/∂x[b, y, x, c] = ∂L/∂pooled[b, c] / (H·W) (· mask · scale);
// MASK_SWISH: aux_a holds a Swish's input, the factor is its derivative there.
@compute @workgroup_size(256)
fn avg_pool_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    let hw = p.in_h * p.in_w;
    let b = i / (p.channels * hw);
    var v = src[b * p.channels + c] / f32(hw);
    if ((p.flags & FLAG_MASK) != 0u && !(aux_a[i] > 0.0)) {
        v = 0.0;
    }
    if ((p.flags & FLAG_MASK_SWISH) != 0u) {
        v *= swish_grad(aux_a[i]);
    }
    if ((p.flags & FLAG_SCALE) != 0u) {
        v *= aux_b[c];
    }
    dst[i] = v;
}

// The index (iy·W + ix) of the first maximum of output window (oy, ox) in scan order, as
// PyTorch's max-pool records it (a later equal value does not replace it).
fn window_argmax(plane: u32, c: u32, oy: u32, ox: u32) -> u32 {
    var best = -3.4028235e38;
    var at = 0xffffffffu;
    for (var ky = 0u; ky < 3u; ky++) {
        let iy = i32(oy * 2u + ky) - 1;
        if (iy < 0 || iy >= i32(p.in_h)) {
            continue;
        }
        for (var kx = 0u; kx < 3u; kx++) {
            let ix = i32(ox * 2u + kx) - 1;
            if (ix < 0 || ix >= i32(p.in_w)) {
                continue;
            }
            let v = aux_a[((plane * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.channels + c];
            if (at == 0xffffffffu || v > best) {
                best = v;
                at = u32(iy) * p.in_w + u32(ix);
            }
        }
    }
    return at;
}

// ∂L/∂x of the 3×3/2 max-pool: each input element gathers ∂L/∂y of the (at most four) windows
// whose first maximum it is; `src` = ∂L/∂y, `aux_a` = the pool's input x; one thread per x.
@compute @workgroup_size(256)
fn max_pool_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    let pixel = i / p.channels;
    let hw = p.in_h * p.in_w;
    let b = pixel / hw;
    let here = pixel - b * hw;
    let iy = here / p.in_w;
    let ix = here - iy * p.in_w;
    // Windows oy with 2·oy − 1 ≤ iy ≤ 2·oy + 1.
    let oy_lo = iy / 2u;
    let ox_lo = ix / 2u;
    var acc = 0.0;
    for (var oy = max(oy_lo, 1u) - 1u; oy <= oy_lo + 1u; oy++) {
        if (oy >= p.out_h || 2u * oy + 1u < iy || 2u * oy > iy + 1u) {
            continue;
        }
        for (var ox = max(ox_lo, 1u) - 1u; ox <= ox_lo + 1u; ox++) {
            if (ox >= p.out_w || 2u * ox + 1u < ix || 2u * ox > ix + 1u) {
                continue;
            }
            if (window_argmax(b, c, oy, ox) == here) {
                acc += src[((b * p.out_h + oy) * p.out_w + ox) * p.channels + c];
            }
        }
    }
    dst[i] = acc;
}
