//! ReLU backward (in place) and residual adds on flat f32 or f16 tensors (see
//! `shaders/elementwise.wgsl`; the operands of one launch share their dtype, f16 sums are
//! formed in f32 and rounded once). Shapes only need equal element counts.

use super::{ELEMENTWISE, ELEMENTWISE_F16};
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
    let (dtype, module) = match tensors[0].dtype {
        DType::F16 => (DType::F16, &ELEMENTWISE_F16),
        _ => (DType::F32, &ELEMENTWISE),
    };
    for (i, t) in tensors.iter().enumerate() {
        let role = format!("operand {i}");
        t.check(entry, &role, dtype, Size::Len(n))?;
    }
    if n > u32::MAX as usize {
        return Err(Error::invalid_in(
            "operand",
            format!("`{}` of {entry}", tensors[0].label),
            format!("{n} elements exceed u32 indexing"),
        ));
    }
    let p = ElementwiseParams { n: n as u32 };
    gpu.dispatch(module, entry, &p, tensors, gpu.grid_for(n))
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
