//! One launcher per shader: a `#[repr(C)]` Pod parameter block matching the WGSL `Params`
//! struct, and functions that build [`Dispatch`](crate::gpu::Dispatch)es at setup time.

pub mod batchnorm;
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

pub const BATCHNORM: ShaderSource = shader!("batchnorm");
pub const CONV2D: ShaderSource = shader!("conv2d" + "conv2d_common");
pub const CONV2D_COMMON: ShaderSource = shader!("conv2d_common");
pub const CONV2D_SUBGROUP: ShaderSource = shader!("conv2d_subgroup" + "conv2d_common");
pub const DIVERSIFY: ShaderSource = shader!("diversify");
pub const ELEMENTWISE: ShaderSource = shader!("elementwise");
pub const GEMM: ShaderSource = shader!("gemm");
pub const HEAD: ShaderSource = shader!("head");
pub const LOSS: ShaderSource = shader!("loss");
pub const POOL: ShaderSource = shader!("pool");
pub const SGD: ShaderSource = shader!("sgd");

/// Every shader the crate embeds (the portability test checks that this covers `shaders/`).
pub const ALL_SHADERS: &[ShaderSource] = &[
    BATCHNORM,
    CONV2D,
    CONV2D_COMMON,
    CONV2D_SUBGROUP,
    DIVERSIFY,
    ELEMENTWISE,
    GEMM,
    HEAD,
    LOSS,
    POOL,
    SGD,
];
