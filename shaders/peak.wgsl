// FP32 peak of the adapter (`nac bench --peak`): eight independent vec4 FMA chains per
// invocation, so FMA throughput, not memory, bounds the time. Each iteration is
// 8 chains × 4 lanes × 2 FLOP = 64 FLOP per invocation.

struct Params {
    total: u32,      // invocations
    batch: u32,
    channels: u32,
    height: u32,
    width: u32,      // iterations per invocation
    flags: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn peak_fma(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i >= p.total) {
        return;
    }
    let s = f32(i & 1023u) * 1e-4;
    var a0 = vec4<f32>(s, s + 0.1, s + 0.2, s + 0.3);
    var a1 = a0 + 0.01;
    var a2 = a0 + 0.02;
    var a3 = a0 + 0.03;
    var a4 = a0 + 0.04;
    var a5 = a0 + 0.05;
    var a6 = a0 + 0.06;
    var a7 = a0 + 0.07;
    // |m| < 1 keeps every chain bounded whatever the iteration count.
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var k = 0u; k < p.width; k++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    let v = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    out[i] = v.x + v.y + v.z + v.w;
}
