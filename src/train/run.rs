//! A whole training run: datasets, network, epochs with background data loading, lagged
//! statistics, evaluation, metrics, checkpoints and exact resume. The `train` example is a
//! command-line front end to [`run`]; tests call it directly.

use super::{EvalReport, StepStats, TrainConfig, Trainer};
use crate::checkpoint::{self, Checkpoint};
use crate::data::{Dataset, Loader, LoaderOptions};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::ModelConfig;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Metadata key: training configuration JSON.
pub const TRAIN_KEY: &str = "finegrain.train";
/// Metadata key: progress JSON (`{"step":..,"epoch":..,"batch":..}`).
pub const PROGRESS_KEY: &str = "finegrain.progress";
/// Metadata key: the evaluation preprocessing (a [`crate::data::Augment`] as JSON), so
/// inference prepares images exactly as the test set was.
pub const PREPROCESS_KEY: &str = "finegrain.preprocess";
/// Metadata key: class names JSON.
pub const CLASSES_KEY: &str = "finegrain.classes";

/// Where a run is and what it has written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Global step of the next iteration.
    pub step: u64,
    /// Epoch of the next iteration (0-based).
    pub epoch: usize,
    /// Batch index within that epoch of the next iteration.
    pub batch: usize,
}

/// Options of a run besides the model and the training configuration.
pub struct RunOptions {
    /// Folder for checkpoints (`last.safetensors`), `metrics.csv` and `metrics.png`.
    pub out_dir: PathBuf,
    /// Stop after this many steps in total (tests, quick looks); `None`: all epochs.
    pub max_steps: Option<u64>,
    /// Also checkpoint every this many steps (besides each epoch end).
    pub checkpoint_every: Option<u64>,
    /// Fail on the first unreadable image instead of skipping it.
    pub strict: bool,
    /// Decoding threads.
    pub threads: usize,
    /// Show a progress bar.
    pub progress_bar: bool,
    /// Evaluate on the test split at each epoch end.
    pub evaluate: bool,
    /// Extra metadata written into every checkpoint (e.g. [`PREPROCESS_KEY`]).
    pub metadata: HashMap<String, String>,
    /// Initialise the backbone from a torchvision ResNet state dict (ignored on resume).
    pub init: Option<PathBuf>,
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
}

/// One epoch's line.
#[derive(Clone, Debug)]
pub struct EpochSummary {
    pub epoch: usize,
    pub step: u64,
    pub lr: f32,
    pub train_loss: f64,
    pub train_top1: f64,
    pub test_loss: Option<f64>,
    pub test_top1: Option<f64>,
    pub test_top5: Option<f64>,
    pub seconds: f64,
    pub images_per_s: f64,
    pub skipped: usize,
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

/// The evaluation preprocessing a checkpoint records ([`PREPROCESS_KEY`]), or, for a
/// checkpoint without it, the default for its model: Fashion-MNIST normalisation at native
/// size for one channel, ImageNet normalisation and a 256/224 resize otherwise.
pub fn preprocessing_of(ck: &Checkpoint) -> Result<crate::data::Augment> {
    use crate::data::{Augment, Normalize, TrainCrop};
    if let Some(s) = ck.metadata.get(PREPROCESS_KEY) {
        return serde_json::from_str(s)
            .map_err(|e| Error::invalid("checkpoint preprocessing", e.to_string()));
    }
    let m = &ck.model;
    let normalize = if m.in_channels == 1 {
        Normalize::fashion_mnist(1)
    } else {
        Normalize::imagenet(m.in_channels)
    };
    let eval_resize = if m.input_size <= 64 {
        m.input_size
    } else {
        (m.input_size as f64 * 256.0 / 224.0).round() as usize
    };
    Ok(Augment {
        height: m.input_size,
        width: m.input_size,
        channels: m.in_channels,
        eval_resize,
        train_crop: TrainCrop::Center,
        hflip: false,
        normalize,
    })
}

/// The class names a checkpoint records ([`CLASSES_KEY`]), or `class 0`, `class 1`, ...
pub fn class_names_of(ck: &Checkpoint) -> Result<Vec<String>> {
    match ck.metadata.get(CLASSES_KEY) {
        Some(s) => serde_json::from_str(s)
            .map_err(|e| Error::invalid("checkpoint class names", e.to_string())),
        None => Ok((0..ck.model.num_classes)
            .map(|i| format!("class {i}"))
            .collect()),
    }
}

fn progress_of(ck: &Checkpoint) -> Result<Progress> {
    let s = ck
        .metadata
        .get(PROGRESS_KEY)
        .ok_or_else(|| Error::invalid("--resume", "checkpoint has no training progress"))?;
    serde_json::from_str(s)
        .map_err(|e| Error::invalid("--resume", format!("bad progress record: {e}")))
}

/// Read the training configuration stored in a checkpoint.
pub fn train_config_of(ck: &Checkpoint) -> Result<TrainConfig> {
    let s = ck
        .metadata
        .get(TRAIN_KEY)
        .ok_or_else(|| Error::invalid("--resume", "checkpoint has no training configuration"))?;
    serde_json::from_str(s)
        .map_err(|e| Error::invalid("--resume", format!("bad training configuration: {e}")))
}

fn save_checkpoint(
    gpu: &Gpu,
    trainer: &Trainer,
    path: &Path,
    progress: Progress,
    classes: &[String],
    extra: &HashMap<String, String>,
) -> Result<()> {
    let mut meta = extra.clone();
    meta.insert(
        TRAIN_KEY.to_string(),
        serde_json::to_string(&trainer.config)
            .map_err(|e| Error::invalid("config", e.to_string()))?,
    );
    meta.insert(
        PROGRESS_KEY.to_string(),
        serde_json::to_string(&progress).map_err(|e| Error::invalid("progress", e.to_string()))?,
    );
    meta.insert(
        CLASSES_KEY.to_string(),
        serde_json::to_string(classes).map_err(|e| Error::invalid("classes", e.to_string()))?,
    );
    checkpoint::save(gpu, &trainer.net, path, &meta, true)
}

/// Run (or resume) training. `resume`: a checkpoint written by an earlier run; its model,
/// training configuration and progress replace `model` / `config`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    gpu: &Gpu,
    model: &ModelConfig,
    config: &TrainConfig,
    train: Arc<dyn Dataset>,
    test: Option<Arc<dyn Dataset>>,
    resume: Option<&Path>,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    let (model, config, start, ck) = match resume {
        Some(p) => {
            let ck = Checkpoint::open(p)?;
            let tc = train_config_of(&ck)?;
            let pr = progress_of(&ck)?;
            (ck.model.clone(), tc, pr, Some(ck))
        }
        None => (
            model.clone(),
            config.clone(),
            Progress {
                step: 0,
                epoch: 0,
                batch: 0,
            },
            None,
        ),
    };
    let info = train.info().clone();
    if info.num_classes != model.num_classes {
        return Err(Error::invalid(
            "dataset",
            format!(
                "the training data has {} classes, the model {}",
                info.num_classes, model.num_classes
            ),
        ));
    }
    if info.channels != model.in_channels
        || info.height != model.input_size
        || info.width != model.input_size
    {
        return Err(Error::invalid(
            "dataset",
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
    if train.len() < config.batch {
        return Err(Error::invalid(
            "--batch",
            format!(
                "batch {} is larger than the training set ({} images)",
                config.batch,
                train.len()
            ),
        ));
    }
    let steps_per_epoch = (train.len() / config.batch) as u64;
    let (mut trainer, note) = Trainer::new(gpu, &model, &config, steps_per_epoch)?;
    if let Some(n) = note {
        log(&format!("note: {n}"));
    }
    if let (None, Some(init)) = (&ck, &opts.init) {
        let rep = checkpoint::load_torchvision(gpu, &trainer.net, init)?;
        log(&format!(
            "backbone initialised from {}{}{}",
            init.display(),
            if rep.head_from_fc {
                "; head from its fc layer"
            } else {
                ""
            },
            if rep.ignored.is_empty() {
                String::new()
            } else {
                format!("; ignored {}", rep.ignored.join(", "))
            }
        ));
    }
    if let Some(ck) = &ck {
        ck.load_into(gpu, &trainer.net, true)?;
        trainer.step = start.step;
        log(&format!(
            "resumed at step {} (epoch {}, batch {})",
            start.step,
            start.epoch + 1,
            start.batch
        ));
    }
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::io(&opts.out_dir, e))?;
    let ck_path = opts.out_dir.join("last.safetensors");
    let metrics_path = opts.out_dir.join("metrics.csv");
    let mut metrics = if start.step > 0 && metrics_path.exists() {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .map_err(|e| Error::io(&metrics_path, e))?
    } else {
        let mut f =
            std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
        writeln!(f, "epoch,step,lr,train_loss,train_top1,test_loss,test_top1,test_top5,seconds,images_per_s,skipped")
            .map_err(|e| Error::io(&metrics_path, e))?;
        f
    };
    log(&format!(
        "model {} ({} parameters), class maps {}x{}, {} classes; {} training images, {} steps per epoch",
        model.name,
        trainer.net.num_parameters(),
        trainer.net.map_size.0,
        trainer.net.map_size.1,
        model.num_classes,
        train.len(),
        steps_per_epoch
    ));
    let mut extra_meta = opts.metadata.clone();
    if let Some(ck) = &ck {
        // Keep what the original run recorded (preprocessing) unless given anew.
        for (k, v) in &ck.metadata {
            if k == PREPROCESS_KEY && !extra_meta.contains_key(k) {
                extra_meta.insert(k.clone(), v.clone());
            }
        }
    }
    let mut summary = RunSummary::default();
    let max_steps = opts.max_steps.unwrap_or(u64::MAX);
    let mut progress = start;
    'epochs: for epoch in start.epoch..config.epochs {
        let first_batch = if epoch == start.epoch { start.batch } else { 0 };
        let mut loader = Loader::new(
            train.clone(),
            LoaderOptions {
                batch: config.batch,
                shuffle: true,
                train: true,
                seed: config.seed,
                epoch,
                start_batch: first_batch,
                drop_last: true,
                threads: opts.threads,
                strict: opts.strict,
                prefetch: 3,
            },
        )?;
        let bar = if opts.progress_bar {
            let b = indicatif::ProgressBar::new(steps_per_epoch);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
            b.set_position(first_batch as u64);
            Some(b)
        } else {
            None
        };
        let t0 = Instant::now();
        let (mut loss_sum, mut top1_sum, mut seen, mut steps_done) = (0.0f64, 0.0f64, 0usize, 0u64);
        let mut absorb = |s: StepStats, bar: &Option<indicatif::ProgressBar>| {
            loss_sum += s.loss as f64;
            top1_sum += s.top1 as f64;
            seen += s.images;
            steps_done += 1;
            if let Some(b) = bar {
                b.set_message(format!("loss {:.4}", s.loss));
            }
            (s.step, s.loss)
        };
        let mut batch_index = first_batch;
        let mut epoch_images = 0usize;
        let mut stopped = false;
        while let Some(batch) = loader.next() {
            if trainer.step >= max_steps {
                stopped = true;
                break;
            }
            let b = batch?;
            let lagged = trainer.step(gpu, &b.images, &b.labels)?;
            epoch_images += b.len;
            loader.recycle(b);
            batch_index += 1;
            if let Some(b) = &bar {
                b.inc(1);
            }
            if let Some(s) = lagged {
                summary.step_losses.push(absorb(s, &bar));
            }
            if let Some(every) = opts.checkpoint_every {
                if trainer.step % every == 0 {
                    for s in trainer.drain(gpu)? {
                        summary.step_losses.push(absorb(s, &bar));
                    }
                    progress = Progress {
                        step: trainer.step,
                        epoch,
                        batch: batch_index,
                    };
                    save_checkpoint(
                        gpu,
                        &trainer,
                        &ck_path,
                        progress,
                        &info.class_names,
                        &extra_meta,
                    )?;
                }
            }
        }
        for s in trainer.drain(gpu)? {
            summary.step_losses.push(absorb(s, &bar));
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let seconds = t0.elapsed().as_secs_f64();
        let epoch_done = !stopped && batch_index as u64 >= steps_per_epoch;
        progress = Progress {
            step: trainer.step,
            epoch: if epoch_done { epoch + 1 } else { epoch },
            batch: if epoch_done { 0 } else { batch_index },
        };
        save_checkpoint(
            gpu,
            &trainer,
            &ck_path,
            progress,
            &info.class_names,
            &extra_meta,
        )?;
        let eval = match (&test, opts.evaluate && (epoch_done || stopped)) {
            (Some(t), true) => Some(evaluate(
                gpu,
                &trainer,
                t.clone(),
                opts.threads,
                opts.strict,
            )?),
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
            step: trainer.step,
            lr: trainer.schedule.lr(trainer.step.saturating_sub(1)),
            train_loss: loss_sum / steps_done.max(1) as f64,
            train_top1: top1_sum / seen.max(1) as f64,
            test_loss: eval.as_ref().map(|e| e.mean_loss()),
            test_top1: eval.as_ref().map(|e| e.top1_acc()),
            test_top5: eval.as_ref().map(|e| e.top5_acc()),
            seconds,
            images_per_s: epoch_images as f64 / seconds.max(1e-9),
            skipped,
        };
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_default();
        writeln!(
            metrics,
            "{},{},{:.6},{:.5},{:.4},{},{},{},{:.1},{:.1},{}",
            es.epoch,
            es.step,
            es.lr,
            es.train_loss,
            es.train_top1,
            opt(es.test_loss),
            opt(es.test_top1),
            opt(es.test_top5),
            es.seconds,
            es.images_per_s,
            es.skipped
        )
        .map_err(|e| Error::io(&metrics_path, e))?;
        log(&format!(
            "epoch {}/{}: train loss {:.4} top-1 {:.2}%{} | {:.0} s, {:.0} img/s{}",
            es.epoch,
            config.epochs,
            es.train_loss,
            100.0 * es.train_top1,
            match (es.test_top1, es.test_top5) {
                (Some(a), Some(b)) =>
                    format!(" | test top-1 {:.2}% top-5 {:.2}%", 100.0 * a, 100.0 * b),
                _ => String::new(),
            },
            es.seconds,
            es.images_per_s,
            if es.skipped > 0 {
                format!(" | {} unreadable images skipped", es.skipped)
            } else {
                String::new()
            }
        ));
        summary.epochs.push(es);
        if let Err(e) = plot_csv(&metrics_path, &opts.out_dir.join("metrics.png")) {
            log(&format!("warning: could not draw the metrics plot: {e}"));
        }
        if eval.is_some() {
            summary.final_eval = eval;
        }
        if stopped || trainer.step >= max_steps {
            break 'epochs;
        }
    }
    summary.progress = Some(progress);
    Ok(summary)
}

/// Draw `metrics.csv` (all epochs, including those before a resume) as a PNG: losses on the
/// left axis, top-1 accuracies (%) on the right.
pub fn plot_csv(csv: &Path, png: &Path) -> Result<()> {
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let mut cols: [Vec<(f64, f64)>; 4] = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 8 {
            continue;
        }
        let Ok(epoch) = f[0].parse::<f64>() else {
            continue;
        };
        for (slot, idx, scale) in [(0, 3, 1.0), (1, 5, 1.0), (2, 4, 100.0), (3, 6, 100.0)] {
            if let Ok(v) = f[idx].parse::<f64>() {
                cols[slot].push((epoch, v * scale));
            }
        }
    }
    let s = |name: &str, i: usize, color: [u8; 3]| crate::viz::Series {
        name: name.into(),
        points: cols[i].clone(),
        color,
    };
    crate::viz::plot_metrics(
        png,
        "finegrain training",
        &[
            s("train loss", 0, [31, 119, 180]),
            s("test loss", 1, [255, 127, 14]),
        ],
        "loss",
        &[
            s("train top-1 %", 2, [44, 160, 44]),
            s("test top-1 %", 3, [214, 39, 40]),
        ],
        "top-1 %",
        "epoch",
    )
}
