// Squared Euclidean distances between every query row and every reference row (KNN, KDE):
// out[q][r] = Σ_k (queries[q][k] − refs[r][k])². A 16×16 workgroup computes a 16×16 tile of the
// output, staging 16-wide slices of both row blocks in workgroup memory; differences are
// squared directly (no ‖q‖² + ‖r‖² − 2q·r cancellation for near neighbours).

struct Params {
    queries: u32,
    refs: u32,
    dim: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> refs: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const TILE: u32 = 16u;
var<workgroup> tq: array<array<f32, 16>, 16>;
var<workgroup> tr: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn distances(@builtin(local_invocation_id) l: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
    let q = w.y * TILE + l.y;
    let r = w.x * TILE + l.x;
    // Row of the reference block this invocation stages.
    let staged_r = w.x * TILE + l.y;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.dim; k0 += TILE) {
        let k = k0 + l.x;
        var a = 0.0;
        if (q < p.queries && k < p.dim) {
            a = queries[q * p.dim + k];
        }
        var b = 0.0;
        if (staged_r < p.refs && k < p.dim) {
            b = refs[staged_r * p.dim + k];
        }
        tq[l.y][l.x] = a;
        tr[l.y][l.x] = b;
        workgroupBarrier();
        for (var j = 0u; j < TILE; j++) {
            let d = tq[l.y][j] - tr[l.x][j];
            acc += d * d;
        }
        workgroupBarrier();
    }
    if (q < p.queries && r < p.refs) {
        out[q * p.refs + r] = acc;
    }
}
