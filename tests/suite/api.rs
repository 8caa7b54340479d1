//! The public API alone, as a program that uses finegrain would: a recipe chosen from a
//! folder of small grayscale PNGs, a few training steps with an observer, then
//! classification of image files and class maps from the checkpoint.

use finegrain::classify::Classifier;
use finegrain::method::loss::LossKind;
use finegrain::recipe::{Choices, Recipe};
use finegrain::train::Event;
use finegrain::train::{Run, RunOptions};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const SIZE: u32 = 20;
const CLASSES: [&str; 3] = ["bars", "columns", "dots"];

/// `root/train/<class>/*.png` and `root/test/<class>/*.png`, 20x20 grayscale.
fn write_pngs(root: &Path) -> Vec<PathBuf> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut test_files = Vec::new();
    for (split, per_class) in [("train", 16), ("test", 3)] {
        for (c, name) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..per_class {
                let img = image::GrayImage::from_fn(SIZE, SIZE, |x, y| {
                    let on = match c {
                        0 => y % 4 < 2,
                        1 => x % 4 < 2,
                        _ => x % 5 == 2 && y % 5 == 2,
                    };
                    let base: f32 = if on { 210.0 } else { 30.0 };
                    image::Luma([(base + rng.random_range(-20.0..20.0)).clamp(0.0, 255.0) as u8])
                });
                let f = dir.join(format!("{i}.png"));
                img.save(&f).unwrap();
                if split == "test" {
                    test_files.push(f);
                }
            }
        }
    }
    test_files
}

#[test]
fn recipe_train_and_classify_through_the_public_api() {
    let Some(gpu) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let test_files = write_pngs(&data);

    // No choices: the recipe reads the images and picks a small model at their size.
    let mut recipe = Recipe::for_data(&data, &Choices::default()).unwrap();
    assert_eq!(recipe.model, "tiny");
    assert_eq!((recipe.input_size, recipe.channels), (SIZE as usize, 1));
    assert!(!recipe.augment, "no photo augmentation for small images");
    assert_eq!(
        recipe.train.loss,
        LossKind::Gce { k: 2 },
        "k clamped to C - 1 for 3 classes"
    );
    recipe.train.batch = 8;
    recipe.train.epochs = 2;

    let out = dir.path().join("run");
    let opts = RunOptions {
        out_dir: out.clone().into(),
        threads: 2,
        ..RunOptions::default()
    };
    let (mut steps, mut epochs, mut checkpoints) = (Vec::new(), 0, 0);
    let summary = Run::from_recipe(gpu, &recipe, opts)
        .unwrap()
        .run(&mut |e: &Event| match e {
            Event::StepStats(s) => steps.push(s.step),
            Event::EpochEnded(_) => epochs += 1,
            Event::Checkpoint { .. } => checkpoints += 1,
            _ => {}
        })
        .unwrap();
    assert_eq!(
        steps,
        (0..12).collect::<Vec<u64>>(),
        "6 steps per epoch, in order"
    );
    assert_eq!((epochs, checkpoints), (2, 2));
    assert_eq!(summary.epochs.len(), 2);
    let rows = finegrain::train::read_metrics(&out.join("metrics.csv")).unwrap();
    assert_eq!(
        rows, summary.epochs,
        "metrics.csv holds the epoch summaries"
    );

    // Classify the test files from the checkpoint; a broken file is an error for that file.
    let clf = Classifier::open(gpu, &out.join("last.safetensors"), 4).unwrap();
    assert_eq!(clf.classes(), CLASSES);
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG not really").unwrap();
    let mut files = test_files.clone();
    files.insert(2, broken.clone());
    let results = clf.classify_paths(gpu, &files, 3, 2).unwrap();
    assert_eq!(results.len(), files.len());
    let err = results[2].as_ref().unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let preds: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(preds.len(), test_files.len());
    for p in &preds {
        assert_eq!(p.top.len(), 3);
        let total: f64 = p.top.iter().map(|c| c.probability).sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "3 of 3 classes sum to 1: {total}"
        );
        assert!(p.top[0].probability >= p.top[1].probability);
    }
    // The same images as prepared inputs, with class maps: the top class's map averages
    // to its score (the evaluation head is plain global average pooling).
    let inputs: Vec<f32> = test_files
        .iter()
        .flat_map(|f| clf.prepare(f).unwrap())
        .collect();
    let with_maps = clf.classify_with_maps(gpu, &inputs, 3, 2).unwrap();
    for ((p, maps), q) in with_maps.iter().zip(&preds) {
        assert_eq!(
            &p, q,
            "the same prediction from files and from prepared inputs"
        );
        assert_eq!(maps.len(), 2);
        let m = &maps[0];
        assert_eq!(m.class, p.top[0].class);
        assert_eq!((m.height, m.width), clf.map_size());
        let mean = m.values.iter().sum::<f32>() / m.values.len() as f32;
        assert!(
            (mean - p.top[0].score).abs() <= 1e-4 * (1.0 + mean.abs()),
            "map mean {mean} vs score {}",
            p.top[0].score
        );
    }
    // Evaluation through the classifier gives the run's own last evaluation.
    let test = clf.open_data(&data, finegrain::data::Split::Test).unwrap();
    let (report, skipped) = clf.evaluate(gpu, test, 2, false).unwrap();
    let last = summary
        .final_eval
        .as_ref()
        .expect("evaluated at the last epoch");
    assert!(skipped.is_empty());
    assert_eq!(report.confusion, last.confusion);
    assert!((report.mean_loss() - last.mean_loss()).abs() < 1e-4);
    let cam = clf.cam_image(&inputs[..clf.input_len()], &with_maps[0].0, &with_maps[0].1);
    assert!(cam.width() >= SIZE && cam.height() >= SIZE);
}

/// A file fetched from the Hub stand-in: downloaded once into the cache, then taken from
/// it with no request, offline too; every failure is an [`Error::Hub`] naming its problem.
#[test]
fn hub_files_download_once_then_come_from_the_cache() {
    use finegrain::hub::{fetch, HubFile, HubOptions, HubProblem};
    use finegrain::testing::{FakeHub, HubFixture};
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let fixture = |repo: &str, wrong_sha| HubFixture {
        repo: repo.into(),
        file: "model.safetensors".into(),
        bytes: payload.clone(),
        wrong_sha,
    };
    let hub = FakeHub::serve(vec![fixture("me/net", false), fixture("me/bad", true)]);
    let cache = tempfile::tempdir().unwrap();
    let opts = HubOptions::new(&hub.endpoint, cache.path().join("hub"));
    let file: HubFile = "me/net".parse().unwrap();

    let path = fetch(&file, &opts).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), payload);
    assert!(
        path.starts_with(cache.path()),
        "{} outside the cache",
        path.display()
    );
    let asked = hub.requests();
    assert!(asked >= 2, "a metadata request and a download, got {asked}");
    // The second time, and offline: the cache, without a request.
    assert_eq!(fetch(&file, &opts).unwrap(), path);
    let offline = HubOptions {
        offline: true,
        ..opts.clone()
    };
    assert_eq!(fetch(&file, &offline).unwrap(), path);
    assert_eq!(hub.requests(), asked, "the cached file was asked for again");

    let problem = |f: &str, o: &HubOptions| match fetch(&f.parse().unwrap(), o) {
        Err(e @ finegrain::Error::Hub { .. }) => {
            let finegrain::Error::Hub { problem, .. } = &e else {
                unreachable!()
            };
            (*problem, e.to_string())
        }
        other => panic!("{f}: expected a Hub error, got {other:?}"),
    };
    let (p, msg) = problem("me/other", &offline);
    assert_eq!(p, HubProblem::OfflineNotCached, "{msg}");
    assert!(
        msg.contains("me/other") && msg.contains("model.safetensors"),
        "{msg}"
    );
    let (p, msg) = problem("nobody/nothing", &opts);
    assert_eq!(p, HubProblem::RepoNotFound, "{msg}");
    assert!(
        msg.contains("nobody/nothing") && msg.contains(&hub.endpoint),
        "{msg}"
    );
    let (p, msg) = problem("me/net/other.safetensors", &opts);
    assert_eq!(p, HubProblem::FileNotFound, "{msg}");
    // A transfer that does not match the Hub's SHA-256 is refused and not kept.
    let (p, msg) = problem("me/bad", &opts);
    assert_eq!(p, HubProblem::Corrupt, "{msg}");
    let kept = finegrain::hub::fetch(&"me/bad".parse().unwrap(), &offline);
    assert!(
        kept.is_err(),
        "the corrupt copy stayed in the cache: {kept:?}"
    );
    // A Hub that does not answer.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gone = HubOptions::new(format!("http://{closed}"), cache.path().join("hub"));
    let (p, msg) = problem("me/elsewhere", &gone);
    assert_eq!(p, HubProblem::Unreachable, "{msg}");
}

/// The photo path end to end: JPEG photos of several sizes and aspect ratios in class
/// folders, the recipe with no choices but the smallest input, the ImageNet backbone it picks
/// fetched from the Hub stand-in and fine-tuned for a few steps, then the checkpoint
/// classifies the test photos (with class maps) exactly as the run evaluated them.
#[test]
fn photos_fine_tune_from_the_hub_by_default() {
    use finegrain::hub::HubOptions;
    use finegrain::recipe::BackboneInit;
    use finegrain::testing::{FakeHub, HubFixture};
    let Some(gpu) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("photos");
    let sizes = [(320, 240), (240, 320), (300, 300), (400, 225), (257, 193)];
    let classes = ["red_fox", "grey_wolf", "fennec"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut test_files = Vec::new();
    for (split, n) in [("train", 2), ("test", 1)] {
        for (c, name) in classes.iter().enumerate() {
            let folder = data.join(split).join(name);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let (w, h) = sizes[(i + c) % sizes.len()];
                let tint = [[200u8, 80, 40], [120, 120, 130], [230, 200, 150]][c];
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let stripe = ((x + y * (c as u32 + 1)) / 16).is_multiple_of(2);
                    let k: i32 = rng.random_range(-25..25) + if stripe { 20 } else { -20 };
                    image::Rgb(tint.map(|v| (v as i32 + k).clamp(0, 255) as u8))
                });
                let f = folder.join(format!("{i}.jpg"));
                img.save(&f).unwrap();
                if split == "test" {
                    test_files.push((f, c));
                }
            }
        }
    }
    // The smallest input a ResNet takes (1x1 class maps): this test also runs on SwiftShader.
    let choices = Choices {
        input_size: Some(32),
        ..Choices::default()
    };
    let recipe = Recipe::for_data(&data, &choices).unwrap();
    let weights = finegrain::hub::imagenet_weights("resnet50").unwrap();
    assert_eq!(recipe.model, "resnet50", "{:#?}", recipe.reasons);
    assert_eq!(recipe.init, BackboneInit::Hub(weights.clone()));
    assert_eq!((recipe.channels, recipe.augment), (3, true));
    assert_eq!(recipe.train.lr, 0.001, "the paper's fine-tuning rate");
    assert_eq!(recipe.train.ce_warmup_epochs, 0);
    assert_eq!(recipe.train.batch, 6, "the batch is the 6 training images");
    assert!(
        recipe
            .reasons
            .iter()
            .any(|r| r.contains("timm/resnet50.tv_in1k")),
        "the choice is not said: {:#?}",
        recipe.reasons
    );

    let fixture = finegrain::testing::imagenet_fixture("resnet50", 3, false).unwrap();
    let hub = FakeHub::serve(vec![HubFixture {
        repo: weights.repo.clone(),
        file: weights.file.clone(),
        bytes: fixture.clone(),
        wrong_sha: false,
    }]);
    let hub_opts = HubOptions::new(&hub.endpoint, dir.path().join("hf"));
    let init = recipe
        .fetch_init(&hub_opts)
        .unwrap()
        .expect("a pretrained file");
    assert_eq!(std::fs::read(&init).unwrap(), fixture);

    let opts = RunOptions {
        out_dir: dir.path().join("run").into(),
        threads: 2,
        max_steps: Some(2),
        init: Some(init),
        ..RunOptions::default()
    };
    let run = Run::from_recipe(gpu, &recipe, opts).unwrap();
    let checkpoint = run.checkpoint_path();
    let summary = run.run(&mut |_: &Event| {}).unwrap();
    let eval = summary.final_eval.expect("a final evaluation");
    assert_eq!(eval.images, test_files.len());

    // The backbone is the fixture's: two steps at lr 0.001 move it (random weights give
    // large gradients: conv1 keeps a correlation of 0.99 with the fixture at 32 px), but a
    // fresh initialisation would be uncorrelated with it, about 0.
    let (_, want) = finegrain::testing::read_safetensors(&fixture);
    let (_, got) = finegrain::testing::read_safetensors(&std::fs::read(&checkpoint).unwrap());
    let f64s = |b: &[u8]| -> Vec<f64> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect()
    };
    for name in [
        "conv1.weight",
        "layer1.0.conv2.weight",
        "layer4.2.conv3.weight",
    ] {
        let w = f64s(&want.iter().find(|t| t.0 == name).unwrap().3);
        let g = f64s(&got.iter().find(|t| t.0 == name).unwrap().3);
        assert_eq!(w.len(), g.len(), "{name}");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (mw, mg) = (mean(&w), mean(&g));
        let (mut cov, mut vw, mut vg) = (0.0, 0.0, 0.0);
        for (a, b) in w.iter().zip(&g) {
            cov += (a - mw) * (b - mg);
            vw += (a - mw) * (a - mw);
            vg += (b - mg) * (b - mg);
        }
        let corr = cov / (vw * vg).sqrt();
        assert!(corr > 0.9, "{name}: correlation {corr} with the fixture");
    }

    // The checkpoint classifies as the run evaluated: the same confusion matrix.
    let classifier = Classifier::open(gpu, &checkpoint, 4).unwrap();
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    for (file, truth) in &test_files {
        let input = classifier.prepare(file).unwrap();
        let (pred, maps) = classifier
            .classify_with_maps(gpu, &input, 3, 1)
            .unwrap()
            .pop()
            .unwrap();
        confusion[*truth][pred.top[0].class] += 1;
        assert_eq!(maps.len(), 1, "one class map asked for");
        assert_eq!((maps[0].height, maps[0].width), (1, 1), "32 px / 32");
        assert!(maps[0].values.iter().all(|v| v.is_finite()));
    }
    assert_eq!(confusion, eval.confusion);
}
