// pool: max pooling (k x k window, stride, zero-free padding), forward and backward, NHWC,
// values stored as `ACT` (f32 or f16: the alias is appended by src/kernels/mod.rs, `POOL`
// and `POOL_F16`; the backward's sums are f32, rounded once). (Global average pooling is
// `average_scores` in diversify.wgsl.)
//
// Bindings (binding 0 = uniform Params; the slots are shared by the entry points):
//   1 `dst` read_write ACT   2 `src` read ACT   3 `arg` read_write u32
// Entry point              1 (dst)           2 (src)          3 (arg)
// maxpool_forward          y (N,OH,OW,C)     x (N,H,W,C)      idx (N,OH,OW,C), written
// maxpool_backward         dx (N,H,W,C)      dy (N,OH,OW,C)   idx (N,OH,OW,C), read
//
// Max pool: output (n, oh, ow, c) looks at input rows oh * stride - pad + kh and columns
// ow * stride - pad + kw, kh, kw in [0, k), in row-major order; positions outside the image
// are skipped (padding never wins) and a later value replaces the running max only when it
// is strictly greater (first max wins). idx = ih * W + iw of the max within its image.
// OH = (H + 2 pad - k) / stride + 1 (the launcher requires pad <= k / 2, so every window
// holds at least one input).
// Max pool backward is a gather: input (n, ih, iw, c) sums dy over the outputs whose window
// holds it (oh in [ceil((ih + pad - k + 1) / stride), (ih + pad) / stride], same for ow) and
// whose idx equals ih * W + iw, in ascending (oh, ow) order. No atomics.
// Dispatch: one thread per output element (forward) or input element (backward), in
// workgroups of 256 on a 2-D grid (gpu.grid_for(total)), linear index
// (wg.y * nwg.x + wg.x) * 256 + lid.x, bounds-checked against `total`.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    k: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<ACT>;
@group(0) @binding(2) var<storage, read> src: array<ACT>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn maxpool_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e >= p.total) {
        return;
    }
    let c = e % p.c;
    var t = e / p.c;
    let ow = t % p.ow;
    t = t / p.ow;
    let oh = t % p.oh;
    let n = t / p.oh;
    let base = n * p.h * p.w;
    let h0 = i32(oh * p.stride) - i32(p.pad);
    let w0 = i32(ow * p.stride) - i32(p.pad);
    var best = 0.0;
    var best_i = 0u;
    var found = false;
    for (var kh = 0u; kh < p.k; kh++) {
        let ih = h0 + i32(kh);
        if (ih < 0 || ih >= i32(p.h)) {
            continue;
        }
        for (var kw = 0u; kw < p.k; kw++) {
            let iw = w0 + i32(kw);
            if (iw < 0 || iw >= i32(p.w)) {
                continue;
            }
            let pos = u32(ih) * p.w + u32(iw);
            let v = f32(src[(base + pos) * p.c + c]);
            if (!found || v > best) {
                best = v;
                best_i = pos;
                found = true;
            }
        }
    }
    dst[e] = ACT(best);
    arg[e] = best_i;
}

@compute @workgroup_size(256, 1, 1)
fn maxpool_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e >= p.total) {
        return;
    }
    let c = e % p.c;
    var t = e / p.c;
    let iw = t % p.w;
    t = t / p.w;
    let ih = t % p.h;
    let n = t / p.h;
    let target_pos = ih * p.w + iw;
    // Outputs whose window [o * stride - pad, o * stride - pad + k) holds i.
    let lo_h = i32(ih + p.pad) - i32(p.k) + 1;
    let lo_w = i32(iw + p.pad) - i32(p.k) + 1;
    let s = i32(p.stride);
    let oh0 = u32(select(0, (lo_h + s - 1) / s, lo_h > 0));
    let ow0 = u32(select(0, (lo_w + s - 1) / s, lo_w > 0));
    let oh1 = min((ih + p.pad) / p.stride + 1u, p.oh);
    let ow1 = min((iw + p.pad) / p.stride + 1u, p.ow);
    var acc = 0.0;
    for (var oh = oh0; oh < oh1; oh++) {
        for (var ow = ow0; ow < ow1; ow++) {
            let o = ((n * p.oh + oh) * p.ow + ow) * p.c + c;
            if (arg[o] == target_pos) {
                acc += f32(src[o]);
            }
        }
    }
    dst[e] = ACT(acc);
}
