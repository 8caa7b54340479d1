//! One launcher per shader: a `#[repr(C)]` Pod parameter block matching the WGSL `Params`
//! struct, and functions that build [`Dispatch`](crate::gpu::Dispatch)es at setup time.

pub mod gemm;

use crate::gpu::ShaderSource;

macro_rules! shader {
    ($name:literal) => {
        ShaderSource {
            name: $name,
            source: include_str!(concat!("../../shaders/", $name, ".wgsl")),
        }
    };
}

pub const GEMM: ShaderSource = shader!("gemm");
/// Class-map head: bias add and column sums (bias gradient, loss statistics).
pub const HEAD: ShaderSource = shader!("head");
/// Diversification block and plain global average pooling.
pub const DIVERSIFY: ShaderSource = shader!("diversify");
/// Cross-entropy and gradient-boosting cross-entropy, top-1 / top-5 counts.
pub const LOSS: ShaderSource = shader!("loss");

/// Every shader the crate embeds (the portability test checks that this covers `shaders/`).
pub const ALL_SHADERS: &[ShaderSource] = &[GEMM, HEAD, DIVERSIFY, LOSS];
