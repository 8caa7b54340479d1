//! The diversification block (DB, training only) and plain global average pooling
//! (evaluation, and the baseline without DB), on class maps M `(N, H, W, C)` NHWC.
//! Kernel: `shaders/diversify.wgsl`; twin: `finegrain::reference::diversify` (feature `testing`).
//!
//! Per image b and class c: the peak mask marks every tied maximum of M_c and is drawn
//! once (`r_peak ~ Bernoulli(p_peak)`); the map is tiled into G x G patches from (0, 0),
//! the ragged last row / column of patches included, each drawn with `p_patch`; a drawn
//! patch suppresses its non-peak locations; peaks are suppressed only by `r_peak`.
//! Suppressed locations are scaled by `alpha`; scores are the mean over H x W.
//!
//! Randomness: every draw is `draw(seed, step, b, c, patch, kind)`, a chain of the
//! integer hash `lowbias32` with u32 wrapping arithmetic, identical in WGSL and in the CPU
//! twin (`reference::diversify`), so the GPU masks equal the twin's element for element on
//! any adapter, and a resumed run (same seed, same step counter) draws the same masks as an
//! uninterrupted one. The step
//! lives in a 2-element u32 tensor `[step_lo, step_hi]` (see [`step_words`]) that the
//! trainer rewrites each step, so the dispatch is built once.

use super::dims_of;
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::kernels::DIVERSIFY;

/// Settings of the diversification block (METHOD.md defaults: 0.5, 0.5, G = 3, 0.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiversifyConfig {
    /// Probability that the peak locations of one (image, class) map are suppressed.
    pub p_peak: f32,
    /// Probability that one G x G patch of one (image, class) map is suppressed.
    pub p_patch: f32,
    /// Patch side G in map cells (see [`DiversifyConfig::grid_for_map`]).
    pub grid: u32,
    /// Activation suppression factor: suppressed locations are multiplied by it.
    pub alpha: f32,
    /// Seed of the counter-based hash (with the step counter).
    pub seed: u32,
}

impl Default for DiversifyConfig {
    fn default() -> Self {
        DiversifyConfig {
            p_peak: 0.5,
            p_patch: 0.5,
            grid: 3,
            alpha: 0.1,
            seed: 0,
        }
    }
}

impl DiversifyConfig {
    /// Error unless the probabilities and alpha lie in [0, 1] and G >= 1.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("p_peak", self.p_peak),
            ("p_patch", self.p_patch),
            ("alpha", self.alpha),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid_in(
                    "diversification block",
                    name,
                    format!("{v} is not in [0, 1]"),
                ));
            }
        }
        if self.grid == 0 {
            return Err(Error::invalid(
                "diversification block grid (patch size G)",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Patch size G for an `h x w` class map, scaled with the map size from the paper's
    /// G = 3 at 14 x 14: `G = max(1, round(3 * min(h, w) / 14))`, rounding halves up
    /// (integer arithmetic: `(3 * min(h, w) + 7) / 14`). 7 x 7 -> 2, 14 x 14 -> 3,
    /// 28 x 28 -> 6, 4 x 4 -> 1.
    pub fn grid_for_map(h: usize, w: usize) -> u32 {
        let m = h.min(w) as u64;
        ((3 * m + 7) / 14).clamp(1, u32::MAX as u64) as u32
    }
}

/// The step counter as the `[step_lo, step_hi]` words of the step tensor.
pub fn step_words(step: u64) -> [u32; 2] {
    [step as u32, (step >> 32) as u32]
}

/// Parameter block of `shaders/diversify.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DiversifyParams {
    pub(crate) n: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) c: u32,
    pub(crate) grid: u32,
    /// Patches per row, ceil(W / G).
    pub(crate) patches_x: u32,
    pub(crate) seed: u32,
    pub(crate) _pad: u32,
    pub(crate) p_peak: f32,
    pub(crate) p_patch: f32,
    pub(crate) alpha: f32,
    pub(crate) _pad2: u32,
}

fn params(shape: [usize; 4], cfg: Option<&DiversifyConfig>) -> Result<DiversifyParams> {
    let [n, h, w, c] = shape;
    let mut p = DiversifyParams {
        n: n as u32,
        h: h as u32,
        w: w as u32,
        c: c as u32,
        ..Default::default()
    };
    if let Some(cfg) = cfg {
        cfg.validate()?;
        p.grid = cfg.grid;
        p.patches_x = (w as u32).div_ceil(cfg.grid);
        p.seed = cfg.seed;
        p.p_peak = cfg.p_peak;
        p.p_patch = cfg.p_patch;
        p.alpha = cfg.alpha;
    }
    Ok(p)
}

/// `(N, H, W, C)` of the class maps (or their gradient) `t`.
fn map_dims(launcher: &str, role: &str, t: &Tensor) -> Result<[usize; 4]> {
    dims_of(launcher, role, t, DType::F32, ["N", "H", "W", "C"])
}

/// Tensors of [`diversify_forward`]: `maps (N, H, W, C)` (read), `step` = `[step_lo,
/// step_hi]` u32 (read), `mask (N, H, W, C)` u32 and `scores (N, C)` (written).
pub struct DiversifyForward<'a> {
    pub maps: &'a Tensor,
    pub step: &'a Tensor,
    pub mask: &'a Tensor,
    pub scores: &'a Tensor,
}

/// Tensors of [`diversify_backward`]: `dscores (N, C)` and `mask (N, H, W, C)` u32 (read),
/// `dmaps (N, H, W, C)` (written).
pub struct DiversifyBackward<'a> {
    pub dscores: &'a Tensor,
    pub mask: &'a Tensor,
    pub dmaps: &'a Tensor,
}

/// Training forward of the DB: per (b, c) peak mask and patch mask from (`cfg.seed`, the
/// step in `step`, b, c), suppression by `alpha`, mean over H x W. `maps (N, H, W, C)` ->
/// `scores (N, C)`; the sizes come from `maps`. Overwrites `scores` and `mask`
/// (1 = suppressed; read by [`diversify_backward`]). One dispatch.
pub fn diversify_forward(
    gpu: &Gpu,
    cfg: &DiversifyConfig,
    t: &DiversifyForward,
) -> Result<Vec<Dispatch>> {
    const L: &str = "diversify_forward";
    let shape = map_dims(L, "maps", t.maps)?;
    let [n, _, _, c] = shape;
    let p = params(shape, Some(cfg))?;
    t.step.check(L, "step", DType::U32, Size::Shape(&[2]))?;
    t.mask.check(L, "mask", DType::U32, Size::Shape(&shape))?;
    t.scores
        .check(L, "scores", DType::F32, Size::Shape(&[n, c]))?;
    let wg = [c.div_ceil(32) as u32, n as u32, 1];
    Ok(vec![gpu.dispatch(
        &DIVERSIFY,
        "diversify_forward",
        &p,
        &[t.maps, t.scores, t.mask, t.step],
        wg,
    )?])
}

/// Backward of the DB: `dmaps (N, H, W, C) = dscores (N, C) * (mask ? alpha : 1) / (H * W)`;
/// the sizes come from `dmaps`. Overwrites `dmaps`.
pub fn diversify_backward(
    gpu: &Gpu,
    cfg: &DiversifyConfig,
    t: &DiversifyBackward,
) -> Result<Dispatch> {
    const L: &str = "diversify_backward";
    let shape = map_dims(L, "dmaps", t.dmaps)?;
    let [n, h, w, c] = shape;
    let p = params(shape, Some(cfg))?;
    t.dscores
        .check(L, "dscores", DType::F32, Size::Shape(&[n, c]))?;
    t.mask.check(L, "mask", DType::U32, Size::Shape(&shape))?;
    gpu.dispatch(
        &DIVERSIFY,
        "diversify_backward",
        &p,
        &[t.dscores, t.dmaps, t.mask],
        gpu.grid_for(n * h * w * c),
    )
}

/// Evaluation (and the baseline without DB): `scores (N, C)` = mean over H x W of
/// `maps (N, H, W, C)` (the sizes come from `maps`). Overwrites `scores`.
pub fn average_scores(gpu: &Gpu, maps: &Tensor, scores: &Tensor) -> Result<Dispatch> {
    const L: &str = "average_scores";
    let shape = map_dims(L, "maps", maps)?;
    let [n, _, _, c] = shape;
    let p = params(shape, None)?;
    scores.check(L, "scores", DType::F32, Size::Shape(&[n, c]))?;
    let wg = [c.div_ceil(32) as u32, n as u32, 1];
    gpu.dispatch(&DIVERSIFY, "average_scores", &p, &[maps, scores], wg)
}

/// Backward of [`average_scores`]: `dmaps (N, H, W, C) = dscores (N, C) / (H * W)` (the
/// sizes come from `dmaps`). Overwrites `dmaps`.
pub fn average_scores_backward(gpu: &Gpu, dscores: &Tensor, dmaps: &Tensor) -> Result<Dispatch> {
    const L: &str = "average_scores_backward";
    let shape = map_dims(L, "dmaps", dmaps)?;
    let [n, h, w, c] = shape;
    let p = params(shape, None)?;
    dscores.check(L, "dscores", DType::F32, Size::Shape(&[n, c]))?;
    gpu.dispatch(
        &DIVERSIFY,
        "average_scores_backward",
        &p,
        &[dscores, dmaps],
        gpu.grid_for(n * h * w * c),
    )
}
