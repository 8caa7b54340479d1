// conv2d_common: declarations shared by conv2d.wgsl and conv2d_subgroup.wgsl, appended to
// each of them when they are embedded (src/kernels/mod.rs), so their line numbers in error
// messages stay those of their own files. It also stands alone as a module with no entry
// points (the portability test validates and translates it like the others).
//
// Layouts: x (N, H, W, Cin), w (KH, KW, Cin, Cout), y (N, OH, OW, Cout), f32, row-major.
// Bindings: 0 uniform Params, 1 src_a (read), 2 src_b (read), 3 dst (read_write); what they
// hold depends on the entry point (see each file's header). src_a and src_b, read through
// load_a / load_b, are declared by the storage file appended after this one:
// conv2d_io_f32.wgsl (f32) or conv2d_io_f16.wgsl (f16, widened to f32 on load: the
// f16-storage convolutions of mixed precision, same arithmetic). dst holds `DST`, appended
// last (src/kernels/mod.rs): f32, or f16 for the forward pass and the data gradient of
// mixed precision, each result rounded once from its f32 sum.

struct Params {
    n: u32, h: u32, w: u32, cin: u32,
    cout: u32, kh: u32, kw: u32, stride: u32,
    pad: u32, oh: u32, ow: u32, rows: u32,
    cols: u32, red: u32, accumulate: u32, zsplit: u32,
    kchunk: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> dst: array<DST>;

// The input window of output pixel `pix` = (n, oy, ox): the offset of x[n, 0, 0, 0] and the
// window's top-left input coordinates oy * stride - pad, ox * stride - pad.
struct Window {
    xb: u32,
    iy: i32,
    ix: i32,
}

fn window_of(pix: u32) -> Window {
    let ohw = p.oh * p.ow;
    let n = pix / ohw;
    let rem = pix - n * ohw;
    let oy = rem / p.ow;
    let ox = rem - oy * p.ow;
    return Window(
        n * p.h * p.w * p.cin,
        i32(oy * p.stride) - i32(p.pad),
        i32(ox * p.stride) - i32(p.pad),
    );
}

// Stride phase `phase` = ry * s + rx of the data gradient. dx[iy] receives dy[oy] through
// tap ky only when iy + pad - ky = oy * s, so ky = (iy + pad) mod s (+ multiples of s). The
// phase's input pixels are iy = iy0 + s jy (jy < cy), ix = ix0 + s jx (jx < cx); its taps
// ky = ry + s b (b < nky), kx = rx + s d (d < nkx); input pixel (jy, jx) reads dy row
// ay0 + jy - b and column ax0 + jx - d (exact divisions), when inside dy.
struct Phase {
    ry: u32, rx: u32,
    iy0: u32, ix0: u32,
    cy: u32, cx: u32,
    nky: u32, nkx: u32,
    ay0: i32, ax0: i32,
}

fn stride_phase(phase: u32) -> Phase {
    let s = p.stride;
    let ry = phase / s;
    let rx = phase - ry * s;
    let iy0 = (ry + s - p.pad % s) % s;
    let ix0 = (rx + s - p.pad % s) % s;
    return Phase(
        ry, rx, iy0, ix0,
        select(0u, (p.h - 1u - iy0) / s + 1u, iy0 < p.h),
        select(0u, (p.w - 1u - ix0) / s + 1u, ix0 < p.w),
        select(0u, (p.kh - 1u - ry) / s + 1u, ry < p.kh),
        select(0u, (p.kw - 1u - rx) / s + 1u, rx < p.kw),
        i32((iy0 + p.pad - ry) / s),
        i32((ix0 + p.pad - rx) / s),
    );
}

// Weight-gradient row gr = (ky, kx, ci): its input channel, and the offsets ky - pad,
// kx - pad that output pixel (oy, ox) adds to oy * stride, ox * stride to find its input.
struct WeightRow {
    ci: u32,
    off_y: i32,
    off_x: i32,
}

fn weight_row(gr: u32) -> WeightRow {
    let tap = gr / p.cin;
    let ky = tap / p.kw;
    let kx = tap - ky * p.kw;
    return WeightRow(gr - tap * p.cin, i32(ky) - i32(p.pad), i32(kx) - i32(p.pad));
}
