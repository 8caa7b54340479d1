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
/// Workgroups the reduction kernels aim for, so that large GPUs fill up.
const TARGET_WORKGROUPS: usize = 2048;
/// Fewest rows a chunk gets (each of the 8 row lanes then walks at least 4 rows).
const MIN_CHUNK_ROWS: usize = 32;

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
    pub _pad: u32,
}

impl BatchNormShape {
    /// (rows per chunk, number of chunks) of the row reductions.
    pub fn chunking(&self) -> (usize, usize) {
        let rows = self.rows.max(1);
        let blocks = self.channels.div_ceil(CB).max(1);
        let target_chunks = TARGET_WORKGROUPS.div_ceil(blocks).max(1);
        let chunk_rows = rows.div_ceil(target_chunks).max(MIN_CHUNK_ROWS);
        (chunk_rows, rows.div_ceil(chunk_rows))
    }

    /// The shader's parameter block.
    pub fn params(&self) -> BatchNormParams {
        let (chunk_rows, chunks) = self.chunking();
        BatchNormParams {
            rows: self.rows as u32,
            channels: self.channels as u32,
            chunk_rows: chunk_rows as u32,
            chunks: chunks as u32,
            eps: self.eps,
            momentum: self.momentum,
            inv_rows: 1.0 / self.rows.max(1) as f32,
            _pad: 0,
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
        if (self.rows as u64) * (self.channels as u64) > u32::MAX as u64 {
            return Err(Error::invalid(
                "batch-norm shape",
                format!(
                    "rows * channels = {} exceeds u32 indexing",
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

    fn reduce_grid(&self) -> [u32; 3] {
        let (_, chunks) = self.chunking();
        [self.channels.div_ceil(CB) as u32, chunks as u32, 1]
    }

    fn finalize_grid(&self) -> [u32; 3] {
        [self.channels.div_ceil(CB) as u32, 1, 1]
    }

    fn scratch(&self, gpu: &Gpu, label: &str) -> Result<Tensor> {
        let (_, chunks) = self.chunking();
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
/// normalize), to be recorded in order.
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
    let p = s.params();
    let part = s.scratch(gpu, &format!("{}.bn_stats_partials", x.label))?;
    let stats = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_forward_train_stats",
        &p,
        &[x, &part],
        s.reduce_grid(),
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
        &p,
        &[x, y, gamma, beta, save_mean, save_invstd],
        gpu.grid_for(s.rows * s.channels),
    )?;
    Ok(vec![stats, finalize, normalize])
}

/// Eval-mode forward with the running statistics:
/// `y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta`. Overwrites `y`.
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
        &s.params(),
        &[x, y, gamma, beta, running_mean, running_var],
        gpu.grid_for(s.rows * s.channels),
    )
}

/// Backward of the training-mode forward, from the saved batch statistics:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * invstd / rows * (rows * dy - dbeta - xhat * dgamma)`.
/// Overwrites `dx` (rows, C), `dgamma` (C) and `dbeta` (C). Three dispatches (reduce,
/// finalize, dx), to be recorded in order.
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
    let p = s.params();
    let part = s.scratch(gpu, &format!("{}.bn_grad_partials", dy.label))?;
    let reduce = gpu.dispatch(
        &BATCHNORM,
        "batchnorm_backward_reduce",
        &p,
        &[x, &part, dy, save_mean, save_invstd],
        s.reduce_grid(),
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
        gpu.grid_for(s.rows * s.channels),
    )?;
    Ok(vec![reduce, finalize, dxd])
}
