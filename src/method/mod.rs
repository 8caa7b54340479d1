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
//! Launchers take their tensors in named structs and read every size from them (the batch
//! N from `scores (N, C)`, the map size from `maps (N, H, W, C)`, D and C from the head's
//! weight). Each tensor is checked with [`Tensor::check`] for its element type and exact
//! shape: to run a smaller last batch on buffers allocated for the largest, pass views
//! ([`Tensor::view`]) of the smaller shape.

pub mod diversify;
pub mod head;
pub mod loss;

use crate::error::{Error, Result};
use crate::gpu::{DType, Size, Tensor};

/// The `R` dimensions of `t` (the launcher's `role` tensor), after checking its element
/// type, that it has rank `R` (names: `names`), every size is at least 1 and the element
/// count indexes within u32 (the shaders index with u32).
pub(crate) fn dims_of<const R: usize>(
    launcher: &str,
    role: &str,
    t: &Tensor,
    dtype: DType,
    names: [&str; R],
) -> Result<[usize; R]> {
    let shape: [usize; R] = match t.shape.as_slice().try_into() {
        Ok(s) => s,
        Err(_) => {
            return Err(Error::ShapeMismatch {
                context: format!("{launcher} {role}"),
                tensor: t.label.clone(),
                expected: format!("{R} dimensions ({})", names.join(", ")),
                found: t.shape.clone(),
                dtype: format!("{:?}", t.dtype),
            })
        }
    };
    t.check(launcher, role, dtype, Size::Shape(&shape))?;
    let sizes: Vec<(&str, usize)> = names.iter().copied().zip(shape).collect();
    dims(&format!("{launcher} {role} (`{}`)", t.label), &sizes)?;
    Ok(shape)
}

/// Error unless every size is at least 1 and their product indexes within u32 (the
/// shaders index with u32).
pub(crate) fn dims(what: &str, sizes: &[(&str, usize)]) -> Result<()> {
    let mut prod: u128 = 1;
    for (name, v) in sizes {
        if *v == 0 {
            return Err(Error::invalid_in(
                "sizes",
                what,
                format!("{name} must be at least 1"),
            ));
        }
        prod *= *v as u128;
    }
    if prod > u32::MAX as u128 {
        let list: Vec<String> = sizes.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        return Err(Error::invalid_in(
            "sizes",
            what,
            format!(
                "{} elements exceed the u32 index range of the shaders",
                list.join(" x ")
            ),
        ));
    }
    Ok(())
}
