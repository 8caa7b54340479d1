//! Preprocessing and augmentation: one geometric step (a source window resampled to the output
//! size), an optional padded shift, an optional horizontal flip, then per-channel
//! normalisation. Output is f32, HWC.
//!
//! - Evaluation (`train == false`): the shorter side is resized to `eval_resize` and the
//!   centre `height x width` is cropped (torchvision's `Resize(eval_resize)` +
//!   `CenterCrop(size)`), done in one resampling pass over the matching source window.
//! - Training: [`TrainCrop::RandomResized`] picks a window by area fraction and aspect ratio
//!   (torchvision's `RandomResizedCrop`, including its 10 tries and centre fallback);
//!   [`TrainCrop::Pad`] takes the evaluation geometry and shifts it by up to `pad` pixels
//!   with zero (black) fill (torchvision's `RandomCrop(size, padding=pad)`);
//!   [`TrainCrop::Center`] uses the evaluation geometry. Then a horizontal flip with
//!   probability 1/2 when `hflip`.
//!
//! Resampling is separable with a triangle (bilinear) filter whose support widens with the
//! downscale factor, so shrinking averages every source pixel (antialiased, like PIL's
//! bilinear); borders are replicated. Random draws happen in a fixed order (window, shift,
//! flip) from the caller's RNG, so the output is a pure function of the image and the RNG's
//! seed.

use rand::rngs::StdRng;
use rand::Rng;

use crate::{Error, Result};

/// A borrowed 8-bit image, HWC, `channels` 1 or 3.
#[derive(Clone, Copy, Debug)]
pub struct ImageU8<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

/// The geometric part of training augmentation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TrainCrop {
    /// Same geometry as evaluation (shorter side to `eval_resize`, centre crop).
    Center,
    /// torchvision's `RandomResizedCrop`: a window of `scale` (fraction of the image area) and
    /// `ratio` (width / height, drawn log-uniformly), resized to the output size.
    RandomResized {
        scale: (f32, f32),
        ratio: (f32, f32),
    },
    /// The evaluation geometry shifted by up to `pad` pixels in x and y, zero fill.
    Pad { pad: usize },
}

impl TrainCrop {
    /// torchvision's defaults: scale (0.08, 1.0), ratio (3/4, 4/3).
    pub const RANDOM_RESIZED_DEFAULT: TrainCrop = TrainCrop::RandomResized {
        scale: (0.08, 1.0),
        ratio: (3.0 / 4.0, 4.0 / 3.0),
    };
}

/// Per-channel normalisation `(v / 255 - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// ImageNet's statistics (RGB); for one channel their averages (0.449, 0.226).
    pub fn imagenet(channels: usize) -> Self {
        if channels == 1 {
            Normalize {
                mean: vec![0.449],
                std: vec![0.226],
            }
        } else {
            Normalize {
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
            }
        }
    }

    /// The same mean and std on every channel.
    pub fn uniform(channels: usize, mean: f32, std: f32) -> Self {
        Normalize {
            mean: vec![mean; channels],
            std: vec![std; channels],
        }
    }

    /// Fashion-MNIST's statistics (mean 0.2860, std 0.3530) on every channel.
    pub fn fashion_mnist(channels: usize) -> Self {
        Self::uniform(
            channels,
            super::FASHION_MNIST_MEAN,
            super::FASHION_MNIST_STD,
        )
    }

    /// No normalisation beyond scaling to 0..1.
    pub fn identity(channels: usize) -> Self {
        Self::uniform(channels, 0.0, 1.0)
    }

    /// Checks that there is one finite mean and one finite std > 0 for each of `channels`
    /// channels; errors name `normalize.mean` or `normalize.std`.
    pub fn validate(&self, channels: usize) -> Result<()> {
        for (what, v) in [("normalize.mean", &self.mean), ("normalize.std", &self.std)] {
            if v.len() != channels {
                return Err(Error::invalid(
                    what,
                    format!(
                        "{v:?} has {} values for {channels} channel{}",
                        v.len(),
                        if channels == 1 { "" } else { "s" }
                    ),
                ));
            }
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::invalid(
                "normalize.mean",
                format!("{:?}: {m} is not a finite number", self.mean),
            ));
        }
        if let Some(s) = self.std.iter().find(|&&s| !(s > 0.0 && s.is_finite())) {
            return Err(Error::invalid(
                "normalize.std",
                format!("{:?}: {s} is not a finite number > 0", self.std),
            ));
        }
        Ok(())
    }
}

/// The complete preprocessing of one sample into `height x width x channels` f32.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Preprocessing {
    pub height: usize,
    pub width: usize,
    /// 1 or 3. A 1-channel source is replicated to 3; images are decoded to this count.
    pub channels: usize,
    /// Evaluation: shorter side resized to this, then the centre `height x width` cropped.
    /// At least `min(height, width)`; where the resized image is still smaller than the crop
    /// (a narrow image and a wide output), its edge pixels are repeated.
    pub eval_resize: usize,
    pub train_crop: TrainCrop,
    pub hflip: bool,
    pub normalize: Normalize,
}

impl Preprocessing {
    /// Checks every field; called by the dataset openers and when a checkpoint is opened.
    /// Errors name the field (`height`, `eval_resize`, `normalize.std`, ...):
    /// - `height`, `width`: 1 ..= [`MAX_IMAGE_SIZE`](super::MAX_IMAGE_SIZE);
    /// - `channels`: 1 or 3;
    /// - `eval_resize`: from `min(height, width)` to [`MAX_EVAL_RESIZE_FACTOR`](super::MAX_EVAL_RESIZE_FACTOR)
    ///   times `max(height, width)`;
    /// - `normalize`: one finite mean and one finite std > 0 per channel;
    /// - `train_crop`: a random resized crop's scale in (0, 1] and ratio in (0, inf), min <= max;
    ///   a pad shift smaller than the output size.
    pub fn validate(&self) -> Result<()> {
        let max = super::MAX_IMAGE_SIZE;
        for (what, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v > max {
                return Err(Error::invalid(
                    what,
                    format!("{v}: the output size must be in 1..={max} pixels"),
                ));
            }
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(Error::invalid(
                "channels",
                format!("{}: must be 1 or 3", self.channels),
            ));
        }
        let (lo, hi) = (self.height.min(self.width), self.height.max(self.width));
        let top = hi * super::MAX_EVAL_RESIZE_FACTOR;
        if self.eval_resize < lo || self.eval_resize > top {
            return Err(Error::invalid(
                "eval_resize",
                format!(
                    "{}: for a {}x{} output it must be in {lo}..={top} (the shorter image side \
                     is resized to it before the centre crop)",
                    self.eval_resize, self.height, self.width
                ),
            ));
        }
        self.normalize.validate(self.channels)?;
        match self.train_crop {
            TrainCrop::RandomResized { scale, ratio } => {
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return Err(Error::invalid(
                        "train_crop.scale",
                        format!("{scale:?}: need 0 < min <= max <= 1"),
                    ));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return Err(Error::invalid(
                        "train_crop.ratio",
                        format!("{ratio:?}: need 0 < min <= max < inf"),
                    ));
                }
            }
            TrainCrop::Pad { pad } => {
                if pad >= lo {
                    return Err(Error::invalid(
                        "train_crop.pad",
                        format!(
                            "{pad}: a shift must be smaller than the {}x{} output",
                            self.height, self.width
                        ),
                    ));
                }
            }
            TrainCrop::Center => {}
        }
        Ok(())
    }

    /// Number of f32 values of one output sample.
    pub fn sample_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Preprocesses `src` into `out` (`height * width * channels` values, HWC).
    pub fn apply(
        &self,
        src: &ImageU8,
        train: bool,
        rng: &mut StdRng,
        out: &mut [f32],
    ) -> Result<()> {
        let (h, w, c) = (self.height, self.width, self.channels);
        if out.len() != h * w * c {
            return Err(Error::ShapeMismatch {
                context: "augmentation".into(),
                tensor: "output".into(),
                expected: format!("{} values (shape {:?})", h * w * c, [h, w, c]),
                found: vec![out.len()],
                dtype: "f32".into(),
            });
        }
        if src.width == 0 || src.height == 0 {
            return Err(Error::invalid(
                "image",
                format!("empty image {}x{}", src.width, src.height),
            ));
        }
        if !(src.channels == c || src.channels == 1)
            || src.data.len() != src.width * src.height * src.channels
        {
            return Err(Error::invalid(
                "image",
                format!(
                    "{} bytes for {}x{}x{}, output has {c} channels",
                    src.data.len(),
                    src.height,
                    src.width,
                    src.channels
                ),
            ));
        }
        let (sw, sh) = (src.width as f64, src.height as f64);
        // 1. Source window.
        let window = match (&self.train_crop, train) {
            (TrainCrop::RandomResized { scale, ratio }, true) => {
                random_resized_window(sw, sh, *scale, *ratio, rng)
            }
            _ => {
                let s = self.eval_resize as f64 / sw.min(sh);
                let (ww, wh) = (w as f64 / s, h as f64 / s);
                ((sw - ww) / 2.0, (sh - wh) / 2.0, ww, wh)
            }
        };
        // 2. Resample into out (pixel units, 0..255).
        if src.channels == c {
            resample(src, window, w, h, out);
        } else {
            let mut gray = vec![0f32; h * w];
            resample(src, window, w, h, &mut gray);
            for (px, &g) in out.chunks_exact_mut(c).zip(&gray) {
                px.fill(g);
            }
        }
        if train {
            // 3. Padded shift.
            if let TrainCrop::Pad { pad } = self.train_crop {
                let p = pad as i64;
                let dx = rng.random_range(-p..=p);
                let dy = rng.random_range(-p..=p);
                if dx != 0 || dy != 0 {
                    let copy = out.to_vec();
                    for y in 0..h as i64 {
                        for x in 0..w as i64 {
                            let (sy, sx) = (y + dy, x + dx);
                            let d = (y as usize * w + x as usize) * c;
                            if sy < 0 || sx < 0 || sy >= h as i64 || sx >= w as i64 {
                                out[d..d + c].fill(0.0);
                            } else {
                                let s = (sy as usize * w + sx as usize) * c;
                                out[d..d + c].copy_from_slice(&copy[s..s + c]);
                            }
                        }
                    }
                }
            }
            // 4. Horizontal flip.
            if self.hflip && rng.random_bool(0.5) {
                for row in out.chunks_exact_mut(w * c) {
                    for x in 0..w / 2 {
                        for ch in 0..c {
                            row.swap(x * c + ch, (w - 1 - x) * c + ch);
                        }
                    }
                }
            }
        }
        // 5. Normalise.
        let scale: Vec<f32> = self
            .normalize
            .std
            .iter()
            .map(|s| 1.0 / (255.0 * s))
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|i| self.normalize.mean[i] / self.normalize.std[i])
            .collect();
        for px in out.chunks_exact_mut(c) {
            for ch in 0..c {
                px[ch] = px[ch] * scale[ch] - shift[ch];
            }
        }
        Ok(())
    }
}

/// torchvision's `RandomResizedCrop.get_params`: (x0, y0, width, height) in source pixels.
fn random_resized_window(
    sw: f64,
    sh: f64,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut StdRng,
) -> (f64, f64, f64, f64) {
    let area = sw * sh;
    let (lr0, lr1) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0 as f64, scale.1 as f64);
        let aspect = uniform(rng, lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= sw && ch <= sh {
            let y0 = rng.random_range(0..=(sh - ch) as u64) as f64;
            let x0 = rng.random_range(0..=(sw - cw) as u64) as f64;
            return (x0, y0, cw, ch);
        }
    }
    // Fallback: the largest centred window within the ratio range.
    let r = sw / sh;
    let (cw, ch) = if r < ratio.0 as f64 {
        (sw, (sw / ratio.0 as f64).round())
    } else if r > ratio.1 as f64 {
        ((sh * ratio.1 as f64).round(), sh)
    } else {
        (sw, sh)
    };
    (((sw - cw) / 2.0).floor(), ((sh - ch) / 2.0).floor(), cw, ch)
}

fn uniform(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Resampling taps of one axis: for output `o`, `taps[off[o]..off[o + 1]]` are
/// (source index, weight) with weights summing to 1.
struct Taps {
    off: Vec<usize>,
    idx: Vec<usize>,
    w: Vec<f32>,
}

fn axis_taps(src_len: usize, start: f64, extent: f64, out_len: usize) -> Taps {
    let scale = extent / out_len as f64;
    let support = scale.max(1.0);
    let mut t = Taps {
        off: Vec::with_capacity(out_len + 1),
        idx: Vec::new(),
        w: Vec::new(),
    };
    let last = src_len as i64 - 1;
    for o in 0..out_len {
        t.off.push(t.idx.len());
        let center = start + (o as f64 + 0.5) * scale;
        let lo = (center - support - 0.5).ceil() as i64;
        let hi = (center + support - 0.5).floor() as i64;
        let first = t.w.len();
        let mut sum = 0.0f64;
        for i in lo..=hi {
            let d = ((i as f64 + 0.5 - center) / support).abs();
            if d < 1.0 {
                let wt = 1.0 - d;
                sum += wt;
                t.idx.push(i.clamp(0, last) as usize);
                t.w.push(wt as f32);
            }
        }
        if sum > 0.0 {
            for wt in &mut t.w[first..] {
                *wt = (*wt as f64 / sum) as f32;
            }
        } else {
            // Unreachable with support >= 1, kept for safety: nearest pixel.
            t.idx.push((center.floor() as i64).clamp(0, last) as usize);
            t.w.push(1.0);
        }
    }
    t.off.push(t.idx.len());
    t
}

/// Resamples the window (x0, y0, ww, wh) of `src` to `ow x oh` into `out` (src channels).
fn resample(src: &ImageU8, window: (f64, f64, f64, f64), ow: usize, oh: usize, out: &mut [f32]) {
    let c = src.channels;
    let (x0, y0, ww, wh) = window;
    let tx = axis_taps(src.width, x0, ww, ow);
    let ty = axis_taps(src.height, y0, wh, oh);
    let rlo = *ty.idx.iter().min().unwrap_or(&0);
    let rhi = *ty.idx.iter().max().unwrap_or(&0);
    // Horizontal pass over the source rows the vertical taps touch.
    let mut tmp = vec![0f32; (rhi - rlo + 1) * ow * c];
    for r in rlo..=rhi {
        let row = &src.data[r * src.width * c..(r + 1) * src.width * c];
        let dst = &mut tmp[(r - rlo) * ow * c..(r - rlo + 1) * ow * c];
        for o in 0..ow {
            let px = &mut dst[o * c..(o + 1) * c];
            for k in tx.off[o]..tx.off[o + 1] {
                let (i, wt) = (tx.idx[k], tx.w[k]);
                for ch in 0..c {
                    px[ch] += wt * row[i * c + ch] as f32;
                }
            }
        }
    }
    // Vertical pass.
    out.fill(0.0);
    for o in 0..oh {
        let dst = &mut out[o * ow * c..(o + 1) * ow * c];
        for k in ty.off[o]..ty.off[o + 1] {
            let (r, wt) = (ty.idx[k] - rlo, ty.w[k]);
            let srow = &tmp[r * ow * c..(r + 1) * ow * c];
            for (d, s) in dst.iter_mut().zip(srow) {
                *d += wt * s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn aug(h: usize, w: usize, c: usize, eval_resize: usize) -> Preprocessing {
        Preprocessing {
            height: h,
            width: w,
            channels: c,
            eval_resize,
            train_crop: TrainCrop::Center,
            hflip: false,
            normalize: Normalize::identity(c),
        }
    }

    #[test]
    fn identity_when_sizes_match() {
        let data: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let src = ImageU8 {
            data: &data,
            width: 7,
            height: 5,
            channels: 3,
        };
        let a = aug(5, 7, 3, 5);
        let mut out = vec![0.0; 5 * 7 * 3];
        a.apply(&src, false, &mut StdRng::seed_from_u64(0), &mut out)
            .unwrap();
        for (o, &d) in out.iter().zip(&data) {
            assert!((o * 255.0 - d as f32).abs() < 1e-3, "{o} vs {d}");
        }
    }

    #[test]
    fn downscale_averages_and_constant_is_kept() {
        // A 2x2 checker of 0/255 blocks shrunk 4x must average to ~127.5.
        let n = 16;
        let data: Vec<u8> = (0..n * n)
            .map(|i| if (i / n + i % n) % 2 == 0 { 255 } else { 0 })
            .collect();
        let src = ImageU8 {
            data: &data,
            width: n,
            height: n,
            channels: 1,
        };
        let a = aug(4, 4, 1, 4);
        let mut out = vec![0.0; 16];
        a.apply(&src, false, &mut StdRng::seed_from_u64(0), &mut out)
            .unwrap();
        for o in &out {
            assert!((o - 0.5).abs() < 0.1, "{out:?}");
        }
        let flat = vec![200u8; 30 * 20];
        let src = ImageU8 {
            data: &flat,
            width: 30,
            height: 20,
            channels: 1,
        };
        let mut out = vec![0.0; 9 * 11];
        aug(9, 11, 1, 11)
            .apply(&src, false, &mut StdRng::seed_from_u64(0), &mut out)
            .unwrap();
        for o in &out {
            assert!((o * 255.0 - 200.0).abs() < 1e-3);
        }
    }

    #[test]
    fn upscale_matches_bilinear_half_pixel_centres() {
        let data = [0u8, 255, 0, 255];
        let src = ImageU8 {
            data: &data,
            width: 2,
            height: 2,
            channels: 1,
        };
        let mut out = vec![0.0; 16];
        aug(4, 4, 1, 4)
            .apply(&src, false, &mut StdRng::seed_from_u64(0), &mut out)
            .unwrap();
        // Each row: pixel centres at 0.25, 0.75, 1.25, 1.75 in source pixels.
        let want = [0.0, 63.75, 191.25, 255.0].repeat(4);
        for (o, w) in out.iter().zip(want) {
            assert!((o * 255.0 - w).abs() < 1e-3, "{out:?}");
        }
    }

    #[test]
    fn pad_shift_and_flip_are_exact() {
        let (h, w, c, p) = (6, 5, 3, 2);
        let data: Vec<u8> = (0..h * w * c).map(|i| (i * 5 % 250 + 1) as u8).collect();
        let src = ImageU8 {
            data: &data,
            width: w,
            height: h,
            channels: c,
        };
        let mut a = aug(h, w, c, w);
        a.train_crop = TrainCrop::Pad { pad: p };
        a.hflip = true;
        let mut seen_flip = [false; 2];
        for seed in 0..40 {
            let mut out = vec![0.0; h * w * c];
            a.apply(&src, true, &mut StdRng::seed_from_u64(seed), &mut out)
                .unwrap();
            let px = |o: &[f32], y: usize, x: usize, ch: usize| {
                (o[(y * w + x) * c + ch] * 255.0).round()
            };
            let mut found = false;
            for flip in [false, true] {
                for dy in -(p as i64)..=p as i64 {
                    for dx in -(p as i64)..=p as i64 {
                        let ok = (0..h).all(|y| {
                            (0..w).all(|x| {
                                let xs = if flip { w - 1 - x } else { x } as i64;
                                let (sy, sx) = (y as i64 + dy, xs + dx);
                                (0..c).all(|ch| {
                                    let want =
                                        if sy < 0 || sx < 0 || sy >= h as i64 || sx >= w as i64 {
                                            0.0
                                        } else {
                                            data[(sy as usize * w + sx as usize) * c + ch] as f32
                                        };
                                    px(&out, y, x, ch) == want
                                })
                            })
                        });
                        if ok {
                            found = true;
                            seen_flip[flip as usize] = true;
                        }
                    }
                }
            }
            assert!(
                found,
                "seed {seed}: output is no shifted/flipped copy of the input"
            );
        }
        assert_eq!(seen_flip, [true, true]);
    }

    #[test]
    fn random_resized_window_inside_image() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let (x, y, w, h) =
                random_resized_window(500.0, 375.0, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(x >= 0.0 && y >= 0.0 && w > 0.0 && h > 0.0 && x + w <= 500.0 && y + h <= 375.0);
        }
    }
}
