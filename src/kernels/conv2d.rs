//! `conv2d`: 2-D convolution without bias (BatchNorm follows in ResNet), its data gradient and
//! its weight gradient, as tiled implicit GEMMs, plus a direct forward kernel kept as the
//! readable reference and fallback (see `shaders/conv2d.wgsl`).
//!
//! Layouts: x (N, H, W, Cin), w (KH, KW, Cin, Cout), y (N, OH, OW, Cout), contiguous.
//! Tensors are f32, or in mixed precision f16 operands (each tensor's [`DType`]) with f32
//! arithmetic: the weight gradient is written in f32, the forward pass and the data
//! gradient in f16, rounded once from the f32 sum.

pub mod coop;

use super::{
    CONV2D, CONV2D_F16, CONV2D_F16_OUT, CONV2D_SUBGROUP, CONV2D_SUBGROUP_F16,
    CONV2D_SUBGROUP_F16_OUT,
};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, KernelFamily, ShaderSource, Size, Tensor};
use coop::{
    conv2d_backward_data_coop, conv2d_backward_weight_coop, conv2d_forward_coop, CoopConvOptions,
    CoopTile,
};

/// Geometry of one convolution: input (n, h, w, cin), kernel (kh, kw), cout output channels,
/// the same stride and zero padding on both spatial axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    /// Output height `(h + 2 pad - kh) / stride + 1` (0 when the kernel does not fit).
    pub fn oh(&self) -> usize {
        out_len(self.h, self.kh, self.stride, self.pad)
    }

    /// Output width `(w + 2 pad - kw) / stride + 1` (0 when the kernel does not fit).
    pub fn ow(&self) -> usize {
        out_len(self.w, self.kw, self.stride, self.pad)
    }

    /// GFLOP of the forward pass (2 x multiply-adds); each backward pass costs the same.
    pub fn gflop(&self) -> f64 {
        2.0 * (self.n * self.oh() * self.ow()) as f64
            * (self.kh * self.kw * self.cin) as f64
            * self.cout as f64
            * 1e-9
    }

    /// Shape of x: (N, H, W, Cin).
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.cin]
    }

    /// Shape of w: (KH, KW, Cin, Cout).
    pub fn w_shape(&self) -> [usize; 4] {
        [self.kh, self.kw, self.cin, self.cout]
    }

    /// Shape of y: (N, OH, OW, Cout).
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.oh(), self.ow(), self.cout]
    }

    /// Error unless every size is positive, the kernel fits the padded input, and every
    /// index the shaders compute fits in 32 bits.
    pub fn validate(&self) -> Result<()> {
        let what = || format!("of conv2d {self:?}");
        let dims = [
            ("n", self.n),
            ("h", self.h),
            ("w", self.w),
            ("cin", self.cin),
            ("cout", self.cout),
            ("kh", self.kh),
            ("kw", self.kw),
            ("stride", self.stride),
        ];
        for (name, v) in dims {
            if v == 0 {
                return Err(Error::invalid_in(
                    "shape",
                    what(),
                    format!("{name} must be positive"),
                ));
            }
        }
        if self.kh > self.h + 2 * self.pad || self.kw > self.w + 2 * self.pad {
            return Err(Error::invalid_in(
                "shape",
                what(),
                format!(
                    "kernel {}x{} is larger than the padded input {}x{}",
                    self.kh,
                    self.kw,
                    self.h + 2 * self.pad,
                    self.w + 2 * self.pad
                ),
            ));
        }
        // Largest index or product formed in the shaders (offsets, padded coordinates, the
        // y element count) must stay below 2^31 (coordinates go through i32).
        let limit = i32::MAX as u128;
        let big = [
            self.x_shape().iter().map(|&d| d as u128).product::<u128>(),
            self.w_shape().iter().map(|&d| d as u128).product::<u128>(),
            self.y_shape().iter().map(|&d| d as u128).product::<u128>(),
            (self.h + self.pad) as u128 * self.stride as u128 + self.kh as u128,
            (self.w + self.pad) as u128 * self.stride as u128 + self.kw as u128,
        ];
        if big.iter().any(|&b| b > limit) {
            return Err(Error::invalid_in(
                "shape",
                what(),
                "too large for 32-bit indexing; split the batch",
            ));
        }
        Ok(())
    }

    /// Error unless the tensors, (x, w, y) or their gradients, have the shapes (N, H, W, Cin),
    /// (KH, KW, Cin, Cout), (N, OH, OW, Cout) and hold f32.
    fn check(&self, launcher: &str, tensors: [(&Tensor, &str); 3]) -> Result<()> {
        let [a, b, c] = tensors;
        self.check_typed(
            launcher,
            [
                (a.0, a.1, DType::F32),
                (b.0, b.1, DType::F32),
                (c.0, c.1, DType::F32),
            ],
        )
    }

    /// As `check`, each tensor holding its own element type.
    pub(crate) fn check_typed(
        &self,
        launcher: &str,
        tensors: [(&Tensor, &str, DType); 3],
    ) -> Result<()> {
        let shapes = [self.x_shape(), self.w_shape(), self.y_shape()];
        for ((t, role, dtype), shape) in tensors.into_iter().zip(shapes) {
            t.check(launcher, role, dtype, Size::Shape(&shape))?;
        }
        Ok(())
    }

    pub(crate) fn params(
        &self,
        rows: usize,
        cols: usize,
        red: usize,
        accumulate: bool,
    ) -> Conv2dParams {
        Conv2dParams {
            n: self.n as u32,
            h: self.h as u32,
            w: self.w as u32,
            cin: self.cin as u32,
            cout: self.cout as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            oh: self.oh() as u32,
            ow: self.ow() as u32,
            rows: rows as u32,
            cols: cols as u32,
            red: red as u32,
            accumulate: accumulate as u32,
            zsplit: 1,
            kchunk: 0,
            _pad: [0; 3],
        }
    }
}

fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    if stride == 0 || len + 2 * pad < k {
        0
    } else {
        (len + 2 * pad - k) / stride + 1
    }
}

/// Parameter block of `shaders/conv2d.wgsl`. `rows`, `cols`, `red` are the sizes of the GEMM
/// the entry point computes (C[rows, cols] = A[rows, red] x B[red, cols]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Conv2dParams {
    pub(crate) n: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cin: u32,
    pub(crate) cout: u32,
    pub(crate) kh: u32,
    pub(crate) kw: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) red: u32,
    pub(crate) accumulate: u32,
    /// conv2d_backward_data: workgroups along z per stride phase. conv2d_backward_weight
    /// (tiled or subgroup) and conv2d_sum_partials: number of reduction chunks (more than
    /// one: split-K).
    pub(crate) zsplit: u32,
    /// conv2d_backward_weight with split-K: output pixels (tiled) or output rows (n, oy)
    /// (subgroup) per reduction chunk.
    pub(crate) kchunk: u32,
    pub(crate) _pad: [u32; 3],
}

/// Workgroups for a 64 x 64-tiled GEMM of `rows` x `cols`: x over column tiles, row tiles
/// split over y and z so that no dimension exceeds the adapter limit.
fn tiled_grid(gpu: &Gpu, rows: usize, cols: usize) -> [u32; 3] {
    let g = gpu.grid(rows.div_ceil(64) as u64);
    [cols.div_ceil(64) as u32, g[0], g[1]]
}

/// Channels per workgroup of the broadcast and subgroup kernels.
fn block(kernel: KernelFamily) -> usize {
    if kernel == KernelFamily::Subgroup {
        SG_BLOCK
    } else {
        RB
    }
}

/// Channel block of the broadcast kernels (`RB` in `conv2d.wgsl`).
const RB: usize = 8;
/// Channel block of the subgroup kernels (`CB` in `conv2d_subgroup.wgsl`).
const SG_BLOCK: usize = 16;
/// Output (forward) or input (data gradient) pixels per lane of the subgroup kernels
/// (`PPL` in `conv2d_subgroup.wgsl`).
const SG_PIXELS: usize = 2;

/// Workgroups for the broadcast and subgroup kernels: x over blocks of `block(kernel)`
/// channels, 64-lane row tiles split over y and z.
fn bcast_grid(gpu: &Gpu, rows: usize, chans: usize, kernel: KernelFamily) -> [u32; 3] {
    let g = gpu.grid(rows.div_ceil(64) as u64);
    [chans.div_ceil(block(kernel)) as u32, g[0], g[1]]
}

/// The operands' and the result's dtypes of a pass whose first operand is `operand` and
/// whose result is `out`, and its (tiled / broadcast, subgroup) modules: f32 operands give
/// an f32 result; f16 operands an f32 or an f16 one (`allow_f16_out`: the forward pass and
/// the data gradient; the weight gradient's is always f32). The shape check then names any
/// tensor of another dtype.
fn modules(
    operand: DType,
    out: DType,
    allow_f16_out: bool,
) -> (DType, DType, &'static ShaderSource, &'static ShaderSource) {
    match (operand, out) {
        (DType::F16, DType::F16) if allow_f16_out => (
            DType::F16,
            DType::F16,
            &CONV2D_F16_OUT,
            &CONV2D_SUBGROUP_F16_OUT,
        ),
        (DType::F16, _) => (DType::F16, DType::F32, &CONV2D_F16, &CONV2D_SUBGROUP_F16),
        _ => (DType::F32, DType::F32, &CONV2D, &CONV2D_SUBGROUP),
    }
}

/// What a convolution's tensors do not say: the stride and the zero padding, the same on
/// both spatial axes. N, H, W and Cin come from the input (x, or dx for the data gradient),
/// KH, KW and Cout from the weight (w, or dw for the weight gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    /// The stride and padding of this shape.
    pub fn geometry(&self) -> Conv2dGeometry {
        Conv2dGeometry {
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// The shape of a convolution with input `input` (N, H, W, Cin) and weight `weight`
    /// (KH, KW, Cin, Cout) (each with its role in `launcher`), validated
    /// ([`Conv2dShape::validate`]). The launchers then check every tensor's exact shape.
    pub fn of(
        launcher: &str,
        input: (&Tensor, &str),
        weight: (&Tensor, &str),
        g: Conv2dGeometry,
    ) -> Result<Conv2dShape> {
        let [n, h, w, cin] = rank4(launcher, input, "(N, H, W, Cin)")?;
        let [kh, kw, _, cout] = rank4(launcher, weight, "(KH, KW, Cin, Cout)")?;
        let s = Conv2dShape {
            n,
            h,
            w,
            cin,
            cout,
            kh,
            kw,
            stride: g.stride,
            pad: g.pad,
        };
        s.validate()?;
        Ok(s)
    }
}

/// The four dimensions of `t` (named `names`), or a shape mismatch.
fn rank4(launcher: &str, (t, role): (&Tensor, &str), names: &str) -> Result<[usize; 4]> {
    t.shape
        .as_slice()
        .try_into()
        .map_err(|_| Error::ShapeMismatch {
            context: format!("{launcher} {role}"),
            tensor: t.label.clone(),
            expected: format!("4 dimensions {names}"),
            found: t.shape.clone(),
            dtype: format!("{:?}", t.dtype),
        })
}

/// Tensors of [`conv2d_forward`] and [`conv2d_direct`]: `x` (N, H, W, Cin) and `w`
/// (KH, KW, Cin, Cout) read, `y` (N, OH, OW, Cout) written.
pub struct Conv2dForward<'a> {
    pub x: &'a Tensor,
    pub w: &'a Tensor,
    pub y: &'a Tensor,
}

/// Tensors of [`conv2d_backward_data`]: `dy` (N, OH, OW, Cout) and `w` (KH, KW, Cin, Cout)
/// read, `dx` (N, H, W, Cin) written.
pub struct Conv2dBackwardData<'a> {
    pub dy: &'a Tensor,
    pub w: &'a Tensor,
    pub dx: &'a Tensor,
}

/// Tensors of [`conv2d_backward_weight`]: `x` (N, H, W, Cin) and `dy` (N, OH, OW, Cout)
/// read, `dw` (KH, KW, Cin, Cout) written.
pub struct Conv2dBackwardWeight<'a> {
    pub x: &'a Tensor,
    pub dy: &'a Tensor,
    pub dw: &'a Tensor,
}

/// How a convolution pass runs. [`Default`]: the adapter's kernel family
/// ([`Gpu::kernels`]), overwrite the output, the weight gradient's split from
/// [`weight_grad_splits`] with partials in a buffer of the dispatches' own.
#[derive(Clone, Copy, Default)]
pub struct Conv2dOptions<'a> {
    /// Kernel family; `None`: [`Gpu::kernels`].
    pub kernel: Option<KernelFamily>,
    /// Backward passes: add into `dx` / `dw` instead of overwriting them. The forward
    /// passes refuse it.
    pub accumulate: bool,
    /// Weight gradient: split the reduction into (at most) this many chunks; `None`:
    /// [`weight_grad_splits`]. Ignored by `Broadcast`, which never splits; refused by the
    /// other passes.
    pub splits: Option<usize>,
    /// Weight gradient: the split-K partials buffer, at least [`weight_grad_scratch_len`]
    /// f32 (one buffer can serve every layer of a network, since each layer's sum consumes
    /// it before the next layer writes it); `None`: the dispatches own one. Refused by the
    /// other passes.
    pub scratch: Option<&'a Tensor>,
    /// Run the pass on the GPU's matrix units with this tile instead
    /// ([`coop`]: f16 operands; `kernel`, `splits` and `scratch` do not apply
    /// there); `None`: the kernel family.
    pub coop: Option<CoopTile>,
}

impl Conv2dOptions<'_> {
    /// The cooperative-matrix options of a pass these options send there.
    fn coop_options(&self) -> Option<CoopConvOptions> {
        self.coop.map(|tile| CoopConvOptions {
            tile: Some(tile),
            accumulate: self.accumulate,
        })
    }

    /// The kernel family these options pick on `gpu`, after checking that `gpu` runs it
    /// and that the pass (`launcher`) takes every option set: `accumulate` only the
    /// backward passes, `splits` and `scratch` only the weight gradient.
    fn kernel(
        &self,
        gpu: &Gpu,
        launcher: &str,
        backward: bool,
        weight: bool,
    ) -> Result<KernelFamily> {
        let refused = [
            ("accumulate", self.accumulate && !backward),
            ("splits", self.splits.is_some() && !weight),
            ("scratch", self.scratch.is_some() && !weight),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(Error::invalid_in(
                "options of",
                launcher,
                format!("this pass does not take `{name}`"),
            ));
        }
        let kernel = self.kernel.unwrap_or_else(|| gpu.kernels());
        kernel.check(gpu)?;
        Ok(kernel)
    }
}

/// Forward convolution as an implicit GEMM: x (N,H,W,Cin), w (KH,KW,Cin,Cout) -> y
/// (N,OH,OW,Cout), with `o.kernel`. Overwrites y.
pub fn conv2d_forward(
    gpu: &Gpu,
    t: &Conv2dForward,
    g: Conv2dGeometry,
    o: &Conv2dOptions,
) -> Result<Dispatch> {
    const L: &str = "conv2d_forward";
    if let Some(c) = o.coop_options() {
        return conv2d_forward_coop(gpu, t, g, &c);
    }
    let s = Conv2dShape::of(L, (t.x, "x"), (t.w, "w"), g)?;
    let kernel = o.kernel(gpu, L, false, false)?;
    let (dt, out, module, sg_module) = modules(t.x.dtype, t.y.dtype, true);
    s.check_typed(L, [(t.x, "x", dt), (t.w, "w", dt), (t.y, "y", out)])?;
    let (x, w, y) = (t.x, t.w, t.y);
    let rows = s.n * s.oh() * s.ow();
    let p = s.params(rows, s.cout, s.kh * s.kw * s.cin, false);
    match kernel {
        KernelFamily::Tiled => gpu.dispatch(
            module,
            "conv2d_forward",
            &p,
            &[x, w, y],
            tiled_grid(gpu, rows, s.cout),
        ),
        KernelFamily::Broadcast => gpu.dispatch(
            module,
            "conv2d_forward_bcast",
            &p,
            &[x, w, y],
            bcast_grid(gpu, rows, s.cout, kernel),
        ),
        KernelFamily::Subgroup => gpu.dispatch(
            sg_module,
            "conv2d_forward_sg",
            &p,
            &[x, w, y],
            bcast_grid(gpu, rows.div_ceil(SG_PIXELS), s.cout, kernel),
        ),
    }
}

/// Data gradient (a transposed convolution as an implicit GEMM): dy (N,OH,OW,Cout), w
/// (KH,KW,Cin,Cout) -> dx (N,H,W,Cin), with `o.kernel`. Overwrites dx, or adds into it when
/// `o.accumulate`.
///
/// The GEMM is split into stride^2 phases, each reducing over only the taps that reach it,
/// so stride 2 costs no more than stride 1. Cin is the 64-wide column tile: with Cin = 3 (the
/// ResNet stem) most of each tile is idle; training never needs the image gradient, so do
/// not build this dispatch for the stem.
pub fn conv2d_backward_data(
    gpu: &Gpu,
    t: &Conv2dBackwardData,
    g: Conv2dGeometry,
    o: &Conv2dOptions,
) -> Result<Dispatch> {
    const L: &str = "conv2d_backward_data";
    if let Some(c) = o.coop_options() {
        return conv2d_backward_data_coop(gpu, t, g, &c);
    }
    let s = Conv2dShape::of(L, (t.dx, "dx"), (t.w, "w"), g)?;
    let kernel = o.kernel(gpu, L, true, false)?;
    let (dt, out, module, sg_module) = modules(t.dy.dtype, t.dx.dtype, true);
    s.check_typed(L, [(t.dx, "dx", out), (t.w, "w", dt), (t.dy, "dy", dt)])?;
    let (dy, w, dx) = (t.dy, t.w, t.dx);
    // One GEMM per stride phase; size the grid for the largest phase. A workgroup covers 64
    // of its input pixels (SG_PIXELS times that with the subgroup kernel).
    let phases = s.stride * s.stride;
    let phase_rows = s.n * s.h.div_ceil(s.stride) * s.w.div_ceil(s.stride);
    let wg_rows = if kernel == KernelFamily::Subgroup {
        64 * SG_PIXELS
    } else {
        64
    };
    let g = gpu.grid(phase_rows.div_ceil(wg_rows) as u64);
    let mut p = s.params(s.n * s.h * s.w, s.cin, s.kh * s.kw * s.cout, o.accumulate);
    p.zsplit = g[1];
    let gz = u32::try_from(phases as u64 * g[1] as u64).unwrap_or(u32::MAX);
    match kernel {
        KernelFamily::Tiled => {
            let wg = [s.cin.div_ceil(64) as u32, g[0], gz];
            gpu.dispatch(module, "conv2d_backward_data", &p, &[dy, w, dx], wg)
        }
        KernelFamily::Broadcast => {
            let wg = [s.cin.div_ceil(RB) as u32, g[0], gz];
            gpu.dispatch(module, "conv2d_backward_data_bcast", &p, &[dy, w, dx], wg)
        }
        KernelFamily::Subgroup => {
            let wg = [s.cin.div_ceil(SG_BLOCK) as u32, g[0], gz];
            let entry = "conv2d_backward_data_sg";
            gpu.dispatch(sg_module, entry, &p, &[dy, w, dx], wg)
        }
    }
}

/// Workgroups the split-K weight gradient aims for: several per compute unit on the largest
/// GPUs (an H100/H200 has 132), so that no layer leaves most of the device idle.
const SPLIT_TARGET_WORKGROUPS: usize = 512;
/// Fewest output pixels one reduction chunk handles (16 reduction tiles of 16): a chunk's
/// 64 x 64 partial tile is then written once per 256 multiply-adds per element.
const SPLIT_MIN_CHUNK: usize = 256;
/// Most f32 the partials buffer of one layer may hold (16 MiB).
const SPLIT_MAX_PARTIALS: usize = 1 << 22;
/// Most reduction chunks.
const SPLIT_MAX: usize = 1024;

/// Workgroups the subgroup weight gradient aims for on CPU adapters: enough that a few
/// cores share a layer evenly (lavapipe hands each thread whole workgroups).
const SG_SPLIT_TARGET_WORKGROUPS: usize = 16;
/// Fewest output rows (image row `oy` of sample `n`) one subgroup-kernel chunk handles.
const SG_SPLIT_MIN_ROWS: usize = 8;

/// Reduction chunks the weight gradient of `s` uses with `kernel` by default; 1 means no
/// split.
///
/// - `Tiled` (GPUs): enough to reach about 512 workgroups, at least 256 pixels per chunk.
/// - `Subgroup` (CPU adapters): enough to reach about 16 workgroups, at least 8 output rows
///   per chunk. A layer with few weight rows (a grayscale stem has 9: one workgroup) would
///   otherwise run on one core.
/// - `Broadcast`: never split.
///
/// Both keep the partials within 4 Mi floats (16 MiB) and at most 1024 chunks. The count
/// depends only on the shape and the kernel, so results do not depend on the machine.
pub fn weight_grad_splits(s: &Conv2dShape, kernel: KernelFamily) -> usize {
    let rows = s.kh * s.kw * s.cin;
    let (target, workgroups, most) = match kernel {
        KernelFamily::Tiled => (
            SPLIT_TARGET_WORKGROUPS,
            rows.div_ceil(64) * s.cout.div_ceil(64),
            s.n * s.oh() * s.ow() / SPLIT_MIN_CHUNK,
        ),
        KernelFamily::Subgroup => (
            SG_SPLIT_TARGET_WORKGROUPS,
            rows.div_ceil(64) * s.cout.div_ceil(SG_BLOCK),
            s.n * s.oh() / SG_SPLIT_MIN_ROWS,
        ),
        KernelFamily::Broadcast => return 1,
    };
    target
        .div_ceil(workgroups.max(1))
        .min(most)
        .min(SPLIT_MAX_PARTIALS / (rows * s.cout).max(1))
        .clamp(1, SPLIT_MAX)
}

/// (chunk length, chunk count) of a weight-gradient reduction asked to split `splits` ways:
/// for `Tiled` the length is in output pixels, a whole number of 16-pixel reduction tiles;
/// for `Subgroup` in output rows (n, oy).
fn split_chunks(s: &Conv2dShape, kernel: KernelFamily, splits: usize) -> (usize, usize) {
    let splits = splits.max(1);
    if kernel == KernelFamily::Subgroup {
        let red = s.n * s.oh();
        let kchunk = red.div_ceil(splits).max(1);
        return (kchunk, red.div_ceil(kchunk));
    }
    let red = s.n * s.oh() * s.ow();
    let kchunk = red.div_ceil(splits).next_multiple_of(16).max(16);
    (kchunk, red.div_ceil(kchunk))
}

/// f32 of scratch that [`conv2d_backward_weight`] needs for `s` with `kernel` and the
/// default split (0: no split): a function of the shape and the kernel family only, so a
/// memory plan can be made without a device.
pub fn weight_grad_scratch_len(s: &Conv2dShape, kernel: KernelFamily) -> usize {
    let (_, chunks) = split_chunks(s, kernel, weight_grad_splits(s, kernel));
    if chunks <= 1 {
        0
    } else {
        chunks * s.kh * s.kw * s.cin * s.cout
    }
}

/// Weight gradient (a GEMM reducing over the N*OH*OW output pixels): x (N,H,W,Cin), dy
/// (N,OH,OW,Cout) -> dw (KH,KW,Cin,Cout), with `o.kernel`. Overwrites dw, or adds into it
/// when `o.accumulate`.
///
/// `Tiled` and `Subgroup` split the reduction into `o.splits` chunks (default
/// [`weight_grad_splits`]) when the gradient has too few workgroups to fill the device (on
/// a GPU, a 3x3 64->64 layer has 9 tiles of 64 x 64; on a CPU adapter, a grayscale stem
/// has one workgroup): each chunk writes a partial product to a scratch buffer
/// (`o.scratch`, or one the dispatches own), and a second dispatch sums them in a fixed
/// order (deterministic). One dispatch when the split comes to 1 (or `Broadcast`, which
/// never splits). Record the dispatches in order.
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    t: &Conv2dBackwardWeight,
    g: Conv2dGeometry,
    o: &Conv2dOptions,
) -> Result<Vec<Dispatch>> {
    const L: &str = "conv2d_backward_weight";
    if let Some(c) = o.coop_options() {
        return Ok(vec![conv2d_backward_weight_coop(gpu, t, g, &c)?]);
    }
    let s = Conv2dShape::of(L, (t.x, "x"), (t.dw, "dw"), g)?;
    let (dt, _, module, sg_module) = modules(t.x.dtype, DType::F32, false);
    s.check_typed(
        L,
        [(t.x, "x", dt), (t.dw, "dw", DType::F32), (t.dy, "dy", dt)],
    )?;
    let kernel = o.kernel(gpu, L, true, true)?;
    let (x, dy, dw) = (t.x, t.dy, t.dw);
    let rows = s.kh * s.kw * s.cin;
    let mut p = s.params(rows, s.cout, s.n * s.oh() * s.ow(), o.accumulate);
    let (shader, entry, block, one_grid) = match kernel {
        KernelFamily::Tiled => (
            module,
            "conv2d_backward_weight",
            64,
            tiled_grid(gpu, rows, s.cout),
        ),
        KernelFamily::Subgroup => (
            sg_module,
            "conv2d_backward_weight_sg",
            SG_BLOCK,
            bcast_grid(gpu, rows, s.cout, kernel),
        ),
        KernelFamily::Broadcast => {
            let wg = bcast_grid(gpu, rows, s.cout, kernel);
            let entry = "conv2d_backward_weight_bcast";
            return Ok(vec![gpu.dispatch(module, entry, &p, &[x, dy, dw], wg)?]);
        }
    };
    let splits = o.splits.unwrap_or_else(|| weight_grad_splits(&s, kernel));
    let (kchunk, chunks) = split_chunks(&s, kernel, splits);
    let row_tiles = rows.div_ceil(64);
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if chunks <= 1 || row_tiles > max_dim || chunks > max_dim {
        return Ok(vec![gpu.dispatch(
            shader,
            entry,
            &p,
            &[x, dy, dw],
            one_grid,
        )?]);
    }
    let need = chunks * rows * s.cout;
    let own;
    let partials = match o.scratch {
        Some(t) => {
            t.check(L, "split-K scratch", DType::F32, Size::AtLeast(need))?;
            t
        }
        None => {
            own = gpu.zeros(&format!("{}.partials", dw.label), &[need])?;
            &own
        }
    };
    p.zsplit = chunks as u32;
    p.kchunk = kchunk as u32;
    let partial = gpu.dispatch(
        shader,
        entry,
        &p,
        &[x, dy, partials],
        [
            s.cout.div_ceil(block) as u32,
            row_tiles as u32,
            chunks as u32,
        ],
    )?;
    let sum = gpu.dispatch(
        &CONV2D,
        "conv2d_sum_partials",
        &p,
        &[partials, partials, dw],
        gpu.grid_for(rows * s.cout),
    )?;
    Ok(vec![partial, sum])
}

/// Forward convolution, one thread per output element. No training path calls it: it is kept
/// as the readable reference kernel (the plain sum of `shaders/conv2d.wgsl`'s header) and a
/// fallback, and `tests/gpu/conv2d.rs` checks it against the f64 twin and every tiled family
/// of [`conv2d_forward`] on the same inputs. Same contract as [`conv2d_forward`]: overwrites y.
pub fn conv2d_direct(gpu: &Gpu, t: &Conv2dForward, g: Conv2dGeometry) -> Result<Dispatch> {
    const L: &str = "conv2d_direct";
    let s = Conv2dShape::of(L, (t.x, "x"), (t.w, "w"), g)?;
    s.check(L, [(t.x, "x"), (t.w, "w"), (t.y, "y")])?;
    let rows = s.n * s.oh() * s.ow();
    let p = s.params(rows, s.cout, s.kh * s.kw * s.cin, false);
    gpu.dispatch(
        &CONV2D,
        "conv2d_direct",
        &p,
        &[t.x, t.w, t.y],
        gpu.grid_for(rows * s.cout),
    )
}
