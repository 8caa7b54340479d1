//! Twin of the diversification block and global average pooling (`src/method/diversify.rs`,
//! `shaders/diversify.wgsl`). Maps are `(N, H, W, C)` NHWC, scores `(N, C)`. The random
//! draws use the same hash as the GPU ([`draw`], the CPU side of the shader's), so masks match
//! element for element; maps given here as f64 must be widened f32 values for the peak
//! comparisons to match the GPU's.

use crate::method::diversify::DiversifyConfig;

// The mask hash: the CPU side of `draw` in shaders/diversify.wgsl, bit for bit.

/// Which mask a draw belongs to (the last word hashed by `draw`).
pub const MASK_PEAK: u32 = 0;
/// See [`MASK_PEAK`].
pub const MASK_PATCH: u32 = 1;

/// The 32-bit integer hash used for every draw ("lowbias32": xorshift-multiply, two rounds).
pub fn lowbias32(x: u32) -> u32 {
    let mut x = x;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The hash behind one Bernoulli draw: chain `lowbias32` over
/// `(seed ^ 0x9e3779b9, step_lo, step_hi, b, c, patch, kind)`. `patch` is 0 for the peak
/// draw; `kind` is [`MASK_PEAK`] or [`MASK_PATCH`]. Same as `draw` in the WGSL.
pub fn draw(seed: u32, step: u64, b: u32, c: u32, patch: u32, kind: u32) -> u32 {
    let [lo, hi] = crate::method::diversify::step_words(step);
    let mut h = lowbias32(seed ^ 0x9e37_79b9);
    for v in [lo, hi, b, c, patch, kind] {
        h = lowbias32(h ^ v);
    }
    h
}

/// Bernoulli(p) from a hash: the top 24 bits as a uniform in [0, 1), `u < p`.
pub fn bernoulli(h: u32, p: f32) -> bool {
    ((h >> 8) as f32) * (1.0 / 16_777_216.0) < p
}

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
