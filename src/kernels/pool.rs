//! Max pooling (with argmax indices) and global average pooling, forward and backward, NHWC
//! (see `shaders/pool.wgsl`).

use super::POOL;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};

/// Max-pool problem: input (n, h, w, c), square window `k`, `stride`, `pad` (PyTorch's
/// MaxPool2d without dilation or ceil mode; padding never wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPoolShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl MaxPoolShape {
    /// Output height `(h + 2 pad - k) / stride + 1`.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad).saturating_sub(self.k) / self.stride.max(1) + 1
    }

    /// Output width `(w + 2 pad - k) / stride + 1`.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad).saturating_sub(self.k) / self.stride.max(1) + 1
    }

    /// Input shape (n, h, w, c).
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.c]
    }

    /// Output shape (n, oh, ow, c).
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh(), self.ow(), self.c]
    }

    fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("max-pool shape {self:?}"), m));
        if self.n == 0 || self.h == 0 || self.w == 0 || self.c == 0 {
            return bad("n, h, w, c must be positive".into());
        }
        if self.k == 0 || self.stride == 0 {
            return bad("k and stride must be positive".into());
        }
        if 2 * self.pad > self.k {
            return bad(format!(
                "pad {} must be at most k / 2 = {}",
                self.pad,
                self.k / 2
            ));
        }
        if self.k > self.h + 2 * self.pad || self.k > self.w + 2 * self.pad {
            return bad("window larger than the padded input".into());
        }
        if self.n * self.h * self.w * self.c > u32::MAX as usize {
            return bad("input exceeds u32 indexing".into());
        }
        Ok(())
    }

    fn params(&self, total: usize) -> PoolParams {
        PoolParams {
            n: self.n as u32,
            h: self.h as u32,
            w: self.w as u32,
            c: self.c as u32,
            k: self.k as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            oh: self.oh() as u32,
            ow: self.ow() as u32,
            total: total as u32,
        }
    }
}

/// Parameter block of `shaders/pool.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub c: u32,
    pub k: u32,
    pub stride: u32,
    pub pad: u32,
    pub oh: u32,
    pub ow: u32,
    pub total: u32,
}

/// Max pooling: `y` (N, OH, OW, C) and `idx` (u32, N, OH, OW, C) = the flat position
/// `h * W + w` of each max within its image (first max in row-major window order wins;
/// padding never wins). Overwrites `y` and `idx`.
pub fn maxpool_forward(
    gpu: &Gpu,
    s: &MaxPoolShape,
    x: &Tensor,
    y: &Tensor,
    idx: &Tensor,
) -> Result<Dispatch> {
    const L: &str = "maxpool_forward";
    s.validate()?;
    x.check(L, "x", DType::F32, Size::Len(s.input_len()))?;
    y.check(L, "y", DType::F32, Size::Len(s.output_len()))?;
    idx.check(L, "idx", DType::U32, Size::Len(s.output_len()))?;
    let total = s.output_shape().iter().product();
    gpu.dispatch(
        &POOL,
        "maxpool_forward",
        &s.params(total),
        &[y, x, idx],
        gpu.grid_for(total),
    )
}

/// Max-pool backward as a gather: `dx[n, h, w, c]` = sum of `dy` over the outputs whose
/// window holds (h, w) and whose `idx` points at it. Overwrites `dx` (N, H, W, C).
pub fn maxpool_backward(
    gpu: &Gpu,
    s: &MaxPoolShape,
    dy: &Tensor,
    idx: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const L: &str = "maxpool_backward";
    s.validate()?;
    dy.check(L, "dy", DType::F32, Size::Len(s.output_len()))?;
    idx.check(L, "idx", DType::U32, Size::Len(s.output_len()))?;
    dx.check(L, "dx", DType::F32, Size::Len(s.input_len()))?;
    let total = s.input_shape().iter().product();
    gpu.dispatch(
        &POOL,
        "maxpool_backward",
        &s.params(total),
        &[dx, dy, idx],
        gpu.grid_for(total),
    )
}

fn gap_params(n: usize, hw: usize, c: usize, total: usize, what: &str) -> Result<PoolParams> {
    if n == 0 || hw == 0 || c == 0 || n * hw * c > u32::MAX as usize {
        return Err(Error::invalid(
            what,
            format!("n {n}, hw {hw}, c {c} must be positive and n * hw * c fit in u32"),
        ));
    }
    Ok(PoolParams {
        n: n as u32,
        h: hw as u32,
        w: 1,
        c: c as u32,
        total: total as u32,
        ..Default::default()
    })
}

/// Global average pooling: `x` (N, HW, C) -> `y` (N, C), mean over the HW positions.
/// Overwrites `y`.
pub fn global_avgpool_forward(
    gpu: &Gpu,
    n: usize,
    hw: usize,
    c: usize,
    x: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    const L: &str = "global_avgpool_forward";
    let p = gap_params(n, hw, c, n * c, L)?;
    x.check(L, "x", DType::F32, Size::Len(n * hw * c))?;
    y.check(L, "y", DType::F32, Size::Len(n * c))?;
    gpu.dispatch(
        &POOL,
        "global_avgpool_forward",
        &p,
        &[y, x],
        gpu.grid_for(n * c),
    )
}

/// Global average pooling backward: `dx[n, p, c] = dy[n, c] / HW`. Overwrites `dx`
/// (N, HW, C).
pub fn global_avgpool_backward(
    gpu: &Gpu,
    n: usize,
    hw: usize,
    c: usize,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const L: &str = "global_avgpool_backward";
    let p = gap_params(n, hw, c, n * hw * c, L)?;
    dy.check(L, "dy", DType::F32, Size::Len(n * c))?;
    dx.check(L, "dx", DType::F32, Size::Len(n * hw * c))?;
    gpu.dispatch(
        &POOL,
        "global_avgpool_backward",
        &p,
        &[dx, dy],
        gpu.grid_for(n * hw * c),
    )
}
