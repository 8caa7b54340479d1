// cast_f32: dst (f32) = f32(src (f16)) * scale, element-wise over n elements (exact before
// the scale): reading f16 tensors back into f32 work, e.g. gradients divided by the loss
// scale.
//
// Bindings: 0 uniform Params, 1 src f16 (read), 2 dst f32 (read_write).
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)).

struct Params {
    n: u32,
    scale: f32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f16>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn cast_f32(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    dst[i] = f32(src[i]) * p.scale;
}
