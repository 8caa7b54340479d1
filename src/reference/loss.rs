//! Twin of cross-entropy, the gradient-boosting cross-entropy and the accuracy counts
//! (`src/method/loss.rs`, `shaders/loss.wgsl`). Scores `(N, C)` row-major; given as f64
//! they should be widened f32 values so that ties and orderings match the GPU's.

use crate::method::loss::{effective_k, LossKind};

/// Class j comes before class i in the score order (higher score first, lower index wins
/// ties).
fn before(row: &[f64], j: usize, i: usize) -> bool {
    row[j] > row[i] || (row[j] == row[i] && j < i)
}

/// J': the `kp` classes other than `y` that come first in the score order, in that order.
/// (Counted ranks rather than a sort, as the GPU does, so NaN scores cannot upset it.)
pub fn gce_set(row: &[f64], y: usize, kp: usize) -> Vec<usize> {
    let mut ranked: Vec<(usize, usize)> = (0..row.len())
        .filter(|&j| j != y)
        .map(|j| {
            (
                (0..row.len())
                    .filter(|&i| i != y && before(row, i, j))
                    .count(),
                j,
            )
        })
        .filter(|&(rank, _)| rank < kp)
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, j)| j).collect()
}

/// The label is among the `k` first classes of the score order.
pub fn in_top_k(row: &[f64], y: usize, k: usize) -> bool {
    (0..row.len()).filter(|&i| before(row, i, y)).count() < k
}

/// `-log softmax_{{y} U set}(s)[y]` and its gradient (length C, 0 outside {y} U set),
/// for one image; `set` must not contain `y`.
pub fn softmax_subset_loss(row: &[f64], y: usize, set: &[usize]) -> (f64, Vec<f64>) {
    let m = set.iter().map(|&j| row[j]).fold(row[y], f64::max);
    let z: f64 = (row[y] - m).exp() + set.iter().map(|&j| (row[j] - m).exp()).sum::<f64>();
    let loss = z.ln() - (row[y] - m);
    let mut g = vec![0.0; row.len()];
    g[y] = (row[y] - m).exp() / z - 1.0;
    for &j in set {
        g[j] = (row[j] - m).exp() / z;
    }
    (loss, g)
}

/// Plain cross-entropy for one image, written independently of the subset form (full
/// log-sum-exp): `(loss, gradient)`.
pub fn cross_entropy(row: &[f64], y: usize) -> (f64, Vec<f64>) {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + row.iter().map(|&s| (s - m).exp()).sum::<f64>().ln();
    let g = row
        .iter()
        .enumerate()
        .map(|(j, &s)| (s - lse).exp() - if j == y { 1.0 } else { 0.0 })
        .collect();
    (lse - row[y], g)
}

/// Per-image results and the batch gradient.
#[derive(Clone, Debug)]
pub struct LossResult {
    pub loss: Vec<f64>,
    pub top1: Vec<bool>,
    pub top5: Vec<bool>,
    /// Skipped: label out of range, a non-finite score, or a non-finite loss.
    pub non_finite: Vec<bool>,
    /// dL/ds of the batch-mean loss `(N, C)`.
    pub dscores: Vec<f64>,
    /// `(N, C)`: the class took part in the image's softmax (the label and the chosen
    /// negatives; every class for cross-entropy; none for a skipped image). The gradient is
    /// exactly 0 elsewhere; inside, it may also underflow to 0 at extreme scores.
    pub in_set: Vec<bool>,
}

impl LossResult {
    /// `[sum of losses, top1 count, top5 count, non-finite count]` as the GPU stats tensor.
    pub fn stats(&self) -> [f64; 4] {
        let count = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64;
        [
            self.loss.iter().sum(),
            count(&self.top1),
            count(&self.top5),
            count(&self.non_finite),
        ]
    }
}

/// Loss, gradient and accuracy for a batch (`scores (N, C)`, labels `(N)`). An image with
/// an out-of-range label, a non-finite score or a non-finite loss is skipped: loss 0, no
/// correct counts, a zero gradient row, and it counts as non-finite.
pub fn loss_forward_backward(
    n: usize,
    c: usize,
    kind: LossKind,
    scores: &[f64],
    labels: &[u32],
) -> LossResult {
    let mut r = LossResult {
        loss: vec![0.0; n],
        top1: vec![false; n],
        top5: vec![false; n],
        non_finite: vec![false; n],
        dscores: vec![0.0; n * c],
        in_set: vec![false; n * c],
    };
    for b in 0..n {
        let row = &scores[b * c..(b + 1) * c];
        let y = labels[b] as usize;
        if y >= c || row.iter().any(|s| !s.is_finite()) {
            r.non_finite[b] = true;
            continue;
        }
        let (l, g, set) = match kind {
            LossKind::CrossEntropy => {
                let (l, g) = cross_entropy(row, y);
                (l, g, (0..c).collect())
            }
            LossKind::Gce { k } => {
                let set = gce_set(row, y, effective_k(k, c).0 as usize);
                let (l, g) = softmax_subset_loss(row, y, &set);
                (l, g, set)
            }
        };
        if !l.is_finite() {
            r.non_finite[b] = true;
            continue;
        }
        r.in_set[b * c + y] = true;
        for j in set {
            r.in_set[b * c + j] = true;
        }
        r.loss[b] = l;
        r.top1[b] = in_top_k(row, y, 1);
        r.top5[b] = in_top_k(row, y, c.min(5));
        for (d, gj) in r.dscores[b * c..(b + 1) * c].iter_mut().zip(&g) {
            *d = gj / n as f64;
        }
    }
    r
}
