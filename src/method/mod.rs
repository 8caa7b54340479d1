//! The paper's method on the GPU (Sun et al., "Fine-grained Recognition: Accounting for
//! Subtle Differences between Similar Classes", AAAI 2020; see METHOD.md):
//!
//! - [`head`]: the class-map head, a 1x1 convolution D -> C with bias, features
//!   `(N, H, W, D)` -> class maps `(N, H, W, C)` (GEMM on `rows = N * H * W`);
//! - [`diversify`]: the diversification block (training) and plain global average pooling
//!   (evaluation, and the baseline without DB), class maps -> scores `(N, C)`;
//! - [`loss`]: cross-entropy and gradient-boosting cross-entropy with their gradients, and
//!   the top-1 / top-5 counts.
//!
//! Every launcher builds its dispatches once (setup); the training loop records them each
//! step. The f64 twins are in `finegrain::reference` (feature `testing`) (`head`, `diversify`, `loss`).
//!
//! Tensor arguments are checked for their element type and for holding at least the
//! elements of the shape the launcher documents (so a buffer allocated for the largest
//! batch can serve a smaller last batch, with dispatches built for that `n`).

pub mod diversify;
pub mod head;
pub mod loss;

use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};

/// Error unless `t` holds `dtype` elements and at least the elements of `shape`.
pub(crate) fn need(t: &Tensor, dtype: DType, shape: &[usize]) -> Result<()> {
    if t.dtype != dtype {
        return Err(Error::invalid(
            format!("tensor `{}`", t.label),
            format!(
                "expected {dtype:?} elements (shape {shape:?}), found {:?}",
                t.dtype
            ),
        ));
    }
    let want: usize = shape.iter().product();
    if t.numel() < want {
        return Err(Error::ShapeMismatch {
            tensor: t.label.clone(),
            expected: shape.to_vec(),
            found: t.shape.clone(),
        });
    }
    Ok(())
}

/// Error unless every size is at least 1 and their product indexes within u32 (the
/// shaders index with u32).
pub(crate) fn dims(what: &str, sizes: &[(&str, usize)]) -> Result<()> {
    let mut prod: u128 = 1;
    for (name, v) in sizes {
        if *v == 0 {
            return Err(Error::invalid(what, format!("{name} must be at least 1")));
        }
        prod *= *v as u128;
    }
    if prod > u32::MAX as u128 {
        let list: Vec<String> = sizes.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        return Err(Error::invalid(
            what,
            format!(
                "{} elements exceed the u32 index range of the shaders",
                list.join(" x ")
            ),
        ));
    }
    Ok(())
}
