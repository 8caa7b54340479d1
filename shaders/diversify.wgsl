// diversify: the diversification block (DB) of Sun et al. (AAAI 2020) and plain global
// average pooling, on class maps M (N, H, W, C) NHWC. See the project's METHOD.md
// ("Diversification block") and src/method/diversify.rs; the CPU twin (double precision) is
// src/reference/diversify.rs.
//
// Bindings (one layout for the whole file; each entry point uses a prefix of it):
//   0 uniform Params, 1 src (read f32), 2 dst (read_write f32), 3 mask (read_write u32,
//   1 = suppressed), 4 step (read u32: [step_lo, step_hi]).
//   diversify_forward:       src = maps (N,H,W,C), dst = scores (N,C), mask written, step
//   average_scores:          src = maps,           dst = scores (N,C)
//   diversify_backward:      src = dscores (N,C),  dst = dmaps (N,H,W,C), mask read
//   average_scores_backward: src = dscores (N,C),  dst = dmaps (N,H,W,C)
//
// Training forward, per image b and class c (the map M_c = M[b, :, :, c], strided by C):
//   peak(x,y)  = M_c(x,y) == max M_c           (every tied maximum)
//   r_peak     = bernoulli(draw(b, c, 0, 0), p_peak)
//   r_patch(q) = bernoulli(draw(b, c, q, 1), p_patch) for patch q = (y / G) * ceil(W / G) + x / G
//                (G x G patches from (0,0); the ragged last row/column are patches too)
//   B(x,y)     = peak ? r_peak : r_patch(patch of (x,y))
//   s_c        = sum over (x,y) of (B ? alpha * M_c : M_c) / (H * W)
// Backward: dM_c(x,y) = ds_c * (B ? alpha : 1) / (H * W).
//
// Random draws: draw(b, c, q, kind) chains the integer hash lowbias32 over
// (seed ^ 0x9e3779b9, step_lo, step_hi, b, c, q, kind) with u32 wrapping arithmetic;
// bernoulli(h, prob) = f32(h >> 8) * 2^-24 < prob (24-bit uniform in [0,1), exact in f32).
// src/reference/diversify.rs implements the same hash bit for bit.
//
// Dispatch (forward, average_scores): (ceil(C / 32), N) workgroups of 32 x 8 threads:
// lid.x = class within a block of 32 consecutive classes (consecutive addresses in NHWC),
// lid.y = one of 8 spatial lanes; lane l visits positions l, l + 8, ... in order; the max and
// the sum over the 8 lanes use a fixed binary tree in workgroup memory (deterministic).
// Backward kernels: one thread per map element, 256 per workgroup, grid over x and y.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    grid: u32,
    patches_x: u32,
    seed: u32,
    _pad: u32,
    p_peak: f32,
    p_patch: f32,
    alpha: f32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read_write> mask: array<u32>;
@group(0) @binding(4) var<storage, read> step: array<u32>;

const CB: u32 = 32u; // classes per workgroup
const SL: u32 = 8u;  // spatial lanes per class

var<workgroup> red: array<f32, 256>; // [SL][CB]

fn lowbias32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn draw(b: u32, c: u32, q: u32, kind: u32) -> u32 {
    var h = lowbias32(p.seed ^ 0x9e3779b9u);
    h = lowbias32(h ^ step[0]);
    h = lowbias32(h ^ step[1]);
    h = lowbias32(h ^ b);
    h = lowbias32(h ^ c);
    h = lowbias32(h ^ q);
    h = lowbias32(h ^ kind);
    return h;
}

fn bernoulli(h: u32, prob: f32) -> bool {
    return f32(h >> 8u) * (1.0 / 16777216.0) < prob;
}

// Combine the SL lanes of every class column of `red` (max when take_max, else sum) and
// return lane 0's value for column lid.x. Must be called from uniform control flow.
fn combine_lanes(lid: vec3<u32>, v: f32, take_max: bool) -> f32 {
    red[lid.y * CB + lid.x] = v;
    workgroupBarrier();
    for (var s = SL / 2u; s > 0u; s >>= 1u) {
        if (lid.y < s) {
            let a = red[lid.y * CB + lid.x];
            let o = red[(lid.y + s) * CB + lid.x];
            red[lid.y * CB + lid.x] = select(a + o, max(a, o), take_max);
        }
        workgroupBarrier();
    }
    let r = red[lid.x];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(32, 8, 1)
fn diversify_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wg.y;
    let c = wg.x * CB + lid.x;
    let live = c < p.c;
    let cc = min(c, p.c - 1u); // idle threads read a valid class and write nothing
    let hw = p.h * p.w;
    let base = b * hw * p.c + cc;

    // Pass 1: the maximum of M_c (lanes without a position start from position 0).
    var m = src[base + min(lid.y, hw - 1u) * p.c];
    for (var s = lid.y; s < hw; s += SL) {
        m = max(m, src[base + s * p.c]);
    }
    let peak = combine_lanes(lid, m, true);

    // Pass 2: masks, suppression, sum.
    let r_peak = bernoulli(draw(b, cc, 0u, 0u), p.p_peak);
    var acc = 0.0;
    for (var s = lid.y; s < hw; s += SL) {
        let idx = base + s * p.c;
        let v = src[idx];
        var sup = r_peak;
        if (v != peak) {
            let y = s / p.w;
            let x = s - y * p.w;
            let q = (y / p.grid) * p.patches_x + x / p.grid;
            sup = bernoulli(draw(b, cc, q, 1u), p.p_patch);
        }
        if (live) {
            mask[idx] = select(0u, 1u, sup);
        }
        acc += select(v, p.alpha * v, sup);
    }
    let total = combine_lanes(lid, acc, false);
    if (live && lid.y == 0u) {
        dst[b * p.c + c] = total / f32(hw);
    }
}

@compute @workgroup_size(32, 8, 1)
fn average_scores(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let b = wg.y;
    let c = wg.x * CB + lid.x;
    let live = c < p.c;
    let cc = min(c, p.c - 1u);
    let hw = p.h * p.w;
    let base = b * hw * p.c + cc;
    var acc = 0.0;
    for (var s = lid.y; s < hw; s += SL) {
        acc += src[base + s * p.c];
    }
    let total = combine_lanes(lid, acc, false);
    if (live && lid.y == 0u) {
        dst[b * p.c + c] = total / f32(hw);
    }
}

@compute @workgroup_size(256, 1, 1)
fn diversify_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    let hw = p.h * p.w;
    if (i >= p.n * hw * p.c) {
        return;
    }
    let c = i % p.c;
    let b = i / (hw * p.c);
    let f = select(1.0, p.alpha, mask[i] != 0u);
    dst[i] = src[b * p.c + c] * f / f32(hw);
}

@compute @workgroup_size(256, 1, 1)
fn average_scores_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    let hw = p.h * p.w;
    if (i >= p.n * hw * p.c) {
        return;
    }
    let c = i % p.c;
    let b = i / (hw * p.c);
    dst[i] = src[b * p.c + c] / f32(hw);
}
