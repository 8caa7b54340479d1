// conv2d_io_f32: f32 storage of the convolutions' operands src_a and src_b (appended to
// conv2d.wgsl or conv2d_subgroup.wgsl with conv2d_common.wgsl).

@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;

fn load_a(i: u32) -> f32 {
    return src_a[i];
}

fn load_b(i: u32) -> f32 {
    return src_b[i];
}
