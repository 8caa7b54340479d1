//! conv2d: every entry point against the f64 twins (including the accumulate paths), the
//! twins' gradients against central finite differences of the forward twin, and shape checks.

use finegrain::error::Error;
use finegrain::gpu::{GpuOptions, KernelFamily};
use finegrain::kernels::conv2d::{
    self as conv, Conv2dBackwardData, Conv2dBackwardWeight, Conv2dForward, Conv2dOptions,
    Conv2dShape,
};
use finegrain::reference::conv2d as twin;
use finegrain::testing::{assert_close, check_grad, f64s, gpu, rng, uniform};
use rand::Rng;

#[allow(clippy::too_many_arguments)]
pub(crate) const fn shape(
    n: usize,
    h: usize,
    w: usize,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
) -> Conv2dShape {
    Conv2dShape {
        n,
        h,
        w,
        cin,
        cout,
        kh,
        kw,
        stride,
        pad,
    }
}

/// Options running kernel family `k`.
fn with(k: KernelFamily) -> Conv2dOptions<'static> {
    Conv2dOptions {
        kernel: Some(k),
        ..Default::default()
    }
}

/// Shapes that do not divide the tiles; the ResNet kinds (stem 7x7/s2/p3, 3x3/s1/p1,
/// 3x3/s2/p1, 1x1/s1, 1x1/s2); odd corners (non-square kernels, stride 3 leaving input
/// rows no window reads, padding so wide that whole windows are padding).
const SHAPES: &[Conv2dShape] = &[
    shape(1, 7, 5, 3, 13, 3, 3, 1, 1),
    shape(5, 9, 9, 7, 33, 3, 3, 2, 1),
    shape(1, 17, 13, 3, 13, 7, 7, 2, 3),
    shape(5, 9, 7, 33, 7, 1, 1, 2, 0),
    shape(1, 7, 9, 13, 33, 1, 1, 1, 0),
    shape(2, 8, 10, 3, 5, 3, 1, 3, 0),
    shape(1, 6, 5, 4, 3, 2, 4, 2, 2),
    shape(1, 28, 28, 7, 13, 3, 3, 1, 1),
    // Bigger than one tile in every GEMM dimension of all three passes:
    // forward 198 x 67 x 585, data gradient 198 x 65 x 603, weight gradient 585 x 67 x 198.
    shape(2, 11, 9, 65, 67, 3, 3, 1, 1),
    // For the 16-channel blocks of the subgroup kernels: one input channel (a weight
    // gradient with 9 rows, so most subgroups of its workgroup have no row), and exact
    // multiples of 16 as in the tiny model.
    shape(3, 10, 9, 1, 16, 3, 3, 1, 1),
    shape(3, 8, 8, 16, 16, 3, 3, 1, 1),
    shape(2, 6, 7, 32, 48, 3, 3, 2, 1),
];

pub(crate) fn numel(d: [usize; 4]) -> usize {
    d.iter().product()
}

/// f32 accumulation of `red` products of values in [-1, 1].
fn atol(red: usize) -> f64 {
    4e-6 * (red as f64).sqrt() + 1e-6
}

/// Every kernel variant the adapter can run is checked on every shape, whichever it would
/// pick. `Subgroup` needs 8-wide subgroups (lavapipe on x86-64 has them);
/// `subgroup_kernels_where_subgroups_are_8_wide` checks that it is refused elsewhere.
fn kernels(g: &finegrain::Gpu) -> Vec<KernelFamily> {
    let mut k = vec![KernelFamily::Tiled, KernelFamily::Broadcast];
    if g.subgroups_of_8() {
        k.push(KernelFamily::Subgroup);
    }
    k
}

pub(crate) fn name(s: &Conv2dShape) -> String {
    format!(
        "n{} {}x{}x{} -> {} k{}x{} s{} p{}",
        s.n, s.h, s.w, s.cin, s.cout, s.kh, s.kw, s.stride, s.pad
    )
}

#[test]
fn conv2d_forward_matches_twin() {
    let Some(g) = gpu() else { return };
    for (s, k) in SHAPES
        .iter()
        .flat_map(|s| kernels(g).into_iter().map(move |k| (s, k)))
    {
        let mut r = rng(&format!("conv2d_forward {} {k:?}", name(s)));
        let x = uniform(&mut r, numel(s.x_shape()), 1.0);
        let w = uniform(&mut r, numel(s.w_shape()), 1.0);
        let tx = g.tensor("x", &s.x_shape(), &x).unwrap();
        let tw = g.tensor("w", &s.w_shape(), &w).unwrap();
        let ty = g.zeros("y", &s.y_shape()).unwrap();
        g.fill(&ty, f32::NAN).unwrap();
        let d = conv::conv2d_forward(
            g,
            &Conv2dForward {
                x: &tx,
                w: &tw,
                y: &ty,
            },
            s.geometry(),
            &with(k),
        )
        .unwrap();
        g.run(&[&d]).unwrap();
        let want = twin::conv2d_forward(s, &f64s(&x), &f64s(&w));
        let red = s.kh * s.kw * s.cin;
        assert_close(
            &format!("conv2d_forward {} {k:?}", name(s)),
            &g.download(&ty).unwrap(),
            &want,
            atol(red),
            1e-5,
        );
    }
}

#[test]
fn subgroup_kernels_where_subgroups_are_8_wide() {
    let Some(g) = gpu() else { return };
    let s = SHAPES[0];
    let x = g.zeros("x", &s.x_shape()).unwrap();
    let w = g.zeros("w", &s.w_shape()).unwrap();
    let y = g.zeros("y", &s.y_shape()).unwrap();
    let r = conv::conv2d_forward(
        g,
        &Conv2dForward {
            x: &x,
            w: &w,
            y: &y,
        },
        s.geometry(),
        &with(KernelFamily::Subgroup),
    );
    println!("adapter {}: {}", g.info.name, g.subgroup_sizes());
    if g.subgroups_of_8() {
        assert!(r.is_ok(), "{:?}", r.err());
        if g.is_cpu() && GpuOptions::from_env().unwrap().kernels.is_none() {
            assert_eq!(g.kernels(), KernelFamily::Subgroup);
        }
    } else {
        let e = r
            .err()
            .expect("Subgroup kernels accepted without 8-wide subgroups");
        assert!(e.to_string().contains("subgroups of exactly 8"), "{e}");
        assert_ne!(g.kernels(), KernelFamily::Subgroup);
    }
    // Asking a device for the subgroup family is checked once, when it is created.
    let asked = finegrain::Gpu::new(&GpuOptions {
        kernels: Some(KernelFamily::Subgroup),
        ..GpuOptions::from_env().unwrap()
    });
    match asked {
        Ok(d) => {
            assert!(d.subgroups_of_8(), "{}", d.subgroup_sizes());
            assert_eq!(d.kernels(), KernelFamily::Subgroup);
        }
        Err(e) => {
            assert!(!g.subgroups_of_8());
            assert!(e.to_string().contains("subgroups of exactly 8"), "{e}");
        }
    }
}

#[test]
fn conv2d_direct_matches_twin_and_the_tiled_kernels() {
    let Some(g) = gpu() else { return };
    for s in SHAPES {
        let mut r = rng(&format!("conv2d_direct {}", name(s)));
        let x = uniform(&mut r, numel(s.x_shape()), 1.0);
        let w = uniform(&mut r, numel(s.w_shape()), 1.0);
        let tx = g.tensor("x", &s.x_shape(), &x).unwrap();
        let tw = g.tensor("w", &s.w_shape(), &w).unwrap();
        let ty = g.zeros("y", &s.y_shape()).unwrap();
        g.fill(&ty, f32::NAN).unwrap();
        let d = conv::conv2d_direct(
            g,
            &Conv2dForward {
                x: &tx,
                w: &tw,
                y: &ty,
            },
            s.geometry(),
        )
        .unwrap();
        g.run(&[&d]).unwrap();
        let want = twin::conv2d_forward(s, &f64s(&x), &f64s(&w));
        let red = s.kh * s.kw * s.cin;
        let direct = g.download(&ty).unwrap();
        assert_close(
            &format!("conv2d_direct {}", name(s)),
            &direct,
            &want,
            atol(red),
            1e-5,
        );
        // The direct kernel is the readable second opinion on the tiled families: each agrees
        // with it to within both of their distances from the twin.
        for k in kernels(g) {
            let d = conv::conv2d_forward(
                g,
                &Conv2dForward {
                    x: &tx,
                    w: &tw,
                    y: &ty,
                },
                s.geometry(),
                &with(k),
            )
            .unwrap();
            g.run(&[&d]).unwrap();
            assert_close(
                &format!("conv2d_forward {k:?} vs conv2d_direct {}", name(s)),
                &g.download(&ty).unwrap(),
                &f64s(&direct),
                2.0 * atol(red),
                2e-5,
            );
        }
    }
}

#[test]
fn conv2d_backward_data_matches_twin() {
    let Some(g) = gpu() else { return };
    for (s, k) in SHAPES
        .iter()
        .flat_map(|s| kernels(g).into_iter().map(move |k| (s, k)))
    {
        let mut r = rng(&format!("conv2d_backward_data {} {k:?}", name(s)));
        let dy = uniform(&mut r, numel(s.y_shape()), 1.0);
        let w = uniform(&mut r, numel(s.w_shape()), 1.0);
        let dx0 = uniform(&mut r, numel(s.x_shape()), 1.0);
        let tdy = g.tensor("dy", &s.y_shape(), &dy).unwrap();
        let tw = g.tensor("w", &s.w_shape(), &w).unwrap();
        let tdx = g.zeros("dx", &s.x_shape()).unwrap();
        g.fill(&tdx, f32::NAN).unwrap();
        let tdx_acc = g.tensor("dx_acc", &s.x_shape(), &dx0).unwrap();
        let t = Conv2dBackwardData {
            dy: &tdy,
            w: &tw,
            dx: &tdx,
        };
        let d = conv::conv2d_backward_data(g, &t, s.geometry(), &with(k)).unwrap();
        let t = Conv2dBackwardData {
            dy: &tdy,
            w: &tw,
            dx: &tdx_acc,
        };
        let acc = Conv2dOptions {
            accumulate: true,
            ..with(k)
        };
        let da = conv::conv2d_backward_data(g, &t, s.geometry(), &acc).unwrap();
        g.run(&[&d, &da]).unwrap();
        let want = twin::conv2d_backward_data(s, &f64s(&dy), &f64s(&w));
        let want_acc: Vec<f64> = want.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
        let tol = atol(s.kh * s.kw * s.cout);
        let n = format!("{} {k:?}", name(s));
        assert_close(
            &format!("conv2d_backward_data {n}"),
            &g.download(&tdx).unwrap(),
            &want,
            tol,
            1e-5,
        );
        assert_close(
            &format!("conv2d_backward_data accumulate {n}"),
            &g.download(&tdx_acc).unwrap(),
            &want_acc,
            tol,
            1e-5,
        );
    }
}

#[test]
fn conv2d_backward_weight_matches_twin() {
    let Some(g) = gpu() else { return };
    for (s, k) in SHAPES
        .iter()
        .flat_map(|s| kernels(g).into_iter().map(move |k| (s, k)))
    {
        let mut r = rng(&format!("conv2d_backward_weight {} {k:?}", name(s)));
        let x = uniform(&mut r, numel(s.x_shape()), 1.0);
        let dy = uniform(&mut r, numel(s.y_shape()), 1.0);
        let dw0 = uniform(&mut r, numel(s.w_shape()), 1.0);
        let tx = g.tensor("x", &s.x_shape(), &x).unwrap();
        let tdy = g.tensor("dy", &s.y_shape(), &dy).unwrap();
        let tdw = g.zeros("dw", &s.w_shape()).unwrap();
        g.fill(&tdw, f32::NAN).unwrap();
        let tdw_acc = g.tensor("dw_acc", &s.w_shape(), &dw0).unwrap();
        let t = Conv2dBackwardWeight {
            x: &tx,
            dy: &tdy,
            dw: &tdw,
        };
        let d = conv::conv2d_backward_weight(g, &t, s.geometry(), &with(k)).unwrap();
        let t = Conv2dBackwardWeight {
            x: &tx,
            dy: &tdy,
            dw: &tdw_acc,
        };
        let acc = Conv2dOptions {
            accumulate: true,
            ..with(k)
        };
        let da = conv::conv2d_backward_weight(g, &t, s.geometry(), &acc).unwrap();
        g.run(&d.iter().chain(&da).collect::<Vec<_>>()).unwrap();
        let want = twin::conv2d_backward_weight(s, &f64s(&x), &f64s(&dy));
        let want_acc: Vec<f64> = want.iter().zip(&dw0).map(|(a, &b)| a + b as f64).collect();
        let tol = atol(s.n * s.oh() * s.ow());
        let n = format!("{} {k:?}", name(s));
        assert_close(
            &format!("conv2d_backward_weight {n}"),
            &g.download(&tdw).unwrap(),
            &want,
            tol,
            1e-5,
        );
        assert_close(
            &format!("conv2d_backward_weight accumulate {n}"),
            &g.download(&tdw_acc).unwrap(),
            &want_acc,
            tol,
            1e-5,
        );
    }
}

/// The split-K weight gradient (the tiled GEMM, or the subgroup kernel where the adapter
/// has it, over reduction chunks, then the sum of the partials) against the twin, for chunk
/// counts that leave a short last chunk, with and without accumulation; repeated runs are
/// bit-identical (fixed summation order).
#[test]
fn conv2d_backward_weight_split_k_matches_twin() {
    let Some(g) = gpu() else { return };
    let split_kernels: Vec<KernelFamily> = kernels(g)
        .into_iter()
        .filter(|&k| k != KernelFamily::Broadcast)
        .collect();
    let sk = &split_kernels;
    for (s, splits, k) in SHAPES.iter().flat_map(|s| {
        [2, 3, 7]
            .into_iter()
            .flat_map(move |n| sk.iter().map(move |&k| (s, n, k)))
    }) {
        let mut r = rng(&format!(
            "conv2d_backward_weight split {} {splits} {k:?}",
            name(s)
        ));
        let x = uniform(&mut r, numel(s.x_shape()), 1.0);
        let dy = uniform(&mut r, numel(s.y_shape()), 1.0);
        let dw0 = uniform(&mut r, numel(s.w_shape()), 1.0);
        let tx = g.tensor("x", &s.x_shape(), &x).unwrap();
        let tdy = g.tensor("dy", &s.y_shape(), &dy).unwrap();
        let tdw = g.zeros("dw", &s.w_shape()).unwrap();
        g.fill(&tdw, f32::NAN).unwrap();
        let tdw_acc = g.tensor("dw_acc", &s.w_shape(), &dw0).unwrap();
        // Its own partials for one, a caller's (larger than needed) scratch for the other.
        let scratch = g.zeros("scratch", &[8 * numel(s.w_shape()) + 5]).unwrap();
        let split = Conv2dOptions {
            splits: Some(splits),
            ..with(k)
        };
        let t = Conv2dBackwardWeight {
            x: &tx,
            dy: &tdy,
            dw: &tdw,
        };
        let d = conv::conv2d_backward_weight(g, &t, s.geometry(), &split).unwrap();
        let t = Conv2dBackwardWeight {
            x: &tx,
            dy: &tdy,
            dw: &tdw_acc,
        };
        let acc = Conv2dOptions {
            accumulate: true,
            scratch: Some(&scratch),
            ..split
        };
        let da = conv::conv2d_backward_weight(g, &t, s.geometry(), &acc).unwrap();
        let red = s.n * s.oh() * s.ow();
        // A split happens whenever the chunks (multiples of 16 pixels for the tiled kernel,
        // of output rows for the subgroup kernel) come to more than one.
        let splits_here = match k {
            KernelFamily::Tiled => red > 16,
            _ => s.n * s.oh() > 1,
        };
        assert_eq!(d.len(), if splits_here { 2 } else { 1 }, "{}", name(s));
        g.run(&d.iter().chain(&da).collect::<Vec<_>>()).unwrap();
        let want = twin::conv2d_backward_weight(s, &f64s(&x), &f64s(&dy));
        let want_acc: Vec<f64> = want.iter().zip(&dw0).map(|(a, &b)| a + b as f64).collect();
        let n = format!("{} splits {splits} {k:?}", name(s));
        let got = g.download(&tdw).unwrap();
        assert_close(
            &format!("conv2d_backward_weight {n}"),
            &got,
            &want,
            atol(red),
            1e-5,
        );
        assert_close(
            &format!("conv2d_backward_weight accumulate {n}"),
            &g.download(&tdw_acc).unwrap(),
            &want_acc,
            atol(red),
            1e-5,
        );
        g.fill(&tdw, f32::NAN).unwrap();
        g.run(&d.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(g.download(&tdw).unwrap(), got, "{n}: not deterministic");
    }
}

/// A scratch buffer too small for the split is an error naming it.
#[test]
fn conv2d_backward_weight_split_k_rejects_small_scratch() {
    let Some(g) = gpu() else { return };
    let s = SHAPES[1];
    let x = g.zeros("x", &s.x_shape()).unwrap();
    let dy = g.zeros("dy", &s.y_shape()).unwrap();
    let dw = g.zeros("dw", &s.w_shape()).unwrap();
    let small = g.zeros("small_scratch", &[numel(s.w_shape())]).unwrap();
    let o = Conv2dOptions {
        splits: Some(4),
        scratch: Some(&small),
        ..with(KernelFamily::Tiled)
    };
    let t = Conv2dBackwardWeight {
        x: &x,
        dy: &dy,
        dw: &dw,
    };
    let e = conv::conv2d_backward_weight(g, &t, s.geometry(), &o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("small_scratch") && e.contains("needs at least"),
        "{e}"
    );
}

/// The split heuristic: many chunks where the weight gradient has few tiles and a long
/// reduction (ResNet-50's early layers at 448 px), none where tiles already fill a GPU or
/// the reduction is short. The subgroup kernel (CPU adapters) aims for 16 workgroups: the
/// tiny model's grayscale stem (one workgroup) is cut into 16 chunks, its 4x4 3x3 64->64
/// layer (36 workgroups) is not cut. The broadcast kernel never splits.
#[test]
fn weight_grad_splits_heuristic() {
    use KernelFamily::{Broadcast, Subgroup, Tiled};
    // 3x3 64->64 at 112x112, batch 16: 9 tiles, 200,704 pixels.
    let early = shape(16, 112, 112, 64, 64, 3, 3, 1, 1);
    assert_eq!(conv::weight_grad_splits(&early, Tiled), 57);
    // 3x3 512->512 at 14x14: 576 tiles already.
    let late = shape(16, 14, 14, 512, 512, 3, 3, 1, 1);
    assert_eq!(conv::weight_grad_splits(&late, Tiled), 1);
    // A tiny layer: the reduction is shorter than two chunks.
    assert_eq!(conv::weight_grad_splits(&SHAPES[0], Tiled), 1);
    // Every split keeps its partials within 16 MiB.
    let s = shape(64, 112, 112, 256, 512, 3, 3, 1, 1);
    assert!(conv::weight_grad_splits(&s, Tiled) * 9 * 256 * 512 <= 1 << 22);
    let stem = shape(32, 28, 28, 1, 16, 3, 3, 1, 1);
    assert_eq!(conv::weight_grad_splits(&stem, Subgroup), 16);
    assert_eq!(
        conv::weight_grad_splits(&shape(32, 4, 4, 64, 64, 3, 3, 1, 1), Subgroup),
        1
    );
    // 3 workgroups; 32 output rows allow only 4 chunks of 8.
    assert_eq!(
        conv::weight_grad_splits(&shape(2, 16, 16, 16, 16, 3, 3, 1, 1), Subgroup),
        4
    );
    assert_eq!(conv::weight_grad_splits(&stem, Broadcast), 1);
}

#[test]
fn conv2d_launchers_reject_wrong_shapes() {
    let Some(g) = gpu() else { return };
    let s = SHAPES[0];
    let x = g.zeros("x", &s.x_shape()).unwrap();
    let w = g.zeros("w", &s.w_shape()).unwrap();
    let y = g.zeros("y", &s.y_shape()).unwrap();
    let bad = g
        .zeros("y_bad", &[s.n, s.oh() + 1, s.ow(), s.cout])
        .unwrap();
    let e = conv::conv2d_forward(
        g,
        &Conv2dForward {
            x: &x,
            w: &w,
            y: &bad,
        },
        s.geometry(),
        &Conv2dOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::ShapeMismatch { ref tensor, .. } if tensor == "y_bad"),
        "{e}"
    );
    let e = conv::conv2d_backward_data(
        g,
        &Conv2dBackwardData {
            dy: &bad,
            w: &w,
            dx: &x,
        },
        s.geometry(),
        &Conv2dOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::ShapeMismatch { ref tensor, .. } if tensor == "y_bad"),
        "{e}"
    );
    let e = conv::conv2d_backward_weight(
        g,
        &Conv2dBackwardWeight {
            x: &x,
            dy: &y,
            dw: &y,
        },
        s.geometry(),
        &Conv2dOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::ShapeMismatch { ref tensor, .. } if tensor == "y"),
        "{e}"
    );
    let e = conv::conv2d_direct(
        g,
        &Conv2dForward {
            x: &x,
            w: &w,
            y: &y,
        },
        Conv2dShape { stride: 0, ..s }.geometry(),
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}

#[test]
fn conv2d_shape_sizes_and_validation() {
    // ResNet stem on 224x224: 112x112 out, 118.0 MFLOP per image (2 * 112^2 * 147 * 64).
    let stem = shape(1, 224, 224, 3, 64, 7, 7, 2, 3);
    assert_eq!((stem.oh(), stem.ow()), (112, 112));
    assert!((stem.gflop() - 2.0 * 112.0 * 112.0 * 147.0 * 64.0 * 1e-9).abs() < 1e-12);
    assert!(stem.validate().is_ok());
    let down = shape(1, 56, 56, 64, 128, 1, 1, 2, 0);
    assert_eq!((down.oh(), down.ow()), (28, 28));
    assert!(Conv2dShape { cin: 0, ..stem }.validate().is_err());
    assert!(Conv2dShape { stride: 0, ..stem }.validate().is_err());
    assert!(shape(1, 2, 2, 1, 1, 5, 5, 1, 1).validate().is_err());
    assert!(shape(1, 2, 2, 1, 1, 5, 5, 1, 2).validate().is_ok());
    assert!(shape(1 << 16, 256, 256, 64, 64, 3, 3, 1, 1)
        .validate()
        .is_err());
}

#[test]
fn conv2d_twin_hand_computed() {
    // x = 1..9 on a 3x3 grid, 2x2 kernel of ones: window sums.
    let s = shape(1, 3, 3, 1, 1, 2, 2, 1, 0);
    let x: Vec<f64> = (1..=9).map(|v| v as f64).collect();
    assert_eq!(
        twin::conv2d_forward(&s, &x, &[1.0; 4]),
        vec![12.0, 16.0, 24.0, 28.0]
    );
    // Padding 1, stride 2, kernel [[1, 2], [3, 4]]: windows at (-1,-1), (-1,1), (1,-1), (1,1).
    let s = shape(1, 3, 3, 1, 1, 2, 2, 2, 1);
    let w = [1.0, 2.0, 3.0, 4.0];
    assert_eq!(
        twin::conv2d_forward(&s, &x, &w),
        vec![
            4.0,
            3.0 * 2.0 + 4.0 * 3.0,
            2.0 * 4.0 + 4.0 * 7.0,
            5.0 + 2.0 * 6.0 + 3.0 * 8.0 + 4.0 * 9.0
        ]
    );
    // 1x1 convolution = matmul [N*H*W, Cin] x [Cin, Cout].
    let s = shape(2, 3, 2, 5, 4, 1, 1, 1, 0);
    let mut r = rng("conv2d_twin_hand_computed");
    let x: Vec<f64> = (0..numel(s.x_shape()))
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let w: Vec<f64> = (0..numel(s.w_shape()))
        .map(|_| r.random_range(-1.0..1.0))
        .collect();
    let want = finegrain::reference::gemm::matmul(12, 4, 5, &x, &w);
    let got = twin::conv2d_forward(&s, &x, &w);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-12);
    }
}

#[test]
fn conv2d_twin_gradients_by_finite_differences() {
    // L = sum(y * r): dL/dx = backward_data(r, w), dL/dw = backward_weight(x, r).
    for s in &SHAPES[..7] {
        let mut g = rng(&format!("conv2d twin gradients {}", name(s)));
        let mut rand =
            |n: usize| -> Vec<f64> { (0..n).map(|_| g.random_range(-1.0..1.0)).collect() };
        let x = rand(numel(s.x_shape()));
        let w = rand(numel(s.w_shape()));
        let r = rand(numel(s.y_shape()));
        let loss = |y: Vec<f64>| -> f64 { y.iter().zip(&r).map(|(a, b)| a * b).sum() };
        let dx = twin::conv2d_backward_data(s, &r, &w);
        let dw = twin::conv2d_backward_weight(s, &x, &r);
        let mut pick = rng(&format!("conv2d twin gradient coordinates {}", name(s)));
        check_grad(
            &format!("conv2d dL/dx {}", name(s)),
            &mut |xv: &[f64]| loss(twin::conv2d_forward(s, xv, &w)),
            &x,
            &dx,
            40,
            &mut pick,
        );
        check_grad(
            &format!("conv2d dL/dw {}", name(s)),
            &mut |wv: &[f64]| loss(twin::conv2d_forward(s, &x, wv)),
            &w,
            &dw,
            40,
            &mut pick,
        );
    }
}

/// The f16-storage kernels (operands f16, widened on load; f32 arithmetic) of every family
/// the adapter can run, every pass, every shape, against the f64 twins on the f16-rounded
/// operands within the f32 dot-product bound (products of f16 values are exact in f32),
/// outputs poisoned with NaN; the weight gradient with its default split. The forward pass
/// and the data gradient also with an f16 result (mixed precision's activations), within
/// that bound plus one f16 rounding, and the data gradient accumulating into one.
#[test]
fn conv2d_f16_storage_matches_twins() {
    use crate::conv2d_coop::{abs, bound};
    use crate::f16_rounded;
    use finegrain::gpu::DType;
    use finegrain::reference::gemm::round_f16;
    let Some(g) = gpu() else { return };
    if !g.features.shader_f16 {
        eprintln!("NOT RUN: {} has no shader-f16", g.describe());
        assert!(g.tensor_f16("x", &[1], &[0.0]).is_err());
        return;
    }
    for (s, k, out) in SHAPES.iter().flat_map(|s| {
        kernels(g)
            .into_iter()
            .flat_map(move |k| [(s, k, DType::F32), (s, k, DType::F16)])
    }) {
        let tag = format!("{} {k:?} f16 storage, {out:?} result", name(s));
        let mut r = rng(&format!("conv2d {tag}"));
        let x = round_f16(&uniform(&mut r, numel(s.x_shape()), 1.0));
        let w = round_f16(&uniform(&mut r, numel(s.w_shape()), 1.0));
        let dy = round_f16(&uniform(&mut r, numel(s.y_shape()), 1.0));
        let (x64, w64, dy64) = (f64s(&x), f64s(&w), f64s(&dy));
        let tx = g.tensor_f16("x", &s.x_shape(), &x).unwrap();
        let tw = g.tensor_f16("w", &s.w_shape(), &w).unwrap();
        let tdy = g.tensor_f16("dy", &s.y_shape(), &dy).unwrap();
        let poisoned = |label: &str, shape: [usize; 4], dtype: DType| {
            let t = g.zeros_of(label, &shape, dtype).unwrap();
            g.fill(&t, f32::NAN).unwrap();
            t
        };
        let (ty, tdx, tdw) = (
            poisoned("y", s.y_shape(), out),
            poisoned("dx", s.x_shape(), out),
            poisoned("dw", s.w_shape(), DType::F32),
        );
        let mut ds = vec![conv::conv2d_forward(
            g,
            &Conv2dForward {
                x: &tx,
                w: &tw,
                y: &ty,
            },
            s.geometry(),
            &with(k),
        )
        .unwrap()];
        let t = Conv2dBackwardData {
            dy: &tdy,
            w: &tw,
            dx: &tdx,
        };
        ds.push(conv::conv2d_backward_data(g, &t, s.geometry(), &with(k)).unwrap());
        let t = Conv2dBackwardWeight {
            x: &tx,
            dy: &tdy,
            dw: &tdw,
        };
        ds.extend(conv::conv2d_backward_weight(g, &t, s.geometry(), &with(k)).unwrap());
        g.run(&ds.iter().collect::<Vec<_>>()).unwrap();
        // (f32 atol, rtol) of the pass's result type.
        let tols = |atol: f64, dtype: DType| match dtype {
            DType::F16 => f16_rounded(atol),
            _ => (atol, 0.0),
        };
        let cases = [
            (
                "forward",
                &ty,
                twin::conv2d_forward(s, &x64, &w64),
                twin::conv2d_forward(s, &abs(&x64), &abs(&w64)),
                s.kh * s.kw * s.cin,
            ),
            (
                "data gradient",
                &tdx,
                twin::conv2d_backward_data(s, &dy64, &w64),
                twin::conv2d_backward_data(s, &abs(&dy64), &abs(&w64)),
                s.kh * s.kw * s.cout,
            ),
            (
                "weight gradient",
                &tdw,
                twin::conv2d_backward_weight(s, &x64, &dy64),
                twin::conv2d_backward_weight(s, &abs(&x64), &abs(&dy64)),
                s.n * s.oh() * s.ow(),
            ),
        ];
        for (pass, t, want, sums, len) in cases {
            let (atol, rtol) = tols(bound(len, &sums, &vec![0.0; sums.len()]), t.dtype);
            let got = g.download(t).unwrap();
            assert_close(&format!("{pass} {tag}"), &got, &want, atol, rtol);
        }
        if out == DType::F16 {
            // The shortcut's data gradient adds into the block input's f16 gradient: the
            // start is read, the f32 sum rounded once.
            let dx0 = round_f16(&uniform(&mut r, numel(s.x_shape()), 1.0));
            g.upload_f16(&tdx, &dx0).unwrap();
            let t = Conv2dBackwardData {
                dy: &tdy,
                w: &tw,
                dx: &tdx,
            };
            let o = Conv2dOptions {
                accumulate: true,
                ..with(k)
            };
            let d = conv::conv2d_backward_data(g, &t, s.geometry(), &o).unwrap();
            g.run(&[&d]).unwrap();
            let init = f64s(&dx0);
            let mut want = twin::conv2d_backward_data(s, &dy64, &w64);
            want.iter_mut().zip(&init).for_each(|(a, b)| *a += b);
            let sums = twin::conv2d_backward_data(s, &abs(&dy64), &abs(&w64));
            let (atol, rtol) = f16_rounded(bound(s.kh * s.kw * s.cout, &sums, &init));
            let got = g.download(&tdx).unwrap();
            assert_close(
                &format!("data gradient accumulating {tag}"),
                &got,
                &want,
                atol,
                rtol,
            );
        }
    }
}

/// Mixed operand types are refused, naming the tensor.
#[test]
fn conv2d_refuses_mixed_operand_types() {
    let Some(g) = gpu() else { return };
    let s = SHAPES[0];
    let Ok(x) = g.tensor_f16("x16", &s.x_shape(), &vec![0.0; numel(s.x_shape())]) else {
        return;
    };
    let w = g.zeros("w32", &s.w_shape()).unwrap();
    let y = g.zeros("y", &s.y_shape()).unwrap();
    let t = Conv2dForward {
        x: &x,
        w: &w,
        y: &y,
    };
    let e = conv::conv2d_forward(g, &t, s.geometry(), &Conv2dOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("w32") && e.contains("F16"), "{e}");
}
