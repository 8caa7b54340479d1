//! Twin of `shaders/elementwise.wgsl`.

/// `max(x, 0)`.
pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// `dy * (y > 0)`, `y` the ReLU output.
pub fn relu_backward(y: &[f64], dy: &[f64]) -> Vec<f64> {
    y.iter()
        .zip(dy)
        .map(|(&y, &d)| if y > 0.0 { d } else { 0.0 })
        .collect()
}

/// `y + x`.
pub fn add(y: &[f64], x: &[f64]) -> Vec<f64> {
    y.iter().zip(x).map(|(a, b)| a + b).collect()
}

/// `max(y + x, 0)`.
pub fn add_relu(y: &[f64], x: &[f64]) -> Vec<f64> {
    relu(&add(y, x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_grad, f64s, rng, uniform};

    /// Values kept away from the kink at 0 so central differences are exact.
    fn away_from_zero(v: Vec<f32>) -> Vec<f64> {
        f64s(&v)
            .into_iter()
            .map(|v| if v.abs() < 1e-2 { v + 0.05 } else { v })
            .collect()
    }

    #[test]
    fn relu_backward_matches_finite_differences() {
        let mut g = rng("relu_backward_matches_finite_differences");
        let x = away_from_zero(uniform(&mut g, 50, 1.0));
        let r = f64s(&uniform(&mut g, 50, 1.0));
        let loss = |x: &[f64]| relu(x).iter().zip(&r).map(|(a, b)| a * b).sum::<f64>();
        let dx = relu_backward(&relu(&x), &r);
        check_grad("relu dx", &mut |v| loss(v), &x, &dx, 50, &mut g);
    }

    #[test]
    fn add_relu_backward_matches_finite_differences() {
        // Gradient of max(a + b, 0) w.r.t. a and b is relu_backward(out, dy) for both.
        let mut g = rng("add_relu_backward_matches_finite_differences");
        let a = f64s(&uniform(&mut g, 40, 1.0));
        let b: Vec<f64> = away_from_zero(uniform(&mut g, 40, 1.0))
            .iter()
            .zip(&a)
            .map(|(s, a)| s - a)
            .collect();
        let r = f64s(&uniform(&mut g, 40, 1.0));
        let out = add_relu(&a, &b);
        let d = relu_backward(&out, &r);
        let loss = |a: &[f64], b: &[f64]| {
            add_relu(a, b)
                .iter()
                .zip(&r)
                .map(|(p, q)| p * q)
                .sum::<f64>()
        };
        check_grad("add_relu da", &mut |v| loss(v, &b), &a, &d, 40, &mut g);
        check_grad("add_relu db", &mut |v| loss(&a, v), &b, &d, 40, &mut g);
    }
}
