//! GPU kernels against their f64 CPU twins, on fresh random inputs and shapes that do not
//! divide the tile sizes. One test binary so the adapter is created once.
//! Without an adapter every test here fails, unless FINEGRAIN_ALLOW_NO_GPU=1.

mod batchnorm;
mod conv2d;
mod elementwise;
mod gemm;
mod method;
mod pool;
mod sgd;
mod tensor;
