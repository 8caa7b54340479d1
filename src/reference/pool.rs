//! Twin of `shaders/pool.wgsl`: max pooling with argmax indices.

use crate::kernels::pool::MaxPoolShape;

/// Max pooling of `x` (N, H, W, C): returns y (N, OH, OW, C) and idx (N, OH, OW, C), the
/// flat position `h * W + w` of each max (first max in row-major window order wins; padding
/// never wins).
pub fn maxpool_forward(s: &MaxPoolShape, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut y = vec![0.0; s.n * oh * ow * s.c];
    let mut idx = vec![0u32; y.len()];
    for n in 0..s.n {
        for i in 0..oh {
            for j in 0..ow {
                for c in 0..s.c {
                    let mut best: Option<(f64, usize)> = None;
                    for kh in 0..s.k {
                        let Some(ih) = (i * s.stride + kh).checked_sub(s.pad) else {
                            continue;
                        };
                        if ih >= s.h {
                            continue;
                        }
                        for kw in 0..s.k {
                            let Some(iw) = (j * s.stride + kw).checked_sub(s.pad) else {
                                continue;
                            };
                            if iw >= s.w {
                                continue;
                            }
                            let pos = ih * s.w + iw;
                            let v = x[((n * s.h * s.w) + pos) * s.c + c];
                            if best.is_none_or(|(b, _)| v > b) {
                                best = Some((v, pos));
                            }
                        }
                    }
                    let (v, pos) = best.expect("every window holds an input");
                    let o = ((n * oh + i) * ow + j) * s.c + c;
                    y[o] = v;
                    idx[o] = pos as u32;
                }
            }
        }
    }
    (y, idx)
}

/// Max-pool backward: scatter each `dy` to the input its `idx` names (the GPU gathers the
/// same sums).
pub fn maxpool_backward(s: &MaxPoolShape, dy: &[f64], idx: &[u32]) -> Vec<f64> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dx = vec![0.0; s.n * s.h * s.w * s.c];
    for n in 0..s.n {
        for q in 0..oh * ow {
            for c in 0..s.c {
                let o = (n * oh * ow + q) * s.c + c;
                dx[(n * s.h * s.w + idx[o] as usize) * s.c + c] += dy[o];
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, f64s, rng, uniform};
    use rand::seq::SliceRandom;

    #[test]
    fn maxpool_backward_matches_finite_differences() {
        let mut g = rng("maxpool_backward_matches_finite_differences");
        let s = MaxPoolShape {
            n: 2,
            h: 7,
            w: 5,
            c: 3,
            k: 3,
            stride: 2,
            pad: 1,
        };
        // Distinct values 0.01 apart: no ties, and a step of 1e-5 never changes an argmax.
        let len = s.n * s.h * s.w * s.c;
        let mut x: Vec<f64> = (0..len).map(|i| i as f64 * 0.01 - 1.0).collect();
        x.shuffle(&mut g);
        let (y, idx) = maxpool_forward(&s, &x);
        let r = f64s(&uniform(&mut g, y.len(), 1.0));
        let dx = maxpool_backward(&s, &r, &idx);
        let mut loss = |x: &[f64]| {
            maxpool_forward(&s, x)
                .0
                .iter()
                .zip(&r)
                .map(|(a, b)| a * b)
                .sum()
        };
        check_grad("maxpool dx", &mut loss, &x, &dx, len, &mut g);
    }

    #[test]
    fn maxpool_first_max_wins_and_padding_never_wins() {
        let s = MaxPoolShape {
            n: 1,
            h: 3,
            w: 3,
            c: 1,
            k: 3,
            stride: 2,
            pad: 1,
        };
        // Constant negative input: padding (if it counted as 0) would win; it must not.
        let (y, idx) = maxpool_forward(&s, &[-1.0; 9]);
        assert_eq!(y, vec![-1.0; 4]);
        // First in-bounds position of each window in row-major order.
        assert_eq!(idx, vec![0, 1, 3, 4]);
    }
}
