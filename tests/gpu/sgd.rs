use finegrain::kernels::sgd::{sgd_step, SgdOptions, SgdStep};
use finegrain::reference::sgd as twin;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};

/// Several steps with changing hyper-parameters (as a schedule would write them), with and
/// without weight decay, on sizes that are not multiples of 256.
#[test]
fn sgd_step_with_and_without_decay() {
    let Some(g) = gpu() else { return };
    for &n in &[1usize, 300, 4097] {
        for decay in [true, false] {
            let name = format!("sgd_step n={n} decay={decay}");
            let mut r = rng(&name);
            let p0 = uniform(&mut r, n, 1.0);
            let tp = g.tensor("param", &[n], &p0).unwrap();
            let tv = g.zeros("velocity", &[n]).unwrap();
            let tg = g.zeros("grad", &[n]).unwrap();
            let th = g.zeros("hyper", &[4]).unwrap();
            let d = sgd_step(
                g,
                &SgdStep {
                    param: &tp,
                    grad: &tg,
                    velocity: &tv,
                    hyper: &th,
                    amp: None,
                },
                &SgdOptions { apply_decay: decay },
            )
            .unwrap();
            let (mut p, mut v) = (f64s(&p0), vec![0.0; n]);
            for step in 0..4 {
                let grad = uniform(&mut r, n, 2.0);
                let hyper = [
                    0.1 / (1 + step) as f32,
                    0.9,
                    5e-2,
                    [1.0, 0.5, 0.25, 2.0][step],
                ];
                g.upload(&tg, &grad).unwrap();
                g.upload(&th, &hyper).unwrap();
                g.run(&[&d]).unwrap();
                twin::sgd_step(&mut p, &f64s(&grad), &mut v, hyper.map(|h| h as f64), decay);
                // A few f32 roundings per step, compounding through the momentum buffer.
                assert_close(
                    &format!("{name} step {step} velocity"),
                    &g.download(&tv).unwrap(),
                    &v,
                    2e-6,
                    1e-5,
                );
                assert_close(
                    &format!("{name} step {step} param"),
                    &g.download(&tp).unwrap(),
                    &p,
                    2e-6,
                    1e-5,
                );
                assert_eq!(g.download(&tg).unwrap(), grad, "{name}: grad changed");
            }
        }
    }
}

#[test]
fn sgd_step_rejects_mismatched_tensors() {
    let Some(g) = gpu() else { return };
    let p = g.zeros("param", &[10]).unwrap();
    let v = g.zeros("velocity_short", &[9]).unwrap();
    let h = g.zeros("hyper", &[4]).unwrap();
    let e = sgd_step(
        g,
        &SgdStep {
            param: &p,
            grad: &p,
            velocity: &v,
            hyper: &h,
            amp: None,
        },
        &SgdOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("velocity_short"), "{e}");
    let h5 = g.zeros("hyper5", &[5]).unwrap();
    assert!(sgd_step(
        g,
        &SgdStep {
            param: &p,
            grad: &p,
            velocity: &p,
            hyper: &h5,
            amp: None,
        },
        &SgdOptions::default()
    )
    .is_err());
}
