//! A full disk during a run (an injected write failure, `fsio::fault`): the run stops with
//! an error that says what failed, and the previous checkpoint stays intact and loadable.
//! One test in this binary: the injection is global to the process.

use finegrain::checkpoint::Checkpoint;
use finegrain::data::Dataset;
use finegrain::fsio::fault;
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::train::Event;
use finegrain::train::{Run, RunOptions, TrainConfig};
use std::path::Path;
use std::sync::Arc;

const SIZE: usize = 12;

fn data(root: &Path) -> Arc<dyn Dataset> {
    finegrain::testing::write_toy_folders(root, &["left", "top"], 8, SIZE as u32, 2);
    finegrain::testing::open_toy_folders(root, SIZE)
}

fn run(g: &finegrain::Gpu, train: Arc<dyn Dataset>, out: &Path) -> finegrain::Result<()> {
    let model = ModelConfig::preset("tiny", 1, SIZE, 2).unwrap();
    let cfg = TrainConfig {
        epochs: 3,
        batch: 4,
        loss: LossKind::Gce { k: 1 },
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        out_dir: out.into(),
        checkpoint_every: Some(1),
        threads: 1,
        evaluate: false,
        ..RunOptions::default()
    };
    Run::new(g, &model, &cfg, train, None, opts)?.run(&mut |_: &Event| {})?;
    Ok(())
}

/// Only the run's own files, no temporary leftovers.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_stops_the_run_with_the_file_named_and_keeps_the_last_checkpoint() {
    let Some(g) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let train = data(&dir.path().join("data"));

    // The disk fills up at the 6th checkpoint write: 4 steps per epoch, one every step, and
    // one more at the end of the epoch (step 4 twice), so the write of step 5 fails.
    let out = dir.path().join("ck");
    fault::fail_writes_of("last.safetensors", 5);
    let err = run(g, train.clone(), &out).unwrap_err().to_string();
    fault::clear();
    assert!(
        err.contains("last.safetensors")
            && err.contains("No space left on device")
            && err.contains("step 5")
            && err.contains("previous checkpoint"),
        "{err}"
    );
    let ck = Checkpoint::open(&out.join("last.safetensors")).unwrap();
    assert_eq!(ck.progress().unwrap().step, 4, "the last good checkpoint");
    assert_eq!(
        files_in(&out),
        ["last.safetensors", "metrics.csv", "metrics.png"],
        "no temporary file left behind"
    );

    // The metrics file of the second epoch cannot be written: the epoch's checkpoint is.
    let out = dir.path().join("metrics");
    fault::fail_writes_of("metrics.csv", 1);
    let err = run(g, train, &out).unwrap_err().to_string();
    fault::clear();
    assert!(
        err.contains("metrics.csv") && err.contains("No space left on device"),
        "{err}"
    );
    let ck = Checkpoint::open(&out.join("last.safetensors")).unwrap();
    assert_eq!(
        ck.progress().unwrap().step,
        8,
        "the second epoch's checkpoint"
    );
    let rows = finegrain::train::read_metrics(&out.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 1, "the first epoch's metrics, whole");
}
