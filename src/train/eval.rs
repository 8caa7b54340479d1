//! Evaluation: the forward of one batch with its scores read back (what a training run and
//! [`crate::inference::Predictor`] evaluate through), and the accuracy bookkeeping over an
//! evaluation set.

use crate::error::Result;

/// Accuracy bookkeeping over an evaluation set (from downloaded scores).
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub classes: usize,
    pub images: usize,
    pub top1: usize,
    pub top5: usize,
    pub loss_sum: f64,
    /// `confusion[true][predicted]`
    pub confusion: Vec<Vec<usize>>,
}

impl EvalReport {
    pub fn new(classes: usize) -> Self {
        EvalReport {
            classes,
            images: 0,
            top1: 0,
            top5: 0,
            loss_sum: 0.0,
            confusion: vec![vec![0; classes]; classes],
        }
    }

    /// Add a batch of scores (N, C) with labels.
    pub fn add(&mut self, scores: &[f32], labels: &[u32]) {
        let c = self.classes;
        for (row, &y) in scores.chunks_exact(c).zip(labels) {
            let y = y as usize;
            // rank: classes strictly better, ties broken by lower index first.
            let sy = row[y];
            let better = row
                .iter()
                .enumerate()
                .filter(|&(j, &s)| s > sy || (s == sy && j < y))
                .count();
            if better == 0 {
                self.top1 += 1;
            }
            if better < 5 {
                self.top5 += 1;
            }
            let mut pred = 0;
            for j in 1..c {
                if row[j] > row[pred] {
                    pred = j;
                }
            }
            self.confusion[y][pred] += 1;
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&s| (s as f64 - m).exp()).sum::<f64>().ln();
            self.loss_sum += lse - sy as f64;
            self.images += 1;
        }
    }

    pub fn top1_acc(&self) -> f64 {
        self.top1 as f64 / self.images.max(1) as f64
    }

    pub fn top5_acc(&self) -> f64 {
        self.top5 as f64 / self.images.max(1) as f64
    }

    /// Mean cross-entropy of the evaluation scores.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.images.max(1) as f64
    }

    /// Per-class top-1 accuracy.
    pub fn per_class(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| row[i] as f64 / row.iter().sum::<usize>().max(1) as f64)
            .collect()
    }

    /// The `n` most frequent (true, predicted, count) confusions with true != predicted.
    pub fn most_confused(&self, n: usize) -> Vec<(usize, usize, usize)> {
        let mut v: Vec<(usize, usize, usize)> = Vec::new();
        for (i, row) in self.confusion.iter().enumerate() {
            for (j, &k) in row.iter().enumerate() {
                if i != j && k > 0 {
                    v.push((i, j, k));
                }
            }
        }
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        v.truncate(n);
        v
    }
}

/// The evaluation forward of `net` on one batch, its scores read back through `staging`.
pub(crate) fn eval_batch(
    gpu: &crate::gpu::Gpu,
    net: &super::Network,
    staging: &wgpu::Buffer,
    images: &[f32],
    valid: usize,
) -> Result<Vec<f32>> {
    pollster::block_on(eval_batch_async(gpu, net, staging, images, valid))
}

pub(crate) async fn eval_batch_async(
    gpu: &crate::gpu::Gpu,
    net: &super::Network,
    staging: &wgpu::Buffer,
    images: &[f32],
    valid: usize,
) -> Result<Vec<f32>> {
    gpu.upload(&net.images, images)?;
    let mut enc = gpu.encoder("eval.batch");
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("eval.batch"),
            timestamp_writes: None,
        });
        for d in &net.eval {
            d.record(&mut pass);
        }
    }
    enc.copy_buffer_to_buffer(&net.scores.buffer, 0, staging, 0, net.scores.bytes());
    gpu.queue.submit([enc.finish()]);
    let c = net.config.num_classes;
    let bytes = crate::gpu::map_read_async(gpu, staging, net.scores.bytes()).await?;
    let mut s: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    s.truncate(valid * c);
    Ok(s)
}
