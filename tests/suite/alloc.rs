//! The training loop creates no GPU buffer or bind group after setup, with and without
//! gradient accumulation. On a device of its own, so that no other test of the binary
//! allocates on it while it counts.

use finegrain::model::ModelConfig;
use finegrain::train::{TrainConfig, Trainer};

const SIZE: usize = 12;

#[test]
fn no_gpu_allocation_inside_the_training_loop() {
    if finegrain::testing::gpu().is_none() {
        return;
    }
    let g = &finegrain::Gpu::from_env().unwrap();
    let model = ModelConfig::preset("tiny", 1, SIZE, 3).unwrap();
    for accumulate in [1, 2] {
        let mut t = Trainer::new(
            g,
            &model,
            &TrainConfig {
                batch: 4,
                ce_warmup_epochs: 1,
                accumulate,
                ..TrainConfig::default()
            },
            10,
        )
        .unwrap();
        let images = vec![0.5f32; accumulate * 4 * SIZE * SIZE];
        let labels: Vec<u32> = [0u32, 1, 2, 1].repeat(accumulate);
        t.step(g, &images, &labels).unwrap();
        let before = g.created();
        for _ in 0..6 {
            t.step(g, &images, &labels).unwrap();
        }
        t.drain(g).unwrap();
        assert_eq!(
            g.created(),
            before,
            "(buffers, bind groups) created during 6 training steps of {accumulate} \
             micro-batch(es)"
        );
    }
}
