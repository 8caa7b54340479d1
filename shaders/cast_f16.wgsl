// cast_f16: dst (f16) = src (f32) * scale, element-wise over n elements: the f16 copies of
// mixed precision (weights each step, gradients times the loss scale). Values whose
// magnitude rounds past f16's largest finite value (65504) become infinities of their sign
// (explicitly, so that a loss-scale overflow is seen as one); NaN stays NaN.
//
// Bindings: 0 uniform Params, 1 src f32 (read), 2 dst f16 (read_write).
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)).

struct Params {
    n: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f16>;

@compute @workgroup_size(256, 1, 1)
fn cast_f16(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let v = src[i] * p.scale;
    // 65520 = 65504 + half an f16 ulp there: from it on, round-to-nearest overflows.
    if (abs(v) >= 65520.0) {
        // An infinity of v's sign: the largest f16 doubled, at run time (a constant
        // expression may not overflow).
        dst[i] = f16(sign(v) * 65504.0) * f16(2.0);
    } else {
        dst[i] = f16(v);
    }
}
