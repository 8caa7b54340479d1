// conv2d_io_f16: f16 storage of the convolutions' operands src_a and src_b, widened to f32
// on load (appended like conv2d_io_f32.wgsl; the module's first line gets `enable f16;`).
// Every product and sum stays f32: the f16-storage convolutions of mixed precision.

@group(0) @binding(1) var<storage, read> src_a: array<f16>;
@group(0) @binding(2) var<storage, read> src_b: array<f16>;

fn load_a(i: u32) -> f32 {
    return f32(src_a[i]);
}

fn load_b(i: u32) -> f32 {
    return f32(src_b[i]);
}
