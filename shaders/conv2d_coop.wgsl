// conv2d_coop: the accessors that make coop_tiles.wgsl the three convolution passes as
// implicit GEMMs on the matrix units (operands f16, accumulation f32, output DST: f32, or
// f16 for the forward pass and the data gradient of mixed precision), appended to it with
// conv2d_common.wgsl (Params, the result binding `dst` and the index helpers) and PASS
// (0 forward, 1 data gradient, 2 weight gradient) in the launcher's tile header. Layouts as
// in conv2d_common.wgsl: x (N, H, W, Cin), w (KH, KW, Cin, Cout), y (N, OH, OW, Cout),
// row-major. Params are conv2d's, with rows / cols / red the pass's M / N / K.
//
// Pass      bindings 1, 2, 3 (f16, f16, DST)  M (row)            N (col)  K (reduction)
// forward   x, w, y                          N OH OW (out pixel) Cout     (ky, kx, ci)
// data      dy, w, dx                        the phase's input   Cin      the phase's
//                                            pixels (n, jy, jx)           taps (b, d, co)
// weight    x, dy, dw                        (ky, kx, ci)        Cout     N OH OW (pixel)
// The data gradient is split into stride^2 phases (batch index z = the phase, see
// conv2d_common.wgsl's stride_phase), as the f32 kernels are: phase (ry, rx) holds the input
// pixels iy = iy0 + s jy, ix = ix0 + s jx, and only its taps ky = ry + s b, kx = rx + s d
// reach them, from dy row ay0 + jy - b and column ax0 + jx - d (zero outside dy), so a
// stride-2 layer does no more multiply-adds than it needs. A phase no tap reaches (K = 0)
// writes zeros (or adds nothing). With p.accumulate != 0 the backward passes add into
// dx / dw.

@group(0) @binding(1) var<storage, read> src_a: array<f16>;
@group(0) @binding(2) var<storage, read> src_b: array<f16>;

fn coop_m(z: u32) -> u32 {
    if (PASS == 1u) {
        let ph = stride_phase(z);
        return p.n * ph.cy * ph.cx;
    }
    return p.rows;
}

fn coop_n(z: u32) -> u32 {
    return p.cols;
}

fn coop_k(z: u32) -> u32 {
    if (PASS == 1u) {
        let ph = stride_phase(z);
        return ph.nky * ph.nkx * p.cout;
    }
    return p.red;
}
// x at output pixel `pix` and weight row `r` = (ky, kx, ci) (zero in the padding).
fn im2col(pix: u32, r: u32) -> f16 {
    let ohw = p.oh * p.ow;
    let n = pix / ohw;
    let rem = pix - n * ohw;
    let oy = rem / p.ow;
    let ox = rem - oy * p.ow;
    let tap = r / p.cin;
    let ci = r - tap * p.cin;
    let ky = tap / p.kw;
    let kx = tap - ky * p.kw;
    let iy = i32(oy * p.stride + ky) - i32(p.pad);
    let ix = i32(ox * p.stride + kx) - i32(p.pad);
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return f16(0.0);
    }
    return src_a[((n * p.h + u32(iy)) * p.w + u32(ix)) * p.cin + ci];
}

// The phase's input pixel `row` as (n, jy, jx).
fn phase_pixel(ph: Phase, row: u32) -> vec3<u32> {
    let cyx = ph.cy * ph.cx;
    let n = row / cyx;
    let rem = row - n * cyx;
    let jy = rem / ph.cx;
    return vec3<u32>(n, jy, rem - jy * ph.cx);
}

// dy reaching the phase's input pixel `row` = (n, jy, jx) through its tap q = (b, d, co):
// dy[n, ay0 + jy - b, ax0 + jx - d, co], zero outside dy.
fn dy_at(ph: Phase, row: u32, q: u32) -> f16 {
    let px = phase_pixel(ph, row);
    let n = px.x;
    let jy = px.y;
    let jx = px.z;
    let tap = q / p.cout;
    let co = q - tap * p.cout;
    let b = tap / ph.nkx;
    let d = tap - b * ph.nkx;
    let oy = ph.ay0 + i32(jy) - i32(b);
    let ox = ph.ax0 + i32(jx) - i32(d);
    if (oy < 0 || ox < 0 || oy >= i32(p.oh) || ox >= i32(p.ow)) {
        return f16(0.0);
    }
    return src_a[((n * p.oh + u32(oy)) * p.ow + u32(ox)) * p.cout + co];
}

// dx's flat index of the phase's input pixel `row`, channel `col`.
fn dx_index(ph: Phase, row: u32, col: u32) -> u32 {
    let px = phase_pixel(ph, row);
    let iy = ph.iy0 + p.stride * px.y;
    let ix = ph.ix0 + p.stride * px.z;
    return ((px.x * p.h + iy) * p.w + ix) * p.cin + col;
}

fn coop_a(z: u32, row: u32, k: u32) -> f16 {
    if (PASS == 0u) {
        return im2col(row, k);
    }
    if (PASS == 1u) {
        return dy_at(stride_phase(z), row, k);
    }
    return im2col(k, row);
}

fn coop_b(z: u32, k: u32, col: u32) -> f16 {
    if (PASS == 0u) {
        return src_b[k * p.cout + col];
    }
    if (PASS == 1u) {
        // w[ky, kx, col, co] for k = (b, d, co), ky = ry + s b, kx = rx + s d.
        let ph = stride_phase(z);
        let tap = k / p.cout;
        let co = k - tap * p.cout;
        let b = tap / ph.nkx;
        let d = tap - b * ph.nkx;
        let ky = ph.ry + p.stride * b;
        let kx = ph.rx + p.stride * d;
        return src_b[((ky * p.kw + kx) * p.cin + col) * p.cout + co];
    }
    return src_b[k * p.cout + col];
}

fn coop_store(z: u32, row: u32, col: u32, acc: f32) {
    var idx = row * p.cols + col;
    if (PASS == 1u) {
        idx = dx_index(stride_phase(z), row, col);
    }
    var v = acc;
    if (p.accumulate != 0u) {
        v += f32(dst[idx]);
    }
    dst[idx] = DST(v);
}
