//! One launcher per shader: a `#[repr(C)]` Pod parameter block matching the WGSL `Params`
//! struct, and functions that build [`Dispatch`](crate::gpu::Dispatch)es at setup time.

pub mod amp;
pub mod batchnorm;
pub mod cast;
pub mod conv2d;
pub mod elementwise;
pub mod gemm;
pub mod pool;
pub mod sgd;

use crate::gpu::ShaderSource;

macro_rules! shader {
    ($name:literal) => {
        ShaderSource {
            name: $name,
            source: include_str!(concat!("../../shaders/", $name, ".wgsl")),
        }
    };
    // A shader with declarations shared with others, appended (not prepended, so the
    // shader's own line numbers hold in error messages).
    ($name:literal + $common:literal) => {
        ShaderSource {
            name: $name,
            source: concat!(
                include_str!(concat!("../../shaders/", $name, ".wgsl")),
                "\n",
                include_str!(concat!("../../shaders/", $common, ".wgsl")),
            ),
        }
    };
}

/// A shader over activations stored as `ACT`: `$file` with `alias ACT = f32;` (or f16,
/// with `enable f16;` on the first line, before the file's opening comment, so line numbers
/// in errors stay the file's own) appended. Statistics, parameters and sums stay f32.
macro_rules! act {
    ($name:literal, $file:literal, f32) => {
        ShaderSource {
            name: $name,
            source: concat!(
                include_str!(concat!("../../shaders/", $file, ".wgsl")),
                "\nalias ACT = f32;\n",
            ),
        }
    };
    ($name:literal, $file:literal, f16) => {
        ShaderSource {
            name: $name,
            source: concat!(
                "enable f16; ",
                include_str!(concat!("../../shaders/", $file, ".wgsl")),
                "\nalias ACT = f16;\n",
            ),
        }
    };
}

pub(crate) const AMP: ShaderSource = shader!("amp");
pub(crate) const AMP_CHECK: ShaderSource = shader!("amp_check");
pub(crate) const BATCHNORM: ShaderSource = act!("batchnorm", "batchnorm", f32);
/// Batch norm over f16 activations (f32 statistics, parameters and sums).
pub(crate) const BATCHNORM_F16: ShaderSource = act!("batchnorm_f16", "batchnorm", f16);
/// A convolution shader: `$file`, then `conv2d_common.wgsl`, the operands' storage file
/// `$io` and the result's element type `DST` appended (so the file's own line numbers hold
/// in error messages), `$enable` on the first line.
macro_rules! conv {
    ($name:literal, $enable:literal, $file:literal, $io:literal, $dst:literal) => {
        ShaderSource {
            name: $name,
            source: concat!(
                $enable,
                include_str!(concat!("../../shaders/", $file, ".wgsl")),
                "\n",
                include_str!("../../shaders/conv2d_common.wgsl"),
                "\n",
                include_str!(concat!("../../shaders/", $io, ".wgsl")),
                "\nalias DST = ",
                $dst,
                ";\n",
            ),
        }
    };
}

pub(crate) const CONV2D: ShaderSource = conv!("conv2d", "", "conv2d", "conv2d_io_f32", "f32");
pub(crate) const CONV2D_COMMON: ShaderSource = ShaderSource {
    name: "conv2d_common",
    source: concat!(
        include_str!("../../shaders/conv2d_common.wgsl"),
        "\nalias DST = f32;\n"
    ),
};
pub(crate) const CONV2D_SUBGROUP: ShaderSource = conv!(
    "conv2d_subgroup",
    "",
    "conv2d_subgroup",
    "conv2d_io_f32",
    "f32"
);
/// The convolutions over f16 operands with an f32 result (the weight gradient), f32
/// arithmetic.
pub(crate) const CONV2D_F16: ShaderSource = conv!(
    "conv2d_f16",
    "enable f16; ",
    "conv2d",
    "conv2d_io_f16",
    "f32"
);
pub(crate) const CONV2D_SUBGROUP_F16: ShaderSource = conv!(
    "conv2d_subgroup_f16",
    "enable f16; ",
    "conv2d_subgroup",
    "conv2d_io_f16",
    "f32"
);
/// The same with an f16 result, rounded once from the f32 sum (the forward pass and the
/// data gradient of mixed precision).
pub(crate) const CONV2D_F16_OUT: ShaderSource = conv!(
    "conv2d_f16_out",
    "enable f16; ",
    "conv2d",
    "conv2d_io_f16",
    "f16"
);
pub(crate) const CONV2D_SUBGROUP_F16_OUT: ShaderSource = conv!(
    "conv2d_subgroup_f16_out",
    "enable f16; ",
    "conv2d_subgroup",
    "conv2d_io_f16",
    "f16"
);
pub(crate) const CONV2D_IO_F32: ShaderSource = shader!("conv2d_io_f32");
pub(crate) const CONV2D_IO_F16: ShaderSource = ShaderSource {
    name: "conv2d_io_f16",
    source: concat!(
        "enable f16; ",
        include_str!("../../shaders/conv2d_io_f16.wgsl")
    ),
};
/// `shaders/cast.wgsl` f32 -> f16 (overflow to infinities).
pub(crate) const CAST_F16: ShaderSource = ShaderSource {
    name: "cast_f16",
    source: concat!(
        "enable f16; ",
        include_str!("../../shaders/cast.wgsl"),
        "\nalias SRC = f32;\nalias DST = f16;\nconst NARROW: bool = true;\n"
    ),
};
/// `shaders/cast.wgsl` f16 -> f32.
pub(crate) const CAST_F32: ShaderSource = ShaderSource {
    name: "cast_f32",
    source: concat!(
        "enable f16; ",
        include_str!("../../shaders/cast.wgsl"),
        "\nalias SRC = f16;\nalias DST = f32;\nconst NARROW: bool = false;\n"
    ),
};
pub(crate) const DIVERSIFY: ShaderSource = shader!("diversify");
pub(crate) const ELEMENTWISE: ShaderSource = act!("elementwise", "elementwise", f32);
pub(crate) const ELEMENTWISE_F16: ShaderSource = act!("elementwise_f16", "elementwise", f16);
pub const GEMM: ShaderSource = ShaderSource {
    name: "gemm",
    source: concat!(
        include_str!("../../shaders/gemm.wgsl"),
        "\n",
        include_str!("../../shaders/gemm_io_f32.wgsl"),
    ),
};
/// `gemm` over f16 storage (f32 arithmetic). `enable f16;` goes on the first line, before
/// the file's opening comment, so line numbers in errors stay the file's own.
pub(crate) const GEMM_F16: ShaderSource = ShaderSource {
    name: "gemm_f16",
    source: concat!(
        "enable f16; ",
        include_str!("../../shaders/gemm.wgsl"),
        "\n",
        include_str!("../../shaders/gemm_io_f16.wgsl"),
    ),
};
pub(crate) const GEMM_IO_F32: ShaderSource = shader!("gemm_io_f32");
pub(crate) const GEMM_IO_F16: ShaderSource = ShaderSource {
    name: "gemm_io_f16",
    source: concat!(
        "enable f16; ",
        include_str!("../../shaders/gemm_io_f16.wgsl")
    ),
};

/// Side of the cooperative-matrix tiles (f16 x f16 -> f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoopTile {
    T8,
    T16,
}

impl CoopTile {
    /// The largest tile `gpu` lists (and whose virtual-subgroup width exists), if any.
    pub fn best(gpu: &crate::gpu::Gpu) -> Option<CoopTile> {
        [CoopTile::T16, CoopTile::T8]
            .into_iter()
            .find(|t| t.available(gpu))
    }

    pub fn available(self, gpu: &crate::gpu::Gpu) -> bool {
        let c = gpu.features.coop_f16_f32;
        gpu.coop_lanes().is_some()
            && match self {
                CoopTile::T8 => c.t8,
                CoopTile::T16 => c.t16,
            }
    }

    /// Matrix side.
    pub fn side(self) -> u32 {
        match self {
            CoopTile::T8 => 8,
            CoopTile::T16 => 16,
        }
    }

    /// Side of a workgroup's output tile (2 x 2 accumulators per virtual subgroup, 2 x 2
    /// virtual subgroups).
    pub fn workgroup_tile(self) -> u32 {
        4 * self.side()
    }

    /// The override constants of every `coop_tiles.wgsl` pipeline on `gpu`: the
    /// virtual-subgroup width `SG` ([`crate::gpu::Gpu::coop_lanes`]; 64, the widest, where the adapter
    /// has none, which [`CoopTile::available`] already refuses).
    pub fn constants(gpu: &crate::gpu::Gpu) -> [(&'static str, f64); 1] {
        [("SG", gpu.coop_lanes().unwrap_or(64) as f64)]
    }
}

/// A cooperative-matrix kernel: `shaders/coop_tiles.wgsl` (enables on its first line) with
/// the accessor files `$io` (the accessors, then what they share with other kernels) and the
/// tile header of side `$t` appended (and `$extra` declarations, e.g. the convolution pass).
macro_rules! coop {
    ($name:literal, [$($io:literal),+], $t:literal, $extra:literal) => {
        ShaderSource {
            name: $name,
            source: concat!(
                "enable f16; enable wgpu_cooperative_matrix; ",
                include_str!("../../shaders/coop_tiles.wgsl"),
                "\n",
                $(include_str!(concat!("../../shaders/", $io, ".wgsl")), "\n",)+
                "alias MA = coop_mat",
                $t,
                "x",
                $t,
                "<f16, A>;\nalias MB = coop_mat",
                $t,
                "x",
                $t,
                "<f16, B>;\nalias MC = coop_mat",
                $t,
                "x",
                $t,
                "<f32, C>;\nconst T: u32 = ",
                $t,
                "u;\n",
                $extra,
            ),
        }
    };
}

/// The cooperative-matrix GEMM (`coop_tiles.wgsl` + `gemm_coop.wgsl`), 8 x 8 tiles.
pub(crate) const GEMM_COOP8: ShaderSource = coop!("gemm_coop", ["gemm_coop"], "8", "");
/// The same with 16 x 16 tiles.
pub(crate) const GEMM_COOP16: ShaderSource = coop!("gemm_coop16", ["gemm_coop"], "16", "");
/// The convolution passes on cooperative matrices (`coop_tiles.wgsl` +
/// `conv2d_coop.wgsl`): forward, data gradient, weight gradient, 8 x 8 and 16 x 16 tiles.
pub(crate) const CONV2D_COOP8: [ShaderSource; 3] = [
    coop!(
        "conv2d_coop",
        ["conv2d_coop", "conv2d_common"],
        "8",
        "const PASS: u32 = 0u;\nalias DST = f32;\n"
    ),
    coop!(
        "conv2d_coop_data8",
        ["conv2d_coop", "conv2d_common"],
        "8",
        "const PASS: u32 = 1u;\nalias DST = f32;\n"
    ),
    coop!(
        "conv2d_coop_weight8",
        ["conv2d_coop", "conv2d_common"],
        "8",
        "const PASS: u32 = 2u;\nalias DST = f32;\n"
    ),
];
pub(crate) const CONV2D_COOP16: [ShaderSource; 3] = [
    coop!(
        "conv2d_coop16",
        ["conv2d_coop", "conv2d_common"],
        "16",
        "const PASS: u32 = 0u;\nalias DST = f32;\n"
    ),
    coop!(
        "conv2d_coop_data16",
        ["conv2d_coop", "conv2d_common"],
        "16",
        "const PASS: u32 = 1u;\nalias DST = f32;\n"
    ),
    coop!(
        "conv2d_coop_weight16",
        ["conv2d_coop", "conv2d_common"],
        "16",
        "const PASS: u32 = 2u;\nalias DST = f32;\n"
    ),
];
/// The forward and data-gradient passes on cooperative matrices with an f16 result
/// (rounded once from the f32 accumulator): 8 x 8 and 16 x 16 tiles.
pub(crate) const CONV2D_COOP8_F16_OUT: [ShaderSource; 2] = [
    coop!(
        "conv2d_coop_f16_out8",
        ["conv2d_coop", "conv2d_common"],
        "8",
        "const PASS: u32 = 0u;\nalias DST = f16;\n"
    ),
    coop!(
        "conv2d_coop_data_f16_out8",
        ["conv2d_coop", "conv2d_common"],
        "8",
        "const PASS: u32 = 1u;\nalias DST = f16;\n"
    ),
];
pub(crate) const CONV2D_COOP16_F16_OUT: [ShaderSource; 2] = [
    coop!(
        "conv2d_coop_f16_out16",
        ["conv2d_coop", "conv2d_common"],
        "16",
        "const PASS: u32 = 0u;\nalias DST = f16;\n"
    ),
    coop!(
        "conv2d_coop_data_f16_out16",
        ["conv2d_coop", "conv2d_common"],
        "16",
        "const PASS: u32 = 1u;\nalias DST = f16;\n"
    ),
];
pub(crate) const HEAD: ShaderSource = shader!("head");
pub(crate) const LOSS: ShaderSource = shader!("loss");
pub(crate) const POOL: ShaderSource = act!("pool", "pool", f32);
pub(crate) const POOL_F16: ShaderSource = act!("pool_f16", "pool", f16);
pub const SGD: ShaderSource = shader!("sgd");

/// Every shader the crate embeds (the portability test checks that this covers `shaders/`).
pub const ALL_SHADERS: &[ShaderSource] = &[
    AMP,
    AMP_CHECK,
    BATCHNORM,
    BATCHNORM_F16,
    CAST_F16,
    CAST_F32,
    CONV2D,
    CONV2D_COMMON,
    CONV2D_SUBGROUP,
    CONV2D_F16,
    CONV2D_SUBGROUP_F16,
    CONV2D_F16_OUT,
    CONV2D_SUBGROUP_F16_OUT,
    CONV2D_IO_F32,
    CONV2D_IO_F16,
    DIVERSIFY,
    ELEMENTWISE,
    ELEMENTWISE_F16,
    GEMM,
    GEMM_F16,
    GEMM_IO_F32,
    GEMM_IO_F16,
    GEMM_COOP8,
    GEMM_COOP16,
    CONV2D_COOP8[0],
    CONV2D_COOP8[1],
    CONV2D_COOP8[2],
    CONV2D_COOP16[0],
    CONV2D_COOP16[1],
    CONV2D_COOP16[2],
    CONV2D_COOP8_F16_OUT[0],
    CONV2D_COOP8_F16_OUT[1],
    CONV2D_COOP16_F16_OUT[0],
    CONV2D_COOP16_F16_OUT[1],
    HEAD,
    LOSS,
    POOL,
    POOL_F16,
    SGD,
];

/// Every Rust parameter block matches its WGSL `Params` struct: same size, and member by
/// member the same offset, size, scalar type and name (padding members, named `_...`, may
/// be named differently). The WGSL side comes from naga's reflection of the shader source
/// exactly as the launchers compile it (conv2d's with `conv2d_common.wgsl` appended).
#[cfg(test)]
mod params_layout {
    use super::*;
    use crate::kernels::amp::{AmpCheckParams, AmpParams};
    use crate::kernels::batchnorm::BatchNormParams;
    use crate::kernels::cast::CastParams;
    use crate::kernels::conv2d::Conv2dParams;
    use crate::kernels::elementwise::ElementwiseParams;
    use crate::kernels::gemm::GemmParams;
    use crate::kernels::pool::PoolParams;
    use crate::kernels::sgd::SgdParams;
    use crate::method::diversify::DiversifyParams;
    use crate::method::head::HeadParams;
    use crate::method::loss::LossParams;

    /// One scalar of a parameter block: its name (`field` or `field[i]`), byte offset, size
    /// and type (`u32`, `i32`, `f32`, `f16`).
    #[derive(Clone, Debug, PartialEq)]
    struct Scalar {
        name: String,
        offset: usize,
        size: usize,
        ty: String,
    }

    struct Layout {
        name: String,
        size: usize,
        scalars: Vec<Scalar>,
    }

    /// The type name and size of the field that `get` reaches.
    fn field_type<S, T>(_get: fn(&S) -> &T) -> (&'static str, usize) {
        (std::any::type_name::<T>(), std::mem::size_of::<T>())
    }

    /// A Rust field as scalars: `[u32; 3]` becomes three `u32`s.
    fn rust_scalars(name: &str, offset: usize, ty: &str, size: usize) -> Vec<Scalar> {
        let ty = ty.rsplit("::").next().unwrap_or(ty);
        match ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            Some(inner) => {
                let (elem, count) = inner.split_once(';').expect("array type `[T; N]`");
                let count: usize = count.trim().parse().expect("array length");
                let step = size / count;
                (0..count)
                    .flat_map(|i| {
                        rust_scalars(&format!("{name}[{i}]"), offset + i * step, elem, step)
                    })
                    .collect()
            }
            None => vec![Scalar {
                name: name.to_string(),
                offset,
                size,
                ty: ty.to_string(),
            }],
        }
    }

    /// The layout of a `#[repr(C)]` struct, from `size_of` and `offset_of!`. The pattern
    /// makes the field list exhaustive: a field added to the struct and not listed here
    /// does not compile.
    macro_rules! rust_layout {
        ($t:ident { $($f:ident),* $(,)? }) => {{
            #[allow(dead_code)]
            fn exhaustive(p: $t) {
                let $t { $($f: _),* } = p;
            }
            let mut scalars = Vec::new();
            $(
                let (ty, size) = field_type(|p: &$t| &p.$f);
                scalars.extend(rust_scalars(
                    stringify!($f),
                    std::mem::offset_of!($t, $f),
                    ty,
                    size,
                ));
            )*
            Layout {
                name: stringify!($t).to_string(),
                size: std::mem::size_of::<$t>(),
                scalars,
            }
        }};
    }

    fn wgsl_scalar(s: naga::Scalar) -> String {
        match (s.kind, s.width) {
            (naga::ScalarKind::Uint, 4) => "u32".into(),
            (naga::ScalarKind::Sint, 4) => "i32".into(),
            (naga::ScalarKind::Float, 4) => "f32".into(),
            (naga::ScalarKind::Float, 2) => "f16".into(),
            (k, w) => format!("{k:?}{}", 8 * w as u32),
        }
    }

    /// A WGSL member as scalars (vectors and fixed-size arrays element by element).
    fn wgsl_scalars(
        module: &naga::Module,
        name: &str,
        offset: usize,
        ty: naga::Handle<naga::Type>,
    ) -> Vec<Scalar> {
        let inner = &module.types[ty].inner;
        let size = inner.size(module.to_ctx()) as usize;
        let one = |ty: String| Scalar {
            name: name.to_string(),
            offset,
            size,
            ty,
        };
        match inner {
            naga::TypeInner::Scalar(s) => vec![one(wgsl_scalar(*s))],
            naga::TypeInner::Vector { size: n, scalar } => {
                let w = scalar.width as usize;
                (0..*n as usize)
                    .map(|i| Scalar {
                        name: format!("{name}[{i}]"),
                        offset: offset + i * w,
                        size: w,
                        ty: wgsl_scalar(*scalar),
                    })
                    .collect()
            }
            naga::TypeInner::Array {
                base,
                size: naga::ArraySize::Constant(n),
                stride,
            } => (0..n.get() as usize)
                .flat_map(|i| {
                    wgsl_scalars(
                        module,
                        &format!("{name}[{i}]"),
                        offset + i * *stride as usize,
                        *base,
                    )
                })
                .collect(),
            other => vec![one(format!("{other:?}"))],
        }
    }

    /// The uniform block of `shader` (the one `var<uniform>`), as WGSL lays it out.
    fn wgsl_layout(shader: &ShaderSource) -> Option<Layout> {
        let module = naga::front::wgsl::parse_str(shader.source)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name, e.emit_to_string(shader.source)));
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::Uniform)
            .collect();
        assert!(
            uniforms.len() <= 1,
            "{}: more than one uniform block",
            shader.name
        );
        let (_, var) = uniforms.first()?;
        let ty = &module.types[var.ty];
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{}: the uniform is not a struct", shader.name);
        };
        let scalars = members
            .iter()
            .flat_map(|m| {
                wgsl_scalars(
                    &module,
                    m.name.as_deref().unwrap_or("?"),
                    m.offset as usize,
                    m.ty,
                )
            })
            .collect();
        Some(Layout {
            name: format!(
                "shaders/{}.wgsl struct {}",
                shader.name,
                ty.name.as_deref().unwrap_or("?")
            ),
            size: *span as usize,
            scalars,
        })
    }

    /// Differences between the two layouts, one line each.
    fn differences(rust: &Layout, wgsl: &Layout) -> Vec<String> {
        let mut out = Vec::new();
        if rust.size != wgsl.size {
            out.push(format!(
                "size: {} is {} bytes, {} is {} bytes",
                rust.name, rust.size, wgsl.name, wgsl.size
            ));
        }
        let n = rust.scalars.len().max(wgsl.scalars.len());
        for i in 0..n {
            match (rust.scalars.get(i), wgsl.scalars.get(i)) {
                (Some(r), Some(w)) => {
                    let padding = r.name.starts_with('_') && w.name.starts_with('_');
                    if r.offset != w.offset
                        || r.size != w.size
                        || r.ty != w.ty
                        || (!padding && r.name != w.name)
                    {
                        out.push(format!(
                            "member {i}: Rust `{}: {}` at offset {} ({} bytes), WGSL `{}: {}` \
                             at offset {} ({} bytes)",
                            r.name, r.ty, r.offset, r.size, w.name, w.ty, w.offset, w.size
                        ));
                    }
                }
                (Some(r), None) => out.push(format!(
                    "member {i}: Rust `{}: {}` at offset {} has no WGSL counterpart",
                    r.name, r.ty, r.offset
                )),
                (None, Some(w)) => out.push(format!(
                    "member {i}: WGSL `{}: {}` at offset {} has no Rust counterpart",
                    w.name, w.ty, w.offset
                )),
                (None, None) => {}
            }
        }
        out
    }

    fn rust_layout_for(shader: &str) -> Option<Layout> {
        Some(match shader {
            "amp" => rust_layout!(AmpParams {
                n,
                interval,
                min_scale,
                max_scale,
            }),
            "amp_check" => rust_layout!(AmpCheckParams {
                n0,
                n1,
                n2,
                n3,
                n4,
                n5,
                n6,
                _pad,
            }),
            "batchnorm" | "batchnorm_f16" => rust_layout!(BatchNormParams {
                rows,
                channels,
                chunk_rows,
                chunks,
                eps,
                momentum,
                inv_rows,
                stripes,
                relu,
                accumulate,
                _pad,
            }),
            name if name.starts_with("conv2d") && !name.starts_with("conv2d_io") => {
                rust_layout!(Conv2dParams {
                    n,
                    h,
                    w,
                    cin,
                    cout,
                    kh,
                    kw,
                    stride,
                    pad,
                    oh,
                    ow,
                    rows,
                    cols,
                    red,
                    accumulate,
                    zsplit,
                    kchunk,
                    _pad,
                })
            }
            "diversify" => rust_layout!(DiversifyParams {
                n,
                h,
                w,
                c,
                grid,
                patches_x,
                seed,
                _pad,
                p_peak,
                p_patch,
                alpha,
                _pad2,
            }),
            "elementwise" | "elementwise_f16" => rust_layout!(ElementwiseParams { n }),
            "cast_f16" | "cast_f32" => rust_layout!(CastParams { n, scale, _pad }),
            "gemm" | "gemm_f16" | "gemm_coop" | "gemm_coop16" => rust_layout!(GemmParams {
                m,
                n,
                k,
                a_rs,
                a_cs,
                b_rs,
                b_cs,
                c_rs,
                alpha,
                beta,
                a_off,
                b_off,
                c_off,
                a_bs,
                b_bs,
                c_bs,
            }),
            "head" => rust_layout!(HeadParams {
                rows,
                cols,
                accumulate,
                _pad,
            }),
            "loss" => rust_layout!(LossParams {
                n,
                c,
                kp,
                all,
                top5,
                _pad0,
                _pad1,
                _pad2,
            }),
            "pool" | "pool_f16" => rust_layout!(PoolParams {
                n,
                h,
                w,
                c,
                k,
                stride,
                pad,
                oh,
                ow,
                total,
            }),
            "sgd" => rust_layout!(SgdParams { n, apply_decay }),
            _ => return None,
        })
    }

    #[test]
    fn every_params_struct_matches_its_wgsl_struct() {
        let mut problems = Vec::new();
        let mut checked = 0;
        for shader in ALL_SHADERS {
            match (rust_layout_for(shader.name), wgsl_layout(shader)) {
                (Some(rust), Some(wgsl)) => {
                    checked += 1;
                    for d in differences(&rust, &wgsl) {
                        problems.push(format!("{} vs {}: {d}", rust.name, wgsl.name));
                    }
                }
                (None, Some(wgsl)) => problems.push(format!(
                    "{} has no Rust parameter block listed in this test",
                    wgsl.name
                )),
                (Some(rust), None) => problems.push(format!(
                    "{} is listed for shaders/{}.wgsl, which has no uniform block",
                    rust.name, shader.name
                )),
                (None, None) => {}
            }
        }
        assert!(problems.is_empty(), "\n{}", problems.join("\n"));
        // The storage declarations appended to gemm.wgsl and the convolutions are the only
        // files without one.
        let fragments = [
            GEMM_IO_F32.name,
            GEMM_IO_F16.name,
            CONV2D_IO_F32.name,
            CONV2D_IO_F16.name,
        ];
        assert_eq!(
            checked + fragments.len(),
            ALL_SHADERS.len(),
            "every shader but {fragments:?} has a Params block"
        );
    }

    #[test]
    fn a_changed_field_is_reported() {
        // The comparison itself: a WGSL layout with `eps` as u32 and `_p2` dropped.
        let rust = rust_layout_for("batchnorm").unwrap();
        let mut wgsl = wgsl_layout(&BATCHNORM).unwrap();
        wgsl.scalars[4].ty = "u32".into();
        wgsl.scalars.pop();
        wgsl.size -= 4;
        let d = differences(&rust, &wgsl);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(d[0].contains("size"), "{d:#?}");
        assert!(
            d[1].contains("`eps: f32`") && d[1].contains("`eps: u32`"),
            "{d:#?}"
        );
        assert!(
            d[2].contains("_pad[1]") && d[2].contains("no WGSL"),
            "{d:#?}"
        );
        // Two fields of the same type swapped are caught by name.
        let mut swapped = wgsl_layout(&POOL).unwrap();
        let (a, b) = (
            swapped.scalars[1].name.clone(),
            swapped.scalars[2].name.clone(),
        );
        swapped.scalars[1].name = b;
        swapped.scalars[2].name = a;
        assert_eq!(
            differences(&rust_layout_for("pool").unwrap(), &swapped).len(),
            2
        );
    }
}
