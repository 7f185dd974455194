// Tiled variant of the conv GEMM (see conv_common.wgsl): 64 (m) × 64 (n) outputs per workgroup,
// K in steps of 32 through workgroup memory, 16×16 threads with 4×4 outputs each; workgroup z is
// the split of K (see `split_range`).

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;
// Elements of A (BM·BK) and of B (BK·BN) each thread stages per K step.
const LOADS: u32 = 8u;
const THREADS: u32 = 256u;

var<workgroup> tile_a: array<REAL, 2048>; // [BK][BM]
var<workgroup> tile_b: array<REAL, 2048>; // [BK][BN]

// The A tile is gathered without integer division in the K loop (division is slow on many
// GPUs and scalarised on CPU rasterisers): each thread owns 4 fixed rows, decomposed once, and a
// fixed K lane whose (tap, channel) position is advanced incrementally by BK per step.

// Row m as (sample, y, x) in the GEMM's pixel grid: output pixels forward, input pixels backward.
fn row_position(m: u32) -> vec3<u32> {
    var h = p.out_h;
    var w = p.out_w;
    if (BACKWARD) {
        h = p.in_h;
        w = p.in_w;
    }
    let b = m / (h * w);
    let r = m - b * h * w;
    let y = r / w;
    return vec3<u32>(b, y, r - y * w);
}

// Forward: in[b, y·s + ky − p, x·s + kx − p, ci]; `pos` = (b, y, x) of an output pixel.
fn gather_forward(pos: vec3<u32>, ky: u32, kx: u32, ci: u32) -> f32 {
    let iy = i32(pos.y * p.stride + ky) - i32(p.pad);
    let ix = i32(pos.z * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.in_h) || ix >= i32(p.in_w)) {
        return 0.0;
    }
    return src[((pos.x * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + ci];
}

// Maps an input coordinate and tap to the output coordinate that reads it, or −1.
fn source_coord(i: u32, k: u32, extent: u32) -> i32 {
    let n = i32(i + p.pad) - i32(k);
    if (n < 0) {
        return -1;
    }
    var o = u32(n);
    if (p.stride == 2u) {
        if ((o & 1u) != 0u) {
            return -1;
        }
        o = o >> 1u;
    } else if (p.stride != 1u) {
        if (o % p.stride != 0u) {
            return -1;
        }
        o = o / p.stride;
    }
    if (o >= extent) {
        return -1;
    }
    return i32(o);
}

// Backward: dout[b, oy, ox, co] with oy·s = y + p − ky; `pos` = (b, y, x) of an input pixel.
fn gather_backward(pos: vec3<u32>, ky: u32, kx: u32, co: u32) -> f32 {
    let oy = source_coord(pos.y, ky, p.out_h);
    let ox = source_coord(pos.z, kx, p.out_w);
    if (oy < 0 || ox < 0) {
        return 0.0;
    }
    return src[((pos.x * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c + co];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let split = wid.z;
    let range = split_range(split);
    // Four output rows × four columns in vec4 registers (no dynamically indexed private
    // arrays: those spill to memory on several compilers).
    var acc0 = vec4<REAL>(0.0);
    var acc1 = vec4<REAL>(0.0);
    var acc2 = vec4<REAL>(0.0);
    var acc3 = vec4<REAL>(0.0);

    // This thread stages A rows mm = tid / BK + (THREADS / BK)·i at K lane kk = tid % BK, and
    // B columns nn = tid % BN at K rows kb = tid / BN + (THREADS / BN)·i.
    let lane = tid % BK;
    var rows: array<vec3<u32>, LOADS>;
    var row_valid: array<bool, LOADS>;
    for (var i = 0u; i < LOADS; i++) {
        let m = m0 + tid / BK + (THREADS / BK) * i;
        row_valid[i] = m < p.m_total;
        rows[i] = row_position(min(m, p.m_total - 1u));
    }
    // (channel, kx, ky) of K index `lane`; K is (ky, kx, channel) with the channel fastest.
    var channels = p.in_c;
    if (BACKWARD) {
        channels = p.out_c;
    }
    let first = range.x + lane;
    var ch = first % channels;
    var kx = (first / channels) % p.kernel;
    var ky = first / (channels * p.kernel);

    for (var k0 = range.x; k0 < range.y; k0 += BK) {
        let k = k0 + lane;
        for (var i = 0u; i < LOADS; i++) {
            var a = 0.0;
            if (row_valid[i] && k < range.y) {
                if (BACKWARD) {
                    a = gather_backward(rows[i], ky, kx, ch);
                } else {
                    a = gather_forward(rows[i], ky, kx, ch);
                }
            }
            tile_a[lane * BM + tid / BK + (THREADS / BK) * i] = REAL(a);

            let e = tid + THREADS * i;
            let nn = e % BN;
            let kb = e / BN;
            let n = n0 + nn;
            let kw = k0 + kb;
            var w = REAL(0.0);
            if (n < p.n_total && kw < range.y) {
                w = REAL(weights[kw * p.n_total + n]);
            }
            tile_b[kb * BN + nn] = w;
        }
        // Advance this lane's K position by BK without dividing.
        ch += BK;
        while (ch >= channels) {
            ch -= channels;
            kx += 1u;
            if (kx == p.kernel) {
                kx = 0u;
                ky += 1u;
            }
        }
        workgroupBarrier();

        for (var kk = 0u; kk < BK; kk++) {
            let ia = kk * BM + lid.y * 4u;
            let ib = kk * BN + lid.x * 4u;
            let a = vec4<REAL>(tile_a[ia], tile_a[ia + 1u], tile_a[ia + 2u], tile_a[ia + 3u]);
            let b = vec4<REAL>(tile_b[ib], tile_b[ib + 1u], tile_b[ib + 2u], tile_b[ib + 3u]);
            acc0 = fma(vec4<REAL>(a.x), b, acc0);
            acc1 = fma(vec4<REAL>(a.y), b, acc1);
            acc2 = fma(vec4<REAL>(a.z), b, acc2);
            acc3 = fma(vec4<REAL>(a.w), b, acc3);
        }
        workgroupBarrier();
    }

    let m = m0 + lid.y * 4u;
    let n = n0 + lid.x * 4u;
    store_result(split, m, n, vec4<f32>(acc0));
    store_result(split, m + 1u, n, vec4<f32>(acc1));
    store_result(split, m + 2u, n, vec4<f32>(acc2));
    store_result(split, m + 3u, n, vec4<f32>(acc3));
}
