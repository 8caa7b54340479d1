//! Plain-Rust f64 CPU twins of every GPU kernel. They define what the kernels must compute;
//! tests compare the GPU against them, and their own gradients are checked by central
//! finite differences. Same layouts as the GPU side (NHWC activations, HWIO weights).

pub mod batchnorm;
pub mod cast;
pub mod conv2d;
pub mod diversify;
pub mod elementwise;
pub mod gemm;
pub mod head;
pub mod loss;
pub mod pool;
pub mod sgd;
