//! Training-curve plots: two y-axes (left, e.g. loss; right, e.g. accuracy in %) against a
//! shared x-axis, with nice round ticks, a legend and a title.

use super::font::{draw_text, fill_rect, text_height, text_width};
use crate::Result;
use image::RgbImage;
use std::path::Path;

/// One curve: `points` are `(x, y)`; points with a NaN or infinite coordinate are skipped
/// (the line breaks there).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
/// The plot frame (inclusive pixel coordinates).
const FRAME: Rect = Rect {
    x0: 80,
    y0: 66,
    x1: WIDTH as i64 - 81,
    y1: HEIGHT as i64 - 51,
};
/// Data are drawn this many pixels inside the frame so that points on the axis limits stay
/// visible.
const INSET: f64 = 10.0;
const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [90, 90, 90];
const GRID: [u8; 3] = [228, 228, 228];
const WHITE: [u8; 3] = [255, 255, 255];
/// Series drawn with more points than this get no point markers (they would merge).
const MAX_MARKERS: usize = 60;

#[derive(Clone, Copy)]
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    /// Fills the `w` x `h` rectangle at `(x, y)`, clipped to `self`.
    fn fill(&self, img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: [u8; 3]) {
        let (x0, y0) = (x.max(self.x0), y.max(self.y0));
        let (x1, y1) = (
            x.saturating_add(w).min(self.x1 + 1),
            y.saturating_add(h).min(self.y1 + 1),
        );
        fill_rect(img, x0, y0, x1 - x0, y1 - y0, color);
    }
}

/// An axis range snapped outwards to multiples of a nice tick step (1, 2 or 5 times a power
/// of ten).
#[derive(Clone, Copy, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Axis {
    /// The axis for the finite values of `values`, aiming at about `target` tick intervals;
    /// `None` when there is no finite value.
    fn fit(values: impl Iterator<Item = f64>, target: f64) -> Option<Axis> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            return None;
        }
        // Keep the span finite even for values near f64::MAX.
        let (lo, hi) = (lo.max(-1e300), hi.min(1e300));
        let (lo, hi) = if hi - lo <= 1e-9 * lo.abs().max(hi.abs()) {
            let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
            (lo - pad, hi + pad)
        } else {
            (lo, hi)
        };
        let step = nice_step((hi - lo) / target);
        Some(Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        })
    }

    fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round().min(100.0) as usize;
        (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
    }

    /// `v` as text with as many decimals as the tick step needs; for steps of a million
    /// and more or under 1e-5, as an integer times a power of ten (`15e-7`).
    fn label(&self, v: f64) -> String {
        if !(1e-5..1e6).contains(&self.step) {
            let e = self.step.log10().floor();
            let m = (v / 10f64.powf(e)).round();
            return if m == 0.0 {
                "0".into()
            } else {
                format!("{m}e{e}")
            };
        }
        let decimals = (-self.step.log10().floor()).clamp(0.0, 12.0) as usize;
        let v = if v.abs() < 1e-6 * self.step { 0.0 } else { v };
        format!("{v:.decimals$}")
    }

    /// Pixel coordinate of `v` on a screen axis running from `p0` (at `lo`) to `p1` (at `hi`).
    /// Far-off values are clamped to a few screen widths away.
    fn map(&self, v: f64, p0: f64, p1: f64) -> f64 {
        (p0 + (v - self.lo) / (self.hi - self.lo) * (p1 - p0)).clamp(-1e4, 1e4)
    }
}

/// The smallest of 1, 2, 5 or 10 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 + 1e-9 {
        1.0
    } else if f <= 2.0 + 1e-9 {
        2.0
    } else if f <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = (f64, f64)> + '_ {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// A line from `a` to `b`, 2 px thick, clipped to `clip`. With `dash`, pixels are drawn in
/// runs of 7 steps on, 7 off; the counter carries the phase from one segment to the next.
fn line(
    img: &mut RgbImage,
    clip: Rect,
    a: (f64, f64),
    b: (f64, f64),
    color: [u8; 3],
    mut dash: Option<&mut u32>,
) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let n = dx.abs().max(dy.abs()).ceil().clamp(1.0, 1e5) as u32;
    for i in 0..=n {
        if let Some(d) = dash.as_deref_mut() {
            *d += 1;
            if (*d / 7) % 2 == 1 {
                continue;
            }
        }
        let t = i as f64 / n as f64;
        let (x, y) = ((a.0 + dx * t).round() as i64, (a.1 + dy * t).round() as i64);
        clip.fill(img, x, y, 2, 2, color);
    }
}

/// A point marker: a filled disc for left-axis series, a hollow square for right-axis ones.
fn marker(img: &mut RgbImage, clip: Rect, p: (f64, f64), color: [u8; 3], square: bool) {
    let (cx, cy) = (p.0.round() as i64 + 1, p.1.round() as i64 + 1);
    if square {
        clip.fill(img, cx - 4, cy - 4, 8, 8, color);
        clip.fill(img, cx - 2, cy - 2, 4, 4, WHITE);
    } else {
        for dy in -4i64..=3 {
            for dx in -4i64..=3 {
                let (fx, fy) = (dx as f64 + 0.5, dy as f64 + 0.5);
                if fx * fx + fy * fy <= 13.0 {
                    clip.fill(img, cx + dx, cy + dy, 1, 1, color);
                }
            }
        }
    }
}

/// A short legend sample: 24 px of line (dashed for the right axis) with a marker in the
/// middle, its left end at `x`, centred on `y`.
fn sample(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3], right: bool, with_marker: bool) {
    let all = Rect {
        x0: 0,
        y0: 0,
        x1: WIDTH as i64 - 1,
        y1: HEIGHT as i64 - 1,
    };
    let (a, b) = (
        (x as f64, y as f64 - 1.0),
        (x as f64 + 23.0, y as f64 - 1.0),
    );
    let mut phase = 3;
    line(img, all, a, b, color, right.then_some(&mut phase));
    if with_marker {
        marker(img, all, (x as f64 + 11.0, y as f64 - 1.0), color, right);
    }
}

/// Draws a metrics plot (900 x 500 PNG) and writes it atomically to `path` (see
/// [`super::save_png`]).
///
/// `left` series are drawn solid with disc markers against the left y-axis (`left_label`),
/// `right` series dashed with square markers against the right y-axis (`right_label`); both
/// share the x-axis (`x_label`). Axis ranges cover every finite point and are snapped to nice
/// tick steps; a constant range is padded. Empty series and non-finite points are skipped;
/// an axis with no finite point at all gets a default range (left, x) or no ticks (right).
/// Errors (writing the file) name `path`.
pub fn plot_metrics(
    path: &Path,
    title: &str,
    left: &[Series],
    left_label: &str,
    right: &[Series],
    right_label: &str,
    x_label: &str,
) -> Result<()> {
    let img = render(title, left, left_label, right, right_label, x_label);
    super::save_png(path, &img)
}

fn render(
    title: &str,
    left: &[Series],
    left_label: &str,
    right: &[Series],
    right_label: &str,
    x_label: &str,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, image::Rgb(WHITE));
    let all_points = || left.iter().chain(right).flat_map(|s| finite(&s.points));
    let default = Axis {
        lo: 0.0,
        hi: 1.0,
        step: 0.2,
    };
    let xa = Axis::fit(all_points().map(|p| p.0), 8.0).unwrap_or(default);
    let ya_left = Axis::fit(
        left.iter().flat_map(|s| finite(&s.points)).map(|p| p.1),
        6.0,
    );
    let ya_right = Axis::fit(
        right.iter().flat_map(|s| finite(&s.points)).map(|p| p.1),
        6.0,
    );
    let ya_left_or_default = ya_left.unwrap_or(default);

    let f = FRAME;
    let (px0, px1) = (f.x0 as f64 + INSET, f.x1 as f64 - INSET);
    let (py0, py1) = (f.y1 as f64 - INSET, f.y0 as f64 + INSET);
    let th = text_height(1) as i64;

    // Grid, from the x ticks and the left ticks (the right ones when there is no left data).
    let grid_y = if ya_left.is_some() || ya_right.is_none() {
        ya_left_or_default
    } else {
        ya_right.unwrap_or(default)
    };
    for t in xa.ticks() {
        let x = xa.map(t, px0, px1).round() as i64;
        fill_rect(&mut img, x, f.y0, 1, f.y1 - f.y0, GRID);
        fill_rect(&mut img, x, f.y1, 1, 5, BLACK);
        let label = xa.label(t);
        draw_text(
            &mut img,
            (x - text_width(&label, 1) as i64 / 2) as i32,
            (f.y1 + 8) as i32,
            &label,
            1,
            BLACK,
        );
    }
    for t in grid_y.ticks() {
        let y = grid_y.map(t, py0, py1).round() as i64;
        fill_rect(&mut img, f.x0, y, f.x1 - f.x0, 1, GRID);
    }
    // Frame.
    fill_rect(&mut img, f.x0, f.y0, f.x1 - f.x0 + 1, 1, BLACK);
    fill_rect(&mut img, f.x0, f.y1, f.x1 - f.x0 + 1, 1, BLACK);
    fill_rect(&mut img, f.x0, f.y0, 1, f.y1 - f.y0 + 1, BLACK);
    fill_rect(&mut img, f.x1, f.y0, 1, f.y1 - f.y0 + 1, BLACK);
    // Y ticks and labels.
    for t in ya_left_or_default.ticks() {
        let y = ya_left_or_default.map(t, py0, py1).round() as i64;
        fill_rect(&mut img, f.x0 - 5, y, 5, 1, BLACK);
        let label = ya_left_or_default.label(t);
        let x = f.x0 - 8 - text_width(&label, 1) as i64;
        draw_text(&mut img, x as i32, (y - th / 2) as i32, &label, 1, BLACK);
    }
    if let Some(ya) = ya_right {
        for t in ya.ticks() {
            let y = ya.map(t, py0, py1).round() as i64;
            fill_rect(&mut img, f.x1 + 1, y, 5, 1, BLACK);
            draw_text(
                &mut img,
                (f.x1 + 9) as i32,
                (y - th / 2) as i32,
                &ya.label(t),
                1,
                BLACK,
            );
        }
    }
    // Axis labels: the y labels above their axes, each after a sample of its line style.
    let label_y = f.y0 - 14;
    if !left_label.is_empty() {
        sample(
            &mut img,
            f.x0 - 30,
            label_y + th / 2 + 1,
            GREY,
            false,
            false,
        );
        draw_text(
            &mut img,
            (f.x0 - 2) as i32,
            label_y as i32,
            left_label,
            1,
            BLACK,
        );
    }
    if !right_label.is_empty() {
        let x = f.x1 + 30 - text_width(right_label, 1) as i64;
        sample(&mut img, x - 30, label_y + th / 2 + 1, GREY, true, false);
        draw_text(&mut img, x as i32, label_y as i32, right_label, 1, BLACK);
    }
    let xw = text_width(x_label, 1) as i64;
    draw_text(
        &mut img,
        ((f.x0 + f.x1) / 2 - xw / 2) as i32,
        (f.y1 + 24) as i32,
        x_label,
        1,
        BLACK,
    );

    // Series: right axis first, so the left (usually the loss) lies on top.
    let inner = Rect {
        x0: f.x0 + 1,
        y0: f.y0 + 1,
        x1: f.x1 - 1,
        y1: f.y1 - 1,
    };
    for (series, ya, dashed) in [(right, ya_right, true), (left, ya_left, false)] {
        let Some(ya) = ya else { continue };
        for s in series {
            let to_px = |(x, y): (f64, f64)| (xa.map(x, px0, px1), ya.map(y, py0, py1));
            let mut phase = 0u32;
            let mut prev: Option<(f64, f64)> = None;
            for &(x, y) in &s.points {
                let p = (x.is_finite() && y.is_finite()).then(|| to_px((x, y)));
                if let (Some(a), Some(b)) = (prev, p) {
                    line(&mut img, inner, a, b, s.color, dashed.then_some(&mut phase));
                }
                prev = p;
            }
            if finite(&s.points).count() <= MAX_MARKERS {
                for p in finite(&s.points) {
                    marker(&mut img, inner, to_px(p), s.color, dashed);
                }
            }
        }
    }

    // Legend row under the title: every non-empty series with its line style.
    let entries: Vec<(&Series, bool)> = left
        .iter()
        .map(|s| (s, false))
        .chain(right.iter().map(|s| (s, true)))
        .filter(|(s, _)| finite(&s.points).next().is_some())
        .collect();
    let entry_w = |s: &Series| 24 + 6 + text_width(&s.name, 1) as i64;
    let total: i64 = entries.iter().map(|(s, _)| entry_w(s) + 18).sum::<i64>() - 18;
    let mut x = (WIDTH as i64 - total).max(0) / 2;
    let ly = 38;
    for (s, dashed) in entries {
        sample(&mut img, x, ly + th / 2, s.color, dashed, true);
        draw_text(&mut img, (x + 30) as i32, ly as i32, &s.name, 1, BLACK);
        x += entry_w(s) + 18;
    }

    let tw = text_width(title, 2) as i64;
    draw_text(
        &mut img,
        ((WIDTH as i64 - tw) / 2).max(4) as i32,
        10,
        title,
        2,
        BLACK,
    );
    img
}
