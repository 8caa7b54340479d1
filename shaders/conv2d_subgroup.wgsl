// conv2d_subgroup: the broadcast convolution kernels of conv2d.wgsl (forward, data gradient,
// weight gradient) for CPU adapters whose subgroups are 8 invocations wide (Mesa lavapipe on
// x86-64 with AVX2 or AVX-512: one subgroup = one 8-lane SIMD vector).
//
// Why: on lavapipe every storage-buffer load is issued lane by lane (a bounds-checked scalar
// load per invocation), even when all lanes read the same address. The broadcast kernels
// read the operand that the whole workgroup shares (16 weights, or 16 output gradients, per
// reduction step) in every lane, so 16 of their 17 loads per step were the same values
// fetched 8 times over. Here lane l of each subgroup loads only channels l and l + 8 of the
// shared block, and subgroupBroadcast hands each value to the other lanes (a register
// shuffle): 3 loads per reduction step instead of 17, for the same 16 multiply-adds. The
// forward and data-gradient kernels go one step further: each lane computes two pixels
// (PPL), so the two shared loads serve 32 multiply-adds (4 loads per 32 instead of 6;
// about 1.3x faster on the tiny model's layers). The weight gradient keeps one row per
// lane: its layers have few rows (9 for a grayscale stem), and two per lane left one of
// the two cores idle on them.
//
// Layouts and Params as in conv2d.wgsl: x (N, H, W, Cin), w (KH, KW, Cin, Cout),
// y (N, OH, OW, Cout), f32 row-major; any channel counts.
// Bindings: 0 uniform Params, 1 src_a (read), 2 src_b (read), 3 dst (read_write):
//   conv2d_forward_sg          src_a = x,  src_b = w,  dst = y   (lane = output pixel;
//                              workgroup x = a block of 16 output channels)
//   conv2d_backward_data_sg    src_a = dy, src_b = w,  dst = dx  (lane = input pixel of a
//                              stride phase; workgroup x = a block of 16 input channels)
//   conv2d_backward_weight_sg  src_a = x,  src_b = dy, dst = dw  (lane = weight row
//                              (ky, kx, ci); workgroup x = a block of 16 output channels)
// Gradients overwrite dst, or add into it when p.accumulate != 0.
// Dispatch: as the broadcast kernels of conv2d.wgsl, (ceil(channels / 16), gy, gz)
// workgroups of 64, with tiles of 64 * PPL pixels (forward, backward_data) or 64 weight
// rows (backward_weight); backward_data splits z by stride phase and p.zsplit;
// backward_weight with split-K (p.zsplit > 1 chunks of p.kchunk output rows) takes the
// chunk from z and writes partial gradients that conv2d.wgsl's conv2d_sum_partials adds
// up (layers with few weight rows, so that every core gets a share). Every
// invocation runs the reduction loops to the end, valid or not, so that each
// subgroupBroadcast has its whole subgroup; shared loads past the end of a block are
// clamped in range and their results dropped at the store. The launcher picks these
// kernels only where the adapter's subgroup size is exactly 8; if a subgroup is ever not 8
// wide, the kernels write NaN, which the tests and the training guard catch.

// Params, the bindings and the index helpers (window_of, stride_phase, weight_row) are in
// conv2d_common.wgsl, appended to this file when it is embedded.

// Channels per workgroup: two per lane of an 8-wide subgroup.
const CB: u32 = 16u;

// The quiet NaN is built from the runtime subgroup size (min(.., 0u) is always 0): a NaN
// written as a constant expression is a shader-creation error in WGSL, which naga lets
// through but Tint (Chrome's compiler) rejects.
fn nan_unless_8(v: f32, subgroup_size: u32) -> f32 {
    let quiet_nan = bitcast<f32>(0x7fc00000u + min(subgroup_size, 0u));
    return select(quiet_nan, v, subgroup_size == 8u);
}

// acc[j] += v * (channel j of the block), the block's channels j and j + 8 held by lane j
// of the subgroup in lo and hi.
fn fma_block(acc: ptr<function, array<f32, CB * PPL>>, o: u32, v: f32, lo: f32, hi: f32) {
    (*acc)[o + 0u] = fma(v, subgroupBroadcast(lo, 0u), (*acc)[o + 0u]);
    (*acc)[o + 1u] = fma(v, subgroupBroadcast(lo, 1u), (*acc)[o + 1u]);
    (*acc)[o + 2u] = fma(v, subgroupBroadcast(lo, 2u), (*acc)[o + 2u]);
    (*acc)[o + 3u] = fma(v, subgroupBroadcast(lo, 3u), (*acc)[o + 3u]);
    (*acc)[o + 4u] = fma(v, subgroupBroadcast(lo, 4u), (*acc)[o + 4u]);
    (*acc)[o + 5u] = fma(v, subgroupBroadcast(lo, 5u), (*acc)[o + 5u]);
    (*acc)[o + 6u] = fma(v, subgroupBroadcast(lo, 6u), (*acc)[o + 6u]);
    (*acc)[o + 7u] = fma(v, subgroupBroadcast(lo, 7u), (*acc)[o + 7u]);
    (*acc)[o + 8u] = fma(v, subgroupBroadcast(hi, 0u), (*acc)[o + 8u]);
    (*acc)[o + 9u] = fma(v, subgroupBroadcast(hi, 1u), (*acc)[o + 9u]);
    (*acc)[o + 10u] = fma(v, subgroupBroadcast(hi, 2u), (*acc)[o + 10u]);
    (*acc)[o + 11u] = fma(v, subgroupBroadcast(hi, 3u), (*acc)[o + 11u]);
    (*acc)[o + 12u] = fma(v, subgroupBroadcast(hi, 4u), (*acc)[o + 12u]);
    (*acc)[o + 13u] = fma(v, subgroupBroadcast(hi, 5u), (*acc)[o + 13u]);
    (*acc)[o + 14u] = fma(v, subgroupBroadcast(hi, 6u), (*acc)[o + 14u]);
    (*acc)[o + 15u] = fma(v, subgroupBroadcast(hi, 7u), (*acc)[o + 15u]);
}

// Pixels per lane of the forward and data-gradient kernels: lane l of a workgroup computes
// pixels t + l, t + l + 64, ..., t + l + 64 * (PPL - 1) of its tile t (SG_PIXELS in
// src/kernels/conv2d.rs).
const PPL: u32 = 2u;

@compute @workgroup_size(64, 1, 1)
fn conv2d_forward_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) sl: u32,
    @builtin(subgroup_size) ss: u32,
) {
    let co0 = wg.x * CB;
    let p0 = (wg.z * nwg.y + wg.y) * 64u * PPL + lid.x;
    var win: array<Window, PPL>;
    for (var q = 0u; q < PPL; q++) {
        win[q] = window_of(p0 + 64u * q);
    }
    let wlast = p.kh * p.kw * p.cin * p.cout - 1u;
    var acc: array<f32, CB * PPL>;
    for (var ky = 0u; ky < p.kh; ky++) {
        for (var kx = 0u; kx < p.kw; kx++) {
            var xo: array<u32, PPL>;
            var v: array<bool, PPL>;
            for (var q = 0u; q < PPL; q++) {
                let iy = win[q].iy + i32(ky);
                let ix = win[q].ix + i32(kx);
                v[q] = p0 + 64u * q < p.rows && iy >= 0 && iy < i32(p.h) && ix >= 0
                    && ix < i32(p.w);
                xo[q] = select(0u, win[q].xb + (u32(iy) * p.w + u32(ix)) * p.cin, v[q]);
            }
            // this lane's weights: channels co0 + sl and co0 + 8 + sl of tap (ky, kx)
            let wb = (ky * p.kw + kx) * p.cin * p.cout + co0 + sl;
            for (var ci = 0u; ci < p.cin; ci++) {
                let wr = wb + ci * p.cout;
                let w_lo = load_b(min(wr, wlast));
                let w_hi = load_b(min(wr + 8u, wlast));
                for (var q = 0u; q < PPL; q++) {
                    fma_block(&acc, q * CB, select(0.0, load_a(xo[q] + ci), v[q]), w_lo, w_hi);
                }
            }
        }
    }
    for (var q = 0u; q < PPL; q++) {
        let pix = p0 + 64u * q;
        if (pix < p.rows) {
            for (var r = 0u; r < CB; r++) {
                if (co0 + r < p.cout) {
                    dst[pix * p.cout + co0 + r] = DST(nan_unless_8(acc[q * CB + r], ss));
                }
            }
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn conv2d_backward_data_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) sl: u32,
    @builtin(subgroup_size) ss: u32,
) {
    // Stride phases as in conv2d.wgsl's conv2d_backward_data; a lane computes input pixels
    // r0, r0 + 64, ... of the phase.
    let s = p.stride;
    let phase = wg.z / p.zsplit;
    let r0 = ((wg.z - phase * p.zsplit) * nwg.y + wg.y) * 64u * PPL + lid.x;
    let ci0 = wg.x * CB;
    let ph = stride_phase(phase);
    let phase_rows = p.n * ph.cy * ph.cx;
    let cyx = max(ph.cy * ph.cx, 1u);
    var nb: array<u32, PPL>;
    var ay: array<i32, PPL>;
    var ax: array<i32, PPL>;
    for (var q = 0u; q < PPL; q++) {
        let r = r0 + 64u * q;
        let n = r / cyx;
        let rem = r - n * cyx;
        let jy = rem / max(ph.cx, 1u);
        nb[q] = n;
        ay[q] = ph.ay0 + i32(jy);
        ax[q] = ph.ax0 + i32(rem - jy * ph.cx);
    }
    let wlast = p.kh * p.kw * p.cin * p.cout - 1u;
    var acc: array<f32, CB * PPL>;
    for (var b = 0u; b < ph.nky; b++) {
        for (var d = 0u; d < ph.nkx; d++) {
            var yo: array<u32, PPL>;
            var v: array<bool, PPL>;
            for (var q = 0u; q < PPL; q++) {
                let oy = ay[q] - i32(b);
                let ox = ax[q] - i32(d);
                v[q] = r0 + 64u * q < phase_rows && oy >= 0 && oy < i32(p.oh) && ox >= 0
                    && ox < i32(p.ow);
                let yb = nb[q] * p.oh * p.ow * p.cout;
                yo[q] = select(0u, yb + (u32(oy) * p.ow + u32(ox)) * p.cout, v[q]);
            }
            // this lane's weights: input channels ci0 + sl and ci0 + 8 + sl of the tap
            let wb = (((ph.ry + s * b) * p.kw + ph.rx + s * d) * p.cin + ci0 + sl) * p.cout;
            let w8 = 8u * p.cout;
            for (var co = 0u; co < p.cout; co++) {
                let w_lo = load_b(min(wb + co, wlast));
                let w_hi = load_b(min(wb + w8 + co, wlast));
                for (var q = 0u; q < PPL; q++) {
                    fma_block(&acc, q * CB, select(0.0, load_a(yo[q] + co), v[q]), w_lo, w_hi);
                }
            }
        }
    }
    for (var q = 0u; q < PPL; q++) {
        let r = r0 + 64u * q;
        if (r < phase_rows) {
            let n = nb[q];
            let jy = u32(ay[q] - ph.ay0);
            let jx = u32(ax[q] - ph.ax0);
            let c_idx = ((n * p.h + ph.iy0 + s * jy) * p.w + ph.ix0 + s * jx) * p.cin + ci0;
            for (var k = 0u; k < CB; k++) {
                if (ci0 + k < p.cin) {
                    var val = acc[q * CB + k];
                    if (p.accumulate != 0u) {
                        val += f32(dst[c_idx + k]);
                    }
                    dst[c_idx + k] = DST(nan_unless_8(val, ss));
                }
            }
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn conv2d_backward_weight_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) sl: u32,
    @builtin(subgroup_size) ss: u32,
) {
    let co0 = wg.x * CB;
    // Split-K (p.zsplit > 1): workgroup z is the chunk of output rows (n, oy), y the row
    // tile, and the chunk's partial gradient goes to dst[chunk] (conv2d_sum_partials adds
    // them up). Otherwise y and z both count row tiles and the chunk is every output row.
    let split = p.zsplit > 1u;
    let gr = select(wg.z * nwg.y + wg.y, wg.y, split) * 64u + lid.x;
    let ok = gr < p.rows;
    let chunk = select(0u, wg.z, split);
    let out_rows = p.n * p.oh;
    let r0 = min(chunk * p.kchunk, out_rows);
    let r1 = select(out_rows, min(r0 + p.kchunk, out_rows), split);
    // A subgroup with no weight row left (a layer with few rows, such as a stem with one
    // input channel) has nothing to compute: it leaves as a whole, so the subgroups that
    // stay are complete.
    if (!subgroupAny(ok)) {
        return;
    }
    let wr = weight_row(gr);
    let ci = wr.ci;
    let off_y = wr.off_y;
    let off_x = wr.off_x;
    let ylast = p.n * p.oh * p.ow * p.cout - 1u;
    var acc: array<f32, CB * PPL>; // one row per lane: the first CB
    // this lane's output gradients: channels co0 + sl and co0 + 8 + sl of each pixel
    var yr = r0 * p.ow * p.cout + co0 + sl;
    for (var orow = r0; orow < r1; orow++) {
        let n = orow / p.oh;
        let oy = orow - n * p.oh;
        let iy = i32(oy * p.stride) + off_y;
        let y_ok = ok && iy >= 0 && iy < i32(p.h);
        let xr = (n * p.h + u32(iy)) * p.w * p.cin + ci;
        for (var ox = 0u; ox < p.ow; ox++) {
            let ix = i32(ox * p.stride) + off_x;
            let v_ok = y_ok && ix >= 0 && ix < i32(p.w);
            let xv = select(0.0, load_a(select(0u, xr + u32(ix) * p.cin, v_ok)), v_ok);
            let d_lo = load_b(min(yr, ylast));
            let d_hi = load_b(min(yr + 8u, ylast));
            fma_block(&acc, 0u, xv, d_lo, d_hi);
            yr += p.cout;
        }
    }
    // A chunk's partial overwrites its slice; conv2d_sum_partials does the accumulating.
    let base = select(0u, chunk * p.rows * p.cout, split) + gr * p.cout + co0;
    let add = p.accumulate != 0u && !split;
    if (ok) {
        for (var q = 0u; q < CB; q++) {
            if (co0 + q < p.cout) {
                var v = acc[q];
                if (add) {
                    v += f32(dst[base + q]);
                }
                dst[base + q] = DST(nan_unless_8(v, ss));
            }
        }
    }
}
