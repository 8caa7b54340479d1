//! The f16 forms of the element-wise kernels, the max pool and the class-map head (mixed
//! precision's activations), against the f64 twins on f16-rounded inputs, within one f16
//! rounding of the result (plus the f32 error where there is arithmetic), outputs poisoned;
//! and dynamic loss scaling (`kernels::amp`, the SGD step's skip and unscale) against a CPU
//! model of the same rules. Not run (and said so) on an adapter without shader-f16.

use crate::f16_rounded;
use finegrain::kernels::amp::{
    amp_check, amp_scale, amp_update, initial_state, AMP_CLEAN, AMP_OVERFLOW, AMP_SCALE,
    AMP_SKIPPED, MAX_SCALE, MIN_SCALE,
};
use finegrain::kernels::elementwise::{add_inplace, add_relu_inplace, relu_backward_inplace};
use finegrain::kernels::pool::{
    maxpool_backward, maxpool_forward, MaxPoolBackward, MaxPoolForward, MaxPoolShape,
};
use finegrain::kernels::sgd::{sgd_step, SgdOptions, SgdStep};
use finegrain::method::head::{head_backward, head_forward, HeadBackward, HeadForward, HeadHalf};
use finegrain::reference::gemm::round_f16;
use finegrain::reference::{elementwise as relt, head as rhead, pool as rpool, sgd as rsgd};
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};
use finegrain::{Gpu, Tensor};

/// The adapter, when it can hold f16 tensors (else a line saying what was not run).
fn f16_gpu(what: &str) -> Option<&'static Gpu> {
    let g = gpu()?;
    if !g.features.shader_f16 {
        eprintln!("NOT RUN: {what}: {} has no shader-f16", g.describe());
        return None;
    }
    Some(g)
}

fn poisoned_f16(g: &Gpu, label: &str, shape: &[usize]) -> Tensor {
    let t = g.zeros_f16(label, shape).unwrap();
    g.fill(&t, f32::NAN).unwrap();
    t
}

/// Element counts: 1, odd (an f16 tensor of odd length ends mid-word), not multiples of 256.
const SIZES: &[usize] = &[1, 7, 5 * 9 * 13 * 3, 70_001];

#[test]
fn elementwise_f16_matches_twins() {
    let Some(g) = f16_gpu("elementwise f16") else {
        return;
    };
    for &n in SIZES {
        let mut r = rng(&format!("elementwise f16 n={n}"));
        let y = round_f16(&uniform(&mut r, n, 1.0));
        let relu_y: Vec<f32> = y.iter().map(|v| v.max(0.0)).collect();
        let x = round_f16(&uniform(&mut r, n, 1.0));
        let dy = round_f16(&uniform(&mut r, n, 1.0));
        // ReLU backward selects: exact.
        let ty = g.tensor_f16("y", &[n], &relu_y).unwrap();
        let tdy = g.tensor_f16("dy", &[n], &dy).unwrap();
        let d = relu_backward_inplace(g, &ty, &tdy).unwrap();
        g.run(&[&d]).unwrap();
        let want = relt::relu_backward(&f64s(&relu_y), &f64s(&dy));
        let got = g.download(&tdy).unwrap();
        assert_close(&format!("relu_backward f16 n={n}"), &got, &want, 0.0, 0.0);
        // The sums: the f32 sum of two f16 values (one f32 rounding), then one f16 rounding.
        let (atol, rtol) = f16_rounded(0.0);
        let rtol = rtol + f32::EPSILON as f64;
        let tx = g.tensor_f16("x", &[n], &x).unwrap();
        let ty = g.tensor_f16("y", &[n], &y).unwrap();
        let d = add_inplace(g, &ty, &tx).unwrap();
        g.run(&[&d]).unwrap();
        let got = g.download(&ty).unwrap();
        let want = relt::add(&f64s(&y), &f64s(&x));
        assert_close(&format!("add f16 n={n}"), &got, &want, atol, rtol);
        g.upload_f16(&ty, &y).unwrap();
        let d = add_relu_inplace(g, &ty, &tx).unwrap();
        g.run(&[&d]).unwrap();
        let got = g.download(&ty).unwrap();
        let want = relt::add_relu(&f64s(&y), &f64s(&x));
        assert_close(&format!("add_relu f16 n={n}"), &got, &want, atol, rtol);
    }
    // Operands of two dtypes are refused, naming the odd one.
    let a = g.zeros_f16("a16", &[10]).unwrap();
    let b = g.zeros("b32", &[10]).unwrap();
    let e = add_inplace(g, &a, &b).err().unwrap().to_string();
    assert!(e.contains("b32"), "{e}");
}

#[test]
fn maxpool_f16_matches_twin() {
    let Some(g) = f16_gpu("maxpool f16") else {
        return;
    };
    let shapes = [
        MaxPoolShape {
            n: 5,
            h: 13,
            w: 13,
            c: 7,
            k: 3,
            stride: 2,
            pad: 1,
        },
        MaxPoolShape {
            n: 1,
            h: 7,
            w: 5,
            c: 13,
            k: 2,
            stride: 2,
            pad: 0,
        },
        MaxPoolShape {
            n: 2,
            h: 4,
            w: 3,
            c: 3,
            k: 3,
            stride: 1,
            pad: 1,
        },
    ];
    for s in shapes {
        let tag = format!("maxpool f16 {s:?}");
        let mut r = rng(&tag);
        let x = round_f16(&uniform(&mut r, s.input_len(), 1.0));
        let dy = round_f16(&uniform(&mut r, s.output_len(), 1.0));
        let tx = g.tensor_f16("x", &s.input_shape(), &x).unwrap();
        let ty = poisoned_f16(g, "y", &s.output_shape());
        let ti = g
            .tensor_u32("idx", &s.output_shape(), &vec![u32::MAX; s.output_len()])
            .unwrap();
        let tdy = g.tensor_f16("dy", &s.output_shape(), &dy).unwrap();
        let tdx = poisoned_f16(g, "dx", &s.input_shape());
        let f = maxpool_forward(
            g,
            &MaxPoolForward {
                x: &tx,
                y: &ty,
                idx: &ti,
            },
            s.window(),
        )
        .unwrap();
        let b = maxpool_backward(
            g,
            &MaxPoolBackward {
                dy: &tdy,
                idx: &ti,
                dx: &tdx,
            },
            s.window(),
        )
        .unwrap();
        g.run(&[&f, &b]).unwrap();
        let (want_y, want_i) = rpool::maxpool_forward(&s, &f64s(&x));
        // A max is a copy of an f16 value: exact, and the same argmax (first max wins).
        assert_close(
            &format!("{tag} y"),
            &g.download(&ty).unwrap(),
            &want_y,
            0.0,
            0.0,
        );
        assert_eq!(g.download_u32(&ti).unwrap(), want_i, "{tag} idx");
        // The gather sums a few f16 values in f32, then rounds once.
        let want_dx = rpool::maxpool_backward(&s, &f64s(&dy), &want_i);
        let (atol, rtol) = f16_rounded(0.0);
        let got = g.download(&tdx).unwrap();
        let rtol = rtol + 4.0 * f32::EPSILON as f64;
        assert_close(&format!("{tag} dx"), &got, &want_dx, atol, rtol);
    }
}

/// The head with f16 features and weight (the f16 GEMM the adapter resolves: cooperative
/// matrices where it has them): maps, dweight and dbias f32, dfeat f16. The twin runs on the
/// f16-rounded features, weight and (for the GEMMs of the backward pass) class-map
/// gradient; dbias sums the f32 gradient.
#[test]
fn head_mixed_matches_twin() {
    use crate::conv2d_coop::bound;
    let Some(g) = f16_gpu("head mixed") else {
        return;
    };
    for (n, h, w, d, c) in [(2, 3, 5, 33, 7), (1, 4, 4, 70, 65), (3, 1, 1, 9, 3)] {
        let rows = n * h * w;
        let tag = format!("head mixed n={n} {h}x{w} d={d} c={c}");
        let mut r = rng(&tag);
        let feat = round_f16(&uniform(&mut r, rows * d, 1.0));
        let weight = round_f16(&uniform(&mut r, d * c, 1.0));
        let bias = uniform(&mut r, c, 1.0);
        let dmaps = uniform(&mut r, rows * c, 1.0);
        let t_feat = g.tensor_f16("feat", &[n, h, w, d], &feat).unwrap();
        let t_weight = g.tensor_f16("weight", &[d, c], &weight).unwrap();
        let t_bias = g.tensor("bias", &[c], &bias).unwrap();
        let t_maps = g.zeros("maps", &[n, h, w, c]).unwrap();
        let t_dmaps = g.tensor("dmaps", &[n, h, w, c], &dmaps).unwrap();
        let t_dfeat = poisoned_f16(g, "dfeat", &[n, h, w, d]);
        let t_dweight = g.zeros("dweight", &[d, c]).unwrap();
        let t_dbias = g.zeros("dbias", &[c]).unwrap();
        let s_dmaps = poisoned_f16(g, "dmaps16", &[n, h, w, c]);
        let s_dfeat = g.zeros("dfeat32", &[n, h, w, d]).unwrap();
        for t in [&t_maps, &t_dweight, &t_dbias, &s_dfeat] {
            g.fill(t, f32::NAN).unwrap();
        }
        let fwd = head_forward(
            g,
            &HeadForward {
                feat: &t_feat,
                weight: &t_weight,
                bias: &t_bias,
                maps: &t_maps,
            },
        )
        .unwrap();
        let t = HeadBackward {
            feat: &t_feat,
            weight: &t_weight,
            dmaps: &t_dmaps,
            dfeat: &t_dfeat,
            dweight: &t_dweight,
            dbias: &t_dbias,
            half: Some(HeadHalf {
                dmaps: &s_dmaps,
                dfeat: &s_dfeat,
            }),
            accumulate: false,
        };
        let bwd = head_backward(g, &t).unwrap();
        let all: Vec<_> = fwd.iter().chain(bwd.iter()).collect();
        g.run(&all).unwrap();
        let (f, wt) = (f64s(&feat), f64s(&weight));
        let dm16 = f64s(&round_f16(&dmaps));
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let want = rhead::head_forward(rows, d, c, &f, &wt, &f64s(&bias));
        let sums = rhead::head_forward(rows, d, c, &abs(&f), &abs(&wt), &vec![0.0; c]);
        // The bias add is one more f32 rounding of a value below sum + |bias|.
        let tol = bound(d, &sums, &vec![0.0; sums.len()]) + 2.0 * f32::EPSILON as f64;
        let got = g.download(&t_maps).unwrap();
        assert_close(&format!("{tag} maps"), &got, &want, tol, 0.0);
        let (want_dfeat, want_dweight, _) = rhead::head_backward(rows, d, c, &f, &wt, &dm16);
        let (sum_dfeat, sum_dweight, _) =
            rhead::head_backward(rows, d, c, &abs(&f), &abs(&wt), &abs(&dm16));
        let (atol, rtol) = f16_rounded(bound(c, &sum_dfeat, &vec![0.0; sum_dfeat.len()]));
        let got = g.download(&t_dfeat).unwrap();
        assert_close(&format!("{tag} dfeat"), &got, &want_dfeat, atol, rtol);
        let tol = bound(rows, &sum_dweight, &vec![0.0; sum_dweight.len()]);
        let got = g.download(&t_dweight).unwrap();
        assert_close(&format!("{tag} dweight"), &got, &want_dweight, tol, 0.0);
        let want_dbias = rhead::column_sum(rows, c, &f64s(&dmaps));
        let got = g.download(&t_dbias).unwrap();
        let tol = 4e-6 * (rows as f64).sqrt() + 1e-6;
        assert_close(&format!("{tag} dbias"), &got, &want_dbias, tol, 1e-5);
        // f16 features without the scratch are refused, saying what is missing.
        let t = HeadBackward { half: None, ..t };
        let e = head_backward(g, &t).err().unwrap().to_string();
        assert!(e.contains("half") && e.contains("feat"), "{e}");
    }
}

/// The CPU model of one step of dynamic loss scaling: the state after a step that did
/// (`overflow`) or did not overflow, with growth interval `interval`.
fn amp_model(s: [u32; 4], overflow: bool, interval: u32) -> [u32; 4] {
    let scale = f32::from_bits(s[AMP_SCALE]);
    if overflow {
        [
            (scale * 0.5).max(MIN_SCALE).to_bits(),
            0,
            s[AMP_SKIPPED] + 1,
            0,
        ]
    } else if s[AMP_CLEAN] + 1 >= interval {
        [(scale * 2.0).min(MAX_SCALE).to_bits(), 0, s[AMP_SKIPPED], 0]
    } else {
        [s[AMP_SCALE], s[AMP_CLEAN] + 1, s[AMP_SKIPPED], 0]
    }
}

/// Loss scaling step by step against its CPU model: the gradient scaled by S; the check
/// flags NaN, +inf and -inf anywhere (also the last element of an odd-sized tensor) and
/// nothing else; SGD unscales exactly (S a power of two) or, on a flagged step, leaves the
/// parameter and its momentum untouched; the update halves S on overflow (not below the
/// minimum), doubles it after `interval` clean steps (not above the maximum) and counts
/// the skipped steps.
#[test]
fn loss_scaling_matches_its_model() {
    let Some(g) = gpu() else { return };
    let n = 1001;
    let interval = 3;
    let mut r = rng("loss scaling");
    let amp = g.zeros_u32("amp", &[4]).unwrap();
    let mut state = initial_state(1024.0);
    g.upload(&amp, &state).unwrap();
    let grad0 = uniform(&mut r, n, 1.0);
    let tgrad = g.tensor("grad", &[n], &grad0).unwrap();
    let p0 = uniform(&mut r, n, 1.0);
    let tp = g.tensor("param", &[n], &p0).unwrap();
    let tv = g.zeros("velocity", &[n]).unwrap();
    let hyper = [0.1f32, 0.9, 1e-4, 1.0];
    let th = g.tensor("hyper", &[4], &hyper).unwrap();
    let sgd = sgd_step(
        g,
        &SgdStep {
            param: &tp,
            grad: &tgrad,
            velocity: &tv,
            hyper: &th,
            amp: Some(&amp),
        },
        &SgdOptions::default(),
    )
    .unwrap();
    let scale_d = amp_scale(g, &tgrad, &amp).unwrap();
    let check = amp_check(g, &tgrad, &amp).unwrap();
    let update = amp_update(g, &amp, interval).unwrap();
    let (mut p, mut v) = (f64s(&p0), vec![0.0; n]);
    // Steps: clean, a NaN, clean x 3 (growth), +inf at the end, -inf, clean.
    let poison = [None, Some((17, f32::NAN)), None, None, None];
    let poison = poison.into_iter().chain([
        Some((n - 1, f32::INFINITY)),
        Some((0, f32::NEG_INFINITY)),
        None,
    ]);
    for (step, bad) in poison.enumerate() {
        let tag = format!("loss scaling step {step} ({bad:?})");
        let mut grad = uniform(&mut r, n, 1.0);
        if let Some((i, v)) = bad {
            grad[i] = v;
        }
        g.upload(&tgrad, &grad).unwrap();
        g.run(&[&scale_d, &check]).unwrap();
        // The gradient is scaled by S (exact: a power of two).
        let s = f32::from_bits(state[AMP_SCALE]);
        let scaled = g.download(&tgrad).unwrap();
        let want: Vec<f32> = grad.iter().map(|x| x * s).collect();
        for (i, (a, b)) in scaled.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{tag} [{i}]"
            );
        }
        let flag = g.download_u32(&amp).unwrap()[AMP_OVERFLOW];
        assert_eq!(flag, bad.is_some() as u32, "{tag}: overflow flag");
        g.run(&[&sgd, &update]).unwrap();
        if bad.is_none() {
            let unscaled: Vec<f64> = scaled.iter().map(|&x| (x / s) as f64).collect();
            let h = hyper.map(|x| x as f64);
            rsgd::sgd_step(&mut p, &unscaled, &mut v, h, true);
        }
        assert_close(
            &format!("{tag} param"),
            &g.download(&tp).unwrap(),
            &p,
            1e-6,
            1e-6,
        );
        assert_close(
            &format!("{tag} velocity"),
            &g.download(&tv).unwrap(),
            &v,
            1e-6,
            1e-6,
        );
        state = amp_model(state, bad.is_some(), interval);
        assert_eq!(
            g.download_u32(&amp).unwrap(),
            state.to_vec(),
            "{tag}: state"
        );
    }
    assert_eq!(state[AMP_SKIPPED], 3);
    // The bounds: halving stops at the minimum, doubling at the maximum.
    for (start, overflow, want) in [(MIN_SCALE, true, MIN_SCALE), (MAX_SCALE, false, MAX_SCALE)] {
        let s = [start.to_bits(), interval - 1, 0, overflow as u32];
        g.upload(&amp, &s).unwrap();
        g.run(&[&update]).unwrap();
        let got = f32::from_bits(g.download_u32(&amp).unwrap()[AMP_SCALE]);
        assert_eq!(got, want, "update from {start} overflow={overflow}");
    }
    // A growth interval of 0 and a state of the wrong type are refused.
    assert!(amp_update(g, &amp, 0).is_err());
    let wrong = g.zeros("amp_f32", &[4]).unwrap();
    let e = amp_check(g, &tgrad, &wrong).err().unwrap().to_string();
    assert!(e.contains("amp_f32"), "{e}");
}

/// `GpuOptions::cooperative_matrices = false` (`FINEGRAIN_COOP=off`) leaves the feature off:
/// no tile, and a mixed-precision network runs its convolutions over f16 storage instead
/// (what to fall back to should a driver's experimental cooperative matrices misbehave).
#[test]
fn cooperative_matrices_can_be_turned_off() {
    use finegrain::gpu::GpuOptions;
    use finegrain::kernels::conv2d::coop::CoopTile;
    use finegrain::method::loss::LossKind;
    use finegrain::model::ModelConfig;
    use finegrain::train::{MethodConfig, Network};
    use finegrain::Precision;
    let Some(_) = f16_gpu("cooperative matrices off") else {
        return;
    };
    let g = Gpu::new(&GpuOptions {
        cooperative_matrices: false,
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    assert!(!g.features.coop_f16_f32.any(), "{}", g.describe());
    assert_eq!(CoopTile::best(&g), None);
    let model = ModelConfig::preset("tiny", 1, 12, 3).unwrap();
    let method = MethodConfig {
        diversify: None,
        loss: LossKind::CrossEntropy,
        accumulate: false,
    };
    let net = Network::with_precision(&g, &model, 2, &method, 0, Precision::Mixed).unwrap();
    let names: Vec<&str> = net.train_main.iter().map(|d| d.name.as_str()).collect();
    assert!(names.iter().all(|n| !n.contains("coop")), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("conv2d") && n.contains("f16")),
        "{names:?}"
    );
}

/// The grouped overflow check over many gradients of assorted sizes (three dispatches, the
/// last one part-filled): no flag when every value is finite; the flag for one NaN or
/// infinity in any gradient, at its first or last element, in any slot of any group.
#[test]
fn overflow_check_over_many_gradients() {
    use finegrain::kernels::amp::{amp_check_all, CHECK_GROUP};
    let Some(g) = gpu() else { return };
    let sizes = [
        1usize, 7, 300, 5, 1000, 2, 257, 64, 9, 1, 3000, 11, 8, 513, 6, 77, 2,
    ];
    assert!(sizes.len() > 2 * CHECK_GROUP && !sizes.len().is_multiple_of(CHECK_GROUP));
    let mut r = rng("overflow check many");
    let data: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 1e4)).collect();
    let grads: Vec<Tensor> = data
        .iter()
        .enumerate()
        .map(|(i, d)| g.tensor(&format!("grad{i}"), &[d.len()], d).unwrap())
        .collect();
    let refs: Vec<&Tensor> = grads.iter().collect();
    let amp = g.zeros_u32("amp", &[4]).unwrap();
    let ds = amp_check_all(g, &refs, &amp).unwrap();
    assert_eq!(ds.len(), sizes.len().div_ceil(CHECK_GROUP));
    let ds: Vec<_> = ds.iter().collect();
    let flag = |g: &Gpu| g.download_u32(&amp).unwrap()[AMP_OVERFLOW];
    g.upload(&amp, &initial_state(1.0)).unwrap();
    g.run(&ds).unwrap();
    assert_eq!(flag(g), 0, "all finite");
    for (i, bad) in [
        (0, f32::NAN),
        (6, f32::INFINITY),
        (7, f32::NEG_INFINITY),
        (16, f32::NAN),
    ]
    .into_iter()
    .chain([(10, f32::INFINITY), (13, f32::NAN)])
    {
        for at in [0, sizes[i] - 1] {
            let mut d = data[i].clone();
            d[at] = bad;
            g.upload(&grads[i], &d).unwrap();
            g.upload(&amp, &initial_state(1.0)).unwrap();
            g.run(&ds).unwrap();
            assert_eq!(flag(g), 1, "{bad} in gradient {i} at {at}");
            g.upload(&grads[i], &data[i]).unwrap();
        }
    }
    assert!(amp_check_all(g, &[], &amp).is_err());
}
