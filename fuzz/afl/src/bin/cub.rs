//! A CUB-200-2011 root whose `images.txt` is the fuzzer's bytes (the other index files and
//! two small images valid): opening both splits and loading their first samples.
use finegrain::data::{open_dataset, DataOptions, Split};

fn main() {
    let root = finegrain_afl::scratch().join("cub");
    let png = include_bytes!("../../../../tests/fixtures/zune-bits-left.jpg");
    for c in ["001.a", "002.b"] {
        std::fs::create_dir_all(root.join("images").join(c)).expect("cub folders");
        std::fs::write(root.join("images").join(c).join("1.jpg"), png).expect("cub image");
    }
    std::fs::write(root.join("image_class_labels.txt"), "1 1\n2 2\n").expect("labels");
    std::fs::write(root.join("train_test_split.txt"), "1 1\n2 0\n").expect("split");
    std::fs::write(root.join("classes.txt"), "1 001.a\n2 002.b\n").expect("classes");
    let images = root.join("images.txt");
    let opts = DataOptions {
        size: Some(8),
        ..Default::default()
    };
    afl::fuzz!(|data: &[u8]| {
        std::fs::write(&images, data).expect("images.txt");
        let r = (|| -> finegrain::Result<()> {
            for split in [Split::Train, Split::Test] {
                let ds = open_dataset(&root, split, &opts)?;
                let mut out = vec![0f32; ds.info().sample_len()];
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
                for i in 0..ds.len().min(2) {
                    // A bad image is the loader's to skip; it must name its own file.
                    if let Err(e) = ds.load(i, false, &mut rng, &mut out) {
                        assert!(e.to_string().contains(&ds.describe(i)), "{e}");
                    }
                }
            }
            Ok(())
        })();
        // An error names a file of the dataset (images.txt, or the index file or image
        // that a line of it points at).
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(msg.contains(root.to_str().unwrap_or("cub")), "{msg}");
        }
    });
}
