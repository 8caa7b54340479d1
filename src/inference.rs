//! Inference: [`Predictor`] runs the evaluation forward (running batch-norm statistics, no
//! masks) of an inference-only network, batch by batch; [`crate::Classifier`] builds on it
//! (image files in, top-k classes and class maps out). A training run evaluates through the
//! same forward ([`crate::train::Trainer::eval_scores`]).

use crate::error::Result;
use crate::gpu::{Gpu, Precision};
use crate::method::loss::LossKind;
use crate::model::ModelConfig;
use crate::train::{MethodConfig, NetMode, Network};

/// Inference on an inference-only network ([`NetMode::Inference`]: about half the GPU
/// memory of a training network): batched evaluation scores, class maps left in
/// `net.maps` after each batch.
pub struct Predictor {
    pub net: Network,
    scores_staging: wgpu::Buffer,
}

impl Predictor {
    /// An inference network for `model` at batch size `batch` (weights from seed 0: load a
    /// checkpoint with [`Predictor::from_checkpoint`] or `Checkpoint::load_into`).
    pub fn new(gpu: &Gpu, model: &ModelConfig, batch: usize) -> Result<Predictor> {
        Predictor::with_precision(gpu, model, batch, Precision::F32)
    }

    /// As [`Predictor::new`] in `precision` (mixed: f16 activations and weight copies).
    pub fn with_precision(
        gpu: &Gpu,
        model: &ModelConfig,
        batch: usize,
        precision: Precision,
    ) -> Result<Predictor> {
        let method = MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
            accumulate: false,
        };
        let at = (NetMode::Inference, precision);
        crate::train::check_fits(gpu, model, batch, at, &method)?;
        let net = Network::inference_with_precision(gpu, model, batch, precision)?;
        crate::train::allocated(gpu, model, batch, at, &method)?;
        let scores_staging = gpu.staging_buffer("scores.staging", net.scores.bytes());
        Ok(Predictor {
            net,
            scores_staging,
        })
    }

    /// The checkpoint's model at batch size `batch`, with its weights and statistics.
    pub fn from_checkpoint(
        gpu: &Gpu,
        ck: &crate::checkpoint::Checkpoint,
        batch: usize,
    ) -> Result<Predictor> {
        Predictor::from_checkpoint_with_precision(gpu, ck, batch, Precision::F32)
    }

    /// As [`Predictor::from_checkpoint`] in `precision` (a checkpoint holds f32 weights
    /// whatever precision it was trained in).
    pub fn from_checkpoint_with_precision(
        gpu: &Gpu,
        ck: &crate::checkpoint::Checkpoint,
        batch: usize,
        precision: Precision,
    ) -> Result<Predictor> {
        let p = Predictor::with_precision(gpu, &ck.model, batch, precision)?;
        ck.load_into(gpu, &p.net, false)?;
        Ok(p)
    }

    /// Scores (N, C) of one batch (padded to the batch size) for its first `valid` images.
    pub fn scores(&self, gpu: &Gpu, images: &[f32], valid: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.scores_async(gpu, images, valid))
    }

    /// [`Predictor::scores`] as a future (what a web page awaits).
    pub async fn scores_async(&self, gpu: &Gpu, images: &[f32], valid: usize) -> Result<Vec<f32>> {
        crate::train::eval::eval_batch_async(gpu, &self.net, &self.scores_staging, images, valid)
            .await
    }
}
