// batchnorm: batch normalisation over the rows of a (rows, C) view of an NHWC tensor
// (rows = N * H * W), training and eval forward and the training backward. Activations
// (x, y, dy, dx) are stored as `ACT`, f32 or f16 (the alias is appended by
// src/kernels/mod.rs: `BATCHNORM` and `BATCHNORM_F16`); every statistic, parameter, partial
// and every sum is f32, and each activation is widened to f32 when it is read and rounded to
// ACT once when it is written.
//
// Bindings. Portable WGSL allows at most 8 storage buffers, and our portability test counts
// them per file, so the file declares eight slots and every entry point says what it binds
// where (binding 0 is always the uniform Params; the launchers pass binding numbers, so an
// entry may leave slots out): 1 `xa` read ACT, 2 `ya` read_write ACT, 3 `ga` read ACT,
// 4..8 `b4`..`b8` read_write f32.
// Entry point                           1      2        3      4        5       6        7      8
// batchnorm_forward_train_stats         x                      part
// batchnorm_forward_train_finalize                             part     mean    invstd   r_mean r_var
// batchnorm_normalize     x      y               gamma    beta    mean     invstd
// batchnorm_forward_eval                x      y               gamma    beta    r_mean   r_var
// batchnorm_backward_reduce             x               dy     part     mean    invstd
// batchnorm_backward_finalize                                  part     dbeta   dgamma
// batchnorm_backward_dx                 x      dx       dy     mean     invstd  gamma    part
// batchnorm_backward_dx_inplace         dy     x->dx           mean     invstd  gamma    part
// (`mean`, `invstd` are the saved batch statistics save_mean / save_invstd, C each.)
//
// Reductions (deterministic, no atomics). Rows are cut into `chunks` chunks of `chunk_rows`
// rows (the last may be shorter). The *_stats / *_reduce kernels run (ceil(C / 32), chunks)
// workgroups of 32 x 8 threads: thread (cx, ly) owns channel 32 * wg.x + cx and walks rows
// r0 + ly, r0 + ly + 8, ... of its chunk (32 consecutive threads read 32 consecutive channels
// of one row: coalesced), then the 8 row lanes are combined by a fixed tree in workgroup
// memory. Each chunk writes a partial into `part` (chunks, 2, C). The *_finalize kernels run
// ceil(C / 32) workgroups of 32 x 8 threads that combine the partials of one channel in a
// fixed order (lane ly takes chunks ly, ly + 8, ..., then the same tree).
//
// Statistics: each chunk computes its own mean (of x - x[r0], shifted by the chunk's first
// value so large means do not swamp the sum) and then M2 = sum (x - chunk_mean)^2 in a second
// sweep over the same (cache-hot) rows: a two-pass variance per chunk. The finalize merges
// the chunks exactly: mean = m_0 + sum n_k (m_k - m_0) / rows,
// M2 = sum (M2_k + n_k (m_k - mean)^2). var = M2 / rows (biased, used to normalise);
// running_var uses M2 / (rows - 1) (unbiased, as PyTorch);
// r = (1 - momentum) r + momentum * batch_stat.
// Forward: y = gamma * (x - mean) * invstd + beta, invstd = 1 / sqrt(var + eps); with
// p.relu != 0 the forward kernels (normalize, eval) write max(y, 0) instead: the ReLU that
// follows most batch norms, fused so that y is not read and written a second time.
// Backward: dbeta = sum dy, dgamma = sum dy * xhat, xhat = (x - mean) * invstd,
// dx = gamma * invstd * (dy - (dbeta + xhat * dgamma) / rows). The finalize writes this
// batch's dbeta, dgamma into rows 0 and 1 of `part` too, where the dx pass reads them: the
// parameter gradients themselves may hold a sum over micro-batches (p.accumulate != 0 adds
// into them).
// Element-wise kernels (normalize, eval, dx) run `stripes * C` threads in workgroups of 256
// on a 2-D grid (linear index t = (wg.y * nwg.x + wg.x) * 256 + lid.x). Thread t owns channel
// t % C and the elements t, t + stripes * C, t + 2 * stripes * C, ... (rows t / C,
// t / C + stripes, ...), so it loads its channel's statistics and parameters once. GPUs run
// one row per thread (stripes = rows: consecutive threads, consecutive elements), CPU
// adapters 64 (each per-channel load is a gather there).

struct Params {
    rows: u32,
    channels: u32,
    chunk_rows: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
    inv_rows: f32,
    stripes: u32,
    relu: u32,
    accumulate: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xa: array<ACT>;
@group(0) @binding(2) var<storage, read_write> ya: array<ACT>;
@group(0) @binding(3) var<storage, read> ga: array<ACT>;
@group(0) @binding(4) var<storage, read_write> b4: array<f32>;
@group(0) @binding(5) var<storage, read_write> b5: array<f32>;
@group(0) @binding(6) var<storage, read_write> b6: array<f32>;
@group(0) @binding(7) var<storage, read_write> b7: array<f32>;
@group(0) @binding(8) var<storage, read_write> b8: array<f32>;

const CB: u32 = 32u; // channels per workgroup
const RL: u32 = 8u; // row lanes per workgroup

var<workgroup> red: array<f32, 256>; // [RL][CB]

// Sum `v` over the RL row lanes of column lid.x (fixed tree); every thread gets its column's
// total. Must be called in uniform control flow.
fn lane_sum(v: f32, lid: vec3<u32>) -> f32 {
    let i = lid.y * CB + lid.x;
    red[i] = v;
    workgroupBarrier();
    for (var s = RL / 2u; s > 0u; s = s / 2u) {
        if (lid.y < s) {
            red[i] += red[i + s * CB];
        }
        workgroupBarrier();
    }
    let total = red[lid.x];
    workgroupBarrier();
    return total;
}

fn chunk_len(k: u32) -> u32 {
    let r0 = k * p.chunk_rows;
    return min(r0 + p.chunk_rows, p.rows) - r0;
}

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

// Distance between the elements of one element-wise thread: a whole number of rows.
fn stripe_step() -> u32 {
    return p.stripes * p.channels;
}

// The fused ReLU of the forward kernels.
fn activate(v: f32) -> f32 {
    return select(v, max(v, 0.0), p.relu != 0u);
}

// Activation element i, widened (a no-op for f32).
fn x_at(i: u32) -> f32 {
    return f32(xa[i]);
}

// Partial (mean, M2) of chunk wg.y for 32 channels. x at 1, part at b4.
@compute @workgroup_size(32, 8, 1)
fn batchnorm_forward_train_stats(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let cn = p.channels;
    let c = wg.x * CB + lid.x;
    let ok = c < cn;
    let r0 = wg.y * p.chunk_rows;
    let r1 = min(r0 + p.chunk_rows, p.rows);
    var shift = 0.0;
    if (ok) {
        shift = x_at(r0 * cn + c);
    }
    var s = 0.0;
    if (ok) {
        for (var r = r0 + lid.y; r < r1; r += RL) {
            s += x_at(r * cn + c) - shift;
        }
    }
    let mean = shift + lane_sum(s, lid) / f32(r1 - r0);
    var q = 0.0;
    if (ok) {
        for (var r = r0 + lid.y; r < r1; r += RL) {
            let d = x_at(r * cn + c) - mean;
            q = fma(d, d, q);
        }
    }
    let m2 = lane_sum(q, lid);
    if (ok && lid.y == 0u) {
        b4[(2u * wg.y) * cn + c] = mean;
        b4[(2u * wg.y + 1u) * cn + c] = m2;
    }
}

// Merge the chunk partials of 32 channels; write mean, invstd, update the running stats.
// part at b4, mean at b5, invstd at b6, running_mean at b7, running_var at b8.
@compute @workgroup_size(32, 8, 1)
fn batchnorm_forward_train_finalize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let cn = p.channels;
    let c = wg.x * CB + lid.x;
    let ok = c < cn;
    var m0 = 0.0;
    if (ok) {
        m0 = b4[c];
    }
    var s = 0.0;
    if (ok) {
        for (var k = lid.y; k < p.chunks; k += RL) {
            s += f32(chunk_len(k)) * (b4[2u * k * cn + c] - m0);
        }
    }
    let mean = m0 + lane_sum(s, lid) * p.inv_rows;
    var q = 0.0;
    if (ok) {
        for (var k = lid.y; k < p.chunks; k += RL) {
            let d = b4[2u * k * cn + c] - mean;
            q += b4[(2u * k + 1u) * cn + c] + f32(chunk_len(k)) * d * d;
        }
    }
    let m2 = lane_sum(q, lid);
    if (ok && lid.y == 0u) {
        let var_biased = m2 * p.inv_rows;
        let var_unbiased = m2 / f32(max(p.rows, 2u) - 1u);
        b5[c] = mean;
        b6[c] = 1.0 / sqrt(var_biased + p.eps);
        let mom = p.momentum;
        b7[c] = (1.0 - mom) * b7[c] + mom * mean;
        b8[c] = (1.0 - mom) * b8[c] + mom * var_unbiased;
    }
}

// y = gamma * (x - mean) * invstd + beta with the batch statistics (then the fused ReLU).
// x at 1, y at 2, gamma b4, beta b5, mean b6, invstd b7.
@compute @workgroup_size(256, 1, 1)
fn batchnorm_normalize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = linear_index(wg, nwg, lid);
    let step = stripe_step();
    if (t >= step) {
        return;
    }
    let c = t % p.channels;
    let scale = b4[c] * b7[c];
    let mean = b6[c];
    let beta = b5[c];
    let n = p.rows * p.channels;
    for (var e = t; e < n; e += step) {
        ya[e] = ACT(activate(fma(scale, x_at(e) - mean, beta)));
    }
}

// y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta (then the fused ReLU).
// x at 1, y at 2, gamma b4, beta b5, running_mean b6, running_var b7.
@compute @workgroup_size(256, 1, 1)
fn batchnorm_forward_eval(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = linear_index(wg, nwg, lid);
    let step = stripe_step();
    if (t >= step) {
        return;
    }
    let c = t % p.channels;
    let scale = b4[c] * (1.0 / sqrt(b7[c] + p.eps));
    let mean = b6[c];
    let beta = b5[c];
    let n = p.rows * p.channels;
    for (var e = t; e < n; e += step) {
        ya[e] = ACT(activate(fma(scale, x_at(e) - mean, beta)));
    }
}

// Partial (sum dy, sum dy * xhat) of chunk wg.y for 32 channels.
// x at 1, dy at 3, part b4, mean b5, invstd b6.
@compute @workgroup_size(32, 8, 1)
fn batchnorm_backward_reduce(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let cn = p.channels;
    let c = wg.x * CB + lid.x;
    let ok = c < cn;
    let r0 = wg.y * p.chunk_rows;
    let r1 = min(r0 + p.chunk_rows, p.rows);
    var sdy = 0.0;
    var sdx = 0.0;
    if (ok) {
        let mean = b5[c];
        let invstd = b6[c];
        for (var r = r0 + lid.y; r < r1; r += RL) {
            let i = r * cn + c;
            let g = f32(ga[i]);
            sdy += g;
            sdx = fma(g, (x_at(i) - mean) * invstd, sdx);
        }
    }
    let tdy = lane_sum(sdy, lid);
    let tdx = lane_sum(sdx, lid);
    if (ok && lid.y == 0u) {
        b4[(2u * wg.y) * cn + c] = tdy;
        b4[(2u * wg.y + 1u) * cn + c] = tdx;
    }
}

// dbeta, dgamma = sums of the chunk partials (added into them when p.accumulate != 0), and
// the same sums into rows 0 and 1 of part for the dx pass (row 0 and 1 of channel c are
// read only by this invocation, above). part at b4, dbeta at b5, dgamma at b6.
@compute @workgroup_size(32, 8, 1)
fn batchnorm_backward_finalize(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let cn = p.channels;
    let c = wg.x * CB + lid.x;
    let ok = c < cn;
    var sdy = 0.0;
    var sdx = 0.0;
    if (ok) {
        for (var k = lid.y; k < p.chunks; k += RL) {
            sdy += b4[2u * k * cn + c];
            sdx += b4[(2u * k + 1u) * cn + c];
        }
    }
    let tdy = lane_sum(sdy, lid);
    let tdx = lane_sum(sdx, lid);
    if (ok && lid.y == 0u) {
        b4[c] = tdy;
        b4[cn + c] = tdx;
        if (p.accumulate != 0u) {
            b5[c] = b5[c] + tdy;
            b6[c] = b6[c] + tdx;
        } else {
            b5[c] = tdy;
            b6[c] = tdx;
        }
    }
}

// dx = gamma * invstd * (dy - (dbeta + xhat * dgamma) / rows).
// x at 1, dx at 2, dy at 3, mean b4, invstd b5, gamma b6, part b7 (dbeta, dgamma: rows 0, 1).
@compute @workgroup_size(256, 1, 1)
fn batchnorm_backward_dx(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = linear_index(wg, nwg, lid);
    let step = stripe_step();
    if (t >= step) {
        return;
    }
    let c = t % p.channels;
    let mean = b4[c];
    let invstd = b5[c];
    let scale = b6[c] * invstd;
    let dbeta = b7[c];
    let dgamma = b7[p.channels + c];
    let n = p.rows * p.channels;
    for (var e = t; e < n; e += step) {
        let xhat = (x_at(e) - mean) * invstd;
        ya[e] = ACT(scale * (f32(ga[e]) - fma(xhat, dgamma, dbeta) * p.inv_rows));
    }
}

// dx written over x: the same arithmetic as batchnorm_backward_dx, each element of x read
// by the invocation that then overwrites it.
@compute @workgroup_size(256, 1, 1)
fn batchnorm_backward_dx_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = linear_index(wg, nwg, lid);
    let step = stripe_step();
    if (t >= step) {
        return;
    }
    let c = t % p.channels;
    let mean = b4[c];
    let invstd = b5[c];
    let scale = b6[c] * invstd;
    let dbeta = b7[c];
    let dgamma = b7[p.channels + c];
    let n = p.rows * p.channels;
    for (var e = t; e < n; e += step) {
        let xhat = (f32(ya[e]) - mean) * invstd;
        ya[e] = ACT(scale * (x_at(e) - fma(xhat, dgamma, dbeta) * p.inv_rows));
    }
}
