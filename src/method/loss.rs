//! Cross-entropy and the gradient-boosting cross-entropy (GCE) on scores `(N, C)` with u32
//! labels `(N)`, their gradients, and the top-1 / top-5 counts. Kernel: `shaders/loss.wgsl`
//! (one workgroup per image), then the batch sum of the per-image statistics on
//! `shaders/head.wgsl`'s `column_sum`. Twin: `finegrain::reference::loss` (feature `testing`).
//!
//! GCE (METHOD.md): J' = the k' = min(k, C - 1) highest-scoring classes among j != y (ties:
//! lower class index wins); L = -log softmax over {y} U J' at y, with max subtraction;
//! dL/ds = p' - onehot(y) on {y} U J', exactly 0 elsewhere. Cross-entropy is the full
//! softmax (the same kernel with every class in the set). Top-k correctness: the label is
//! among the k highest scores, ties going to the lower class index; top-5 with C < 5 is
//! top-C.
//!
//! The statistics tensor holds 4 f32: see [`STAT_LOSS_SUM`], [`STAT_TOP1`], [`STAT_TOP5`],
//! [`STAT_NON_FINITE`].
//!
//! Scratch: the launchers allocate a per-image `(N, 4)` buffer (`loss.per_image`: loss,
//! top1, top5, non-finite per image) that only their own dispatches use. The returned
//! [`Dispatch`]es keep it alive (wgpu keeps a buffer alive while a bind group refers to it,
//! as WebGPU specifies), so the API stays a plain `Vec<Dispatch>`.

use super::head::column_sum;
use super::{dims, dims_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Size, Tensor};
use crate::kernels::LOSS;

/// Index in the stats tensor: sum over images of the per-image loss (skipped images, see
/// [`STAT_NON_FINITE`], add 0).
pub const STAT_LOSS_SUM: usize = 0;
/// Index in the stats tensor: images whose label has the highest score.
pub const STAT_TOP1: usize = 1;
/// Index in the stats tensor: images whose label is among the min(5, C) highest scores.
pub const STAT_TOP5: usize = 2;
/// Index in the stats tensor: skipped images, whose label is out of range or whose scores
/// or loss hold a NaN or infinity. A skipped image adds loss 0, no correct counts and a
/// zero gradient row (so one bad image cannot poison the batch); the trainer should treat
/// a non-zero count as divergence.
pub const STAT_NON_FINITE: usize = 3;
/// Number of f32 in the stats tensor.
pub const STATS: usize = 4;

/// Which loss the head is trained with: the one loss setting, from the `--loss` and `--k`
/// flags through [`TrainConfig::loss`](crate::train::TrainConfig::loss) and checkpoints to
/// the launchers. Checkpoints spell it as two keys, `"loss": "ce"` or `"gce"` and `"k"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Plain softmax cross-entropy.
    CrossEntropy,
    /// Gradient-boosting cross-entropy over the label and the k highest other classes
    /// (clamped to C - 1, see [`effective_k`]); the paper uses k = 15 for 200 classes.
    Gce { k: u32 },
}

impl LossKind {
    /// `ce` or `gce`, as checkpoints and the `--loss` flag spell it.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::CrossEntropy => "ce",
            LossKind::Gce { .. } => "gce",
        }
    }

    /// The loss called `name` (`ce` or `gce`), with `k` for GCE; `what` names the setting in
    /// errors.
    pub fn named(what: &'static str, name: &str, k: u32) -> Result<LossKind> {
        match name {
            "ce" => Ok(LossKind::CrossEntropy),
            "gce" => Ok(LossKind::Gce { k }),
            other => Err(Error::invalid(
                what,
                format!("`{other}`: expected `ce` (cross-entropy) or `gce`"),
            )),
        }
    }
}

/// Serde for [`LossKind`] as the two keys checkpoints have always had, `loss` (`ce`/`gce`)
/// and `k` (GCE's k; written as 0 for cross-entropy and ignored there), for a field marked
/// `#[serde(flatten, with = "loss_keys")]`.
pub(crate) mod loss_keys {
    use super::LossKind;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Keys {
        loss: String,
        #[serde(default)]
        k: u32,
    }

    pub(crate) fn serialize<S: Serializer>(l: &LossKind, s: S) -> Result<S::Ok, S::Error> {
        let k = match *l {
            LossKind::Gce { k } => k,
            LossKind::CrossEntropy => 0,
        };
        Keys {
            loss: l.name().to_string(),
            k,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LossKind, D::Error> {
        let keys = Keys::deserialize(d)?;
        LossKind::named("loss", &keys.loss, keys.k).map_err(serde::de::Error::custom)
    }
}

/// `k' = min(k, C - 1)` and whether `k` had to be clamped (the trainer logs it).
pub fn effective_k(k: u32, classes: usize) -> (u32, bool) {
    let max = classes.saturating_sub(1).min(u32::MAX as usize) as u32;
    (k.min(max), k > max)
}

/// Parameter block of `shaders/loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct LossParams {
    pub(crate) n: u32,
    pub(crate) c: u32,
    /// k' (GCE); C - 1 for cross-entropy.
    pub(crate) kp: u32,
    /// 1 when every class is in the softmax set (cross-entropy, or k' = C - 1).
    pub(crate) all: u32,
    /// min(5, C).
    pub(crate) top5: u32,
    pub(crate) _pad0: u32,
    pub(crate) _pad1: u32,
    pub(crate) _pad2: u32,
}

/// The parameter block for `n` images, `c` classes and `kind`.
pub(crate) fn loss_params(n: usize, c: usize, kind: LossKind) -> Result<LossParams> {
    dims("loss", &[("N", n), ("C", c)])?;
    let kp = match kind {
        LossKind::CrossEntropy => (c - 1) as u32,
        LossKind::Gce { k: 0 } => {
            return Err(Error::invalid(
                "GCE k",
                "must be at least 1 (k = 0 leaves only the label: zero loss)",
            ))
        }
        LossKind::Gce { k } => effective_k(k, c).0,
    };
    Ok(LossParams {
        n: n as u32,
        c: c as u32,
        kp,
        all: (kp as usize >= c - 1) as u32,
        top5: c.min(5) as u32,
        ..Default::default()
    })
}

/// How the loss launchers run: which loss, and whether `stats` is overwritten or added
/// into (evaluation accumulates over batches and reads once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossOptions {
    pub kind: LossKind,
    pub accumulate: bool,
}

impl LossOptions {
    /// `kind`, overwriting `stats`.
    pub fn new(kind: LossKind) -> Self {
        LossOptions {
            kind,
            accumulate: false,
        }
    }
}

/// Tensors of [`loss_forward_backward`]: `scores (N, C)` and `labels (N)` u32 (read),
/// `dscores (N, C)` and `stats (4)` (written).
pub struct LossForwardBackward<'a> {
    pub scores: &'a Tensor,
    pub labels: &'a Tensor,
    pub dscores: &'a Tensor,
    pub stats: &'a Tensor,
    /// The per-image statistics `(N, 4)` between the two passes: a buffer of the caller's
    /// (a network's, from its memory plan), or `None` for one of the launch's own.
    pub per_image: Option<&'a Tensor>,
}

/// Tensors of [`loss_eval`]: `scores (N, C)` and `labels (N)` u32 (read), `stats (4)`.
pub struct LossEval<'a> {
    pub scores: &'a Tensor,
    pub labels: &'a Tensor,
    pub stats: &'a Tensor,
}

/// Label of the per-image statistics buffer between the loss's two passes.
pub(crate) const LOSS_PER_IMAGE: &str = "loss.per_image";

fn build(
    gpu: &Gpu,
    entry: &'static str,
    o: &LossOptions,
    t: &LossEval,
    (dscores, scratch): (Option<&Tensor>, Option<&Tensor>),
) -> Result<Vec<Dispatch>> {
    let [n, c] = dims_of(entry, "scores", t.scores, DType::F32, ["N", "C"])?;
    let p = loss_params(n, c, o.kind)?;
    t.labels
        .check(entry, "labels", DType::U32, Size::Shape(&[n]))?;
    t.stats
        .check(entry, "stats", DType::F32, Size::Shape(&[STATS]))?;
    if let Some(d) = dscores {
        d.check(entry, "dscores", DType::F32, Size::Shape(&[n, c]))?;
    }
    let own;
    let per_image = match scratch {
        Some(s) => {
            s.check(entry, "per_image", DType::F32, Size::Shape(&[n, STATS]))?;
            s
        }
        None => {
            own = gpu.zeros(LOSS_PER_IMAGE, &[n, STATS])?;
            &own
        }
    };
    let mut bound = vec![t.scores, t.labels, per_image];
    if let Some(d) = dscores {
        bound.push(d);
    }
    let image = gpu.dispatch(&LOSS, entry, &p, &bound, gpu.grid(n as u64))?;
    let batch = column_sum(gpu, per_image, t.stats, o.accumulate)?;
    Ok(vec![image, batch])
}

/// Loss, gradient and accuracy counts for a batch (N and C from `scores`): `dscores`,
/// overwritten with dL/ds of the batch-mean loss (1/N included; exactly 0 outside
/// {y} U J' for GCE), and `stats (4)` (see [`STATS`]), overwritten, or added into when
/// `o.accumulate`. Two dispatches, to be recorded in order.
pub fn loss_forward_backward(
    gpu: &Gpu,
    o: &LossOptions,
    t: &LossForwardBackward,
) -> Result<Vec<Dispatch>> {
    let eval = LossEval {
        scores: t.scores,
        labels: t.labels,
        stats: t.stats,
    };
    let bufs = (Some(t.dscores), t.per_image);
    build(gpu, "loss_forward_backward", o, &eval, bufs)
}

/// Statistics only (evaluation): `stats (4)` overwritten, or added into when
/// `o.accumulate`. Two dispatches, in order.
pub fn loss_eval(gpu: &Gpu, o: &LossOptions, t: &LossEval) -> Result<Vec<Dispatch>> {
    build(gpu, "loss_eval", o, t, (None, None))
}
