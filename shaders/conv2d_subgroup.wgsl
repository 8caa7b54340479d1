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
// shuffle): 3 loads per reduction step instead of 17, for the same 16 multiply-adds.
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
// workgroups of 64 with 64-row tiles (backward_data: z split by stride phase and
// p.zsplit). Every invocation runs the reduction loops to the end, valid or not, so that
// each subgroupBroadcast has its whole subgroup; shared loads past the end of a block are
// clamped in range and their results dropped at the store. The launcher picks these
// kernels only where the adapter's subgroup size is exactly 8; if a subgroup is ever not 8
// wide, the kernels write NaN, which the tests and the training guard catch.

// Params, the bindings and the index helpers (window_of, stride_phase, weight_row) are in
// conv2d_common.wgsl, appended to this file when it is embedded.

// Channels per workgroup: two per lane of an 8-wide subgroup.
const CB: u32 = 16u;

fn nan_unless_8(v: f32, subgroup_size: u32) -> f32 {
    return select(bitcast<f32>(0x7fc00000u), v, subgroup_size == 8u);
}

@compute @workgroup_size(64, 1, 1)
fn conv2d_forward_sg(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(subgroup_invocation_id) sl: u32,
    @builtin(subgroup_size) ss: u32,
) {
    let co0 = wg.x * CB;
    let pix = (wg.z * nwg.y + wg.y) * 64u + lid.x;
    let ok = pix < p.rows;
    let win = window_of(pix);
    let iy0 = win.iy;
    let ix0 = win.ix;
    let xb = win.xb;
    let wlast = p.kh * p.kw * p.cin * p.cout - 1u;
    var acc: array<f32, CB>;
    for (var ky = 0u; ky < p.kh; ky++) {
        let iy = iy0 + i32(ky);
        let y_ok = ok && iy >= 0 && iy < i32(p.h);
        for (var kx = 0u; kx < p.kw; kx++) {
            let ix = ix0 + i32(kx);
            let v_ok = y_ok && ix >= 0 && ix < i32(p.w);
            let xa = select(0u, xb + (u32(iy) * p.w + u32(ix)) * p.cin, v_ok);
            // this lane's weights: channels co0 + sl and co0 + 8 + sl of tap (ky, kx)
            let wb = (ky * p.kw + kx) * p.cin * p.cout + co0 + sl;
            for (var ci = 0u; ci < p.cin; ci++) {
                let xv = select(0.0, src_a[xa + ci], v_ok);
                let wr = wb + ci * p.cout;
                let w_lo = src_b[min(wr, wlast)];
                let w_hi = src_b[min(wr + 8u, wlast)];
                acc[0] = fma(xv, subgroupBroadcast(w_lo, 0u), acc[0]);
                acc[1] = fma(xv, subgroupBroadcast(w_lo, 1u), acc[1]);
                acc[2] = fma(xv, subgroupBroadcast(w_lo, 2u), acc[2]);
                acc[3] = fma(xv, subgroupBroadcast(w_lo, 3u), acc[3]);
                acc[4] = fma(xv, subgroupBroadcast(w_lo, 4u), acc[4]);
                acc[5] = fma(xv, subgroupBroadcast(w_lo, 5u), acc[5]);
                acc[6] = fma(xv, subgroupBroadcast(w_lo, 6u), acc[6]);
                acc[7] = fma(xv, subgroupBroadcast(w_lo, 7u), acc[7]);
                acc[8] = fma(xv, subgroupBroadcast(w_hi, 0u), acc[8]);
                acc[9] = fma(xv, subgroupBroadcast(w_hi, 1u), acc[9]);
                acc[10] = fma(xv, subgroupBroadcast(w_hi, 2u), acc[10]);
                acc[11] = fma(xv, subgroupBroadcast(w_hi, 3u), acc[11]);
                acc[12] = fma(xv, subgroupBroadcast(w_hi, 4u), acc[12]);
                acc[13] = fma(xv, subgroupBroadcast(w_hi, 5u), acc[13]);
                acc[14] = fma(xv, subgroupBroadcast(w_hi, 6u), acc[14]);
                acc[15] = fma(xv, subgroupBroadcast(w_hi, 7u), acc[15]);
            }
        }
    }
    if (ok) {
        for (var r = 0u; r < CB; r++) {
            if (co0 + r < p.cout) {
                dst[pix * p.cout + co0 + r] = nan_unless_8(acc[r], ss);
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
    // Stride phases as in conv2d.wgsl's conv2d_backward_data.
    let s = p.stride;
    let phase = wg.z / p.zsplit;
    let r = ((wg.z - phase * p.zsplit) * nwg.y + wg.y) * 64u + lid.x;
    let ci0 = wg.x * CB;
    let ph = stride_phase(phase);
    let ry = ph.ry; let rx = ph.rx; let iy0 = ph.iy0; let ix0 = ph.ix0;
    let cy = ph.cy; let cx = ph.cx; let nky = ph.nky; let nkx = ph.nkx;
    let ay0 = ph.ay0; let ax0 = ph.ax0;
    let ok = r < p.n * cy * cx;
    let cyx = max(cy * cx, 1u);
    let n = r / cyx;
    let rem = r - n * cyx;
    let jy = rem / max(cx, 1u);
    let jx = rem - jy * cx;
    let a_y = ay0 + i32(jy);
    let a_x = ax0 + i32(jx);
    let yb = n * p.oh * p.ow * p.cout;
    let wlast = p.kh * p.kw * p.cin * p.cout - 1u;
    var acc: array<f32, CB>;
    for (var b = 0u; b < nky; b++) {
        let oy = a_y - i32(b);
        let y_ok = ok && oy >= 0 && oy < i32(p.oh);
        for (var d = 0u; d < nkx; d++) {
            let ox = a_x - i32(d);
            let v_ok = y_ok && ox >= 0 && ox < i32(p.ow);
            let ya = select(0u, yb + (u32(oy) * p.ow + u32(ox)) * p.cout, v_ok);
            // this lane's weights: input channels ci0 + sl and ci0 + 8 + sl of the tap
            let wb = (((ry + s * b) * p.kw + rx + s * d) * p.cin + ci0 + sl) * p.cout;
            let w8 = 8u * p.cout;
            for (var co = 0u; co < p.cout; co++) {
                let dv = select(0.0, src_a[ya + co], v_ok);
                let w_lo = src_b[min(wb + co, wlast)];
                let w_hi = src_b[min(wb + w8 + co, wlast)];
                acc[0] = fma(dv, subgroupBroadcast(w_lo, 0u), acc[0]);
                acc[1] = fma(dv, subgroupBroadcast(w_lo, 1u), acc[1]);
                acc[2] = fma(dv, subgroupBroadcast(w_lo, 2u), acc[2]);
                acc[3] = fma(dv, subgroupBroadcast(w_lo, 3u), acc[3]);
                acc[4] = fma(dv, subgroupBroadcast(w_lo, 4u), acc[4]);
                acc[5] = fma(dv, subgroupBroadcast(w_lo, 5u), acc[5]);
                acc[6] = fma(dv, subgroupBroadcast(w_lo, 6u), acc[6]);
                acc[7] = fma(dv, subgroupBroadcast(w_lo, 7u), acc[7]);
                acc[8] = fma(dv, subgroupBroadcast(w_hi, 0u), acc[8]);
                acc[9] = fma(dv, subgroupBroadcast(w_hi, 1u), acc[9]);
                acc[10] = fma(dv, subgroupBroadcast(w_hi, 2u), acc[10]);
                acc[11] = fma(dv, subgroupBroadcast(w_hi, 3u), acc[11]);
                acc[12] = fma(dv, subgroupBroadcast(w_hi, 4u), acc[12]);
                acc[13] = fma(dv, subgroupBroadcast(w_hi, 5u), acc[13]);
                acc[14] = fma(dv, subgroupBroadcast(w_hi, 6u), acc[14]);
                acc[15] = fma(dv, subgroupBroadcast(w_hi, 7u), acc[15]);
            }
        }
    }
    if (ok) {
        let c_idx = ((n * p.h + iy0 + s * jy) * p.w + ix0 + s * jx) * p.cin + ci0;
        for (var q = 0u; q < CB; q++) {
            if (ci0 + q < p.cin) {
                var v = acc[q];
                if (p.accumulate != 0u) {
                    v += dst[c_idx + q];
                }
                dst[c_idx + q] = nan_unless_8(v, ss);
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
    let gr = (wg.z * nwg.y + wg.y) * 64u + lid.x;
    let ok = gr < p.rows;
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
    var acc: array<f32, CB>;
    // this lane's output gradients: channels co0 + sl and co0 + 8 + sl of each pixel
    var yr = co0 + sl;
    for (var n = 0u; n < p.n; n++) {
        let xb = n * p.h * p.w * p.cin + ci;
        for (var oy = 0u; oy < p.oh; oy++) {
            let iy = i32(oy * p.stride) + off_y;
            let y_ok = ok && iy >= 0 && iy < i32(p.h);
            let xr = xb + u32(iy) * p.w * p.cin;
            for (var ox = 0u; ox < p.ow; ox++) {
                let ix = i32(ox * p.stride) + off_x;
                let v_ok = y_ok && ix >= 0 && ix < i32(p.w);
                let xv = select(0.0, src_a[select(0u, xr + u32(ix) * p.cin, v_ok)], v_ok);
                let d_lo = src_b[min(yr, ylast)];
                let d_hi = src_b[min(yr + 8u, ylast)];
                acc[0] = fma(xv, subgroupBroadcast(d_lo, 0u), acc[0]);
                acc[1] = fma(xv, subgroupBroadcast(d_lo, 1u), acc[1]);
                acc[2] = fma(xv, subgroupBroadcast(d_lo, 2u), acc[2]);
                acc[3] = fma(xv, subgroupBroadcast(d_lo, 3u), acc[3]);
                acc[4] = fma(xv, subgroupBroadcast(d_lo, 4u), acc[4]);
                acc[5] = fma(xv, subgroupBroadcast(d_lo, 5u), acc[5]);
                acc[6] = fma(xv, subgroupBroadcast(d_lo, 6u), acc[6]);
                acc[7] = fma(xv, subgroupBroadcast(d_lo, 7u), acc[7]);
                acc[8] = fma(xv, subgroupBroadcast(d_hi, 0u), acc[8]);
                acc[9] = fma(xv, subgroupBroadcast(d_hi, 1u), acc[9]);
                acc[10] = fma(xv, subgroupBroadcast(d_hi, 2u), acc[10]);
                acc[11] = fma(xv, subgroupBroadcast(d_hi, 3u), acc[11]);
                acc[12] = fma(xv, subgroupBroadcast(d_hi, 4u), acc[12]);
                acc[13] = fma(xv, subgroupBroadcast(d_hi, 5u), acc[13]);
                acc[14] = fma(xv, subgroupBroadcast(d_hi, 6u), acc[14]);
                acc[15] = fma(xv, subgroupBroadcast(d_hi, 7u), acc[15]);
                yr += p.cout;
            }
        }
    }
    if (ok) {
        for (var q = 0u; q < CB; q++) {
            if (co0 + q < p.cout) {
                let idx = gr * p.cout + co0 + q;
                var v = acc[q];
                if (p.accumulate != 0u) {
                    v += dst[idx];
                }
                dst[idx] = nan_unless_8(v, ss);
            }
        }
    }
}
