// coop_tiles: the cooperative-matrix GEMM body (wgpu's experimental cooperative matrices):
// C (M x N) = A (M x K) x B (K x N) with A and B read as f16, every product accumulated in
// f32 on the matrix units. What A, B and C are comes from the accessor file appended to
// this one: `gemm_coop.wgsl` (strided matrices, alpha and beta) or `conv2d_coop.wgsl` (the
// three convolution passes as implicit GEMMs). It declares Params and the bindings and
// defines coop_m/n/k(z) (the sizes of batch item z, uniform over a workgroup), coop_a(z, row, k) and coop_b(z, k, col) (elements, as
// f16, only asked for inside the sizes) and coop_store(z, row, col, acc) (only inside the
// sizes), z being the workgroup's batch index (wg.z).
//
// The first line gets `enable f16; enable wgpu_cooperative_matrix;` and the launcher
// appends the tile (T = 8 or 16, with the aliases MA, MB, MC for the f16 A, f16 B and f32
// accumulator matrices T x T): one source, two variants, chosen from the adapter's
// `cooperative_matrix_properties()` (wgpu does not check a shader's tiles against it).
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
// accumulator into the row's T x T f32 scratch, and the row's invocations hand the values
// inside M x N to coop_store. Cooperative operations stay in uniform control flow: every
// loop bound comes from Params, and rows differ only in addresses.

// At least the adapter's largest subgroup width (the launcher sets it).
override SG: u32 = 32u;

const BM: u32 = 4u * T;
const BN: u32 = 4u * T;
const BK: u32 = 2u * T;

var<workgroup> tile_a: array<f16, 8u * T * T>; // [BM][BK]
var<workgroup> tile_b: array<f16, 8u * T * T>; // [BK][BN]
var<workgroup> tile_c: array<f32, 4u * T * T>; // 4 rows x [T][T]

// Hand accumulator `acc`, the T x T tile at (row, col) of row y's block, to coop_store.
fn store_tile(acc: MC, y: u32, lane: u32, z: u32, row: u32, col: u32) {
    let scratch = y * T * T;
    let stride = T;
    workgroupBarrier();
    coopStoreT(acc, &tile_c[scratch], stride);
    workgroupBarrier();
    for (var e = lane; e < T * T; e += SG) {
        let r = row + e / T;
        let col_e = col + e % T;
        if (r < coop_m(z) && col_e < coop_n(z)) {
            coop_store(z, r, col_e, tile_c[scratch + e]);
        }
    }
}

@compute @workgroup_size(SG, 4, 1)
fn coop_gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    let z = wg.z;
    let m = coop_m(z);
    let n = coop_n(z);
    let kk_end = coop_k(z);
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

    for (var k0 = 0u; k0 < kk_end; k0 += BK) {
        workgroupBarrier();
        for (var e = li; e < BM * BK; e += threads) {
            // A: consecutive invocations walk k.
            let r = e / BK;
            let gr = row0 + r;
            let gk = k0 + e % BK;
            var va = f16(0.0);
            if (gr < m && gk < kk_end) {
                va = coop_a(z, gr, gk);
            }
            tile_a[e] = va;
            // B: consecutive invocations walk the columns.
            let gkb = k0 + e / BN;
            let gc = col0 + e % BN;
            var vb = f16(0.0);
            if (gkb < kk_end && gc < n) {
                vb = coop_b(z, gkb, gc);
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
    store_tile(c00, y, lane, z, row0 + br, col0 + bc);
    store_tile(c01, y, lane, z, row0 + br, col0 + bc + T);
    store_tile(c10, y, lane, z, row0 + br + T, col0 + bc);
    store_tile(c11, y, lane, z, row0 + br + T, col0 + bc + T);
}
