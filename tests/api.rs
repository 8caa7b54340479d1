//! The public API alone, as a program that uses finegrain would: a recipe chosen from a
//! folder of small grayscale PNGs, a few training steps with an observer, then
//! classification of image files and class maps from the checkpoint.

use finegrain::classify::Classifier;
use finegrain::recipe::{Choices, Recipe};
use finegrain::train::observe::Event;
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
    assert_eq!(recipe.train.k, 2, "k clamped to C - 1 for 3 classes");
    recipe.train.batch = 8;
    recipe.train.epochs = 2;

    let out = dir.path().join("run");
    let opts = RunOptions {
        out_dir: out.clone(),
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
    let rows = finegrain::train::run::read_metrics(&out.join("metrics.csv")).unwrap();
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
