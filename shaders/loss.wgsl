// loss: cross-entropy (CE) and gradient-boosting cross-entropy (GCE, Sun et al. AAAI 2020)
// on scores s (N, C) with labels y (N) u32, plus top-1 / top-5 correctness. See the
// project's METHOD.md ("Gradient-boosting cross-entropy") and src/method/loss.rs; the CPU
// twin (double precision) is src/reference/loss.rs.
//
// Bindings: 0 uniform Params, 1 scores (read), 2 labels (read u32), 3 per_image
// (read_write, (N, 4)), 4 dscores (read_write, (N, C); loss_forward_backward only).
// Entry points: loss_forward_backward (per-image stats + gradient), loss_eval (stats only).
// The batch sum of per_image into the 4 stats runs afterwards on head.wgsl's column_sum.
//
// Dispatch: one workgroup of 256 threads per image (workgroups spread over x and y;
// image = wg.y * nwg.x + wg.x). Thread t owns classes t, t + 256, ...
//
// Per image with label y and k' = p.kp (the launcher clamps k' = min(k, C - 1)):
//   order on classes j != y: j before i iff s_j > s_i, or s_j == s_i and j < i (lower
//     index wins ties); rank(j) = number of classes before j.
//   J' = { j != y : rank(j) < k' } (GCE); J' = all j != y when p.all != 0 (CE, or k' = C-1).
//   The set is found without sorting: the thread owning the class of rank k' - 1 publishes
//   it as (thr_v, thr_i); j is in J' iff it comes before or equals that class in the order.
//   m = max over S = {y} U J' of s;  e_j = exp(s_j - m);  Zn = sum_{j in J'} e_j;
//   Z = e_y + Zn;  loss = log(Z) - (s_y - m)
//   dL/ds_y = -(Zn / Z) / N;  dL/ds_j = (e_j / Z) / N on J';  exactly 0 elsewhere.
//   (1 - p'_y is computed as Zn / Z, which keeps its precision when p'_y is close to 1.)
//   rank_y = #{i : s_i > s_y, or s_i == s_y and i < y};  top1 = rank_y < 1;
//   top5 = rank_y < min(5, C).
// per_image[b] = (loss, top1, top5, non_finite). An image whose label is out of range, whose
// scores hold a NaN or infinity, or whose loss comes out non-finite is skipped: per_image =
// (0, 0, 0, 1) and a zero gradient row, so the batch sums stay finite and the trainer sees
// the count.
// Every sum and max over classes uses a fixed order and a fixed binary tree: deterministic.

struct Params {
    n: u32,
    c: u32,
    kp: u32,
    all: u32,
    top5: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> per_image: array<f32>;
@group(0) @binding(4) var<storage, read_write> dscores: array<f32>;

const NONE: u32 = 0xffffffffu;

var<workgroup> redf: array<f32, 256>;
var<workgroup> redu: array<vec2<u32>, 256>;
var<workgroup> thr_v: f32;
var<workgroup> thr_i: u32;

fn reduce_max(lid: u32, v: f32) -> f32 {
    redf[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            redf[lid] = max(redf[lid], redf[lid + s]);
        }
        workgroupBarrier();
    }
    let r = redf[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    redf[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            redf[lid] += redf[lid + s];
        }
        workgroupBarrier();
    }
    let r = redf[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum_u(lid: u32, v: vec2<u32>) -> vec2<u32> {
    redu[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            redu[lid] += redu[lid + s];
        }
        workgroupBarrier();
    }
    let r = redu[0];
    workgroupBarrier();
    return r;
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Class j (score sj) belongs to S = {y} U J'. Reads thr_v / thr_i: call after they are set.
fn in_set(j: u32, y: u32, sj: f32) -> bool {
    if (j == y || p.all != 0u) {
        return true;
    }
    return thr_i != NONE && (sj > thr_v || (sj == thr_v && j <= thr_i));
}

struct Image {
    row: u32,
    y: u32,
    skip: bool,
    m: f32,
    zn: f32,
    z: f32,
}

// Everything but the gradient; writes per_image[b]. Called from uniform control flow.
fn image(b: u32, lid: u32) -> Image {
    let row = b * p.c;
    let label = labels[b];
    let bad = label >= p.c;
    let y = select(label, 0u, bad);
    let sy = scores[row + y];
    let nt = (p.c + 255u) / 256u;
    if (lid == 0u) {
        thr_v = 0.0;
        thr_i = NONE;
    }
    workgroupBarrier();

    // Rank of y (accuracy), non-finite scores and, for GCE, the class of rank k' - 1
    // among j != y.
    var ry = 0u;
    var nf = 0u;
    for (var t = 0u; t < nt; t++) {
        let j = t * 256u + lid;
        if (j >= p.c) {
            break;
        }
        let sj = scores[row + j];
        if (sj > sy || (sj == sy && j < y)) {
            ry += 1u;
        }
        if (!is_finite(sj)) {
            nf += 1u;
        }
        if (p.all == 0u && j != y && p.kp > 0u) {
            var rank = 0u;
            for (var i = 0u; i < p.c; i++) {
                let si = scores[row + i];
                if (i != y && (si > sj || (si == sj && i < j))) {
                    rank += 1u;
                    if (rank >= p.kp) {
                        break;
                    }
                }
            }
            if (rank + 1u == p.kp) {
                thr_v = sj;
                thr_i = j;
            }
        }
    }
    let counts = reduce_sum_u(lid, vec2<u32>(ry, nf)); // its barriers also publish thr_v / thr_i
    let rank_y = counts.x;

    var mx = sy;
    for (var t = 0u; t < nt; t++) {
        let j = t * 256u + lid;
        if (j >= p.c) {
            break;
        }
        let sj = scores[row + j];
        if (in_set(j, y, sj)) {
            mx = max(mx, sj);
        }
    }
    let m = reduce_max(lid, mx);

    var zn = 0.0;
    for (var t = 0u; t < nt; t++) {
        let j = t * 256u + lid;
        if (j >= p.c) {
            break;
        }
        let sj = scores[row + j];
        if (j != y && in_set(j, y, sj)) {
            zn += exp(sj - m);
        }
    }
    let zneg = reduce_sum(lid, zn);
    let z = exp(sy - m) + zneg;
    let loss = log(z) - (sy - m);
    let skip = bad || counts.y != 0u || !is_finite(loss);

    if (lid == 0u) {
        var out = vec4<f32>(0.0, 0.0, 0.0, 1.0);
        if (!skip) {
            out = vec4<f32>(loss, select(0.0, 1.0, rank_y < 1u), select(0.0, 1.0, rank_y < p.top5), 0.0);
        }
        per_image[b * 4u] = out.x;
        per_image[b * 4u + 1u] = out.y;
        per_image[b * 4u + 2u] = out.z;
        per_image[b * 4u + 3u] = out.w;
    }
    return Image(row, y, skip, m, zneg, z);
}

@compute @workgroup_size(256, 1, 1)
fn loss_forward_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = wg.y * nwg.x + wg.x;
    if (b >= p.n) {
        return;
    }
    let im = image(b, lid);
    let n = f32(p.n);
    let nt = (p.c + 255u) / 256u;
    for (var t = 0u; t < nt; t++) {
        let j = t * 256u + lid;
        if (j >= p.c) {
            break;
        }
        let sj = scores[im.row + j];
        var g = 0.0;
        if (!im.skip) {
            if (j == im.y) {
                g = -(im.zn / im.z);
            } else if (in_set(j, im.y, sj)) {
                g = exp(sj - im.m) / im.z;
            }
        }
        dscores[im.row + j] = g / n;
    }
}

@compute @workgroup_size(256, 1, 1)
fn loss_eval(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = wg.y * nwg.x + wg.x;
    if (b >= p.n) {
        return;
    }
    _ = image(b, lid);
}
