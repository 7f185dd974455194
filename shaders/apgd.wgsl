// APGD-CE (Croce & Hein, 2020; AutoAttack's `APGDAttack.attack_single_run`, L∞) on the device:
// per-sample bookkeeping after each forward/backward pass (`apgd_track`), the best and the
// adversarial points kept per element (`apgd_commit`), the momentum step with its projections
// (`apgd_step`) and the iterate written back as the network's normalised input (`apgd_emit`).
// All points are kept in pixel units, pixel = x·std[c] + mean[c]; the ε-ball and the [0, 1]
// box are in pixel space.

struct Params {
    // Elements of the chunk (samples × per_sample), channels, H·W, elements per sample.
    total: u32,
    channels: u32,
    hw: u32,
    per_sample: u32,
    samples: u32,
    classes: u32,
    // apgd_track: 0 = the clean input, 1 = the random start, 2 = an iteration.
    // apgd_emit: 0 = the iterate, 1 = the result (the adversarial point where one was found).
    phase: u32,
    // apgd_track: 1 at a checkpoint of the step-size schedule.
    checkpoint: u32,
    // apgd_track, iteration 0: the loss it is compared with to count an increase: 0 = zero,
    // 1 = itself (AutoAttack reads `loss_steps[-1]`, still 0 unless it is this very step).
    first: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // apgd_step: the weight of the new point (1 on the first step, 0.75 after).
    momentum: f32,
    epsilon: f32,
    // apgd_track: k·ρ, the most loss increases in the last k steps that still halve the step.
    threshold: f32,
    // apgd_track at the random start: 2ε.
    initial_step: f32,
}

// Per-sample state, STATE floats each.
const LOSS_BEST: u32 = 0u;
const LOSS_PREVIOUS: u32 = 1u;
const STEP: u32 = 2u;
const INCREASES: u32 = 3u;
const BEST_AT_CHECK: u32 = 4u;
const REDUCED_AT_CHECK: u32 = 5u;
const CLEAN_CORRECT: u32 = 6u;
const FOOLED: u32 = 7u;
// This pass's flags, read by apgd_commit and apgd_step.
const ADVERSARIAL_NOW: u32 = 8u;
const IMPROVED: u32 = 9u;
const RESET: u32 = 10u;
const STATE: u32 = 12u;

// Per-element points, POINTS floats each.
const X_OLD: u32 = 0u;
const X_BEST: u32 = 1u;
const X_ADVERSARIAL: u32 = 2u;
const GRAD_BEST: u32 = 3u;
const X_CURRENT: u32 = 4u;
const POINTS: u32 = 5u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in_a: array<f32>;
@group(0) @binding(2) var<storage, read> in_b: array<f32>;
@group(0) @binding(3) var<storage, read> in_c: array<f32>;
@group(0) @binding(4) var<storage, read> in_d: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// Where element i's sample state starts.
fn state_of(i: u32) -> u32 {
    return (i / p.per_sample) * STATE;
}

// in_a = logits [samples × classes], in_b = labels (as f32); out = the sample state.
@compute @workgroup_size(256)
fn apgd_track(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let s = flat_index(lid, wid, groups);
    if (s >= p.samples) {
        return;
    }
    let row = s * p.classes;
    let label = u32(in_b[s]);
    // The first maximum, as torch's max(1); the cross-entropy with the row maximum subtracted.
    var best = 0u;
    var top = in_a[row];
    for (var c = 1u; c < p.classes; c++) {
        if (in_a[row + c] > top) {
            top = in_a[row + c];
            best = c;
        }
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        sum += exp(in_a[row + c] - top);
    }
    let loss = log(sum) + top - in_a[row + label];
    let correct = best == label;
    let base = s * STATE;
    if (p.phase == 0u) {
        out[base + CLEAN_CORRECT] = select(0.0, 1.0, correct);
        return;
    }
    if (p.phase == 1u) {
        out[base + LOSS_BEST] = loss;
        out[base + LOSS_PREVIOUS] = 0.0;
        out[base + STEP] = p.initial_step;
        out[base + INCREASES] = 0.0;
        out[base + BEST_AT_CHECK] = loss;
        out[base + REDUCED_AT_CHECK] = 1.0;
        out[base + FOOLED] = select(1.0, 0.0, correct);
        // The start is both the best and the adversarial point so far.
        out[base + ADVERSARIAL_NOW] = 1.0;
        out[base + IMPROVED] = 1.0;
        out[base + RESET] = 0.0;
        return;
    }
    if (!correct) {
        out[base + FOOLED] = 1.0;
    }
    out[base + ADVERSARIAL_NOW] = select(1.0, 0.0, correct);
    let improved = loss > out[base + LOSS_BEST];
    out[base + IMPROVED] = select(0.0, 1.0, improved);
    if (improved) {
        out[base + LOSS_BEST] = loss;
    }
    var previous = out[base + LOSS_PREVIOUS];
    if (p.first == 1u) {
        previous = 0.0;
    } else if (p.first == 2u) {
        previous = loss;
    }
    var increases = out[base + INCREASES];
    if (loss > previous) {
        increases += 1.0;
    }
    out[base + LOSS_PREVIOUS] = loss;
    var reset = false;
    if (p.checkpoint == 1u) {
        let loss_best = out[base + LOSS_BEST];
        let oscillating = increases <= p.threshold;
        let stalled = out[base + REDUCED_AT_CHECK] == 0.0 && out[base + BEST_AT_CHECK] >= loss_best;
        reset = oscillating || stalled;
        out[base + REDUCED_AT_CHECK] = select(0.0, 1.0, reset);
        out[base + BEST_AT_CHECK] = loss_best;
        if (reset) {
            out[base + STEP] = out[base + STEP] * 0.5;
        }
        increases = 0.0;
    }
    out[base + INCREASES] = increases;
    out[base + RESET] = select(0.0, 1.0, reset);
}

// in_a = the gradient at the current point, in_b = the sample state; out = the points.
@compute @workgroup_size(256)
fn apgd_commit(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let s = state_of(i);
    let base = i * POINTS;
    let current = out[base + X_CURRENT];
    if (in_b[s + ADVERSARIAL_NOW] == 1.0) {
        out[base + X_ADVERSARIAL] = current;
    }
    if (in_b[s + IMPROVED] == 1.0) {
        out[base + X_BEST] = current;
        out[base + GRAD_BEST] = in_a[i];
    }
}

fn project(v: f32, origin: f32) -> f32 {
    return clamp(v, max(origin - p.epsilon, 0.0), min(origin + p.epsilon, 1.0));
}

// in_a = the gradient at the current point, in_b = the sample state, in_c = the clean input
// (normalised), in_d = mean[0..C] then std[0..C]; out = the points. After a step-size
// reduction the step starts from the best point and its gradient.
@compute @workgroup_size(256)
fn apgd_step(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let s = state_of(i);
    let base = i * POINTS;
    let c = (i / p.hw) % p.channels;
    let origin = in_c[i] * in_d[p.channels + c] + in_d[c];
    let reset = in_b[s + RESET] == 1.0;
    let current = select(out[base + X_CURRENT], out[base + X_BEST], reset);
    let gradient = select(in_a[i], out[base + GRAD_BEST], reset);
    let momentum = current - out[base + X_OLD];
    out[base + X_OLD] = current;
    let z = project(current + in_b[s + STEP] * sign(gradient), origin);
    out[base + X_CURRENT] = project(current + (z - current) * p.momentum + momentum * (1.0 - p.momentum), origin);
}

// in_a = the points, in_b = the sample state, in_c = the clean input (normalised), in_d = mean
// then std; out = the network's input. The result is the last adversarial point of a sample
// the attack fooled (and that was correct when clean), else the clean input, as
// AutoAttack's `perturb` returns.
@compute @workgroup_size(256)
fn apgd_emit(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(lid, wid, groups);
    if (i >= p.total) {
        return;
    }
    let c = (i / p.hw) % p.channels;
    let base = i * POINTS;
    if (p.phase == 0u) {
        out[i] = (in_a[base + X_CURRENT] - in_d[c]) / in_d[p.channels + c];
        return;
    }
    let s = state_of(i);
    if (in_b[s + CLEAN_CORRECT] == 1.0 && in_b[s + FOOLED] == 1.0) {
        out[i] = (in_a[base + X_ADVERSARIAL] - in_d[c]) / in_d[p.channels + c];
    } else {
        out[i] = in_c[i];
    }
}
