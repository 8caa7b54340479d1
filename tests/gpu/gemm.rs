use finegrain::kernels::gemm::{gemm, Gemm, GemmOptions};
use finegrain::reference;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};

fn run_case(m: usize, n: usize, k: usize, ta: bool, tb: bool, beta: f32) {
    let Some(g) = gpu() else { return };
    let mut r = rng(&format!("gemm {m}x{n}x{k} ta={ta} tb={tb} beta={beta}"));
    let a = uniform(&mut r, m * k, 1.0);
    let b = uniform(&mut r, k * n, 1.0);
    let c0 = if beta != 0.0 {
        uniform(&mut r, m * n, 1.0)
    } else {
        vec![f32::NAN; m * n]
    };
    // The shapes say M, N, K: A (M, K) or (K, M) transposed, B (K, N) or (N, K).
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let ta_ = g.tensor("a", &a_shape, &a).unwrap();
    let tb_ = g.tensor("b", &b_shape, &b).unwrap();
    let tc = g.tensor("c", &[m, n], &c0).unwrap();
    let o = GemmOptions {
        trans_a: ta,
        trans_b: tb,
        alpha: 0.5,
        beta,
    };
    let t = Gemm {
        a: &ta_,
        b: &tb_,
        c: &tc,
    };
    let d = gemm(g, &t, &o).unwrap();
    g.run(&[&d]).unwrap();
    let got = g.download(&tc).unwrap();
    let mut want = if beta != 0.0 {
        f64s(&c0)
    } else {
        vec![0.0; m * n]
    };
    reference::gemm::gemm(
        m,
        n,
        k,
        ta,
        tb,
        0.5,
        &f64s(&a),
        &f64s(&b),
        beta as f64,
        &mut want,
    );
    // f32 accumulation over k terms of magnitude <= 1.
    let atol = 1e-6 * (k as f64).sqrt() * 4.0 + 1e-6;
    assert_close(
        &format!("gemm {m}x{n}x{k} ta={ta} tb={tb}"),
        &got,
        &want,
        atol,
        1e-5,
    );
}

#[test]
fn gemm_odd_shapes() {
    for &(m, n, k) in &[
        (1, 1, 1),
        (5, 3, 7),
        (13, 33, 17),
        (65, 63, 129),
        (100, 70, 33),
    ] {
        run_case(m, n, k, false, false, 0.0);
    }
}

#[test]
fn gemm_transposed_and_accumulate() {
    for &(ta, tb) in &[(true, false), (false, true), (true, true)] {
        run_case(37, 71, 45, ta, tb, 0.0);
    }
    run_case(29, 66, 19, false, false, 1.0);
    run_case(29, 66, 19, true, true, 1.0);
}
