// gemm_io_f32: f32 storage of gemm's A and B (appended to gemm.wgsl).

@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;

fn load_a(i: u32) -> f32 {
    return a[i];
}

fn load_b(i: u32) -> f32 {
    return b[i];
}
