//! What a training run tells the outside world while it runs: a stream of [`Event`]s
//! passed to an [`Observer`].
//!
//! Any `FnMut(&Event)` closure is an observer. [`Console`] is the one the train example
//! uses: a progress bar on a terminal, and a plain progress line every few seconds when
//! standard output is a file or a pipe (a log), then one line per epoch in both cases.
//!
//! ```
//! use finegrain::train::Event;
//! let mut losses = Vec::new();
//! let mut observer = |e: &Event| {
//!     if let Event::StepStats(s) = e {
//!         losses.push(s.loss);
//!     }
//! };
//! # let _ = &mut observer;
//! ```

use super::StepStats;
use crate::checkpoint::Progress;
use crate::model::ModelConfig;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

/// What a run is about to do (sent once, before the first step).
#[derive(Clone, Debug)]
pub struct RunStart {
    pub model: ModelConfig,
    pub parameters: usize,
    /// Class-map size (h, w).
    pub map_size: (usize, usize),
    pub train_images: usize,
    pub test_images: Option<usize>,
    pub steps_per_epoch: u64,
    pub epochs: usize,
    /// Where the run starts (not step 0 when resuming).
    pub start: Progress,
}

/// One thing that happened in a run.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// The network is built and the data opened.
    Started(&'a RunStart),
    /// Something worth telling the user (GCE's k clamped, backbone initialised, resumed).
    Note(&'a str),
    /// Epoch `epoch` (0-based) of `epochs` starts at batch `first_batch` (not 0 on resume).
    EpochStarted {
        epoch: usize,
        epochs: usize,
        steps: u64,
        first_batch: usize,
    },
    /// A training step was submitted: `done` of the epoch's `steps` are now in flight or
    /// finished.
    Progress {
        epoch: usize,
        done: usize,
        steps: u64,
    },
    /// A step's statistics, read back a few steps after it was submitted.
    StepStats(&'a StepStats),
    /// A checkpoint was written (atomically) at `progress`.
    Checkpoint { path: &'a Path, progress: Progress },
    /// An epoch ended; its checkpoint is written and, if asked for, it was evaluated.
    EpochEnded(&'a EpochSummary),
}

/// Receives a run's [`Event`]s.
pub trait Observer {
    fn event(&mut self, event: &Event<'_>);
}

impl<F: FnMut(&Event<'_>)> Observer for F {
    fn event(&mut self, event: &Event<'_>) {
        self(event)
    }
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&mut self, _: &Event<'_>) {}
}

/// How [`Console`] shows progress within an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// An indicatif progress bar (on a terminal).
    Bar,
    /// A plain line every `every` (for logs).
    Lines { every: Duration },
    /// Only the per-epoch lines.
    None,
}

/// Prints a run to standard output: the set-up line, notes, progress within epochs and one
/// line per epoch (train loss and top-1, test top-1/top-5, time, images/s).
pub struct Console {
    style: ProgressStyle,
    epochs: usize,
    bar: Option<indicatif::ProgressBar>,
    epoch: usize,
    steps: u64,
    done: usize,
    first_batch: usize,
    loss: Option<f32>,
    epoch_start: Instant,
    last_line: Instant,
}

impl Console {
    /// A bar when standard output is a terminal, else a plain line every 10 seconds.
    pub fn new() -> Console {
        Console::with_style(if std::io::stdout().is_terminal() {
            ProgressStyle::Bar
        } else {
            ProgressStyle::Lines {
                every: Duration::from_secs(10),
            }
        })
    }

    pub fn with_style(style: ProgressStyle) -> Console {
        let now = Instant::now();
        Console {
            style,
            epochs: 0,
            bar: None,
            epoch: 0,
            steps: 0,
            done: 0,
            first_batch: 0,
            loss: None,
            epoch_start: now,
            last_line: now,
        }
    }

    /// The plain progress line: `epoch 1/4: 120/312 steps, loss 0.5321, 290 img/s, eta 40 s`.
    fn progress_line(&self) -> String {
        let secs = self.epoch_start.elapsed().as_secs_f64().max(1e-9);
        let fresh = self.done.saturating_sub(self.first_batch) as f64;
        let rate = fresh / secs;
        let left = self.steps.saturating_sub(self.done as u64) as f64;
        let mut s = format!(
            "epoch {}/{}: {}/{} steps",
            self.epoch + 1,
            self.epochs,
            self.done,
            self.steps
        );
        if let Some(l) = self.loss {
            s.push_str(&format!(", loss {l:.4}"));
        }
        if rate > 0.0 {
            s.push_str(&format!(", {:.1} steps/s, eta {:.0} s", rate, left / rate));
        }
        s
    }
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

/// The per-epoch line the train example prints.
pub(crate) fn epoch_line(es: &EpochSummary, epochs: usize) -> String {
    format!(
        "epoch {}/{}: train loss {:.4} top-1 {:.2}%{} | {:.0} s, {:.0} img/s{}{}",
        es.epoch,
        epochs,
        es.train_loss,
        100.0 * es.train_top1,
        match (es.test_top1, es.test_top5) {
            (Some(a), Some(b)) =>
                format!(" | test top-1 {:.2}% top-5 {:.2}%", 100.0 * a, 100.0 * b),
            _ => String::new(),
        },
        es.seconds,
        es.images_per_s,
        match es.loss_scale {
            Some(scale) => format!(
                " | loss scale {scale}, {} step{} skipped",
                es.skipped_steps,
                if es.skipped_steps == 1 { "" } else { "s" }
            ),
            None => String::new(),
        },
        if es.skipped > 0 {
            format!(" | {} unreadable images skipped", es.skipped)
        } else {
            String::new()
        }
    )
}

impl Observer for Console {
    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Started(s) => {
                self.epochs = s.epochs;
                println!(
                    "model {} ({} parameters), class maps {}x{}, {} classes; {} training images, {} steps per epoch",
                    s.model.name,
                    s.parameters,
                    s.map_size.0,
                    s.map_size.1,
                    s.model.num_classes,
                    s.train_images,
                    s.steps_per_epoch
                );
            }
            Event::Note(n) => println!("{n}"),
            Event::EpochStarted {
                epoch,
                epochs,
                steps,
                first_batch,
            } => {
                self.epoch = *epoch;
                self.epochs = *epochs;
                self.steps = *steps;
                self.done = *first_batch;
                self.first_batch = *first_batch;
                self.loss = None;
                self.epoch_start = Instant::now();
                self.last_line = self.epoch_start;
                if self.style == ProgressStyle::Bar {
                    let b = indicatif::ProgressBar::new(*steps);
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(format!("{}/{}", epoch + 1, epochs));
                    b.set_position(*first_batch as u64);
                    self.bar = Some(b);
                }
            }
            Event::Progress { done, .. } => {
                self.done = *done;
                if let Some(b) = &self.bar {
                    b.set_position(*done as u64);
                }
                if let ProgressStyle::Lines { every } = self.style {
                    if self.last_line.elapsed() >= every {
                        self.last_line = Instant::now();
                        println!("{}", self.progress_line());
                    }
                }
            }
            Event::StepStats(s) => {
                self.loss = Some(s.loss);
                if let Some(b) = &self.bar {
                    b.set_message(format!("loss {:.4}", s.loss));
                }
            }
            Event::Checkpoint { .. } => {}
            Event::EpochEnded(es) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                println!("{}", epoch_line(es, self.epochs));
            }
        }
    }
}

/// One epoch's numbers: a row of `metrics.csv` (in this field order) and the epoch line.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    /// Mixed precision: training steps the optimizer skipped in this epoch because a
    /// gradient overflowed at the loss scale (0 in f32).
    #[serde(default)]
    pub skipped_steps: u64,
    /// Mixed precision: the loss scale at the end of the epoch (empty in f32).
    #[serde(default)]
    pub loss_scale: Option<f32>,
}
