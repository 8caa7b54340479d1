use crate::{f16_rounded, F16_U};
use finegrain::gpu::{BnSizing, DType};
use finegrain::kernels::batchnorm::{
    batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, BatchNormBackward,
    BatchNormEval, BatchNormOptions, BatchNormShape, BatchNormTrain,
};
use finegrain::reference::batchnorm as twin;
use finegrain::reference::gemm::round_f16;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};
use finegrain::Gpu;
use rand::Rng;

/// (rows, C) cases: channels 1, 3, 7, 13, 33; rows not a multiple of 256, fewer rows than
/// the 8 row lanes, several chunks with a short last chunk (1125 rows, 33 channels:
/// 36 chunks of 32 rows, the last of 5, with the GPU sizing; 2 chunks, the last of 101,
/// with the CPU sizing). Every case runs with both sizings, whatever the adapter.
const SHAPES: &[(usize, usize)] = &[
    (5 * 9 * 13, 7),
    (35, 3),
    (3, 13),
    (1000, 1),
    (2 * 3 * 3, 33),
    (5 * 15 * 15, 33),
];

/// Activations with per-channel offsets `offset + U(-1, 1) * 2` and per-channel scales in
/// [0.25, 2].
fn activations(r: &mut impl Rng, rows: usize, c: usize, offset: f32) -> Vec<f32> {
    let scales: Vec<f32> = (0..c).map(|_| r.random_range(0.25..2.0)).collect();
    let shifts = uniform(r, c, 2.0);
    let u = uniform(r, rows * c, 1.0);
    (0..rows * c)
        .map(|i| offset + shifts[i % c] + scales[i % c] * u[i])
        .collect()
}

fn poisoned(g: &Gpu, label: &str, shape: &[usize]) -> finegrain::Tensor {
    let t = g.zeros(label, shape).unwrap();
    g.fill(&t, f32::NAN).unwrap();
    t
}

const SIZINGS: [BnSizing; 2] = [BnSizing::Gpu, BnSizing::Cpu];

/// The activation types every case runs with: f32, and f16 (mixed precision: statistics,
/// parameters and sums stay f32) where the adapter has shader-f16.
fn acts() -> Vec<DType> {
    match gpu() {
        Some(g) if g.features.shader_f16 => vec![DType::F32, DType::F16],
        _ => vec![DType::F32],
    }
}

/// `v` as an activation of `act` holds it: rounded to f16 for f16 (the twins then run on
/// the rounded values).
fn stored(v: Vec<f32>, act: DType) -> Vec<f32> {
    match act {
        DType::F16 => round_f16(&v),
        _ => v,
    }
}

/// A tensor of `act` holding `v` (already [`stored`]).
fn act_tensor(g: &Gpu, label: &str, shape: &[usize], v: &[f32], act: DType) -> finegrain::Tensor {
    let t = g.zeros_of(label, shape, act).unwrap();
    match act {
        DType::F16 => g.upload_f16(&t, v).unwrap(),
        _ => g.upload(&t, v).unwrap(),
    }
    t
}

fn poisoned_act(g: &Gpu, label: &str, shape: &[usize], act: DType) -> finegrain::Tensor {
    let t = g.zeros_of(label, shape, act).unwrap();
    g.fill(&t, f32::NAN).unwrap();
    t
}

/// (atol, rtol) of an activation result that f32 computes within (atol, rtol) of the twin,
/// then stores as `act` (f16: one rounding more).
fn act_tol(atol: f64, rtol: f64, act: DType) -> (f64, f64) {
    match act {
        DType::F16 => (f16_rounded(atol).0, rtol + F16_U),
        _ => (atol, rtol),
    }
}

/// Each sizing without and with the fused ReLU.
fn forward_variants() -> impl Iterator<Item = (BnSizing, bool)> {
    SIZINGS.into_iter().flat_map(|z| [(z, false), (z, true)])
}

/// The twin's y, through the twin ReLU when the GPU fuses one.
fn activated(y: Vec<f64>, relu: bool) -> Vec<f64> {
    if relu {
        finegrain::reference::elementwise::relu(&y)
    } else {
        y
    }
}

fn forward_train_case(rows: usize, c: usize, offset: f32, steps: usize) {
    for (sizing, relu) in forward_variants() {
        for act in acts() {
            forward_train_sized(rows, c, offset, steps, (sizing, relu), act);
        }
    }
}

fn forward_train_sized(
    rows: usize,
    c: usize,
    offset: f32,
    steps: usize,
    (sizing, relu): (BnSizing, bool),
    act: DType,
) {
    let Some(g) = gpu() else { return };
    let name = format!(
        "batchnorm_forward_train {sizing:?} relu={relu} {act:?} rows={rows} c={c} offset={offset}"
    );
    let mut r = rng(&name);
    let o = BatchNormOptions {
        eps: 1e-5,
        momentum: 0.1,
        relu,
        sizing,
    };
    let gamma = uniform(&mut r, c, 1.5);
    let beta = uniform(&mut r, c, 1.0);
    let rm0 = uniform(&mut r, c, 1.0);
    let rv0: Vec<f32> = (0..c).map(|_| r.random_range(0.5..2.0)).collect();
    let tx = g.zeros_of("x", &[rows, c], act).unwrap();
    let tg = g.tensor("gamma", &[c], &gamma).unwrap();
    let tb = g.tensor("beta", &[c], &beta).unwrap();
    let trm = g.tensor("running_mean", &[c], &rm0).unwrap();
    let trv = g.tensor("running_var", &[c], &rv0).unwrap();
    let tsm = poisoned(g, "save_mean", &[c]);
    let tsi = poisoned(g, "save_invstd", &[c]);
    let ty = poisoned_act(g, "y", &[rows, c], act);
    let t = BatchNormTrain {
        x: &tx,
        gamma: &tg,
        beta: &tb,
        running_mean: &trm,
        running_var: &trv,
        save_mean: &tsm,
        save_invstd: &tsi,
        y: &ty,
        partials: None,
    };
    let ds = batchnorm_forward_train(g, &t, &o).unwrap();
    let refs: Vec<_> = ds.iter().collect();
    let (mut rm, mut rv) = (f64s(&rm0), f64s(&rv0));
    for step in 0..steps {
        // A fresh batch each step; the running statistics accumulate.
        let x = stored(activations(&mut r, rows, c, offset), act);
        match act {
            DType::F16 => g.upload_f16(&tx, &x).unwrap(),
            _ => g.upload(&tx, &x).unwrap(),
        }
        g.run(&refs).unwrap();
        let want = twin::batchnorm_forward_train(
            rows,
            c,
            1e-5,
            0.1,
            &f64s(&x),
            &f64s(&gamma),
            &f64s(&beta),
            &mut rm,
            &mut rv,
        );
        let tag = format!("{name} step {step}");
        // Mean: a few ulps of the largest |x|. y: that error times gamma * invstd.
        let ulp = (offset.abs() + 4.0) as f64 * f32::EPSILON as f64;
        assert_close(
            &format!("{tag} save_mean"),
            &g.download(&tsm).unwrap(),
            &want.mean,
            4.0 * ulp,
            1e-6,
        );
        assert_close(
            &format!("{tag} save_invstd"),
            &g.download(&tsi).unwrap(),
            &want.invstd,
            0.0,
            2e-5,
        );
        let ymax = want.invstd.iter().cloned().fold(0.0, f64::max) * 1.5;
        let (atol, rtol) = act_tol(2.0 * ulp * ymax + 1e-6, 1e-5, act);
        assert_close(
            &format!("{tag} y"),
            &g.download(&ty).unwrap(),
            &activated(want.y, relu),
            atol,
            rtol,
        );
        assert_close(
            &format!("{tag} running_mean"),
            &g.download(&trm).unwrap(),
            &rm,
            4.0 * ulp,
            1e-6,
        );
        assert_close(
            &format!("{tag} running_var"),
            &g.download(&trv).unwrap(),
            &rv,
            1e-6,
            2e-5,
        );
    }
}

#[test]
fn batchnorm_forward_train_odd_shapes() {
    for &(rows, c) in SHAPES {
        forward_train_case(rows, c, 0.0, 1);
    }
}

/// Values around 100 +- 1: E[x^2] - E[x]^2 in f32 would lose every digit of the variance.
#[test]
fn batchnorm_forward_train_large_mean() {
    forward_train_case(5 * 9 * 13, 7, 100.0, 1);
    forward_train_case(5 * 15 * 15, 33, -100.0, 1);
}

/// The running statistics follow r = (1 - m) r + m * stat over several steps.
#[test]
fn batchnorm_forward_train_running_stats_over_steps() {
    forward_train_case(245, 13, 0.5, 3);
}

#[test]
fn batchnorm_forward_eval_odd_shapes() {
    let Some(g) = gpu() else { return };
    for (&(rows, c), (sizing, relu), act) in SHAPES.iter().flat_map(|s| {
        forward_variants().flat_map(move |v| acts().into_iter().map(move |a| (s, v, a)))
    }) {
        let name =
            format!("batchnorm_forward_eval {sizing:?} relu={relu} {act:?} rows={rows} c={c}");
        let mut r = rng(&name);
        let o = BatchNormOptions {
            eps: 1e-5,
            momentum: 0.1,
            relu,
            sizing,
        };
        let x = stored(activations(&mut r, rows, c, 0.0), act);
        let gamma = uniform(&mut r, c, 1.5);
        let beta = uniform(&mut r, c, 1.0);
        let rm = uniform(&mut r, c, 1.0);
        let rv: Vec<f32> = (0..c).map(|_| r.random_range(0.1..3.0)).collect();
        let tx = act_tensor(g, "x", &[rows, c], &x, act);
        let tg = g.tensor("gamma", &[c], &gamma).unwrap();
        let tb = g.tensor("beta", &[c], &beta).unwrap();
        let trm = g.tensor("running_mean", &[c], &rm).unwrap();
        let trv = g.tensor("running_var", &[c], &rv).unwrap();
        let ty = poisoned_act(g, "y", &[rows, c], act);
        let t = BatchNormEval {
            x: &tx,
            gamma: &tg,
            beta: &tb,
            running_mean: &trm,
            running_var: &trv,
            y: &ty,
        };
        let d = batchnorm_forward_eval(g, &t, &o).unwrap();
        g.run(&[&d]).unwrap();
        let want = twin::batchnorm_forward_eval(
            rows,
            c,
            1e-5,
            &f64s(&x),
            &f64s(&gamma),
            &f64s(&beta),
            &f64s(&rm),
            &f64s(&rv),
        );
        let want = activated(want, relu);
        let (atol, rtol) = act_tol(2e-6, 2e-6, act);
        assert_close(&name, &g.download(&ty).unwrap(), &want, atol, rtol);
        // The running statistics are only read.
        assert_eq!(g.download(&trv).unwrap(), rv, "{name}: running_var changed");
    }
}

fn backward_case(rows: usize, c: usize, offset: f32) {
    for sizing in SIZINGS {
        for act in acts() {
            backward_sized(rows, c, offset, sizing, act);
        }
    }
}

fn backward_sized(rows: usize, c: usize, offset: f32, sizing: BnSizing, act: DType) {
    let Some(g) = gpu() else { return };
    let name = format!("batchnorm_backward {sizing:?} {act:?} rows={rows} c={c} offset={offset}");
    let mut r = rng(&name);
    let o = BatchNormOptions {
        eps: 1e-5,
        momentum: 0.1,
        relu: false,
        sizing,
    };
    let x = stored(activations(&mut r, rows, c, offset), act);
    let dy = stored(uniform(&mut r, rows * c, 1.0), act);
    let gamma = uniform(&mut r, c, 1.5);
    // The saved statistics as the forward leaves them (rounded to f32), so this checks the
    // backward alone.
    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
    let fwd = twin::batchnorm_forward_train(
        rows,
        c,
        1e-5,
        0.1,
        &f64s(&x),
        &vec![1.0; c],
        &vec![0.0; c],
        &mut rm,
        &mut rv,
    );
    let mean: Vec<f32> = fwd.mean.iter().map(|&v| v as f32).collect();
    let invstd: Vec<f32> = fwd.invstd.iter().map(|&v| v as f32).collect();
    let tx = act_tensor(g, "x", &[rows, c], &x, act);
    let tdy = act_tensor(g, "dy", &[rows, c], &dy, act);
    let tg = g.tensor("gamma", &[c], &gamma).unwrap();
    let tsm = g.tensor("save_mean", &[c], &mean).unwrap();
    let tsi = g.tensor("save_invstd", &[c], &invstd).unwrap();
    let tdx = poisoned_act(g, "dx", &[rows, c], act);
    let tdg = poisoned(g, "dgamma", &[c]);
    let tdb = poisoned(g, "dbeta", &[c]);
    let t = BatchNormBackward {
        x: &tx,
        dy: &tdy,
        gamma: &tg,
        save_mean: &tsm,
        save_invstd: &tsi,
        dx: &tdx,
        dgamma: &tdg,
        dbeta: &tdb,
        partials: None,
        accumulate: false,
    };
    let ds = batchnorm_backward(g, &t, &o).unwrap();
    g.run(&ds.iter().collect::<Vec<_>>()).unwrap();
    let (dx, dgamma, dbeta) = twin::batchnorm_backward(
        rows,
        c,
        &f64s(&x),
        &f64s(&dy),
        &f64s(&gamma),
        &f64s(&mean),
        &f64s(&invstd),
    );
    // Sums of `rows` terms of size <= ~2 (dy * xhat), f32: sqrt(rows)-ish growth, with margin.
    let sum_tol = 4e-7 * rows as f64 + 1e-6;
    // xhat carries |x| * eps * invstd of rounding from x - mean.
    let ulp = (offset.abs() + 4.0) as f64 * f32::EPSILON as f64;
    let imax = fwd.invstd.iter().cloned().fold(0.0, f64::max);
    assert_close(
        &format!("{name} dbeta"),
        &g.download(&tdb).unwrap(),
        &dbeta,
        sum_tol,
        1e-5,
    );
    assert_close(
        &format!("{name} dgamma"),
        &g.download(&tdg).unwrap(),
        &dgamma,
        sum_tol + rows as f64 * ulp * imax,
        1e-5,
    );
    let dx_tol = 1.5 * imax * (2.0 * sum_tol / rows as f64 + 4.0 * ulp * imax) + 1e-6;
    let (atol, rtol) = act_tol(dx_tol, 1e-5, act);
    let dx1 = g.download(&tdx).unwrap();
    assert_close(&format!("{name} dx"), &dx1, &dx, atol, rtol);

    // Gradient accumulation: the same batch launched again with `accumulate` adds its
    // sums into dgamma, dbeta (holding earlier micro-batches' sums: random here), exactly
    // one f32 addition each, and writes the same dx bit for bit (the dx pass reads this
    // batch's sums, not the accumulated gradients).
    let (dg1, db1) = (g.download(&tdg).unwrap(), g.download(&tdb).unwrap());
    let (held_g, held_b) = (uniform(&mut r, c, 3.0), uniform(&mut r, c, 3.0));
    g.upload(&tdg, &held_g).unwrap();
    g.upload(&tdb, &held_b).unwrap();
    let tdx2 = poisoned_act(g, "dx2", &[rows, c], act);
    let t = BatchNormBackward {
        dx: &tdx2,
        accumulate: true,
        ..t
    };
    let ds = batchnorm_backward(g, &t, &o).unwrap();
    g.run(&ds.iter().collect::<Vec<_>>()).unwrap();
    let sum = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<f32>>();
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert_eq!(
        bits(g.download(&tdg).unwrap()),
        bits(sum(&held_g, &dg1)),
        "{name}: accumulated dgamma"
    );
    assert_eq!(
        bits(g.download(&tdb).unwrap()),
        bits(sum(&held_b, &db1)),
        "{name}: accumulated dbeta"
    );
    assert_eq!(
        bits(g.download(&tdx2).unwrap()),
        bits(dx1),
        "{name}: dx of an accumulating launch"
    );
}

#[test]
fn batchnorm_backward_odd_shapes() {
    for &(rows, c) in SHAPES {
        backward_case(rows, c, 0.0);
    }
}

#[test]
fn batchnorm_backward_large_mean() {
    backward_case(5 * 9 * 13, 7, 100.0);
}

#[test]
fn batchnorm_rejects_wrong_shapes() {
    let Some(g) = gpu() else { return };
    let o = BatchNormOptions::for_gpu(g);
    let x = g.zeros("x", &[10, 3]).unwrap();
    let c = g.zeros("c", &[3]).unwrap();
    let c4 = g.zeros("gamma4", &[4]).unwrap();
    let y = g.zeros("y", &[10, 4]).unwrap();
    let train = |x, gamma, y| BatchNormTrain {
        x,
        gamma,
        beta: &c,
        running_mean: &c,
        running_var: &c,
        save_mean: &c,
        save_invstd: &c,
        y,
        partials: None,
    };
    let e = batchnorm_forward_train(g, &train(&x, &c4, &x), &o)
        .err()
        .unwrap();
    assert!(e.to_string().contains("gamma4"), "{e}");
    let eval = BatchNormEval {
        x: &x,
        gamma: &c,
        beta: &c,
        running_mean: &c,
        running_var: &c,
        y: &y,
    };
    assert!(batchnorm_forward_eval(g, &eval, &o).is_err());
    // One row (x = (3)): no batch statistics.
    assert!(batchnorm_forward_train(g, &train(&c, &c, &c), &o).is_err());
}

/// A layer-sized channel count with hundreds of row chunks (20000 rows, 64 channels:
/// 625 chunks of 32 rows with the GPU sizing), so every finalize lane merges many partials;
/// the CPU sizing cuts it into 16 chunks of 1250 rows and 313 stripes of 64 rows.
#[test]
fn batchnorm_many_chunks() {
    let s = BatchNormShape {
        rows: 20_000,
        channels: 64,
    };
    assert_eq!(s.chunking(BnSizing::Gpu), (32, 625));
    assert_eq!(s.chunking(BnSizing::Cpu), (1250, 16));
    assert_eq!(
        (s.stripes(BnSizing::Gpu), s.stripes(BnSizing::Cpu)),
        (20_000, 313)
    );
    forward_train_case(20_000, 64, 3.0, 1);
    backward_case(20_000, 64, 3.0);
}

/// One training forward and backward, twice: with each launch's own partials and dx in a
/// tensor of its own, then with one shared partials buffer (larger than needed, poisoned)
/// for both launches and dx written over x. Every output must be the same, bit for bit:
/// this is how a training network lays them out (memory plan), and its results may not
/// change for it.
fn shared_and_inplace_case(rows: usize, c: usize, sizing: BnSizing, act: DType) {
    let Some(g) = gpu() else { return };
    let name =
        format!("batchnorm shared partials + in-place dx {sizing:?} {act:?} rows={rows} c={c}");
    let mut r = rng(&name);
    let o = BatchNormOptions {
        eps: 1e-5,
        momentum: 0.1,
        relu: false,
        sizing,
    };
    let x = stored(activations(&mut r, rows, c, 0.5), act);
    let dy = stored(uniform(&mut r, rows * c, 1.0), act);
    let gamma = uniform(&mut r, c, 1.5);
    let beta = uniform(&mut r, c, 1.0);
    let need = BatchNormShape::of("test", &g.zeros("probe", &[rows, c]).unwrap(), true)
        .unwrap()
        .partials_len(sizing);
    let shared = poisoned(g, "shared_partials", &[need + 37]);
    // (y, save_mean, save_invstd, running_mean, dx, dgamma, dbeta) of one run.
    let run = |partials: Option<&finegrain::gpu::Tensor>, inplace: bool| {
        let tx = act_tensor(g, "x", &[rows, c], &x, act);
        let tg = g.tensor("gamma", &[c], &gamma).unwrap();
        let tb = g.tensor("beta", &[c], &beta).unwrap();
        let trm = g.tensor("running_mean", &[c], &vec![0.0; c]).unwrap();
        let trv = g.tensor("running_var", &[c], &vec![1.0; c]).unwrap();
        let tsm = poisoned(g, "save_mean", &[c]);
        let tsi = poisoned(g, "save_invstd", &[c]);
        let ty = poisoned_act(g, "y", &[rows, c], act);
        let tdy = act_tensor(g, "dy", &[rows, c], &dy, act);
        let own_dx = poisoned_act(g, "dx", &[rows, c], act);
        let tdx = if inplace { &tx } else { &own_dx };
        let tdg = poisoned(g, "dgamma", &[c]);
        let tdb = poisoned(g, "dbeta", &[c]);
        let fwd = BatchNormTrain {
            x: &tx,
            gamma: &tg,
            beta: &tb,
            running_mean: &trm,
            running_var: &trv,
            save_mean: &tsm,
            save_invstd: &tsi,
            y: &ty,
            partials,
        };
        let bwd = BatchNormBackward {
            x: &tx,
            dy: &tdy,
            gamma: &tg,
            save_mean: &tsm,
            save_invstd: &tsi,
            dx: tdx,
            dgamma: &tdg,
            dbeta: &tdb,
            partials,
            accumulate: false,
        };
        let mut ds = batchnorm_forward_train(g, &fwd, &o).unwrap();
        ds.extend(batchnorm_backward(g, &bwd, &o).unwrap());
        g.run(&ds.iter().collect::<Vec<_>>()).unwrap();
        [&ty, &tsm, &tsi, &trm, tdx, &tdg, &tdb].map(|t| {
            g.download(t)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        })
    };
    let own = run(None, false);
    let shared = run(Some(&shared), true);
    let names = [
        "y",
        "save_mean",
        "save_invstd",
        "running_mean",
        "dx",
        "dgamma",
        "dbeta",
    ];
    for ((a, b), what) in own.iter().zip(&shared).zip(names) {
        assert!(
            a.iter().all(|v| !f32::from_bits(*v).is_nan()),
            "{name}: {what} has NaN"
        );
        assert_eq!(a, b, "{name}: {what} differs between the two layouts");
    }
}

#[test]
fn batchnorm_shared_partials_and_inplace_dx_are_bit_identical() {
    for sizing in [BnSizing::Gpu, BnSizing::Cpu] {
        for &(rows, c) in &[(5 * 9 * 13, 7), (3, 13), (5 * 15 * 15, 33)] {
            for act in acts() {
                shared_and_inplace_case(rows, c, sizing, act);
            }
        }
    }
}

/// A shared partials buffer smaller than a launch needs is refused, naming it.
#[test]
fn batchnorm_rejects_small_shared_partials() {
    let Some(g) = gpu() else { return };
    let o = BatchNormOptions::for_gpu(g);
    let x = g.zeros("x", &[64, 8]).unwrap();
    let c = g.zeros("c", &[8]).unwrap();
    let small = g.zeros("tiny_partials", &[3]).unwrap();
    let t = BatchNormTrain {
        x: &x,
        gamma: &c,
        beta: &c,
        running_mean: &c,
        running_var: &c,
        save_mean: &c,
        save_invstd: &c,
        y: &x,
        partials: Some(&small),
    };
    let e = batchnorm_forward_train(g, &t, &o)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tiny_partials") && e.contains("partials"), "{e}");
}
