//! Learning-rate schedules with linear warm-up.

use serde::{Deserialize, Serialize};

/// How the learning rate decays after warm-up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// Constant learning rate.
    Constant,
    /// Multiply by `gamma` at each epoch in `milestones`.
    Step { milestones: Vec<usize>, gamma: f32 },
    /// Cosine from the base rate to `min_factor * base` at the last step.
    Cosine { min_factor: f32 },
}

/// A schedule bound to a base rate, warm-up length and run length (in steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f32,
    pub schedule: Schedule,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
}

impl LrSchedule {
    /// Learning rate at global step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        let base = self.base_lr as f64;
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return (base * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        let v = match &self.schedule {
            Schedule::Constant => base,
            Schedule::Step { milestones, gamma } => {
                let epoch = (step / self.steps_per_epoch.max(1)) as usize;
                let k = milestones.iter().filter(|&&m| epoch >= m).count();
                base * (*gamma as f64).powi(k as i32)
            }
            Schedule::Cosine { min_factor } => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps.min(step)) as f64 / span).min(1.0);
                let lo = base * *min_factor as f64;
                lo + 0.5 * (base - lo) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        v as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_step_and_cosine() {
        let s = LrSchedule {
            base_lr: 0.1,
            schedule: Schedule::Step {
                milestones: vec![2, 4],
                gamma: 0.1,
            },
            warmup_steps: 10,
            total_steps: 100,
            steps_per_epoch: 20,
        };
        assert!((s.lr(0) - 0.01).abs() < 1e-7);
        assert!((s.lr(9) - 0.1).abs() < 1e-7);
        assert!((s.lr(39) - 0.1).abs() < 1e-7);
        assert!((s.lr(40) - 0.01).abs() < 1e-7);
        assert!((s.lr(80) - 0.001).abs() < 1e-7);
        let c = LrSchedule {
            schedule: Schedule::Cosine { min_factor: 0.0 },
            warmup_steps: 0,
            ..s
        };
        assert!((c.lr(0) - 0.1).abs() < 1e-7);
        assert!((c.lr(50) - 0.05).abs() < 1e-6);
        assert!(c.lr(100).abs() < 1e-7);
    }
}
