// head: the element-wise and reduction parts of the class-map head (a 1x1 convolution
// D -> C with bias). The matrix products themselves run on shaders/gemm.wgsl.
//
// Bindings (shared by both entry points): 0 uniform Params, 1 src (read), 2 dst (read_write).
//
// head_bias_add: dst (rows, cols) += src (cols) broadcast over rows; the class maps after
//   the GEMM (src = bias, dst = maps). One thread per element, workgroups of 256 spread over
//   x and y (linear index (wg.y * nwg.x + wg.x) * 256 + lid.x), bounds-checked.
//
// column_sum: dst[c] = (accumulate ? dst[c] : 0) + sum over r of src[r * cols + c].
//   The bias gradient (src = dmaps (rows, C), dst = dbias (C)) and the batch sum of the
//   per-image loss statistics (src = (N, 4), dst = stats (4)). Dispatch: ceil(cols / 16)
//   workgroups (over x and y) of 16 x 16 threads: lid.x picks one of 16 columns, lid.y
//   one of 16 row lanes; lane l adds rows l, l + 16, l + 32, ... in order, then the 16
//   lanes are combined by a fixed binary tree in workgroup memory. The order of every
//   addition is fixed, so the result is deterministic (bit-identical run to run).

struct Params {
    rows: u32,
    cols: u32,
    accumulate: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn head_bias_add(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + lid.x;
    if (i >= p.rows * p.cols) {
        return;
    }
    dst[i] += src[i % p.cols];
}

const CS_COLS: u32 = 16u;
const CS_LANES: u32 = 16u;

var<workgroup> partial: array<f32, 256>; // [CS_LANES][CS_COLS]

@compute @workgroup_size(16, 16, 1)
fn column_sum(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let block = wg.y * nwg.x + wg.x;
    let col = block * CS_COLS + lid.x;
    let live = col < p.cols;
    var acc = 0.0;
    if (live) {
        for (var r = lid.y; r < p.rows; r += CS_LANES) {
            acc += src[r * p.cols + col];
        }
    }
    partial[lid.y * CS_COLS + lid.x] = acc;
    workgroupBarrier();
    for (var s = CS_LANES / 2u; s > 0u; s >>= 1u) {
        if (lid.y < s) {
            partial[lid.y * CS_COLS + lid.x] += partial[(lid.y + s) * CS_COLS + lid.x];
        }
        workgroupBarrier();
    }
    if (live && lid.y == 0u) {
        var v = partial[lid.x];
        if (p.accumulate != 0u) {
            v = dst[col] + v;
        }
        dst[col] = v;
    }
}
