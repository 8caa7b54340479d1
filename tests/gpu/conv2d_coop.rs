//! The convolution passes on cooperative matrices (f16 operands, f32 accumulation and
//! output) against the f64 twins on the f16-rounded inputs, every tile side the adapter
//! lists, on conv2d's shapes (which do not divide the tiles), with the output poisoned, and
//! the backward passes also accumulating; without a tile, the refusal.

use crate::conv2d::{name, numel, shape};
use crate::{coop_required, REQUIRE_COOP};
use finegrain::kernels::conv2d::coop::{
    conv2d_backward_data_coop, conv2d_backward_weight_coop, conv2d_forward_coop, CoopConvOptions,
    CoopTile,
};
use finegrain::kernels::conv2d::{
    Conv2dBackwardData, Conv2dBackwardWeight, Conv2dForward, Conv2dShape,
};
use finegrain::reference::conv2d as twin;
use finegrain::reference::gemm::round_f16;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};

/// The ResNet kinds (stem 7x7/s2/p3, 3x3/s1/p1, 3x3/s2/p1, 1x1/s2), odd corners
/// (non-square kernel, stride 3 leaving input rows unread, padding wider than the kernel's
/// reach), and one bigger than a 64-wide tile in every GEMM dimension of every pass.
const SHAPES: &[Conv2dShape] = &[
    shape(1, 7, 5, 3, 13, 3, 3, 1, 1),
    shape(5, 9, 9, 7, 33, 3, 3, 2, 1),
    shape(1, 17, 13, 3, 13, 7, 7, 2, 3),
    shape(5, 9, 7, 33, 7, 1, 1, 2, 0),
    shape(2, 8, 10, 3, 5, 3, 1, 3, 0),
    shape(1, 6, 5, 4, 3, 2, 4, 2, 2),
    shape(2, 11, 9, 65, 67, 3, 3, 1, 1),
];

/// The f32 rounding bound of sums of `len` products of f16 values (exact in f32), given
/// the twin run on the operands' absolute values (`abs`, the sums of |a b|) and the
/// accumulated start `init` (zero when overwriting): len u / (1 - len u) sum |a b| plus one
/// rounding of the result. See `reference::gemm::f32_error_bound`.
pub(crate) fn bound(len: usize, abs: &[f64], init: &[f64]) -> f64 {
    let u = f64::powi(2.0, -24);
    let gamma = len as f64 * u / (1.0 - len as f64 * u);
    abs.iter()
        .zip(init)
        .map(|(s, i)| gamma * s + 2.0 * u * (s + i.abs()))
        .fold(0.0, f64::max)
}

pub(crate) fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// The tiles to test: every one the adapter lists; none is a failure under REQUIRE_COOP.
fn tiles() -> Vec<CoopTile> {
    let Some(g) = gpu() else { return Vec::new() };
    let t: Vec<CoopTile> = [CoopTile::T8, CoopTile::T16]
        .into_iter()
        .filter(|t| t.available(g))
        .collect();
    assert!(
        !t.is_empty() || !coop_required(),
        "{REQUIRE_COOP}=1 but {} has no f16 x f16 -> f32 cooperative-matrix tile",
        g.describe()
    );
    t
}

/// Every pass, overwriting and accumulating; the forward pass and the data gradient also
/// with f16 results (mixed precision's activations: the f32 bound plus one f16 rounding,
/// the start read from f16 when accumulating).
#[test]
fn conv2d_coop_passes_match_twins() {
    use crate::f16_rounded;
    use finegrain::gpu::DType;
    let Some(g) = gpu() else { return };
    for tile in tiles() {
        for (s, accumulate, out) in SHAPES.iter().flat_map(|s| {
            [
                (false, DType::F32),
                (true, DType::F32),
                (false, DType::F16),
                (true, DType::F16),
            ]
            .map(|(a, o)| (s, a, o))
        }) {
            let tag = format!(
                "{} {tile:?} accumulate={accumulate} {out:?} result",
                name(s)
            );
            let mut r = rng(&format!("conv2d_coop {tag}"));
            let x = round_f16(&uniform(&mut r, numel(s.x_shape()), 1.0));
            let w = round_f16(&uniform(&mut r, numel(s.w_shape()), 1.0));
            let dy = round_f16(&uniform(&mut r, numel(s.y_shape()), 1.0));
            let o = CoopConvOptions {
                tile: Some(tile),
                accumulate,
            };
            let tx = g.tensor_f16("x", &s.x_shape(), &x).unwrap();
            let tw = g.tensor_f16("w", &s.w_shape(), &w).unwrap();
            let tdy = g.tensor_f16("dy", &s.y_shape(), &dy).unwrap();
            // Output start: NaN to be overwritten, or values to add to (as the result's
            // type holds them).
            let start = |r: &mut rand::rngs::StdRng, n: usize| {
                if accumulate {
                    round_f16(&uniform(r, n, 1.0))
                } else {
                    vec![f32::NAN; n]
                }
            };
            let result = |label: &str, shape: [usize; 4], v: &[f32], dtype: DType| match dtype {
                DType::F16 => g.tensor_f16(label, &shape, v).unwrap(),
                _ => g.tensor(label, &shape, v).unwrap(),
            };
            let tols = |atol: f64, dtype: DType| match dtype {
                DType::F16 => f16_rounded(atol),
                _ => (atol, 0.0),
            };
            let (x64, w64, dy64) = (f64s(&x), f64s(&w), f64s(&dy));

            if !accumulate {
                let ty = result("y", s.y_shape(), &start(&mut r, numel(s.y_shape())), out);
                let t = Conv2dForward {
                    x: &tx,
                    w: &tw,
                    y: &ty,
                };
                let d = conv2d_forward_coop(g, &t, s.geometry(), &o).unwrap();
                g.run(&[&d]).unwrap();
                let want = twin::conv2d_forward(s, &x64, &w64);
                let sums = twin::conv2d_forward(s, &abs(&x64), &abs(&w64));
                let zero = vec![0.0; want.len()];
                let (atol, rtol) = tols(bound(s.kh * s.kw * s.cin, &sums, &zero), out);
                let got = g.download(&ty).unwrap();
                assert_close(&format!("forward {tag}"), &got, &want, atol, rtol);
            }

            let dx0 = start(&mut r, numel(s.x_shape()));
            let tdx = result("dx", s.x_shape(), &dx0, out);
            let t = Conv2dBackwardData {
                dy: &tdy,
                w: &tw,
                dx: &tdx,
            };
            let d = conv2d_backward_data_coop(g, &t, s.geometry(), &o).unwrap();
            g.run(&[&d]).unwrap();
            let init = if accumulate {
                f64s(&dx0)
            } else {
                vec![0.0; dx0.len()]
            };
            let mut want = twin::conv2d_backward_data(s, &dy64, &w64);
            want.iter_mut().zip(&init).for_each(|(a, b)| *a += b);
            let sums = twin::conv2d_backward_data(s, &abs(&dy64), &abs(&w64));
            let (atol, rtol) = tols(bound(s.kh * s.kw * s.cout, &sums, &init), out);
            let got = g.download(&tdx).unwrap();
            assert_close(&format!("data gradient {tag}"), &got, &want, atol, rtol);
            if out == DType::F16 {
                continue; // the weight gradient is f32 only
            }

            let dw0 = start(&mut r, numel(s.w_shape()));
            let tdw = g.tensor("dw", &s.w_shape(), &dw0).unwrap();
            let t = Conv2dBackwardWeight {
                x: &tx,
                dy: &tdy,
                dw: &tdw,
            };
            let d = conv2d_backward_weight_coop(g, &t, s.geometry(), &o).unwrap();
            g.run(&[&d]).unwrap();
            let init = if accumulate {
                f64s(&dw0)
            } else {
                vec![0.0; dw0.len()]
            };
            let mut want = twin::conv2d_backward_weight(s, &x64, &dy64);
            want.iter_mut().zip(&init).for_each(|(a, b)| *a += b);
            let sums = twin::conv2d_backward_weight(s, &abs(&x64), &abs(&dy64));
            let tol = bound(s.n * s.oh() * s.ow(), &sums, &init);
            let got = g.download(&tdw).unwrap();
            assert_close(&format!("weight gradient {tag}"), &got, &want, tol, 0.0);
        }
    }
}

/// f32 operands, a missing tile and `accumulate` on the forward pass are refused, each
/// naming what is wrong.
#[test]
fn conv2d_coop_refusals() {
    let Some(g) = gpu() else { return };
    let s = SHAPES[0];
    let x32 = g.zeros("x32", &s.x_shape()).unwrap();
    let y = g.zeros("y", &s.y_shape()).unwrap();
    let Ok(w) = g.tensor_f16("w16", &s.w_shape(), &vec![0.0; numel(s.w_shape())]) else {
        assert!(!g.features.shader_f16);
        return;
    };
    let t = Conv2dForward {
        x: &x32,
        w: &w,
        y: &y,
    };
    for tile in [CoopTile::T8, CoopTile::T16] {
        let o = CoopConvOptions {
            tile: Some(tile),
            accumulate: false,
        };
        let e = conv2d_forward_coop(g, &t, s.geometry(), &o)
            .err()
            .unwrap()
            .to_string();
        if tile.available(g) {
            assert!(e.contains("x32") && e.contains("F16"), "{e}");
        } else {
            assert!(e.contains(&format!("{tile:?}")), "{e}");
        }
    }
    if let Some(tile) = CoopTile::best(g) {
        // The usual launcher sends a pass there when its options name a tile.
        let x16 = g.zeros_f16("x16", &s.x_shape()).unwrap();
        let t16 = Conv2dForward {
            x: &x16,
            w: &w,
            y: &y,
        };
        let o = finegrain::kernels::conv2d::Conv2dOptions {
            coop: Some(tile),
            ..Default::default()
        };
        let d = finegrain::kernels::conv2d::conv2d_forward(g, &t16, s.geometry(), &o).unwrap();
        assert!(d.name.starts_with("conv2d_coop"), "{}", d.name);
        let o = CoopConvOptions {
            tile: Some(tile),
            accumulate: true,
        };
        let e = conv2d_forward_coop(g, &t, s.geometry(), &o)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("accumulate"), "{e}");
    }
}
