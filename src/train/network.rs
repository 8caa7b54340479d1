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

pub use super::config::{MethodConfig, NetMode};
use super::memory::{AMP_STATE, DFEAT_F32, DMAPS_F16, IMAGES_F16};
use super::params::ParamTable;
pub use super::params::{Param, ParamId, ParamLayout, StateId, StateTensor};
pub use super::topology::Topology;
use crate::error::Error;
use crate::error::Result;
pub use crate::gpu::Precision;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::amp::AMP_LEN;
use crate::method::loss::LossKind;
use crate::model::ModelConfig;
use crate::train::memory::{
    split_k_scratch_len, training_lists, ActivationLayout, AdapterClass, BN_PARTIALS,
    SPLIT_K_SCRATCH,
};
use layers::Layers;
use record::{Io, Recorder};

/// The initial loss scale of mixed-precision training (2^16, as PyTorch's GradScaler).
pub const LOSS_SCALE_INIT: f32 = 65536.0;
/// Clean steps after which the loss scale doubles (PyTorch's default).
pub const LOSS_SCALE_INTERVAL: u32 = 2000;

/// The whole network, its buffers and its recorded dispatch lists.
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
    /// [step_lo, step_hi] u32 for the mask hash, written each step.
    pub step: Tensor,
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

    /// Topology, parameters, activations (placed by the memory plan's layout), the other
    /// tensors, then the dispatch lists. Every buffer allocated here is in
    /// [`crate::train::memory::MemoryPlan`].
    fn build(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
        (mode, precision): (NetMode, Precision),
    ) -> Result<Network> {
        let topo = Topology::new(config, batch)?;
        let class = AdapterClass::of(gpu);
        if precision == Precision::Mixed && !gpu.features.shader_f16 {
            return Err(Error::invalid(
                "precision mixed",
                format!(
                    "adapter {} has no shader-f16 (16-bit floats in shaders): use precision f32",
                    gpu.info.name
                ),
            ));
        }
        let mut table = ParamTable::new(gpu, mode, precision, seed);
        let (unit_params, head) = super::params::declare(&topo, &mut table)?;
        let layout = ActivationLayout::new(&topo, mode);
        let act = precision.activations();
        let layers = Layers::allocate(gpu, (class.bn, act), &topo, &layout, &unit_params, head)?;
        let io = Network::io(gpu, &topo, mode, precision)?;
        let scratch_len = split_k_scratch_len(&topo, class);
        let scratch = if scratch_len > 0 && mode == NetMode::Train {
            Some(gpu.zeros(SPLIT_K_SCRATCH, &[scratch_len])?)
        } else {
            None
        };
        let (params, state) = (table.params, table.state);
        let bn_partials = if training_lists(mode, method) > 0 {
            let len = topo
                .units()
                .map(|u| u.bn.partials_len(class.bn))
                .max()
                .unwrap_or(1);
            Some(gpu.zeros(BN_PARTIALS, &[len])?)
        } else {
            None
        };

        let rec = Recorder {
            gpu,
            class,
            precision,
            params: &params,
            state: &state,
            layers: &layers,
            io: &io,
            scratch: scratch.as_ref(),
            bn_partials: bn_partials.as_ref(),
        };
        let train = mode == NetMode::Train;
        let ce = train && method.loss != LossKind::CrossEntropy;
        let list = |on: bool, loss: LossKind, accumulate: bool| match on {
            true => rec.training_iteration(method, loss, accumulate),
            false => Ok(Vec::new()),
        };
        let cross_entropy = LossKind::CrossEntropy;
        let train_main = list(train, method.loss, false)?;
        let train_ce = list(ce, cross_entropy, false)?;
        let accumulate_main = list(train && method.accumulate, method.loss, true)?;
        let accumulate_ce = list(ce && method.accumulate, cross_entropy, true)?;
        let optimizer = match train {
            true => rec.optimizer()?,
            false => Vec::new(),
        };
        let eval = rec.evaluation()?;

        Ok(Network {
            config: config.clone(),
            mode,
            precision,
            batch,
            params,
            state,
            images: io.images,
            labels: io.labels,
            maps: io.maps,
            dmaps: io.dmaps,
            scores: io.scores,
            dscores: io.dscores,
            mask: io.mask,
            step: io.step,
            hyper: io.hyper,
            stats: io.stats,
            amp: io.amp,
            mixed: io.mixed,
            map_size: topo.map,
            train_main,
            train_ce,
            accumulate_main,
            accumulate_ce,
            optimizer,
            eval,
            layers,
            scratch,
            bn_partials,
        })
    }

    /// The tensors outside the backbone. An inference network's gradient fields alias the
    /// values (nothing writes them).
    fn io(gpu: &Gpu, topo: &Topology, mode: NetMode, precision: Precision) -> Result<Io> {
        let n = topo.batch;
        let maps_shape = topo.maps_shape();
        let maps = gpu.zeros("class_maps", &maps_shape)?;
        let scores = gpu.zeros("scores", &[n, topo.classes])?;
        let (dmaps, dscores) = match mode {
            NetMode::Train => (
                gpu.zeros("class_maps.grad", &maps_shape)?,
                gpu.zeros("scores.grad", &[n, topo.classes])?,
            ),
            NetMode::Inference => (maps.clone(), scores.clone()),
        };
        let train = mode == NetMode::Train;
        let mixed = match precision {
            Precision::F32 => None,
            Precision::Mixed => Some(MixedIo {
                images: gpu.zeros_f16(IMAGES_F16, &topo.input)?,
                head: match train {
                    true => Some((
                        gpu.zeros_f16(DMAPS_F16, &maps_shape)?,
                        gpu.zeros(DFEAT_F32, &topo.features_shape())?,
                    )),
                    false => None,
                },
            }),
        };
        let amp = match (precision, train) {
            (Precision::Mixed, true) => Some(gpu.zeros_u32(AMP_STATE, &[AMP_LEN])?),
            _ => None,
        };
        Ok(Io {
            amp,
            mixed,
            images: gpu.zeros("images", &topo.input)?,
            labels: gpu.zeros_u32("labels", &[n])?,
            maps,
            dmaps,
            scores,
            dscores,
            mask: gpu.zeros_u32("diversify.mask", &maps_shape)?,
            step: gpu.zeros_u32("step", &[2])?,
            hyper: gpu.zeros("sgd.hyper", &[4])?,
            stats: gpu.zeros("loss.stats", &[4])?,
        })
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
    /// outputs, the split-K scratch and the batch-norm partials. Tensors that alias another (an inference
    /// network's gradients) are listed too. The launchers' own scratch buffers are not
    /// reachable from here; [`crate::train::memory::MemoryPlan`] lists them.
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
            &self.step,
            &self.hyper,
            &self.stats,
        ]);
        v.extend(&self.scratch);
        v.extend(&self.bn_partials);
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
