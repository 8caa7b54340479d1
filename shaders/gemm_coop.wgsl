// gemm_coop: C = alpha * A x B + beta * C on the GPU's matrix units (wgpu's experimental
// cooperative matrices): A and B f16, every product accumulated in f32, C f32. Same
// Params, strides and bindings as gemm.wgsl, so the launcher treats the two alike.
//
// The first line gets `enable f16; enable wgpu_cooperative_matrix;` and the launcher
// appends the tile (T = 8 or 16, with the aliases MA, MB, MC for the f16 A, f16 B and f32
// accumulator matrices T x T): one source, two variants, chosen from the adapter's
// `cooperative_matrix_properties()` (wgpu does not check a shader's tiles against it).
//
// Bindings: 0 uniform Params, 1 A f16 (read), 2 B f16 (read), 3 C f32 (read_write; read
// only when beta != 0). A(m, k) = a[a_off + m * a_rs + k * a_cs], B(k, n) = b[b_off + k *
// b_rs + n * b_cs], C(m, n) = c[c_off + m * c_rs + n]; batch item z offsets by a_bs, b_bs,
// c_bs.
//
// Dispatch: (ceil(N / BN), ceil(M / BM), batch) workgroups of SG x 4 invocations, where
// BM = BN = 4 T and the override SG is at least the adapter's largest subgroup width, so
// every subgroup lies within one row y of the workgroup (invocations are numbered x first).
// Row y is a "virtual subgroup" owning a 2T x 2T block of the workgroup's tile: four T x T
// accumulators. Should a real subgroup be narrower than SG, the row's subgroups compute
// the same block redundantly and store equal values; the result is the same.
//
// Per K step of BK = 2T: all invocations stage A (BM x BK) and B (BK x BN) into workgroup
// memory as f16, zero outside M, N, K (so no shape has to divide the tiles, and the
// cooperative loads never read out of bounds); each row then multiplies its block with
// coopLoadT (row-major, stride in elements) and coopMultiplyAdd. The epilogue stores each
// accumulator into the row's T x T f32 scratch, and the row's invocations apply alpha,
// beta and the bounds on the way to C. Cooperative operations stay in uniform control
// flow: every loop bound comes from Params, and rows differ only in addresses.

struct Params {
    m: u32, n: u32, k: u32, a_rs: u32,
    a_cs: u32, b_rs: u32, b_cs: u32, c_rs: u32,
    alpha: f32, beta: f32, a_off: u32, b_off: u32,
    c_off: u32, a_bs: u32, b_bs: u32, c_bs: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// At least the adapter's largest subgroup width (the launcher sets it).
override SG: u32 = 32u;

const BM: u32 = 4u * T;
const BN: u32 = 4u * T;
const BK: u32 = 2u * T;

var<workgroup> tile_a: array<f16, 8u * T * T>; // [BM][BK]
var<workgroup> tile_b: array<f16, 8u * T * T>; // [BK][BN]
var<workgroup> tile_c: array<f32, 4u * T * T>; // 4 rows x [T][T]

// Store accumulator `acc`, the (i, j) T x T tile of row y's block, into C.
fn store_tile(acc: MC, y: u32, lane: u32, row: u32, col: u32, c_base: u32) {
    let scratch = y * T * T;
    let stride = T;
    workgroupBarrier();
    coopStoreT(acc, &tile_c[scratch], stride);
    workgroupBarrier();
    for (var e = lane; e < T * T; e += SG) {
        let r = row + e / T;
        let col_e = col + e % T;
        if (r < p.m && col_e < p.n) {
            let idx = c_base + r * p.c_rs + col_e;
            var v = p.alpha * tile_c[scratch + e];
            if (p.beta != 0.0) {
                v += p.beta * c[idx];
            }
            c[idx] = v;
        }
    }
}

@compute @workgroup_size(SG, 4, 1)
fn gemm_coop(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let a_base = p.a_off + wg.z * p.a_bs;
    let b_base = p.b_off + wg.z * p.b_bs;
    let c_base = p.c_off + wg.z * p.c_bs;
    let threads = 4u * SG;
    // Row y's block within the tile: rows br .. br + 2T, columns bc .. bc + 2T.
    let y = lid.y;
    let br = (y / 2u) * 2u * T;
    let bc = (y % 2u) * 2u * T;

    // Zero accumulators, loaded from zeroed scratch.
    for (var e = li; e < 4u * T * T; e += threads) {
        tile_c[e] = 0.0;
    }
    workgroupBarrier();
    let zero_at = 0u;
    let zero_stride = T;
    var c00 = coopLoadT<MC>(&tile_c[zero_at], zero_stride);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        workgroupBarrier();
        for (var e = li; e < BM * BK; e += threads) {
            // A: consecutive invocations walk k (A row-major, a_cs = 1).
            let r = e / BK;
            let kk = e % BK;
            let gr = row0 + r;
            let gk = k0 + kk;
            var va = f16(0.0);
            if (gr < p.m && gk < p.k) {
                va = a[a_base + gr * p.a_rs + gk * p.a_cs];
            }
            tile_a[e] = va;
            // B: consecutive invocations walk n (B row-major, b_cs = 1).
            let kb = e / BN;
            let cb = e % BN;
            let gkb = k0 + kb;
            let gc = col0 + cb;
            var vb = f16(0.0);
            if (gkb < p.k && gc < p.n) {
                vb = b[b_base + gkb * p.b_rs + gc * p.b_cs];
            }
            tile_b[e] = vb;
        }
        workgroupBarrier();
        for (var ks = 0u; ks < BK; ks += T) {
            let a_stride = BK;
            let b_stride = BN;
            let a0_at = br * BK + ks;
            let a1_at = (br + T) * BK + ks;
            let b0_at = ks * BN + bc;
            let b1_at = ks * BN + bc + T;
            let a0 = coopLoadT<MA>(&tile_a[a0_at], a_stride);
            let a1 = coopLoadT<MA>(&tile_a[a1_at], a_stride);
            let b0 = coopLoadT<MB>(&tile_b[b0_at], b_stride);
            let b1 = coopLoadT<MB>(&tile_b[b1_at], b_stride);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
    }

    let lane = lid.x;
    store_tile(c00, y, lane, row0 + br, col0 + bc, c_base);
    store_tile(c01, y, lane, row0 + br, col0 + bc + T, c_base);
    store_tile(c10, y, lane, row0 + br + T, col0 + bc, c_base);
    store_tile(c11, y, lane, row0 + br + T, col0 + bc + T, c_base);
}
