// One L∞ attack step on a preprocessed (normalised) NCHW batch, in pixel space: with
// pixel = x·std[c] + mean[c], move each pixel by `step` along the sign of ∂L/∂x (the sign of
// ∂L/∂pixel: std > 0), then project onto the ε-ball around the clean pixel and the [0, 1] box,
// and write x back in normalised form, in place.

struct Params {
    total: u32,
    channels: u32,
    hw: u32,
    _pad0: u32,
    step: f32,
    epsilon: f32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> clean: array<f32>;
// mean[0..C], then std[0..C].
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn attack_step(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * 256u + lid.x;
    if (i >= p.total) {
        return;
    }
    let c = (i / p.hw) % p.channels;
    let mean = stats[c];
    let deviation = stats[p.channels + c];
    let origin = clean[i] * deviation + mean;
    let pixel = x[i] * deviation + mean + p.step * sign(grad[i]);
    let projected = clamp(pixel, max(origin - p.epsilon, 0.0), min(origin + p.epsilon, 1.0));
    x[i] = (projected - mean) / deviation;
}
