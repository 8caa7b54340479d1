//! # finegrain
//!
//! Fine-grained image classification trained and run entirely on the GPU through wgpu, with
//! hand-written WGSL compute shaders for every step: convolutions, batch norm, pooling, the
//! class-map head, the diversification block, the gradient-boosting cross-entropy loss, all
//! backward passes and the optimizer. The method is Sun et al., "Fine-grained Recognition:
//! Accounting for Subtle Differences between Similar Classes" (AAAI 2020).
//!
//! Layout conventions (everywhere in the crate):
//! - activations are NHWC, contiguous: `(N, H, W, C)`, f32, or f16 in mixed precision
//!   ([`Precision`]: `recipe.train.precision = Precision::Mixed` before a [`Run`]);
//! - convolution weights are `(KH, KW, Cin, Cout)` (HWIO), so a convolution is the GEMM
//!   `im2col(x)[N*OH*OW, KH*KW*Cin] x W[KH*KW*Cin, Cout]`; PyTorch's OIHW weights are
//!   transposed at load time;
//! - every GPU kernel has a CPU twin in f64 in the module `reference`; it and the module
//!   `testing` (the shared test adapter, fresh random inputs, GPU-versus-twin comparisons)
//!   are built with the cargo feature `testing`, which the crate's own tests, benchmark
//!   and doctests enable.
//!
//! # Use as a library
//!
//! A [`Recipe`] chooses the model, input size, augmentation and training settings from the
//! data; a [`Run`] trains it and reports to an observer ([`Console`] prints a progress bar
//! or log lines); a [`Classifier`] opens the checkpoint and classifies image files:
//!
//! ```
//! use finegrain::{Choices, Classifier, Console, Gpu, Recipe, Run, RunOptions};
//! # fn main() -> finegrain::Result<()> {
//! # let Some(gpu) = finegrain::testing::gpu() else { return Ok(()) };
//! # let out = tempfile::tempdir().map_err(|e| finegrain::Error::io(std::path::Path::new("."), e))?;
//! # /*
//! let gpu = Gpu::from_env()?;
//! # */
//! // The shipped Fashion-MNIST subset: 28x28 grayscale, so a small model at 28 px.
//! let mut recipe = Recipe::for_data("data/fashion-mnist-subset".as_ref(), &Choices::default())?;
//! recipe.train.epochs = 1;
//! let opts = RunOptions {
//!     out_dir: out.path().into(), // e.g. "runs/mine".into(); by default a new runs/run-N
//!     max_steps: Some(10),
//!     evaluate: false,
//!     ..RunOptions::default()
//! };
//! let run = Run::from_recipe(&gpu, &recipe, opts)?;
//! let checkpoint = run.checkpoint_path();
//! run.run(&mut Console::new())?;
//!
//! let classifier = Classifier::open(&gpu, &checkpoint, 8)?;
//! let files = finegrain::data::image_files(&["data/fashion-mnist-samples".into()])?;
//! for (file, result) in files.iter().zip(classifier.classify_paths(&gpu, &files, 3, 2)?) {
//!     let p = result?;
//!     println!("{}: {} {:.1}%", file.display(), p.top[0].name, 100.0 * p.top[0].probability);
//! }
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod classify;
pub mod data;
pub mod distributed;
pub mod error;
pub mod fsio;
pub mod gpu;
pub mod hub;
pub mod inference;
pub mod kernels;
pub mod method;
pub mod model;
pub mod recipe;
#[cfg(any(test, feature = "testing"))]
pub mod reference;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod train;
pub mod viz;

/// The README's Rust example, compiled by `cargo test` so that it cannot fall behind the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use classify::{Classifier, Prediction};
pub use distributed::{Collective, Solo};
pub use error::{Error, Result};
pub use gpu::{Dispatch, Gpu, GpuOptions, KernelFamily, LimitsMode, Precision, Tensor};
pub use recipe::{BackboneInit, Choices, Recipe};
pub use train::{Console, Run, RunOptions};
