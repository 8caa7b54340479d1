//! Twin of `shaders/gemm.wgsl`.

/// C[m, n] = alpha * op(A) x op(B) + beta * C, row-major. `trans_a`: A is stored (k, m);
/// `trans_b`: B is stored (n, k).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
    a: &[f64],
    b: &[f64],
    beta: f64,
    c: &mut [f64],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for l in 0..k {
                let av = if trans_a { a[l * m + i] } else { a[i * k + l] };
                let bv = if trans_b { b[j * k + l] } else { b[l * n + j] };
                s += av * bv;
            }
            let cv = if beta != 0.0 {
                beta * c[i * n + j]
            } else {
                0.0
            };
            c[i * n + j] = alpha * s + cv;
        }
    }
}

/// C = A x B for row-major A (m, k) and B (k, n).
pub fn matmul(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    gemm(m, n, k, false, false, 1.0, a, b, 0.0, &mut c);
    c
}
