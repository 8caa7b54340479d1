//! SGD with momentum (PyTorch semantics: dampening 0, nesterov off), one dispatch per
//! parameter tensor (see `shaders/sgd.wgsl`).

use super::SGD;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Parameter block of `shaders/sgd.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SgdParams {
    pub n: u32,
    pub apply_decay: u32,
}

/// Index of each hyper-parameter in the `hyper` tensor.
pub const HYPER_LR: usize = 0;
pub const HYPER_MOMENTUM: usize = 1;
pub const HYPER_WEIGHT_DECAY: usize = 2;
pub const HYPER_GRAD_SCALE: usize = 3;
/// Length of the `hyper` tensor.
pub const HYPER_LEN: usize = 4;

/// One SGD step on `param`: with `hyper` = `[lr, momentum, weight_decay, grad_scale]` (f32 x 4,
/// written by the trainer once per step and shared by all parameters),
/// `v = momentum * v + (grad * grad_scale + weight_decay * param)`, `param -= lr * v`.
/// `apply_decay = false` drops the weight-decay term for this tensor (biases, batch-norm
/// affine parameters). Updates `param` and `velocity` in place; reads `grad` and `hyper`.
pub fn sgd_step(
    gpu: &Gpu,
    param: &Tensor,
    grad: &Tensor,
    velocity: &Tensor,
    hyper: &Tensor,
    apply_decay: bool,
) -> Result<Dispatch> {
    let n = param.numel();
    const L: &str = "sgd_step";
    param.check(L, "param", DType::F32, Size::Len(n))?;
    grad.check(L, "grad", DType::F32, Size::Len(n))?;
    velocity.check(L, "velocity", DType::F32, Size::Len(n))?;
    hyper.check(L, "hyper", DType::F32, Size::Shape(&[HYPER_LEN]))?;
    if n > u32::MAX as usize {
        return Err(Error::invalid(
            format!("sgd_step parameter `{}`", param.label),
            format!("{n} elements exceed u32 indexing"),
        ));
    }
    let p = SgdParams {
        n: n as u32,
        apply_decay: apply_decay as u32,
    };
    gpu.dispatch(
        &SGD,
        "sgd_step",
        &p,
        &[param, velocity, grad, hyper],
        gpu.grid_for(n),
    )
}
