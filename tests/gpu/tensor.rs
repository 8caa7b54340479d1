//! Tensor transfers: batched readback and views.

use finegrain::testing::{gpu, rng, uniform};

/// `download_many` returns what one `download` per tensor returns, for tensors of several
/// sizes including an empty one, and views read only their own shape.
#[test]
fn download_many_matches_single_downloads() {
    let Some(g) = gpu() else { return };
    let mut r = rng("download_many");
    let sizes = [5usize, 0, 1000, 1, 77];
    let data: Vec<Vec<f32>> = sizes.iter().map(|&n| uniform(&mut r, n, 1.0)).collect();
    let ts: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(i, d)| g.tensor(&format!("t{i}"), &[d.len()], d).unwrap())
        .collect();
    let refs: Vec<_> = ts.iter().collect();
    let many = g.download_many(&refs).unwrap();
    assert_eq!(many.len(), ts.len());
    for ((m, t), d) in many.iter().zip(&ts).zip(&data) {
        assert_eq!(m, d, "{}", t.label);
        assert_eq!(m, &g.download(t).unwrap(), "{}", t.label);
    }
    let v = ts[2].view("t2.view", &[3, 7]).unwrap();
    assert_eq!(g.download(&v).unwrap(), data[2][..21].to_vec());
    let err = ts[0].view("too_big", &[6]).err().unwrap().to_string();
    assert!(err.contains("too_big") && err.contains("t0"), "{err}");
}
