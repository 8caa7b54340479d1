//! Twin of the class-map head (`src/method/head.rs`, `shaders/head.wgsl` + GEMM).

use super::gemm::gemm;

/// `maps (rows, C) = feat (rows, D) x weight (D, C) + bias (C)`.
pub fn head_forward(
    rows: usize,
    d: usize,
    c: usize,
    feat: &[f64],
    weight: &[f64],
    bias: &[f64],
) -> Vec<f64> {
    let mut maps = vec![0.0; rows * c];
    gemm(rows, c, d, false, false, 1.0, feat, weight, 0.0, &mut maps);
    for r in 0..rows {
        for j in 0..c {
            maps[r * c + j] += bias[j];
        }
    }
    maps
}

/// Gradients of the head given `dmaps (rows, C)`: `(dfeat (rows, D), dweight (D, C),
/// dbias (C))`.
pub fn head_backward(
    rows: usize,
    d: usize,
    c: usize,
    feat: &[f64],
    weight: &[f64],
    dmaps: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dfeat = vec![0.0; rows * d];
    gemm(rows, d, c, false, true, 1.0, dmaps, weight, 0.0, &mut dfeat);
    let mut dweight = vec![0.0; d * c];
    gemm(d, c, rows, true, false, 1.0, feat, dmaps, 0.0, &mut dweight);
    (dfeat, dweight, column_sum(rows, c, dmaps))
}

/// Sum over rows of `src (rows, cols)`.
pub fn column_sum(rows: usize, cols: usize, src: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    for r in 0..rows {
        for j in 0..cols {
            out[j] += src[r * cols + j];
        }
    }
    out
}
