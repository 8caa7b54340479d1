//! GPU kernels against their f64 CPU twins, on fresh random inputs and shapes that do not
//! divide the tile sizes. One test binary so the adapter is created once.
//! Without an adapter every test here fails, unless FINEGRAIN_ALLOW_NO_GPU=1.

mod batchnorm;
mod cast;
mod conv2d;
mod conv2d_coop;
mod elementwise;
mod gemm;
mod method;
mod mixed;
mod pool;
mod sgd;
mod tensor;

/// Set to 1 where the adapter must have cooperative matrices (CI's Mesa 26 stage, a
/// GPU): the cooperative-matrix tests then fail instead of checking the refusal.
pub const REQUIRE_COOP: &str = "FINEGRAIN_REQUIRE_COOP";

/// Whether `REQUIRE_COOP` is set to 1.
pub fn coop_required() -> bool {
    std::env::var(REQUIRE_COOP).is_ok_and(|v| v == "1")
}

/// Unit roundoff of f16: rounding to the nearest f16 moves a value in the normal range by at
/// most 2^-11 of itself.
pub const F16_U: f64 = 1.0 / 2048.0;

/// (atol, rtol) for a result computed in f32 within `atol32` of the twin and then rounded
/// once to f16: the f32 error, plus half an f16 ulp of the value (at most 2^-11 of
/// |want| + atol32 in the normal range, 2^-25 in the subnormal range, whose spacing is
/// 2^-24).
pub fn f16_rounded(atol32: f64) -> (f64, f64) {
    (atol32 * (1.0 + F16_U) + f64::powi(2.0, -25), F16_U)
}
