//! The three convolution passes on the GPU's matrix units: `shaders/coop_tiles.wgsl` with
//! the accessors of `shaders/conv2d_coop.wgsl`, implicit GEMMs whose operands are f16 and
//! whose products are accumulated, and written, in f32. The mixed-precision counterparts of
//! [`conv2d_forward`](super::conv2d_forward), [`conv2d_backward_data`](super::conv2d_backward_data)
//! and [`conv2d_backward_weight`](super::conv2d_backward_weight), with the same
//! tensor structs and geometry: the read tensors are f16, the written one f32, or f16 for
//! the forward pass and the data gradient (rounded once from the f32 accumulator).

use super::{Conv2dBackwardData, Conv2dBackwardWeight, Conv2dForward, Conv2dGeometry, Conv2dShape};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu};
pub use crate::kernels::CoopTile;
use crate::kernels::{CONV2D_COOP16, CONV2D_COOP16_F16_OUT, CONV2D_COOP8, CONV2D_COOP8_F16_OUT};

/// How a cooperative-matrix convolution pass runs. [`Default`]: the largest tile the
/// adapter has, overwrite the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoopConvOptions {
    /// `None`: [`CoopTile::best`].
    pub tile: Option<CoopTile>,
    /// Backward passes: add into `dx` / `dw` instead of overwriting them. The forward pass
    /// refuses it.
    pub accumulate: bool,
}

/// The pass's shader, after checking the options against the adapter and the pass; `out`:
/// the result's dtype (f16 only for passes 0 and 1, else f32).
fn pass(
    gpu: &Gpu,
    launcher: &'static str,
    o: &CoopConvOptions,
    backward: bool,
    (index, out): (usize, DType),
) -> Result<(CoopTile, &'static crate::gpu::ShaderSource)> {
    if o.accumulate && !backward {
        return Err(Error::invalid_in(
            "options of",
            launcher,
            "this pass does not take `accumulate`",
        ));
    }
    let tile = match o.tile.or_else(|| CoopTile::best(gpu)) {
        Some(t) if t.available(gpu) => t,
        asked => {
            return Err(Error::invalid(
                launcher,
                format!(
                "adapter {} has no cooperative-matrix tile {} (f16 x f16 -> f32 tiles: {:?}, {})",
                gpu.info.name,
                asked.map_or("at all".to_string(), |t| format!("{t:?}")),
                gpu.features.coop_f16_f32,
                gpu.subgroup_sizes()
            ),
            ))
        }
    };
    let shader = match (tile, out == DType::F16 && index < 2) {
        (CoopTile::T8, false) => &CONV2D_COOP8[index],
        (CoopTile::T16, false) => &CONV2D_COOP16[index],
        (CoopTile::T8, true) => &CONV2D_COOP8_F16_OUT[index],
        (CoopTile::T16, true) => &CONV2D_COOP16_F16_OUT[index],
    };
    Ok((tile, shader))
}

/// The pass's dispatch: the GEMM (m, n, k), or `batch` of them of at most m rows each (the
/// data gradient's stride phases).
fn dispatch(
    gpu: &Gpu,
    s: &Conv2dShape,
    (tile, shader): (CoopTile, &'static crate::gpu::ShaderSource),
    (m, n, k, batch): (usize, usize, usize, usize),
    accumulate: bool,
    tensors: [&crate::gpu::Tensor; 3],
) -> Result<Dispatch> {
    let p = s.params(m, n, k, accumulate);
    let t = tile.workgroup_tile() as usize;
    let wg = [n.div_ceil(t) as u32, m.div_ceil(t) as u32, batch as u32];
    let constants = CoopTile::constants(gpu);
    gpu.dispatch_with(shader, "coop_gemm", &constants, &p, &tensors, wg)
}

/// Forward: x f16 (N,H,W,Cin), w f16 (KH,KW,Cin,Cout) -> y f32 or f16 (N,OH,OW,Cout).
/// Overwrites y.
pub fn conv2d_forward_coop(
    gpu: &Gpu,
    t: &Conv2dForward,
    g: Conv2dGeometry,
    o: &CoopConvOptions,
) -> Result<Dispatch> {
    const L: &str = "conv2d_forward_coop";
    let s = Conv2dShape::of(L, (t.x, "x"), (t.w, "w"), g)?;
    let out = t.y.dtype.float();
    let kernel = pass(gpu, L, o, false, (0, out))?;
    s.check_typed(
        L,
        [
            (t.x, "x", DType::F16),
            (t.w, "w", DType::F16),
            (t.y, "y", out),
        ],
    )?;
    let rows = s.n * s.oh() * s.ow();
    let red = s.kh * s.kw * s.cin;
    dispatch(
        gpu,
        &s,
        kernel,
        (rows, s.cout, red, 1),
        false,
        [t.x, t.w, t.y],
    )
}

/// Data gradient: dy f16 (N,OH,OW,Cout), w f16 (KH,KW,Cin,Cout) -> dx f32 or f16 (N,H,W,Cin).
/// Overwrites dx, or adds into it when `o.accumulate`. One GEMM per stride phase (stride^2
/// of them in one dispatch), each over only the taps that reach its input pixels, so a
/// stride-2 layer costs what a stride-1 layer of its size does.
pub fn conv2d_backward_data_coop(
    gpu: &Gpu,
    t: &Conv2dBackwardData,
    g: Conv2dGeometry,
    o: &CoopConvOptions,
) -> Result<Dispatch> {
    const L: &str = "conv2d_backward_data_coop";
    let s = Conv2dShape::of(L, (t.dx, "dx"), (t.w, "w"), g)?;
    let out = t.dx.dtype.float();
    let kernel = pass(gpu, L, o, true, (1, out))?;
    s.check_typed(
        L,
        [
            (t.dx, "dx", out),
            (t.w, "w", DType::F16),
            (t.dy, "dy", DType::F16),
        ],
    )?;
    // One GEMM per stride phase (batch index), the grid sized for the largest phase: its
    // input pixels and its taps only.
    let st = s.stride;
    let rows = s.n * s.h.div_ceil(st) * s.w.div_ceil(st);
    let red = s.kh.div_ceil(st) * s.kw.div_ceil(st) * s.cout;
    let tensors = [t.dy, t.w, t.dx];
    dispatch(
        gpu,
        &s,
        kernel,
        (rows, s.cin, red, st * st),
        o.accumulate,
        tensors,
    )
}

/// Weight gradient: x f16 (N,H,W,Cin), dy f16 (N,OH,OW,Cout) -> dw f32 (KH,KW,Cin,Cout).
/// Overwrites dw, or adds into it when `o.accumulate`.
pub fn conv2d_backward_weight_coop(
    gpu: &Gpu,
    t: &Conv2dBackwardWeight,
    g: Conv2dGeometry,
    o: &CoopConvOptions,
) -> Result<Dispatch> {
    const L: &str = "conv2d_backward_weight_coop";
    let s = Conv2dShape::of(L, (t.x, "x"), (t.dw, "dw"), g)?;
    let kernel = pass(gpu, L, o, true, (2, DType::F32))?;
    s.check_typed(
        L,
        [
            (t.x, "x", DType::F16),
            (t.dw, "dw", DType::F32),
            (t.dy, "dy", DType::F16),
        ],
    )?;
    let red = s.n * s.oh() * s.ow();
    let rows = s.kh * s.kw * s.cin;
    let tensors = [t.x, t.dy, t.dw];
    dispatch(
        gpu,
        &s,
        kernel,
        (rows, s.cout, red, 1),
        o.accumulate,
        tensors,
    )
}
