//! Training: the scheduler that records one iteration into one command buffer, the SGD
//! hyper-parameters and learning-rate schedule, lagged loss readback, evaluation, and the
//! run configuration stored in checkpoints.

pub mod memory;
pub mod network;
pub mod observe;
pub mod run;
pub mod schedule;
pub mod stop;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::method::diversify::DiversifyConfig;
use crate::method::loss::{effective_k, LossKind};
use crate::model::ModelConfig;
pub use network::{MethodConfig, NetMode, Network};
pub use observe::{Console, Event, Observer};
pub use run::{EpochSummary, Progress, Run, RunOptions, RunSummary};
pub use schedule::{LrSchedule, Schedule};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
pub use stop::StopFlag;

/// Which loss the main phase trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossChoice {
    /// Plain softmax cross-entropy (baseline).
    Ce,
    /// Gradient-boosting cross-entropy over the true class and the top-k negatives.
    Gce,
}

/// Everything that defines a training run; serialised into checkpoints so `--resume`
/// continues with the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// Linear learning-rate warm-up, in epochs (fractional allowed).
    pub warmup_epochs: f32,
    pub loss: LossChoice,
    /// GCE's k (clamped to C - 1).
    pub k: u32,
    /// Train the first epochs with cross-entropy before switching to GCE.
    pub ce_warmup_epochs: usize,
    /// Diversification block on/off, and its parameters.
    pub diversify: bool,
    pub p_peak: f32,
    pub p_patch: f32,
    /// Patch size G; 0 = scale with the class-map size (3 at 14x14).
    pub grid: u32,
    pub alpha: f32,
    pub seed: u64,
}

/// The recipe for small images with 10 classes (Fashion-MNIST): what
/// [`crate::recipe::Recipe`] starts from and the train example runs with no flags.
impl Default for TrainConfig {
    fn default() -> Self {
        let d = DiversifyConfig::default();
        TrainConfig {
            epochs: 4,
            batch: 32,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            schedule: Schedule::Cosine { min_factor: 0.0 },
            warmup_epochs: 0.2,
            loss: LossChoice::Gce,
            k: 3,
            ce_warmup_epochs: 1,
            diversify: true,
            p_peak: d.p_peak,
            p_patch: d.p_patch,
            grid: 0,
            alpha: d.alpha,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// The method settings for a model with `classes` classes and class maps of `map` size.
    /// Returns a note when GCE's k was clamped to C - 1.
    pub fn method(
        &self,
        classes: usize,
        map: (usize, usize),
    ) -> Result<(MethodConfig, Option<String>)> {
        let mut note = None;
        let loss = match self.loss {
            LossChoice::Ce => LossKind::CrossEntropy,
            LossChoice::Gce => {
                let (k, clamped) = effective_k(self.k, classes);
                if clamped {
                    note = Some(format!(
                        "GCE k = {} clamped to C - 1 = {k} ({classes} classes): GCE equals cross-entropy",
                        self.k
                    ));
                }
                LossKind::Gce { k }
            }
        };
        let diversify = if self.diversify {
            let cfg = DiversifyConfig {
                p_peak: self.p_peak,
                p_patch: self.p_patch,
                grid: if self.grid == 0 {
                    DiversifyConfig::grid_for_map(map.0, map.1)
                } else {
                    self.grid
                },
                alpha: self.alpha,
                seed: (self.seed as u32) ^ ((self.seed >> 32) as u32),
            };
            cfg.validate()?;
            Some(cfg)
        } else {
            None
        };
        Ok((MethodConfig { diversify, loss }, note))
    }

    /// Check ranges before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1"));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if self.lr.is_nan() || self.lr <= 0.0 || self.lr.is_infinite() {
            return Err(Error::invalid(
                "lr",
                format!("{} is not a positive number", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid(
                "momentum",
                format!("{} is not in [0, 1)", self.momentum),
            ));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(Error::invalid("weight_decay", "must be >= 0"));
        }
        if self.loss == LossChoice::Gce && self.k == 0 {
            return Err(Error::invalid("k", "GCE needs k >= 1"));
        }
        if !self.warmup_epochs.is_finite() || self.warmup_epochs < 0.0 {
            return Err(Error::invalid(
                "warmup_epochs",
                format!("{} is not a number >= 0", self.warmup_epochs),
            ));
        }
        match &self.schedule {
            Schedule::Constant => {}
            Schedule::Step { milestones, gamma } => {
                if !gamma.is_finite() || *gamma <= 0.0 {
                    return Err(Error::invalid(
                        "gamma",
                        format!("{gamma} is not a positive number"),
                    ));
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) || milestones.contains(&0) {
                    return Err(Error::invalid(
                        "milestones",
                        format!("{milestones:?}: epochs must be >= 1 and increasing"),
                    ));
                }
            }
            Schedule::Cosine { min_factor } => {
                if !(0.0..=1.0).contains(min_factor) {
                    return Err(Error::invalid(
                        "cosine min_factor",
                        format!("{min_factor} is not in [0, 1]"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Before allocating: every buffer of the network's memory plan must fit this adapter's
/// largest storage binding, else an error names the largest buffers and the largest batch
/// that fits.
fn check_fits(
    gpu: &Gpu,
    model: &ModelConfig,
    batch: usize,
    mode: NetMode,
    method: &MethodConfig,
) -> Result<()> {
    let class = memory::AdapterClass::of(gpu);
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let plan = memory::MemoryPlan::new(model, batch, mode, class, method)?;
    let fits = |p: &memory::MemoryPlan| p.buffers.iter().all(|b| b.bytes() <= limit);
    if fits(&plan) {
        return Ok(());
    }
    // Activations grow with the batch: the largest batch that fits, by bisection.
    let (mut lo, mut hi) = (0usize, batch);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match memory::MemoryPlan::new(model, mid, mode, class, method) {
            Ok(p) if fits(&p) => lo = mid,
            _ => hi = mid,
        }
    }
    Err(Error::DoesNotFit {
        what: format!(
            "the {} network of {} at {} px, batch {batch}",
            if mode == NetMode::Train {
                "training"
            } else {
                "inference"
            },
            model.name,
            model.input_size
        ),
        detail: format!(
            "its largest buffers ({}) exceed this adapter's storage binding limit of {:.1} MiB; {}",
            largest_buffers(&plan),
            memory::mib(limit),
            if lo > 0 {
                format!("batch {lo} fits")
            } else {
                "even batch 1 does not fit: use a smaller input size".to_string()
            }
        ),
    })
}

/// The plan's three largest buffers, for an error message: "`conv1.out` 196.0 MiB, ...".
fn largest_buffers(plan: &memory::MemoryPlan) -> String {
    plan.largest(3)
        .iter()
        .map(|b| format!("`{}` {:.1} MiB", b.label, memory::mib(b.bytes())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// After allocating: a device that ran out of memory says so with the plan's total and its
/// largest buffers, and suggests half the batch.
fn allocated(
    gpu: &Gpu,
    model: &ModelConfig,
    batch: usize,
    mode: NetMode,
    method: &MethodConfig,
) -> Result<()> {
    let Err(e) = gpu.check("allocating the network") else {
        return Ok(());
    };
    let plan = memory::MemoryPlan::new(model, batch, mode, memory::AdapterClass::of(gpu), method)?;
    Err(Error::DoesNotFit {
        what: format!("the network of {} at batch {batch}", model.name),
        detail: format!(
            "allocating its {:.1} MiB of buffers failed ({e}); the largest: {}; try batch {}",
            memory::mib(plan.total_bytes()),
            largest_buffers(&plan),
            (batch / 2).max(1)
        ),
    })
}

/// Statistics of one training step, read back a few steps late.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub step: u64,
    /// Mean loss over the batch.
    pub loss: f32,
    /// Top-1 / top-5 correct counts in the batch.
    pub top1: f32,
    pub top5: f32,
    pub images: usize,
}

/// Steps in flight before the oldest step's statistics are read back.
pub const READBACK_LAG: usize = 3;

/// Records and submits training iterations of a [`Network`]; reads statistics late.
pub struct Trainer {
    pub net: Network,
    pub config: TrainConfig,
    pub schedule: LrSchedule,
    /// Global step of the next iteration.
    pub step: u64,
    pub steps_per_epoch: u64,
    staging: Vec<wgpu::Buffer>,
    /// Host-readable copy of `net.scores`, reused by every evaluation batch.
    scores_staging: wgpu::Buffer,
    pending: VecDeque<(u64, usize, wgpu::SubmissionIndex)>,
}

impl Trainer {
    /// Build the network and its iteration for `model`; `steps_per_epoch` sizes the schedule.
    pub fn new(
        gpu: &Gpu,
        model: &ModelConfig,
        config: &TrainConfig,
        steps_per_epoch: u64,
    ) -> Result<(Trainer, Option<String>)> {
        config.validate()?;
        model.validate()?;
        let (method, note) = config.method(model.num_classes, model.feature_size())?;
        check_fits(gpu, model, config.batch, NetMode::Train, &method)?;
        let net = Network::new(gpu, model, config.batch, &method, config.seed)?;
        allocated(gpu, model, config.batch, NetMode::Train, &method)?;
        let spe = steps_per_epoch.max(1);
        let schedule = LrSchedule {
            base_lr: config.lr,
            schedule: config.schedule.clone(),
            warmup_steps: (config.warmup_epochs as f64 * spe as f64).round() as u64,
            total_steps: spe * config.epochs as u64,
            steps_per_epoch: spe,
        };
        let staging = (0..READBACK_LAG + 1)
            .map(|i| gpu.staging_buffer(&format!("loss.stats.staging{i}"), 16))
            .collect();
        let scores_staging = gpu.staging_buffer("scores.staging", net.scores.bytes());
        Ok((
            Trainer {
                net,
                config: config.clone(),
                schedule,
                step: 0,
                steps_per_epoch: spe,
                staging,
                scores_staging,
                pending: VecDeque::new(),
            },
            note,
        ))
    }

    /// Whether step `step` trains with cross-entropy (warm-up phase before GCE).
    pub fn in_ce_phase(&self, step: u64) -> bool {
        self.config.loss == LossChoice::Gce
            && step < self.config.ce_warmup_epochs as u64 * self.steps_per_epoch
    }

    /// Learning rate of the next step.
    pub fn lr(&self) -> f32 {
        self.schedule.lr(self.step)
    }

    /// Record one iteration (upload, forward, DB, loss, backward, SGD) into one command
    /// buffer and submit it. Nothing is read back here; statistics of the step
    /// `READBACK_LAG` iterations earlier are returned once available.
    pub fn step(&mut self, gpu: &Gpu, images: &[f32], labels: &[u32]) -> Result<Option<StepStats>> {
        let net = &self.net;
        gpu.upload(&net.images, images)?;
        gpu.upload(&net.labels, labels)?;
        gpu.upload(&net.step, &[self.step as u32, (self.step >> 32) as u32])?;
        let lr = self.schedule.lr(self.step);
        gpu.upload(
            &net.hyper,
            &[lr, self.config.momentum, self.config.weight_decay, 1.0],
        )?;
        let slot = (self.step % self.staging.len() as u64) as usize;
        let mut enc = gpu.encoder("train.step");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("train.step"),
                timestamp_writes: None,
            });
            for d in net.train_dispatches(self.in_ce_phase(self.step)) {
                d.record(&mut pass);
            }
        }
        enc.copy_buffer_to_buffer(&net.stats.buffer, 0, &self.staging[slot], 0, 16);
        let idx = gpu.queue.submit([enc.finish()]);
        self.pending.push_back((self.step, slot, idx));
        self.step += 1;
        if self.pending.len() > READBACK_LAG {
            return self.read_oldest(gpu).map(Some);
        }
        Ok(None)
    }

    /// Read back every step still in flight (end of an epoch).
    pub fn drain(&mut self, gpu: &Gpu) -> Result<Vec<StepStats>> {
        let mut out = Vec::new();
        while !self.pending.is_empty() {
            out.push(self.read_oldest(gpu)?);
        }
        Ok(out)
    }

    fn read_oldest(&mut self, gpu: &Gpu) -> Result<StepStats> {
        let (step, slot, idx) = self.pending.pop_front().expect("pending is non-empty");
        let buf = &self.staging[slot];
        let slice = buf.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(idx),
                timeout: None,
            })
            .map_err(|e| {
                // A poll that fails on a lost device says so rather than what it waited for.
                // A step that was submitted but never ran: the device is gone (wgpu drops
                // submissions to a lost or destroyed device), unless the error sink or the
                // device-lost callback says more.
                gpu.check("waiting for a training step")
                    .err()
                    .unwrap_or_else(|| Error::DeviceLost {
                        context: format!("waiting for training step {step}"),
                        reason: format!("its submission never ran ({e})"),
                    })
            })?;
        gpu.check("training step")?;
        rx.recv()
            .map_err(|_| Error::Gpu {
                context: "stats readback".into(),
                message: "map callback never ran".into(),
            })?
            .map_err(|e| Error::Gpu {
                context: "stats readback".into(),
                message: e.to_string(),
            })?;
        let v: [f32; 4] = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
                context: "stats readback".into(),
                message: e.to_string(),
            })?;
            let f: &[f32] = bytemuck::cast_slice(&view);
            [f[0], f[1], f[2], f[3]]
        };
        buf.unmap();
        let n = self.net.batch;
        let loss = v[0] / n as f32;
        if v[3] > 0.0 || !loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "training diverged: non-finite loss at step {step} ({} of {n} images; learning rate {:.3e}). \
                 Lower the learning rate or check the data; the last good checkpoint is kept.",
                v[3].max(1.0),
                self.schedule.lr(step)
            )));
        }
        Ok(StepStats {
            step,
            loss,
            top1: v[1],
            top5: v[2],
            images: n,
        })
    }

    /// Run the evaluation forward on one batch (padded to the network's batch size) and
    /// return its scores (N, C) for the first `valid` images.
    pub fn eval_scores(&self, gpu: &Gpu, images: &[f32], valid: usize) -> Result<Vec<f32>> {
        eval_batch(gpu, &self.net, &self.scores_staging, images, valid)
    }
}

/// The evaluation forward of `net` on one batch, its scores read back through `staging`.
fn eval_batch(
    gpu: &Gpu,
    net: &Network,
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
    let bytes = crate::gpu::map_read(gpu, staging, net.scores.bytes())?;
    let mut s: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
    s.truncate(valid * c);
    Ok(s)
}

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
        let method = MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
        };
        check_fits(gpu, model, batch, NetMode::Inference, &method)?;
        let net = Network::inference(gpu, model, batch)?;
        allocated(gpu, model, batch, NetMode::Inference, &method)?;
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
        let p = Predictor::new(gpu, &ck.model, batch)?;
        ck.load_into(gpu, &p.net, false)?;
        Ok(p)
    }

    /// Scores (N, C) of one batch (padded to the batch size) for its first `valid` images.
    pub fn scores(&self, gpu: &Gpu, images: &[f32], valid: usize) -> Result<Vec<f32>> {
        eval_batch(gpu, &self.net, &self.scores_staging, images, valid)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every numeric setting at zero or out of range is an error naming the setting.
    #[test]
    fn out_of_range_settings_name_themselves() {
        let d = TrainConfig::default();
        d.validate().unwrap();
        let step = |milestones: Vec<usize>, gamma: f32| Schedule::Step { milestones, gamma };
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig {
                    epochs: 0,
                    ..d.clone()
                },
                "epochs",
            ),
            (
                TrainConfig {
                    batch: 0,
                    ..d.clone()
                },
                "batch",
            ),
            (
                TrainConfig {
                    lr: 0.0,
                    ..d.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    lr: f32::NAN,
                    ..d.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    lr: f32::INFINITY,
                    ..d.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    momentum: 1.0,
                    ..d.clone()
                },
                "momentum",
            ),
            (
                TrainConfig {
                    momentum: -0.1,
                    ..d.clone()
                },
                "momentum",
            ),
            (
                TrainConfig {
                    weight_decay: -1.0,
                    ..d.clone()
                },
                "weight_decay",
            ),
            (TrainConfig { k: 0, ..d.clone() }, "k"),
            (
                TrainConfig {
                    warmup_epochs: -1.0,
                    ..d.clone()
                },
                "warmup_epochs",
            ),
            (
                TrainConfig {
                    warmup_epochs: f32::NAN,
                    ..d.clone()
                },
                "warmup_epochs",
            ),
            (
                TrainConfig {
                    schedule: step(vec![30, 60], 0.0),
                    ..d.clone()
                },
                "gamma",
            ),
            (
                TrainConfig {
                    schedule: step(vec![60, 30], 0.1),
                    ..d.clone()
                },
                "milestones",
            ),
            (
                TrainConfig {
                    schedule: step(vec![0], 0.1),
                    ..d.clone()
                },
                "milestones",
            ),
            (
                TrainConfig {
                    schedule: Schedule::Cosine { min_factor: 2.0 },
                    ..d.clone()
                },
                "min_factor",
            ),
        ];
        for (cfg, name) in cases {
            let e = cfg.validate().expect_err(name).to_string();
            assert!(e.contains(name), "{name}: {e}");
            assert!(
                !e.contains("--"),
                "no CLI flag names in library errors: {e}"
            );
        }
        for (cfg, name) in [
            (
                TrainConfig {
                    alpha: 1.5,
                    ..d.clone()
                },
                "alpha",
            ),
            (
                TrainConfig {
                    p_peak: -0.5,
                    ..d.clone()
                },
                "p_peak",
            ),
            (
                TrainConfig {
                    p_patch: 2.0,
                    ..d.clone()
                },
                "p_patch",
            ),
        ] {
            let e = cfg.method(10, (4, 4)).expect_err(name).to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }

    #[test]
    fn run_options_reject_zero_counts() {
        let d = run::RunOptions::default();
        d.validate().unwrap();
        for (o, name) in [
            (
                run::RunOptions {
                    threads: 0,
                    ..d.clone()
                },
                "threads",
            ),
            (
                run::RunOptions {
                    checkpoint_every: Some(0),
                    ..d.clone()
                },
                "checkpoint_every",
            ),
            (
                run::RunOptions {
                    max_steps: Some(0),
                    ..d.clone()
                },
                "max_steps",
            ),
        ] {
            let e = o.validate().expect_err(name).to_string();
            assert!(e.contains(name), "{name}: {e}");
        }
    }
}
