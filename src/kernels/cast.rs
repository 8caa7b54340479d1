//! Conversions between f32 and f16 tensors, with a scale (`shaders/cast.wgsl`): the f16
//! copies of mixed precision and the way back.

use super::{CAST_F16, CAST_F32};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Parameter block of both cast shaders.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CastParams {
    pub n: u32,
    pub scale: f32,
    pub _pad: [u32; 2],
}

/// `dst = src * scale` converted to `dst`'s type: f32 -> f16 (round to nearest; a magnitude
/// that rounds past 65504 becomes an infinity of its sign) or f16 -> f32 (exact, then
/// scaled). Same element count; error for any other pair of types. Overwrites `dst`.
pub fn cast_values(gpu: &Gpu, src: &Tensor, dst: &Tensor, scale: f32) -> Result<Dispatch> {
    const L: &str = "cast_values";
    let n = src.numel();
    let shader = match (src.dtype, dst.dtype) {
        (DType::F32, DType::F16) => &CAST_F16,
        (DType::F16, DType::F32) => &CAST_F32,
        (a, b) => {
            return Err(Error::invalid_in(
                L,
                format!("`{}` -> `{}`", src.label, dst.label),
                format!("converts f32 -> f16 or f16 -> f32, not {a:?} -> {b:?}"),
            ))
        }
    };
    dst.check(L, "destination", dst.dtype, Size::Len(n))?;
    if n > u32::MAX as usize / 2 || !scale.is_finite() {
        return Err(Error::invalid_in(
            L,
            format!("`{}`", src.label),
            format!("{n} elements (at most 2^31) and scale {scale} (finite)"),
        ));
    }
    let p = CastParams {
        n: n as u32,
        scale,
        _pad: [0; 2],
    };
    gpu.dispatch(shader, "cast_values", &p, &[src, dst], gpu.grid_for(n))
}
