// elementwise: ReLU forward/backward and residual adds on flat f32 tensors of `n` elements.
//
// Bindings (binding 0 = uniform Params; slots are shared by the entry points so the file
// stays within 8 storage buffers):
//   1 `io`  read_write   2 `in1` read   3 `in2` read
// Entry point              1 (io)          2 (in1)   3 (in2)
// relu_forward             y (written)     x
// relu_forward_inplace     x (in place)
// relu_backward            dx (written)    y         dy
// relu_backward_inplace    dy (in place)   y
// add_inplace              y (in place)    x
// add_relu_inplace         y (in place)    x
//
// Math: relu y = max(x, 0); relu backward dx = dy * (y > 0) with y the ReLU output (so the
// gradient at 0 is 0, as PyTorch); add y += x; add_relu y = max(y + x, 0) (residual join).
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)),
// linear index (wg.y * nwg.x + wg.x) * 256 + lid.x, bounds-checked against n.

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> io: array<f32>;
@group(0) @binding(2) var<storage, read> in1: array<f32>;
@group(0) @binding(3) var<storage, read> in2: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn relu_forward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = max(in1[e], 0.0);
    }
}

@compute @workgroup_size(256, 1, 1)
fn relu_forward_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = max(io[e], 0.0);
    }
}

@compute @workgroup_size(256, 1, 1)
fn relu_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = select(0.0, in2[e], in1[e] > 0.0);
    }
}

@compute @workgroup_size(256, 1, 1)
fn relu_backward_inplace(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        io[e] = select(0.0, io[e], in1[e] > 0.0);
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
        io[e] = io[e] + in1[e];
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
        io[e] = max(io[e] + in1[e], 0.0);
    }
}
