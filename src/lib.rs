//! # finegrain
//!
//! Fine-grained image classification trained and run entirely on the GPU through wgpu, with
//! hand-written WGSL compute shaders for every step: convolutions, batch norm, pooling, the
//! class-map head, the diversification block, the gradient-boosting cross-entropy loss, all
//! backward passes and the optimizer. The method is Sun et al., "Fine-grained Recognition:
//! Accounting for Subtle Differences between Similar Classes" (AAAI 2020).
//!
//! Layout conventions (everywhere in the crate):
//! - activations are NHWC, f32, contiguous: `(N, H, W, C)`;
//! - convolution weights are `(KH, KW, Cin, Cout)` (HWIO), so a convolution is the GEMM
//!   `im2col(x)[N*OH*OW, KH*KW*Cin] x W[KH*KW*Cin, Cout]`; PyTorch's OIHW weights are
//!   transposed at load time;
//! - every GPU kernel has a CPU twin in f64 in [`mod@reference`].

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod method;
pub mod model;
pub mod reference;
pub mod testing;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
pub use gpu::{Dispatch, Gpu, GpuOptions, KernelFamily, Tensor};
