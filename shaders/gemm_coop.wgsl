// gemm_coop: the accessors that make coop_tiles.wgsl the GEMM C = alpha * A x B + beta * C
// (A and B f16, C f32), with gemm.wgsl's Params, strides and bindings, so the launcher
// treats the two alike. Appended to coop_tiles.wgsl (see its header).
//
// Bindings: 0 uniform Params, 1 A f16 (read), 2 B f16 (read), 3 C f32 (read_write; read
// only when beta != 0). A(m, k) = a[a_off + m * a_rs + k * a_cs], B(k, n) = b[b_off + k *
// b_rs + n * b_cs], C(m, n) = c[c_off + m * c_rs + n]; batch item z offsets by a_bs, b_bs,
// c_bs.

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

fn coop_m(z: u32) -> u32 {
    return p.m;
}

fn coop_n(z: u32) -> u32 {
    return p.n;
}

fn coop_k(z: u32) -> u32 {
    return p.k;
}

fn coop_a(z: u32, row: u32, k: u32) -> f16 {
    return a[p.a_off + z * p.a_bs + row * p.a_rs + k * p.a_cs];
}

fn coop_b(z: u32, k: u32, col: u32) -> f16 {
    return b[p.b_off + z * p.b_bs + k * p.b_rs + col * p.b_cs];
}

fn coop_store(z: u32, row: u32, col: u32, acc: f32) {
    let idx = p.c_off + z * p.c_bs + row * p.c_rs + col;
    var v = p.alpha * acc;
    if (p.beta != 0.0) {
        v += p.beta * c[idx];
    }
    c[idx] = v;
}
