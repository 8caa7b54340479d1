use finegrain::kernels::pool::{
    maxpool_backward, maxpool_forward, MaxPoolBackward, MaxPoolForward, MaxPoolShape,
};
use finegrain::reference::pool as twin;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};
use rand::Rng;

fn mp(n: usize, h: usize, w: usize, c: usize, k: usize, stride: usize, pad: usize) -> MaxPoolShape {
    MaxPoolShape {
        n,
        h,
        w,
        c,
        k,
        stride,
        pad,
    }
}

/// 3x3 / stride 2 / pad 1 (the ResNet stem) on odd sizes, plus 2x2 / 2 / 0 and 3x3 / 1 / 1.
fn shapes() -> Vec<MaxPoolShape> {
    vec![
        mp(1, 7, 9, 3, 3, 2, 1),
        mp(5, 13, 13, 7, 3, 2, 1),
        mp(2, 8, 8, 1, 3, 2, 1),
        mp(1, 5, 6, 33, 3, 2, 1),
        mp(1, 7, 5, 13, 2, 2, 0),
        mp(2, 4, 3, 3, 3, 1, 1),
    ]
}

/// Runs forward on the GPU and checks y and idx against the twin exactly (a max is a copy,
/// and both sides compare the same f32 values in the same order). Returns idx.
fn check_forward(s: &MaxPoolShape, x: &[f32], tag: &str) -> Option<Vec<u32>> {
    let g = gpu()?;
    let tx = g.tensor("x", &s.input_shape(), x).unwrap();
    let ty = g.zeros("y", &s.output_shape()).unwrap();
    g.fill(&ty, f32::NAN).unwrap();
    let ti = g
        .tensor_u32("idx", &s.output_shape(), &vec![u32::MAX; ty.numel()])
        .unwrap();
    let d = maxpool_forward(
        g,
        &MaxPoolForward {
            x: &tx,
            y: &ty,
            idx: &ti,
        },
        s.window(),
    )
    .unwrap();
    g.run(&[&d]).unwrap();
    let (want_y, want_i) = twin::maxpool_forward(s, &f64s(x));
    assert_close(
        &format!("maxpool_forward {tag} {s:?} y"),
        &g.download(&ty).unwrap(),
        &want_y,
        0.0,
        0.0,
    );
    let got_i = g.download_u32(&ti).unwrap();
    if let Some(o) = (0..got_i.len()).find(|&o| got_i[o] != want_i[o]) {
        panic!(
            "maxpool_forward {tag} {s:?} idx[{o}]: gpu {} twin {}",
            got_i[o], want_i[o]
        );
    }
    Some(want_i)
}

#[test]
fn maxpool_forward_odd_shapes() {
    for s in shapes() {
        let mut r = rng(&format!("maxpool_forward {s:?}"));
        let x = uniform(&mut r, s.input_shape().iter().product(), 1.0);
        check_forward(&s, &x, "random");
    }
}

/// Ties: a constant input (and a negative one, where zero padding would win if it counted)
/// and values from {0, 1, 2}: both sides keep the first max in row-major window order.
#[test]
fn maxpool_forward_ties_first_max_wins() {
    for s in [mp(1, 7, 9, 3, 3, 2, 1), mp(2, 13, 13, 5, 3, 2, 1)] {
        let len = s.input_shape().iter().product();
        for v in [1.5f32, -2.0] {
            check_forward(&s, &vec![v; len], &format!("constant {v}"));
        }
        let mut r = rng(&format!("maxpool_forward ties {s:?}"));
        let x: Vec<f32> = (0..len).map(|_| r.random_range(0..3) as f32).collect();
        check_forward(&s, &x, "values in {0,1,2}");
    }
}

#[test]
fn maxpool_backward_odd_shapes() {
    let Some(g) = gpu() else { return };
    for s in shapes() {
        let mut r = rng(&format!("maxpool_backward {s:?}"));
        let len = s.input_shape().iter().product();
        // Few distinct values: many ties, so several outputs may point at one input.
        let x: Vec<f32> = (0..len).map(|_| r.random_range(0..4) as f32).collect();
        let (_, idx) = twin::maxpool_forward(&s, &f64s(&x));
        let dy = uniform(&mut r, idx.len(), 1.0);
        let tdy = g.tensor("dy", &s.output_shape(), &dy).unwrap();
        let ti = g.tensor_u32("idx", &s.output_shape(), &idx).unwrap();
        let tdx = g.zeros("dx", &s.input_shape()).unwrap();
        g.fill(&tdx, f32::NAN).unwrap();
        let d = maxpool_backward(
            g,
            &MaxPoolBackward {
                dy: &tdy,
                idx: &ti,
                dx: &tdx,
            },
            s.window(),
        )
        .unwrap();
        g.run(&[&d]).unwrap();
        let want = twin::maxpool_backward(&s, &f64s(&dy), &idx);
        // At most ceil(k / stride)^2 = 4 terms per input (9 for stride 1).
        assert_close(
            &format!("maxpool_backward {s:?}"),
            &g.download(&tdx).unwrap(),
            &want,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn maxpool_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let s = mp(1, 7, 9, 3, 3, 2, 1);
    let x = g.zeros("x", &s.input_shape()).unwrap();
    let y = g.zeros("y_wrong", &[1, 3, 4, 3]).unwrap();
    let i = g.zeros_u32("idx", &s.output_shape()).unwrap();
    assert_eq!((s.oh(), s.ow()), (4, 5));
    let e = maxpool_forward(
        g,
        &MaxPoolForward {
            x: &x,
            y: &y,
            idx: &i,
        },
        s.window(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("y_wrong"), "{e}");
    let bad = mp(1, 7, 9, 3, 3, 2, 2);
    assert!(maxpool_forward(
        g,
        &MaxPoolForward {
            x: &x,
            y: &y,
            idx: &i
        },
        bad.window()
    )
    .is_err());
}
