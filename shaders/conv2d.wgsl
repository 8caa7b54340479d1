// conv2d: 2-D convolution (no bias), its data gradient and its weight gradient, as tiled
// implicit GEMMs; plus a one-thread-per-output direct forward kernel (conv2d_direct, kept as
// the readable reference and fallback; tests/gpu/conv2d.rs checks it against the tiled ones).
//
// Layouts: x (N, H, W, Cin), w (KH, KW, Cin, Cout), y (N, OH, OW, Cout), all f32, row-major.
// OH = (H + 2 pad - KH) / stride + 1, OW likewise. Padding reads as zero.
//
//   y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, oy*s - pad + ky, ox*s - pad + kx, ci] w[ky, kx, ci, co]
//
// Bindings (shared by every entry point; what they hold depends on the entry point):
//   0 uniform Params, 1 src_a (read), 2 src_b (read), 3 dst (read_write).
//   conv2d_forward, conv2d_direct: src_a = x, src_b = w, dst = y (overwritten).
//   conv2d_backward_data:          src_a = dy, src_b = w, dst = dx.
//   conv2d_backward_weight:        src_a = x, src_b = dy, dst = dw.
//   The gradients overwrite dst, or add into it when p.accumulate != 0 (dst is read only then).
//
// The three tiled entry points compute C[rows, cols] = A[rows, K] x B[K, cols]:
//   forward          C = y  [N*OH*OW, Cout], A = im2col(x) [N*OH*OW, KH*KW*Cin], B = w [KH*KW*Cin, Cout]
//   backward_data    C = dx [N*H*W, Cin],    A[(n,iy,ix), (ky,kx,co)] = dy[n, oy, ox, co] where
//                    oy = (iy + pad - ky) / s when that divides exactly and 0 <= oy < OH (same for
//                    x), else 0;  B[(ky,kx,co), ci] = w[ky, kx, ci, co]  (a transposed convolution)
//   backward_weight  C = dw [KH*KW*Cin, Cout], A = im2col(x)^T [KH*KW*Cin, N*OH*OW], B = dy [N*OH*OW, Cout]
// p.rows, p.cols, p.red are those GEMM sizes. The im2col / col2im gathers happen inside the
// tile loads, so nothing is materialised. backward_data splits its GEMM by stride phase
// ((iy + pad) mod s, (ix + pad) mod s): s^2 smaller GEMMs whose reductions hold only the taps
// that divide exactly (see the entry point), so stride 2 does a quarter of the work.
//
// Dispatch (tiled): (ceil(cols / 64), gy, gz) workgroups of 16 x 16 threads with
// gy * gz >= ceil(rows / 64); the row tile is wg.z * num_workgroups.y + wg.y (so row counts
// beyond the per-dimension limit still fit). backward_data: gz = s^2 * p.zsplit, phase =
// wg.z / zsplit, row tile = (wg.z % zsplit) * num_workgroups.y + wg.y, with gy * zsplit row
// tiles covering the largest phase. backward_weight with p.zsplit = S > 1 (split-K, for
// layers whose weight gradient has too few 64 x 64 tiles to fill a GPU): gz = S, the row
// tile is wg.y, chunk wg.z reduces over pixels [wg.z * kchunk, min(red, (wg.z + 1) * kchunk))
// and overwrites its slice dst[wg.z * rows * cols ..] of a partials buffer (S, rows, cols);
// conv2d_sum_partials then sums the S slices into dw.
// Each workgroup computes a 64 x 64 tile of C; each thread a 4 x 4 sub-block at rows
// ty + 16 i, columns tx + 16 j. The reduction advances in
// tiles of 16 staged through workgroup memory (2 x 4 KiB), as in gemm.wgsl. Out-of-range rows,
// columns and reduction indices load as zero and are skipped on store. Each thread decodes
// its fixed tile rows (or reduction index) once, outside the reduction loop.
//
// Dispatch (conv2d_direct): one thread per element of y, workgroups of 256 on a 2-D grid;
// linear index (wg.y * num_workgroups.x + wg.x) * 256 + lid.x.

// Params, the bindings and the index helpers (window_of, stride_phase, weight_row) are in
// conv2d_common.wgsl, appended to this file when it is embedded.

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

// acc += tile_a^T tile_b for this thread's 4 x 4 sub-block (after the tiles are loaded).
fn mma_tile(lid: vec3<u32>, acc: ptr<function, array<f32, 16>>) {
    for (var kk = 0u; kk < TK; kk++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            av[i] = tile_a[kk * TM + lid.y + 16u * i];
            bv[i] = tile_b[kk * TN + lid.x + 16u * i];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i * 4u + j] = fma(av[i], bv[j], (*acc)[i * 4u + j]);
            }
        }
    }
}

// Write this thread's 4 x 4 sub-block of C[rows, cols] (row-major, starting at dst[base]),
// overwriting or adding.
fn store_tile(base: u32, row0: u32, col0: u32, lid: vec3<u32>, acc: ptr<function, array<f32, 16>>, accumulate: bool) {
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r >= p.rows) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col < p.cols) {
                let idx = base + r * p.cols + col;
                var v = (*acc)[i * 4u + j];
                if (accumulate) {
                    v += f32(dst[idx]);
                }
                dst[idx] = DST(v);
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = (wg.z * nwg.y + wg.y) * TM;
    let col0 = wg.x * TN;
    // A-tile loads: thread li fills reduction slot kk = li % 16 of tile rows rl + 16 t, so
    // consecutive threads read consecutive input channels. Decode those 4 output pixels once.
    let kk = li % TK;
    let rl = li / TK;
    var a_base: array<u32, 4>; // offset of x[n, 0, 0, 0]
    var a_iy: array<i32, 4>;   // oy * stride - pad (top row of the window)
    var a_ix: array<i32, 4>;
    for (var t = 0u; t < 4u; t++) {
        let r = row0 + rl + 16u * t;
        let win = window_of(r);
        a_base[t] = win.xb;
        a_iy[t] = win.iy;
        a_ix[t] = win.ix;
        if (r >= p.rows) {
            a_iy[t] = -1 - i32(p.kh); // never inside the image
        }
    }
    var acc: array<f32, 16>; // zero-initialised
    for (var k0 = 0u; k0 < p.red; k0 += TK) {
        // Reduction index gk = (ky * KW + kx) * Cin + ci.
        let gk = k0 + kk;
        let tap = gk / p.cin;
        let ci = gk - tap * p.cin;
        let ky = tap / p.kw;
        let kx = tap - ky * p.kw;
        for (var t = 0u; t < 4u; t++) {
            let iy = a_iy[t] + i32(ky);
            let ix = a_ix[t] + i32(kx);
            var va = 0.0;
            if (gk < p.red && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                va = load_a(a_base[t] + (u32(iy) * p.w + u32(ix)) * p.cin + ci);
            }
            tile_a[kk * TM + rl + 16u * t] = va;
        }
        // B tile: w viewed as [KH*KW*Cin, Cout]; consecutive threads walk Cout.
        for (var t = 0u; t < 4u; t++) {
            let e = li + t * 256u;
            let kb = e / TN;
            let cb = e % TN;
            let gkb = k0 + kb;
            let gc = col0 + cb;
            var vb = 0.0;
            if (gkb < p.red && gc < p.cols) {
                vb = load_b(gkb * p.cols + gc);
            }
            tile_b[kb * TN + cb] = vb;
        }
        workgroupBarrier();
        mma_tile(lid, &acc);
        workgroupBarrier();
    }
    store_tile(0u, row0, col0, lid, &acc, false);
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_backward_data(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Stride phases (see stride_phase): workgroup z picks a phase (ry, rx); its rows are the
    // input pixels with (iy + pad) mod s = ry and (ix + pad) mod s = rx, and its reduction
    // runs over only the taps ky = ry + s b, kx = rx + s d that can reach them. Each phase is
    // then a stride-1 correlation with no divisibility tests and no wasted work.
    let s = p.stride;
    let phase = wg.z / p.zsplit;
    let row0 = ((wg.z - phase * p.zsplit) * nwg.y + wg.y) * TM;
    let col0 = wg.x * TN;
    let ph = stride_phase(phase);
    let ry = ph.ry; let rx = ph.rx; let iy0 = ph.iy0; let ix0 = ph.ix0;
    let cy = ph.cy; let cx = ph.cx; let nky = ph.nky; let nkx = ph.nkx;
    let ay0 = ph.ay0; let ax0 = ph.ax0;
    let rows = p.n * cy * cx;
    let red = nky * nkx * p.cout;
    // A-tile loads: thread li fills reduction slot kk = li % 16 (consecutive output channels
    // of dy) of tile rows rl + 16 t; rl = lid.y, so these are also the rows it stores.
    // Decode those 4 input pixels once.
    let kk = li % TK;
    let rl = li / TK;
    let cyx = cy * cx;
    let ohw = p.oh * p.ow;
    var a_base: array<u32, 4>; // offset of dy[n, 0, 0, 0]
    var a_y: array<i32, 4>;    // oy + b: dy row read through tap b
    var a_x: array<i32, 4>;
    var c_idx: array<u32, 4>;  // offset of dx[n, iy, ix, 0]
    for (var t = 0u; t < 4u; t++) {
        let r = row0 + rl + 16u * t;
        let n = r / max(cyx, 1u);
        let rem = r - n * cyx;
        let jy = rem / max(cx, 1u);
        let jx = rem - jy * cx;
        a_base[t] = n * ohw * p.cout;
        a_y[t] = ay0 + i32(jy);
        a_x[t] = ax0 + i32(jx);
        c_idx[t] = ((n * p.h + iy0 + s * jy) * p.w + ix0 + s * jx) * p.cin;
        if (r >= rows) {
            a_y[t] = -1; // no tap reaches it
        }
    }
    let kcc = p.kw * p.cin * p.cout; // stride of ky in w
    var acc: array<f32, 16>; // zero-initialised
    for (var k0 = 0u; k0 < red; k0 += TK) {
        // Reduction index gk = (b * nkx + d) * Cout + co; the B loads below use the same gk.
        let gk = k0 + kk;
        let tap = gk / p.cout;
        let co = gk - tap * p.cout;
        let b = tap / max(nkx, 1u);
        let d = tap - b * nkx;
        let k_ok = gk < red;
        for (var t = 0u; t < 4u; t++) {
            let oy = a_y[t] - i32(b);
            let ox = a_x[t] - i32(d);
            var va = 0.0;
            if (k_ok && oy >= 0 && oy < i32(p.oh) && ox >= 0 && ox < i32(p.ow)) {
                va = load_a(a_base[t] + (u32(oy) * p.ow + u32(ox)) * p.cout + co);
            }
            tile_a[kk * TM + rl + 16u * t] = va;
        }
        // B tile: B[(b, d, co), ci] = w[ry + s b, rx + s d, ci, co]. Thread li fills reduction
        // slot kk (consecutive co: contiguous in w) of columns rl + 16 t.
        let w_tap = (ry + s * b) * kcc + (rx + s * d) * p.cin * p.cout + co;
        for (var t = 0u; t < 4u; t++) {
            let cb = rl + 16u * t;
            let ci = col0 + cb;
            var vb = 0.0;
            if (k_ok && ci < p.cols) {
                vb = load_b(w_tap + ci * p.cout);
            }
            tile_b[kk * TN + cb] = vb;
        }
        workgroupBarrier();
        mma_tile(lid, &acc);
        workgroupBarrier();
    }
    // Store: row lid.y + 16 i is the pixel decoded above as t = i.
    for (var i = 0u; i < 4u; i++) {
        if (row0 + lid.y + 16u * i >= rows) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let ci = col0 + lid.x + 16u * j;
            if (ci < p.cols) {
                let idx = c_idx[i] + ci;
                var v = acc[i * 4u + j];
                if (p.accumulate != 0u) {
                    v += f32(dst[idx]);
                }
                dst[idx] = DST(v);
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_backward_weight(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Split-K (p.zsplit > 1): wg.z is the reduction chunk, rows tile over y only, and the
    // chunk's partial product is written to its own slice of dst (the partials buffer).
    let split = p.zsplit > 1u;
    var row0 = (wg.z * nwg.y + wg.y) * TM;
    var k_begin = 0u;
    var k_end = p.red;
    var base = 0u;
    if (split) {
        row0 = wg.y * TM;
        k_begin = wg.z * p.kchunk;
        k_end = min(p.red, k_begin + p.kchunk);
        base = wg.z * p.rows * p.cols;
    }
    let col0 = wg.x * TN;
    // Rows are weight indices (ky, kx, ci); the reduction runs over output pixels m.
    // A-tile loads: thread li fills tile row rl = li % 64 (consecutive threads: consecutive
    // input channels) at reduction slots ml + 4 t. Decode its one row once.
    let rl = li % TM;
    let ml = li / TM;
    let gr = row0 + rl;
    let wr = weight_row(gr);
    let ci = wr.ci;
    let r_ok = gr < p.rows;
    let ohw = p.oh * p.ow;
    let off_y = wr.off_y;
    let off_x = wr.off_x;
    var acc: array<f32, 16>; // zero-initialised
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var t = 0u; t < 4u; t++) {
            let mm = ml + 4u * t;
            let gm = k0 + mm;
            let m_ok = gm < k_end;
            // Output pixel gm = (n, oy, ox) reads x[n, oy*s - pad + ky, ox*s - pad + kx, ci].
            let n = gm / ohw;
            let rem = gm - n * ohw;
            let oy = rem / p.ow;
            let ox = rem - oy * p.ow;
            let iy = i32(oy * p.stride) + off_y;
            let ix = i32(ox * p.stride) + off_x;
            var va = 0.0;
            if (r_ok && m_ok && iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
                va = load_a(((n * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + ci);
            }
            tile_a[mm * TM + rl] = va;
            // B tile: dy viewed as [N*OH*OW, Cout], same reduction slot; consecutive threads
            // walk Cout.
            let gc = col0 + rl;
            var vb = 0.0;
            if (m_ok && gc < p.cols) {
                vb = load_b(gm * p.cols + gc);
            }
            tile_b[mm * TN + rl] = vb;
        }
        workgroupBarrier();
        mma_tile(lid, &acc);
        workgroupBarrier();
    }
    store_tile(base, row0, col0, lid, &acc, p.accumulate != 0u && !split);
}

// The second pass of the split-K weight gradient: dst[i] = sum over chunks s = 0, 1, ... of
// src_a[s * rows * cols + i] (fixed order, so deterministic), plus dst[i] when accumulating.
// src_a = partials (p.zsplit, rows, cols); src_b is bound to the same buffer and unused.
// One thread per element, workgroups of 256 on a 2-D grid (as conv2d_direct).
@compute @workgroup_size(256, 1, 1)
fn conv2d_sum_partials(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    // Every entry point of this file takes bindings 1-3 (the launcher binds them in order),
    // so name src_b here to keep it in this entry point's layout.
    _ = arrayLength(&src_b);
    let len = p.rows * p.cols;
    let idx = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (idx >= len) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.zsplit; s++) {
        v += load_a(s * len + idx);
    }
    if (p.accumulate != 0u) {
        v += f32(dst[idx]);
    }
    dst[idx] = DST(v);
}

@compute @workgroup_size(256, 1, 1)
fn conv2d_direct(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let idx = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (idx >= p.rows * p.cols) {
        return;
    }
    // idx = ((n * OH + oy) * OW + ox) * Cout + co
    let co = idx % p.cout;
    let pix = idx / p.cout;
    let ox = pix % p.ow;
    let t = pix / p.ow;
    let oy = t % p.oh;
    let n = t / p.oh;
    var acc = 0.0;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        if (iy < 0 || iy >= i32(p.h)) {
            continue;
        }
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = i32(ox * p.stride + kx) - i32(p.pad);
            if (ix < 0 || ix >= i32(p.w)) {
                continue;
            }
            let xb = ((n * p.h + u32(iy)) * p.w + u32(ix)) * p.cin;
            let wb = (ky * p.kw + kx) * p.cin * p.cout + co;
            for (var ci = 0u; ci < p.cin; ci++) {
                acc = fma(load_a(xb + ci), load_b(wb + ci * p.cout), acc);
            }
        }
    }
    dst[idx] = DST(acc);
}

// ---------------------------------------------------------------------------------------------
// Broadcast variants (chosen by the launchers on CPU adapters such as Mesa lavapipe, whose
// SIMD lanes turn every per-lane load into a gather but load workgroup-uniform addresses once
// and broadcast them). No workgroup memory and no barriers: each of the 64 invocations owns
// one element of the large GEMM dimension (an output pixel, an input pixel of one stride
// phase, or a weight row (ky, kx, ci)), and the workgroup owns a block of RB = 8 consecutive
// channels of the small dimension (wg.x), whose operand is read at uniform addresses:
//   conv2d_forward_bcast          lane = output pixel, block = 8 output channels (w uniform)
//   conv2d_backward_data_bcast    lane = input pixel of a stride phase, block = 8 input
//                                 channels (w uniform); phases and zsplit as above, TM = 64
//   conv2d_backward_weight_bcast  lane = weight row (ky, kx, ci), block = 8 output channels
//                                 (dy uniform); reduction over every output pixel
// Dispatch: (ceil(block dim / 8), gy, gz) workgroups of 64 with the 64-row tiles laid out as
// in the tiled kernels. Uniform loads past the end of a block are clamped in range and their
// results dropped at the store.

const RB: u32 = 8u;

@compute @workgroup_size(64, 1, 1)
fn conv2d_forward_bcast(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let co0 = wg.x * RB;
    let pix = (wg.z * nwg.y + wg.y) * 64u + lid.x;
    let ok = pix < p.rows;
    let win = window_of(pix);
    let iy0 = win.iy;
    let ix0 = win.ix;
    let xb = win.xb;
    let wlast = p.kh * p.kw * p.cin * p.cout - 1u;
    var acc: array<f32, RB>;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = iy0 + i32(ky);
        let y_ok = ok && iy >= 0 && iy < i32(p.h);
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = ix0 + i32(kx);
            let v_ok = y_ok && ix >= 0 && ix < i32(p.w);
            let xa = select(0u, xb + (u32(iy) * p.w + u32(ix)) * p.cin, v_ok);
            let wb = (ky * p.kw + kx) * p.cin * p.cout + co0;
            for (var ci = 0u; ci < p.cin; ci++) {
                let xv = select(0.0, load_a(xa + ci), v_ok);
                let wr = wb + ci * p.cout;
                for (var r = 0u; r < RB; r++) {
                    acc[r] = fma(xv, load_b(min(wr + r, wlast)), acc[r]);
                }
            }
        }
    }
    if (ok) {
        for (var r = 0u; r < RB; r++) {
            if (co0 + r < p.cout) {
                dst[pix * p.cout + co0 + r] = DST(acc[r]);
            }
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn conv2d_backward_data_bcast(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    // Same stride-phase split as conv2d_backward_data.
    let s = p.stride;
    let phase = wg.z / p.zsplit;
    let r = ((wg.z - phase * p.zsplit) * nwg.y + wg.y) * 64u + lid.x;
    let ci0 = wg.x * RB;
    let ph = stride_phase(phase);
    let ry = ph.ry; let rx = ph.rx; let iy0 = ph.iy0; let ix0 = ph.ix0;
    let cy = ph.cy; let cx = ph.cx; let nky = ph.nky; let nkx = ph.nkx;
    let ay0 = ph.ay0; let ax0 = ph.ax0;
    let rows = p.n * cy * cx;
    let ok = r < rows;
    let cyx = max(cy * cx, 1u);
    let n = r / cyx;
    let rem = r - n * cyx;
    let jy = rem / max(cx, 1u);
    let jx = rem - jy * cx;
    let a_y = ay0 + i32(jy);
    let a_x = ax0 + i32(jx);
    let yb = n * p.oh * p.ow * p.cout;
    let cc = p.cin * p.cout;
    let wlast = p.kh * p.kw * cc - 1u;
    var acc: array<f32, RB>;
    for (var b = 0u; b < nky; b++) {
        let oy = a_y - i32(b);
        let y_ok = ok && oy >= 0 && oy < i32(p.oh);
        for (var d = 0u; d < nkx; d++) {
            let ox = a_x - i32(d);
            let v_ok = y_ok && ox >= 0 && ox < i32(p.ow);
            let ya = select(0u, yb + (u32(oy) * p.ow + u32(ox)) * p.cout, v_ok);
            let wb = ((ry + s * b) * p.kw + rx + s * d) * cc + ci0 * p.cout;
            for (var co = 0u; co < p.cout; co++) {
                let dv = select(0.0, load_a(ya + co), v_ok);
                let wr = wb + co;
                for (var q = 0u; q < RB; q++) {
                    acc[q] = fma(dv, load_b(min(wr + q * p.cout, wlast)), acc[q]);
                }
            }
        }
    }
    if (ok) {
        let c_idx = ((n * p.h + iy0 + s * jy) * p.w + ix0 + s * jx) * p.cin + ci0;
        for (var q = 0u; q < RB; q++) {
            if (ci0 + q < p.cin) {
                var v = acc[q];
                if (p.accumulate != 0u) {
                    v += f32(dst[c_idx + q]);
                }
                dst[c_idx + q] = DST(v);
            }
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn conv2d_backward_weight_bcast(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let co0 = wg.x * RB;
    let gr = (wg.z * nwg.y + wg.y) * 64u + lid.x;
    let ok = gr < p.rows;
    let wr = weight_row(gr);
    let ci = wr.ci;
    let off_y = wr.off_y;
    let off_x = wr.off_x;
    let ylast = p.n * p.oh * p.ow * p.cout - 1u;
    var acc: array<f32, RB>;
    var m = 0u; // output pixel (n, oy, ox)
    for (var n = 0u; n < p.n; n++) {
        let xb = n * p.h * p.w * p.cin + ci;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = i32(oy * p.stride) + off_y;
            let y_ok = ok && iy >= 0 && iy < i32(p.h);
            let xr = xb + u32(iy) * p.w * p.cin;
            for (var ox = 0u; ox < p.ow; ox++) {
                let ix = i32(ox * p.stride) + off_x;
                let v_ok = y_ok && ix >= 0 && ix < i32(p.w);
                let xv = select(0.0, load_a(select(0u, xr + u32(ix) * p.cin, v_ok)), v_ok);
                let yr = m * p.cout + co0;
                for (var q = 0u; q < RB; q++) {
                    acc[q] = fma(xv, load_b(min(yr + q, ylast)), acc[q]);
                }
                m++;
            }
        }
    }
    if (ok) {
        for (var q = 0u; q < RB; q++) {
            if (co0 + q < p.cout) {
                let idx = gr * p.cout + co0 + q;
                var v = acc[q];
                if (p.accumulate != 0u) {
                    v += f32(dst[idx]);
                }
                dst[idx] = DST(v);
            }
        }
    }
}
