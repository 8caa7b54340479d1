// amp: dynamic loss scaling of mixed-precision training, kept on the GPU so that no step
// waits for a readback.
//
// State `amp` (u32 x 4, binding 2): [0] the loss scale S (f32 bits), [1] clean steps since
// the scale last changed, [2] skipped steps in all, [3] this step's overflow flag (0 or 1).
// Bindings (binding 0 = uniform Params): 1 `data` read_write f32 (n elements), 2 `amp`.
// Entry point    1 (data)                          what it does
// amp_scale      the loss gradient (dscores)       data *= S, before the backward pass, so
//                                                  f16 activation gradients keep small values
// amp_update     (not bound)                       one thread, after the optimizer: on a
//                flagged step S = max(S / 2, p.min_scale), clean = 0, skipped += 1 (the
//                optimizer skipped the step); else clean += 1 and, after p.interval clean
//                steps, S = min(2 S, p.max_scale), clean = 0; then flag = 0.
// S stays a power of two, so scaling and unscaling are exact in f32. The overflow check
// (flag = 1 when any element of a parameter gradient is NaN or +-inf) is amp_check.wgsl's,
// seven gradients per dispatch.
// The SGD entry `sgd_step_amp` (sgd.wgsl) reads the same state: it skips flagged steps
// and divides the gradient by S.
// Dispatch: amp_scale one thread per element, workgroups of 256 on a 2-D grid
// (gpu.grid_for(n)), linear index (wg.y * nwg.x + wg.x) * 256 + lid.x, bounds-checked
// against n; amp_update one workgroup.

struct Params {
    n: u32,
    interval: u32,
    min_scale: f32,
    max_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> data: array<f32>;
@group(0) @binding(2) var<storage, read_write> amp: array<atomic<u32>, 4>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nwg.x + wg.x) * 256u + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn amp_scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = linear_index(wg, nwg, lid);
    if (e < p.n) {
        data[e] = data[e] * bitcast<f32>(atomicLoad(&amp[0]));
    }
}

@compute @workgroup_size(1, 1, 1)
fn amp_update() {
    let s = bitcast<f32>(atomicLoad(&amp[0]));
    if (atomicLoad(&amp[3]) != 0u) {
        atomicStore(&amp[0], bitcast<u32>(max(s * 0.5, p.min_scale)));
        atomicStore(&amp[1], 0u);
        atomicAdd(&amp[2], 1u);
    } else {
        let clean = atomicLoad(&amp[1]) + 1u;
        if (clean >= p.interval) {
            atomicStore(&amp[0], bitcast<u32>(min(s * 2.0, p.max_scale)));
            atomicStore(&amp[1], 0u);
        } else {
            atomicStore(&amp[1], clean);
        }
    }
    atomicStore(&amp[3], 0u);
}
