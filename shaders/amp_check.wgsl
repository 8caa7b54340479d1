// amp_check: the overflow check of dynamic loss scaling (see amp.wgsl) over up to seven
// parameter gradients in one dispatch, so that a network's hundreds of gradients cost a few
// dozen dispatches instead of one each.
//
// Bindings (binding 0 = uniform Params): 1..7 `g0`..`g6` read f32 (gradient i has n_i
// elements; a slot the launcher does not fill repeats gradient 0 with n_i = 0), 8 `amp`
// (u32 x 4, amp.wgsl's state). Sets amp[3] = 1 when any element of any gradient is NaN or
// +-inf (all exponent bits set); never clears it.
// Dispatch: one thread per element of the longest gradient, workgroups of 256 on a 2-D grid
// (gpu.grid_for(max n_i)), linear index (wg.y * nwg.x + wg.x) * 256 + lid.x; each thread
// checks that element of every gradient long enough to have it.

struct Params {
    n0: u32,
    n1: u32,
    n2: u32,
    n3: u32,
    n4: u32,
    n5: u32,
    n6: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g0: array<f32>;
@group(0) @binding(2) var<storage, read> g1: array<f32>;
@group(0) @binding(3) var<storage, read> g2: array<f32>;
@group(0) @binding(4) var<storage, read> g3: array<f32>;
@group(0) @binding(5) var<storage, read> g4: array<f32>;
@group(0) @binding(6) var<storage, read> g5: array<f32>;
@group(0) @binding(7) var<storage, read> g6: array<f32>;
@group(0) @binding(8) var<storage, read_write> amp: array<atomic<u32>, 4>;

// Element e of a gradient of n elements is NaN or infinite (false past its end).
fn bad(v: f32, e: u32, n: u32) -> bool {
    return e < n && (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(256, 1, 1)
fn amp_check(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    // Each read is clamped into its array (robust access would do the same) and counts
    // only inside its gradient.
    let found = bad(g0[min(e, p.n0 - 1u)], e, p.n0)
        || bad(g1[min(e, max(p.n1, 1u) - 1u)], e, p.n1)
        || bad(g2[min(e, max(p.n2, 1u) - 1u)], e, p.n2)
        || bad(g3[min(e, max(p.n3, 1u) - 1u)], e, p.n3)
        || bad(g4[min(e, max(p.n4, 1u) - 1u)], e, p.n4)
        || bad(g5[min(e, max(p.n5, 1u) - 1u)], e, p.n5)
        || bad(g6[min(e, max(p.n6, 1u) - 1u)], e, p.n6);
    if (found) {
        atomicStore(&amp[3], 1u);
    }
}
