//! The network on the GPU: every parameter, gradient, optimizer state and activation
//! allocated once from a [`ModelConfig`], and the dispatch lists of one training iteration
//! (forward, diversification block, loss, backward in reverse, optimizer) and of one
//! evaluation batch, built once and recorded every step.
//!
//! Split by job, in the order they depend on each other (none on a later one):
//! - [`crate::train::topology`]: the units and blocks of a [`ModelConfig`] with their
//!   shapes (pure);
//! - `train::params`: the parameter table, declared once, and typed ids ([`ParamId`],
//!   [`StateId`]);
//! - [`crate::train::memory`]: the memory plan, and the `ActivationLayout` that places
//!   activations and their gradients in shared buffers by liveness (pure);
//! - this module's `layers`: the units' GPU tensors, allocated by that layout;
//! - `record`: the dispatch lists, top to bottom.
//!
//! Buffer conventions: activations are NHWC. In a training network the activations the
//! backward pass reads have buffers of their own (except the outputs inside a block, which
//! backward rebuilds exactly into one shared buffer), each convolution output's gradient is
//! written over it, and the other gradients are views of a few buffers shared by liveness;
//! in an inference network the activations themselves share those buffers (see
//! `ActivationLayout`). A tensor consumed twice (a block input feeds
//! the main branch and the shortcut) gets its gradient overwritten by the main branch and
//! accumulated by the shortcut.
//!
//! Precision ([`Precision`]): f32 throughout, or mixed: the same buffers with every
//! activation and activation gradient in f16, f16 copies of the convolution and head
//! weights (rounded from the f32 masters at the start of each list), and dynamic loss
//! scaling ([`crate::kernels::amp`]); parameters, gradients, momentum, batch-norm
//! statistics, class maps, scores and the loss stay f32.

mod layers;
mod record;

use super::allocation::Allocation;
use super::config::{MethodConfig, NetMode};
use super::memory::{
    split_k_scratch_len, training_lists, ActivationLayout, MemoryPlan, AMP_STATE, BN_PARTIALS,
    DFEAT_F32, DMAPS_F16, HYPER, IMAGES, IMAGES_F16, LABELS, MAPS, MASK, MASK_SEED, SCORES,
    SPLIT_K_SCRATCH, STATS_LABEL,
};
use super::params::{grad_label, ParamTable};
pub use super::params::{Param, ParamId, ParamLayout, StateId, StateTensor};
use super::topology::Topology;
use crate::error::Error;
use crate::error::Result;
use crate::gpu::Precision;
use crate::gpu::{AdapterClass, Dispatch, Gpu, Tensor};
use crate::method::loss::{LossKind, LOSS_PER_IMAGE};
use crate::model::ModelConfig;
use layers::Layers;
use record::Recorder;

/// The initial loss scale of mixed-precision training (2^16, as PyTorch's GradScaler).
pub const LOSS_SCALE_INIT: f32 = 65536.0;
/// Clean steps after which the loss scale doubles (PyTorch's default).
pub const LOSS_SCALE_INTERVAL: u32 = 2000;

/// The whole network, its buffers and its recorded dispatch lists.
///
/// An engine internal, public on purpose: its fields are the tensors and dispatch lists
/// themselves, for those who time, inspect or extend one iteration (the benchmark and the
/// tests do). Training and inference go through [`crate::train::Trainer`],
/// [`crate::train::Run`] and [`crate::inference::Predictor`].
pub struct Network {
    pub config: ModelConfig,
    pub mode: NetMode,
    pub precision: Precision,
    pub batch: usize,
    pub params: Vec<Param>,
    pub state: Vec<StateTensor>,
    /// Input batch (N, S, S, Cin), written by the trainer each step.
    pub images: Tensor,
    /// Labels (N) u32.
    pub labels: Tensor,
    /// Class maps (N, h, w, C) and their gradient.
    pub maps: Tensor,
    pub dmaps: Tensor,
    /// Image scores (N, C) and their gradient.
    pub scores: Tensor,
    pub dscores: Tensor,
    /// Suppression mask of the diversification block (N, h, w, C) u32.
    pub mask: Tensor,
    /// The diversification masks' seed of the micro-batch as `[lo, hi]` u32 words, written
    /// before each micro-batch (the step with one micro-batch per step,
    /// [`crate::distributed::Shard::mask_seed`]).
    pub mask_seed: Tensor,
    /// [lr, momentum, weight_decay, grad_scale] f32, written each step.
    pub hyper: Tensor,
    /// [loss sum, top1, top5, non-finite count] f32 of the last training batch.
    pub stats: Tensor,
    /// Mixed-precision training: the loss-scaling state (u32 x 4, see
    /// [`crate::kernels::amp`]), set by the trainer before the first step.
    pub amp: Option<Tensor>,
    /// Mixed precision: the f16 copy of `images` the stem reads, and the head's backward
    /// scratch ([`crate::method::head::HeadHalf`]).
    mixed: Option<MixedIo>,
    pub map_size: (usize, usize),
    /// One micro-batch: forward + DB + loss (main-phase loss) + backward, overwriting the
    /// parameter gradients and the loss statistics. A training step records it, then
    /// [`Network::optimizer`].
    pub train_main: Vec<Dispatch>,
    /// The same with plain cross-entropy (warm-up phase).
    pub train_ce: Vec<Dispatch>,
    /// As `train_main` and `train_ce`, adding into the parameter gradients and the loss
    /// statistics: the second and later micro-batches of an optimizer step (gradient
    /// accumulation). Empty unless [`MethodConfig::accumulate`].
    pub accumulate_main: Vec<Dispatch>,
    pub accumulate_ce: Vec<Dispatch>,
    /// The optimizer step on the summed gradients: (mixed precision: overflow check) SGD
    /// on every parameter (mixed precision: loss-scale update).
    pub optimizer: Vec<Dispatch>,
    /// Evaluation forward (running BN statistics, no masks) to `scores`.
    pub eval: Vec<Dispatch>,
    /// The backbone's tensors.
    layers: Layers,
    /// Split-K partials of the weight gradients (training, when some layer splits).
    scratch: Option<Tensor>,
    /// Reduction partials of every batch-norm launch (training).
    bn_partials: Option<Tensor>,
    /// The loss's per-image statistics, one buffer per micro-batch list.
    loss_scratch: Vec<Tensor>,
}

/// The mixed-precision tensors outside the backbone.
pub(crate) struct MixedIo {
    /// f16 copy of the input batch.
    pub(crate) images: Tensor,
    /// Training: `dmaps` in f16 and the features' gradient in f32, before rounding.
    pub(crate) head: Option<(Tensor, Tensor)>,
}

impl Network {
    /// Allocate every buffer of `config` for batch size `batch` and build the dispatch lists
    /// (a [`NetMode::Train`] network, f32).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
    ) -> Result<Network> {
        Network::with_precision(gpu, config, batch, method, seed, Precision::F32)
    }

    /// As [`Network::new`] in `precision`.
    pub fn with_precision(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
        precision: Precision,
    ) -> Result<Network> {
        Network::build(
            gpu,
            config,
            batch,
            method,
            seed,
            (NetMode::Train, precision),
        )
    }

    /// An inference-only network ([`NetMode::Inference`], f32): weights initialised as by
    /// [`Network::new`] with seed 0 (load a checkpoint into it), only the `eval` list.
    pub fn inference(gpu: &Gpu, config: &ModelConfig, batch: usize) -> Result<Network> {
        Network::inference_with_precision(gpu, config, batch, Precision::F32)
    }

    /// As [`Network::inference`] in `precision`.
    pub fn inference_with_precision(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        precision: Precision,
    ) -> Result<Network> {
        let method = MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
            accumulate: false,
        };
        Network::build(
            gpu,
            config,
            batch,
            &method,
            0,
            (NetMode::Inference, precision),
        )
    }

    /// The memory plan allocates every buffer ([`MemoryPlan::allocate`]); the parameter
    /// table, the layers and the tensors outside the backbone take theirs from it by label,
    /// then the dispatch lists are recorded over the network. Nothing is sized here.
    fn build(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
        (mode, precision): (NetMode, Precision),
    ) -> Result<Network> {
        let topo = Topology::new(config, batch)?;
        let class = gpu.class();
        if precision == Precision::Mixed && !gpu.features.shader_f16 {
            return Err(Error::invalid(
                "precision mixed",
                format!(
                    "adapter {} has no shader-f16 (16-bit floats in shaders): use precision f32",
                    gpu.info.name
                ),
            ));
        }
        let lists = training_lists(mode, method);
        let plan = MemoryPlan::for_topology(&topo, (mode, precision), class, lists)?;
        let mut bufs = plan.allocate(gpu)?;
        let mut table = ParamTable::new(gpu, &mut bufs, (mode, precision), seed);
        let (unit_params, head) = super::params::declare(&topo, &mut table)?;
        let (params, state) = (table.params, table.state);
        let layout = ActivationLayout::new(&topo, mode);
        let layers = Layers::allocate((&mut bufs, class.bn), &topo, &layout, &unit_params, head)?;
        let train = mode == NetMode::Train;
        let grad = |bufs: &mut Allocation, value: &Tensor, label: &str| match train {
            true => bufs.take(&grad_label(label)),
            false => Ok(value.clone()),
        };
        let maps = bufs.take(MAPS)?;
        let scores = bufs.take(SCORES)?;
        let dmaps = grad(&mut bufs, &maps, MAPS)?;
        let dscores = grad(&mut bufs, &scores, SCORES)?;
        let mixed = match precision {
            Precision::F32 => None,
            Precision::Mixed => Some(MixedIo {
                images: bufs.take(IMAGES_F16)?,
                head: match train {
                    true => Some((bufs.take(DMAPS_F16)?, bufs.take(DFEAT_F32)?)),
                    false => None,
                },
            }),
        };
        let amp = match (precision, train) {
            (Precision::Mixed, true) => Some(bufs.take(AMP_STATE)?),
            _ => None,
        };
        let scratch = match train && split_k_scratch_len(&topo, class) > 0 {
            true => Some(bufs.take(SPLIT_K_SCRATCH)?),
            false => None,
        };
        let bn_partials = match lists > 0 {
            true => Some(bufs.take(BN_PARTIALS)?),
            false => None,
        };
        let loss_scratch = (0..lists)
            .map(|_| bufs.take(LOSS_PER_IMAGE))
            .collect::<Result<Vec<_>>>()?;
        let mut net = Network {
            config: config.clone(),
            mode,
            precision,
            batch,
            params,
            state,
            images: bufs.take(IMAGES)?,
            labels: bufs.take(LABELS)?,
            maps,
            dmaps,
            scores,
            dscores,
            mask: bufs.take(MASK)?,
            mask_seed: bufs.take(MASK_SEED)?,
            hyper: bufs.take(HYPER)?,
            stats: bufs.take(STATS_LABEL)?,
            amp,
            mixed,
            map_size: topo.map,
            train_main: Vec::new(),
            train_ce: Vec::new(),
            accumulate_main: Vec::new(),
            accumulate_ce: Vec::new(),
            optimizer: Vec::new(),
            eval: Vec::new(),
            layers,
            scratch,
            bn_partials,
            loss_scratch,
        };
        bufs.finish()?;
        net.record(gpu, class, method)?;
        Ok(net)
    }

    /// Record the dispatch lists over the network's tensors: each micro-batch list (and its
    /// accumulating twin) with its own loss scratch, the optimizer, the evaluation forward.
    fn record(&mut self, gpu: &Gpu, class: AdapterClass, method: &MethodConfig) -> Result<()> {
        let rec = Recorder {
            gpu,
            class,
            net: self,
        };
        let train = self.mode == NetMode::Train;
        let ce = train && method.loss != LossKind::CrossEntropy;
        let cross_entropy = LossKind::CrossEntropy;
        let mut scratch = self.loss_scratch.iter();
        let mut list = |on: bool, loss: LossKind, accumulate: bool| match on {
            true => {
                let per_image = scratch.next().ok_or_else(|| {
                    Error::invalid(
                        "memory plan",
                        "fewer loss scratch buffers than lists (a bug)",
                    )
                })?;
                rec.training_iteration(method, loss, accumulate, per_image)
            }
            false => Ok(Vec::new()),
        };
        let train_main = list(train, method.loss, false)?;
        let train_ce = list(ce, cross_entropy, false)?;
        let accumulate_main = list(train && method.accumulate, method.loss, true)?;
        let accumulate_ce = list(ce && method.accumulate, cross_entropy, true)?;
        let optimizer = match train {
            true => rec.optimizer()?,
            false => Vec::new(),
        };
        let eval = rec.evaluation()?;
        self.train_main = train_main;
        self.train_ce = train_ce;
        self.accumulate_main = accumulate_main;
        self.accumulate_ce = accumulate_ce;
        self.optimizer = optimizer;
        self.eval = eval;
        Ok(())
    }

    /// Dispatches of one micro-batch for the given phase, overwriting the parameter
    /// gradients, or adding into them with `accumulate` (a network built with
    /// [`MethodConfig::accumulate`]). The optimizer is not in it ([`Network::optimizer`]).
    pub fn train_dispatches(&self, cross_entropy_phase: bool, accumulate: bool) -> &[Dispatch] {
        let ce = cross_entropy_phase && !self.train_ce.is_empty();
        match (ce, accumulate) {
            (true, false) => &self.train_ce,
            (false, false) => &self.train_main,
            (true, true) => &self.accumulate_ce,
            (false, true) => &self.accumulate_main,
        }
    }

    /// Every dispatch the network recorded, in all its lists.
    pub fn dispatches(&self) -> impl Iterator<Item = &Dispatch> {
        self.train_main
            .iter()
            .chain(&self.train_ce)
            .chain(&self.accumulate_main)
            .chain(&self.accumulate_ce)
            .chain(&self.optimizer)
            .chain(&self.eval)
    }

    /// Total number of trainable values.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }

    /// Every tensor the network holds: parameters with their gradients and momentum, the
    /// running and batch statistics, every activation and activation gradient (views of
    /// the shared buffers included, and the shared buffers themselves), the inputs and
    /// outputs, the split-K scratch, the batch-norm partials and the loss's scratch. Tensors
    /// that alias another (an inference network's gradients) are listed too.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v: Vec<&Tensor> = Vec::new();
        for p in &self.params {
            v.extend([&p.value, &p.grad, &p.velocity]);
        }
        v.extend(self.state.iter().map(|s| &s.value));
        v.extend(self.layers.tensors());
        v.extend([
            &self.images,
            &self.labels,
            &self.maps,
            &self.dmaps,
            &self.scores,
            &self.dscores,
            &self.mask,
            &self.mask_seed,
            &self.hyper,
            &self.stats,
        ]);
        v.extend(&self.scratch);
        v.extend(&self.bn_partials);
        v.extend(&self.loss_scratch);
        v.extend(&self.amp);
        v.extend(self.params.iter().filter_map(|p| p.half.as_ref()));
        if let Some(m) = &self.mixed {
            v.push(&m.images);
            if let Some((a, b)) = &m.head {
                v.extend([a, b]);
            }
        }
        v
    }
}
