//! Small CPU-side visualisation helpers, drawn by hand on top of the `image` crate: a
//! built-in 5x7 bitmap font ([`draw_text`]), training-curve plots ([`plot_metrics`]) and
//! class activation map overlays ([`cam_overlay`]). Nothing is loaded at run time (no font
//! files); PNGs are written atomically ([`save_png`]).

mod cam;
mod font;
mod plot;

pub use cam::{cam_overlay, colormap, upsample_bilinear};
pub use font::{draw_text, text_height, text_width};
pub use plot::{plot_metrics, Series};

use crate::{Error, Result};
use std::path::Path;

/// Encodes `img` as PNG and writes it to `path` without ever leaving a half-written file
/// there (`write_atomic`: a temporary file in the same folder, synced, then
/// renamed over `path`). Errors name `path`.
pub fn save_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    crate::fsio::write_atomic(path, &bytes)
}
