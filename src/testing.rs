//! Helpers shared by the tests, the benchmark and the examples' self-checks: the shared
//! test adapter, fresh random inputs, and the GPU-versus-twin comparison.

use crate::gpu::Gpu;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// Environment variable that lets GPU tests pass without an adapter (they print that they
/// checked nothing). Without it, a missing adapter fails every GPU test.
pub const ALLOW_NO_GPU: &str = "FINEGRAIN_ALLOW_NO_GPU";

/// The adapter shared by every test in a test binary. Panics (failing the test) when no
/// adapter can be created, unless `FINEGRAIN_ALLOW_NO_GPU=1` is set, in which case it
/// returns `None` and the caller returns early.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        let r = Gpu::from_env().map_err(|e| e.to_string());
        if let Ok(g) = &r {
            eprintln!("finegrain tests on: {}", g.describe());
        }
        r
    });
    match g {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var(ALLOW_NO_GPU).is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED (no adapter, {ALLOW_NO_GPU}=1): {e}");
                None
            } else {
                panic!("GPU test needs an adapter: {e}\n(set {ALLOW_NO_GPU}=1 to skip GPU tests)");
            }
        }
    }
}

/// A random generator seeded from `FINEGRAIN_TEST_SEED` or fresh entropy; the seed is
/// printed so a failure can be replayed.
pub fn rng(test: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("FINEGRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: FINEGRAIN_TEST_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn uniform(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Widen to f64 for the twins.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Result of comparing GPU output against a twin.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub bad: usize,
    pub worst_index: usize,
    pub worst_err: f64,
    pub max_abs_err: f64,
    pub report: String,
}

/// Compare `|got - want| <= atol + rtol * |want|` elementwise (NaN never passes).
pub fn compare(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Comparison {
    let mut bad = 0;
    let mut first = Vec::new();
    let mut worst_index = 0;
    let mut worst_ratio = -1.0f64;
    let mut max_abs_err = 0.0f64;
    if got.len() != want.len() {
        return Comparison {
            bad: got.len().max(want.len()),
            worst_index: 0,
            worst_err: f64::INFINITY,
            max_abs_err: f64::INFINITY,
            report: format!(
                "{name}: length {} != reference length {}",
                got.len(),
                want.len()
            ),
        };
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let tol = atol + rtol * w.abs();
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / tol
        };
        // Written so that a NaN error counts as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let fails = !(err <= tol);
        if fails {
            bad += 1;
            if first.len() < 5 {
                first.push(format!("[{i}] gpu {g:e} ref {w:e} err {err:e}"));
            }
        }
        if ratio > worst_ratio {
            worst_ratio = ratio;
            worst_index = i;
        }
        if err.is_nan() || err > max_abs_err {
            max_abs_err = if err.is_nan() { f64::INFINITY } else { err };
        }
    }
    let worst_err = if got.is_empty() {
        0.0
    } else {
        (got[worst_index] as f64 - want[worst_index]).abs()
    };
    let report = format!(
        "{name}: {bad}/{} elements outside atol {atol:e} + rtol {rtol:e}; worst [{worst_index}] gpu {:e} ref {:e} (err {worst_err:e}); max abs err {max_abs_err:e}{}",
        got.len(),
        got.get(worst_index).copied().unwrap_or(f32::NAN),
        want.get(worst_index).copied().unwrap_or(f64::NAN),
        if first.is_empty() { String::new() } else { format!("\n  first: {}", first.join("; ")) }
    );
    Comparison {
        bad,
        worst_index,
        worst_err,
        max_abs_err,
        report,
    }
}

/// Panic with a report (worst element, first failures) unless `got` matches `want`.
#[track_caller]
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    let c = compare(name, got, want, atol, rtol);
    assert!(c.bad == 0, "{}", c.report);
}

/// Central finite-difference gradient of `f` at `x` for the listed coordinates.
pub fn finite_diff(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    coords: &[usize],
    h: f64,
) -> Vec<f64> {
    let mut xp = x.to_vec();
    coords
        .iter()
        .map(|&i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let fp = f(&xp);
            xp[i] = orig - h;
            let fm = f(&xp);
            xp[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Assert an analytic gradient matches central differences of `f` on `samples` coordinates
/// (all coordinates when there are at most `samples`).
#[track_caller]
pub fn check_grad(
    name: &str,
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    samples: usize,
    rng: &mut impl Rng,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let coords: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        (0..samples).map(|_| rng.random_range(0..x.len())).collect()
    };
    let num = finite_diff(f, x, &coords, 1e-5);
    for (j, &i) in coords.iter().enumerate() {
        let err = (num[j] - analytic[i]).abs();
        let tol = 1e-6 + 1e-5 * num[j].abs().max(analytic[i].abs());
        assert!(
            err <= tol,
            "{name}: d/dx[{i}] analytic {:e} vs finite difference {:e} (err {err:e})",
            analytic[i],
            num[j]
        );
    }
}

/// Write a class-per-folder tree of `per_class` grayscale `size` x `size` PNGs per class
/// under `root/<name>/`, whose class is visible (class 0: bright left half, 1: bright top
/// half, 2 and up: a checkerboard of cell `c - 1`), with uniform noise of +-30 drawn from
/// `seed`. For the end-to-end tests.
pub fn write_toy_folders(
    root: &std::path::Path,
    names: &[&str],
    per_class: usize,
    size: u32,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (c, name) in names.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("test folder");
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(size, size, |x, y| {
                let on = match c {
                    0 => x < size / 2,
                    1 => y < size / 2,
                    _ => (x / (c as u32 - 1) + y / (c as u32 - 1)).is_multiple_of(2),
                };
                let base: f32 = if on { 200.0 } else { 40.0 };
                image::Luma([(base + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0) as u8])
            });
            img.save(dir.join(format!("{i}.png"))).expect("test image");
        }
    }
}

/// A tree written by [`write_toy_folders`], opened whole as a training set (grayscale, its
/// own `size`, nothing held out).
pub fn open_toy_folders(
    root: &std::path::Path,
    size: usize,
) -> std::sync::Arc<dyn crate::data::Dataset> {
    let opts = crate::data::DataOptions {
        channels: Some(1),
        size: Some(size),
        test_fraction: 0.0,
        ..crate::data::DataOptions::default()
    };
    std::sync::Arc::from(
        crate::data::open_dataset(root, crate::data::Split::Train, &opts).expect("toy dataset"),
    )
}

/// The tensors of a safetensors file: (name, dtype, shape, little-endian bytes), sorted by
/// name, as the fuzz targets and the hostile-input catalogue edit them.
pub type StTensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// The metadata and tensors of the safetensors bytes `b` (panics on a file that is not
/// one: the callers pass files they made).
pub fn read_safetensors(b: &[u8]) -> (std::collections::HashMap<String, String>, StTensors) {
    let (_, header) = safetensors::SafeTensors::read_metadata(b).expect("a safetensors file");
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(b).expect("a safetensors file");
    let mut t: StTensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    (meta, t)
}

/// Safetensors bytes of `t` with metadata `meta`.
pub fn write_safetensors(
    meta: Option<&std::collections::HashMap<String, String>>,
    t: &StTensors,
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b);
            (n.clone(), v.expect("consistent tensor"))
        })
        .collect();
    safetensors::serialize(views, meta.cloned()).expect("serializable tensors")
}

/// The backbone of the finegrain checkpoint `checkpoint` (bytes) as a torchvision state
/// dict: the head as `fc`, no momentum, a `num_batches_tracked` per batch norm.
pub fn torchvision_state_dict(checkpoint: &[u8]) -> Vec<u8> {
    let (_, t) = read_safetensors(checkpoint);
    let mut sd: StTensors = Vec::new();
    for (n, d, s, b) in t {
        if n.starts_with(crate::checkpoint::MOMENTUM_PREFIX) {
            continue;
        }
        match n.as_str() {
            "head.weight" => sd.push(("fc.weight".into(), d, s[..2].to_vec(), b)),
            "head.bias" => sd.push(("fc.bias".into(), d, s, b)),
            _ => {
                if let Some(bn) = n.strip_suffix(".running_mean") {
                    let tracked = 7i64.to_le_bytes().to_vec();
                    let name = format!("{bn}.num_batches_tracked");
                    sd.push((name, safetensors::Dtype::I64, vec![], tracked));
                }
                sd.push((n, d, s, b));
            }
        }
    }
    write_safetensors(None, &sd)
}
