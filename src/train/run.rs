//! A whole training run: datasets, network, epochs with background data loading, lagged
//! statistics, evaluation, metrics, checkpoints and exact resume ([`Run`]). The `train`
//! example is a command-line front end to it.

use super::observe::{EpochSummary, Event, Observer, RunStart};
use super::rundir::{OutDir, RunDir};
use super::{EvalReport, StepStats, StopFlag, TrainConfig, Trainer};
use crate::checkpoint::{self, Checkpoint, CLASSES_KEY, PREPROCESS_KEY, PROGRESS_KEY, TRAIN_KEY};
use crate::data::{Dataset, Loader, LoaderOptions};
use crate::distributed::{Collective, Solo};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::ModelConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::Progress;
use crate::gpu::Precision;

/// Options of a run besides the model and the training configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Folder for checkpoints (`last.safetensors`), `metrics.csv` and `metrics.png`: by
    /// default a new folder of its own inside `runs/` (`runs/run-1`, `runs/run-2`, ...; a
    /// resumed run continues in its checkpoint's folder), or a folder given as a path
    /// (`"runs/mine".into()`), which must not hold another run's files unless
    /// [`overwrite`](Self::overwrite) is set ([`OutDir`]). A run locks its folder while
    /// alive: a second run there is refused ([`Error::RunLocked`]).
    pub out_dir: OutDir,
    /// Let a fresh run (or one resumed from another checkpoint) replace the files of
    /// another run in [`out_dir`](Self::out_dir): they stay until this run writes its first
    /// checkpoint. Without it such a folder is refused ([`Error::RunExists`]).
    pub overwrite: bool,
    /// Stop after this many steps in total (tests, quick looks); `None`: all epochs.
    pub max_steps: Option<u64>,
    /// Also checkpoint every this many steps (besides each epoch end).
    pub checkpoint_every: Option<u64>,
    /// Fail on the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Decoding threads.
    pub threads: usize,
    /// Evaluate on the test split at each epoch end.
    pub evaluate: bool,
    /// The evaluation preprocessing, recorded in every checkpoint so that inference
    /// prepares images as the test set was ([`Run::from_recipe`] sets it).
    pub preprocessing: Option<crate::data::Preprocessing>,
    /// Extra metadata written into every checkpoint.
    pub metadata: HashMap<String, String>,
    /// Initialise the backbone from a torchvision ResNet state dict (ignored on resume).
    pub init: Option<PathBuf>,
    /// Checked after every step: when set, the run finishes that step, writes its
    /// checkpoint and returns with [`RunSummary::interrupted`] ([`StopFlag::on_signals`]
    /// sets it on Ctrl-C / SIGTERM).
    pub stop: Option<StopFlag>,
    /// Resume: continue in this precision instead of the checkpoint's (its weights are
    /// f32 either way; a note says so, and the run no longer repeats the original one bit
    /// for bit). Ignored by [`Run::new`], which takes the configuration's.
    pub precision: Option<Precision>,
    /// A data-parallel run: this process's rank in the job ([`crate::distributed`]; with the
    /// cargo feature `mpi`, `distributed::mpi::Mpi`). Each rank trains on its share of every
    /// global batch; rank 0 alone writes the folder (checkpoints, metrics) and should be
    /// the only one reporting to a console. `None`: one process.
    pub collective: Option<Rc<dyn Collective>>,
}

impl Default for RunOptions {
    /// A new folder inside `runs/`, every core decoding, evaluation at each epoch end,
    /// checkpoints at epoch ends only.
    fn default() -> Self {
        RunOptions {
            out_dir: OutDir::default(),
            overwrite: false,
            max_steps: None,
            checkpoint_every: None,
            strict: false,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            evaluate: true,
            preprocessing: None,
            metadata: HashMap::new(),
            init: None,
            stop: None,
            precision: None,
            collective: None,
        }
    }
}

impl RunOptions {
    /// Check ranges before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        if self.threads == 0 {
            return Err(Error::invalid("threads", "must be at least 1"));
        }
        if self.checkpoint_every == Some(0) {
            return Err(Error::invalid(
                "checkpoint_every",
                "must be at least 1 step",
            ));
        }
        if self.max_steps == Some(0) {
            return Err(Error::invalid("max_steps", "must be at least 1 step"));
        }
        Ok(())
    }
}

/// Per-step and per-epoch numbers of a finished run.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// (global step, loss) of every training step this call ran, in order; a resumed run
    /// starts at the step it resumed from.
    pub step_losses: Vec<(u64, f32)>,
    pub epochs: Vec<EpochSummary>,
    /// Final evaluation (if any).
    pub final_eval: Option<EvalReport>,
    /// Images skipped as unreadable: (file, reason).
    pub skipped: Vec<(String, String)>,
    pub progress: Option<Progress>,
    /// The run stopped early because its [`RunOptions::stop`] flag was set; its checkpoint
    /// holds where it stopped, so resuming continues exactly.
    pub interrupted: bool,
    /// A data-parallel run: seconds this rank spent in the ranks' gradient sums and
    /// broadcasts (the all-reduce), and in the whole run (0 and its time in one process).
    pub exchange_seconds: f64,
    pub seconds: f64,
}

/// Evaluate `net` on a whole dataset (no masks, running BN statistics).
pub fn evaluate(
    gpu: &Gpu,
    trainer: &Trainer,
    data: Arc<dyn Dataset>,
    threads: usize,
    strict: bool,
) -> Result<EvalReport> {
    let (n, classes) = (trainer.net.batch, trainer.net.config.num_classes);
    evaluate_with(data, n, classes, threads, strict, |images, valid| {
        trainer.eval_scores(gpu, images, valid)
    })
    .map(|(report, _)| report)
}

/// Evaluate a whole dataset in batches of `batch` through `scores` (a batch of images,
/// padded to `batch`, and its number of valid images -> their scores `(valid, classes)`).
/// Returns the report and the samples skipped as unreadable (file, reason).
pub fn evaluate_with(
    data: Arc<dyn Dataset>,
    batch: usize,
    classes: usize,
    threads: usize,
    strict: bool,
    scores: impl FnMut(&[f32], usize) -> Result<Vec<f32>>,
) -> Result<(EvalReport, Vec<(String, String)>)> {
    evaluate_shard(data, (batch, classes), (threads, strict), (0, 1), scores)
}

/// [`evaluate_with`] on one rank's share of the batches: every `count`-th batch from batch
/// `index` (`shard`, as [`LoaderOptions::shard`]).
fn evaluate_shard(
    data: Arc<dyn Dataset>,
    (batch, classes): (usize, usize),
    (threads, strict): (usize, bool),
    shard: (usize, usize),
    mut scores: impl FnMut(&[f32], usize) -> Result<Vec<f32>>,
) -> Result<(EvalReport, Vec<(String, String)>)> {
    let n = batch;
    let mut report = EvalReport::new(classes);
    let mut loader = Loader::new(
        data,
        LoaderOptions {
            batch: n,
            shuffle: false,
            train: false,
            seed: 0,
            epoch: 0,
            start_batch: 0,
            drop_last: false,
            threads,
            strict,
            prefetch: 3,
            shard,
        },
    )?;
    while let Some(batch) = loader.next() {
        let b = batch?;
        let s = scores(&b.images, b.len)?;
        report.add(&s, &b.labels[..b.len]);
        loader.recycle(b);
    }
    Ok((report, loader.skipped()))
}

/// A training run (fresh or resumed): its network, data, options and where it stands.
/// [`Run::run`] trains to the end (or to `max_steps`) and reports through an [`Observer`].
///
/// A run checkpoints to `last.safetensors` in its folder ([`Run::out_dir`]) atomically at
/// every epoch end (and every `checkpoint_every` steps), appends a row per epoch to
/// `metrics.csv` and redraws `metrics.png`. Resuming from its checkpoint continues with the
/// same batches, masks and losses as an uninterrupted run. The folder is chosen, checked and
/// locked when the run is made ([`RunOptions::out_dir`]), and stays locked until the run is
/// dropped.
pub struct Run<'g> {
    gpu: &'g Gpu,
    trainer: Trainer,
    train: Arc<dyn Dataset>,
    test: Option<Arc<dyn Dataset>>,
    opts: RunOptions,
    /// The output folder, locked.
    dir: RunDir,
    /// Where the next step is.
    progress: Progress,
    /// Metadata written into every checkpoint besides the training state.
    metadata: HashMap<String, String>,
    /// Notes from the set-up, sent to the observer when the run starts.
    notes: Vec<String>,
    /// The ranks of a data-parallel run ([`Solo`] for one process).
    comm: Rc<dyn Collective>,
}

impl<'g> Run<'g> {
    /// A fresh run of `model` with `config` on `train`, evaluated on `test` at epoch ends.
    pub fn new(
        gpu: &'g Gpu,
        model: &ModelConfig,
        config: &TrainConfig,
        train: Arc<dyn Dataset>,
        test: Option<Arc<dyn Dataset>>,
        opts: RunOptions,
    ) -> Result<Run<'g>> {
        let start = Progress::default();
        let mut run = Run::build(gpu, model, config, (train, test), opts, (start, None))?;
        if let Some(init) = run.opts.init.clone() {
            let rep = checkpoint::load_torchvision(gpu, &run.trainer.net, &init)?;
            run.notes.push(format!(
                "backbone initialised from {}{}{}",
                init.display(),
                match (rep.head_from_fc, rep.fc_classes) {
                    (true, _) => "; head from its fc layer".to_string(),
                    (false, Some(c)) => format!(
                        "; its fc has {c} classes, the model {}: the head starts afresh",
                        model.num_classes
                    ),
                    _ => String::new(),
                },
                if rep.ignored.is_empty() {
                    String::new()
                } else {
                    format!("; ignored {}", rep.ignored.join(", "))
                }
            ));
        }
        Ok(run)
    }

    /// Continue the run that wrote `checkpoint`: its model, training configuration,
    /// weights, momentum and progress; its recorded preprocessing is kept unless `opts`
    /// gives one. With the default [`RunOptions::out_dir`] a checkpoint named
    /// `last.safetensors` is continued in its own folder.
    pub fn resume(
        gpu: &'g Gpu,
        checkpoint: &Path,
        train: Arc<dyn Dataset>,
        test: Option<Arc<dyn Dataset>>,
        mut opts: RunOptions,
    ) -> Result<Run<'g>> {
        let ck = Checkpoint::open(checkpoint)?;
        let mut config = ck.train_config()?.clone();
        let mut start = ck.progress()?;
        let ranks = opts.collective.as_ref().map_or(1, |c| c.size());
        let regrouped = regroup(&mut config, start.ranks.max(1), ranks)?;
        let mut switched = None;
        if let Some(p) = opts.precision.filter(|&p| p != config.precision) {
            switched = Some(format!(
                "resuming in {p} precision; the checkpoint trained in {} (its weights are f32, \
                 {})",
                config.precision,
                match p {
                    Precision::Mixed => "the loss scale starts afresh",
                    Precision::F32 => "its loss-scaling state is dropped",
                }
            ));
            config.precision = p;
            start.amp = None;
        }
        if opts.preprocessing.is_none() && ck.metadata.contains_key(PREPROCESS_KEY) {
            opts.preprocessing = Some(ck.preprocessing().clone());
        }
        let data = (train, test);
        let mut run = Run::build(
            gpu,
            &ck.model,
            &config,
            data,
            opts,
            (start, Some(checkpoint)),
        )?;
        ck.load_into(gpu, &run.trainer.net, true)?;
        run.trainer.next_step = start.step;
        if let Some(state) = start.amp {
            run.trainer.set_amp_state(gpu, state)?;
        }
        run.notes.push(format!(
            "resumed at step {} (epoch {}, batch {})",
            start.step,
            start.epoch + 1,
            start.batch
        ));
        run.notes.extend(switched);
        run.notes.extend(regrouped);
        Ok(run)
    }

    /// A fresh run of `recipe`: its data (train and test splits), model and training
    /// configuration, its preprocessing recorded in the checkpoints and its pretrained
    /// backbone (if any) loaded: unless `opts.init` names a file, [`Recipe::fetch_init`]
    /// gets it, from the Hugging Face Hub's cache or by downloading it
    /// ([`HubOptions::from_env`](crate::hub::HubOptions::from_env)).
    ///
    /// [`Recipe::fetch_init`]: crate::recipe::Recipe::fetch_init
    pub fn from_recipe(
        gpu: &'g Gpu,
        recipe: &crate::recipe::Recipe,
        mut opts: RunOptions,
    ) -> Result<Run<'g>> {
        let train = recipe.open(crate::data::Split::Train)?;
        let test = recipe.open(crate::data::Split::Test)?;
        let model = recipe.model_config(train.info().num_classes)?;
        opts.preprocessing = Some(recipe.preprocessing()?);
        if opts.init.is_none() {
            opts.init = recipe.fetch_init(&crate::hub::HubOptions::from_env())?;
        }
        Run::new(gpu, &model, &recipe.train, train, Some(test), opts)
    }

    /// `resume`: the checkpoint a resumed run starts from.
    fn build(
        gpu: &'g Gpu,
        model: &ModelConfig,
        config: &TrainConfig,
        (train, test): (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>),
        opts: RunOptions,
        (start, resume): (Progress, Option<&Path>),
    ) -> Result<Run<'g>> {
        opts.validate()?;
        config.validate()?;
        // An empty test set (class folders too small to hold an image out) is no test set.
        let no_test = test.as_ref().is_some_and(|t| t.is_empty());
        let test = test.filter(|t| !t.is_empty());
        check_data(train.as_ref(), model, "training")?;
        if let Some(t) = &test {
            check_data(t.as_ref(), model, "test")?;
        }
        let comm = opts.collective.clone().unwrap_or_else(|| Rc::new(Solo));
        let ranks = comm.size();
        let global = config.batch * config.accumulate * ranks;
        if train.len() < global {
            return Err(Error::invalid(
                "batch",
                match global == config.batch {
                    true => format!(
                        "batch {} is larger than the training set ({} images)",
                        config.batch,
                        train.len()
                    ),
                    false => format!(
                        "a step of batch {} x accumulate {} x {ranks} rank(s) = {global} images \
                         is larger than the training set ({} images)",
                        config.batch,
                        config.accumulate,
                        train.len()
                    ),
                },
            ));
        }
        // The folder before the GPU: a refused folder costs nothing. Rank 0 owns it.
        let mut dir = match comm.rank() {
            0 => RunDir::open(&opts.out_dir, resume, opts.overwrite)?,
            _ => RunDir::follower(&opts.out_dir, resume),
        };
        let steps_per_epoch = (train.len() / global) as u64;
        let trainer = Trainer::new(gpu, model, config, steps_per_epoch)?;
        let set_up = trainer.notes().iter().map(|n| format!("note: {n}"));
        let set_up: Vec<String> = set_up.collect();
        let mut metadata = opts.metadata.clone();
        if let Some(p) = &opts.preprocessing {
            metadata.insert(
                PREPROCESS_KEY.to_string(),
                serde_json::to_string(p)
                    .map_err(|e| Error::invalid("preprocessing", e.to_string()))?,
            );
        }
        metadata.insert(
            CLASSES_KEY.to_string(),
            serde_json::to_string(&train.info().class_names)
                .map_err(|e| Error::invalid("class names", e.to_string()))?,
        );
        Ok(Run {
            gpu,
            trainer,
            train,
            test,
            opts,
            notes: dir
                .take_notes()
                .into_iter()
                .chain(set_up)
                .chain(no_test.then(|| {
                    "note: the test set has no images (no class has enough to hold one out): \
                     training without evaluation"
                        .to_string()
                }))
                .collect(),
            dir,
            progress: start,
            metadata,
            comm,
        })
    }

    /// The iteration recorder and its network (weights, buffers).
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Where the next step is.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// The checkpoint this run writes: `last.safetensors` in [`Run::out_dir`].
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.checkpoint_path()
    }

    /// The folder this run writes to (chosen when the run was made, and locked by it).
    pub fn out_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Train to the last epoch (or `max_steps`), reporting to `observer`.
    pub fn run(mut self, observer: &mut dyn Observer) -> Result<RunSummary> {
        let out_dir = self.dir.path().to_path_buf();
        let metrics_path = out_dir.join("metrics.csv");
        let writer = self.comm.rank() == 0;
        if writer {
            std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
            // A run killed in the middle of a write (kill -9, power cut) leaves its
            // temporary file behind; the file it was replacing is intact.
            for f in [
                self.checkpoint_path(),
                metrics_path.clone(),
                out_dir.join("metrics.png"),
            ] {
                crate::fsio::remove_stale_temporaries(&f)?;
            }
        }
        let mut metrics = if writer && self.progress.step > 0 && self.dir.continues() {
            // Rows of epochs not finished before the resume point are written again (a run
            // resumed in another folder starts a metrics file of its own).
            let mut m = read_metrics(&metrics_path)?;
            m.retain(|r| r.epoch <= self.progress.epoch);
            m
        } else {
            Vec::new()
        };
        let config = self.trainer.config.clone();
        let start = RunStart {
            model: self.trainer.net.config.clone(),
            parameters: self.trainer.net.num_parameters(),
            map_size: self.trainer.net.map_size,
            train_images: self.train.len(),
            test_images: self.test.as_ref().map(|t| t.len()),
            steps_per_epoch: self.trainer.steps_per_epoch,
            epochs: config.epochs,
            start: self.progress,
        };
        for n in std::mem::take(&mut self.notes) {
            observer.event(&Event::Note(&n));
        }
        observer.event(&Event::Started(&start));
        let mut summary = RunSummary::default();
        let t0 = Instant::now();
        for epoch in self.progress.epoch..config.epochs {
            let es = self.epoch(epoch, observer, &mut summary)?;
            let stopped = es.step < (epoch as u64 + 1) * self.trainer.steps_per_epoch;
            metrics.push(es.clone());
            if writer {
                write_metrics(&metrics_path, &metrics)?;
            }
            observer.event(&Event::EpochEnded(&es));
            summary.epochs.push(es);
            let plotted = match writer {
                true => plot_metrics(&metrics, &out_dir.join("metrics.png")),
                false => Ok(()),
            };
            if let Err(e) = plotted {
                observer.event(&Event::Note(&format!(
                    "warning: could not draw the metrics plot: {e}"
                )));
            }
            if stopped
                || summary.interrupted
                || self.trainer.next_step >= self.opts.max_steps.unwrap_or(u64::MAX)
            {
                break;
            }
        }
        summary.progress = Some(self.progress);
        summary.exchange_seconds = self.trainer.exchange_seconds().1;
        summary.seconds = t0.elapsed().as_secs_f64();
        Ok(summary)
    }

    /// One epoch (from `self.progress.batch` when it is the epoch a resume starts in):
    /// steps, checkpoints, evaluation. Stops early at `max_steps`.
    fn epoch(
        &mut self,
        epoch: usize,
        observer: &mut dyn Observer,
        summary: &mut RunSummary,
    ) -> Result<EpochSummary> {
        let gpu = self.gpu;
        let steps_per_epoch = self.trainer.steps_per_epoch;
        let first_batch = if epoch == self.progress.epoch {
            self.progress.batch
        } else {
            0
        };
        let max_steps = self.opts.max_steps.unwrap_or(u64::MAX);
        // Each rank's loader batches are its micro-batches of each step, one after the
        // other: its share of the global batch.
        let micro = self.trainer.config.accumulate;
        let (rank, ranks) = (self.comm.rank(), self.comm.size());
        let mut loader = Loader::new(
            self.train.clone(),
            LoaderOptions {
                batch: self.trainer.config.batch * micro,
                shuffle: true,
                train: true,
                seed: self.trainer.config.seed,
                epoch,
                start_batch: first_batch,
                drop_last: true,
                threads: self.opts.threads,
                strict: self.opts.strict,
                prefetch: 3,
                shard: (rank, ranks),
            },
        )?;
        observer.event(&Event::EpochStarted {
            epoch,
            epochs: self.trainer.config.epochs,
            steps: steps_per_epoch,
            first_batch,
        });
        let t0 = Instant::now();
        let mut totals = EpochTotals::default();
        let mut batch_index = first_batch;
        let mut images = 0usize;
        while self.trainer.next_step < max_steps {
            let Some(batch) = loader.next() else { break };
            let b = batch?;
            let stop = self.opts.stop.as_ref().is_some_and(|s| s.is_requested());
            let outcome = self
                .trainer
                .step_with(gpu, &b.images, &b.labels, &*self.comm, stop)?;
            let lagged = outcome.stats;
            images += b.len * ranks;
            loader.recycle(b);
            batch_index += 1;
            observer.event(&Event::Progress {
                epoch,
                done: batch_index,
                steps: steps_per_epoch,
            });
            if let Some(s) = lagged {
                totals.add(&s, summary, observer);
            }
            if outcome.stop {
                summary.interrupted = true;
                break;
            }
            if let Some(every) = self.opts.checkpoint_every {
                if self.trainer.next_step.is_multiple_of(every) {
                    for s in self.trainer.drain(gpu)? {
                        totals.add(&s, summary, observer);
                    }
                    self.progress = Progress {
                        step: self.trainer.next_step,
                        epoch,
                        batch: batch_index,
                        amp: self.trainer.amp_state(),
                        ranks,
                    };
                    self.save(observer)?;
                }
            }
        }
        for s in self.trainer.drain(gpu)? {
            totals.add(&s, summary, observer);
        }
        let seconds = t0.elapsed().as_secs_f64();
        let done = batch_index as u64 >= steps_per_epoch;
        self.progress = Progress {
            step: self.trainer.next_step,
            epoch: if done { epoch + 1 } else { epoch },
            batch: if done { 0 } else { batch_index },
            amp: self.trainer.amp_state(),
            ranks,
        };
        self.save(observer)?;
        let eval = match &self.test {
            // An interrupted run stops as soon as its checkpoint is written.
            Some(t) if self.opts.evaluate && !summary.interrupted => {
                Some(self.evaluate(t.clone())?)
            }
            _ => None,
        };
        let epoch_skipped = loader.skipped();
        let skipped = epoch_skipped.len();
        for s in epoch_skipped {
            if !summary.skipped.contains(&s) {
                summary.skipped.push(s);
            }
        }
        let es = EpochSummary {
            epoch: epoch + 1,
            step: self.trainer.next_step,
            lr: self
                .trainer
                .schedule
                .lr(self.trainer.next_step.saturating_sub(1)),
            train_loss: totals.loss / totals.steps.max(1) as f64,
            train_top1: totals.top1 / totals.images.max(1) as f64,
            test_loss: eval.as_ref().map(|e| e.mean_loss()),
            test_top1: eval.as_ref().map(|e| e.top1_acc()),
            test_top5: eval.as_ref().map(|e| e.top5_acc()),
            seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            skipped,
            skipped_steps: totals.skipped_steps,
            loss_scale: totals.loss_scale,
        };
        if eval.is_some() {
            summary.final_eval = eval;
        }
        Ok(es)
    }

    /// Evaluate on `test`: each rank its share of the batches, the counts summed over the
    /// ranks.
    fn evaluate(&self, test: Arc<dyn Dataset>) -> Result<EvalReport> {
        let (gpu, trainer) = (self.gpu, &self.trainer);
        let (n, classes) = (trainer.net.batch, trainer.net.config.num_classes);
        let shard = (self.comm.rank(), self.comm.size());
        let run = (self.opts.threads, self.opts.strict);
        let (mut report, _) = evaluate_shard(test, (n, classes), run, shard, |images, valid| {
            trainer.eval_scores(gpu, images, valid)
        })?;
        if shard.1 > 1 {
            let mut v: Vec<f64> = [report.images, report.top1, report.top5]
                .iter()
                .map(|&k| k as f64)
                .chain([report.loss_sum])
                .chain(report.confusion.iter().flatten().map(|&k| k as f64))
                .collect();
            self.comm.sum_f64(&mut v)?;
            report.images = v[0] as usize;
            report.top1 = v[1] as usize;
            report.top5 = v[2] as usize;
            report.loss_sum = v[3];
            for (cell, k) in report.confusion.iter_mut().flatten().zip(&v[4..]) {
                *cell = *k as usize;
            }
        }
        Ok(report)
    }

    /// Write the checkpoint (weights, momentum, progress, configuration, metadata); the
    /// first one also removes the other files of a run this one overwrites. Rank 0 of a
    /// data-parallel run writes; the others hold the same weights and write nothing.
    fn save(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if self.comm.rank() != 0 {
            return Ok(());
        }
        let mut meta = self.metadata.clone();
        meta.insert(
            TRAIN_KEY.to_string(),
            serde_json::to_string(&self.trainer.config)
                .map_err(|e| Error::invalid("training configuration", e.to_string()))?,
        );
        meta.insert(
            PROGRESS_KEY.to_string(),
            serde_json::to_string(&self.progress)
                .map_err(|e| Error::invalid("progress", e.to_string()))?,
        );
        let path = self.checkpoint_path();
        checkpoint::save(self.gpu, &self.trainer.net, &path, &meta, true).map_err(|e| match e {
            Error::Io { path, source } => Error::io(
                path,
                std::io::Error::new(
                    source.kind(),
                    format!(
                        "writing the checkpoint at step {} failed: {source}; the previous \
                         checkpoint there is unchanged",
                        self.progress.step
                    ),
                ),
            ),
            other => other,
        })?;
        self.dir.checkpoint_written()?;
        observer.event(&Event::Checkpoint {
            path: &path,
            progress: self.progress,
        });
        Ok(())
    }
}

/// Running sums of an epoch's read-back step statistics.
#[derive(Default)]
struct EpochTotals {
    loss: f64,
    top1: f64,
    images: usize,
    steps: u64,
    skipped_steps: u64,
    loss_scale: Option<f32>,
}

impl EpochTotals {
    fn add(&mut self, s: &StepStats, summary: &mut RunSummary, observer: &mut dyn Observer) {
        self.loss += s.loss as f64;
        self.top1 += s.top1 as f64;
        self.images += s.images;
        self.steps += 1;
        self.skipped_steps += s.skipped as u64;
        if s.loss_scale.is_some() {
            self.loss_scale = s.loss_scale;
        }
        summary.step_losses.push((s.step, s.loss));
        observer.event(&Event::StepStats(s));
    }
}

/// A run resumed on `ranks` ranks from a checkpoint written by `saved` ranks: the global
/// batch (`batch * accumulate * ranks`) stays, so the accumulation per rank changes
/// (a note says so); an error when `ranks` does not divide the micro-batches of a step.
fn regroup(config: &mut TrainConfig, saved: usize, ranks: usize) -> Result<Option<String>> {
    if saved == ranks {
        return Ok(None);
    }
    let micro = config.accumulate * saved;
    if !micro.is_multiple_of(ranks) {
        return Err(Error::invalid(
            "ranks",
            format!(
                "the checkpoint's steps hold {micro} micro-batches of {} images ({saved} \
                 rank(s) x accumulate {}); {ranks} ranks cannot share them evenly: resume on a \
                 number of ranks that divides {micro}",
                config.batch, config.accumulate
            ),
        ));
    }
    let before = config.accumulate;
    config.accumulate = micro / ranks;
    Ok(Some(format!(
        "the checkpoint was written by {saved} rank(s) with accumulate {before}; on {ranks} \
         rank(s) each accumulates {} micro-batches, so a step still sees {} images",
        config.accumulate,
        micro * config.batch
    )))
}

/// A dataset's classes and sample shape must be the model's.
fn check_data(data: &dyn Dataset, model: &ModelConfig, split: &'static str) -> Result<()> {
    let info = data.info();
    if info.num_classes != model.num_classes {
        return Err(Error::invalid_in(
            split,
            "data",
            format!(
                "it has {} classes, the model {}",
                info.num_classes, model.num_classes
            ),
        ));
    }
    if info.channels != model.in_channels
        || info.height != model.input_size
        || info.width != model.input_size
    {
        return Err(Error::invalid_in(
            split,
            "data",
            format!(
                "samples are {}x{}x{}, the model expects {}x{}x{}",
                info.height,
                info.width,
                info.channels,
                model.input_size,
                model.input_size,
                model.in_channels
            ),
        ));
    }
    Ok(())
}

/// The rows of a run's `metrics.csv` (empty when there is none yet).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochSummary>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut r = csv::Reader::from_path(path).map_err(|e| Error::format(path, e.to_string()))?;
    r.deserialize()
        .map(|row| row.map_err(|e| Error::format(path, format!("bad metrics row: {e}"))))
        .collect()
}

/// Write `metrics.csv` (atomically: a crash never leaves half a row).
pub fn write_metrics(path: &Path, rows: &[EpochSummary]) -> Result<()> {
    crate::fsio::write_csv(path, rows).map_err(|e| match e {
        Error::Io { path, source } => Error::io(
            path,
            std::io::Error::new(
                source.kind(),
                format!(
                    "writing the metrics failed: {source}; the epoch's checkpoint is written \
                     and the previous metrics file is unchanged"
                ),
            ),
        ),
        other => other,
    })
}

/// Draw a run's metrics (all epochs, including those before a resume) as a PNG: losses on
/// the left axis, top-1 accuracies (%) on the right.
pub fn plot_metrics(rows: &[EpochSummary], png: &Path) -> Result<()> {
    let series =
        |name: &str, color: [u8; 3], f: &dyn Fn(&EpochSummary) -> Option<f64>| crate::viz::Series {
            name: name.into(),
            points: rows
                .iter()
                .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
                .collect(),
            color,
        };
    crate::viz::plot_metrics(
        png,
        "finegrain training",
        &[
            series("train loss", [31, 119, 180], &|r| Some(r.train_loss)),
            series("test loss", [255, 127, 14], &|r| r.test_loss),
        ],
        "loss",
        &[
            series("train top-1 %", [44, 160, 44], &|r| {
                Some(100.0 * r.train_top1)
            }),
            series("test top-1 %", [214, 39, 40], &|r| {
                r.test_top1.map(|v| 100.0 * v)
            }),
        ],
        "top-1 %",
        "epoch",
    )
}
