//! SGD with momentum (PyTorch semantics: dampening 0, nesterov off), one dispatch per
//! parameter tensor (see `shaders/sgd.wgsl`).

use super::SGD;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Parameter block of `shaders/sgd.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SgdParams {
    pub(crate) n: u32,
    pub(crate) apply_decay: u32,
}

/// Index of each hyper-parameter in the `hyper` tensor.
pub(crate) const HYPER_LR: usize = 0;
pub(crate) const HYPER_MOMENTUM: usize = 1;
pub(crate) const HYPER_WEIGHT_DECAY: usize = 2;
pub(crate) const HYPER_GRAD_SCALE: usize = 3;
/// Length of the `hyper` tensor.
pub(crate) const HYPER_LEN: usize = 4;

/// Tensors of [`sgd_step`]: `param`, `grad` and `velocity` of one parameter (equal element
/// counts, any shape), `hyper` = `[lr, momentum, weight_decay, grad_scale]` (f32 x 4,
/// written by the trainer once per step and shared by all parameters).
pub struct SgdStep<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub velocity: &'a Tensor,
    pub hyper: &'a Tensor,
    /// Mixed precision: the loss-scaling state ([`crate::kernels::amp`], u32 x 4). The step
    /// then divides the gradient by the loss scale and is skipped (param and velocity left
    /// as they are) when the state flags an overflow.
    pub amp: Option<&'a Tensor>,
}

/// How [`sgd_step`] treats one parameter. [`Default`]: with weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgdOptions {
    /// `false` drops the weight-decay term for this tensor (biases, batch-norm affine
    /// parameters).
    pub apply_decay: bool,
}

impl Default for SgdOptions {
    fn default() -> Self {
        SgdOptions { apply_decay: true }
    }
}

/// One SGD step on `param`:
/// `v = momentum * v + (grad * grad_scale + weight_decay * param)`, `param -= lr * v`
/// (without the `weight_decay` term unless `o.apply_decay`). Updates `param` and
/// `velocity` in place; reads `grad` and `hyper` (and `amp`: see [`SgdStep::amp`]).
pub fn sgd_step(gpu: &Gpu, t: &SgdStep, o: &SgdOptions) -> Result<Dispatch> {
    let n = t.param.numel();
    const L: &str = "sgd_step";
    t.param.check(L, "param", DType::F32, Size::Len(n))?;
    t.grad.check(L, "grad", DType::F32, Size::Len(n))?;
    t.velocity.check(L, "velocity", DType::F32, Size::Len(n))?;
    t.hyper
        .check(L, "hyper", DType::F32, Size::Shape(&[HYPER_LEN]))?;
    if n > u32::MAX as usize {
        return Err(Error::invalid_in(
            "sgd_step parameter",
            format!("`{}`", t.param.label),
            format!("{n} elements exceed u32 indexing"),
        ));
    }
    let p = SgdParams {
        n: n as u32,
        apply_decay: o.apply_decay as u32,
    };
    match t.amp {
        None => gpu.dispatch(
            &SGD,
            "sgd_step",
            &p,
            &[t.param, t.velocity, t.grad, t.hyper],
            gpu.grid_for(n),
        ),
        Some(amp) => {
            crate::kernels::amp::check_state(L, amp)?;
            gpu.dispatch(
                &SGD,
                "sgd_step_amp",
                &p,
                &[t.param, t.velocity, t.grad, t.hyper, amp],
                gpu.grid_for(n),
            )
        }
    }
}
