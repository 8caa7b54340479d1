//! The class-map head: a 1x1 convolution D -> C with bias that turns backbone features
//! F `(N, H, W, D)` into class maps M `(N, H, W, C)`, viewed as `rows = N * H * W` rows:
//! `M (rows, C) = F (rows, D) x W (D, C) + b (C)`. The products run on the GEMM launcher
//! ([`crate::kernels::gemm`]); `shaders/head.wgsl` adds the bias and sums columns (bias
//! gradient). Twin: `finegrain::reference::head` (feature `testing`).

use super::{dims, need};
use crate::error::Result;
use crate::gpu::{DType, Dispatch, Gpu, Tensor};
use crate::kernels::gemm::{gemm, GemmSpec};
use crate::kernels::HEAD;

/// Parameter block of `shaders/head.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct HeadParams {
    pub rows: u32,
    pub cols: u32,
    /// 1: `column_sum` adds into its output; 0: overwrites it.
    pub accumulate: u32,
    pub _pad: u32,
}

/// Forward: `maps (rows, C) = feat (rows, D) x weight (D, C) + bias (C)`.
/// Two dispatches (GEMM, bias add), to be recorded in order. Overwrites `maps`.
#[allow(clippy::too_many_arguments)]
pub fn head_forward(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    c: usize,
    feat: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    maps: &Tensor,
) -> Result<Vec<Dispatch>> {
    dims("head_forward", &[("rows", rows), ("D", d)])?;
    dims("head_forward", &[("rows", rows), ("C", c)])?;
    dims("head_forward", &[("D", d), ("C", c)])?;
    need(feat, DType::F32, &[rows, d])?;
    need(weight, DType::F32, &[d, c])?;
    need(bias, DType::F32, &[c])?;
    need(maps, DType::F32, &[rows, c])?;
    let product = gemm(gpu, &GemmSpec::new(rows, c, d), feat, weight, maps)?;
    let add = head_bias_add(gpu, rows, c, bias, maps)?;
    Ok(vec![product, add])
}

/// `maps (rows, C) += bias (C)` broadcast over rows. Accumulates into `maps`.
pub fn head_bias_add(
    gpu: &Gpu,
    rows: usize,
    c: usize,
    bias: &Tensor,
    maps: &Tensor,
) -> Result<Dispatch> {
    dims("head_bias_add", &[("rows", rows), ("C", c)])?;
    need(bias, DType::F32, &[c])?;
    need(maps, DType::F32, &[rows, c])?;
    let p = HeadParams {
        rows: rows as u32,
        cols: c as u32,
        ..Default::default()
    };
    gpu.dispatch(
        &HEAD,
        "head_bias_add",
        &p,
        &[bias, maps],
        gpu.grid_for(rows * c),
    )
}

/// Backward of [`head_forward`] given `dmaps (rows, C)`:
/// `dfeat (rows, D) = dmaps x weight^T`, `dweight (D, C) = feat^T x dmaps`,
/// `dbias (C) = sum over rows of dmaps`. Three dispatches (independent of each other).
/// Overwrites `dfeat`, `dweight` and `dbias`.
#[allow(clippy::too_many_arguments)]
pub fn head_backward(
    gpu: &Gpu,
    rows: usize,
    d: usize,
    c: usize,
    feat: &Tensor,
    weight: &Tensor,
    dmaps: &Tensor,
    dfeat: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
) -> Result<Vec<Dispatch>> {
    dims("head_backward", &[("rows", rows), ("D", d)])?;
    dims("head_backward", &[("rows", rows), ("C", c)])?;
    dims("head_backward", &[("D", d), ("C", c)])?;
    need(feat, DType::F32, &[rows, d])?;
    need(weight, DType::F32, &[d, c])?;
    need(dmaps, DType::F32, &[rows, c])?;
    need(dfeat, DType::F32, &[rows, d])?;
    need(dweight, DType::F32, &[d, c])?;
    need(dbias, DType::F32, &[c])?;
    // weight (D, C) is B stored (n, k) = (D, C), used transposed.
    let data = GemmSpec {
        trans_b: true,
        ..GemmSpec::new(rows, d, c)
    };
    // feat (rows, D) is A stored (k, m) = (rows, D), used transposed.
    let wgrad = GemmSpec {
        trans_a: true,
        ..GemmSpec::new(d, c, rows)
    };
    Ok(vec![
        gemm(gpu, &data, dmaps, weight, dfeat)?,
        gemm(gpu, &wgrad, feat, dmaps, dweight)?,
        column_sum(gpu, rows, c, dmaps, dbias, false)?,
    ])
}

/// `dst (cols) = (accumulate ? dst : 0) + sum over r of src (rows, cols)[r, :]`, summed in
/// a fixed order (deterministic). Used for the head's bias gradient and for the batch sum
/// of the loss statistics. Overwrites `dst`, or adds into it when `accumulate`.
pub fn column_sum(
    gpu: &Gpu,
    rows: usize,
    cols: usize,
    src: &Tensor,
    dst: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    dims("column_sum", &[("rows", rows), ("cols", cols)])?;
    need(src, DType::F32, &[rows, cols])?;
    need(dst, DType::F32, &[cols])?;
    let p = HeadParams {
        rows: rows as u32,
        cols: cols as u32,
        accumulate: accumulate as u32,
        _pad: 0,
    };
    gpu.dispatch(
        &HEAD,
        "column_sum",
        &p,
        &[src, dst],
        gpu.grid(cols.div_ceil(16) as u64),
    )
}
