// elementwise: in-place ReLU backward and residual adds on flat tensors of `n` elements,
// stored as `ACT` (f32 or f16: the alias is appended by src/kernels/mod.rs, `ELEMENTWISE`
// and `ELEMENTWISE_F16`); the sums are formed in f32 and rounded once to ACT.
//
// Bindings (binding 0 = uniform Params; the slots are shared by the entry points):
//   1 `io`  read_write   2 `in1` read
// Entry point              1 (io)          2 (in1)
// relu_backward_inplace    dy (in place)   y
// add_inplace              y (in place)    x
// add_relu_inplace         y (in place)    x
//
// Math: relu backward dy *= (y > 0) with y the ReLU output (so the gradient at 0 is 0, as
// PyTorch); add y += x; add_relu y = max(y + x, 0) (residual join).
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)),
// linear index (wg.y * nwg.x + wg.x) * 256 + lid.x, bounds-checked against n.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> io: array<ACT>;
@group(0) @binding(2) var<storage, read> in1: array<ACT>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn relu_backward_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = select(ACT(0.0), io[e], in1[e] > ACT(0.0));
    }
}

@compute @workgroup_size(256, 1, 1)
fn add_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = ACT(f32(io[e]) + f32(in1[e]));
    }
}

@compute @workgroup_size(256, 1, 1)
fn add_relu_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = ACT(max(f32(io[e]) + f32(in1[e]), 0.0));
    }
}
