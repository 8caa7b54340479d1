//! Bounded fuzzing of every reader of user data (a few hundred seeded, structure-aware
//! mutations of valid files per reader; `examples/fuzz.rs` runs millions). A panic, a case
//! slower than 2 s, an allocation over 1 GiB or an error that does not name the file fails.
//! The seed comes from `FINEGRAIN_TEST_SEED` (else fresh) and is printed; each failure
//! prints the command that replays it.

#[path = "../fuzz_targets/mod.rs"]
mod fuzz_targets;

use fuzz_targets::{quiet_panics, run, Target};
use std::sync::Mutex;

/// Cases per reader in this suite.
const CASES: u64 = 300;

/// The readers run one at a time: the allocation figures are per process.
static SERIAL: Mutex<()> = Mutex::new(());

fn seed() -> u64 {
    let s = std::env::var("FINEGRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz seed {s} (set FINEGRAIN_TEST_SEED={s} to replay)");
    s
}

fn fuzz(reader: &str, cases: u64) {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let gpu = if reader == "torchvision" {
        finegrain::testing::gpu()
    } else {
        None
    };
    if reader == "torchvision" && gpu.is_none() {
        return;
    }
    let mut t = Target::new(reader, gpu);
    let seed = seed();
    quiet_panics();
    let s = run(&mut t, seed, 0, cases, 5);
    let _ = std::panic::take_hook();
    eprintln!(
        "{reader}: {} cases, {} accepted, {} named errors, slowest {:?}, peak {} KiB",
        s.cases,
        s.ok,
        s.errors,
        s.slowest,
        s.peak_alloc >> 10
    );
    if !s.failures.is_empty() {
        let list: Vec<String> = s.failures.iter().map(|f| f.to_string()).collect();
        panic!("{} failing case(s):\n{}", list.len(), list.join("\n"));
    }
}

#[test]
fn idx_images() {
    fuzz("idx-images", CASES);
}
#[test]
fn idx_labels() {
    fuzz("idx-labels", CASES);
}
#[test]
fn idx_dir() {
    fuzz("idx-dir", CASES);
}
#[test]
fn cub_images() {
    fuzz("cub-images", CASES / 2);
}
#[test]
fn cub_labels() {
    fuzz("cub-labels", CASES / 2);
}
#[test]
fn cub_split() {
    fuzz("cub-split", CASES / 2);
}
#[test]
fn cub_classes() {
    fuzz("cub-classes", CASES / 2);
}
#[test]
fn folder() {
    fuzz("folder", CASES / 2);
}
#[test]
fn image() {
    fuzz("image", CASES);
}
#[test]
fn checkpoint() {
    fuzz("checkpoint", CASES);
}
#[test]
fn checkpoint_model() {
    fuzz("checkpoint-model", CASES);
}
#[test]
fn checkpoint_preprocess() {
    fuzz("checkpoint-preprocess", CASES);
}
#[test]
fn checkpoint_classes() {
    fuzz("checkpoint-classes", CASES);
}
#[test]
fn checkpoint_train() {
    fuzz("checkpoint-train", CASES);
}
#[test]
fn checkpoint_progress() {
    fuzz("checkpoint-progress", CASES);
}
#[test]
fn torchvision() {
    fuzz("torchvision", CASES / 3);
}

// Regression cases of what fuzzing found.

fn expect_error<T>(r: finegrain::Result<T>, path: &std::path::Path, want: &[&str]) -> String {
    let e = match r {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&path.display().to_string()),
        "file not named: {e}"
    );
    for w in want {
        assert!(e.contains(w), "`{w}` missing from: {e}");
    }
    e
}

/// A JPEG announcing 65,535 pixels a side overflowed zune-jpeg's MCU count (a panic under
/// overflow checks, a wrapped size without); images over `MAX_DECODE_SIDE` a side are now
/// refused from their header, naming the size.
#[test]
fn oversized_images_are_refused_from_their_header() {
    let d = tempfile::tempdir().unwrap();
    let seeds = fuzz_targets::image_seeds();
    let (png, jpeg) = (&seeds[0], &seeds[4]);
    let cases = [
        (
            "wide.jpg",
            fuzz_targets::jpeg_with_size(jpeg, 0xffff, 5),
            vec!["65535x5", "16384-pixel limit"],
        ),
        (
            "tall.jpg",
            fuzz_targets::jpeg_with_size(jpeg, 7, 65530),
            vec!["7x65530", "16384-pixel limit"],
        ),
        (
            "huge.png",
            fuzz_targets::png_with_size(png, 1 << 31, 3),
            vec!["limit"],
        ),
        // Within the side limit, but 16384 x 16000 RGB needs 750 MiB.
        (
            "big.png",
            fuzz_targets::png_with_size(png, 16384, 16000),
            vec!["16384x16000", "256 MiB limit"],
        ),
    ];
    for (name, bytes, want) in cases {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        for channels in [1, 3] {
            expect_error(finegrain::data::read_image(&p, channels), &p, &want);
        }
    }
}

/// `images.txt` paths are joined to `root/images/`; an absolute path or `..` reached files
/// anywhere (found as an absolute path glued onto a class folder's name). They are now an
/// error naming the index file and the line.
#[test]
fn cub_image_paths_stay_inside_images() {
    use finegrain::data::{open_dataset, DataOptions, Split};
    for bad in [
        "/etc/hostname",
        "../../outside.png",
        "a/../../b.png",
        "001.c/..",
    ] {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("images/001.c")).unwrap();
        std::fs::write(
            r.join("images/001.c/x.png"),
            &fuzz_targets::image_seeds()[0],
        )
        .unwrap();
        std::fs::write(r.join("images.txt"), format!("1 001.c/x.png\n2 {bad}\n")).unwrap();
        std::fs::write(r.join("image_class_labels.txt"), "1 1\n2 1\n").unwrap();
        std::fs::write(r.join("train_test_split.txt"), "1 1\n2 1\n").unwrap();
        std::fs::write(r.join("classes.txt"), "1 001.c\n").unwrap();
        let opts = DataOptions {
            size: Some(8),
            ..DataOptions::default()
        };
        let txt = r.join("images.txt");
        expect_error(
            open_dataset(r, Split::Train, &opts),
            &txt,
            &["line 2", bad, "inside images/"],
        );
    }
}

/// A torchvision state dict with a NaN weight or a negative running variance was uploaded
/// as it was; now it is an error naming the file and the tensor, and nothing is uploaded.
#[test]
fn torchvision_import_refuses_non_finite_tensors_before_uploading() {
    let _guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(g) = finegrain::testing::gpu() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let t = Target::new("torchvision", Some(g));
    let (net, seed) = t.torchvision_parts();
    let before = g.download(&net.params[0].value).unwrap();
    let cases: [(&str, f32, &str); 3] = [
        ("layer2.0.conv1.weight", f32::NAN, "non-finite"),
        ("bn1.running_var", -1.0, "negative variance"),
        ("fc.bias", f32::INFINITY, "non-finite"),
    ];
    for (tensor, value, want) in cases {
        let p = d.path().join(format!("{tensor}.safetensors"));
        std::fs::write(&p, fuzz_targets::set_first_value(seed, tensor, value)).unwrap();
        expect_error(
            finegrain::checkpoint::load_torchvision(g, net, &p),
            &p,
            &[tensor, want],
        );
        assert_eq!(
            g.download(&net.params[0].value).unwrap(),
            before,
            "{tensor}"
        );
    }
}

/// A model configuration with a stem pad near `usize::MAX` overflowed `feature_size` (a
/// panic under overflow checks); sizes are now bounded first, naming the field.
#[test]
fn checkpoint_model_sizes_are_bounded_before_arithmetic() {
    use finegrain::checkpoint::MODEL_KEY;
    let d = tempfile::tempdir().unwrap();
    let seed = std::fs::read(fuzz_targets::SHIPPED).unwrap();
    let cases: [(&str, &str, &str); 5] = [
        ("\"pad\":1", "\"pad\":18446744073709551615", "stem pad"),
        (
            "\"kernel\":3",
            "\"kernel\":9223372036854775807",
            "stem kernel",
        ),
        (
            "\"input_size\":28",
            "\"input_size\":18446744073709551615",
            "input_size",
        ),
        (
            "\"widths\":[16,32,64]",
            "\"widths\":[16,32,4611686018427387904]",
            "stage width",
        ),
        (
            "\"num_classes\":10",
            "\"num_classes\":18446744073709551615",
            "num_classes",
        ),
    ];
    for (i, (from, to, want)) in cases.into_iter().enumerate() {
        let p = d.path().join(format!("{i}.safetensors"));
        let b = fuzz_targets::edit_metadata(&seed, MODEL_KEY, |m| m.replace(from, to));
        std::fs::write(&p, b).unwrap();
        expect_error(
            finegrain::checkpoint::Checkpoint::open(&p),
            &p,
            &[MODEL_KEY, want],
        );
    }
}

/// A JPEG the fuzzer made (cub-images case 337329 of seed 13, 738 bytes, 7x5 pixels) on
/// which zune-jpeg's bit reader fails its own debug assertion `bits_left >= n` (its release
/// build saturates instead and decodes it). A decoder panic is now an error naming the
/// file: in a build with the dependencies' debug assertions (this test's) that is what
/// comes back; in one without, the image decodes.
#[test]
fn a_panicking_decoder_is_an_error_naming_the_file() {
    let f = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/zune-bits-left.jpg"
    ));
    match finegrain::data::read_image(f, 3) {
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("zune-bits-left.jpg"), "{e}");
            assert!(
                e.contains("decoder failed") && e.contains("bits_left"),
                "{e}"
            );
        }
        Ok((_, w, h)) => {
            // Only a build without debug assertions decodes it.
            #[cfg(debug_assertions)]
            panic!("decoded {w}x{h} although the decoder asserts");
            #[cfg(not(debug_assertions))]
            assert_eq!((w, h), (7, 5));
        }
    }
}

/// A progressive JPEG AFL++ made (`fuzz/afl`, image target, 672 bytes) on which zune-jpeg
/// 0.5.15's AVX2 upsampler fails an `assert!` (a panic in release builds too); the 0.4.21
/// this crate locks rejects it with an error. Either way read_image must return an error
/// naming the file.
#[test]
fn a_jpeg_that_panics_newer_decoders_is_an_error_naming_the_file() {
    let f = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/zune-upsampler.jpg"
    ));
    for channels in [1, 3] {
        let e = finegrain::data::read_image(f, channels)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("zune-upsampler.jpg"), "{e}");
    }
}
