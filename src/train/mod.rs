//! Training: [`Trainer`] records one optimizer step (its micro-batches, then SGD) and reads
//! its statistics a few steps late (inference is [`crate::inference`]). A whole run is a
//! [`Run`], configured by a [`TrainConfig`] and [`RunOptions`] and reporting to an
//! [`Observer`].
//!
//! Every name a user needs is here, at `finegrain::train::Name`, one path each. The public
//! modules [`network`], [`memory`] and [`topology`] are the engine's insides, public on
//! purpose for those who build on them (the benchmark sizes networks and times their
//! dispatch lists with them); they may change between minor versions.

pub(crate) mod allocation;
pub(crate) mod config;
pub(crate) mod eval;
pub(crate) mod lockholder;
pub mod memory;
pub mod network;
pub(crate) mod observe;
pub(crate) mod params;
pub(crate) mod run;
pub(crate) mod rundir;
pub(crate) mod schedule;
pub(crate) mod stop;
pub mod topology;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Precision};
use crate::method::loss::LossKind;
use crate::model::ModelConfig;
pub use config::{MethodConfig, NetMode, TrainConfig};
pub use eval::EvalReport;
pub use network::Network;
pub use observe::{Console, EpochSummary, Event, Observer, ProgressStyle, RunStart, Silent};
pub use run::{
    evaluate, evaluate_with, plot_metrics, read_metrics, write_metrics, Run, RunOptions, RunSummary,
};
pub use rundir::{LockHolder, OutDir, CHECKPOINT_FILE, LOCK_FILE, RUN_FILES};
pub use schedule::{LrSchedule, Schedule};
use std::collections::VecDeque;
pub use stop::StopFlag;

/// Before allocating: every buffer of the network's memory plan must fit this adapter's
/// largest storage binding, else an error names the largest buffers and the largest batch
/// that fits.
pub(crate) fn check_fits(
    gpu: &Gpu,
    model: &ModelConfig,
    batch: usize,
    (mode, precision): (NetMode, Precision),
    method: &MethodConfig,
) -> Result<()> {
    let class = gpu.class();
    let limit = gpu
        .limits
        .max_storage_buffer_binding_size
        .min(gpu.limits.max_buffer_size);
    let plan = memory::MemoryPlan::with_precision(model, batch, mode, class, method, precision)?;
    let fits = |p: &memory::MemoryPlan| p.buffers.iter().all(|b| b.bytes() <= limit);
    if fits(&plan) {
        return Ok(());
    }
    // Activations grow with the batch: the largest batch that fits, by bisection.
    let (mut lo, mut hi) = (0usize, batch);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match memory::MemoryPlan::with_precision(model, mid, mode, class, method, precision) {
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
pub(crate) fn allocated(
    gpu: &Gpu,
    model: &ModelConfig,
    batch: usize,
    (mode, precision): (NetMode, Precision),
    method: &MethodConfig,
) -> Result<()> {
    let Err(e) = gpu.check("allocating the network") else {
        return Ok(());
    };
    let class = gpu.class();
    let plan = memory::MemoryPlan::with_precision(model, batch, mode, class, method, precision)?;
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
    /// Mixed precision: whether the optimizer skipped this step (a gradient overflowed at
    /// the loss scale; the scale was halved).
    pub skipped: bool,
    /// Mixed precision: the loss scale after this step (`None` in f32).
    pub loss_scale: Option<f32>,
}

/// Steps in flight before the oldest step's statistics are read back.
pub const READBACK_LAG: usize = 3;

/// Records and submits training iterations of a [`Network`]; reads statistics late.
pub struct Trainer {
    pub(crate) net: Network,
    pub(crate) config: TrainConfig,
    pub(crate) schedule: LrSchedule,
    /// The optimizer step the next call of [`Trainer::step`] runs (0-based): the number of
    /// steps taken so far, including those before a resume.
    pub(crate) next_step: u64,
    pub(crate) steps_per_epoch: u64,
    staging: Vec<wgpu::Buffer>,
    /// Host-readable copy of `net.scores`, reused by every evaluation batch.
    scores_staging: wgpu::Buffer,
    /// (step, staging slot, images in the step, submission) of the steps in flight.
    pending: VecDeque<(u64, usize, usize, wgpu::SubmissionIndex)>,
    /// Mixed precision: the loss-scaling state after the last step read back (staged with
    /// its statistics), or as set before the first.
    amp_last: Option<[u32; 4]>,
    /// A data-parallel run: the host side of the gradient exchange, made on its first step.
    exchange: Option<Exchange>,
    /// Seconds spent in the ranks' exchanges ([`Trainer::exchange_seconds`]).
    exchange_seconds: (f64, f64),
    /// What the set-up adjusted, for the user ([`Trainer::notes`]).
    notes: Vec<String>,
}

/// What one optimizer step of [`Trainer::step_with`] returns.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// The statistics of the step [`READBACK_LAG`] steps earlier, once available.
    pub stats: Option<StepStats>,
    /// Some rank asked to stop (its `stop` argument was true): every rank gets the same
    /// answer at the same step, so all stop together.
    pub stop: bool,
}

/// The host side of a data-parallel step: every parameter gradient, the loss statistics
/// and the batch-norm running statistics staged in one buffer, and their host copy.
struct Exchange {
    staging: wgpu::Buffer,
    /// Gradient values, then the 4 loss statistics, then the stop vote.
    summed: Vec<f32>,
    /// The batch-norm running statistics (and any other state tensor), rank 0's kept.
    state: Vec<f32>,
}

/// Bytes of each step's staged statistics: the loss statistics (f32 x 4), then the
/// loss-scaling state (u32 x 4; zeros in f32).
const STAGED: u64 = 32;

impl Trainer {
    /// Build the network and its iteration for `model`; `steps_per_epoch` sizes the schedule.
    /// What the set-up adjusted is in [`Trainer::notes`].
    pub fn new(
        gpu: &Gpu,
        model: &ModelConfig,
        config: &TrainConfig,
        steps_per_epoch: u64,
    ) -> Result<Trainer> {
        config.validate()?;
        model.validate()?;
        let (method, note) = config.method(model.num_classes, model.feature_size())?;
        let at = (NetMode::Train, config.precision);
        check_fits(gpu, model, config.batch, at, &method)?;
        let net = Network::with_precision(
            gpu,
            model,
            config.batch,
            &method,
            config.seed,
            config.precision,
        )?;
        allocated(gpu, model, config.batch, at, &method)?;
        let amp_last = match &net.amp {
            Some(amp) => {
                let state = crate::kernels::amp::initial_state(network::LOSS_SCALE_INIT);
                gpu.upload(amp, &state)?;
                Some(state)
            }
            None => None,
        };
        let spe = steps_per_epoch.max(1);
        let schedule = LrSchedule {
            base_lr: config.lr,
            schedule: config.schedule.clone(),
            warmup_steps: (config.warmup_epochs as f64 * spe as f64).round() as u64,
            total_steps: spe * config.epochs as u64,
            steps_per_epoch: spe,
        };
        let staging = (0..READBACK_LAG + 1)
            .map(|i| gpu.staging_buffer(&format!("loss.stats.staging{i}"), STAGED))
            .collect();
        let scores_staging = gpu.staging_buffer("scores.staging", net.scores.bytes());
        Ok(Trainer {
            net,
            config: config.clone(),
            schedule,
            next_step: 0,
            steps_per_epoch: spe,
            staging,
            scores_staging,
            pending: VecDeque::new(),
            amp_last,
            exchange: None,
            exchange_seconds: (0.0, 0.0),
            notes: note.into_iter().collect(),
        })
    }

    /// The network: its weights, buffers and recorded dispatch lists.
    pub fn net(&self) -> &Network {
        &self.net
    }

    /// The training configuration it was built with.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The learning-rate schedule, in optimizer steps.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Optimizer steps in an epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// The optimizer step the next [`Trainer::step`] runs: the steps taken so far.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }

    /// Continue at optimizer step `step` (the schedule, the masks and the warm-up phase
    /// follow it), as a resumed run does after loading its checkpoint.
    pub fn set_next_step(&mut self, step: u64) {
        self.next_step = step;
    }

    /// What the set-up adjusted in the configuration, as sentences for the user (GCE's k
    /// clamped to the class count); empty when nothing was.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether step `step` trains with cross-entropy (warm-up phase before GCE).
    pub fn in_ce_phase(&self, step: u64) -> bool {
        matches!(self.config.loss, LossKind::Gce { .. })
            && step < self.config.ce_warmup_epochs as u64 * self.steps_per_epoch
    }

    /// Learning rate of the next step.
    pub fn lr(&self) -> f32 {
        self.schedule.lr(self.next_step)
    }

    /// One optimizer step: for each of the [`TrainConfig::accumulate`] micro-batches, the
    /// upload, forward, DB, loss and backward recorded into one command buffer (the
    /// gradients added up on the GPU), then SGD on the sum, recorded with the last one.
    /// `images` and `labels` hold the micro-batches one after the other
    /// (`accumulate * batch` images). Nothing is read back here; statistics of the step
    /// `READBACK_LAG` steps earlier are returned once available.
    pub fn step(&mut self, gpu: &Gpu, images: &[f32], labels: &[u32]) -> Result<Option<StepStats>> {
        Ok(self
            .step_with(gpu, images, labels, &crate::distributed::Solo, false)?
            .stats)
    }

    /// [`Trainer::step`] as one rank of a data-parallel run over `comm`: this rank's
    /// micro-batches (its share of the global batch, [`crate::distributed::Shard`]), then
    /// the parameter gradients and loss statistics summed over the ranks in rank order
    /// (and averaged by the step), rank 0's batch-norm running statistics copied to every
    /// rank, and the same SGD step on every rank. `stop`: this rank wants to stop after this
    /// step (a signal); the outcome says whether any rank does. With one rank
    /// ([`crate::distributed::Solo`]) nothing is exchanged.
    pub fn step_with(
        &mut self,
        gpu: &Gpu,
        images: &[f32],
        labels: &[u32],
        comm: &dyn crate::distributed::Collective,
        stop: bool,
    ) -> Result<StepOutcome> {
        let (a, n) = (self.config.accumulate, self.net.batch);
        let per_batch = self.net.images.numel();
        if labels.len() != a * n || images.len() != a * per_batch {
            return Err(Error::invalid(
                "training step",
                format!(
                    "{} labels and {} image values given; a step of {a} micro-batch(es) of {n} \
                     images takes {} and {}",
                    labels.len(),
                    images.len(),
                    a * n,
                    a * per_batch
                ),
            ));
        }
        let shard = crate::distributed::Shard {
            rank: comm.rank(),
            ranks: comm.size(),
            accumulate: a,
        };
        let distributed = shard.ranks > 1;
        let net = &self.net;
        let lr = self.schedule.lr(self.next_step);
        // The summed gradient is averaged over the micro-batches of the whole step.
        let grad_scale = 1.0 / shard.micro_batches() as f32;
        use crate::kernels::sgd::{HYPER_GRAD_SCALE, HYPER_LEN, HYPER_LR};
        use crate::kernels::sgd::{HYPER_MOMENTUM, HYPER_WEIGHT_DECAY};
        let mut hyper = [0.0f32; HYPER_LEN];
        hyper[HYPER_LR] = lr;
        hyper[HYPER_MOMENTUM] = self.config.momentum;
        hyper[HYPER_WEIGHT_DECAY] = self.config.weight_decay;
        hyper[HYPER_GRAD_SCALE] = grad_scale;
        gpu.upload(&net.hyper, &hyper)?;
        let ce = self.in_ce_phase(self.next_step);
        let slot = (self.next_step % self.staging.len() as u64) as usize;
        let mut last = None;
        for i in 0..a {
            gpu.upload(&net.images, &images[i * per_batch..(i + 1) * per_batch])?;
            gpu.upload(&net.labels, &labels[i * n..(i + 1) * n])?;
            let seed = shard.mask_seed(self.next_step, i);
            gpu.upload(&net.mask_seed, &[seed as u32, (seed >> 32) as u32])?;
            let finish = i + 1 == a && !distributed;
            let mut enc = gpu.encoder("train.step");
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("train.step"),
                    timestamp_writes: None,
                });
                for d in net.train_dispatches(ce, i > 0) {
                    d.record(&mut pass);
                }
                if finish {
                    for d in &net.optimizer {
                        d.record(&mut pass);
                    }
                }
            }
            if finish {
                self.stage_stats(&mut enc, slot);
            }
            last = Some(gpu.queue.submit([enc.finish()]));
        }
        let mut stop_all = stop;
        if distributed {
            stop_all = self.exchange(gpu, comm, stop)?;
            let mut enc = gpu.encoder("train.optimizer");
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("train.optimizer"),
                    timestamp_writes: None,
                });
                for d in &self.net.optimizer {
                    d.record(&mut pass);
                }
            }
            self.stage_stats(&mut enc, slot);
            last = Some(gpu.queue.submit([enc.finish()]));
        }
        let idx = last.expect("a step has at least one micro-batch");
        let images_in_step = n * shard.micro_batches();
        self.pending
            .push_back((self.next_step, slot, images_in_step, idx));
        self.next_step += 1;
        let stats = match self.pending.len() > READBACK_LAG {
            true => Some(self.read_oldest(gpu)?),
            false => None,
        };
        Ok(StepOutcome {
            stats,
            stop: stop_all,
        })
    }

    /// A data-parallel run: seconds so far (waiting for this rank's micro-batches and
    /// reading the gradients back; in the ranks' sums and broadcasts). Zeros in one process.
    pub fn exchange_seconds(&self) -> (f64, f64) {
        self.exchange_seconds
    }

    /// Copy the step's loss statistics (and loss-scaling state) into staging slot `slot`.
    fn stage_stats(&self, enc: &mut wgpu::CommandEncoder, slot: usize) {
        let net = &self.net;
        enc.copy_buffer_to_buffer(&net.stats.buffer, 0, &self.staging[slot], 0, 16);
        if let Some(amp) = &net.amp {
            enc.copy_buffer_to_buffer(&amp.buffer, 0, &self.staging[slot], 16, 16);
        }
    }

    /// A data-parallel step's exchange, after this rank's micro-batches: the gradients and
    /// loss statistics down, summed over the ranks (with the stop votes), rank 0's state
    /// tensors broadcast, and all of it back up. Returns whether any rank votes to stop.
    fn exchange(
        &mut self,
        gpu: &Gpu,
        comm: &dyn crate::distributed::Collective,
        stop: bool,
    ) -> Result<bool> {
        let net = &self.net;
        let grads: usize = net.params.iter().map(|p| p.grad.numel()).sum();
        let state: usize = net.state.iter().map(|s| s.value.numel()).sum();
        let ex = match &mut self.exchange {
            Some(ex) => ex,
            None => self.exchange.insert(Exchange {
                staging: gpu.staging_buffer("exchange.staging", 4 * (grads + 4 + state) as u64),
                summed: vec![0.0; grads + 5],
                state: vec![0.0; state],
            }),
        };
        let mut enc = gpu.encoder("exchange.download");
        let mut at = 0u64;
        let tensors = net
            .params
            .iter()
            .map(|p| &p.grad)
            .chain([&net.stats])
            .chain(net.state.iter().map(|s| &s.value));
        for t in tensors {
            enc.copy_buffer_to_buffer(&t.buffer, 0, &ex.staging, at, t.bytes());
            at += t.bytes();
        }
        gpu.queue.submit([enc.finish()]);
        let t0 = std::time::Instant::now();
        // Straight from the mapped range into the exchange's own buffers: nothing is
        // allocated per step.
        crate::gpu::map_read_with(gpu, &ex.staging, at, |bytes| {
            let values: &[f32] = bytemuck::cast_slice(bytes);
            ex.summed[..grads + 4].copy_from_slice(&values[..grads + 4]);
            ex.state.copy_from_slice(&values[grads + 4..]);
        })?;
        self.exchange_seconds.0 += t0.elapsed().as_secs_f64();
        ex.summed[grads + 4] = stop as u32 as f32;
        let t0 = std::time::Instant::now();
        comm.sum(&mut ex.summed)?;
        comm.broadcast(&mut ex.state, 0)?;
        self.exchange_seconds.1 += t0.elapsed().as_secs_f64();
        let mut at = 0;
        for p in &net.params {
            let k = p.grad.numel();
            gpu.upload(&p.grad, &ex.summed[at..at + k])?;
            at += k;
        }
        gpu.upload(&net.stats, &ex.summed[grads..grads + 4])?;
        if comm.rank() != 0 {
            let mut at = 0;
            for s in &net.state {
                let k = s.value.numel();
                gpu.upload(&s.value, &ex.state[at..at + k])?;
                at += k;
            }
        }
        Ok(ex.summed[grads + 4] > 0.0)
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
        let (step, slot, n, idx) = self.pending.pop_front().expect("pending is non-empty");
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
        let (v, amp): ([f32; 4], [u32; 4]) = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
                context: "stats readback".into(),
                message: e.to_string(),
            })?;
            let f: &[f32] = bytemuck::cast_slice(&view[..16]);
            let a: &[u32] = bytemuck::cast_slice(&view[16..32]);
            ([f[0], f[1], f[2], f[3]], [a[0], a[1], a[2], a[3]])
        };
        buf.unmap();
        let loss = v[0] / n as f32;
        if v[3] > 0.0 || !loss.is_finite() {
            return Err(Error::NonFinite {
                step,
                lr: self.schedule.lr(step),
                images: v[3].max(1.0) as usize,
                of: n,
            });
        }
        let (skipped, loss_scale) = match self.amp_last {
            Some(before) => {
                // This step's skip counter against the one before it.
                let k = crate::kernels::amp::AMP_SKIPPED;
                self.amp_last = Some(amp);
                let scale = f32::from_bits(amp[crate::kernels::amp::AMP_SCALE]);
                (amp[k] > before[k], Some(scale))
            }
            None => (false, None),
        };
        Ok(StepStats {
            step,
            loss,
            top1: v[1],
            top5: v[2],
            images: n,
            skipped,
            loss_scale,
        })
    }

    /// Mixed precision: the loss-scaling state after the last step read back (it comes
    /// with each step's statistics, so no extra readback; after [`Trainer::drain`], the
    /// state now). `None` in f32.
    pub fn amp_state(&self) -> Option<[u32; 4]> {
        self.amp_last
    }

    /// Mixed precision: continue from a saved loss-scaling state (a resumed run); an error
    /// in f32 or for a scale `valid_scale` refuses.
    pub fn set_amp_state(&mut self, gpu: &Gpu, state: [u32; 4]) -> Result<()> {
        let Some(amp) = &self.net.amp else {
            return Err(Error::invalid(
                "loss-scaling state",
                "the checkpoint's progress has one, but this run is not in mixed precision",
            ));
        };
        let scale = f32::from_bits(state[crate::kernels::amp::AMP_SCALE]);
        if !crate::kernels::amp::valid_scale(scale) {
            return Err(Error::invalid(
                "loss-scaling state",
                format!("loss scale {scale} is not a power of two in the scaler's range"),
            ));
        }
        // The flag is always clear between steps.
        let state = [state[0], state[1], state[2], 0];
        self.amp_last = Some(state);
        gpu.upload(amp, &state)
    }

    /// Run the evaluation forward on one batch (padded to the network's batch size) and
    /// return its scores (N, C) for the first `valid` images.
    pub fn eval_scores(&self, gpu: &Gpu, images: &[f32], valid: usize) -> Result<Vec<f32>> {
        eval::eval_batch(gpu, &self.net, &self.scores_staging, images, valid)
    }
}
