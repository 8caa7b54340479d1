//! Dynamic loss scaling for mixed-precision training (see `shaders/amp.wgsl`): the loss
//! gradient is multiplied by a power-of-two scale S before the backward pass, so that
//! small gradients survive f16 storage; every parameter gradient is checked for NaN and
//! infinities (`shaders/amp_check.wgsl`, seven per dispatch); the optimizer divides by S and skips the step when one was found
//! ([`crate::kernels::sgd::SgdStep::amp`]); then S halves after an overflow and doubles
//! after `interval` clean steps. The state stays on the GPU: no step waits for a readback.

use super::{AMP, AMP_CHECK};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Parameter block of `shaders/amp.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AmpParams {
    pub(crate) n: u32,
    pub(crate) interval: u32,
    pub(crate) min_scale: f32,
    pub(crate) max_scale: f32,
}

/// Index of each word of the loss-scaling state (u32 x 4).
pub const AMP_SCALE: usize = 0;
pub const AMP_CLEAN: usize = 1;
pub const AMP_SKIPPED: usize = 2;
pub const AMP_OVERFLOW: usize = 3;
/// Length of the state tensor.
pub(crate) const AMP_LEN: usize = 4;

/// The smallest and largest loss scale [`amp_update`] moves between.
pub const MIN_SCALE: f32 = 1.0;
pub const MAX_SCALE: f32 = 16_777_216.0; // 2^24

/// Whether `scale` is a loss scale [`amp_update`] can hold: a power of two in
/// [[`MIN_SCALE`], [`MAX_SCALE`]] (a normal number with no mantissa bits).
pub(crate) fn valid_scale(scale: f32) -> bool {
    scale.is_normal()
        && scale.to_bits() & 0x007f_ffff == 0
        && (MIN_SCALE..=MAX_SCALE).contains(&scale)
}

/// The state's initial words for loss scale `scale` (a power of two): no clean steps, none
/// skipped, no overflow.
pub fn initial_state(scale: f32) -> [u32; AMP_LEN] {
    [scale.to_bits(), 0, 0, 0]
}

/// Error unless `amp` is the u32 x 4 state.
pub(crate) fn check_state(launcher: &str, amp: &Tensor) -> Result<()> {
    amp.check(launcher, "amp", DType::U32, Size::Shape(&[AMP_LEN]))
}

fn elementwise(gpu: &Gpu, entry: &'static str, data: &Tensor, amp: &Tensor) -> Result<Dispatch> {
    let n = data.numel();
    data.check(entry, "data", DType::F32, Size::Len(n))?;
    check_state(entry, amp)?;
    if n > u32::MAX as usize {
        return Err(Error::invalid_in(
            "tensor",
            format!("`{}` of {entry}", data.label),
            format!("{n} elements exceed u32 indexing"),
        ));
    }
    let p = AmpParams {
        n: n as u32,
        ..Default::default()
    };
    gpu.dispatch(&AMP, entry, &p, &[data, amp], gpu.grid_for(n))
}

/// `data *= S` in place (the loss gradient, before the backward pass).
pub fn amp_scale(gpu: &Gpu, data: &Tensor, amp: &Tensor) -> Result<Dispatch> {
    elementwise(gpu, "amp_scale", data, amp)
}

/// Parameter block of `shaders/amp_check.wgsl`: the element counts of its seven gradients.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AmpCheckParams {
    pub(crate) n0: u32,
    pub(crate) n1: u32,
    pub(crate) n2: u32,
    pub(crate) n3: u32,
    pub(crate) n4: u32,
    pub(crate) n5: u32,
    pub(crate) n6: u32,
    pub(crate) _pad: u32,
}

/// Gradients per dispatch of [`amp_check_all`].
pub const CHECK_GROUP: usize = 7;

/// Flags an overflow in `amp` when any element of `grad` is NaN or infinite (reads
/// `grad`; only ever sets the flag).
pub fn amp_check(gpu: &Gpu, grad: &Tensor, amp: &Tensor) -> Result<Dispatch> {
    let mut d = amp_check_all(gpu, &[grad], amp)?;
    Ok(d.remove(0))
}

/// [`amp_check`] for every tensor of `grads`, [`CHECK_GROUP`] per dispatch (record them
/// all before the optimizer). Error for an empty list, an empty tensor or one that is not
/// f32.
pub fn amp_check_all(gpu: &Gpu, grads: &[&Tensor], amp: &Tensor) -> Result<Vec<Dispatch>> {
    const L: &str = "amp_check";
    check_state(L, amp)?;
    if grads.is_empty() {
        return Err(Error::invalid(L, "no gradients to check"));
    }
    let mut out = Vec::new();
    for group in grads.chunks(CHECK_GROUP) {
        let mut n = [0u32; CHECK_GROUP];
        for (i, g) in group.iter().enumerate() {
            let len = g.numel();
            g.check(L, "gradient", DType::F32, Size::Len(len))?;
            if len == 0 || len > u32::MAX as usize {
                return Err(Error::invalid_in(
                    "gradient",
                    format!("`{}` of {L}", g.label),
                    format!("{len} elements: at least 1 and within u32 indexing"),
                ));
            }
            n[i] = len as u32;
        }
        let p = AmpCheckParams {
            n0: n[0],
            n1: n[1],
            n2: n[2],
            n3: n[3],
            n4: n[4],
            n5: n[5],
            n6: n[6],
            _pad: 0,
        };
        // Unused slots repeat the first gradient (n = 0: never read past index 0).
        let mut slots: Vec<(u32, &Tensor)> = (0..CHECK_GROUP)
            .map(|i| (i as u32 + 1, *group.get(i).unwrap_or(&group[0])))
            .collect();
        slots.push((8, amp));
        let longest = n.iter().copied().max().unwrap_or(1) as usize;
        out.push(gpu.dispatch_slots(&AMP_CHECK, "amp_check", &p, &slots, gpu.grid_for(longest))?);
    }
    Ok(out)
}

/// After the optimizer: halve S (not below [`MIN_SCALE`]) and count a skipped step when
/// the flag is set, else count a clean step and double S (not above [`MAX_SCALE`]) after
/// `interval` of them; clear the flag. `interval` must be at least 1.
pub fn amp_update(gpu: &Gpu, amp: &Tensor, interval: u32) -> Result<Dispatch> {
    const L: &str = "amp_update";
    check_state(L, amp)?;
    if interval == 0 {
        return Err(Error::invalid(
            "amp_update interval",
            "the growth interval must be at least 1 step",
        ));
    }
    let p = AmpParams {
        n: 0,
        interval,
        min_scale: MIN_SCALE,
        max_scale: MAX_SCALE,
    };
    gpu.dispatch_slots(&AMP, "amp_update", &p, &[(2, amp)], [1, 1, 1])
}
