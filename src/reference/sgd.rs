//! Twin of `shaders/sgd.wgsl`: PyTorch SGD with momentum (dampening 0, nesterov off).

/// One step: `hyper` = [lr, momentum, weight_decay, grad_scale];
/// `v = momentum * v + (grad * grad_scale + wd * param)`, `param -= lr * v`
/// (wd = 0 unless `apply_decay`).
pub fn sgd_step(
    param: &mut [f64],
    grad: &[f64],
    velocity: &mut [f64],
    hyper: [f64; 4],
    apply_decay: bool,
) {
    let [lr, momentum, wd, scale] = hyper;
    let wd = if apply_decay { wd } else { 0.0 };
    for i in 0..param.len() {
        let g = grad[i] * scale + wd * param[i];
        velocity[i] = momentum * velocity[i] + g;
        param[i] -= lr * velocity[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_step_matches_pytorch_formula() {
        // One parameter, two steps by hand: lr 0.1, momentum 0.9, wd 0.01, scale 0.5.
        let (mut p, mut v) = (vec![2.0], vec![0.0]);
        let h = [0.1, 0.9, 0.01, 0.5];
        sgd_step(&mut p, &[4.0], &mut v, h, true);
        // g = 2 + 0.02 = 2.02; v = 2.02; p = 2 - 0.202
        assert!((v[0] - 2.02).abs() < 1e-12 && (p[0] - 1.798).abs() < 1e-12);
        sgd_step(&mut p, &[4.0], &mut v, h, false);
        // g = 2; v = 0.9 * 2.02 + 2 = 3.818; p = 1.798 - 0.3818
        assert!((v[0] - 3.818).abs() < 1e-12 && (p[0] - 1.4162).abs() < 1e-12);
    }
}
