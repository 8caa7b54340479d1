//! Batch normalisation over the rows of a `(rows, C)` view of an NHWC tensor
//! (`rows = N * H * W`): training forward (batch statistics, running-stat update), eval
//! forward and training backward (see `shaders/batchnorm.wgsl`).
//!
//! The reductions over rows are deterministic two-level reductions: rows are cut into chunks,
//! one workgroup per (32-channel block, chunk) writes a partial into a scratch buffer that the
//! launcher allocates once (its bind group keeps it alive), and a finalize kernel merges the
//! partials of each channel in a fixed order. No float atomics.

use super::BATCHNORM;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, Tensor};

/// Channels per workgroup of the reduction kernels (`CB` in the shader).
const CB: usize = 32;

/// How the batch-norm kernels cut their work: many small pieces on GPUs, a few large ones on
/// CPU adapters. [`BnSizing::for_gpu`] picks it from the adapter; the results differ only in
/// the order of the reductions' sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnSizing {
    /// About 2048 reduction workgroups of at least 32 rows, so that large GPUs fill up, and
    /// one thread per element in the element-wise kernels.
    Gpu,
    /// About 32 reduction workgroups of at least 1024 rows, and 64 rows per thread in the
    /// element-wise kernels. On lavapipe every workgroup's barriers are coroutine switches
    /// of all its invocations and every load of a per-channel value is a gather, so small
    /// pieces spend more time on those than on the data: this sizing makes the reductions
    /// about 4.5x and the element-wise kernels about 2.5x faster there.
    Cpu,
}

impl BnSizing {
    /// [`BnSizing::Cpu`] on CPU adapters, [`BnSizing::Gpu`] elsewhere.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        if gpu.is_cpu() {
            BnSizing::Cpu
        } else {
            BnSizing::Gpu
        }
    }

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

/// Batch-norm problem: `rows` = N * H * W, `channels` = C, PyTorch's `eps` and `momentum`.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormShape {
    pub rows: usize,
    pub channels: usize,
    pub eps: f32,
    pub momentum: f32,
}

/// Parameter block of `shaders/batchnorm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BatchNormParams {
    pub rows: u32,
    pub channels: u32,
    pub chunk_rows: u32,
    pub chunks: u32,
    pub eps: f32,
    pub momentum: f32,
    pub inv_rows: f32,
    pub stripes: u32,
    /// Forward kernels: nonzero applies the fused ReLU to y.
    pub relu: u32,
    pub _pad: [u32; 3],
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

    /// The shader's parameter block.
    pub fn params(&self, sizing: BnSizing) -> BatchNormParams {
        let (chunk_rows, chunks) = self.chunking(sizing);
        BatchNormParams {
            rows: self.rows as u32,
            channels: self.channels as u32,
            chunk_rows: chunk_rows as u32,
            chunks: chunks as u32,
            eps: self.eps,
            momentum: self.momentum,
            inv_rows: 1.0 / self.rows.max(1) as f32,
            stripes: self.stripes(sizing) as u32,
            relu: 0,
            _pad: [0; 3],
        }
    }

    fn validate(&self, train: bool) -> Result<()> {
        if self.rows == 0 || self.channels == 0 {
            return Err(Error::invalid(
                "batch-norm shape",
                format!(
                    "rows {} and channels {} must be positive",
                    self.rows, self.channels
                ),
            ));
        }
        if train && self.rows < 2 {
            return Err(Error::invalid(
                "batch-norm shape",
                "training mode needs more than 1 value per channel (rows = N * H * W >= 2)",
            ));
        }
        // The element-wise kernels' index runs one stripe past the last element.
        if 2 * (self.rows as u64) * (self.channels as u64) > u32::MAX as u64 {
            return Err(Error::invalid(
                "batch-norm shape",
                format!(
                    "rows * channels = {} must be at most 2^31 - 1 (u32 indexing)",
                    self.rows * self.channels
                ),
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 || !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::invalid(
                "batch-norm shape",
                format!(
                    "eps {} must be > 0 and momentum {} in [0, 1]",
                    self.eps, self.momentum
                ),
            ));
        }
        Ok(())
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

    fn scratch(&self, gpu: &Gpu, sizing: BnSizing, label: &str) -> Result<Tensor> {
        let (_, chunks) = self.chunking(sizing);
        // (chunks, 2, C)
        gpu.zeros(label, &[chunks, 2, self.channels])
    }
}

fn expect_numel(t: &Tensor, need: usize, what: &str) -> Result<()> {
    if t.numel() != need {
        return Err(Error::invalid(
            format!("batch-norm {what} (`{}`)", t.label),
            format!(
                "needs {need} elements, has {} (shape {:?})",
                t.numel(),
                t.shape
            ),
        ));
    }
    Ok(())
}

fn check_activation(s: &BatchNormShape, t: &Tensor, what: &str) -> Result<()> {
    expect_numel(t, s.rows * s.channels, what)?;
    if t.shape.len() > 1 && t.shape.last() != Some(&s.channels) {
        return Err(Error::invalid(
            format!("batch-norm {what} (`{}`)", t.label),
            format!(
                "last dimension must be C = {} (NHWC), shape is {:?}",
                s.channels, t.shape
            ),
        ));
    }
    Ok(())
}

/// Training-mode forward: batch mean and biased variance over the rows normalise `x`,
/// `y = gamma * (x - mean) * invstd + beta`, `invstd = 1 / sqrt(var + eps)`.
/// Overwrites `y` (rows, C), `save_mean` (C) and `save_invstd` (C); updates `running_mean`
/// and `running_var` (C) in place: `r = (1 - momentum) r + momentum * batch_stat`, with the
/// unbiased variance for `running_var` (as PyTorch). Three dispatches (stats, finalize,
/// normalize), to be recorded in order. Sized for the adapter ([`BnSizing::for_gpu`]).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    s: &BatchNormShape,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let sizing = BnSizing::for_gpu(gpu);
    batchnorm_forward_train_sized(
        gpu,
        s,
        sizing,
        false,
        [
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            save_mean,
            save_invstd,
            y,
        ],
    )
}

/// [`batchnorm_forward_train`] with an explicit sizing, and with `relu` a fused ReLU
/// (`y = max(0, bn(x))`); the tensors in its argument order (x, gamma, beta, running_mean,
/// running_var, save_mean, save_invstd, y).
pub fn batchnorm_forward_train_sized(
    gpu: &Gpu,
    s: &BatchNormShape,
    sizing: BnSizing,
    relu: bool,
    tensors: [&Tensor; 8],
) -> Result<Vec<Dispatch>> {
    let [x, gamma, beta, running_mean, running_var, save_mean, save_invstd, y] = tensors;
    s.validate(true)?;
    check_activation(s, x, "input x")?;
    check_activation(s, y, "output y")?;
    for (t, what) in [
        (gamma, "gamma"),
        (beta, "beta"),
        (running_mean, "running_mean"),
        (running_var, "running_var"),
        (save_mean, "save_mean"),
        (save_invstd, "save_invstd"),
    ] {
        expect_numel(t, s.channels, what)?;
    }
    let p = s.params(sizing);
    let part = s.scratch(gpu, sizing, &format!("{}.bn_stats_partials", x.label))?;
    let p_norm = BatchNormParams {
        relu: relu as u32,
        ..p
    };
    let stats = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_forward_train_stats",
        &p,
        &[x, &part],
        s.reduce_grid(sizing),
    )?;
    let finalize = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_forward_train_finalize",
        &p,
        &[&part, save_mean, save_invstd, running_mean, running_var],
        s.finalize_grid(),
    )?;
    let normalize = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_forward_train_normalize",
        &p_norm,
        &[x, y, gamma, beta, save_mean, save_invstd],
        s.elementwise_grid(gpu, sizing),
    )?;
    Ok(vec![stats, finalize, normalize])
}

/// Eval-mode forward with the running statistics:
/// `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`. Overwrites `y`.
/// Sized for the adapter ([`BnSizing::for_gpu`]).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    s: &BatchNormShape,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let sizing = BnSizing::for_gpu(gpu);
    batchnorm_forward_eval_sized(
        gpu,
        s,
        sizing,
        false,
        [x, gamma, beta, running_mean, running_var, y],
    )
}

/// [`batchnorm_forward_eval`] with an explicit sizing, and with `relu` a fused ReLU; the
/// tensors in its argument order (x, gamma, beta, running_mean, running_var, y).
pub fn batchnorm_forward_eval_sized(
    gpu: &Gpu,
    s: &BatchNormShape,
    sizing: BnSizing,
    relu: bool,
    tensors: [&Tensor; 6],
) -> Result<Dispatch> {
    let [x, gamma, beta, running_mean, running_var, y] = tensors;
    s.validate(false)?;
    check_activation(s, x, "input x")?;
    check_activation(s, y, "output y")?;
    for (t, what) in [
        (gamma, "gamma"),
        (beta, "beta"),
        (running_mean, "running_mean"),
        (running_var, "running_var"),
    ] {
        expect_numel(t, s.channels, what)?;
    }
    gpu.dispatch(
        &BATCHNORM,
        "batchnorm_forward_eval",
        &BatchNormParams {
            relu: relu as u32,
            ..s.params(sizing)
        },
        &[x, y, gamma, beta, running_mean, running_var],
        s.elementwise_grid(gpu, sizing),
    )
}

/// Backward of the training-mode forward, from the saved batch statistics:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * invstd / rows * (rows * dy - dbeta - xhat * dgamma)`.
/// Overwrites `dx` (rows, C), `dgamma` (C) and `dbeta` (C). Three dispatches (reduce,
/// finalize, dx), to be recorded in order. Sized for the adapter ([`BnSizing::for_gpu`]).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    s: &BatchNormShape,
    x: &Tensor,
    dy: &Tensor,
    gamma: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<Vec<Dispatch>> {
    let sizing = BnSizing::for_gpu(gpu);
    batchnorm_backward_sized(
        gpu,
        s,
        sizing,
        [x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta],
    )
}

/// [`batchnorm_backward`] with an explicit sizing; the tensors in its argument order
/// (x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta).
pub fn batchnorm_backward_sized(
    gpu: &Gpu,
    s: &BatchNormShape,
    sizing: BnSizing,
    tensors: [&Tensor; 8],
) -> Result<Vec<Dispatch>> {
    let [x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta] = tensors;
    s.validate(true)?;
    check_activation(s, x, "input x")?;
    check_activation(s, dy, "gradient dy")?;
    check_activation(s, dx, "gradient dx")?;
    for (t, what) in [
        (gamma, "gamma"),
        (save_mean, "save_mean"),
        (save_invstd, "save_invstd"),
        (dgamma, "dgamma"),
        (dbeta, "dbeta"),
    ] {
        expect_numel(t, s.channels, what)?;
    }
    let p = s.params(sizing);
    let part = s.scratch(gpu, sizing, &format!("{}.bn_grad_partials", dy.label))?;
    let reduce = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_backward_reduce",
        &p,
        &[x, &part, dy, save_mean, save_invstd],
        s.reduce_grid(sizing),
    )?;
    let finalize = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_backward_finalize",
        &p,
        &[&part, dbeta, dgamma],
        s.finalize_grid(),
    )?;
    let dxd = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_backward_dx",
        &p,
        &[x, dx, dy, save_mean, save_invstd, gamma, dbeta, dgamma],
        s.elementwise_grid(gpu, sizing),
    )?;
    Ok(vec![reduce, finalize, dxd])
}
