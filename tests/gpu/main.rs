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
mod pool;
mod sgd;
mod tensor;

/// Set to 1 where the adapter must have cooperative matrices (CI's Mesa 26 stage, the lent
/// GPU): the cooperative-matrix tests then fail instead of checking the refusal.
pub const REQUIRE_COOP: &str = "FINEGRAIN_REQUIRE_COOP";

/// Whether `REQUIRE_COOP` is set to 1.
pub fn coop_required() -> bool {
    std::env::var(REQUIRE_COOP).is_ok_and(|v| v == "1")
}
