use finegrain::kernels::gemm::{gemm, Gemm, GemmKernel, GemmOptions};
use finegrain::reference;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};

use crate::{coop_required, REQUIRE_COOP};

/// One GEMM with `kernel` against the f64 twin: on the f16-rounded inputs for the f16
/// kernels, with C poisoned with NaN when beta = 0.
fn run_kernel(kernel: GemmKernel, m: usize, n: usize, k: usize, ta: bool, tb: bool, beta: f32) {
    let Some(g) = gpu() else { return };
    let name = format!("gemm {kernel:?} {m}x{n}x{k} ta={ta} tb={tb} beta={beta}");
    let mut r = rng(&name);
    let f16 = kernel != GemmKernel::F32;
    let mut a = uniform(&mut r, m * k, 1.0);
    let mut b = uniform(&mut r, k * n, 1.0);
    if f16 {
        a = reference::gemm::round_f16(&a);
        b = reference::gemm::round_f16(&b);
    }
    let c0 = if beta != 0.0 {
        uniform(&mut r, m * n, 1.0)
    } else {
        vec![f32::NAN; m * n]
    };
    // The shapes say M, N, K: A (M, K) or (K, M) transposed, B (K, N) or (N, K).
    let a_shape = if ta { [k, m] } else { [m, k] };
    let b_shape = if tb { [n, k] } else { [k, n] };
    let (ta_, tb_) = if f16 {
        (
            g.tensor_f16("a", &a_shape, &a).unwrap(),
            g.tensor_f16("b", &b_shape, &b).unwrap(),
        )
    } else {
        (
            g.tensor("a", &a_shape, &a).unwrap(),
            g.tensor("b", &b_shape, &b).unwrap(),
        )
    };
    let tc = g.tensor("c", &[m, n], &c0).unwrap();
    let o = GemmOptions {
        trans_a: ta,
        trans_b: tb,
        alpha: 0.5,
        beta,
        kernel,
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
    let (a64, b64) = (f64s(&a), f64s(&b));
    reference::gemm::gemm(m, n, k, ta, tb, 0.5, &a64, &b64, beta as f64, &mut want);
    let atol = if f16 {
        // f16 x f16 products are exact in f32: only the f32 accumulation rounds, within
        // the dot-product bound (see f32_error_bound), against the twin on the same
        // rounded inputs.
        let c64 = f64s(&c0);
        reference::gemm::f32_error_bound(m, n, k, ta, tb, 0.5, &a64, &b64, beta as f64, &c64)
    } else {
        // f32 accumulation over k terms of magnitude <= 1.
        1e-6 * (k as f64).sqrt() * 4.0 + 1e-6
    };
    let rtol = if f16 { 0.0 } else { 1e-5 };
    assert_close(&name, &got, &want, atol, rtol);
}

/// M, N, K that do not divide the tiles (32 and 64 wide, K steps of 16 and 32): single
/// elements, partial tiles, several tiles and K steps.
const ODD_SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (5, 3, 7),
    (13, 33, 17),
    (65, 63, 129),
    (100, 70, 33),
    (31, 97, 50),
];

/// The odd shapes, then transposes and accumulation (beta = 1), with `kernel`.
fn all_cases(kernel: GemmKernel) {
    for &(m, n, k) in &ODD_SHAPES {
        run_kernel(kernel, m, n, k, false, false, 0.0);
    }
    for &(ta, tb) in &[(true, false), (false, true), (true, true)] {
        run_kernel(kernel, 37, 71, 45, ta, tb, 0.0);
    }
    run_kernel(kernel, 29, 66, 19, false, false, 1.0);
    run_kernel(kernel, 29, 66, 19, true, true, 1.0);
}

#[test]
fn gemm_f32_against_twin() {
    all_cases(GemmKernel::F32);
}

/// A kernel the adapter cannot run is refused with an error naming it, never run.
fn assert_refused(kernel: GemmKernel) {
    let Some(g) = gpu() else { return };
    // Without shader-f16 not even the f16 operands can be made.
    let Ok(a) = g.tensor_f16("a", &[4, 4], &[0.0; 16]) else {
        assert!(!g.features.shader_f16);
        return;
    };
    let c = g.zeros("c", &[4, 4]).unwrap();
    let o = GemmOptions {
        kernel,
        ..Default::default()
    };
    let err = match gemm(
        g,
        &Gemm {
            a: &a,
            b: &a,
            c: &c,
        },
        &o,
    ) {
        Ok(_) => panic!("{kernel:?} is not available but gemm built it"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&format!("{kernel:?}")), "{err}");
}

#[test]
fn gemm_f16_storage_against_twin() {
    let Some(g) = gpu() else { return };
    if GemmKernel::F16Storage.available(g) {
        all_cases(GemmKernel::F16Storage);
    } else {
        eprintln!(
            "NOT RUN: {} has no shader-f16; checking the refusal",
            g.describe()
        );
        assert_refused(GemmKernel::F16Storage);
    }
}

fn coop_case(kernel: GemmKernel) {
    let Some(g) = gpu() else { return };
    if kernel.available(g) {
        all_cases(kernel);
        return;
    }
    let other = if kernel == GemmKernel::Coop8 {
        GemmKernel::Coop16
    } else {
        GemmKernel::Coop8
    };
    let required = coop_required();
    // With REQUIRE_COOP, at least one tile side must exist (Mesa 26 lavapipe has 8x8 only).
    assert!(
        !required || other.available(g),
        "{REQUIRE_COOP}=1 but {} has no f16 x f16 -> f32 cooperative-matrix tile",
        g.describe()
    );
    eprintln!(
        "NOT RUN: {} has no {kernel:?} tile; checking the refusal",
        g.describe()
    );
    assert_refused(kernel);
}

#[test]
fn gemm_coop8_against_twin() {
    coop_case(GemmKernel::Coop8);
}

#[test]
fn gemm_coop16_against_twin() {
    coop_case(GemmKernel::Coop16);
}

/// Auto takes the largest cooperative-matrix tile the adapter has for f16 operands, else
/// the f16-storage kernel, and the f32 kernel for f32 operands.
#[test]
fn gemm_auto_picks_the_best_kernel() {
    use finegrain::gpu::DType;
    let Some(g) = gpu() else { return };
    let coop = g.features.coop_f16_f32;
    let want = if coop.t16 && g.coop_lanes().is_some() {
        GemmKernel::Coop16
    } else if coop.t8 && g.coop_lanes().is_some() {
        GemmKernel::Coop8
    } else {
        GemmKernel::F16Storage
    };
    assert_eq!(GemmKernel::Auto.resolve(g, DType::F16), want);
    assert_eq!(GemmKernel::Auto.resolve(g, DType::F32), GemmKernel::F32);
    eprintln!("f16 GEMM on {}: {}", g.describe(), want.describe());
}
