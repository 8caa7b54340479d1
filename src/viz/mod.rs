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
/// there: the bytes go to a temporary file in the same folder, which is then renamed over
/// `path`. The parent folder must exist. Errors name `path`.
pub fn save_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    let name = path.file_name().ok_or_else(|| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
