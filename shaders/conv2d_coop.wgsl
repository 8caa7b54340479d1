// conv2d_coop: the accessors that make coop_tiles.wgsl the three convolution passes as
// implicit GEMMs on the matrix units (operands f16, accumulation f32, output DST: f32, or
// f16 for the forward pass and the data gradient of mixed precision), appended
// to it with PASS (0 forward, 1 data gradient, 2 weight gradient) in the launcher's tile
// header. Layouts as in conv2d_common.wgsl: x (N, H, W, Cin), w (KH, KW, Cin, Cout), y
// (N, OH, OW, Cout), row-major. Params are conv2d's, with rows / cols / red the pass's
// M / N / K.
//
// Pass      bindings 1, 2, 3 (f16, f16, DST)  M (row)            N (col)  K (reduction)
// forward   x, w, y                          N OH OW (out pixel) Cout     (ky, kx, ci)
// data      dy, w, dx                        N H W (in pixel)    Cin      (ky, kx, co)
// weight    x, dy, dw                        (ky, kx, ci)        Cout     N OH OW (pixel)
// The data gradient reads dy at output pixel ((iy + pad - ky) / s, (ix + pad - kx) / s)
// where that divides exactly and lies inside dy, else zero (no stride phases: a stride-2
// layer does 4x the multiply-adds it needs; fine on matrix units, and simple). With
// p.accumulate != 0 the backward passes add into dx / dw.

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    cout: u32, kh: u32, kw: u32, stride: u32,
    pad: u32, oh: u32, ow: u32, rows: u32,
    cols: u32, red: u32, accumulate: u32, zsplit: u32,
    kchunk: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f16>;
@group(0) @binding(2) var<storage, read> src_b: array<f16>;
@group(0) @binding(3) var<storage, read_write> dst: array<DST>; // DST: f32, or f16 (passes 0, 1)

fn coop_m() -> u32 {
    return p.rows;
}

fn coop_n() -> u32 {
    return p.cols;
}

fn coop_k() -> u32 {
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

// dy reaching input pixel `pix` through reduction index q = (ky, kx, co) (zero where no
// output pixel is reached).
fn dy_at(pix: u32, q: u32) -> f16 {
    let hw = p.h * p.w;
    let n = pix / hw;
    let rem = pix - n * hw;
    let iy = rem / p.w;
    let ix = rem - iy * p.w;
    let tap = q / p.cout;
    let co = q - tap * p.cout;
    let ky = tap / p.kw;
    let kx = tap - ky * p.kw;
    let ny = i32(iy + p.pad) - i32(ky);
    let nx = i32(ix + p.pad) - i32(kx);
    if (ny < 0 || nx < 0) {
        return f16(0.0);
    }
    let s = p.stride;
    let oy = u32(ny) / s;
    let ox = u32(nx) / s;
    if (oy * s != u32(ny) || ox * s != u32(nx) || oy >= p.oh || ox >= p.ow) {
        return f16(0.0);
    }
    return src_a[((n * p.oh + oy) * p.ow + ox) * p.cout + co];
}

fn coop_a(z: u32, row: u32, k: u32) -> f16 {
    if (PASS == 0u) {
        return im2col(row, k);
    }
    if (PASS == 1u) {
        return dy_at(row, k);
    }
    return im2col(k, row);
}

fn coop_b(z: u32, k: u32, col: u32) -> f16 {
    if (PASS == 0u) {
        return src_b[k * p.cout + col];
    }
    if (PASS == 1u) {
        // w[ky, kx, col, co] for k = (ky, kx, co).
        let tap = k / p.cout;
        let co = k - tap * p.cout;
        return src_b[(tap * p.cin + col) * p.cout + co];
    }
    return src_b[k * p.cout + col];
}

fn coop_store(z: u32, row: u32, col: u32, acc: f32) {
    let idx = row * p.cols + col;
    var v = acc;
    if (p.accumulate != 0u) {
        v += f32(dst[idx]);
    }
    dst[idx] = DST(v);
}
