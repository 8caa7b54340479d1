// cast: dst = src * scale, element-wise over n elements, between f32 and f16. The element
// types are the aliases SRC and DST and the direction the constant NARROW, appended by
// src/kernels/mod.rs: CAST_F16 (f32 -> f16, NARROW: the f16 copies of mixed precision) and
// CAST_F32 (f16 -> f32, exact before the scale). The product is formed in f32 and rounded
// once to DST. Narrowing, values whose magnitude rounds past f16's largest finite value
// (65504) become infinities of their sign (explicitly, so that a loss-scale overflow is
// seen as one); NaN stays NaN.
//
// Bindings: 0 uniform Params, 1 src SRC (read), 2 dst DST (read_write).
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)).

struct Params {
    n: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<SRC>;
@group(0) @binding(2) var<storage, read_write> dst: array<DST>;

@compute @workgroup_size(256, 1, 1)
fn cast_values(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let v = f32(src[i]) * p.scale;
    // 65520 = 65504 + half an f16 ulp there: from it on, round-to-nearest overflows.
    if (NARROW && abs(v) >= 65520.0) {
        // An infinity of v's sign: the largest f16 doubled, at run time (a constant
        // expression may not overflow).
        dst[i] = DST(sign(v) * 65504.0) * DST(2.0);
    } else {
        dst[i] = DST(v);
    }
}
