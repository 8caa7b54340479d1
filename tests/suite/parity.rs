//! Parity with PyTorch: fixtures written by `scripts/torch_parity.py` (committed, so CI needs
//! no PyTorch) hold a small ResNet's weights as a torchvision state dict, an input batch, and
//! PyTorch's evaluation scores and one training forward and backward (class maps,
//! diversification masks, scores, GCE loss, every parameter gradient, batch-norm running
//! statistics after the update). The network is built here from the same configuration,
//! loaded through `load_torchvision`, and run on the GPU; everything is compared, once with
//! the convolution kernels the adapter picks and once with the tiled (GPU) kernels.
//!
//! Tolerance: both sides compute in f32 with different summation orders, so an element
//! passes when `|got - want| <= 1e-4 * max|want| + 1e-3 * |want|`, the first term scaled by
//! the tensor's largest magnitude (see the comment in `close`). Masks must match exactly;
//! the script draws inputs whose map peaks and GCE top-k boundaries are clearly separated,
//! so no rounding difference can flip them.

use finegrain::checkpoint::{load_torchvision, to_torch};
use finegrain::gpu::{Gpu, GpuOptions, KernelFamily};
use finegrain::inference::Predictor;
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::testing::gpu;
use finegrain::train::{Schedule, TrainConfig, Trainer};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::PathBuf;

/// `FINEGRAIN_FIXTURES` (a folder) when set, for a test binary run away from its source
/// tree (scripts/device/run.sh), else this crate's tests/fixtures.
fn fixture(name: &str) -> PathBuf {
    std::env::var_os("FINEGRAIN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
        .join(format!("parity-{name}.safetensors"))
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let v = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("fixture tensor `{name}`: {e}"));
    assert_eq!(v.dtype(), Dtype::F32, "`{name}`");
    let data = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (v.shape().to_vec(), data)
}

/// NCHW -> NHWC.
fn nhwc(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut out = vec![0.0; v.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = v[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    out
}

/// Compare, returning the worst error relative to the tensor's largest magnitude.
/// `1e-4 * max|want|` covers f32 rounding accumulated over sums of a few thousand terms
/// and through batch-norm backward (a difference of near-equal sums); `1e-3 * |want|`
/// covers large elements.
fn close(name: &str, got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "`{name}`: element count");
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    assert!(scale > 0.0, "`{name}` is all zeros in the fixture");
    let mut worst = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let err = (g - w).abs();
        assert!(
            err <= 1e-4 * scale + 1e-3 * w.abs(),
            "`{name}`[{i}]: finegrain {g:e} vs PyTorch {w:e} (tensor max {scale:e})"
        );
        if !(g.is_finite()) {
            panic!("`{name}`[{i}] is {g}");
        }
        if err / scale > worst.0 {
            worst = (err / scale, i);
        }
    }
    worst.0
}

fn check_case(g: &Gpu, case: &str) {
    let path = fixture(case);
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: HashMap<String, String> = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let model: ModelConfig = serde_json::from_str(&meta["finegrain.model"]).unwrap();
    let method: serde_json::Value = serde_json::from_str(&meta["parity.method"]).unwrap();
    let num = |k: &str| method[k].as_f64().unwrap();
    assert_eq!(method["loss"], "gce");
    let batch = num("batch") as usize;
    let cfg = TrainConfig {
        epochs: 1,
        batch,
        lr: 1e-30, // the SGD step leaves the weights as they are
        momentum: 0.0,
        weight_decay: 0.0,
        schedule: Schedule::Constant,
        warmup_epochs: 0.0,
        loss: LossKind::Gce { k: num("k") as u32 },
        ce_warmup_epochs: 0,
        diversify: true,
        p_peak: num("p_peak") as f32,
        p_patch: num("p_patch") as f32,
        grid: num("grid") as u32,
        alpha: num("alpha") as f32,
        seed: num("seed") as u64,
        precision: finegrain::Precision::F32,
        accumulate: 1,
    };
    let mut t = Trainer::new(g, &model, &cfg, 1).unwrap();
    assert!(t.notes().is_empty(), "{:?}", t.notes());
    let split_k = t
        .net()
        .train_main
        .iter()
        .filter(|d| d.name.ends_with("conv2d_sum_partials"))
        .count();
    if g.kernels() == KernelFamily::Tiled {
        assert!(split_k > 0, "no layer took the split-K weight gradient");
    }

    // The torchvision state dict (head as `fc`) through the user-facing loader; the
    // fixture's other tensors are reported as unused.
    let rep = load_torchvision(g, t.net(), &path).unwrap();
    assert!(rep.head_from_fc, "head not loaded from fc");
    for n in &rep.ignored {
        assert!(
            n == "input" || n == "labels" || n.starts_with("expected.") || n.starts_with("grad."),
            "unexpected unused tensor `{n}`"
        );
    }

    let (xshape, x) = f32s(&st, "input");
    assert_eq!(xshape[0], batch);
    let images = nhwc(&xshape, &x);
    let lv = st.tensor("labels").unwrap();
    assert_eq!(lv.dtype(), Dtype::I32);
    let labels: Vec<u32> = lv
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect();
    let mut report = Vec::new();

    // Evaluation mode: running statistics, plain average of the class maps.
    let scores = t.eval_scores(g, &images, batch).unwrap();
    let (_, want) = f32s(&st, "expected.eval_scores");
    report.push((
        "eval scores".to_string(),
        close("eval scores", &scores, &want),
    ));
    // The inference-only network (shared activation buffers) gives the same scores.
    let p = Predictor::new(g, &model, batch).unwrap();
    load_torchvision(g, &p.net, &path).unwrap();
    assert_eq!(
        p.scores(g, &images, batch).unwrap(),
        scores,
        "inference network differs from the training network"
    );

    // One training iteration at the fixture's step counter (it drives the masks).
    t.set_next_step(num("step") as u64);
    t.step(g, &images, &labels).unwrap();
    let stats = t.drain(g).unwrap();
    let (_, want_loss) = f32s(&st, "expected.loss");
    let loss = stats.last().unwrap().loss;
    report.push(("loss".into(), close("loss", &[loss], &want_loss)));

    let net = t.net();
    let (mshape, want_maps) = f32s(&st, "expected.maps");
    assert_eq!(
        (mshape[2], mshape[3]),
        net.map_size,
        "class map size differs from PyTorch's"
    );
    let maps = g.download(&net.maps).unwrap();
    report.push((
        "class maps".into(),
        close("class maps", &maps, &nhwc(&mshape, &want_maps)),
    ));
    let (_, want_mask) = f32s(&st, "expected.mask");
    let want_mask = nhwc(&mshape, &want_mask);
    let mask = g.download_u32(&net.mask).unwrap();
    let differ = mask
        .iter()
        .zip(&want_mask)
        .filter(|(&m, &w)| m as f32 != w)
        .count();
    assert_eq!(differ, 0, "{differ} mask elements differ from PyTorch's");
    assert!(mask.contains(&1) && mask.contains(&0));
    let (_, want_scores) = f32s(&st, "expected.scores");
    let scores = g.download(&net.scores).unwrap();
    report.push(("scores".into(), close("scores", &scores, &want_scores)));
    let (_, want_dmaps) = f32s(&st, "expected.maps_grad");
    let dmaps = g.download(&net.dmaps).unwrap();
    report.push((
        "class-map gradient".into(),
        close("class-map gradient", &dmaps, &nhwc(&mshape, &want_dmaps)),
    ));

    // Every parameter gradient, in PyTorch's layout.
    for p in &net.params {
        let (shape, got) = to_torch(p.layout, &g.download(&p.grad).unwrap());
        let (wshape, want) = f32s(&st, &format!("grad.{}", p.name));
        assert_eq!(shape, wshape, "`grad.{}` shape", p.name);
        let name = format!("grad.{}", p.name);
        report.push((name.clone(), close(&name, &got, &want)));
    }
    // Batch-norm running statistics after the momentum update (unbiased variance).
    for s in &net.state {
        let name = format!("expected.{}", s.name);
        let (_, want) = f32s(&st, &name);
        report.push((
            s.name.clone(),
            close(&s.name, &g.download(&s.value).unwrap(), &want),
        ));
    }
    let worst = report
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
        .clone();
    eprintln!(
        "parity-{case} ({:?} kernels, {split_k} split-K layers): {} tensors match PyTorch {}; worst error / tensor max {:.1e} in {}",
        g.kernels(),
        report.len(),
        meta["parity.torch"],
        worst.1,
        worst.0
    );
}

/// The default adapter with the kernels it picks by itself, then the same adapter forced to
/// the tiled GPU kernels (with the split-K weight gradient), so a CPU adapter in CI checks the
/// path real GPUs take too.
fn check_both(case: &str) {
    let Some(g) = gpu() else { return };
    check_case(g, case);
    let tiled = Gpu::new(&GpuOptions {
        kernels: Some(KernelFamily::Tiled),
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    assert_eq!(tiled.kernels(), KernelFamily::Tiled);
    check_case(&tiled, case);
}

#[test]
fn basic_blocks_match_pytorch() {
    check_both("basic");
}

#[test]
fn bottleneck_blocks_match_pytorch() {
    check_both("bottleneck");
}
