//! The training configuration: everything that defines a run, validated before anything
//! is allocated and stored in checkpoints so a resumed run continues with the same
//! settings.

use super::schedule::Schedule;
use crate::error::{Error, Result};
use crate::gpu::Precision;
use crate::method::diversify::DiversifyConfig;
use crate::method::loss::{effective_k, LossKind};
use serde::{Deserialize, Serialize};

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
    /// The main phase's loss; GCE's k is clamped to C - 1 ([`TrainConfig::method`]).
    /// Checkpoints spell it as the keys `loss` and `k`.
    #[serde(flatten, with = "crate::method::loss::loss_keys")]
    pub loss: LossKind,
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
    /// f32 or mixed precision (f16 activations, matrix units, loss scaling). Checkpoints
    /// written before this field existed read as f32.
    #[serde(default)]
    pub precision: Precision,
    /// Gradient accumulation: micro-batches of `batch` images whose gradients are summed
    /// (on the GPU) before each optimizer step, so a step sees `accumulate * batch`
    /// images (times the ranks of a data-parallel run). Batch norm normalises each
    /// micro-batch on its own, as in PyTorch. The schedule, epochs, checkpoints and loss
    /// scaling count optimizer steps. Checkpoints written before this field existed read
    /// as 1.
    #[serde(default = "one")]
    pub accumulate: usize,
}

fn one() -> usize {
    1
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
            loss: LossKind::Gce { k: 3 },
            ce_warmup_epochs: 1,
            diversify: true,
            p_peak: d.p_peak,
            p_patch: d.p_patch,
            grid: 0,
            alpha: d.alpha,
            seed: 0,
            precision: Precision::F32,
            accumulate: 1,
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
            LossKind::CrossEntropy => LossKind::CrossEntropy,
            LossKind::Gce { k: asked } => {
                let (k, clamped) = effective_k(asked, classes);
                if clamped {
                    note = Some(format!(
                        "GCE k = {asked} clamped to C - 1 = {k} ({classes} classes): GCE equals cross-entropy"
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
        let accumulate = self.accumulate > 1;
        Ok((
            MethodConfig {
                diversify,
                loss,
                accumulate,
            },
            note,
        ))
    }

    /// Check ranges before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1"));
        }
        if self.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        if self.accumulate == 0 {
            return Err(Error::invalid(
                "accumulate",
                "must be at least 1 micro-batch per step",
            ));
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
        if self.loss == (LossKind::Gce { k: 0 }) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_keeps_the_checkpoint_keys_loss_and_k() {
        for loss in [LossKind::CrossEntropy, LossKind::Gce { k: 7 }] {
            let c = TrainConfig {
                loss,
                ..TrainConfig::default()
            };
            let json: serde_json::Value = serde_json::to_value(&c).unwrap();
            assert_eq!(json["loss"], loss.name());
            let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(back, c);
            assert_eq!(LossKind::named("--loss", loss.name(), 7).unwrap(), loss);
        }
        // As checkpoints written before the loss was one setting have it.
        let mut old = serde_json::to_value(TrainConfig::default()).unwrap();
        old["loss"] = "gce".into();
        old["k"] = 15.into();
        let c: TrainConfig = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(c.loss, LossKind::Gce { k: 15 });
        old["loss"] = "GCE".into();
        let e = serde_json::from_value::<TrainConfig>(old).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected `ce` (cross-entropy) or `gce`"),
            "{e}"
        );
        assert!(LossKind::named("--loss", "focal", 3).is_err());
    }

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
            (
                TrainConfig {
                    loss: LossKind::Gce { k: 0 },
                    ..d.clone()
                },
                "k",
            ),
            (
                TrainConfig {
                    accumulate: 0,
                    ..d.clone()
                },
                "accumulate",
            ),
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
        let d = crate::train::run::RunOptions::default();
        d.validate().unwrap();
        for (o, name) in [
            (
                crate::train::run::RunOptions {
                    threads: 0,
                    ..d.clone()
                },
                "threads",
            ),
            (
                crate::train::run::RunOptions {
                    checkpoint_every: Some(0),
                    ..d.clone()
                },
                "checkpoint_every",
            ),
            (
                crate::train::run::RunOptions {
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

/// Method settings the iteration is built with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodConfig {
    /// `None`: plain global average pooling (baseline).
    pub diversify: Option<DiversifyConfig>,
    /// The loss of the main phase.
    pub loss: LossKind,
    /// Also record the micro-batch lists that add into the parameter gradients (gradient
    /// accumulation: [`TrainConfig::accumulate`] above 1).
    pub accumulate: bool,
}

/// What a [`Network`](super::Network) is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Everything training needs: gradients, SGD momentum, activation gradients, the
    /// training dispatch lists and the evaluation list.
    Train,
    /// Parameters, batch-norm statistics and four activation buffers shared by liveness,
    /// and only the evaluation list (ResNet-50 at 448 px, batch 2: 201 MiB against the
    /// training network's 919 MiB, from `bench --memory resnet50,448,2,200`; see
    /// [`crate::train::memory`]). The gradient fields (`Param::grad`,
    /// `Param::velocity`, `dmaps`, `dscores`, activation gradients) alias the values they
    /// would be the gradients of; nothing writes them.
    Inference,
}
