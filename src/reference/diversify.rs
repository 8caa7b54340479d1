//! Twin of the diversification block and global average pooling (`src/method/diversify.rs`,
//! `shaders/diversify.wgsl`). Maps are `(N, H, W, C)` NHWC, scores `(N, C)`. The random
//! draws use the same hash as the GPU ([`crate::method::diversify::draw`]), so masks match
//! element for element; maps given here as f64 must be widened f32 values for the peak
//! comparisons to match the GPU's.

use crate::method::diversify::{bernoulli, draw, DiversifyConfig, MASK_PATCH, MASK_PEAK};

/// The DB mask `(N, H, W, C)` (1 = suppressed) for `step`.
#[allow(clippy::too_many_arguments)]
pub fn diversify_mask(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    cfg: &DiversifyConfig,
    step: u64,
    maps: &[f64],
) -> Vec<u32> {
    let g = cfg.grid as usize;
    let patches_x = w.div_ceil(g);
    let mut mask = vec![0u32; n * h * w * c];
    for b in 0..n {
        for ch in 0..c {
            let at = |y: usize, x: usize| ((b * h + y) * w + x) * c + ch;
            let mut peak = f64::NEG_INFINITY;
            for y in 0..h {
                for x in 0..w {
                    peak = peak.max(maps[at(y, x)]);
                }
            }
            let r_peak = bernoulli(
                draw(cfg.seed, step, b as u32, ch as u32, 0, MASK_PEAK),
                cfg.p_peak,
            );
            for y in 0..h {
                for x in 0..w {
                    let i = at(y, x);
                    let sup = if maps[i] == peak {
                        r_peak
                    } else {
                        let q = (y / g) * patches_x + x / g;
                        bernoulli(
                            draw(cfg.seed, step, b as u32, ch as u32, q as u32, MASK_PATCH),
                            cfg.p_patch,
                        )
                    };
                    mask[i] = sup as u32;
                }
            }
        }
    }
    mask
}

/// Scores `(N, C)`: the mean over H x W of the maps with masked locations scaled by `alpha`.
pub fn masked_scores(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    alpha: f64,
    maps: &[f64],
    mask: &[u32],
) -> Vec<f64> {
    let hw = h * w;
    let mut s = vec![0.0; n * c];
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                let i = (b * hw + p) * c + ch;
                s[b * c + ch] += if mask[i] != 0 {
                    alpha * maps[i]
                } else {
                    maps[i]
                };
            }
        }
    }
    s.iter_mut().for_each(|v| *v /= hw as f64);
    s
}

/// Training forward: `(mask, scores)`.
#[allow(clippy::too_many_arguments)]
pub fn diversify_forward(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    cfg: &DiversifyConfig,
    step: u64,
    maps: &[f64],
) -> (Vec<u32>, Vec<f64>) {
    let mask = diversify_mask(n, h, w, c, cfg, step, maps);
    let s = masked_scores(n, h, w, c, cfg.alpha as f64, maps, &mask);
    (mask, s)
}

/// `dmaps (N, H, W, C) = dscores (N, C) * (mask ? alpha : 1) / (H * W)`.
#[allow(clippy::too_many_arguments)]
pub fn diversify_backward(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    alpha: f64,
    dscores: &[f64],
    mask: &[u32],
) -> Vec<f64> {
    let hw = h * w;
    let mut d = vec![0.0; n * hw * c];
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                let i = (b * hw + p) * c + ch;
                let f = if mask[i] != 0 { alpha } else { 1.0 };
                d[i] = dscores[b * c + ch] * f / hw as f64;
            }
        }
    }
    d
}

/// Evaluation: the plain mean over H x W.
pub fn average_scores(n: usize, h: usize, w: usize, c: usize, maps: &[f64]) -> Vec<f64> {
    masked_scores(n, h, w, c, 1.0, maps, &vec![0; n * h * w * c])
}

/// `dmaps = dscores / (H * W)` broadcast over H x W.
pub fn average_scores_backward(
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    dscores: &[f64],
) -> Vec<f64> {
    diversify_backward(n, h, w, c, 1.0, dscores, &vec![0; n * h * w * c])
}
