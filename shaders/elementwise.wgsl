// Element-wise kernels over NHWC activations. One thread per output element; the dispatch is
// 2-D (x ≤ 65,535 workgroups) so large tensors never exceed the per-dimension limit.

struct Params {
    total: u32,
    batch: u32,
    channels: u32,
    height: u32,
    width: u32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
}

const FLAG_RELU: u32 = 1u;
const FLAG_SWISH: u32 = 2u;

// x·sigmoid(x), as RobustBench's `_Swish.forward`. The exponent is capped where sigmoid is
// below 2e-35 anyway, so no GPU has to produce (or may flush) an infinity.
fn swish(x: f32) -> f32 {
    return x * (1.0 / (1.0 + exp(min(-x, 80.0))));
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> aux_a: array<f32>;
@group(0) @binding(3) var<storage, read> aux_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// NCHW input (the user's layout) → NHWC (the engine's layout).
@compute @workgroup_size(256)
fn nchw_to_nhwc(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    let pixel = i / p.channels;
    let hw = p.height * p.width;
    let b = pixel / hw;
    let r = pixel - b * hw;
    dst[i] = src[(b * p.channels + c) * hw + r];
}

// NHWC (the engine's layout) → NCHW (the user's), for gradients at the input.
@compute @workgroup_size(256)
fn nhwc_to_nchw(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let hw = p.height * p.width;
    let r = i % hw;
    let plane = i / hw;
    let c = plane % p.channels;
    let b = plane / p.channels;
    dst[i] = src[(b * hw + r) * p.channels + c];
}

// BatchNorm in eval mode as y = x·scale[c] + shift[c], optionally followed by ReLU or Swish.
@compute @workgroup_size(256)
fn scale_shift(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = i % p.channels;
    var v = fma(src[i], aux_a[c], aux_b[c]);
    if ((p.flags & FLAG_RELU) != 0u) {
        v = max(v, 0.0);
    }
    if ((p.flags & FLAG_SWISH) != 0u) {
        v = swish(v);
    }
    dst[i] = v;
}

// Swish of a convolution's output (its input is kept for the backward pass).
@compute @workgroup_size(256)
fn swish_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    dst[i] = swish(src[i]);
}

// Gradient through a ReLU whose output was `aux_a`: pass where the output is positive.
@compute @workgroup_size(256)
fn relu_mask(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    dst[i] = select(0.0, src[i], aux_a[i] > 0.0);
}
