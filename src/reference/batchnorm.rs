//! Twin of `shaders/batchnorm.wgsl`: batch normalisation over the rows of a (rows, C) view.

/// Training-mode forward result.
#[derive(Clone, Debug)]
pub struct BatchNormTrain {
    /// (rows, C)
    pub y: Vec<f64>,
    /// Batch mean (C).
    pub mean: Vec<f64>,
    /// 1 / sqrt(biased batch variance + eps) (C).
    pub invstd: Vec<f64>,
}

/// Per-channel batch mean and (biased, unbiased) variance, two-pass.
pub fn batch_stats(rows: usize, c: usize, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; c];
    for r in 0..rows {
        for j in 0..c {
            mean[j] += x[r * c + j];
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f64);
    let mut m2 = vec![0.0; c];
    for r in 0..rows {
        for j in 0..c {
            let d = x[r * c + j] - mean[j];
            m2[j] += d * d;
        }
    }
    let biased = m2.iter().map(|v| v / rows as f64).collect();
    let unbiased = m2.iter().map(|v| v / (rows.max(2) - 1) as f64).collect();
    (mean, biased, unbiased)
}

/// Training-mode forward: normalise with the batch statistics and update the running
/// statistics in place (`r = (1 - momentum) r + momentum * stat`, unbiased variance).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    rows: usize,
    c: usize,
    eps: f64,
    momentum: f64,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &mut [f64],
    running_var: &mut [f64],
) -> BatchNormTrain {
    let (mean, var, var_unbiased) = batch_stats(rows, c, x);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    for j in 0..c {
        running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j];
        running_var[j] = (1.0 - momentum) * running_var[j] + momentum * var_unbiased[j];
    }
    let y = normalize(rows, c, x, gamma, beta, &mean, &invstd);
    BatchNormTrain { y, mean, invstd }
}

fn normalize(
    rows: usize,
    c: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    invstd: &[f64],
) -> Vec<f64> {
    let mut y = vec![0.0; rows * c];
    for r in 0..rows {
        for j in 0..c {
            let i = r * c + j;
            y[i] = gamma[j] * (x[i] - mean[j]) * invstd[j] + beta[j];
        }
    }
    y
}

/// Eval-mode forward with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    rows: usize,
    c: usize,
    eps: f64,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
) -> Vec<f64> {
    let invstd: Vec<f64> = running_var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    normalize(rows, c, x, gamma, beta, running_mean, &invstd)
}

/// Backward of the training-mode forward: returns (dx, dgamma, dbeta).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    rows: usize,
    c: usize,
    x: &[f64],
    dy: &[f64],
    gamma: &[f64],
    mean: &[f64],
    invstd: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for r in 0..rows {
        for j in 0..c {
            let i = r * c + j;
            let xhat = (x[i] - mean[j]) * invstd[j];
            dbeta[j] += dy[i];
            dgamma[j] += dy[i] * xhat;
        }
    }
    let n = rows as f64;
    let mut dx = vec![0.0; rows * c];
    for r in 0..rows {
        for j in 0..c {
            let i = r * c + j;
            let xhat = (x[i] - mean[j]) * invstd[j];
            dx[i] = gamma[j] * invstd[j] / n * (n * dy[i] - dbeta[j] - xhat * dgamma[j]);
        }
    }
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, f64s, rng, uniform};

    /// L = sum(y * r) through the training forward; the backward's dx, dgamma, dbeta match
    /// central differences.
    #[test]
    fn batchnorm_backward_matches_finite_differences() {
        let mut g = rng("batchnorm_backward_matches_finite_differences");
        for &(rows, c) in &[(7, 3), (12, 1), (5, 4)] {
            let x: Vec<f64> = f64s(&uniform(&mut g, rows * c, 2.0))
                .iter()
                .map(|v| v + 0.5)
                .collect();
            let gamma = f64s(&uniform(&mut g, c, 1.0));
            let beta = f64s(&uniform(&mut g, c, 1.0));
            let rw = f64s(&uniform(&mut g, rows * c, 1.0));
            let eps = 1e-3;
            let fwd = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                let o =
                    batchnorm_forward_train(rows, c, eps, 0.1, x, gamma, beta, &mut rm, &mut rv);
                o.y.iter().zip(&rw).map(|(a, b)| a * b).sum()
            };
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            let o = batchnorm_forward_train(rows, c, eps, 0.1, &x, &gamma, &beta, &mut rm, &mut rv);
            let (dx, dgamma, dbeta) =
                batchnorm_backward(rows, c, &x, &rw, &gamma, &o.mean, &o.invstd);
            check_grad("bn dx", &mut |v| fwd(v, &gamma, &beta), &x, &dx, 40, &mut g);
            check_grad(
                "bn dgamma",
                &mut |v| fwd(&x, v, &beta),
                &gamma,
                &dgamma,
                40,
                &mut g,
            );
            check_grad(
                "bn dbeta",
                &mut |v| fwd(&x, &gamma, v),
                &beta,
                &dbeta,
                40,
                &mut g,
            );
        }
    }

    #[test]
    fn batchnorm_running_stats_follow_pytorch() {
        // Two rows per channel: mean (a + b) / 2, unbiased var (a - b)^2 / 2.
        let x = [1.0, 10.0, 3.0, 14.0];
        let (mut rm, mut rv) = (vec![0.5, 0.5], vec![2.0, 2.0]);
        let o =
            batchnorm_forward_train(2, 2, 1e-5, 0.1, &x, &[1.0; 2], &[0.0; 2], &mut rm, &mut rv);
        assert_eq!(o.mean, vec![2.0, 12.0]);
        assert!((rm[0] - (0.9 * 0.5 + 0.1 * 2.0)).abs() < 1e-15);
        assert!((rv[1] - (0.9 * 2.0 + 0.1 * 8.0)).abs() < 1e-15);
        assert!((o.invstd[0] - 1.0 / (1.0f64 + 1e-5).sqrt()).abs() < 1e-15);
    }
}
