// gemm_io_f16: f16 storage of gemm's A and B (appended to gemm.wgsl, whose first line gets
// `enable f16;`), widened to f32 on load: every product and sum stays f32.

@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;

fn load_a(i: u32) -> f32 {
    return f32(a[i]);
}

fn load_b(i: u32) -> f32 {
    return f32(b[i]);
}
