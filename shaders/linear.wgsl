// The classifier head: fully connected forward, a loss gradient at the logits, and the data
// gradient back through the fully connected layer.

struct Params {
    batch: u32,
    in_features: u32,
    out_features: u32,
    total: u32,
    loss_target: u32,
    temperature: f32,
    _pad0: u32,
    _pad1: u32,
}

const TARGET_UNIFORM: u32 = 0u;
const TARGET_LABEL: u32 = 1u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>; // [out_features][in_features]
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// logits[b, o] = Σ_f feat[b, f]·W[o, f] + bias[o]; one thread per (b, o).
@compute @workgroup_size(256)
fn linear_forward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let o = i % p.out_features;
    let b = i / p.out_features;
    var acc = 0.0;
    for (var f = 0u; f < p.in_features; f++) {
        acc = fma(src[b * p.in_features + f], weight[o * p.in_features + f], acc);
    }
    dst[i] = acc + bias[o];
}

// ∂L/∂logits of L = CE(softmax(logits / T), t) = (softmax(logits / T) − t) / T, with t uniform
// (the NAC loss at T = 1), one-hot at the label (`weight` holds labels as f32), or one-hot at
// the predicted class (the first maximum); one thread per sample.
@compute @workgroup_size(256)
fn loss_grad(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let b = flat_index(lid, wid, groups);
    if (b >= p.batch) {
        return;
    }
    let classes = p.out_features;
    let row = b * classes;
    var peak = src[row];
    var predicted = 0u;
    for (var c = 1u; c < classes; c++) {
        if (src[row + c] > peak) {
            peak = src[row + c];
            predicted = c;
        }
    }
    let t = p.temperature;
    // The peak's own term is exp(0) = 1; the others are summed apart, so that p − 1 at the
    // predicted class is −rest / denom, with no cancellation when p is close to 1.
    var rest = 0.0;
    for (var c = 0u; c < classes; c++) {
        if (c != predicted) {
            rest += exp((src[row + c] - peak) / t);
        }
    }
    let denom = 1.0 + rest;
    var hot = predicted;
    if (p.loss_target == TARGET_LABEL) {
        hot = u32(weight[b]);
    }
    for (var c = 0u; c < classes; c++) {
        var g = exp((src[row + c] - peak) / t) / denom;
        if (p.loss_target == TARGET_UNIFORM) {
            g -= 1.0 / f32(classes);
        } else if (c == hot && c == predicted) {
            g = -rest / denom;
        } else if (c == hot) {
            g -= 1.0;
        }
        dst[row + c] = g / t;
    }
}

// ∂L/∂feat[b, f] = Σ_o ∂L/∂logits[b, o]·W[o, f]; one thread per (b, f).
@compute @workgroup_size(256)
fn linear_backward(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let f = i % p.in_features;
    let b = i / p.in_features;
    var acc = 0.0;
    for (var o = 0u; o < p.out_features; o++) {
        acc = fma(src[b * p.out_features + o], weight[o * p.in_features + f], acc);
    }
    dst[i] = acc;
}
