//! Checkpoints whose metadata disagrees with itself, with the model or with the weights are
//! errors at `Checkpoint::open` naming the file and the metadata key (and field), never a
//! panic later. The checkpoints are the shipped Fashion-MNIST model with its metadata or
//! tensors rewritten on the CPU; the last tests load into networks on the test adapter.

use finegrain::checkpoint::{
    self, Checkpoint, CLASSES_KEY, FORMAT_KEY, MODEL_KEY, PREPROCESS_KEY, PROGRESS_KEY, TRAIN_KEY,
};
use finegrain::method::loss::LossKind;
use finegrain::testing::gpu;
use finegrain::train::{MethodConfig, Network};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const SHIPPED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/weights/fashion-mnist-tiny.safetensors"
);

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// A named edit of a `T` and what the error it causes must mention.
type Case<T> = (&'static str, Vec<&'static str>, Box<dyn FnOnce(&mut T)>);

/// The shipped checkpoint's metadata and tensors.
fn shipped() -> (HashMap<String, String>, Tensors) {
    let bytes = std::fs::read(SHIPPED).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    (meta, tensors)
}

/// Writes a safetensors file with `meta` and `tensors` (no checks: that is the point).
fn write(path: &Path, meta: &HashMap<String, String>, tensors: &Tensors) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (dt, shape, data))| {
            (
                k.clone(),
                TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, Some(meta.clone())).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Edits the JSON under `key` in place.
fn edit(meta: &mut HashMap<String, String>, key: &str, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&meta[key]).unwrap();
    f(&mut v);
    meta.insert(key.into(), v.to_string());
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    /// Writes the shipped checkpoint edited by `f` as `name` and opens it.
    fn open_edited(
        &self,
        name: &str,
        f: impl FnOnce(&mut HashMap<String, String>, &mut Tensors),
    ) -> (PathBuf, finegrain::Result<Checkpoint>) {
        let (mut meta, mut tensors) = shipped();
        f(&mut meta, &mut tensors);
        let p = self.path(name);
        write(&p, &meta, &tensors);
        let ck = Checkpoint::open(&p);
        (p, ck)
    }
    /// The error of opening the edited checkpoint; it must name the file and every `want`.
    fn open_error(
        &self,
        name: &str,
        want: &[&str],
        f: impl FnOnce(&mut HashMap<String, String>, &mut Tensors),
    ) -> String {
        let (p, ck) = self.open_edited(name, f);
        let e = match ck {
            Ok(_) => panic!("{name}: opened although its metadata is inconsistent"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&p.display().to_string()),
            "{name}: file not named: {e}"
        );
        for w in want {
            assert!(e.contains(w), "{name}: `{w}` missing from: {e}");
        }
        assert!(
            !e.contains("--"),
            "{name}: a command-line flag in a library error: {e}"
        );
        e
    }
}

#[test]
fn shipped_checkpoint_opens_with_its_metadata() {
    let ck = Checkpoint::open(Path::new(SHIPPED)).unwrap();
    assert_eq!(ck.path(), Path::new(SHIPPED));
    assert_eq!(ck.model.num_classes, 10);
    assert!(ck.has_class_names());
    assert_eq!(ck.class_names()[0], "T-shirt/top");
    assert_eq!(ck.class_names().len(), 10);
    let a = ck.preprocessing();
    assert_eq!(
        (a.height, a.width, a.channels, a.eval_resize),
        (28, 28, 1, 28)
    );
    assert_eq!(ck.train_config().unwrap().epochs, 4);
    let p = ck.progress().unwrap();
    assert_eq!((p.epoch, p.batch), (4, 0));
    // The check `open` runs is also there for callers that are about to save.
    checkpoint::check_metadata(Path::new("x"), &ck.model, &ck.metadata).unwrap();
}

#[test]
fn optional_metadata_falls_back_and_missing_training_state_is_named() {
    let d = Dir::new();
    let (p, ck) = d.open_edited("bare.safetensors", |m, _| {
        for k in [
            CLASSES_KEY,
            PREPROCESS_KEY,
            TRAIN_KEY,
            PROGRESS_KEY,
            FORMAT_KEY,
        ] {
            m.remove(k);
        }
    });
    let ck = ck.unwrap();
    assert!(!ck.has_class_names());
    assert_eq!(ck.class_names()[9], "class 9");
    let a = ck.preprocessing();
    assert_eq!((a.height, a.channels, a.eval_resize), (28, 1, 28));
    for e in [
        ck.train_config().unwrap_err().to_string(),
        ck.progress().unwrap_err().to_string(),
    ] {
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains(TRAIN_KEY) || e.contains(PROGRESS_KEY), "{e}");
        assert!(!e.contains("--"), "{e}");
    }
}

#[test]
fn class_names_must_match_the_model() {
    let d = Dir::new();
    d.open_error(
        "nine.safetensors",
        &[CLASSES_KEY, "9 class names", "10"],
        |m, _| {
            edit(m, CLASSES_KEY, |v| {
                v.as_array_mut().unwrap().pop();
            })
        },
    );
    d.open_error(
        "dup.safetensors",
        &[CLASSES_KEY, "Trouser", "1 and 3"],
        |m, _| edit(m, CLASSES_KEY, |v| v[3] = json!("Trouser")),
    );
    d.open_error(
        "blank.safetensors",
        &[CLASSES_KEY, "class 4", "empty"],
        |m, _| edit(m, CLASSES_KEY, |v| v[4] = json!("  ")),
    );
    d.open_error(
        "notalist.safetensors",
        &[CLASSES_KEY, "class names"],
        |m, _| {
            m.insert(CLASSES_KEY.into(), "{\"a\": 1}".into());
        },
    );
}

#[test]
fn preprocessing_must_be_valid_and_match_the_model() {
    let d = Dir::new();
    let cases: Vec<Case<Value>> = vec![
        (
            "std0",
            vec!["normalize.std", "0"],
            Box::new(|v| v["normalize"]["std"] = json!([0.0])),
        ),
        (
            "stdneg",
            vec!["normalize.std", "-0.3"],
            Box::new(|v| v["normalize"]["std"] = json!([-0.3])),
        ),
        (
            "means",
            vec!["normalize.mean", "3 values for 1 channel"],
            Box::new(|v| v["normalize"]["mean"] = json!([0.1, 0.2, 0.3])),
        ),
        (
            "channels",
            vec!["channels is 3", "in_channels", "1"],
            Box::new(|v| {
                v["channels"] = json!(3);
                v["normalize"] = json!({"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]});
            }),
        ),
        (
            "size",
            vec!["32x32", "input_size", "28x28"],
            Box::new(|v| {
                v["height"] = json!(32);
                v["width"] = json!(32);
                v["eval_resize"] = json!(32);
            }),
        ),
        (
            "resize_small",
            vec!["eval_resize", "20"],
            Box::new(|v| v["eval_resize"] = json!(20)),
        ),
        (
            "resize_huge",
            vec!["eval_resize", "100000"],
            Box::new(|v| v["eval_resize"] = json!(100000)),
        ),
        (
            "pad",
            vec!["train_crop.pad", "28"],
            Box::new(|v| v["train_crop"] = json!({"Pad": {"pad": 28}})),
        ),
        (
            "scale",
            vec!["train_crop.scale"],
            Box::new(|v| {
                v["train_crop"] =
                    json!({"RandomResized": {"scale": [0.5, 2.0], "ratio": [0.75, 1.33]}})
            }),
        ),
        (
            "height0",
            vec!["height", "0"],
            Box::new(|v| v["height"] = json!(0)),
        ),
        (
            "field",
            vec!["evaluation preprocessing", "cannot be read"],
            Box::new(|v| v["channels"] = json!("one")),
        ),
    ];
    for (name, want, f) in cases {
        let mut want = want;
        want.push(PREPROCESS_KEY);
        d.open_error(&format!("{name}.safetensors"), &want, |m, _| {
            edit(m, PREPROCESS_KEY, f)
        });
    }
}

#[test]
fn model_configuration_must_be_valid_and_match_the_weights() {
    let d = Dir::new();
    d.open_error("c1.safetensors", &[MODEL_KEY, "num_classes"], |m, _| {
        edit(m, MODEL_KEY, |v| v["num_classes"] = json!(1));
        edit(m, CLASSES_KEY, |v| v.as_array_mut().unwrap().truncate(1));
    });
    d.open_error("eps.safetensors", &[MODEL_KEY, "bn_eps"], |m, _| {
        edit(m, MODEL_KEY, |v| v["bn_eps"] = json!(-1.0))
    });
    d.open_error("mom.safetensors", &[MODEL_KEY, "bn_momentum"], |m, _| {
        edit(m, MODEL_KEY, |v| v["bn_momentum"] = json!(2.0))
    });
    d.open_error(
        "in2.safetensors",
        &[MODEL_KEY, "in_channels is 2"],
        |m, _| edit(m, MODEL_KEY, |v| v["in_channels"] = json!(2)),
    );
    d.open_error("layers.safetensors", &[MODEL_KEY, "layers"], |m, _| {
        edit(m, MODEL_KEY, |v| v["layers"] = json!([1, 1]))
    });
    d.open_error(
        "nomodel.safetensors",
        &[MODEL_KEY, "not a finegrain checkpoint"],
        |m, _| {
            m.remove(MODEL_KEY);
        },
    );
    d.open_error(
        "badmodel.safetensors",
        &[MODEL_KEY, "cannot be read"],
        |m, _| {
            m.insert(MODEL_KEY.into(), "{\"name\": 3}".into());
        },
    );
    // A model and class list that agree with each other but not with the weights.
    d.open_error(
        "head.safetensors",
        &["head.weight", "[10, 64, 1, 1]", "[9, 64, 1, 1]", MODEL_KEY],
        |m, _| {
            edit(m, MODEL_KEY, |v| v["num_classes"] = json!(9));
            edit(m, CLASSES_KEY, |v| {
                v.as_array_mut().unwrap().pop();
            });
        },
    );
    d.open_error(
        "stem.safetensors",
        &["conv1.weight", "[16, 1, 3, 3]", "[32, 1, 3, 3]"],
        |m, _| edit(m, MODEL_KEY, |v| v["stem"]["channels"] = json!(32)),
    );
    d.open_error(
        "format.safetensors",
        &[FORMAT_KEY, "finegrain-checkpoint-9"],
        |m, _| {
            m.insert(FORMAT_KEY.into(), "finegrain-checkpoint-9".into());
        },
    );
}

#[test]
fn training_configuration_and_progress_must_be_valid() {
    let d = Dir::new();
    d.open_error("batch.safetensors", &[TRAIN_KEY, "batch"], |m, _| {
        edit(m, TRAIN_KEY, |v| v["batch"] = json!(0))
    });
    d.open_error("lr.safetensors", &[TRAIN_KEY, "lr"], |m, _| {
        edit(m, TRAIN_KEY, |v| v["lr"] = json!(-0.1))
    });
    d.open_error("ppeak.safetensors", &[TRAIN_KEY, "p_peak"], |m, _| {
        edit(m, TRAIN_KEY, |v| v["p_peak"] = json!(2.0))
    });
    d.open_error(
        "train.safetensors",
        &[TRAIN_KEY, "cannot be read"],
        |m, _| edit(m, TRAIN_KEY, |v| v["loss"] = json!("hinge")),
    );
    d.open_error(
        "epoch.safetensors",
        &[PROGRESS_KEY, "epoch 5", "epochs is 4"],
        |m, _| edit(m, PROGRESS_KEY, |v| v["epoch"] = json!(5)),
    );
    d.open_error("past.safetensors", &[PROGRESS_KEY, "batch 3"], |m, _| {
        edit(m, PROGRESS_KEY, |v| v["batch"] = json!(3))
    });
    d.open_error("step.safetensors", &[PROGRESS_KEY, "step 2"], |m, _| {
        edit(m, PROGRESS_KEY, |v| {
            v["step"] = json!(2);
            v["epoch"] = json!(3);
        })
    });
    d.open_error(
        "progress.safetensors",
        &[PROGRESS_KEY, "cannot be read"],
        |m, _| {
            m.insert(PROGRESS_KEY.into(), "[1, 2]".into());
        },
    );
}

#[test]
fn files_that_are_not_checkpoints_are_named() {
    let d = Dir::new();
    let p = d.path("cut.safetensors");
    let bytes = std::fs::read(SHIPPED).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = Checkpoint::open(&p)
        .err()
        .expect("a truncated file")
        .to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("safetensors"),
        "{e}"
    );
    let e = Checkpoint::open(&d.path("none.safetensors"))
        .err()
        .expect("a missing file")
        .to_string();
    assert!(e.contains("none.safetensors"), "{e}");
}

fn inference_method() -> MethodConfig {
    MethodConfig {
        diversify: None,
        loss: LossKind::CrossEntropy,
        accumulate: false,
    }
}

#[test]
fn tensors_that_do_not_fit_the_network_are_named_before_anything_is_loaded() {
    let Some(g) = gpu() else { return };
    let d = Dir::new();
    let f32s = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
    // The unedited file loads, optimizer state included.
    let ck = Checkpoint::open(Path::new(SHIPPED)).unwrap();
    let net = Network::new(g, &ck.model, 2, &inference_method(), 0).unwrap();
    ck.load_into(g, &net, true).unwrap();
    let cases: Vec<Case<Tensors>> = vec![
        (
            "shape",
            vec!["layer1.0.conv1.weight", "[16, 16, 9]"],
            Box::new(|t| t.get_mut("layer1.0.conv1.weight").unwrap().1 = vec![16, 16, 9]),
        ),
        (
            "missing",
            vec!["missing tensor `bn1.running_mean`"],
            Box::new(|t| {
                t.remove("bn1.running_mean");
            }),
        ),
        (
            "var",
            vec!["bn1.running_var", "negative variance"],
            Box::new(move |t| t.get_mut("bn1.running_var").unwrap().2 = f32s(&[-1.0; 16])),
        ),
        (
            "nanstat",
            vec!["bn1.running_mean", "non-finite"],
            Box::new(move |t| {
                let mut v = vec![0.0f32; 16];
                v[5] = f32::NAN;
                t.get_mut("bn1.running_mean").unwrap().2 = f32s(&v);
            }),
        ),
        (
            "nanmomentum",
            vec!["optimizer.momentum.head.bias", "non-finite"],
            Box::new(move |t| {
                t.get_mut("optimizer.momentum.head.bias").unwrap().2 = f32s(&[f32::INFINITY; 10])
            }),
        ),
    ];
    let before = g.download(&net.params[0].value).unwrap();
    for (name, want, f) in cases {
        let (p, ck) = d.open_edited(&format!("{name}.safetensors"), |_, t| f(t));
        let e = ck
            .unwrap()
            .load_into(g, &net, true)
            .expect_err(name)
            .to_string();
        assert!(e.contains(&p.display().to_string()), "{name}: {e}");
        for w in want {
            assert!(e.contains(w), "{name}: `{w}` missing from: {e}");
        }
        // Nothing was uploaded from the bad file.
        assert_eq!(g.download(&net.params[0].value).unwrap(), before, "{name}");
    }
}

#[test]
fn save_refuses_metadata_that_open_would_refuse() {
    let Some(g) = gpu() else { return };
    let d = Dir::new();
    let ck = Checkpoint::open(Path::new(SHIPPED)).unwrap();
    let net = Network::inference(g, &ck.model, 1).unwrap();
    ck.load_into(g, &net, false).unwrap();
    let mut meta = HashMap::new();
    meta.insert(CLASSES_KEY.to_string(), json!(["a", "b"]).to_string());
    let p = d.path("new/run/w.safetensors");
    let e = checkpoint::save(g, &net, &p, &meta, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("w.safetensors") && e.contains(CLASSES_KEY) && e.contains("2 class names"),
        "{e}"
    );
    assert!(!p.exists());
    // With consistent metadata it saves (creating the folders) and reopens.
    meta.insert(CLASSES_KEY.to_string(), ck.metadata[CLASSES_KEY].clone());
    checkpoint::save(g, &net, &p, &meta, false).unwrap();
    assert_eq!(
        Checkpoint::open(&p).unwrap().class_names(),
        ck.class_names()
    );
}
