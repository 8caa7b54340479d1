//! The training loop creates no GPU buffer or bind group after setup. Its own test binary,
//! so no other test allocates on the shared device while it counts.

use finegrain::model::ModelConfig;
use finegrain::testing::gpu;
use finegrain::train::{TrainConfig, Trainer};

const SIZE: usize = 12;

#[test]
fn no_gpu_allocation_inside_the_training_loop() {
    let Some(g) = gpu() else { return };
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    let (mut t, _) = Trainer::new(
        g,
        &model,
        &TrainConfig {
            batch: 4,
            ce_warmup_epochs: 1,
            ..TrainConfig::default()
        },
        10,
    )
    .unwrap();
    let images = vec![0.5f32; 4 * SIZE * SIZE];
    let labels = vec![0u32, 1, 2, 1];
    t.step(g, &images, &labels).unwrap();
    let before = g.created();
    for _ in 0..6 {
        t.step(g, &images, &labels).unwrap();
    }
    t.drain(g).unwrap();
    assert_eq!(
        g.created(),
        before,
        "(buffers, bind groups) created during 6 training steps"
    );
}
