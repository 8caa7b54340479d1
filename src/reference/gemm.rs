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

/// The values an f16 tensor holds after uploading `x` (round to nearest even, overflow to
/// infinity): the inputs of the f16 twins, which are the f64 twins run on these.
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// The largest rounding error an f32 GEMM may make on these operands, from the standard
/// bound for a length-k dot product summed in any order with f32 roundings (unit roundoff
/// u = 2^-24): |fl(s) - s| <= k u / (1 - k u) * sum |a_l b_l|, scaled by |alpha|, plus one
/// rounding each of alpha * s, beta * c and their sum. Products of f16 values are exact in
/// f32 (11-bit significands), so the same bound holds for the f16-storage and
/// cooperative-matrix kernels (f16 x f16 -> f32) compared with the twin on f16-rounded
/// inputs. Returned as the maximum over C's elements.
#[allow(clippy::too_many_arguments)]
pub fn f32_error_bound(
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
    a: &[f64],
    b: &[f64],
    beta: f64,
    c: &[f64],
) -> f64 {
    let u = f64::powi(2.0, -24);
    let gamma = k as f64 * u / (1.0 - k as f64 * u);
    let abs_a: Vec<f64> = a.iter().map(|v| v.abs()).collect();
    let abs_b: Vec<f64> = b.iter().map(|v| v.abs()).collect();
    let mut s = vec![0.0; m * n];
    gemm(m, n, k, trans_a, trans_b, 1.0, &abs_a, &abs_b, 0.0, &mut s);
    s.iter()
        .enumerate()
        .map(|(i, &sum)| {
            let cv = if beta != 0.0 {
                (beta * c[i]).abs()
            } else {
                0.0
            };
            let total = alpha.abs() * sum + cv;
            alpha.abs() * gamma * sum + 3.0 * u * total
        })
        .fold(0.0, f64::max)
}
