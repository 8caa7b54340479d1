//! End-to-end training on lavapipe: a tiny model on an image-folder dataset written to a
//! temporary directory (with a corrupt file), checkpoint, exact resume, divergence guard,
//! and no GPU allocation inside the training loop.

use finegrain::checkpoint::Checkpoint;
use finegrain::data::{open_dataset, DataOptions, Dataset, Split};
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::testing::gpu;
use finegrain::train::Event;
use finegrain::train::{NetMode, Schedule, TrainConfig, Trainer};
use finegrain::train::{OutDir, Run, RunOptions, RunSummary};
use finegrain::Error;
use finegrain::Precision;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SIZE: usize = 12;
const CLASSES: [&str; 3] = ["left", "top", "checker"];

/// Class-per-folder tree with train/ and test/, 12x12 grayscale PNGs whose class is visible
/// (bright left half, bright top half, checkerboard), plus one corrupt JPEG in train/.
fn write_dataset(root: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (split, per_class) in [("train", 12), ("test", 4)] {
        for (c, name) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::GrayImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
                    let on = match c {
                        0 => x < SIZE as u32 / 2,
                        1 => y < SIZE as u32 / 2,
                        _ => (x / 2 + y / 2) % 2 == 0,
                    };
                    let base: f32 = if on { 200.0 } else { 40.0 };
                    image::Luma([(base + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0) as u8])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::write(
        root.join("train").join("top").join("broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
}

/// Whether `g` can train in `precision`. An adapter without shader-f16 cannot train in
/// mixed precision: then building such a trainer must fail saying so (checked here), and the
/// caller's test has nothing more to run.
fn can_train(g: &finegrain::Gpu, precision: Precision) -> bool {
    if precision == Precision::F32 || g.features.shader_f16 {
        return true;
    }
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        precision,
        ..config()
    };
    let e = Trainer::new(g, &model, &cfg, 1).err().unwrap().to_string();
    assert!(e.contains("shader-f16"), "{e}");
    eprintln!(
        "NOT RUN in mixed precision: {} has no shader-f16 (refused: {e})",
        g.describe()
    );
    false
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("finegrain-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn datasets(root: &Path) -> (Arc<dyn Dataset>, Arc<dyn Dataset>) {
    let opts = DataOptions {
        channels: Some(1),
        size: Some(SIZE),
        ..DataOptions::default()
    };
    let train: Arc<dyn Dataset> = Arc::from(open_dataset(root, Split::Train, &opts).unwrap());
    let test: Arc<dyn Dataset> = Arc::from(open_dataset(root, Split::Test, &opts).unwrap());
    (train, test)
}

fn config() -> TrainConfig {
    TrainConfig {
        epochs: 3,
        batch: 4,
        lr: 0.05,
        schedule: Schedule::Cosine { min_factor: 0.0 },
        warmup_epochs: 0.5,
        loss: LossKind::Gce { k: 1 },
        ce_warmup_epochs: 1,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn opts(out: &Path, max_steps: Option<u64>) -> RunOptions {
    RunOptions {
        out_dir: out.into(),
        overwrite: false,
        max_steps,
        checkpoint_every: None,
        strict: false,
        threads: 2,
        evaluate: true,
        preprocessing: None,
        metadata: Default::default(),
        init: None,
        stop: None,
        precision: None,
        collective: None,
    }
}

/// A fresh run, or a resumed one when `resume` names a checkpoint; its notes go to `log`.
#[allow(clippy::too_many_arguments)]
fn run(
    g: &finegrain::Gpu,
    model: &ModelConfig,
    cfg: &TrainConfig,
    train: Arc<dyn Dataset>,
    test: Option<Arc<dyn Dataset>>,
    resume: Option<&Path>,
    o: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> finegrain::Result<RunSummary> {
    let r = match resume {
        Some(ck) => Run::resume(g, ck, train, test, o.clone())?,
        None => Run::new(g, model, cfg, train, test, o.clone())?,
    };
    r.run(&mut |e: &Event| {
        if let Event::Note(n) = e {
            log(n)
        }
    })
}

/// The losses of a run interrupted (`first`) and resumed (`rest`) are the straight run's,
/// step for step and bit for bit.
fn assert_resumed_exactly(straight: &RunSummary, first: &RunSummary, rest: &RunSummary) {
    let resumed: Vec<(u64, f32)> = first
        .step_losses
        .iter()
        .chain(&rest.step_losses)
        .cloned()
        .collect();
    assert_eq!(resumed.len(), straight.step_losses.len());
    for ((sa, la), (sb, lb)) in straight.step_losses.iter().zip(&resumed) {
        assert_eq!(sa, sb);
        assert_eq!(
            la.to_bits(),
            lb.to_bits(),
            "step {sa}: straight {la} vs resumed {lb}"
        );
    }
}

#[test]
fn train_checkpoint_and_resume_exactly() {
    resume_case(Precision::F32);
}

/// Mixed precision resumes bit for bit too: the f16 activations are recomputed the same
/// way, and the loss-scaling state continues from the checkpoint's progress.
#[test]
fn mixed_precision_checkpoint_and_resume_exactly() {
    resume_case(Precision::Mixed);
}

fn resume_case(precision: Precision) {
    let Some(g) = gpu() else { return };
    if !can_train(g, precision) {
        return;
    }
    let root = temp_dir(&format!("resume-{precision}"));
    write_dataset(&root.join("data"));
    let (train, test) = datasets(&root.join("data"));
    assert_eq!(train.len(), 37, "36 images + 1 corrupt file");
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        precision,
        ..config()
    };
    let mut log = |s: &str| eprintln!("{s}");

    // 2N steps straight (N = 11 crosses the epoch boundary at 9 steps per epoch and the
    // cross-entropy -> GCE switch).
    let n = 11;
    let a = run(
        g,
        &model,
        &cfg,
        train.clone(),
        Some(test.clone()),
        None,
        &opts(&root.join("a"), Some(2 * n)),
        &mut log,
    )
    .unwrap();
    assert_eq!(a.step_losses.len() as u64, 2 * n);
    assert!(a.step_losses.iter().all(|(_, l)| l.is_finite()));
    assert!(
        a.skipped.iter().any(|(f, _)| f.ends_with("broken.jpg")),
        "the corrupt file is reported: {:?}",
        a.skipped
    );
    assert!(root.join("a").join("metrics.csv").exists());
    assert!(root.join("a").join("metrics.png").exists());
    let eval = a.final_eval.as_ref().expect("evaluated");
    assert_eq!(eval.images, 12);

    // N steps, then resume from the checkpoint for N more.
    let b1 = run(
        g,
        &model,
        &cfg,
        train.clone(),
        Some(test.clone()),
        None,
        &opts(&root.join("b"), Some(n)),
        &mut log,
    )
    .unwrap();
    assert_eq!(b1.step_losses.len() as u64, n);
    let ck = root.join("b").join("last.safetensors");
    let b2 = run(
        g,
        &model,
        &cfg,
        train.clone(),
        Some(test),
        Some(&ck),
        &opts(&root.join("b"), Some(2 * n)),
        &mut log,
    )
    .unwrap();
    assert_resumed_exactly(&a, &b1, &b2);

    // The checkpoint is a valid safetensors file with the model inside, and records the
    // precision (and in mixed precision the loss-scaling state).
    let ck = Checkpoint::open(&ck).unwrap();
    assert_eq!(ck.model, model);
    assert_eq!(ck.precision(), precision);
    let amp = ck.progress().unwrap().amp;
    match precision {
        Precision::F32 => assert_eq!(amp, None),
        Precision::Mixed => {
            let s = amp.expect("mixed precision saves its loss-scaling state");
            assert_eq!(
                f32::from_bits(s[0]),
                65536.0,
                "no overflow at the initial scale"
            );
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn training_learns_the_toy_classes() {
    learn_case(Precision::F32);
}

#[test]
fn mixed_precision_training_learns_the_toy_classes() {
    learn_case(Precision::Mixed);
}

fn learn_case(precision: Precision) {
    let Some(g) = gpu() else { return };
    if !can_train(g, precision) {
        return;
    }
    let root = temp_dir(&format!("learn-{precision}"));
    write_dataset(&root.join("data"));
    let (train, test) = datasets(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        epochs: 6,
        precision,
        ..config()
    };
    let s = run(
        g,
        &model,
        &cfg,
        train,
        Some(test),
        None,
        &opts(&root.join("out"), None),
        &mut |_| {},
    )
    .unwrap();
    let first = s.epochs.first().unwrap().train_loss;
    let last = s.epochs.last().unwrap().train_loss;
    assert!(last < first, "training loss fell: {first} -> {last}");
    let fin = s.final_eval.unwrap();
    let acc = fin.top1_acc();
    assert!(acc >= 0.9, "toy classes are easy: test top-1 {acc}");
    // The saved checkpoint, evaluated on an inference-only network (what the evaluate
    // example does), gives the run's own final evaluation.
    for es in &s.epochs {
        match precision {
            Precision::F32 => assert_eq!(es.loss_scale, None),
            Precision::Mixed => assert_eq!(es.loss_scale, Some(65536.0), "epoch {}", es.epoch),
        }
        assert_eq!(es.skipped_steps, 0, "no overflow at the initial scale");
    }
    let ck = Checkpoint::open(&root.join("out/last.safetensors")).unwrap();
    assert_eq!(ck.precision(), precision);
    let p = finegrain::inference::Predictor::from_checkpoint_with_precision(g, &ck, 3, precision)
        .unwrap();
    let (_, test) = datasets(&root.join("data"));
    let (rep, skipped) =
        finegrain::train::evaluate_with(test, 3, 3, 2, false, |im, valid| p.scores(g, im, valid))
            .unwrap();
    assert!(skipped.is_empty());
    assert_eq!(rep.images, fin.images);
    assert_eq!(rep.confusion, fin.confusion);
    assert!((rep.mean_loss() - fin.mean_loss()).abs() < 1e-4);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn divergence_stops_training_and_keeps_the_last_good_checkpoint() {
    divergence_case(Precision::F32);
}

/// Loss scaling skips steps whose gradients overflow, but it does not hide a run that
/// diverges: the weights blow up, the loss turns non-finite and the guard stops the run.
#[test]
fn mixed_precision_divergence_stops_training_too() {
    divergence_case(Precision::Mixed);
}

fn divergence_case(precision: Precision) {
    let Some(g) = gpu() else { return };
    if !can_train(g, precision) {
        return;
    }
    let root = temp_dir(&format!("nan-{precision}"));
    write_dataset(&root.join("data"));
    let (train, test) = datasets(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    // A sane first run leaves a checkpoint.
    let good = TrainConfig {
        epochs: 1,
        precision,
        ..config()
    };
    run(
        g,
        &model,
        &good,
        train.clone(),
        Some(test.clone()),
        None,
        &opts(&root.join("out"), Some(3)),
        &mut |_| {},
    )
    .unwrap();
    let ck = root.join("out").join("last.safetensors");
    let before = std::fs::read(&ck).unwrap();
    // An absurd learning rate diverges: the run stops with a clear error...
    let bad = TrainConfig {
        lr: 1e30,
        warmup_epochs: 0.0,
        precision,
        ..config()
    };
    // (A second fresh run in the same folder: it may replace the first one's files.)
    let mut o = opts(&root.join("out"), None);
    o.checkpoint_every = Some(1);
    o.overwrite = true;
    let err = run(g, &model, &bad, train, Some(test), None, &o, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("non-finite") || msg.contains("diverged"),
        "{msg}"
    );
    // ...and the file on disk is a loadable checkpoint with finite weights.
    let after = std::fs::read(&ck).unwrap();
    let ck2 = Checkpoint::open(&ck).unwrap();
    let t = Trainer::new(g, &ck2.model, &good, 10).unwrap();
    ck2.load_into(g, t.net(), true)
        .expect("the kept checkpoint loads (all values finite)");
    assert!(!after.is_empty() && !before.is_empty());
    std::fs::remove_dir_all(&root).unwrap();
}

/// No run destroys another (#20): a second run into a folder that holds a run is refused
/// and leaves that run's files byte-identical, also when resumed from another checkpoint;
/// resuming from the folder's own checkpoint continues there; with `overwrite` the run is
/// replaced; a folder a live run holds is refused naming its process; a lock left by a killed
/// run is taken over; runs given no folder get new ones and leave each other alone.
#[test]
fn a_second_run_never_replaces_another_runs_files() {
    let Some(g) = gpu() else { return };
    let root = temp_dir("no-clobber");
    write_dataset(&root.join("data"));
    let (train, _) = datasets(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        epochs: 1,
        ..config()
    };
    let quick = |out: OutDir, steps: u64, overwrite: bool| RunOptions {
        out_dir: out,
        overwrite,
        evaluate: false,
        ..opts(Path::new("unused"), Some(steps))
    };
    let fresh = |o: RunOptions| Run::new(g, &model, &cfg, train.clone(), None, o);
    let train_to_end = |r: Run<'_>| {
        let mut notes = Vec::new();
        r.run(&mut |e: &Event| {
            if let Event::Note(n) = e {
                notes.push(n.to_string())
            }
        })
        .unwrap();
        notes
    };
    let a = root.join("a");
    let (ck, csv) = (a.join("last.safetensors"), a.join("metrics.csv"));
    train_to_end(fresh(quick(a.clone().into(), 2, false)).unwrap());
    let (ck_bytes, csv_bytes) = (std::fs::read(&ck).unwrap(), std::fs::read(&csv).unwrap());
    let untouched = |what: &str| {
        assert_eq!(std::fs::read(&ck).unwrap(), ck_bytes, "{what}: checkpoint");
        assert_eq!(std::fs::read(&csv).unwrap(), csv_bytes, "{what}: metrics");
        assert!(!a.join(".lock").exists(), "{what}: no lock left");
    };

    // A second fresh run there is refused, naming the folder and the run's checkpoint.
    match fresh(quick(a.clone().into(), 1, false)) {
        Err(Error::RunExists {
            dir,
            checkpoint,
            files,
        }) => {
            assert_eq!(dir, a);
            assert_eq!(checkpoint.as_deref(), Some(ck.as_path()));
            assert_eq!(files, ["last.safetensors", "metrics.csv", "metrics.png"]);
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a second run into {} was accepted", a.display()),
    }
    untouched("a second fresh run");

    // So is a run resumed from another run's checkpoint.
    let b = root.join("b");
    train_to_end(fresh(quick(b.clone().into(), 1, false)).unwrap());
    let other = Run::resume(
        g,
        &b.join("last.safetensors"),
        train.clone(),
        None,
        quick(a.clone().into(), 2, false),
    );
    assert!(
        matches!(other, Err(Error::RunExists { .. })),
        "{:?}",
        other.err()
    );
    untouched("a run resumed from another checkpoint");

    // A live run's folder is refused, even with overwrite, naming the process.
    let live = fresh(quick(a.clone().into(), 1, true)).unwrap();
    match fresh(quick(a.clone().into(), 1, true)) {
        Err(e @ Error::RunLocked { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("process {}", std::process::id()))
                    && msg.contains(&a.display().to_string()),
                "{msg}"
            );
        }
        Err(e) => panic!("refused for the wrong reason: {e}"),
        Ok(_) => panic!("a second live run in {} was accepted", a.display()),
    }
    drop(live);
    untouched("a refused run next to a live one");

    // Resuming from the folder's own checkpoint continues there, by default too.
    let resumed = Run::resume(
        g,
        &ck,
        train.clone(),
        None,
        quick(OutDir::default(), 3, false),
    )
    .unwrap();
    assert_eq!(resumed.out_dir(), a);
    train_to_end(resumed);
    assert_eq!(Checkpoint::open(&ck).unwrap().progress().unwrap().step, 3);
    let rows = finegrain::train::read_metrics(&csv).unwrap();
    assert_eq!(rows.len(), 1, "the epoch's row, rewritten");

    // A lock left by a killed run (a record nobody holds) is taken over; with overwrite the
    // old run is replaced.
    std::fs::write(
        a.join(".lock"),
        r#"{"pid":4000000,"host":"elsewhere","started":1700000000,"command":["train"]}"#,
    )
    .unwrap();
    let notes = train_to_end(fresh(quick(a.clone().into(), 1, true)).unwrap());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("took over") && n.contains("process 4000000")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("overwriting")), "{notes:?}");
    assert_eq!(Checkpoint::open(&ck).unwrap().progress().unwrap().step, 1);
    assert!(!a.join(".lock").exists());

    // No folder given: each run gets a new one, and leaves the others' files alone.
    let runs = root.join("runs");
    let first = fresh(quick(OutDir::New(runs.clone()), 1, false)).unwrap();
    assert_eq!(first.out_dir(), runs.join("run-1"));
    train_to_end(first);
    let first_ck = std::fs::read(runs.join("run-1/last.safetensors")).unwrap();
    let second = fresh(quick(OutDir::New(runs.clone()), 2, false)).unwrap();
    assert_eq!(second.out_dir(), runs.join("run-2"));
    train_to_end(second);
    assert_eq!(
        std::fs::read(runs.join("run-1/last.safetensors")).unwrap(),
        first_ck
    );
    assert!(runs.join("run-2/last.safetensors").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn checkpoint_mismatch_names_the_tensor() {
    let Some(g) = gpu() else { return };
    let root = temp_dir("mismatch");
    let m3 = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let t3 = Trainer::new(g, &m3, &config(), 10).unwrap();
    let path = root.join("m3.safetensors");
    finegrain::checkpoint::save(g, t3.net(), &path, &Default::default(), true).unwrap();
    let m4 = ModelConfig::preset("tiny", 1, SIZE, 4).unwrap();
    let t4 = Trainer::new(g, &m4, &config(), 10).unwrap();
    let err = Checkpoint::open(&path)
        .unwrap()
        .load_into(g, t4.net(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head.weight") && err.contains("expected"),
        "{err}"
    );
    // A file that is not a checkpoint.
    std::fs::write(root.join("junk.safetensors"), b"junk").unwrap();
    let err = Checkpoint::open(&root.join("junk.safetensors"))
        .err()
        .expect("junk rejected")
        .to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn torchvision_export_and_backbone_load_round_trip() {
    let Some(g) = gpu() else { return };
    let root = temp_dir("torchvision");
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        seed: 5,
        ..config()
    };
    let a = Trainer::new(g, &model, &cfg, 10).unwrap();
    let path = root.join("resnet.safetensors");
    finegrain::checkpoint::export_torchvision(g, a.net(), &path).unwrap();
    // A differently initialised network takes the backbone and the head (from fc).
    let b = Trainer::new(
        g,
        &model,
        &TrainConfig {
            seed: 6,
            ..config()
        },
        10,
    )
    .unwrap();
    let rep = finegrain::checkpoint::load_torchvision(g, b.net(), &path).unwrap();
    assert!(rep.head_from_fc);
    assert!(rep.ignored.is_empty(), "{:?}", rep.ignored);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let images: Vec<f32> = (0..4 * SIZE * SIZE)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let sa = a.eval_scores(g, &images, 4).unwrap();
    let sb = b.eval_scores(g, &images, 4).unwrap();
    assert_eq!(sa, sb, "same weights, same scores");
    // With another class count, fc is not used and the head keeps its own init.
    let m5 = ModelConfig::preset("tiny", 1, SIZE, 5).unwrap();
    let c = Trainer::new(g, &m5, &config(), 10).unwrap();
    let rep = finegrain::checkpoint::load_torchvision(g, c.net(), &path).unwrap();
    assert!(!rep.head_from_fc);
    // ... and the report says why (the head starts afresh), rather than calling fc unused.
    assert_eq!(rep.fc_classes, Some(model.num_classes));
    assert!(rep.ignored.is_empty(), "{:?}", rep.ignored);
    // A backbone of another shape is an error naming the tensors.
    let wide = ModelConfig {
        widths: vec![16, 48, 64],
        ..model.clone()
    };
    let d = Trainer::new(g, &wide, &config(), 10).unwrap();
    let err = finegrain::checkpoint::load_torchvision(g, d.net(), &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer2.0.conv1.weight") && err.contains("expected"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// The whole network's analytic gradients (every parameter tensor) against central finite
/// differences of the training loss computed on the GPU, with the diversification block off
/// (its masks are a fixed function of the step, so they are checked by the method tests).
#[test]
fn whole_network_gradients_match_finite_differences() {
    let Some(g) = gpu() else { return };
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    for loss in [LossKind::CrossEntropy, LossKind::Gce { k: 1 }] {
        let cfg = TrainConfig {
            batch: 4,
            lr: 1e-30, // steps leave the parameters unchanged
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_epochs: 0.0,
            loss,
            ce_warmup_epochs: 0,
            diversify: false,
            seed: 21,
            ..TrainConfig::default()
        };
        let mut t = Trainer::new(g, &model, &cfg, 10).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(77);
        let images: Vec<f32> = (0..4 * SIZE * SIZE)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let labels = vec![0u32, 2, 1, 2];
        let loss_at = |t: &mut Trainer| -> f64 {
            t.step(g, &images, &labels).unwrap();
            t.drain(g).unwrap().last().unwrap().loss as f64
        };
        let _ = loss_at(&mut t);
        let grads: Vec<Vec<f32>> = t
            .net()
            .params
            .iter()
            .map(|p| g.download(&p.grad).unwrap())
            .collect();
        let h = 5e-4f32;
        let mut checked = 0;
        for (pi, grad) in grads.iter().enumerate() {
            let values = g.download(&t.net().params[pi].value).unwrap();
            // The coordinate with the largest gradient, and one random coordinate.
            let big = (0..grad.len())
                .max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs()))
                .unwrap();
            for i in [big, rng.random_range(0..grad.len())] {
                let mut v = values.clone();
                v[i] = values[i] + h;
                g.upload(&t.net().params[pi].value, &v).unwrap();
                let lp = loss_at(&mut t);
                v[i] = values[i] - h;
                g.upload(&t.net().params[pi].value, &v).unwrap();
                let lm = loss_at(&mut t);
                g.upload(&t.net().params[pi].value, &values).unwrap();
                let fd = (lp - lm) / (2.0 * h as f64);
                let an = grad[i] as f64;
                let tol = 3e-4 + 0.05 * fd.abs().max(an.abs());
                assert!(
                    (fd - an).abs() <= tol,
                    "{loss:?} `{}`[{i}]: analytic {an:e} vs finite difference {fd:e}",
                    t.net().params[pi].name
                );
                checked += 1;
            }
        }
        assert!(checked >= 2 * t.net().params.len());
    }
}

/// The inference-only network (what `infer` uses) gives the training network's evaluation
/// scores and class maps bit for bit from the same checkpoint, in well under the memory;
/// optimizer state cannot be saved from or loaded into it.
#[test]
fn inference_network_matches_training_network_in_less_memory() {
    if gpu().is_none() {
        return;
    }
    // A device of its own, so the byte counters see only this test's buffers.
    let g = &finegrain::Gpu::new(&finegrain::GpuOptions::from_env().unwrap()).unwrap();
    let root = temp_dir("inference");
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        batch: 8,
        seed: 3,
        ..config()
    };
    let b0 = g.bytes_created();
    let t = Trainer::new(g, &model, &cfg, 10).unwrap();
    let train_bytes = g.bytes_created() - b0;
    let path = root.join("w.safetensors");
    finegrain::checkpoint::save(g, t.net(), &path, &Default::default(), false).unwrap();
    let ck = Checkpoint::open(&path).unwrap();
    let b1 = g.bytes_created();
    let p = finegrain::inference::Predictor::from_checkpoint(g, &ck, 8).unwrap();
    let infer_bytes = g.bytes_created() - b1;
    assert!(
        (infer_bytes as f64) < 0.6 * train_bytes as f64,
        "inference network {infer_bytes} bytes vs training network {train_bytes}"
    );
    assert!(p.net.train_main.is_empty() && p.net.train_ce.is_empty());
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let images: Vec<f32> = (0..8 * SIZE * SIZE)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    // 7 valid images: the padded slot is computed but not returned.
    let st = t.eval_scores(g, &images, 7).unwrap();
    let maps_t = g.download(&t.net().maps).unwrap();
    let sp = p.scores(g, &images, 7).unwrap();
    assert_eq!(st.len(), 7 * 3);
    assert_eq!(st, sp, "scores differ");
    assert_eq!(
        maps_t,
        g.download(&p.net.maps).unwrap(),
        "class maps differ"
    );
    let err = finegrain::checkpoint::save(g, &p.net, &path, &Default::default(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inference network"), "{err}");
    assert!(ck.load_into(g, &p.net, true).is_err());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A network whose buffers exceed the adapter's binding limit is refused before anything is
/// allocated, naming its largest buffers and the largest batch that fits.
#[test]
fn a_network_too_large_for_the_adapter_names_its_buffers_and_a_batch_that_fits() {
    use finegrain::train::memory::MemoryPlan;
    let Some(g) = gpu() else { return };
    let model = ModelConfig::preset("resnet18", 3, 448, 3).unwrap();
    let limit = g
        .limits
        .max_storage_buffer_binding_size
        .min(g.limits.max_buffer_size);
    let (method, _) = config().method(3, model.feature_size()).unwrap();
    let largest = |b: usize| {
        MemoryPlan::new(&model, b, NetMode::Train, g.class(), &method)
            .unwrap()
            .buffers
            .iter()
            .map(|x| x.bytes())
            .max()
            .unwrap()
    };
    // The smallest batch whose largest buffer (conv1.out, 224 x 224 x 64 floats an image)
    // passes this adapter's limit, whatever the limit is.
    let batch = (limit / largest(1) + 1) as usize;
    assert!(
        largest(batch) > limit,
        "batch {batch} must exceed {limit} bytes"
    );
    let cfg = TrainConfig { batch, ..config() };
    // (Refused before allocating: the check runs on the memory plan; bytes_created cannot
    // show it here, other tests allocate on the same adapter concurrently.)
    let err = match Trainer::new(g, &model, &cfg, 10) {
        Ok(_) => {
            panic!("batch {batch} of 224 x 224 x 64 floats cannot fit one binding of {limit} bytes")
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("does not fit") && err.contains("conv1.out"),
        "{err}"
    );
    let fits: usize = err
        .split("batch ")
        .last()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a batch that fits: {err}"));
    let ok = |b: usize| largest(b) <= limit;
    assert!(
        ok(fits) && !ok(fits + 1),
        "batch {fits} is the largest that fits"
    );
}

/// A loss scale far too large for f16 (2^24: the scaled loss gradient overflows f16 at the
/// head): the step is skipped, the parameters and their momentum stay as they were, the
/// scale halves, and each skipped step is counted, until the scale fits and training goes
/// on. The evaluation list is unaffected.
#[test]
fn mixed_precision_overflow_skips_the_step_and_halves_the_scale() {
    use finegrain::kernels::amp::{initial_state, MAX_SCALE};
    let Some(g) = gpu() else { return };
    if !can_train(g, Precision::Mixed) {
        return;
    }
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        precision: Precision::Mixed,
        ..config()
    };
    let mut t = Trainer::new(g, &model, &cfg, 10).unwrap();
    t.set_amp_state(g, initial_state(MAX_SCALE)).unwrap();
    let mut r = rand::rngs::StdRng::seed_from_u64(5);
    let n = cfg.batch;
    let images: Vec<f32> = (0..n * SIZE * SIZE)
        .map(|_| r.random_range(0.0..1.0))
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let before: Vec<Vec<f32>> = t
        .net()
        .params
        .iter()
        .map(|p| g.download(&p.value).unwrap())
        .collect();
    assert!(t.step(g, &images, &labels).unwrap().is_none());
    let first = t.drain(g).unwrap();
    assert!(first[0].skipped, "2^24 overflows: {:?}", first[0]);
    assert_eq!(first[0].loss_scale, Some(MAX_SCALE / 2.0));
    for (p, b) in t.net().params.iter().zip(&before) {
        assert_eq!(
            &g.download(&p.value).unwrap(),
            b,
            "{} changed on a skipped step",
            p.name
        );
        assert!(
            g.download(&p.velocity).unwrap().iter().all(|&v| v == 0.0),
            "{}",
            p.name
        );
    }
    let mut stats = first;
    for _ in 0..20 {
        stats.extend(t.step(g, &images, &labels).unwrap());
    }
    stats.extend(t.drain(g).unwrap());
    let skipped = stats.iter().filter(|s| s.skipped).count();
    let last = stats.last().unwrap();
    assert!(
        !last.skipped,
        "the scale comes down until the step fits: {stats:?}"
    );
    assert_eq!(
        last.loss_scale,
        Some(MAX_SCALE / f32::powi(2.0, skipped as i32))
    );
    // Skips come first, then clean steps only (the scale never grows back within 2000).
    let first_clean = stats.iter().position(|s| !s.skipped).unwrap();
    assert!(stats[first_clean..].iter().all(|s| !s.skipped), "{stats:?}");
    assert_eq!(skipped, first_clean);
    let state = t.amp_state().unwrap();
    assert_eq!(
        state[2] as usize, skipped,
        "the GPU's count of skipped steps"
    );
    // The weights moved once steps went through, and stayed finite.
    let after: Vec<f32> = t
        .net()
        .params
        .iter()
        .flat_map(|p| g.download(&p.value).unwrap())
        .collect();
    assert!(after.iter().all(|v| v.is_finite()));
    assert_ne!(after, before.concat());
    // An f32 trainer has no loss-scaling state to set.
    let mut f = Trainer::new(g, &model, &config(), 10).unwrap();
    assert!(f.set_amp_state(g, initial_state(1.0)).is_err());
    assert_eq!(f.amp_state(), None);
    // A scale that is not a power of two is refused.
    assert!(t.set_amp_state(g, initial_state(3.0)).is_err());
}

/// A run resumed in the other precision (`RunOptions::precision`): it continues from the
/// checkpoint's f32 weights and progress, says so in a note, drops or starts the
/// loss-scaling state, and its checkpoint then records the new precision.
#[test]
fn resuming_in_the_other_precision() {
    let Some(g) = gpu() else { return };
    if !can_train(g, Precision::Mixed) {
        return;
    }
    let root = temp_dir("switch");
    write_dataset(&root.join("data"));
    let (train, test) = datasets(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let ck = root.join("out").join("last.safetensors");
    for (from, to) in [
        (Precision::Mixed, Precision::F32),
        (Precision::F32, Precision::Mixed),
    ] {
        let cfg = TrainConfig {
            precision: from,
            ..config()
        };
        let o = opts(&root.join("out"), Some(5));
        run(g, &model, &cfg, train.clone(), None, None, &o, &mut |_| {}).unwrap();
        assert_eq!(Checkpoint::open(&ck).unwrap().precision(), from);
        let mut notes = Vec::new();
        let o = RunOptions {
            precision: Some(to),
            ..opts(&root.join("out"), Some(8))
        };
        let s = run(
            g,
            &model,
            &cfg,
            train.clone(),
            Some(test.clone()),
            Some(&ck),
            &o,
            &mut |n| notes.push(n.to_string()),
        )
        .unwrap();
        assert_eq!(s.step_losses.len(), 3, "steps 5..8");
        assert!(s.step_losses.iter().all(|(_, l)| l.is_finite()));
        let note = notes.iter().find(|n| n.contains("resuming in"));
        assert!(
            note.is_some_and(|n| n.contains(&format!("trained in {from}"))),
            "{notes:?}"
        );
        let after = Checkpoint::open(&ck).unwrap();
        assert_eq!(after.precision(), to);
        assert_eq!(
            after.progress().unwrap().amp.is_some(),
            to == Precision::Mixed
        );
        std::fs::remove_dir_all(root.join("out")).unwrap();
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// WebGPU's default limits (what a browser gives a page that asks for nothing,
/// `LimitsMode::WebGpuDefault`, `FINEGRAIN_LIMITS=webgpu`): the device gets exactly them,
/// the toy model trains within them to the same losses as on the adapter's own limits, and
/// a network whose largest buffer passes the 128 MiB binding limit is refused, naming the
/// buffer, its size and the limit.
#[test]
fn webgpu_default_limits_train_what_fits_and_refuse_what_does_not() {
    use finegrain::gpu::{Gpu, GpuOptions, LimitsMode};
    let Some(g) = gpu() else { return };
    let w = Gpu::new(&GpuOptions {
        limits: LimitsMode::WebGpuDefault,
        ..GpuOptions::from_env().unwrap()
    })
    .unwrap();
    let d = wgpu::Limits::default();
    assert_eq!(w.limits_mode, LimitsMode::WebGpuDefault);
    assert_eq!(w.limits.max_storage_buffer_binding_size, 128 << 20);
    assert_eq!(w.limits.max_buffer_size, d.max_buffer_size);
    assert_eq!(w.limits.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(w.limits.max_compute_workgroup_storage_size, 16 << 10);
    assert_eq!(w.limits.max_compute_invocations_per_workgroup, 256);
    assert!(
        w.describe().contains("WebGPU default limits"),
        "{}",
        w.describe()
    );

    let root = temp_dir("webgpu-limits");
    write_dataset(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let mut losses = Vec::new();
    for (gpu, out) in [(g, "adapter"), (&w, "webgpu")] {
        let (train, _) = datasets(&root.join("data"));
        let cfg = TrainConfig {
            epochs: 2,
            ..config()
        };
        let s = run(
            gpu,
            &model,
            &cfg,
            train,
            None,
            None,
            &opts(&root.join(out), None),
            &mut |_| {},
        )
        .unwrap();
        losses.push(s.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>());
    }
    assert_eq!(losses[0].len(), 2, "{losses:?}");
    assert!(losses[0].iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(
        losses[0], losses[1],
        "the same kernels run under either set of limits"
    );

    // ResNet-50 at 448 px, batch 16: its stem output alone is 16 x 224 x 224 x 64 floats.
    let big = ModelConfig::preset("resnet50", 3, 448, 200).unwrap();
    let cfg = TrainConfig {
        batch: 16,
        ..config()
    };
    let err = match Trainer::new(&w, &big, &cfg, 200) {
        Ok(_) => panic!("ResNet-50/448/16 cannot fit WebGPU's 128 MiB bindings"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("does not fit") && err.contains("conv1.out") && err.contains("128.0 MiB"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// `train --data DIR` with no flags on class folders of 12 to 30 small images, grayscale and
/// colour, 16x12 and 12x16: the recipe's defaults train (a few steps here), evaluation and
/// inference prepare each image as training did (the checkpoint records the preprocessing),
/// and classes too small to hold a test image out train without evaluation, saying so.
#[test]
fn the_recipe_defaults_train_class_folders_of_12_to_30_images() {
    use finegrain::classify::Classifier;
    use finegrain::data::ImageFolder;
    use finegrain::recipe::{Choices, Recipe, MIN_TRAIN_STEPS};
    let Some(g) = gpu() else { return };
    // (classes, images per class, test images held out)
    for (classes, per_class, held_out) in [(3, 4, 3), (5, 6, 5), (6, 2, 0)] {
        let what = format!("{classes} classes of {per_class}");
        let root = temp_dir(&format!("recipe-{classes}x{per_class}"));
        let data = root.join("data");
        let mut rng = rand::rngs::StdRng::seed_from_u64(classes as u64);
        for c in 0..classes {
            let dir = data.join(format!("c{c}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let (w, h) = if i % 2 == 0 { (16, 12) } else { (12, 16) };
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let on = (x * (c as u32 + 1) + y) % 5 < 2;
                    let v = if on { 200.0 } else { 50.0 } + rng.random_range(-20.0f32..20.0);
                    let v = v.clamp(0.0, 255.0) as u8;
                    image::Rgb(if i % 3 == 0 {
                        [v, v, v]
                    } else {
                        [v, 255 - v, v / 2]
                    })
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
        let recipe = Recipe::for_data(&data, &Choices::default()).unwrap();
        let train_images = classes * per_class - held_out;
        assert_eq!(
            (recipe.model.as_str(), recipe.input_size, recipe.channels),
            ("tiny", 12, 3),
            "{what}: {:#?}",
            recipe.reasons
        );
        assert_eq!(recipe.train.batch, train_images, "{what}");
        assert!(
            recipe.train.epochs >= MIN_TRAIN_STEPS,
            "{what}: one step an epoch"
        );

        let out = root.join("run");
        let mut notes = Vec::new();
        let summary = Run::from_recipe(g, &recipe, opts(&out, Some(3)))
            .unwrap()
            .run(&mut |e: &Event| {
                if let Event::Note(n) = e {
                    notes.push(n.to_string());
                }
            })
            .unwrap();
        assert_eq!(summary.step_losses.len(), 3, "{what}");
        assert!(summary.step_losses.iter().all(|(_, l)| l.is_finite()));
        match summary.final_eval {
            Some(e) => assert_eq!(e.images, held_out, "{what}"),
            None => {
                assert_eq!(held_out, 0, "{what}: not evaluated");
                assert!(
                    notes
                        .iter()
                        .any(|n| n.contains("training without evaluation")),
                    "{what}: {notes:?}"
                );
            }
        }

        // The checkpoint records the recipe's preprocessing; inference prepares each
        // image exactly as the dataset did for evaluation (shorter side, centre square).
        let ck = out.join("last.safetensors");
        let pre = recipe.preprocessing().unwrap();
        assert_eq!(Checkpoint::open(&ck).unwrap().preprocessing(), &pre);
        assert_eq!(
            pre.eval_resize, 12,
            "{what}: the shorter side, nothing more"
        );
        let clf = Classifier::open(g, &ck, 4).unwrap();
        assert_eq!(clf.preprocessing(), &pre);
        let ds = ImageFolder::open(&data, Split::Train, &recipe.data_options).unwrap();
        let mut want = vec![0f32; ds.info().sample_len()];
        for i in 0..ds.len().min(4) {
            ds.load(
                i,
                false,
                &mut rand::rngs::StdRng::seed_from_u64(0),
                &mut want,
            )
            .unwrap();
            assert_eq!(
                clf.prepare(&ds.files()[i]).unwrap(),
                want,
                "{what}: sample {i}"
            );
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// Data-parallel training is the same training: two ranks (threads sharing the adapter,
/// exchanging as MPI ranks do) hold bit-identical weights, momentum and BN statistics after
/// every step, and end with the parameters and momentum of one process accumulating two
/// micro-batches over the same global order (`tests/mpi.rs` runs the same check under
/// `mpirun -np 2`).
#[test]
fn two_ranks_train_as_one_process_accumulating_two() {
    let Some(g) = gpu() else { return };
    let dir = temp_dir("ranks");
    std::thread::scope(|s| {
        for rank in finegrain::testing::thread_group(2) {
            let dir = &dir;
            s.spawn(move || finegrain::testing::check_rank_equivalence(g, &rank, dir, 5));
        }
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Gradient accumulation counts optimizer steps: steps per epoch, the schedule, the epoch
/// rows and the checkpoints' progress are in steps of `batch * accumulate` images, and a run
/// resumed from a checkpoint repeats the straight run's losses bit for bit.
#[test]
fn accumulation_counts_optimizer_steps_and_resumes_exactly() {
    let Some(g) = gpu() else { return };
    let root = temp_dir("accumulate");
    write_dataset(&root.join("data"));
    let (train, test) = datasets(&root.join("data"));
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let cfg = TrainConfig {
        accumulate: 2,
        ..config()
    };
    // 37 samples, 8 images per step: 4 steps per epoch, 12 in 3 epochs.
    let r = Run::new(
        g,
        &model,
        &cfg,
        train.clone(),
        None,
        opts(&root.join("probe"), None),
    )
    .unwrap();
    assert_eq!(r.trainer().steps_per_epoch(), 4);
    assert_eq!(r.trainer().schedule().total_steps, 12);
    assert_eq!(
        r.trainer().schedule().warmup_steps,
        2,
        "0.5 epochs of 4 steps"
    );
    drop(r);
    let mut log = |s: &str| eprintln!("{s}");
    let n = 3;
    let a = run(
        g,
        &model,
        &cfg,
        train.clone(),
        Some(test.clone()),
        None,
        &opts(&root.join("a"), Some(2 * n)),
        &mut log,
    )
    .unwrap();
    assert_eq!(a.step_losses.len() as u64, 2 * n);
    assert_eq!(
        a.epochs[0].step, 4,
        "the first epoch ends after 4 optimizer steps"
    );
    assert_eq!(a.epochs[1].step, 2 * n);
    let b1 = run(
        g,
        &model,
        &cfg,
        train.clone(),
        Some(test.clone()),
        None,
        &opts(&root.join("b"), Some(n)),
        &mut log,
    )
    .unwrap();
    let ck = root.join("b").join("last.safetensors");
    let p = Checkpoint::open(&ck).unwrap().progress().unwrap();
    assert_eq!((p.step, p.epoch, p.batch), (3, 0, 3));
    let b2 = run(
        g,
        &model,
        &cfg,
        train,
        Some(test),
        Some(&ck),
        &opts(&root.join("b"), Some(2 * n)),
        &mut log,
    )
    .unwrap();
    assert_resumed_exactly(&a, &b1, &b2);
    std::fs::remove_dir_all(&root).unwrap();
}
