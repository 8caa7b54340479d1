//! Data module tests (CPU only): IDX files, the shipped Fashion-MNIST subset, class folders,
//! CUB, augmentation and the background loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use finegrain::data::*;
use finegrain::method::loss::LossKind;
use image::{ImageBuffer, Luma, Rgb, Rgba};

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("finegrain-data-")
        .tempdir()
        .unwrap()
}

fn err_text<T>(r: finegrain::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn small_images(count: usize, rows: usize, cols: usize) -> IdxImages {
    IdxImages {
        count,
        rows,
        cols,
        pixels: (0..count * rows * cols)
            .map(|i| (i * 37 % 251) as u8)
            .collect(),
    }
}

#[test]
fn idx_round_trip_raw_and_gz() {
    let d = tmp();
    let im = small_images(7, 5, 3);
    let labels: Vec<u8> = (0..7).map(|i| (i % 4) as u8).collect();
    for ext in ["", ".gz"] {
        let ip = d.path().join(format!("im{ext}"));
        let lp = d.path().join(format!("lb{ext}"));
        write_idx_images(&ip, &im).unwrap();
        write_idx_labels(&lp, &labels).unwrap();
        let bytes = std::fs::read(&ip).unwrap();
        assert_eq!(bytes[..2] == [0x1f, 0x8b], ext == ".gz");
        let (im2, lb2) = read_idx_pair(&ip, &lp).unwrap();
        assert_eq!(im2, im);
        assert_eq!(lb2, labels);
        assert_eq!(im2.image(2), &im.pixels[2 * 15..3 * 15]);
    }
    // Raw header layout: big-endian magic and dims.
    let raw = std::fs::read(d.path().join("im")).unwrap();
    assert_eq!(
        &raw[..16],
        &[0, 0, 8, 3, 0, 0, 0, 7, 0, 0, 0, 5, 0, 0, 0, 3]
    );
}

#[test]
fn idx_corrupt_files_give_named_errors() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    let im = small_images(4, 6, 6);
    write_idx_images(&p("good.gz"), &im).unwrap();
    write_idx_labels(&p("labels.gz"), &[1, 2, 3]).unwrap();

    // Labels read as images: bad magic.
    let e = err_text(read_idx_images(&p("labels.gz")));
    assert!(
        e.contains("labels.gz") && e.contains("bad magic") && e.contains("0x00000803"),
        "{e}"
    );
    // Images read as labels.
    let e = err_text(read_idx_labels(&p("good.gz")));
    assert!(e.contains("good.gz") && e.contains("bad magic"), "{e}");

    // Truncated raw data.
    write_idx_images(&p("raw"), &im).unwrap();
    let raw = std::fs::read(p("raw")).unwrap();
    std::fs::write(p("cut"), &raw[..raw.len() - 10]).unwrap();
    let e = err_text(read_idx_images(&p("cut")));
    assert!(e.contains("cut") && e.contains("truncated"), "{e}");
    // Truncated header.
    std::fs::write(p("head"), &raw[..9]).unwrap();
    let e = err_text(read_idx_images(&p("head")));
    assert!(e.contains("head") && e.contains("truncated header"), "{e}");
    // Too short for a magic, and empty.
    std::fs::write(p("tiny"), [0u8, 0]).unwrap();
    assert!(err_text(read_idx_images(&p("tiny"))).contains("tiny"));
    std::fs::write(p("empty"), []).unwrap();
    assert!(err_text(read_idx_labels(&p("empty"))).contains("empty"));
    // Trailing bytes.
    let mut long = raw.clone();
    long.extend_from_slice(&[1, 2, 3]);
    std::fs::write(p("long"), &long).unwrap();
    let e = err_text(read_idx_images(&p("long")));
    assert!(e.contains("long") && e.contains("more data"), "{e}");

    // Truncated gzip stream.
    let gz = std::fs::read(p("good.gz")).unwrap();
    std::fs::write(p("cut.gz"), &gz[..gz.len() / 2]).unwrap();
    let e = err_text(read_idx_images(&p("cut.gz")));
    assert!(e.contains("cut.gz"), "{e}");
    // Garbage after a gzip magic.
    std::fs::write(p("junk.gz"), [0x1f, 0x8b, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]).unwrap();
    assert!(err_text(read_idx_images(&p("junk.gz"))).contains("junk.gz"));

    // Count mismatch between images (4) and labels (3).
    let e = err_text(read_idx_pair(&p("good.gz"), &p("labels.gz")));
    assert!(
        e.contains("count mismatch") && e.contains("labels.gz") && e.contains("good.gz"),
        "{e}"
    );

    // Missing file.
    let e = err_text(read_idx_images(&p("nope")));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn idx_folder_generic_and_fashion_by_kind() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_idx_images(&p("train-images-idx3-ubyte.gz"), &small_images(6, 10, 10)).unwrap();
    write_idx_labels(&p("train-labels-idx1-ubyte.gz"), &[0, 1, 2, 3, 0, 1]).unwrap();
    write_idx_images(&p("t10k-images-idx3-ubyte"), &small_images(2, 10, 10)).unwrap();
    write_idx_labels(&p("t10k-labels-idx1-ubyte"), &[4, 0]).unwrap();
    // Auto-detected, not Fashion-MNIST: numbered classes covering both splits, MNIST stats.
    let ds = open_dataset(d.path(), Split::Train, &DataOptions::default()).unwrap();
    assert_eq!(ds.info().num_classes, 5);
    assert_eq!(ds.info().class_names[4], "4");
    let idx = IdxDataset::open(d.path(), Split::Test, &DataOptions::default()).unwrap();
    assert!(!idx.preprocessing().hflip);
    assert_eq!(idx.preprocessing().normalize.mean, [0.1307]);
    // Opened as Fashion-MNIST: its names and stats whatever the folder's name; 3 channels, 32x32.
    let opts = DataOptions {
        channels: Some(3),
        size: Some(32),
        ..DataOptions::default()
    };
    let fm = FashionMnist::open_with(d.path(), &opts).unwrap();
    assert_eq!(fm.test.info().class_names[4], "Coat");
    assert_eq!((fm.test.info().height, fm.test.info().channels), (32, 3));
    let mut out = vec![0f32; 32 * 32 * 3];
    fm.train
        .load(1, true, &mut sample_rng(0, 0, 1), &mut out)
        .unwrap();
    assert!(out.chunks(3).all(|c| c[0] == c[1] && c[1] == c[2]));
    // A missing label file is named.
    std::fs::remove_file(p("t10k-labels-idx1-ubyte")).unwrap();
    let e = err_text(IdxDataset::open(
        d.path(),
        Split::Test,
        &DataOptions::default(),
    ));
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
}

#[test]
fn shipped_subset_opens() {
    let dir = Path::new(FASHION_MNIST_SUBSET_DIR);
    let fm = FashionMnist::open(dir).unwrap();
    assert_eq!(fm.train.len(), 10_000);
    assert_eq!(fm.test.len(), 2_000);
    for ds in [&fm.train, &fm.test] {
        let info = ds.info();
        assert_eq!(info.num_classes, 10);
        assert_eq!(info.class_names[0], "T-shirt/top");
        assert_eq!(info.class_names[9], "Ankle boot");
        assert_eq!((info.height, info.width, info.channels), (28, 28, 1));
        assert!((0..ds.len()).all(|i| ds.label(i) < 10));
        // Every class is present.
        let mut seen = [false; 10];
        (0..ds.len()).for_each(|i| seen[ds.label(i) as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }
    assert_eq!(
        fm.train.preprocessing().normalize,
        Normalize::fashion_mnist(1)
    );

    // Normalised test images have mean ~0 and std ~1.
    let mut out = vec![0f32; 784];
    let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
    for i in 0..fm.test.len() {
        fm.test
            .load(i, false, &mut sample_rng(0, 0, i), &mut out)
            .unwrap();
        for &v in &out {
            s += v as f64;
            s2 += (v as f64) * (v as f64);
            n += 1.0;
        }
    }
    let mean = s / n;
    let std = (s2 / n - mean * mean).sqrt();
    assert!(
        mean.abs() < 0.03 && (std - 1.0).abs() < 0.03,
        "mean {mean} std {std}"
    );

    // Resolution: explicit subset, explicit path, default.
    let (p, full) = resolve_fashion_mnist(None, true).unwrap();
    assert_eq!(p, dir);
    assert!(!full);
    let (p, full) = resolve_fashion_mnist(Some(dir), false).unwrap();
    assert_eq!((p.as_path(), full), (dir, false));
    let (p, full) = fashion_mnist_default().unwrap();
    let system = Path::new(FASHION_MNIST_SYSTEM_DIR);
    if system.join("train-images-idx3-ubyte.gz").is_file() {
        assert_eq!((p.as_path(), full), (system, true));
    } else {
        assert_eq!((p.as_path(), full), (dir, false));
    }
    let d = tmp();
    let e = err_text(resolve_fashion_mnist(Some(d.path()), false));
    assert!(e.contains(&d.path().display().to_string()), "{e}");

    // Auto-detection.
    let ds = open_dataset(dir, Split::Test, &DataOptions::default()).unwrap();
    assert_eq!((ds.len(), ds.info().num_classes), (2000, 10));
}

fn rgb_jpeg(path: &Path, w: u32, h: u32, seed: u32) {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_fn(w, h, |x, y| {
        Rgb([
            (x * 9 + seed) as u8,
            (y * 13) as u8,
            (x + y + seed * 7) as u8,
        ])
    });
    img.save(path).unwrap();
}

/// A tree with 3 classes, 14 image files: 9 RGB JPEGs, a grayscale PNG, a 16-bit PNG, an
/// RGBA PNG, plus a corrupt JPEG and an empty file (2 bad). Returns (root, bad paths).
fn make_tree(root: &Path) -> Vec<PathBuf> {
    for (c, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..3 {
            let (w, h) = (20 + 3 * k + c as u32, 15 + 2 * k);
            rgb_jpeg(
                &d.join(format!("img{k}.jpg")),
                w,
                h,
                (c * 10 + k as usize) as u32,
            );
        }
    }
    let gray: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_fn(17, 23, |x, y| Luma([(x * 11 + y) as u8]));
    gray.save(root.join("gamma/gray.png")).unwrap();
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(19, 13, |x, _| Luma([x as u16 * 3000]));
    deep.save(root.join("beta/deep16.png")).unwrap();
    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_fn(12, 12, |x, y| Rgba([x as u8 * 20, y as u8 * 20, 99, 128]));
    rgba.save(root.join("beta/rgba.PNG")).unwrap();
    // Corrupt JPEG: a real JPEG's first 200 bytes (headers, no complete scan) then junk.
    rgb_jpeg(&root.join("alpha/tmp.jpg"), 40, 40, 1);
    let mut bytes = std::fs::read(root.join("alpha/tmp.jpg")).unwrap();
    std::fs::remove_file(root.join("alpha/tmp.jpg")).unwrap();
    bytes.truncate(200);
    bytes.extend_from_slice(&[0xff, 0xd9]);
    let corrupt = root.join("alpha/corrupt.jpg");
    std::fs::write(&corrupt, &bytes).unwrap();
    let empty = root.join("gamma/empty.jpg");
    std::fs::write(&empty, []).unwrap();
    // Ignored: not an image, hidden.
    std::fs::write(root.join("alpha/notes.txt"), "x").unwrap();
    std::fs::write(root.join("alpha/.hidden.jpg"), "x").unwrap();
    vec![corrupt, empty]
}

fn tree_opts(size: usize) -> DataOptions {
    DataOptions {
        size: Some(size),
        test_fraction: 0.0,
        ..DataOptions::default()
    }
}

#[test]
fn image_decoding_converts_channels() {
    let d = tmp();
    make_tree(d.path());
    let (px, w, h) = read_image(&d.path().join("beta/deep16.png"), 1).unwrap();
    assert_eq!((w, h), (19, 13));
    // 16-bit x * 3000 scaled to 8 bits: value / 257.
    for (x, &v) in px.iter().enumerate().take(19) {
        let want = (x as f64 * 3000.0 / 257.0).round();
        assert!((v as f64 - want).abs() <= 1.0, "x {x}: {v} vs {want}");
    }
    let (px, _, _) = read_image(&d.path().join("gamma/gray.png"), 3).unwrap();
    assert_eq!(px.len(), 17 * 23 * 3);
    assert!(px.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let (px, w, h) = read_image(&d.path().join("beta/rgba.PNG"), 3).unwrap();
    assert_eq!((px.len(), w, h), (12 * 12 * 3, 12, 12));
    assert_eq!(&px[3 * 13..3 * 13 + 3], &[20, 20, 99]);
    let e = err_text(read_image(&d.path().join("gamma/empty.jpg"), 3));
    assert!(e.contains("empty.jpg") && e.contains("empty file"), "{e}");
    let e = err_text(read_image(&d.path().join("alpha/corrupt.jpg"), 3));
    assert!(e.contains("corrupt.jpg"), "{e}");
}

#[test]
fn folder_loader_skips_bad_files_and_keeps_batches_full() {
    let d = tmp();
    let bad = make_tree(d.path());
    let ds = ImageFolder::open(d.path(), Split::Train, &tree_opts(16)).unwrap();
    assert_eq!(ds.len(), 14);
    assert_eq!(ds.info().class_names, ["alpha", "beta", "gamma"]);
    assert_eq!(
        (ds.info().height, ds.info().width, ds.info().channels),
        (16, 16, 3)
    );
    let ds: Arc<dyn Dataset> = Arc::new(ds);
    let opts = LoaderOptions {
        batch: 4,
        threads: 2,
        seed: 5,
        ..LoaderOptions::default()
    };
    let mut loader = Loader::new(ds.clone(), opts).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let mut seen = 0;
    for b in &mut loader {
        let b = b.unwrap();
        assert_eq!(b.len, 4);
        assert_eq!(b.indices.len(), 4);
        assert_eq!(b.images.len(), 4 * 16 * 16 * 3);
        assert!(b.images.iter().all(|v| v.is_finite()));
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], ds.label(i));
            assert!(!bad
                .iter()
                .any(|p| ds.describe(i) == p.display().to_string()));
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
    let skipped = loader.skipped();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(loader.skipped_count(), 2);
    for p in &bad {
        let p = p.display().to_string();
        assert!(
            skipped.iter().any(|(f, _)| *f == p),
            "{p} not in {skipped:?}"
        );
    }

    // Evaluation: no replacement, shorter batches, every valid image exactly once.
    let eval = LoaderOptions {
        batch: 4,
        shuffle: false,
        train: false,
        drop_last: false,
        threads: 3,
        ..LoaderOptions::default()
    };
    let loader = Loader::new(ds.clone(), eval).unwrap();
    let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 4);
    let mut all: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(batches.iter().map(|b| b.len).sum::<usize>(), 12);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 12);
    for b in &batches {
        assert!(b.images[b.len * 16 * 16 * 3..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn strict_mode_errors_naming_the_file() {
    let d = tmp();
    make_tree(d.path());
    let ds: Arc<dyn Dataset> =
        Arc::new(ImageFolder::open(d.path(), Split::Train, &tree_opts(8)).unwrap());
    for threads in [0, 2] {
        let opts = LoaderOptions {
            batch: 4,
            shuffle: false,
            strict: true,
            threads,
            ..LoaderOptions::default()
        };
        let mut loader = Loader::new(ds.clone(), opts).unwrap();
        // Sorted order: alpha/corrupt.jpg is the first file.
        let e = err_text(loader.next().unwrap());
        assert!(e.contains("corrupt.jpg"), "{e}");
        assert!(loader.next().is_none());
    }
}

#[test]
fn folder_split_and_layout_errors() {
    let d = tmp();
    make_tree(d.path());
    let opts = DataOptions {
        size: Some(8),
        test_fraction: 0.34,
        split_seed: 9,
        ..DataOptions::default()
    };
    let tr = ImageFolder::open(d.path(), Split::Train, &opts).unwrap();
    let te = ImageFolder::open(d.path(), Split::Test, &opts).unwrap();
    assert_eq!(tr.len() + te.len(), 14);
    assert!(te.files().iter().all(|f| !tr.files().contains(f)));
    // Deterministic.
    let te2 = ImageFolder::open(d.path(), Split::Test, &opts).unwrap();
    assert_eq!(te.files(), te2.files());

    // Pre-split tree.
    let s = tmp();
    for (split, n) in [("train", 3), ("test", 1)] {
        for c in ["x", "y"] {
            let dir = s.path().join(split).join(c);
            std::fs::create_dir_all(&dir).unwrap();
            for k in 0..n {
                rgb_jpeg(&dir.join(format!("{k}.jpg")), 9, 9, k);
            }
        }
    }
    let tr = open_dataset(s.path(), Split::Train, &opts).unwrap();
    let te = open_dataset(s.path(), Split::Test, &opts).unwrap();
    assert_eq!((tr.len(), te.len(), te.info().num_classes), (6, 2, 2));

    // Empty class folder.
    let e = tmp();
    std::fs::create_dir_all(e.path().join("a")).unwrap();
    std::fs::create_dir_all(e.path().join("b")).unwrap();
    rgb_jpeg(&e.path().join("a/1.jpg"), 8, 8, 0);
    let msg = err_text(ImageFolder::open(e.path(), Split::Train, &opts));
    assert!(
        msg.contains(&e.path().join("b").display().to_string()) && msg.contains("root/<class>"),
        "{msg}"
    );
    // No class folders at all.
    let f = tmp();
    let msg = err_text(open_dataset(f.path(), Split::Train, &opts));
    assert!(
        msg.contains(&f.path().display().to_string()) && msg.contains("no class folders"),
        "{msg}"
    );
    // Missing path.
    let msg = err_text(open_dataset(&f.path().join("missing"), Split::Train, &opts));
    assert!(msg.contains("missing"), "{msg}");
}

fn make_cub(root: &Path) {
    let classes = [
        "001.Black_footed_Albatross",
        "002.Laysan_Albatross",
        "003.Sooty_Albatross",
    ];
    let mut images = String::new();
    let mut labels = String::new();
    let mut split = String::new();
    let mut id = 1;
    for (c, name) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join("images").join(name)).unwrap();
        for k in 0..3 {
            let rel = format!("{name}/{name}_{k}.jpg");
            rgb_jpeg(&root.join("images").join(&rel), 30 + k, 20, id);
            images.push_str(&format!("{id} {rel}\n"));
            labels.push_str(&format!("{id} {}\n", c + 1));
            split.push_str(&format!("{id} {}\n", if k < 2 { 1 } else { 0 }));
            id += 1;
        }
    }
    let cls: String = classes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}\n", i + 1))
        .collect();
    std::fs::write(root.join("images.txt"), images).unwrap();
    std::fs::write(root.join("image_class_labels.txt"), labels).unwrap();
    std::fs::write(root.join("train_test_split.txt"), split).unwrap();
    std::fs::write(root.join("classes.txt"), cls).unwrap();
}

#[test]
fn cub_layout() {
    let d = tmp();
    make_cub(d.path());
    let opts = DataOptions {
        size: Some(12),
        ..DataOptions::default()
    };
    let tr = Cub::open(d.path(), Split::Train, &opts).unwrap();
    let te = Cub::open(d.path(), Split::Test, &opts).unwrap();
    assert_eq!((tr.len(), te.len()), (6, 3));
    assert_eq!(tr.info().num_classes, 3);
    assert_eq!(tr.info().class_names[1], "002.Laysan_Albatross");
    assert_eq!(
        (0..6).map(|i| tr.label(i)).collect::<Vec<_>>(),
        [0, 0, 1, 1, 2, 2]
    );
    assert_eq!((0..3).map(|i| te.label(i)).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(te.describe(1).ends_with("002.Laysan_Albatross_2.jpg"));
    let mut out = vec![0f32; 12 * 12 * 3];
    tr.load(3, true, &mut sample_rng(1, 0, 3), &mut out)
        .unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    // Auto-detection, also through the archive's top folder.
    let ds = open_dataset(d.path(), Split::Train, &opts).unwrap();
    assert_eq!((ds.len(), ds.info().num_classes), (6, 3));
    let outer = tmp();
    let inner = outer.path().join("CUB_200_2011");
    std::fs::create_dir_all(&inner).unwrap();
    make_cub(&inner);
    assert_eq!(
        open_dataset(outer.path(), Split::Test, &opts)
            .unwrap()
            .len(),
        3
    );

    // A missing index file is named, with the expected layout.
    std::fs::remove_file(inner.join("train_test_split.txt")).unwrap();
    let e = err_text(open_dataset(outer.path(), Split::Train, &opts));
    assert!(
        e.contains("train_test_split.txt") && e.contains("CUB-200-2011 layout"),
        "{e}"
    );
    // Malformed line and out-of-range label.
    std::fs::write(d.path().join("image_class_labels.txt"), "1 1\n2 x y\nbad\n").unwrap();
    let e = err_text(Cub::open(d.path(), Split::Train, &opts));
    assert!(
        e.contains("image_class_labels.txt") && e.contains("line 3"),
        "{e}"
    );
    std::fs::write(
        d.path().join("image_class_labels.txt"),
        "1 1\n2 1\n3 1\n4 2\n5 2\n6 2\n7 3\n8 3\n9 4\n",
    )
    .unwrap();
    let e = err_text(Cub::open(d.path(), Split::Train, &opts));
    assert!(
        e.contains("image_class_labels.txt") && e.contains("line 9"),
        "{e}"
    );
    // Missing images.
    std::fs::write(
        d.path().join("image_class_labels.txt"),
        "1 1\n2 1\n3 1\n4 2\n5 2\n6 2\n7 3\n8 3\n9 3\n",
    )
    .unwrap();
    std::fs::remove_dir_all(d.path().join("images")).unwrap();
    let e = err_text(Cub::open(d.path(), Split::Train, &opts));
    assert!(e.contains("_0.jpg") && e.contains("not found"), "{e}");
}

#[test]
fn augmentation_is_deterministic() {
    let fm = FashionMnist::open(Path::new(FASHION_MNIST_SUBSET_DIR)).unwrap();
    let ds = &fm.train;
    let mut a = vec![0f32; 784];
    let mut b = vec![0f32; 784];
    let mut differs = 0;
    for i in 0..16 {
        ds.load(i, true, &mut sample_rng(7, 0, i), &mut a).unwrap();
        ds.load(i, true, &mut sample_rng(7, 0, i), &mut b).unwrap();
        assert_eq!(a, b, "sample {i}: same seed, different output");
        ds.load(i, true, &mut sample_rng(7, 1, i), &mut b).unwrap();
        differs += (a != b) as usize;
        // Evaluation ignores the RNG.
        ds.load(i, false, &mut sample_rng(7, 0, i), &mut a).unwrap();
        ds.load(i, false, &mut sample_rng(8, 3, i), &mut b).unwrap();
        assert_eq!(a, b);
    }
    assert!(
        differs >= 12,
        "only {differs} of 16 samples changed with the epoch"
    );

    // Random resized crop on an RGB image.
    let aug = Preprocessing {
        height: 24,
        width: 24,
        channels: 3,
        eval_resize: 27,
        train_crop: TrainCrop::RANDOM_RESIZED_DEFAULT,
        hflip: true,
        normalize: Normalize::imagenet(3),
    };
    let data: Vec<u8> = (0..50 * 40 * 3).map(|i| (i * 31 % 256) as u8).collect();
    let src = ImageU8 {
        data: &data,
        width: 50,
        height: 40,
        channels: 3,
    };
    let mut a = vec![0f32; 24 * 24 * 3];
    let mut b = vec![0f32; 24 * 24 * 3];
    aug.apply(&src, true, &mut sample_rng(1, 2, 3), &mut a)
        .unwrap();
    aug.apply(&src, true, &mut sample_rng(1, 2, 3), &mut b)
        .unwrap();
    assert_eq!(a, b);
    aug.apply(&src, true, &mut sample_rng(1, 3, 3), &mut b)
        .unwrap();
    assert_ne!(a, b);
    // Values stay within the normalised range of 0..255 inputs.
    assert!(a.iter().all(|v| (-2.2..=2.7).contains(v)));
    // Wrong output length is an error, not a panic.
    assert!(aug
        .apply(&src, true, &mut sample_rng(1, 2, 3), &mut a[1..])
        .is_err());
}

fn collect(ds: &Arc<dyn Dataset>, opts: LoaderOptions) -> Vec<Batch> {
    Loader::new(ds.clone(), opts)
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

#[test]
fn loader_is_deterministic_across_threads_and_resumes() {
    let fm = FashionMnist::open(Path::new(FASHION_MNIST_SUBSET_DIR)).unwrap();
    let ds: Arc<dyn Dataset> = Arc::new(fm.test);
    let base = LoaderOptions {
        batch: 64,
        seed: 11,
        epoch: 2,
        drop_last: false,
        ..LoaderOptions::default()
    };
    let one = collect(
        &ds,
        LoaderOptions {
            threads: 1,
            ..base.clone()
        },
    );
    let three = collect(
        &ds,
        LoaderOptions {
            threads: 3,
            ..base.clone()
        },
    );
    let inline = collect(
        &ds,
        LoaderOptions {
            threads: 0,
            ..base.clone()
        },
    );
    assert_eq!(one.len(), 32); // 2000 / 64 rounded up
    assert_eq!(one, three);
    assert_eq!(one, inline);
    assert_eq!(one.last().unwrap().len, 2000 - 31 * 64);
    // Every sample once per epoch.
    let mut all: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
    all.sort();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
    // Resume at batch 20.
    let resumed = collect(
        &ds,
        LoaderOptions {
            start_batch: 20,
            threads: 2,
            ..base.clone()
        },
    );
    assert_eq!(resumed.as_slice(), &one[20..]);
    // Another epoch: another order.
    let next = collect(
        &ds,
        LoaderOptions {
            epoch: 3,
            threads: 2,
            ..base.clone()
        },
    );
    assert_ne!(next[0].indices, one[0].indices);
    // Recycled buffers give the same batches.
    let mut loader = Loader::new(ds.clone(), LoaderOptions { threads: 2, ..base }).unwrap();
    while let Some(b) = loader.next() {
        let b = b.unwrap();
        let idx = b.index;
        assert_eq!(b, one[idx]);
        loader.recycle(b);
    }
    // Dropping a loader mid-epoch stops its workers.
    let mut l = Loader::new(
        ds,
        LoaderOptions {
            threads: 3,
            batch: 8,
            ..LoaderOptions::default()
        },
    )
    .unwrap();
    l.next().unwrap().unwrap();
    drop(l);
}

/// Writes a small image at `p` (creating folders), or a few bytes for other extensions.
fn put(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
        rgb_jpeg(p, 8, 8, 1);
    } else {
        std::fs::write(p, b"not an image").unwrap();
    }
}

/// The folder walk before walkdir (read_dir, hidden entries skipped, `Path::is_dir`, then a
/// sort by path): the file order `ImageFolder` must keep, so that splits, batches and so
/// results stay bit-identical.
fn old_image_walk(dir: &Path) -> Vec<PathBuf> {
    let hidden = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    };
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !hidden(p))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn folder_walk_keeps_the_old_file_order() {
    let d = tmp();
    let root = d.path();
    let files = [
        "b/z.png",
        "b/A.PNG",
        "b/10.jpg",
        "b/9.jpg",
        "b/sub/deeper/x.jpeg",
        "b/sub/a.jpg",
        "b/sub-x/é.png",
        "b/sub.x/_.jpg",
        "b/.hidden/in_hidden.png",
        "b/.dot.jpg",
        "b/notes.txt",
        "b/noext",
        "a/only.JPG",
        "a/nested/two.png",
    ];
    for f in files {
        put(&root.join(f));
    }
    #[cfg(unix)]
    {
        // A linked folder is walked like a real one; a dangling link counts as a (bad) file.
        std::os::unix::fs::symlink(root.join("a/nested"), root.join("b/linked")).unwrap();
        std::os::unix::fs::symlink(root.join("gone.png"), root.join("b/dangling.png")).unwrap();
    }
    let opts = tree_opts(8);
    let ds = ImageFolder::open(root, Split::Train, &opts).unwrap();
    // The old walk's order, less the broken link (now skipped at open with a warning).
    let want: Vec<PathBuf> = ["a", "b"]
        .iter()
        .flat_map(|c| old_image_walk(&root.join(c)))
        .filter(|p| !p.ends_with("b/dangling.png"))
        .collect();
    assert_eq!(ds.files(), want.as_slice());
    assert!(want.iter().all(|p| !p.to_string_lossy().contains("hidden")));
    assert!(want.iter().any(|p| p.ends_with("b/sub/deeper/x.jpeg")));
    #[cfg(unix)]
    {
        assert!(want.iter().any(|p| p.ends_with("b/linked/two.png")));
        let skipped: Vec<&PathBuf> = ds.skipped().iter().map(|(p, _)| p).collect();
        assert_eq!(
            skipped,
            [&root.join("b/dangling.png")],
            "{:?}",
            ds.skipped()
        );
        assert!(ds.skipped()[0].1.contains("broken symbolic link"));
        // A link loop is skipped naming it, not an endless walk; the rest opens as before.
        std::os::unix::fs::symlink(root.join("a"), root.join("a/nested/loop")).unwrap();
        let ds = ImageFolder::open(root, Split::Train, &opts).unwrap();
        assert_eq!(ds.files(), want.as_slice());
        assert!(
            ds.skipped()
                .iter()
                .any(|(p, why)| p.ends_with("a/nested/loop") && why.contains("loop")),
            "{:?}",
            ds.skipped()
        );
    }
}

/// Entries of a class-folder tree that cannot be used (a link loop, a broken link, a folder
/// that cannot be read) are skipped at open with a warning naming them, the rest of the tree
/// opening as without them; with `DataOptions::strict` the first is an error naming it.
#[cfg(unix)]
#[test]
fn unusable_folder_entries_are_skipped_naming_them_or_refused_when_strict() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let d = tmp();
    let root = d.path();
    for f in ["a/1.png", "a/2.png", "b/1.png", "b/2.png", "b/deep/3.png"] {
        put(&root.join(f));
    }
    let clean = ImageFolder::open(root, Split::Train, &tree_opts(8)).unwrap();
    assert!(clean.skipped().is_empty());
    let loop_link = root.join("a/loop");
    let broken = root.join("b/gone.jpg");
    let broken_class = root.join("c");
    symlink(root.join("a"), &loop_link).unwrap();
    symlink(root.join("nowhere.jpg"), &broken).unwrap();
    symlink(root.join("no-such-class"), &broken_class).unwrap();
    // Ignored like any file that would not be used: a broken link of another name, a hidden
    // loop.
    symlink(root.join("x.txt"), root.join("b/gone.txt")).unwrap();
    symlink(root.join("b"), root.join("b/.hidden-loop")).unwrap();
    // A folder that cannot be read: permissions do not stop root, so that part of the case
    // only runs as another user.
    let locked = root.join("b/locked");
    put(&locked.join("4.png"));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let can_lock = std::fs::read_dir(&locked).is_err();
    if !can_lock {
        eprintln!("running as root: an unreadable folder cannot be made, that part is skipped");
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::remove_dir_all(&locked).unwrap();
    }
    let ds = ImageFolder::open(root, Split::Train, &tree_opts(8)).unwrap();
    assert_eq!(
        ds.files(),
        clean.files(),
        "the usable images, as without them"
    );
    assert_eq!(ds.info().class_names, ["a", "b"]);
    let mut want = vec![
        (loop_link.clone(), "symbolic link loop"),
        (broken.clone(), "broken symbolic link"),
        (broken_class.clone(), "broken symbolic link"),
    ];
    if can_lock {
        want.push((locked.clone(), "cannot be read"));
    }
    assert_eq!(ds.skipped().len(), want.len(), "{:?}", ds.skipped());
    for (path, why) in &want {
        assert!(
            ds.skipped()
                .iter()
                .any(|(p, w)| p == path && w.contains(why)),
            "{} ({why}) not in {:?}",
            path.display(),
            ds.skipped()
        );
    }
    // The survey and the recipe see the same usable files.
    let r = finegrain::recipe::Recipe::for_data(root, &Default::default()).unwrap();
    assert_eq!(
        r.survey.train_images,
        clean.files().len() - 1,
        "one held out of b"
    );
    // Strict: an error naming an unusable entry.
    let strict = DataOptions {
        strict: true,
        ..tree_opts(8)
    };
    let e = err_text(ImageFolder::open(root, Split::Train, &strict));
    assert!(
        want.iter()
            .any(|(p, _)| e.contains(&p.display().to_string()))
            && e.contains("strict"),
        "{e}"
    );
    // Inference over the folder skips them too.
    let files = image_files(&[root.to_path_buf()]).unwrap();
    assert_eq!(files, clean.files());
    if can_lock {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn image_files_takes_files_and_walks_folders() {
    let d = tmp();
    let root = d.path();
    for f in [
        "pics/b.png",
        "pics/a.JPEG",
        "pics/sub/c.jpg",
        "pics/.h.png",
        "pics/x.txt",
    ] {
        put(&root.join(f));
    }
    std::fs::write(root.join("named.webp"), b"x").unwrap();
    let got = image_files(&[root.join("named.webp"), root.join("pics")]).unwrap();
    let want: Vec<PathBuf> = ["named.webp", "pics/a.JPEG", "pics/b.png", "pics/sub/c.jpg"]
        .iter()
        .map(|f| root.join(f))
        .collect();
    assert_eq!(got, want);
    // Inputs keep their order; a folder's files come sorted.
    let got = image_files(&[root.join("pics/sub"), root.join("pics/b.png")]).unwrap();
    assert_eq!(
        got,
        vec![root.join("pics/sub/c.jpg"), root.join("pics/b.png")]
    );
    // A missing path, a folder without images, no input at all.
    let e = err_text(image_files(&[root.join("pics"), root.join("nope.png")]));
    assert!(e.contains("nope.png") && e.contains("no such"), "{e}");
    std::fs::create_dir_all(root.join("empty/deep")).unwrap();
    let e = err_text(image_files(&[root.join("empty")]));
    assert!(e.contains("empty") && e.contains("no PNG or JPEG"), "{e}");
    let e = err_text(image_files(&[]));
    assert!(e.contains("none given"), "{e}");
}

#[test]
fn data_options_out_of_range_name_the_field() {
    let base = DataOptions::default();
    base.validate().unwrap();
    let cases: Vec<(DataOptions, &[&str])> = vec![
        (
            DataOptions {
                size: Some(0),
                ..base.clone()
            },
            &["size", "0"],
        ),
        (
            DataOptions {
                size: Some(100_000),
                ..base.clone()
            },
            &["size", "100000", "4096"],
        ),
        (
            DataOptions {
                channels: Some(2),
                ..base.clone()
            },
            &["channels", "1 or 3"],
        ),
        (
            DataOptions {
                channels: Some(0),
                ..base.clone()
            },
            &["channels"],
        ),
        (
            DataOptions {
                test_fraction: 1.0,
                ..base.clone()
            },
            &["test_fraction", "[0, 1)"],
        ),
        (
            DataOptions {
                test_fraction: -0.1,
                ..base.clone()
            },
            &["test_fraction"],
        ),
        (
            DataOptions {
                test_fraction: f64::NAN,
                ..base.clone()
            },
            &["test_fraction", "NaN"],
        ),
        (
            DataOptions {
                size: Some(32),
                eval_resize: Some(31),
                ..base.clone()
            },
            &["eval_resize", "31", "size 32"],
        ),
        (
            DataOptions {
                size: Some(32),
                eval_resize: Some(1000),
                ..base.clone()
            },
            &["eval_resize", "1000", "32..=128"],
        ),
        (
            DataOptions {
                eval_resize: Some(0),
                ..base.clone()
            },
            &["eval_resize"],
        ),
        (
            DataOptions {
                channels: Some(3),
                normalize: Some(Normalize::fashion_mnist(1)),
                ..base.clone()
            },
            &["normalize.mean", "1 values for 3 channels"],
        ),
        (
            DataOptions {
                channels: Some(1),
                normalize: Some(Normalize {
                    mean: vec![0.5],
                    std: vec![0.0],
                }),
                ..base.clone()
            },
            &["normalize.std", "> 0"],
        ),
    ];
    let d = tmp();
    for (opts, want) in cases {
        for e in [
            err_text(opts.validate()),
            // Checked before any file is read.
            err_text(open_dataset(d.path(), Split::Train, &opts)),
            err_text(opts.preprocessing(DatasetKind::ImageFolder, 0, 0)),
        ] {
            for w in want {
                assert!(e.contains(w), "{opts:?}: `{w}` missing from: {e}");
            }
            assert!(
                !e.contains("--"),
                "a command-line flag in a library error: {e}"
            );
        }
    }
    // Resolved defaults are checked too: a pad shift never reaches the output size.
    let a = DataOptions {
        size: Some(1),
        ..base.clone()
    }
    .preprocessing(DatasetKind::Idx, 1, 1)
    .unwrap();
    assert_eq!(a.train_crop, TrainCrop::Pad { pad: 0 });
    let e = err_text(
        DataOptions {
            train_crop: Some(TrainCrop::Pad { pad: 9 }),
            size: Some(8),
            ..base
        }
        .preprocessing(DatasetKind::ImageFolder, 0, 0),
    );
    assert!(e.contains("train_crop.pad") && e.contains('9'), "{e}");
}

#[test]
fn loader_options_at_zero_name_the_field() {
    let fm = FashionMnist::open(Path::new(FASHION_MNIST_SUBSET_DIR)).unwrap();
    let ds: Arc<dyn Dataset> = Arc::new(fm.test);
    for (opts, field) in [
        (
            LoaderOptions {
                batch: 0,
                ..LoaderOptions::default()
            },
            "batch",
        ),
        (
            LoaderOptions {
                prefetch: 0,
                ..LoaderOptions::default()
            },
            "prefetch",
        ),
        (
            LoaderOptions {
                batch: usize::MAX / 2,
                ..LoaderOptions::default()
            },
            "batch",
        ),
        (
            LoaderOptions {
                start_batch: 1000,
                ..LoaderOptions::default()
            },
            "start_batch",
        ),
    ] {
        let e = err_text(Loader::new(ds.clone(), opts.clone()).map(|_| ()));
        assert!(e.contains(field), "{opts:?}: {e}");
        assert!(!e.contains("--"), "{e}");
    }
    LoaderOptions::default().validate().unwrap();
    // threads 0 is the documented inline mode, not an error.
    LoaderOptions {
        threads: 0,
        ..LoaderOptions::default()
    }
    .validate()
    .unwrap();
}

// ---------------------------------------------------------------------------------------
// Defaults that fit every dataset: the recipe and the data over a matrix of shapes.

/// A class-folder dataset to write: `classes` folders, class `c` holding `per_class(c)`
/// images, image `i` of class `c` of `size(c, i)` (width, height), grayscale when
/// `gray(c, i)`, as JPEG or PNG.
struct Shape {
    name: &'static str,
    classes: usize,
    per_class: fn(usize) -> usize,
    size: fn(usize, usize) -> (u32, u32),
    gray: fn(usize, usize) -> bool,
    jpeg: bool,
}

impl Shape {
    fn write(&self, root: &Path) {
        for c in 0..self.classes {
            let dir = root.join(format!("class{c:04}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..(self.per_class)(c) {
                let (w, h) = (self.size)(c, i);
                let v = |x: u32, y: u32| ((x * 7 + y * 3 + (c * 29 + i * 5) as u32) % 256) as u8;
                let img = if (self.gray)(c, i) {
                    image::DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| {
                        Luma([v(x, y)])
                    }))
                } else {
                    image::DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                        Rgb([v(x, y), v(y, x), 255 - v(x, y)])
                    }))
                };
                let ext = if self.jpeg { "jpg" } else { "png" };
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
    }
}

/// What the held-out split keeps for testing from a class of `n` images (20%, rounded, at
/// least one image left to train on).
fn held_out(n: usize) -> usize {
    ((0.2 * n as f64).round() as usize).min(n - 1)
}

/// Every dataset shape of the family, from 2 to 1,000 classes with 1 to 5 images each, in
/// small, medium and photo sizes, square and not, grayscale, colour and both: the recipe's
/// choices follow its rules (the batch within the training set, k below the class count,
/// the input from the median image's shorter side, the channels from the colour, enough
/// steps) and every image of both splits decodes to the model's input shape.
#[test]
fn recipe_and_data_fit_every_dataset_shape() {
    use finegrain::recipe::{Choices, Recipe, MIN_TRAIN_STEPS};
    let shapes = [
        Shape {
            name: "2 classes, 1 image each, small square grayscale",
            classes: 2,
            per_class: |_| 1,
            size: |_, _| (12, 12),
            gray: |_, _| true,
            jpeg: false,
        },
        Shape {
            name: "3 classes, 1-3 images, non-square 40x30 and 30x40 colour",
            classes: 3,
            per_class: |c| c + 1,
            size: |c, i| if (c + i) % 2 == 0 { (40, 30) } else { (30, 40) },
            gray: |_, _| false,
            jpeg: false,
        },
        Shape {
            name: "5 classes, 1-5 images, mixed sizes, grayscale and colour",
            classes: 5,
            per_class: |c| c + 1,
            size: |c, i| [(16, 16), (40, 30), (30, 40), (24, 18), (9, 13), (64, 20)][(c + i) % 6],
            gray: |c, i| (c + i) % 3 == 0,
            jpeg: false,
        },
        Shape {
            name: "4 classes, 5 images, tiny 5x4 images (below the model's smallest input)",
            classes: 4,
            per_class: |_| 5,
            size: |_, i| if i % 2 == 0 { (5, 4) } else { (4, 5) },
            gray: |_, _| true,
            jpeg: false,
        },
        Shape {
            name: "7 classes, 2 images, medium non-square grayscale JPEG",
            classes: 7,
            per_class: |_| 2,
            size: |_, i| if i == 0 { (100, 70) } else { (90, 120) },
            gray: |_, _| true,
            jpeg: true,
        },
        Shape {
            name: "3 classes, 2-4 images, photos (non-square colour JPEG)",
            classes: 3,
            per_class: |c| c + 2,
            size: |c, i| [(240, 180), (180, 240), (200, 200)][(c + i) % 3],
            gray: |_, _| false,
            jpeg: true,
        },
        Shape {
            name: "40 classes, 3 images, small colour",
            classes: 40,
            per_class: |_| 3,
            size: |_, _| (20, 14),
            gray: |_, _| false,
            jpeg: true,
        },
        Shape {
            name: "1000 classes, 1 image each, tiny grayscale",
            classes: 1000,
            per_class: |_| 1,
            size: |_, _| (6, 6),
            gray: |_, _| true,
            jpeg: false,
        },
    ];
    for shape in &shapes {
        let t0 = std::time::Instant::now();
        let d = tmp();
        let root = d.path();
        shape.write(root);
        let name = shape.name;
        let r = Recipe::for_data(root, &Choices::default())
            .unwrap_or_else(|e| panic!("{name}: no recipe: {e}"));
        let counts: Vec<usize> = (0..shape.classes).map(shape.per_class).collect();
        let want_train: usize = counts.iter().map(|&n| n - held_out(n)).sum();
        let want_test: usize = counts.iter().map(|&n| held_out(n)).sum();
        let s = &r.survey;
        assert_eq!(
            (s.num_classes, s.train_images),
            (shape.classes, want_train),
            "{name}"
        );

        // The input size, model and channels, from the training images' own headers.
        let train_files = ImageFolder::open(root, Split::Train, &r.data_options)
            .unwrap()
            .files()
            .to_vec();
        let dims: Vec<(u32, u32)> = train_files
            .iter()
            .map(|f| image::image_dimensions(f).unwrap())
            .collect();
        let uniform = dims.iter().all(|&x| x == dims[0]);
        assert!(
            dims.len() <= 64 || uniform,
            "{name}: the survey would sample"
        );
        let mut shorter: Vec<usize> = dims.iter().map(|&(w, h)| w.min(h) as usize).collect();
        shorter.sort_unstable();
        let side = shorter[shorter.len() / 2];
        let (model, input) = match side {
            0..=64 => ("tiny", side.max(8)),
            65..=160 => ("resnet18", (side / 32 * 32).max(64)),
            _ => ("resnet50", 224),
        };
        let photos = side > 160;
        assert_eq!(
            (r.model.as_str(), r.input_size),
            (model, input),
            "{name}: {:#?}",
            r.reasons
        );
        let all_gray = (0..shape.classes)
            .flat_map(|c| (0..counts[c]).map(move |i| (c, i)))
            .all(|(c, i)| (shape.gray)(c, i));
        let channels = if all_gray && !photos { 1 } else { 3 };
        assert_eq!(r.channels, channels, "{name}");

        // The batch within the training set, k below the class count, enough steps.
        let t = &r.train;
        let default_batch = if photos { 16 } else { 32 };
        assert_eq!(t.batch, default_batch.min(want_train), "{name}");
        assert!(t.batch <= want_train && t.batch >= 1, "{name}");
        let LossKind::Gce { k } = t.loss else {
            panic!("{name}: the recipe's loss is {:?}", t.loss)
        };
        assert!(k >= 1 && (k as usize) < shape.classes, "{name}: k {k}");
        if photos {
            assert_eq!(t.epochs, 90, "{name}: fine-tuning keeps the paper's epochs");
        } else {
            assert!(
                t.epochs * (want_train / t.batch) >= MIN_TRAIN_STEPS,
                "{name}: {} epochs of {} steps",
                t.epochs,
                want_train / t.batch
            );
        }
        t.validate().unwrap();
        r.model_config(shape.classes).unwrap();

        // One rule for every image: the shorter side resized, the centre square cropped.
        let pre = r.preprocessing().unwrap();
        let eval_resize = if photos {
            (input as f64 * 256.0 / 224.0).round() as usize
        } else {
            input
        };
        assert_eq!(
            (pre.height, pre.width, pre.channels, pre.eval_resize),
            (input, input, channels, eval_resize),
            "{name}"
        );

        // Both splits open (a test split held out of classes too small is empty) and every
        // image decodes, for training and for evaluation, to the model's input.
        let train = r.open(Split::Train).unwrap();
        let test = r.open(Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (want_train, want_test), "{name}");
        let len = input * input * channels;
        let mut out = vec![0f32; len];
        for (ds, train_mode) in [(&train, true), (&train, false), (&test, false)] {
            assert_eq!(ds.info().sample_len(), len, "{name}");
            for i in 0..ds.len() {
                assert!((ds.label(i) as usize) < shape.classes);
                out.fill(f32::NAN);
                ds.load(i, train_mode, &mut sample_rng(1, 0, i), &mut out)
                    .unwrap_or_else(|e| panic!("{name}: sample {i}: {e}"));
                assert!(out.iter().all(|v| v.is_finite()), "{name}: sample {i}");
            }
        }
        eprintln!("{name}: {:.2} s", t0.elapsed().as_secs_f64());
    }
}

/// A 40x30 image is its centre 30x30 square at 30 px, not stretched: its 5-px black bands
/// left and right are cut, the white middle fills the input (and the same portrait).
#[test]
fn non_square_images_are_cropped_to_the_centre_never_stretched() {
    use finegrain::recipe::{Choices, Recipe};
    let d = tmp();
    let root = d.path();
    for c in ["a", "b"] {
        for i in 0..4 {
            std::fs::create_dir_all(root.join(c)).unwrap();
            let (w, h) = if i % 2 == 0 { (40, 30) } else { (30, 40) };
            let img: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(w, h, |x, y| {
                let along = if w > h { x } else { y };
                Luma([if (5..35).contains(&along) { 255 } else { 0 }])
            });
            img.save(root.join(c).join(format!("{i}.png"))).unwrap();
        }
    }
    let r = Recipe::for_data(root, &Choices::default()).unwrap();
    assert_eq!((r.input_size, r.channels), (30, 1), "{:#?}", r.reasons);
    let pre = r.preprocessing().unwrap();
    let white = (1.0 - pre.normalize.mean[0]) / pre.normalize.std[0];
    let ds = r.open(Split::Train).unwrap();
    let mut out = vec![0f32; 30 * 30];
    for i in 0..ds.len() {
        for train in [false, true] {
            ds.load(i, train, &mut sample_rng(3, 0, i), &mut out)
                .unwrap();
            assert!(
                out.iter().all(|v| (v - white).abs() < 1e-4),
                "sample {i} (train {train}): a black band is in the input"
            );
        }
    }
}

/// The default run (the shipped Fashion-MNIST subset) keeps its recipe: 28 px IDX images at
/// their own preprocessing, the tiny model, 4 epochs of batch 32, nothing stretched.
#[test]
fn the_fashion_mnist_recipe_is_unchanged() {
    use finegrain::recipe::{Choices, Recipe};
    use finegrain::train::TrainConfig;
    let r = Recipe::for_data(Path::new(FASHION_MNIST_SUBSET_DIR), &Choices::default()).unwrap();
    assert_eq!(
        (r.model.as_str(), r.input_size, r.channels),
        ("tiny", 28, 1)
    );
    assert_eq!(
        r.train,
        TrainConfig {
            loss: LossKind::Gce { k: 3 },
            ..TrainConfig::default()
        }
    );
    assert_eq!(
        r.data_options,
        DataOptions {
            train_crop: Some(TrainCrop::Center),
            hflip: Some(false),
            ..DataOptions::default()
        }
    );
    let pre = r.preprocessing().unwrap();
    assert_eq!((pre.height, pre.width, pre.eval_resize), (28, 28, 28));
}
