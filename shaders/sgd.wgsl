// sgd: one SGD-with-momentum step on one parameter tensor (PyTorch SGD: dampening 0,
// nesterov off), updating the parameter and its velocity in place.
//
// Bindings: 0 uniform Params, 1 param (read_write), 2 velocity (read_write), 3 grad (read),
// 4 hyper (read): f32 x 4 = [lr, momentum, weight_decay, grad_scale], written by the trainer
// once per step and shared by every parameter (so a step's learning rate never needs new
// dispatches or uniform writes per tensor).
// Math: g = grad * grad_scale + wd * param (wd = 0 when apply_decay == 0);
// v = momentum * v + g; param -= lr * v.
// sgd_step_amp (mixed precision) also binds 5 amp (read, u32 x 4: the loss-scaling state of
// amp.wgsl): it leaves param and v untouched when amp[3] flags an overflow this step, and
// otherwise uses grad * (grad_scale / S), S = the loss scale (a power of two) amp[0].
// Dispatch: one thread per element, workgroups of 256 on a 2-D grid (gpu.grid_for(n)),
// linear index (wg.y * nwg.x + wg.x) * 256 + lid.x, bounds-checked against n.

struct Params {
    n: u32,
    apply_decay: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> velocity: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read> hyper: array<f32, 4>;
@group(0) @binding(5) var<storage, read> amp: array<u32, 4>;

@compute @workgroup_size(256, 1, 1)
fn sgd_step(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (e >= p.n) {
        return;
    }
    let lr = hyper[0];
    let momentum = hyper[1];
    let wd = select(0.0, hyper[2], p.apply_decay != 0u);
    let scale = hyper[3];
    let w = param[e];
    let g = fma(grad[e], scale, wd * w);
    let v = fma(momentum, velocity[e], g);
    velocity[e] = v;
    param[e] = w - lr * v;
}

@compute @workgroup_size(256, 1, 1)
fn sgd_step_amp(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (e >= p.n || amp[3] != 0u) {
        return;
    }
    let lr = hyper[0];
    let momentum = hyper[1];
    let wd = select(0.0, hyper[2], p.apply_decay != 0u);
    let scale = hyper[3] / bitcast<f32>(amp[0]);
    let w = param[e];
    let g = fma(grad[e], scale, wd * w);
    let v = fma(momentum, velocity[e], g);
    velocity[e] = v;
    param[e] = w - lr * v;
}
