//! ReLU backward (in place) and residual adds on flat f32 tensors (see
//! `shaders/elementwise.wgsl`). Shapes only need equal element counts.

use super::ELEMENTWISE;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Parameter block of `shaders/elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ElementwiseParams {
    pub n: u32,
}

fn launch(gpu: &Gpu, entry: &'static str, tensors: &[&Tensor]) -> Result<Dispatch> {
    let n = tensors[0].numel();
    for (i, t) in tensors.iter().enumerate() {
        let role = format!("operand {i}");
        t.check(entry, &role, DType::F32, Size::Len(n))?;
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid(
            format!("{entry} operand `{}`", tensors[0].label),
            format!("{n} elements exceed u32 indexing"),
        ));
    }
    let p = ElementwiseParams { n: n as u32 };
    gpu.dispatch(&ELEMENTWISE, entry, &p, tensors, gpu.grid_for(n))
}

/// `dy *= (y > 0)` in place, `y` the ReLU output.
pub fn relu_backward_inplace(gpu: &Gpu, y: &Tensor, dy: &Tensor) -> Result<Dispatch> {
    launch(gpu, "relu_backward_inplace", &[dy, y])
}

/// `y += x` (same element count). Accumulates into `y`.
pub fn add_inplace(gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Dispatch> {
    launch(gpu, "add_inplace", &[y, x])
}

/// `y = max(y + x, 0)` (residual join). Updates `y` in place.
pub fn add_relu_inplace(gpu: &Gpu, y: &Tensor, x: &Tensor) -> Result<Dispatch> {
    launch(gpu, "add_relu_inplace", &[y, x])
}
