use finegrain::kernels::elementwise::{add_inplace, add_relu_inplace, relu_backward_inplace};
use finegrain::reference::elementwise as twin;
use finegrain::testing::{assert_close, f64s, gpu, rng, uniform};

/// Element counts: 1, odd, not multiples of 256.
const SIZES: &[usize] = &[1, 7, 5 * 9 * 13 * 3, 70_001];

fn exact(name: &str, got: &[f32], want: &[f64]) {
    // ReLU and its mask are exact; an add rounds once.
    assert_close(name, got, want, 0.0, f32::EPSILON as f64);
}

#[test]
fn relu_backward_inplace_matches_twin() {
    let Some(g) = gpu() else { return };
    for &n in SIZES {
        let mut r = rng(&format!("relu_backward n={n}"));
        // y is a ReLU output: about half exact zeros.
        let y: Vec<f32> = uniform(&mut r, n, 1.0).iter().map(|v| v.max(0.0)).collect();
        let dy = uniform(&mut r, n, 1.0);
        let want = twin::relu_backward(&f64s(&y), &f64s(&dy));
        let ty = g.tensor("y", &[n], &y).unwrap();
        let tdy = g.tensor("dy", &[n], &dy).unwrap();
        let d = relu_backward_inplace(g, &ty, &tdy).unwrap();
        g.run(&[&d]).unwrap();
        exact(
            &format!("relu_backward_inplace n={n}"),
            &g.download(&tdy).unwrap(),
            &want,
        );
    }
}

#[test]
fn add_inplace_and_add_relu_inplace() {
    let Some(g) = gpu() else { return };
    for &n in SIZES {
        let mut r = rng(&format!("add_inplace n={n}"));
        let y = uniform(&mut r, n, 1.0);
        let x = uniform(&mut r, n, 1.0);
        let ty = g.tensor("y", &[n], &y).unwrap();
        let tx = g.tensor("x", &[n], &x).unwrap();
        let d = add_inplace(g, &ty, &tx).unwrap();
        g.run(&[&d]).unwrap();
        exact(
            &format!("add_inplace n={n}"),
            &g.download(&ty).unwrap(),
            &twin::add(&f64s(&y), &f64s(&x)),
        );
        g.upload(&ty, &y).unwrap();
        let d = add_relu_inplace(g, &ty, &tx).unwrap();
        g.run(&[&d]).unwrap();
        exact(
            &format!("add_relu_inplace n={n}"),
            &g.download(&ty).unwrap(),
            &twin::add_relu(&f64s(&y), &f64s(&x)),
        );
    }
}

#[test]
fn elementwise_rejects_mismatched_sizes() {
    let Some(g) = gpu() else { return };
    let a = g.zeros("a", &[10]).unwrap();
    let b = g.zeros("b_short", &[9]).unwrap();
    let e = add_inplace(g, &a, &b).err().unwrap();
    assert!(e.to_string().contains("b_short"), "{e}");
    assert!(relu_backward_inplace(g, &b, &a).is_err());
}
