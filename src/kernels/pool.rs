//! Max pooling (with argmax indices), forward and backward, NHWC (see `shaders/pool.wgsl`).
//! Global average pooling lives in `method::diversify` (`average_scores`).

use super::{POOL, POOL_F16};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::method::dims_of;

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

    /// Elements of the input (N, H, W, C).
    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }

    /// Elements of the output (N, OH, OW, C).
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_in("max-pool shape", format!("{self:?}"), m));
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
pub(crate) struct PoolParams {
    pub(crate) n: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) c: u32,
    pub(crate) k: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) total: u32,
}

/// What a max pool's tensors do not say: the square window `k`, the stride and the
/// padding. N, H, W and C come from the input (x, or dx for the backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPoolWindow {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl MaxPoolShape {
    /// The window, stride and padding of this shape.
    pub fn window(&self) -> MaxPoolWindow {
        MaxPoolWindow {
            k: self.k,
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// The shape of a max pool of `input` (N, H, W, C) (its role in `launcher`), validated.
    pub fn of(launcher: &str, input: (&Tensor, &str), win: MaxPoolWindow) -> Result<MaxPoolShape> {
        let (t, role) = input;
        let [n, h, w, c] = dims_of(launcher, role, t, t.dtype.float(), ["N", "H", "W", "C"])?;
        let s = MaxPoolShape {
            n,
            h,
            w,
            c,
            k: win.k,
            stride: win.stride,
            pad: win.pad,
        };
        s.validate()?;
        Ok(s)
    }
}

fn module(dtype: DType) -> &'static crate::gpu::ShaderSource {
    match dtype {
        DType::F16 => &POOL_F16,
        _ => &POOL,
    }
}

/// Tensors of [`maxpool_forward`]: `x` (N, H, W, C) read, `y` (N, OH, OW, C) and `idx`
/// (u32, N, OH, OW, C) written.
pub struct MaxPoolForward<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
    pub idx: &'a Tensor,
}

/// Tensors of [`maxpool_backward`]: `dy` (N, OH, OW, C) and `idx` (u32, as
/// [`MaxPoolForward`] wrote it) read, `dx` (N, H, W, C) written.
pub struct MaxPoolBackward<'a> {
    pub dy: &'a Tensor,
    pub idx: &'a Tensor,
    pub dx: &'a Tensor,
}

/// Max pooling: `y` (N, OH, OW, C) and `idx` (u32, N, OH, OW, C) = the flat position
/// `h * W + w` of each max within its image (first max in row-major window order wins;
/// padding never wins). The shape comes from `x`. Overwrites `y` and `idx`.
pub fn maxpool_forward(gpu: &Gpu, t: &MaxPoolForward, win: MaxPoolWindow) -> Result<Dispatch> {
    const L: &str = "maxpool_forward";
    let s = MaxPoolShape::of(L, (t.x, "x"), win)?;
    let out = s.output_shape();
    t.y.check(L, "y", t.x.dtype, Size::Shape(&out))?;
    t.idx.check(L, "idx", DType::U32, Size::Shape(&out))?;
    let total = s.output_len();
    gpu.dispatch(
        module(t.x.dtype),
        "maxpool_forward",
        &s.params(total),
        &[t.y, t.x, t.idx],
        gpu.grid_for(total),
    )
}

/// Max-pool backward as a gather: `dx[n, h, w, c]` = sum of `dy` over the outputs whose
/// window holds (h, w) and whose `idx` points at it. The shape comes from `dx`.
/// Overwrites `dx` (N, H, W, C).
pub fn maxpool_backward(gpu: &Gpu, t: &MaxPoolBackward, win: MaxPoolWindow) -> Result<Dispatch> {
    const L: &str = "maxpool_backward";
    let s = MaxPoolShape::of(L, (t.dx, "dx"), win)?;
    let out = s.output_shape();
    t.dy.check(L, "dy", t.dx.dtype, Size::Shape(&out))?;
    t.idx.check(L, "idx", DType::U32, Size::Shape(&out))?;
    let total = s.input_len();
    gpu.dispatch(
        module(t.dx.dtype),
        "maxpool_backward",
        &s.params(total),
        &[t.dx, t.dy, t.idx],
        gpu.grid_for(total),
    )
}
