//! The class-map head: a 1x1 convolution D -> C with bias that turns backbone features
//! F `(N, H, W, D)` into class maps M `(N, H, W, C)`, viewed as `rows = N * H * W` rows:
//! `M (rows, C) = F (rows, D) x W (D, C) + b (C)`. The products run on the GEMM launcher
//! ([`crate::kernels::gemm`]); `shaders/head.wgsl` adds the bias and sums columns (bias
//! gradient). Twin: `finegrain::reference::head` (feature `testing`).
//!
//! Mixed precision: `feat` and `weight` may both be f16 (the products then run on an f16
//! GEMM: cooperative matrices where the adapter has them, else f16 storage with f32
//! arithmetic); the maps, the bias and every gradient of a parameter stay f32. The backward
//! pass then rounds `dmaps` to f16 once and writes `dfeat` in f16 through an f32 scratch
//! ([`HeadHalf`]).

use super::{dims, dims_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::kernels::cast::cast_values;
use crate::kernels::gemm::{gemm, Gemm, GemmOptions};
use crate::kernels::HEAD;

/// Parameter block of `shaders/head.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct HeadParams {
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    /// 1: `column_sum` adds into its output; 0: overwrites it.
    pub(crate) accumulate: u32,
    pub(crate) _pad: u32,
}

/// Tensors of [`head_forward`]: `feat (rows, D)` and `maps (rows, C)` (any shapes ending in
/// D and C with the same leading dimensions, e.g. `(N, H, W, D)`), `weight (D, C)`,
/// `bias (C)`.
pub struct HeadForward<'a> {
    pub feat: &'a Tensor,
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub maps: &'a Tensor,
}

/// Tensors of [`head_backward`]: as [`HeadForward`], with the gradients `dmaps` (read),
/// `dfeat`, `dweight` and `dbias` (written) in the shapes of `maps`, `feat`, `weight` and
/// `bias`.
pub struct HeadBackward<'a> {
    pub feat: &'a Tensor,
    pub weight: &'a Tensor,
    pub dmaps: &'a Tensor,
    pub dfeat: &'a Tensor,
    pub dweight: &'a Tensor,
    pub dbias: &'a Tensor,
    /// Required when `feat` and `weight` are f16 (and `dfeat` then is too).
    pub half: Option<HeadHalf<'a>>,
    /// Add this batch's `dweight`, `dbias` into the tensors instead of overwriting them
    /// (the micro-batches of one optimizer step). `dfeat` is this batch's either way.
    pub accumulate: bool,
}

/// The backward pass's scratch in mixed precision: `dmaps` rounded to f16 (`dmaps`'s
/// shape), and `dfeat` in f32 before it is rounded (`feat`'s shape).
pub struct HeadHalf<'a> {
    pub dmaps: &'a Tensor,
    pub dfeat: &'a Tensor,
}

/// `t`'s shape with its last dimension replaced by `last`.
fn with_last(t: &Tensor, last: usize) -> Vec<usize> {
    let mut s = t.shape.clone();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

/// Rows of the `(rows, cols)` view of `t`: error unless `t` holds f32 with `cols` its last
/// dimension, and at least one row.
fn rows_of(launcher: &str, role: &str, t: &Tensor, cols: usize) -> Result<usize> {
    rows_typed(launcher, role, t, cols, DType::F32)
}

/// As `rows_of`, `t` holding `dtype`.
fn rows_typed(launcher: &str, role: &str, t: &Tensor, cols: usize, dtype: DType) -> Result<usize> {
    if t.shape.len() < 2 || t.shape.last() != Some(&cols) {
        return Err(Error::ShapeMismatch {
            context: format!("{launcher} {role}"),
            tensor: t.label.clone(),
            expected: format!("rows x {cols} (a last dimension of {cols})"),
            found: t.shape.clone(),
            dtype: format!("{:?}", t.dtype),
        });
    }
    t.check(launcher, role, dtype, Size::Len(t.numel()))?;
    let rows = t.numel() / cols;
    dims(launcher, &[("rows", rows), ("cols", cols)])?;
    Ok(rows)
}

/// (rows, D, C) of the head: D and C from `weight (D, C)`, rows from `feat (rows, D)` (of
/// `weight`'s dtype, f32 or f16); and error unless `bias` is (C) and `maps` (f32) has
/// `feat`'s shape with C last.
fn head_dims(
    launcher: &str,
    feat: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    maps: (&Tensor, &str),
) -> Result<(usize, usize, usize)> {
    let operands = weight.dtype.float();
    let [d, c] = dims_of(launcher, "weight", weight, operands, ["D", "C"])?;
    let rows = rows_typed(launcher, "feat", feat, d, operands)?;
    dims(launcher, &[("rows", rows), ("C", c)])?;
    bias.check(launcher, "bias", DType::F32, Size::Shape(&[c]))?;
    let (m, role) = maps;
    m.check(launcher, role, DType::F32, Size::Shape(&with_last(feat, c)))?;
    Ok((rows, d, c))
}

/// Forward: `maps (rows, C) = feat (rows, D) x weight (D, C) + bias (C)`.
/// Two dispatches (GEMM, bias add), to be recorded in order. Overwrites `maps`.
pub fn head_forward(gpu: &Gpu, t: &HeadForward) -> Result<Vec<Dispatch>> {
    head_dims("head_forward", t.feat, t.weight, t.bias, (t.maps, "maps"))?;
    let product = gemm(
        gpu,
        &Gemm {
            a: t.feat,
            b: t.weight,
            c: t.maps,
        },
        &GemmOptions::default(),
    )?;
    let add = head_bias_add(gpu, t.bias, t.maps)?;
    Ok(vec![product, add])
}

/// `maps (rows, C) += bias (C)` broadcast over rows (C from `bias`). Accumulates into
/// `maps`.
pub(crate) fn head_bias_add(gpu: &Gpu, bias: &Tensor, maps: &Tensor) -> Result<Dispatch> {
    const L: &str = "head_bias_add";
    let [c] = dims_of(L, "bias", bias, DType::F32, ["C"])?;
    let rows = rows_of(L, "maps", maps, c)?;
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
/// `dbias (C) = sum over rows of dmaps`. Three dispatches (independent of each other); five
/// in mixed precision (`dmaps` rounded to f16 first, `dfeat` rounded from its f32 scratch
/// after), to be recorded in order.
/// Overwrites `dfeat`, and `dweight` and `dbias` or, with `t.accumulate`, adds into them.
pub fn head_backward(gpu: &Gpu, t: &HeadBackward) -> Result<Vec<Dispatch>> {
    const L: &str = "head_backward";
    let (_, d, c) = head_dims(L, t.feat, t.weight, t.dbias, (t.dmaps, "dmaps"))?;
    t.dfeat
        .check(L, "dfeat", t.feat.dtype, Size::Shape(&t.feat.shape))?;
    t.dweight
        .check(L, "dweight", DType::F32, Size::Shape(&[d, c]))?;
    // Mixed precision: the GEMMs read dmaps rounded to f16 and write dfeat through an f32
    // scratch, rounded after.
    let half = match (t.feat.dtype, &t.half) {
        (DType::F16, Some(h)) => {
            h.dmaps
                .check(L, "f16 dmaps", DType::F16, Size::Shape(&t.dmaps.shape))?;
            h.dfeat
                .check(L, "f32 dfeat", DType::F32, Size::Shape(&t.feat.shape))?;
            Some(h)
        }
        (DType::F16, None) => {
            return Err(Error::invalid(
                L,
                format!(
                    "f16 features `{}` need the f16 scratch (HeadBackward::half)",
                    t.feat.label
                ),
            ))
        }
        _ => None,
    };
    let (dmaps, dfeat) = half.map_or((t.dmaps, t.dfeat), |h| (h.dmaps, h.dfeat));
    let mut out = Vec::new();
    if let Some(h) = half {
        out.push(cast_values(gpu, t.dmaps, h.dmaps, 1.0)?);
    }
    // dfeat (rows, D) = dmaps (rows, C) x weight^T: weight (D, C) is B stored (n, k),
    // used transposed.
    let data = Gemm {
        a: dmaps,
        b: t.weight,
        c: dfeat,
    };
    let data_o = GemmOptions {
        trans_b: true,
        ..Default::default()
    };
    out.push(gemm(gpu, &data, &data_o)?);
    if let Some(h) = half {
        out.push(cast_values(gpu, h.dfeat, t.dfeat, 1.0)?);
    }
    // dweight (D, C) = feat^T x dmaps (rows, C): feat (rows, D) is A stored (k, m), used
    // transposed.
    let wgrad = Gemm {
        a: t.feat,
        b: dmaps,
        c: t.dweight,
    };
    let wgrad_o = GemmOptions {
        trans_a: true,
        beta: if t.accumulate { 1.0 } else { 0.0 },
        ..Default::default()
    };
    out.push(gemm(gpu, &wgrad, &wgrad_o)?);
    out.push(column_sum(gpu, t.dmaps, t.dbias, t.accumulate)?);
    Ok(out)
}

/// `dst (cols) = (accumulate ? dst : 0) + sum over r of src (rows, cols)[r, :]`, summed in
/// a fixed order (deterministic); cols from `dst`, rows from `src` (any shape ending in
/// cols). Used for the head's bias gradient and for the batch sum of the loss statistics.
/// Overwrites `dst`, or adds into it when `accumulate`.
pub fn column_sum(gpu: &Gpu, src: &Tensor, dst: &Tensor, accumulate: bool) -> Result<Dispatch> {
    const L: &str = "column_sum";
    let [cols] = dims_of(L, "dst", dst, DType::F32, ["cols"])?;
    let rows = rows_of(L, "src", src, cols)?;
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
