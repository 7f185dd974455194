// Direct variant of the conv GEMM (see conv_common.wgsl): no workgroup memory and no barriers.
// Each invocation accumulates ROWS GEMM rows (pixels, LANES apart) × 4·VECS columns (channels) in
// vec4 registers; a workgroup of LANES invocations covers LANES·ROWS rows × 4·VECS columns.
// Weights are read at uniform addresses (one load serves every invocation), the activations
// through one gather per row and K step. The K loop runs tap by tap, so a row's bounds check
// is made once per tap, not per element.
//
// The data gradient with stride s > 1 is split into s² phases (iy mod s, ix mod s), one per
// workgroup z: within a phase a tap either always or never lands on an output pixel, so no
// invocation multiplies the structural zeros of the transposed convolution. With split K,
// workgroup z is phase · splits + split (see `split_range`).

override LANES: u32 = 8u;
override ROWS: u32 = 6u;
override VECS: u32 = 4u;

// Private-array bounds (the engine's variants stay within them).
const MAX_ROWS: u32 = 16u;
const MAX_ACC: u32 = 64u;

@compute @workgroup_size(LANES, 1, 1)
fn direct(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n0 = wid.x * 4u * VECS;
    let split = wid.z % split_count();
    let range = split_range(split);
    // The grid of GEMM rows: output pixels forward; backward, the input pixels of this phase.
    var step = 1u;
    var py = 0u;
    var px = 0u;
    var grid_h = p.out_h;
    var grid_w = p.out_w;
    var src_h = p.in_h;
    var src_w = p.in_w;
    var channels = p.in_c;
    if (BACKWARD) {
        step = p.stride;
        let phase = wid.z / split_count();
        py = phase / step;
        px = phase % step;
        grid_h = (p.in_h + step - 1u - py) / step;
        grid_w = (p.in_w + step - 1u - px) / step;
        src_h = p.out_h;
        src_w = p.out_w;
        channels = p.out_c;
    }
    let rows_total = p.batch * grid_h * grid_w;

    var acc: array<vec4<REAL>, MAX_ACC>;
    for (var i = 0u; i < ROWS * VECS; i++) {
        acc[i] = vec4<REAL>(0.0);
    }
    // (sample, y, x) of each row in the full pixel grid, and whether it exists.
    var pos: array<vec3<u32>, MAX_ROWS>;
    var valid: array<bool, MAX_ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        let m = (wid.y * ROWS + r) * LANES + lid.x;
        valid[r] = m < rows_total;
        let mm = min(m, max(rows_total, 1u) - 1u);
        let b = mm / (grid_h * grid_w);
        let rest = mm - b * grid_h * grid_w;
        let i = rest / grid_w;
        pos[r] = vec3<u32>(b, py + step * i, px + step * (rest - i * grid_w));
    }

    var base: array<i32, MAX_ROWS>;
    for (var ky = 0u; ky < p.kernel; ky++) {
        for (var kx = 0u; kx < p.kernel; kx++) {
            // Backward: this phase's rows reach an output pixel through tap (ky, kx) only if
            // iy + p − ky ≡ 0 (mod s) — the same for every row of the phase.
            if (BACKWARD && ((py + p.pad + step * p.kernel - ky) % step != 0u || (px + p.pad + step * p.kernel - kx) % step != 0u)) {
                continue;
            }
            // This split's channels of the tap: K index k0 + c for c in [c_begin, c_end).
            let k0 = (ky * p.kernel + kx) * channels;
            let c_begin = clamp(range.x, k0, k0 + channels) - k0;
            let c_end = clamp(range.y, k0, k0 + channels) - k0;
            if (c_begin >= c_end) {
                continue;
            }
            for (var r = 0u; r < ROWS; r++) {
                var sy: i32;
                var sx: i32;
                if (BACKWARD) {
                    sy = (i32(pos[r].y + p.pad) - i32(ky)) / i32(step);
                    sx = (i32(pos[r].z + p.pad) - i32(kx)) / i32(step);
                    if (pos[r].y + p.pad < ky || pos[r].z + p.pad < kx) {
                        sy = -1;
                    }
                } else {
                    sy = i32(pos[r].y * p.stride + ky) - i32(p.pad);
                    sx = i32(pos[r].z * p.stride + kx) - i32(p.pad);
                }
                base[r] = -1;
                if (valid[r] && sy >= 0 && sx >= 0 && sy < i32(src_h) && sx < i32(src_w)) {
                    base[r] = i32(((pos[r].x * src_h + u32(sy)) * src_w + u32(sx)) * channels);
                }
            }
            for (var c = c_begin; c < c_end; c++) {
                var a: array<REAL, MAX_ROWS>;
                for (var r = 0u; r < ROWS; r++) {
                    a[r] = select(REAL(0.0), REAL(src[u32(max(base[r], 0)) + c]), base[r] >= 0);
                }
                // Unconditional loads: a branch here stops the compiler unrolling the loops over
                // rows and columns (measured 4x slower on lavapipe). Columns past N read the
                // next row's weights (the last row's, the zeros the engine appends to every
                // weight buffer: `CONV_WEIGHT_TAIL`) and are never stored.
                let row = (k0 + c) * p.n_total + n0;
                for (var v = 0u; v < VECS; v++) {
                    let i = row + 4u * v;
                    let w = vec4<REAL>(REAL(weights[i]), REAL(weights[i + 1u]), REAL(weights[i + 2u]), REAL(weights[i + 3u]));
                    for (var r = 0u; r < ROWS; r++) {
                        acc[r * VECS + v] = fma(vec4<REAL>(a[r]), w, acc[r * VECS + v]);
                    }
                }
            }
        }
    }

    for (var r = 0u; r < ROWS; r++) {
        if (!valid[r]) {
            continue;
        }
        var m = (wid.y * ROWS + r) * LANES + lid.x;
        if (BACKWARD) {
            m = (pos[r].x * p.in_h + pos[r].y) * p.in_w + pos[r].z;
        }
        for (var v = 0u; v < VECS; v++) {
            store_result(split, m, n0 + 4u * v, vec4<f32>(acc[r * VECS + v]));
        }
    }
}
