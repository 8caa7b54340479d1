//! Batch normalisation over the rows of a `(rows, C)` view of an NHWC tensor
//! (`rows = N * H * W`): training forward (batch statistics, running-stat update), eval
//! forward and training backward (see `shaders/batchnorm.wgsl`).
//!
//! The reductions over rows are deterministic two-level reductions: rows are cut into chunks,
//! one workgroup per (32-channel block, chunk) writes a partial into a scratch buffer that the
//! launcher allocates once (its bind group keeps it alive), and a finalize kernel merges the
//! partials of each channel in a fixed order. No float atomics.

use super::{BATCHNORM, BATCHNORM_F16};
use crate::error::{Error, Result};
use crate::gpu::ShaderSource;
use crate::gpu::{BnSizing, DType, Dispatch, Gpu, Size, Tensor};

/// Channels per workgroup of the reduction kernels (`CB` in the shader).
const CB: usize = 32;

/// The numbers behind each [`BnSizing`].
impl BnSizing {
    /// Workgroups the row reductions aim for.
    fn target_workgroups(self) -> usize {
        match self {
            BnSizing::Gpu => 2048,
            BnSizing::Cpu => 32,
        }
    }

    /// Fewest rows a reduction chunk gets (on GPUs each of the 8 row lanes then walks at
    /// least 4 rows).
    fn min_chunk_rows(self) -> usize {
        match self {
            BnSizing::Gpu => 32,
            BnSizing::Cpu => 1024,
        }
    }

    /// Rows each thread of the element-wise kernels handles (at most).
    fn rows_per_thread(self) -> usize {
        match self {
            BnSizing::Gpu => 1,
            BnSizing::Cpu => 64,
        }
    }
}

/// Geometry of one batch norm: `rows` = N * H * W, `channels` = C. The launchers read it
/// from their input `x` ([`BatchNormShape::of`]); the memory plan computes it from the
/// topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormShape {
    pub rows: usize,
    pub channels: usize,
}

/// How a batch norm runs: PyTorch's `eps` and `momentum`, the fused ReLU on `y` (forward
/// kernels), and the work sizing. [`Default`] is PyTorch's `eps = 1e-5`, `momentum = 0.1`,
/// no ReLU, [`BnSizing::Gpu`]; [`BatchNormOptions::for_gpu`] sizes for an adapter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormOptions {
    pub eps: f32,
    pub momentum: f32,
    /// Forward: `y = max(0, bn(x))`. The backward ignores it (apply the ReLU's backward to
    /// `dy` first).
    pub relu: bool,
    pub sizing: BnSizing,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            eps: 1e-5,
            momentum: 0.1,
            relu: false,
            sizing: BnSizing::Gpu,
        }
    }
}

impl BatchNormOptions {
    /// The defaults, sized for `gpu` ([`Gpu::class`]).
    pub fn for_gpu(gpu: &Gpu) -> Self {
        BatchNormOptions {
            sizing: gpu.class().bn,
            ..Default::default()
        }
    }

    fn validate(&self, launcher: &str) -> Result<()> {
        if self.eps.is_nan() || self.eps <= 0.0 || !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::invalid_in(
                "options of",
                launcher,
                format!(
                    "eps {} must be > 0 and momentum {} in [0, 1]",
                    self.eps, self.momentum
                ),
            ));
        }
        Ok(())
    }
}

/// Parameter block of `shaders/batchnorm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct BatchNormParams {
    pub(crate) rows: u32,
    pub(crate) channels: u32,
    pub(crate) chunk_rows: u32,
    pub(crate) chunks: u32,
    pub(crate) eps: f32,
    pub(crate) momentum: f32,
    pub(crate) inv_rows: f32,
    pub(crate) stripes: u32,
    /// Forward kernels: nonzero applies the fused ReLU to y.
    pub(crate) relu: u32,
    /// Backward finalize: nonzero adds the batch's parameter gradients into dgamma and
    /// dbeta instead of overwriting them (gradient accumulation).
    pub(crate) accumulate: u32,
    pub(crate) _pad: [u32; 2],
}

impl BatchNormShape {
    /// (rows per chunk, number of chunks) of the row reductions.
    pub fn chunking(&self, sizing: BnSizing) -> (usize, usize) {
        let rows = self.rows.max(1);
        let blocks = self.channels.div_ceil(CB).max(1);
        let target_chunks = sizing.target_workgroups().div_ceil(blocks).max(1);
        let chunk_rows = rows.div_ceil(target_chunks).max(sizing.min_chunk_rows());
        (chunk_rows, rows.div_ceil(chunk_rows))
    }

    /// Row stripes of the element-wise kernels: thread `t` handles channel `t % C` of rows
    /// `t / C`, `t / C + stripes`, ..., so it loads its channel's values once.
    pub fn stripes(&self, sizing: BnSizing) -> usize {
        self.rows.max(1).div_ceil(sizing.rows_per_thread())
    }

    /// The shader's parameter block (without the ReLU flag).
    pub(crate) fn params(&self, o: &BatchNormOptions) -> BatchNormParams {
        let (chunk_rows, chunks) = self.chunking(o.sizing);
        BatchNormParams {
            rows: self.rows as u32,
            channels: self.channels as u32,
            chunk_rows: chunk_rows as u32,
            chunks: chunks as u32,
            eps: o.eps,
            momentum: o.momentum,
            inv_rows: 1.0 / self.rows.max(1) as f32,
            stripes: self.stripes(o.sizing) as u32,
            relu: 0,
            accumulate: 0,
            _pad: [0; 2],
        }
    }

    /// The shape of a `(rows, C)` view of the NHWC activation `x`: C its last dimension.
    /// Error when that leaves no rows or channels, a single row in training (`train`), or
    /// more elements than the kernels' u32 indexing reaches.
    pub fn of(launcher: &str, x: &Tensor, train: bool) -> Result<BatchNormShape> {
        let channels = x.shape.last().copied().unwrap_or(0);
        let s = BatchNormShape {
            rows: x.numel().checked_div(channels).unwrap_or(0),
            channels,
        };
        let what = || format!("x of {launcher} (`{}`, shape {:?})", x.label, x.shape);
        if s.rows == 0 || s.channels == 0 {
            return Err(Error::invalid_in(
                "input",
                what(),
                format!(
                    "rows {} and channels {} must be positive",
                    s.rows, s.channels
                ),
            ));
        }
        if train && s.rows < 2 {
            return Err(Error::invalid_in(
                "input",
                what(),
                "training mode needs more than 1 value per channel (rows = N * H * W >= 2)",
            ));
        }
        // The element-wise kernels' index runs one stripe past the last element.
        if 2 * (s.rows as u64) * (s.channels as u64) > u32::MAX as u64 {
            return Err(Error::invalid_in(
                "input",
                what(),
                format!(
                    "rows * channels = {} must be at most 2^31 - 1 (u32 indexing)",
                    s.rows * s.channels
                ),
            ));
        }
        Ok(s)
    }

    /// Error unless every tensor of `acts` has `x`'s shape and dtype (f32 or f16) and every
    /// one of `chans` holds C f32. The shader module for `x`'s dtype.
    fn check(
        &self,
        launcher: &str,
        x: &Tensor,
        acts: &[(&Tensor, &str)],
        chans: &[(&Tensor, &str)],
    ) -> Result<&'static ShaderSource> {
        let act = x.dtype.float();
        for (t, role) in acts {
            t.check(launcher, role, act, Size::Shape(&x.shape))?;
        }
        for (t, role) in chans {
            t.check(launcher, role, DType::F32, Size::Len(self.channels))?;
        }
        Ok(match act {
            DType::F16 => &BATCHNORM_F16,
            _ => &BATCHNORM,
        })
    }

    fn reduce_grid(&self, sizing: BnSizing) -> [u32; 3] {
        let (_, chunks) = self.chunking(sizing);
        [self.channels.div_ceil(CB) as u32, chunks as u32, 1]
    }

    fn elementwise_grid(&self, gpu: &Gpu, sizing: BnSizing) -> [u32; 3] {
        gpu.grid_for(self.stripes(sizing) * self.channels)
    }

    fn finalize_grid(&self) -> [u32; 3] {
        [self.channels.div_ceil(CB) as u32, 1, 1]
    }

    /// f32 of the reduction partials (chunks, 2, C) of a launch with `sizing`.
    pub fn partials_len(&self, sizing: BnSizing) -> usize {
        self.chunking(sizing).1 * 2 * self.channels
    }

    /// The reduction partials: `given` (error unless it holds at least
    /// [`BatchNormShape::partials_len`] f32: a buffer shared by launches that run one after
    /// another, each consuming its partials before the next writes them), else a buffer of
    /// the launch's own, labelled `label`.
    fn scratch(
        &self,
        gpu: &Gpu,
        sizing: BnSizing,
        given: Option<&Tensor>,
        launcher: &str,
        label: &str,
    ) -> Result<Tensor> {
        let (_, chunks) = self.chunking(sizing);
        match given {
            Some(t) => {
                let need = self.partials_len(sizing);
                t.check(launcher, "partials", DType::F32, Size::AtLeast(need))?;
                Ok(t.clone())
            }
            // (chunks, 2, C)
            None => gpu.zeros(label, &[chunks, 2, self.channels]),
        }
    }
}

/// Tensors of [`batchnorm_forward_train`]: `x`, `y` (rows, C) (any NHWC shape, C last);
/// the rest (C).
pub struct BatchNormTrain<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub save_mean: &'a Tensor,
    pub save_invstd: &'a Tensor,
    pub y: &'a Tensor,
    /// Reduction partials shared with other launches (`None`: the launch allocates its own).
    pub partials: Option<&'a Tensor>,
}

/// Tensors of [`batchnorm_forward_eval`]: `x`, `y` (rows, C); the rest (C).
pub struct BatchNormEval<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub y: &'a Tensor,
}

/// Tensors of [`batchnorm_backward`]: `x`, `dy`, `dx` (rows, C); the rest (C). `dx` may be
/// `x` itself (the same buffer): the gradient is then written over the input, each element
/// read before it is overwritten (how a training network keeps `dz` in `z`'s buffer).
pub struct BatchNormBackward<'a> {
    pub x: &'a Tensor,
    pub dy: &'a Tensor,
    pub gamma: &'a Tensor,
    pub save_mean: &'a Tensor,
    pub save_invstd: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
    /// Reduction partials shared with other launches (`None`: the launch allocates its own).
    pub partials: Option<&'a Tensor>,
    /// Add this batch's `dgamma`, `dbeta` into the tensors instead of overwriting them (the
    /// micro-batches of one optimizer step). `dx` is this batch's either way.
    pub accumulate: bool,
}

/// Training-mode forward: batch mean and biased variance over the rows normalise `x`,
/// `y = gamma * (x - mean) * invstd + beta`, `invstd = 1 / sqrt(var + eps)`, then
/// `max(0, y)` when `o.relu`. The shape comes from `x` (C its last dimension).
/// Overwrites `y` (rows, C), `save_mean` (C) and `save_invstd` (C); updates `running_mean`
/// and `running_var` (C) in place: `r = (1 - momentum) r + momentum * batch_stat`, with the
/// unbiased variance for `running_var` (as PyTorch). Three dispatches (stats, finalize,
/// normalize), to be recorded in order.
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    t: &BatchNormTrain,
    o: &BatchNormOptions,
) -> Result<Vec<Dispatch>> {
    const L: &str = "batchnorm_forward_train";
    o.validate(L)?;
    let s = BatchNormShape::of(L, t.x, true)?;
    let module = s.check(
        L,
        t.x,
        &[(t.x, "x"), (t.y, "y")],
        &[
            (t.gamma, "gamma"),
            (t.beta, "beta"),
            (t.running_mean, "running_mean"),
            (t.running_var, "running_var"),
            (t.save_mean, "save_mean"),
            (t.save_invstd, "save_invstd"),
        ],
    )?;
    let sizing = o.sizing;
    let p = s.params(o);
    let label = format!("{}.bn_stats_partials", t.x.label);
    let part = s.scratch(gpu, sizing, t.partials, L, &label)?;
    let p_norm = BatchNormParams {
        relu: o.relu as u32,
        ..p
    };
    let stats = gpu.dispatch_slots(
        module,
        "batchnorm_forward_train_stats",
        &p,
        &[(1, t.x), (4, &part)],
        s.reduce_grid(sizing),
    )?;
    let finalize = gpu.dispatch_slots(
        module,
        "batchnorm_forward_train_finalize",
        &p,
        &[
            (4, &part),
            (5, t.save_mean),
            (6, t.save_invstd),
            (7, t.running_mean),
            (8, t.running_var),
        ],
        s.finalize_grid(),
    )?;
    let normalize = normalize_dispatch(
        gpu,
        module,
        &s,
        &p_norm,
        &BatchNormNormalize {
            x: t.x,
            gamma: t.gamma,
            beta: t.beta,
            save_mean: t.save_mean,
            save_invstd: t.save_invstd,
            y: t.y,
        },
        sizing,
    )?;
    Ok(vec![stats, finalize, normalize])
}

fn normalize_dispatch(
    gpu: &Gpu,
    module: &ShaderSource,
    s: &BatchNormShape,
    p_norm: &BatchNormParams,
    t: &BatchNormNormalize,
    sizing: BnSizing,
) -> Result<Dispatch> {
    gpu.dispatch_slots(
        module,
        "batchnorm_normalize",
        p_norm,
        &[
            (1, t.x),
            (2, t.y),
            (4, t.gamma),
            (5, t.beta),
            (6, t.save_mean),
            (7, t.save_invstd),
        ],
        s.elementwise_grid(gpu, sizing),
    )
}

/// Tensors of [`batchnorm_normalize`]: `x`, `y` (rows, C); the rest (C).
pub struct BatchNormNormalize<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub save_mean: &'a Tensor,
    pub save_invstd: &'a Tensor,
    pub y: &'a Tensor,
}

/// The last pass of [`batchnorm_forward_train`] alone: `y` from `x` and the batch
/// statistics it saved (then `max(0, y)` when `o.relu`), with the same pipeline and
/// parameters, so with unchanged inputs the same bits. How a training network rebuilds,
/// in backward, an output it did not keep. Overwrites `y`.
pub fn batchnorm_normalize(
    gpu: &Gpu,
    t: &BatchNormNormalize,
    o: &BatchNormOptions,
) -> Result<Dispatch> {
    const L: &str = "batchnorm_normalize";
    o.validate(L)?;
    let s = BatchNormShape::of(L, t.x, true)?;
    let module = s.check(
        L,
        t.x,
        &[(t.x, "x"), (t.y, "y")],
        &[
            (t.gamma, "gamma"),
            (t.beta, "beta"),
            (t.save_mean, "save_mean"),
            (t.save_invstd, "save_invstd"),
        ],
    )?;
    let p_norm = BatchNormParams {
        relu: o.relu as u32,
        ..s.params(o)
    };
    normalize_dispatch(gpu, module, &s, &p_norm, t, o.sizing)
}

/// Eval-mode forward with the running statistics:
/// `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`, then `max(0, y)`
/// when `o.relu`. Overwrites `y`. `o.momentum` only travels in the parameter block.
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    t: &BatchNormEval,
    o: &BatchNormOptions,
) -> Result<Dispatch> {
    const L: &str = "batchnorm_forward_eval";
    o.validate(L)?;
    let s = BatchNormShape::of(L, t.x, false)?;
    let module = s.check(
        L,
        t.x,
        &[(t.x, "x"), (t.y, "y")],
        &[
            (t.gamma, "gamma"),
            (t.beta, "beta"),
            (t.running_mean, "running_mean"),
            (t.running_var, "running_var"),
        ],
    )?;
    gpu.dispatch_slots(
        module,
        "batchnorm_forward_eval",
        &BatchNormParams {
            relu: o.relu as u32,
            ..s.params(o)
        },
        &[
            (1, t.x),
            (2, t.y),
            (4, t.gamma),
            (5, t.beta),
            (6, t.running_mean),
            (7, t.running_var),
        ],
        s.elementwise_grid(gpu, o.sizing),
    )
}

/// Backward of the training-mode forward (before its ReLU: `o.relu` is ignored), from the
/// saved batch statistics: `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * invstd / rows * (rows * dy - dbeta - xhat * dgamma)`.
/// Overwrites `dx` (rows, C), and `dgamma` (C) and `dbeta` (C) or, with `t.accumulate`,
/// adds into them. The dx pass reads this batch's sums from the partials, where the
/// finalize leaves them. Three dispatches (reduce, finalize, dx), to be recorded in order.
pub fn batchnorm_backward(
    gpu: &Gpu,
    t: &BatchNormBackward,
    o: &BatchNormOptions,
) -> Result<Vec<Dispatch>> {
    const L: &str = "batchnorm_backward";
    o.validate(L)?;
    let s = BatchNormShape::of(L, t.x, true)?;
    let module = s.check(
        L,
        t.x,
        &[(t.x, "x"), (t.dy, "dy"), (t.dx, "dx")],
        &[
            (t.gamma, "gamma"),
            (t.save_mean, "save_mean"),
            (t.save_invstd, "save_invstd"),
            (t.dgamma, "dgamma"),
            (t.dbeta, "dbeta"),
        ],
    )?;
    let sizing = o.sizing;
    let p = BatchNormParams {
        accumulate: t.accumulate as u32,
        ..s.params(o)
    };
    let label = format!("{}.bn_grad_partials", t.dy.label);
    let part = s.scratch(gpu, sizing, t.partials, L, &label)?;
    let reduce = gpu.dispatch_slots(
        module,
        "batchnorm_backward_reduce",
        &p,
        &[
            (1, t.x),
            (3, t.dy),
            (4, &part),
            (5, t.save_mean),
            (6, t.save_invstd),
        ],
        s.reduce_grid(sizing),
    )?;
    let finalize = gpu.dispatch_slots(
        module,
        "batchnorm_backward_finalize",
        &p,
        &[(4, &part), (5, t.dbeta), (6, t.dgamma)],
        s.finalize_grid(),
    )?;
    let grid = s.elementwise_grid(gpu, sizing);
    let chans = [t.save_mean, t.save_invstd, t.gamma, &part];
    let mut b: Vec<(u32, &Tensor)> = (4..).zip(chans).collect();
    let dxd = if t.dx.buffer == t.x.buffer {
        // In place: one read-write binding for x and dx (a buffer may not be bound both
        // read-only and read-write in one dispatch).
        b.extend([(1, t.dy), (2, t.dx)]);
        gpu.dispatch_slots(module, "batchnorm_backward_dx_inplace", &p, &b, grid)?
    } else {
        b.extend([(1, t.x), (2, t.dx), (3, t.dy)]);
        gpu.dispatch_slots(module, "batchnorm_backward_dx", &p, &b, grid)?
    };
    Ok(vec![reduce, finalize, dxd])
}
