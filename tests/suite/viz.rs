//! CPU-only tests of the visualisation module: text, metrics plots, colour map, bilinear
//! upsampling and class activation map overlays.

use finegrain::viz::{
    cam_overlay, colormap, draw_text, plot_metrics, save_png, text_height, text_width,
    upsample_bilinear, Series,
};
use image::{Rgb, RgbImage};
use std::path::PathBuf;

/// A fresh folder for this test's files (left in place for inspection).
fn out_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("finegrain-viz-tests").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn count_colour(img: &RgbImage, c: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == c).count()
}

const RED: [u8; 3] = [220, 40, 40];
const BLUE: [u8; 3] = [30, 90, 200];
const GREEN: [u8; 3] = [20, 150, 60];
const ORANGE: [u8; 3] = [240, 140, 0];

fn series(name: &str, color: [u8; 3], points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.into(),
        points,
        color,
    }
}

#[test]
fn text_renders_and_width_is_consistent() {
    let mut img = RgbImage::from_pixel(200, 40, Rgb([255, 255, 255]));
    let text = "Sneaker 93.1%";
    draw_text(&mut img, 3, 5, text, 2, [0, 0, 0]);
    let w = text_width(text, 2);
    assert_eq!(w, (13 * 6 - 1) * 2);
    assert_eq!(text_width("", 3), 0);
    assert_eq!(text_width("A", 3), 15);
    assert_eq!(text_height(2), 14);
    // Ink exists, and only inside the text's box.
    let mut ink = 0;
    for (x, y, p) in img.enumerate_pixels() {
        if p.0 != [255, 255, 255] {
            ink += 1;
            assert!(
                (3..3 + w).contains(&x) && (5..5 + text_height(2)).contains(&y),
                "ink at {x},{y}"
            );
        }
    }
    assert!(ink > 100, "only {ink} text pixels");
    // The first and last columns of the box are both inked ('S' and '%').
    let inked_col = |x: u32| (0..40).any(|y| img.get_pixel(x, y).0 != [255, 255, 255]);
    assert!(inked_col(3) && inked_col(3 + w - 1));

    // Clipping: off-image, partly off-image, non-ASCII and scale 0 must not panic.
    draw_text(&mut img, -50, -3, "clipped ~ text", 3, [255, 0, 0]);
    draw_text(&mut img, 190, 35, "édge\n", 4, [255, 0, 0]);
    draw_text(
        &mut img,
        i32::MAX - 5,
        i32::MIN + 5,
        "far",
        1000,
        [255, 0, 0],
    );
    draw_text(&mut img, 0, 0, "zero", 0, [255, 0, 0]);
}

#[test]
fn plot_writes_png_with_series_colours() {
    let dir = out_dir("plot");
    let path = dir.join("metrics.png");
    // Overwriting an existing file works (checked by the real plot below).
    let l = [series("l", RED, vec![(0.0, 1.0), (1.0, 0.5)])];
    plot_metrics(&path, "first", &l, "", &[], "", "").unwrap();
    let epochs = 1..=12;
    let e = |f: fn(f64) -> f64| epochs.clone().map(|i| (i as f64, f(i as f64))).collect();
    plot_metrics(
        &path,
        "tiny on Fashion-MNIST",
        &[
            series("train loss", RED, e(|i| 2.3 / i.sqrt())),
            series("test loss", BLUE, e(|i| 2.1 / i.sqrt() + 0.05)),
        ],
        "loss",
        &[
            series("train top-1 %", GREEN, e(|i| 100.0 - 60.0 / i)),
            series("test top-1 %", ORANGE, e(|i| 98.0 - 62.0 / i)),
        ],
        "top-1 %",
        "epoch",
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (900, 500));
    for c in [RED, BLUE, GREEN, ORANGE] {
        assert!(
            count_colour(&img, c) > 100,
            "colour {c:?}: {} pixels",
            count_colour(&img, c)
        );
    }
    assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255], "background");
    // Only the final file is left: the temporary was renamed.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("metrics.png")]);
}

#[test]
fn plot_edge_cases_do_not_panic() {
    let dir = out_dir("plot_edges");
    let cases: Vec<(&str, Vec<Series>, Vec<Series>)> = vec![
        (
            "single_point",
            vec![series("a", RED, vec![(1.0, 2.3)])],
            vec![series("b", GREEN, vec![(1.0, 55.0)])],
        ),
        ("empty", vec![], vec![]),
        (
            "empty_series",
            vec![series("a", RED, vec![])],
            vec![series("b", GREEN, vec![])],
        ),
        (
            "constant",
            vec![series("a", RED, vec![(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])],
            vec![series("b", GREEN, vec![(1.0, 100.0), (2.0, 100.0)])],
        ),
        (
            "non_finite",
            vec![series(
                "a",
                RED,
                vec![
                    (1.0, 1.0),
                    (2.0, f64::NAN),
                    (3.0, f64::INFINITY),
                    (f64::NAN, 2.0),
                    (5.0, 0.5),
                    (6.0, 0.4),
                ],
            )],
            vec![series(
                "b",
                GREEN,
                vec![(f64::NEG_INFINITY, 3.0), (1.0, f64::NAN)],
            )],
        ),
        (
            "right_only",
            vec![],
            vec![series("b", GREEN, vec![(0.0, 10.0), (1.0, 20.0)])],
        ),
        (
            "huge",
            vec![series(
                "a",
                RED,
                vec![(0.0, -f64::MAX), (1.0, f64::MAX), (2.0, 1e-300)],
            )],
            vec![],
        ),
        (
            "tiny_range",
            vec![series(
                "a",
                RED,
                vec![(0.0, 1.0), (1.0, 1.0 + 1e-12), (2.0, 1.0 - 1e-12)],
            )],
            vec![],
        ),
        (
            "many",
            vec![series(
                "a",
                RED,
                (0..5000).map(|i| (i as f64, (i as f64).sin())).collect(),
            )],
            vec![],
        ),
    ];
    for (name, left, right) in cases {
        let path = dir.join(format!("{name}.png"));
        plot_metrics(&path, name, &left, "loss", &right, "%", "epoch").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (900, 500), "{name}");
    }
    // A single point still shows its marker.
    let img = image::open(dir.join("single_point.png")).unwrap().to_rgb8();
    assert!(count_colour(&img, RED) > 20);
    // Errors name the path.
    let bad = dir.join("no such folder").join("x.png");
    let err = plot_metrics(&bad, "t", &[], "", &[], "", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such folder"), "{err}");
}

#[test]
fn bilinear_upsample() {
    let close = |got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-6, "at {i}: got {g}, want {w}\n{got:?}");
        }
    };
    // Constant stays constant; 1x1 becomes constant.
    close(&upsample_bilinear(&[0.7; 15], 3, 5, 7, 11), &[0.7; 77]);
    close(&upsample_bilinear(&[2.5], 1, 1, 3, 4), &[2.5; 12]);
    // 2x2 -> 4x4 (align_corners=false): sample coordinates (i + 0.5) / 2 - 0.5 clamped to
    // [0, 1] are 0, 0.25, 0.75, 1 on both axes. For [[0, 1], [2, 3]] the result is
    // 2 * cy + cx.
    #[rustfmt::skip]
    let want = [
        0.0, 0.25, 0.75, 1.0,
        0.5, 0.75, 1.25, 1.5,
        1.5, 1.75, 2.25, 2.5,
        2.0, 2.25, 2.75, 3.0,
    ];
    close(&upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4), &want);
    // For [[1, 0], [0, 0]] it is (1 - cy) * (1 - cx), weights 1, 0.75, 0.25, 0.
    #[rustfmt::skip]
    let want = [
        1.0,  0.75,   0.25,   0.0,
        0.75, 0.5625, 0.1875, 0.0,
        0.25, 0.1875, 0.0625, 0.0,
        0.0,  0.0,    0.0,    0.0,
    ];
    close(&upsample_bilinear(&[1.0, 0.0, 0.0, 0.0], 2, 2, 4, 4), &want);
    // Same size is the identity; non-square shapes; downsampling 4 -> 2 averages pairs.
    let m: Vec<f32> = (0..6).map(|i| i as f32 * 1.5).collect();
    close(&upsample_bilinear(&m, 2, 3, 2, 3), &m);
    close(
        &upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], 1, 4, 1, 2),
        &[0.5, 2.5],
    );
    assert_eq!(upsample_bilinear(&[], 0, 0, 2, 3), vec![0.0; 6]);
}

#[test]
fn colormap_endpoints() {
    let lo = colormap(0.0);
    let hi = colormap(1.0);
    assert!(lo[2] > 100 && lo[0] == 0 && lo[1] == 0, "{lo:?}");
    assert!(hi[0] > 100 && hi[1] == 0 && hi[2] == 0, "{hi:?}");
    assert_eq!(colormap(-3.0), lo);
    assert_eq!(colormap(7.0), hi);
    assert_eq!(colormap(f32::NAN), lo);
    // Middle is greenish-yellow, and the map is continuous.
    let mid = colormap(0.5);
    assert!(mid[1] == 255 && mid[2] < 130, "{mid:?}");
    for i in 0..1000 {
        let (a, b) = (
            colormap(i as f32 / 1000.0),
            colormap((i + 1) as f32 / 1000.0),
        );
        assert!(
            (0..3).all(|k| (a[k] as i32 - b[k] as i32).abs() <= 3),
            "jump at {i}"
        );
    }
}

#[test]
fn overlay_size_and_content() {
    let dir = out_dir("cam");
    // A 28x28 "image": a bright square on dark ground.
    let img = RgbImage::from_fn(28, 28, |x, y| {
        let v = if (8..20).contains(&x) && (6..22).contains(&y) {
            220
        } else {
            20
        };
        Rgb([v, v, v])
    });
    let (h, w) = (7, 7);
    let peak: Vec<f32> = (0..h * w)
        .map(|i| -(((i / w) as f32 - 2.0).powi(2) + ((i % w) as f32 - 4.0).powi(2)))
        .collect();
    let maps = vec![
        ("Sneaker 93.1%".to_string(), peak),
        ("Sandal 4.0%".to_string(), vec![1.0; h * w]),
        (
            "Bag 0.2%".to_string(),
            (0..h * w)
                .map(|i| if i == 3 { f32::NAN } else { i as f32 })
                .collect(),
        ),
    ];
    let out = cam_overlay(&img, &maps, h, w);
    save_png(&dir.join("cam.png"), &out).unwrap();
    // Panels are 28 * 6 = 168 px; four of them plus margins, gaps and the bar.
    assert_eq!(out.height(), 10 + 22 + 168 + 10);
    assert!(
        out.width() >= 4 * 168 + 20 && out.width() < 4 * 168 + 120,
        "width {}",
        out.width()
    );
    // The first panel is the nearest-upscaled input.
    let top = 32;
    assert_eq!(out.get_pixel(10 + 6 * 10, top + 6 * 10).0, [220, 220, 220]);
    assert_eq!(out.get_pixel(10 + 2, top + 2).0, [20, 20, 20]);
    // In the first map panel the hot spot (map row 2, column 4) is reddish, a far corner bluish.
    let x1 = 10 + 168 + 12;
    let hot = out.get_pixel(x1 + 168 * 9 / 14, top + 168 * 5 / 14).0;
    let cold = out.get_pixel(x1 + 3, top + 165).0;
    assert!(hot[0] > hot[2] + 60, "hot {hot:?}");
    assert!(cold[2] > cold[0] + 40, "cold {cold:?}");

    // Large inputs are not scaled; no maps gives just the input and the bar.
    let big = RgbImage::from_pixel(300, 200, Rgb([9, 9, 9]));
    let out = cam_overlay(&big, &[], 3, 3);
    assert_eq!(out.height(), 10 + 22 + 200 + 10);
    let empty = cam_overlay(&RgbImage::new(0, 0), &[("x".into(), vec![0.5])], 1, 1);
    assert!(empty.width() > 0);
}
