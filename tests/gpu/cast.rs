//! The f32 <-> f16 casts against their twin: every kind of value (exact f16 values, values
//! between two, f16 subnormals, overflow, NaN), odd lengths, a power-of-two scale (exact in
//! f32), the destination poisoned.

use finegrain::kernels::cast::cast_values;
use finegrain::reference::cast::{self as twin, f16_neighbours};
use finegrain::testing::{gpu, rng};
use rand::Rng;

/// Values of every kind, `n` of them.
fn values(r: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 8 {
            0 => r.random_range(-1.0f32..1.0),
            1 => r.random_range(-70000.0f32..70000.0), // some overflow f16
            2 => r.random_range(-1e-6f32..1e-6),       // f16 subnormals and zero
            3 => half_exact(r),
            4 => r.random_range(-100.0f32..100.0),
            5 => [
                65504.0, -65504.0, 65519.0, 65520.0, -65520.0, 1e30, -1e30, 0.0,
            ][i / 8 % 8],
            6 => r.random_range(-1e-3f32..1e-3),
            _ => r.random_range(-2.0f32..2.0) * 2048.0,
        })
        .collect()
}

/// A value an f16 holds exactly.
fn half_exact(r: &mut impl Rng) -> f32 {
    let bits: u16 = r.random_range(0..0x7bff) | if r.random() { 0x8000 } else { 0 };
    half::f16::from_bits(bits).to_f32()
}

#[test]
fn cast_f32_to_f16_and_back() {
    let Some(g) = gpu() else { return };
    if !g.features.shader_f16 {
        eprintln!("NOT RUN: {} has no shader-f16", g.describe());
        return;
    }
    for n in [1usize, 257, 70001] {
        for scale in [1.0f32, 0.25, 1024.0] {
            let tag = format!("cast n={n} scale={scale}");
            let mut r = rng(&tag);
            let mut x = values(&mut r, n);
            if n > 8 {
                x[7] = f32::NAN;
            }
            let src = g.tensor("x", &[n], &x).unwrap();
            let h = g.zeros_f16("h", &[n]).unwrap();
            g.fill(&h, f32::NAN).unwrap();
            let back = g.zeros("back", &[n]).unwrap();
            g.fill(&back, f32::NAN).unwrap();
            let d1 = cast_values(g, &src, &h, scale).unwrap();
            let d2 = cast_values(g, &h, &back, 1.0 / scale).unwrap();
            g.run(&[&d1, &d2]).unwrap();
            let got = g.download(&h).unwrap();
            let want = twin::cast_values(&x, scale);
            let (mut exact, mut flushed) = (0, 0);
            for i in 0..n {
                let (v, gv, w) = (x[i] * scale, got[i], want[i]);
                if v.is_nan() {
                    assert!(gv.is_nan(), "{tag} [{i}]: NaN became {gv}");
                    continue;
                }
                let (lo, hi) = f16_neighbours(v);
                // Subnormal f16 results may be flushed to zero by the driver.
                let flush = w.abs() < 6.104e-5 && gv == 0.0;
                assert!(
                    gv == lo || gv == hi || flush,
                    "{tag} [{i}]: {} * {scale} gave {gv}, want {w} (neighbours {lo}, {hi})",
                    x[i]
                );
                if w.is_infinite() {
                    assert_eq!(gv, w, "{tag} [{i}]: overflow of {v}");
                }
                exact += (gv == w) as usize;
                flushed += (flush && w != 0.0) as usize;
            }
            // And back: exact, then divided by the (power-of-two) scale.
            let back = g.download(&back).unwrap();
            for i in 0..n {
                let w = got[i] / scale;
                assert!(
                    back[i] == w || (back[i].is_nan() && w.is_nan()),
                    "{tag} back [{i}]: {} vs {w}",
                    back[i]
                );
            }
            eprintln!("{tag}: {exact}/{n} round to nearest even, {flushed} flushed");
        }
    }
}

#[test]
fn cast_refuses_other_types() {
    let Some(g) = gpu() else { return };
    let a = g.zeros("a32", &[4]).unwrap();
    let b = g.zeros("b32", &[4]).unwrap();
    let e = cast_values(g, &a, &b, 1.0).err().unwrap().to_string();
    assert!(e.contains("a32") && e.contains("F32 -> F32"), "{e}");
    if let Ok(h) = g.zeros_f16("h5", &[5]) {
        let e = cast_values(g, &a, &h, 1.0).err().unwrap().to_string();
        assert!(e.contains("h5"), "{e}");
    }
}
