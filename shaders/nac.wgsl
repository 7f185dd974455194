// NAC on the GPU: per (sample, neuron) the spatial sums Σz and Σg (`pairs`, a parallel
// reduction over positions), then from those pairs the state s = sigmoid(α·Σz·Σg), its bin, and
// either a histogram update (profiling) or a coverage lookup reduced to a per-sample layer score
// (NAC-UE). z and g are NHWC activations of one layer (`hw` positions × `neurons` channels per
// sample). The binning kernels read pairs (Σz, Σg) interleaved per neuron: a chunk's own
// (CHUNK_PAIRS, indexed by the sample's place in the chunk) or a set-wide cache, so a
// parameter search re-bins without a network pass; or, with GIVEN_STATES, the states themselves
// (computed elsewhere). `layer_stats` reads z alone for the detectors that need more of a layer
// than Σz (channel means, Gram row sums).
//
// Bins: `edges` thresholds t_0 < … < t_{M−1} (f32, each the smallest f32 ≥ the official float64
// edge, so `t ≤ s` in f32 equals the float64 comparison); bin i is [t_i, t_{i+1}); a state below
// t_0 or at/above t_{M−1} is in no bin. Histograms are `count[bin][neuron]`, u32.

struct Params {
    batch: u32,          // samples in this chunk
    hw: u32,             // spatial positions per sample
    neurons: u32,        // channels of the layer
    edges: u32,          // M
    alpha: f32,
    o: f32,              // coverage threshold O (absolute count)
    flags: u32,
    block_neurons: u32,  // histogram: neurons per workgroup
    block_samples: u32,  // histogram: samples per workgroup
    sample_offset: u32,  // index of this chunk's first sample in the whole set
    total_samples: u32,  // samples in the whole set (row length of per-layer outputs)
    layer: u32,          // score: row of layer_scores; coverage: output index; combine: number of layers
    classes: u32,        // predict
    powers: u32,         // layer_stats: Gram powers 1..=powers
    _pad1: u32,
    _pad2: u32,
}

const CHUNK_PAIRS: u32 = 1u;    // pairs are indexed by chunk sample b, not set-wide sample_offset + b
const MASKED: u32 = 2u;         // histogram: count only samples whose prediction summary says correct
const GLOBAL_ATOMICS: u32 = 4u; // histogram: too many bins for workgroup memory
const HAS_LABELS: u32 = 8u;     // predict: compare with labels
const GIVEN_STATES: u32 = 16u;  // z holds the states s[sample][neuron]; g is unused
const NO_BIN: u32 = 0xffffffffu;
// Workgroup histogram slots: 16 KiB, the portable minimum of workgroup storage.
const LOCAL_SLOTS: u32 = 4096u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> thresholds: array<f32>;
// Histogram: the prediction summary (pred, max softmax, correct) per sample of the whole set.
@group(0) @binding(4) var<storage, read> summary: array<f32>;
// Score and coverage: the profile's counts.
@group(0) @binding(4) var<storage, read> counts_in: array<u32>;
@group(0) @binding(5) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> local_counts: array<atomic<u32>, LOCAL_SLOTS>;
var<workgroup> partial: array<f32, 256>;
var<workgroup> partial_g: array<f32, 256>;

// Index of the pair of neuron `n` of chunk sample `b` in a pairs buffer.
fn pair_index(b: u32, n: u32) -> u32 {
    var s = p.sample_offset + b;
    if ((p.flags & CHUNK_PAIRS) != 0u) {
        s = b;
    }
    return 2u * (s * p.neurons + n);
}

// The pooled pair (Σz, Σg) of neuron `n` of chunk sample `b`, from the pairs in z.
fn pooled(b: u32, n: u32) -> vec2<f32> {
    let i = pair_index(b, n);
    return vec2<f32>(z[i], z[i + 1u]);
}

fn state(v: vec2<f32>) -> f32 {
    // exp of a large argument may be undefined in WGSL; beyond ±80 the state is 0 or 1 in f32
    // anyway (as far as binning can tell: both lie in the first or last bin of any layout).
    let x = clamp(p.alpha * (v.x * v.y), -80.0, 80.0);
    return 1.0 / (1.0 + exp(-x));
}

fn neuron_state(b: u32, n: u32) -> f32 {
    if ((p.flags & GIVEN_STATES) != 0u) {
        return z[(p.sample_offset + b) * p.neurons + n];
    }
    return state(pooled(b, n));
}

// Index of the bin holding `s`, or NO_BIN.
fn bin_of(s: f32) -> u32 {
    var lo = 0u;
    var hi = p.edges;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (thresholds[mid] <= s) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    // lo = number of thresholds ≤ s.
    if (lo == 0u || lo >= p.edges) {
        return NO_BIN;
    }
    return lo - 1u;
}

// One workgroup per block of neurons × block of samples. Counts gather in workgroup memory and
// are flushed with one global atomicAdd per non-zero (bin, neuron), so a neuron whose samples
// crowd into one bin costs one global atomic per workgroup rather than one per sample.
@compute @workgroup_size(256)
fn histogram(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let bins = p.edges - 1u;
    let n0 = wid.x * p.block_neurons;
    let b0 = wid.y * p.block_samples;
    let nb = min(p.block_neurons, p.neurons - n0);
    let sb = min(p.block_samples, p.batch - b0);
    let local = (p.flags & GLOBAL_ATOMICS) == 0u;
    if (local) {
        for (var i = t; i < bins * nb; i += 256u) {
            atomicStore(&local_counts[i], 0u);
        }
    }
    workgroupBarrier();
    for (var i = t; i < nb * sb; i += 256u) {
        let dn = i % nb;
        let b = b0 + i / nb;
        if ((p.flags & MASKED) != 0u && summary[4u * (p.sample_offset + b) + 2u] == 0.0) {
            continue;
        }
        let bin = bin_of(neuron_state(b, n0 + dn));
        if (bin == NO_BIN) {
            continue;
        }
        if (local) {
            atomicAdd(&local_counts[bin * nb + dn], 1u);
        } else {
            atomicAdd(&counts[bin * p.neurons + n0 + dn], 1u);
        }
    }
    workgroupBarrier();
    if (local) {
        for (var i = t; i < bins * nb; i += 256u) {
            let c = atomicLoad(&local_counts[i]);
            if (c != 0u) {
                atomicAdd(&counts[(i / nb) * p.neurons + n0 + i % nb], c);
            }
        }
    }
}

// Sum of `partial[0..256]` into `partial[0]`; every invocation must call it.
fn reduce_partial(t: u32) {
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            partial[t] += partial[t + stride];
        }
        workgroupBarrier();
    }
}

// One workgroup per sample: layer score = mean over neurons of min(count[bin][n] / O, 1),
// written to out[layer][sample_offset + b].
@compute @workgroup_size(256)
fn score(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) groups: vec3<u32>) {
    let b = wid.y * groups.x + wid.x;
    var acc = 0.0;
    if (b < p.batch) {
        for (var n = t; n < p.neurons; n += 256u) {
            let bin = bin_of(neuron_state(b, n));
            if (bin != NO_BIN) {
                acc += min(f32(counts_in[bin * p.neurons + n]) / p.o, 1.0);
            }
        }
    }
    partial[t] = acc;
    reduce_partial(t);
    if (t == 0u && b < p.batch) {
        out[p.layer * p.total_samples + p.sample_offset + b] = partial[0] / f32(p.neurons);
    }
}

// One workgroup per layer: NAC-ME = mean over neurons of Σ_bins min(count / O, 1) / M, written
// to out[layer].
@compute @workgroup_size(256)
fn coverage(@builtin(local_invocation_index) t: u32) {
    let bins = p.edges - 1u;
    var acc = 0.0;
    for (var n = t; n < p.neurons; n += 256u) {
        var per_neuron = 0.0;
        for (var k = 0u; k < bins; k++) {
            per_neuron += min(f32(counts_in[k * p.neurons + n]) / p.o, 1.0);
        }
        acc += per_neuron / f32(p.edges);
    }
    partial[t] = acc;
    reduce_partial(t);
    if (t == 0u) {
        out[p.layer] = partial[0] / f32(p.neurons);
    }
}

fn flat_index(lid: u32, wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid;
}

// Pooled pairs of a chunk: out[pair_index(b, n) + {0, 1}] = (Σ_hw z, Σ_hw g). One workgroup per
// (sample, 32 neurons): 8 lanes of 32 threads, each thread reading neighbouring neurons of one
// position (NHWC: adjacent words) and summing every 8th position in order; the 8 lane sums are
// then added as a fixed tree (lanes 0+4, …, then 0+2, 1+3, then 0+1), so the result depends on
// hw alone, never on the batch or the chunk. (A subgroup reduction would add across neurons,
// the coalesced direction, not across positions.)
const POOL_NEURONS: u32 = 32u;
const POOL_LANES: u32 = 8u;

@compute @workgroup_size(256)
fn pairs(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) groups: vec3<u32>) {
    let blocks = (p.neurons + POOL_NEURONS - 1u) / POOL_NEURONS;
    let w = wid.y * groups.x + wid.x;
    let b = w / blocks;
    let n = (w % blocks) * POOL_NEURONS + t % POOL_NEURONS;
    let lane = t / POOL_NEURONS;
    let inside = b < p.batch && n < p.neurons;
    var sz = 0.0;
    var sg = 0.0;
    if (inside) {
        let step = POOL_LANES * p.neurons;
        var i = (b * p.hw + lane) * p.neurons + n;
        for (var k = lane; k < p.hw; k += POOL_LANES) {
            sz += z[i];
            sg += g[i];
            i += step;
        }
    }
    partial[t] = sz;
    partial_g[t] = sg;
    for (var width = POOL_LANES / 2u; width > 0u; width >>= 1u) {
        workgroupBarrier();
        if (lane < width) {
            partial[t] += partial[t + width * POOL_NEURONS];
            partial_g[t] += partial_g[t + width * POOL_NEURONS];
        }
    }
    if (inside && lane == 0u) {
        let o = pair_index(b, n);
        out[o] = partial[t];
        out[o + 1u] = partial_g[t];
    }
}

// Final score per sample: the mean of its `layer` (= number of layers) layer scores.
@compute @workgroup_size(256)
fn combine(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(t, wid, groups);
    if (i >= p.total_samples) {
        return;
    }
    var sum = 0.0;
    for (var l = 0u; l < p.layer; l++) {
        sum += z[l * p.total_samples + i];
    }
    out[i] = sum / f32(p.layer);
}

// Prediction summary per sample of a chunk, from its logits (z): predicted class (first maximum,
// as argmax does), maximum softmax probability, 1 if the prediction equals the label (g, class
// indices as f32) or if there are no labels, and the energy score logsumexp(logits) (higher =
// more in-distribution); four f32 at the sample's set-wide index.
@compute @workgroup_size(256)
fn predict(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let b = flat_index(t, wid, groups);
    if (b >= p.batch) {
        return;
    }
    let row = b * p.classes;
    var best = 0u;
    var top = z[row];
    for (var c = 1u; c < p.classes; c++) {
        if (z[row + c] > top) {
            top = z[row + c];
            best = c;
        }
    }
    var denominator = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        denominator += exp(z[row + c] - top);
    }
    let s = p.sample_offset + b;
    var correct = 1.0;
    if ((p.flags & HAS_LABELS) != 0u && u32(g[s]) != best) {
        correct = 0.0;
    }
    out[4u * s] = f32(best);
    out[4u * s + 1u] = 1.0 / denominator;
    out[4u * s + 2u] = correct;
    out[4u * s + 3u] = top + log(denominator);
}

// Layer statistics of a chunk into the set-wide buffer, per sample a row of (1 + powers)·C:
// the channel means Σ_hw z_c / hw, then for each power q = 1..powers the Gram row sums of
// F^q (F = the layer's C × hw map, taken elementwise to the q-th power) as OpenOOD's Gram
// forms them, sign(r)·|r|^(1/q) with r_c = Σ_c' (F^q F^qᵀ)_cc' = Σ_hw z_c^q · S_q(hw) and
// S_q(hw) = Σ_c' z_c'^q: no C × C matrix is formed. One workgroup per (sample, 256 channels);
// the position sums S_q of 256 positions at a time go through workgroup memory.
const MAX_POWERS: u32 = 10u;
const STAT_TILE: u32 = 256u;
var<workgroup> position_sums: array<f32, 2560>; // [power][position in tile]

@compute @workgroup_size(256)
fn layer_stats(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let blocks = (p.neurons + STAT_TILE - 1u) / STAT_TILE;
    let w = wid.y * groups.x + wid.x;
    let b = w / blocks;
    if (b >= p.batch) {
        return;
    }
    let c = (w % blocks) * STAT_TILE + t;
    let powers = min(p.powers, MAX_POWERS);
    let base = b * p.hw * p.neurons;
    var acc: array<f32, 10>;
    var sum = 0.0;
    for (var tile = 0u; tile < p.hw; tile += STAT_TILE) {
        let pos = tile + t;
        if (pos < p.hw) {
            var s: array<f32, 10>;
            for (var k = 0u; k < p.neurons; k++) {
                let v = z[base + pos * p.neurons + k];
                var vq = 1.0;
                for (var q = 0u; q < powers; q++) {
                    vq *= v;
                    s[q] += vq;
                }
            }
            for (var q = 0u; q < powers; q++) {
                position_sums[q * STAT_TILE + t] = s[q];
            }
        }
        workgroupBarrier();
        if (c < p.neurons) {
            let n = min(STAT_TILE, p.hw - tile);
            for (var i = 0u; i < n; i++) {
                let v = z[base + (tile + i) * p.neurons + c];
                sum += v;
                var vq = 1.0;
                for (var q = 0u; q < powers; q++) {
                    vq *= v;
                    acc[q] += vq * position_sums[q * STAT_TILE + i];
                }
            }
        }
        workgroupBarrier();
    }
    if (c < p.neurons) {
        let row = (p.sample_offset + b) * (1u + powers) * p.neurons;
        out[row + c] = sum / f32(p.hw);
        for (var q = 0u; q < powers; q++) {
            let r = acc[q];
            var root = r;
            if (q > 0u && r != 0.0) {
                root = sign(r) * pow(abs(r), 1.0 / f32(q + 1u));
            }
            out[row + (1u + q) * p.neurons + c] = root;
        }
    }
}
