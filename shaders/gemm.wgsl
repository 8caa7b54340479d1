// gemm: C = alpha * A x B + beta * C, f32 arithmetic, arbitrary strides.
//
// Bindings: 0 uniform Params, 1 A (read), 2 B (read), 3 C (read_write; read only when beta != 0).
// A and B are declared, with their `load_a` / `load_b`, by the storage file appended to this
// one: `gemm_io_f32.wgsl` (f32 storage) or `gemm_io_f16.wgsl` (f16 storage, widened to f32
// on load: the f16-storage GEMM of mixed precision). C is f32 either way.
// A(m, k) = a[a_off + m * a_rs + k * a_cs], B(k, n) = b[b_off + k * b_rs + n * b_cs],
// C(m, n) = c[c_off + m * c_rs + n]. Transposes are stride swaps, so one pipeline serves
// A x B, A^T x B and A x B^T (weight gradients, data gradients, the class-map head).
// Batched GEMM: workgroup z selects batch item z, offsetting A, B, C by a_bs, b_bs, c_bs.
//
// Dispatch: (ceil(N / 64), ceil(M / 64), batch) workgroups of 16 x 16 threads. Each
// workgroup computes a 64 x 64 tile of C; each thread a 4 x 4 sub-block at rows
// ty + 16 i and columns tx + 16 j (strided, so shared-memory reads are conflict-free and
// global writes coalesce). K advances in tiles of 16 staged through workgroup memory
// (2 x 4 KiB). Out-of-range rows, columns and k are zero-padded on load and skipped on store.

struct Params {
    m: u32, n: u32, k: u32, a_rs: u32,
    a_cs: u32, b_rs: u32, b_cs: u32, c_rs: u32,
    alpha: f32, beta: f32, a_off: u32, b_off: u32,
    c_off: u32, a_bs: u32, b_bs: u32, c_bs: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [TK][TM]
var<workgroup> tile_b: array<f32, 1024>; // [TK][TN]

@compute @workgroup_size(16, 16, 1)
fn gemm(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row0 = wg.y * TM;
    let col0 = wg.x * TN;
    let a_base = p.a_off + wg.z * p.a_bs;
    let b_base = p.b_off + wg.z * p.b_bs;
    let c_base = p.c_off + wg.z * p.c_bs;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var t = 0u; t < 4u; t++) {
            let e = li + t * 256u;
            // A tile: consecutive threads walk k when A is row-major (a_cs = 1).
            let r = e / TK;
            let kk = e % TK;
            let gr = row0 + r;
            let gk = k0 + kk;
            var va = 0.0;
            if (gr < p.m && gk < p.k) {
                va = load_a(a_base + gr * p.a_rs + gk * p.a_cs);
            }
            tile_a[kk * TM + r] = va;
            // B tile: consecutive threads walk n (B row-major, b_cs = 1).
            let kb = e / TN;
            let cb = e % TN;
            let gkb = k0 + kb;
            let gc = col0 + cb;
            var vb = 0.0;
            if (gkb < p.k && gc < p.n) {
                vb = load_b(b_base + gkb * p.b_rs + gc * p.b_cs);
            }
            tile_b[kb * TN + cb] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk * TM + lid.y + 16u * i];
                bv[i] = tile_b[kk * TN + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], bv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col < p.n) {
                let idx = c_base + r * p.c_rs + col;
                var v = p.alpha * acc[i * 4u + j];
                if (p.beta != 0.0) {
                    v += p.beta * c[idx];
                }
                c[idx] = v;
            }
        }
    }
}
