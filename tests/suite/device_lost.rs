//! A device lost in the middle of a run (simulated with `wgpu::Device::destroy`): the run
//! stops with an error that says the device was lost and what to do, and the last
//! checkpoint stays loadable. A device of its own: destroying it must not touch the shared
//! test adapter of other test binaries.

use finegrain::checkpoint::Checkpoint;
use finegrain::data::Dataset;
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::train::Event;
use finegrain::train::{Run, RunOptions, TrainConfig};
use std::path::Path;
use std::sync::Arc;

const SIZE: usize = 12;

fn data(root: &Path) -> Arc<dyn Dataset> {
    finegrain::testing::write_toy_folders(root, &["left", "top"], 8, SIZE as u32, 4);
    finegrain::testing::open_toy_folders(root, SIZE)
}

#[test]
fn a_lost_device_stops_the_run_with_a_clear_error_and_keeps_the_checkpoint() {
    // The shared adapter first: it fails (not skips) without one unless opted out.
    if finegrain::testing::gpu().is_none() {
        return;
    }
    let gpu = finegrain::Gpu::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let model = ModelConfig::preset("tiny", 1, SIZE, 2).unwrap();
    let cfg = TrainConfig {
        epochs: 4,
        batch: 4,
        loss: LossKind::Gce { k: 1 },
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        out_dir: out.clone().into(),
        threads: 1,
        evaluate: false,
        ..RunOptions::default()
    };
    let run = Run::new(
        &gpu,
        &model,
        &cfg,
        data(&dir.path().join("data")),
        None,
        opts,
    )
    .unwrap();
    let device = gpu.device.clone();
    let mut checkpoints = 0;
    let err = run
        .run(&mut |e: &Event| {
            if let Event::Checkpoint { .. } = e {
                checkpoints += 1;
                if checkpoints == 1 {
                    device.destroy();
                }
            }
        })
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.to_lowercase().contains("lost"), "{err}");
    let ck = Checkpoint::open(&out.join("last.safetensors")).unwrap();
    assert_eq!(
        ck.progress().unwrap().step,
        4,
        "the first epoch's checkpoint"
    );
}
