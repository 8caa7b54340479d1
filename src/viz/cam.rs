//! Class activation map overlays: colour map, bilinear upsampling, and the side-by-side
//! panel image written by `infer --cam`.

use super::font::{draw_text, fill_rect, text_height, text_width};
use image::{Rgb, RgbImage};

/// Jet-like colour map over `[0, 1]` (dark blue, blue, cyan, yellow, red, dark red).
/// Values outside are clamped; NaN maps like 0.
pub fn colormap(v: f32) -> [u8; 3] {
    const STOPS: [(f32, [f32; 3]); 6] = [
        (0.0, [0.0, 0.0, 0.5]),
        (0.125, [0.0, 0.0, 1.0]),
        (0.375, [0.0, 1.0, 1.0]),
        (0.625, [1.0, 1.0, 0.0]),
        (0.875, [1.0, 0.0, 0.0]),
        (1.0, [0.5, 0.0, 0.0]),
    ];
    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
    let i = STOPS[1..]
        .iter()
        .position(|s| v <= s.0)
        .unwrap_or(STOPS.len() - 2);
    let ((t0, c0), (t1, c1)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - t0) / (t1 - t0);
    std::array::from_fn(|k| ((c0[k] + (c1[k] - c0[k]) * t) * 255.0).round() as u8)
}

/// Resizes the row-major `h` x `w` `map` to `out_h` x `out_w` by bilinear interpolation with
/// `align_corners = false` semantics (as PyTorch's `interpolate(mode="bilinear")`): output
/// pixel `i` samples the input at `(i + 0.5) * in / out - 0.5`, clamped to `[0, in - 1]`,
/// so pixel centres line up and the border input values extend to the border. A 1 x 1 map
/// becomes a constant. An empty map (`h` or `w` 0) gives zeros.
///
/// # Panics
/// When `map.len() != h * w`.
pub fn upsample_bilinear(map: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    assert_eq!(
        map.len(),
        h * w,
        "upsample_bilinear: map has {} values, expected {h} x {w}",
        map.len()
    );
    if h == 0 || w == 0 {
        return vec![0.0; out_h * out_w];
    }
    // For each output coordinate: the lower input index, the upper one, and the weight of
    // the upper one.
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|i| {
                let src = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = src.floor() as usize;
                (i0, (i0 + 1).min(n_in - 1), (src - i0 as f64) as f32)
            })
            .collect()
    };
    let (ty, tx) = (taps(h, out_h), taps(w, out_w));
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ty {
        for &(x0, x1, fx) in &tx {
            let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
            let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// `map` min-max normalised to `[0, 1]` over its finite values; non-finite values and a
/// constant map give 0.
fn normalise(map: &[f32]) -> Vec<f32> {
    let finite = map.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f32::INFINITY, f32::min);
    let hi = finite.fold(f32::NEG_INFINITY, f32::max);
    let range = hi - lo;
    map.iter()
        .map(|&v| {
            if v.is_finite() && range > 0.0 && range.is_finite() {
                (v - lo) / range
            } else {
                0.0
            }
        })
        .collect()
}

const MARGIN: u32 = 10;
const GAP: u32 = 12;
const LABEL_H: u32 = 22;
const BAR_W: u32 = 14;
/// Panels are scaled up (nearest) by an integer factor until their longer side reaches this.
const MIN_PANEL: u32 = 160;
/// Opacity of the colour-mapped class map over the image.
const ALPHA: f32 = 0.5;

/// Side-by-side class activation map panels: first the input `image` (label "input"), then
/// for each `(label, map)` the image with `map` (row-major `h` x `w`) min-max normalised to
/// `[0, 1]` (a constant map gives zeros), bilinearly upsampled to the panel size,
/// colour-mapped with [`colormap`] and blended over the image at 50 % opacity; each label
/// is written above its panel, and a colour-scale bar (min at the bottom, max at the top)
/// closes the row. Images whose longer side is under 160 px are scaled up by an integer
/// factor (nearest neighbour), e.g. 28 x 28 to 168 x 168.
///
/// # Panics
/// When a map does not have `h * w` values.
pub fn cam_overlay(image: &RgbImage, maps: &[(String, Vec<f32>)], h: usize, w: usize) -> RgbImage {
    let (iw, ih) = (image.width().max(1), image.height().max(1));
    let s = MIN_PANEL.div_ceil(iw.max(ih)).max(1);
    let (pw, ph) = (iw * s, ih * s);
    let base = RgbImage::from_fn(pw, ph, |x, y| {
        *image
            .get_pixel_checked(x / s, y / s)
            .unwrap_or(&Rgb([0, 0, 0]))
    });

    let mut panels = vec![("input".to_string(), base.clone())];
    for (label, map) in maps {
        assert_eq!(
            map.len(),
            h * w,
            "cam_overlay: map `{label}` has {} values, expected {h} x {w}",
            map.len()
        );
        let up = upsample_bilinear(&normalise(map), h, w, ph as usize, pw as usize);
        let mut panel = base.clone();
        for (px, &v) in panel.pixels_mut().zip(&up) {
            let c = colormap(v);
            for k in 0..3 {
                px[k] = ((1.0 - ALPHA) * px[k] as f32 + ALPHA * c[k] as f32).round() as u8;
            }
        }
        panels.push((label.clone(), panel));
    }

    // Every label at one scale, so the row reads evenly: 2 when each label at scale 2 is at
    // most 1.5 panel widths, else 1. A column is as wide as its panel or its label.
    let scale = if panels.iter().all(|(l, _)| 2 * text_width(l, 2) <= 3 * pw) {
        2
    } else {
        1
    };
    let label_scale = |_: &str| scale;
    let col_w = |l: &str| pw.max(text_width(l, label_scale(l)));
    let bar_area = BAR_W + 4 + text_width("max", 1);
    let width = 2 * MARGIN + panels.iter().map(|(l, _)| col_w(l) + GAP).sum::<u32>() + bar_area;
    let height = 2 * MARGIN + LABEL_H + ph;
    let mut out = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let top = MARGIN + LABEL_H;
    let mut x = MARGIN;
    for (label, panel) in &panels {
        let cw = col_w(label);
        let ls = label_scale(label);
        let lx = x + (cw - text_width(label, ls)) / 2;
        let ly = top - 6 - text_height(ls);
        draw_text(&mut out, lx as i32, ly as i32, label, ls, [0, 0, 0]);
        image::imageops::replace(&mut out, panel, (x + (cw - pw) / 2) as i64, top as i64);
        x += cw + GAP;
    }
    // Colour-scale bar, 1 at the top.
    for row in 0..ph {
        let v = 1.0 - row as f32 / (ph - 1).max(1) as f32;
        fill_rect(
            &mut out,
            x as i64,
            (top + row) as i64,
            BAR_W as i64,
            1,
            colormap(v),
        );
    }
    let tx = (x + BAR_W + 4) as i32;
    draw_text(&mut out, tx, top as i32, "max", 1, [0, 0, 0]);
    draw_text(
        &mut out,
        tx,
        (top + ph - text_height(1)) as i32,
        "min",
        1,
        [0, 0, 0],
    );
    out
}
