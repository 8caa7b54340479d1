//! The memory plan of a [`Network`](super::Network): every GPU buffer it allocates, named,
//! sized and put in a category, computed from the model, the batch size, the mode, the
//! precision (f16 activations in mixed precision) and the adapter class alone (no device).
//! `ActivationLayout` is where the activations and their gradients share storage by
//! liveness, so the sharing rules live here and only here. The plan is also what allocates:
//! `Network::build` allocates its buffers (`MemoryPlan::allocate`) and takes each by label,
//! so nothing is sized twice.
//!
//! What the plan counts: every storage buffer the network creates, including the scratch
//! its kernels' launchers use (split-K partials, batch-norm reduction partials, the loss's
//! per-image statistics, one per micro-batch list). What it does not: each dispatch's
//! uniform parameter block (16 to 80 bytes, one per dispatch: about 0.1 MiB for a ResNet-50
//! training network; `tests/suite/memory.rs` adds them from the dispatch lists), host
//! staging buffers made by the trainer (and the gradient exchange of a data-parallel run),
//! and whatever the driver adds (pipelines, alignment).
//!
//! ```
//! use finegrain::model::ModelConfig;
//! use finegrain::gpu::AdapterClass;
//! use finegrain::train::memory::{Category, MemoryPlan};
//! use finegrain::train::NetMode;
//! use finegrain::train::TrainConfig;
//!
//! let model = ModelConfig::preset("resnet18", 3, 224, 200).unwrap();
//! let (method, _) = TrainConfig::default()
//!     .method(model.num_classes, model.feature_size())
//!     .unwrap();
//! let train = MemoryPlan::new(&model, 8, NetMode::Train, AdapterClass::GPU, &method).unwrap();
//! let infer = MemoryPlan::new(&model, 8, NetMode::Inference, AdapterClass::GPU, &method).unwrap();
//! assert!(infer.total_bytes() < train.total_bytes() / 2);
//! // Mixed precision stores activations and their gradients in f16: half the bytes.
//! let mixed = MemoryPlan::with_precision(
//!     &model,
//!     8,
//!     NetMode::Train,
//!     AdapterClass::GPU,
//!     &method,
//!     finegrain::Precision::Mixed,
//! )
//! .unwrap();
//! let z = |p: &MemoryPlan| p.category_bytes(Category::ConvOutputs);
//! assert_eq!(2 * z(&mixed), z(&train));
//! println!("{}", train.markdown_table());
//! ```

use super::allocation::Allocation;
use super::config::{MethodConfig, NetMode};
use super::params::{grad_label, half_label, momentum_label, param_specs};
use super::topology::{Topology, Unit};
use crate::error::Result;
use crate::gpu::Precision;
use crate::gpu::{AdapterClass, DType, Gpu};
use crate::kernels::amp::AMP_LEN;
use crate::kernels::conv2d::weight_grad_scratch_len;
use crate::kernels::sgd::HYPER_LEN;
use crate::method::loss::{LossKind, LOSS_PER_IMAGE, STATS};
use crate::model::ModelConfig;

/// Labels of the buffers outside the backbone.
pub(crate) const IMAGES: &str = "images";
pub(crate) const LABELS: &str = "labels";
pub(crate) const MAPS: &str = "class_maps";
pub(crate) const SCORES: &str = "scores";
pub(crate) const MASK: &str = "diversify.mask";
pub(crate) const MASK_SEED: &str = "mask_seed";
pub(crate) const HYPER: &str = "sgd.hyper";
pub(crate) const STATS_LABEL: &str = "loss.stats";
/// Labels of the mixed-precision buffers outside the backbone.
pub(crate) const IMAGES_F16: &str = "images.f16";
pub(crate) const DMAPS_F16: &str = "class_maps.grad.f16";
pub(crate) const DFEAT_F32: &str = "features.grad.f32";
pub(crate) const AMP_STATE: &str = "amp.state";

/// Micro-batch dispatch lists a network records: the main phase's, plus a plain
/// cross-entropy one for the warm-up phase when the main loss is not cross-entropy, and
/// with gradient accumulation ([`MethodConfig::accumulate`]) an accumulating twin of each;
/// none in an inference network. Each list's launchers own their scratch buffers (the
/// loss's per-image statistics: all that accumulation adds to the memory plan).
pub(crate) fn training_lists(mode: NetMode, method: &MethodConfig) -> usize {
    let phases = match mode {
        NetMode::Inference => 0,
        NetMode::Train if method.loss == LossKind::CrossEntropy => 1,
        NetMode::Train => 2,
    };
    match method.accumulate {
        true => 2 * phases,
        false => phases,
    }
}

/// Label of the batch-norm reduction partials that every launch of a training network
/// shares.
pub(crate) const BN_PARTIALS: &str = "bn.partials";

/// Label of the split-K scratch buffer (the partial weight gradients).
pub const SPLIT_K_SCRATCH: &str = "conv.weight_grad.partials";

/// f32 of the one split-K scratch buffer a training network of `topo` allocates on an
/// adapter of class `class` (0: no layer splits): the most any layer's weight gradient
/// needs, since each layer's sum consumes it before the next layer writes it.
pub(crate) fn split_k_scratch_len(topo: &Topology, class: AdapterClass) -> usize {
    topo.units()
        .map(|u| weight_grad_scratch_len(&u.conv, class.kernels))
        .max()
        .unwrap_or(0)
}

/// One of the few buffers that activations (inference) or activation gradients (training)
/// share by liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SharedBuffer {
    /// Every unit's convolution output `z` (inference; batch norm reads it at once) or its
    /// gradient `dz` (training; written by BN backward, read at once by the convolution's
    /// two backward passes).
    ConvOut,
    /// Block boundaries (the stem output and each block output), alternating between two:
    /// block b reads its input (gradient: writes its input's gradient) while it writes its
    /// output (reads its output's gradient).
    Boundary(usize),
    /// Outputs inside a block (units before the last) and the stem's output before the max
    /// pool (inference), or their gradients (training): each is dead before the next is
    /// written. In both modes also the downsample's output, which the residual join reads
    /// right after it is written (in training the buffer holds gradients only during the
    /// backward pass).
    Inner,
    /// Training: the outputs inside a block (units before the last), which the backward
    /// pass recomputes from the saved `z` and batch statistics (one batch-norm pass) right
    /// before they are read, instead of keeping each in a buffer of its own: forward writes
    /// each here and the next unit's convolution reads it at once; backward rewrites
    /// unit i's before unit i + 1's weight gradient reads it, and unit i's ReLU backward
    /// reads it next. Unused (one element) in inference.
    Recompute,
}

impl SharedBuffer {
    /// The buffer's label: `grad.shared.*` in a training network, `act.shared.*` in an
    /// inference one.
    pub fn label(self, mode: NetMode) -> String {
        let kind = match mode {
            NetMode::Train => "grad",
            NetMode::Inference => "act",
        };
        match self {
            SharedBuffer::ConvOut => format!("{kind}.shared.conv_out"),
            SharedBuffer::Boundary(i) => format!("{kind}.shared.boundary{i}"),
            SharedBuffer::Inner => format!("{kind}.shared.inner"),
            SharedBuffer::Recompute => "act.shared.recompute".to_string(),
        }
    }

    /// Position in [`SharedBuffer::ALL`].
    pub fn index(self) -> usize {
        match self {
            SharedBuffer::ConvOut => 0,
            SharedBuffer::Boundary(i) => 1 + i % 2,
            SharedBuffer::Inner => 3,
            SharedBuffer::Recompute => 4,
        }
    }

    /// The four kinds, both boundaries.
    pub const ALL: [SharedBuffer; 5] = [
        SharedBuffer::ConvOut,
        SharedBuffer::Boundary(0),
        SharedBuffer::Boundary(1),
        SharedBuffer::Inner,
        SharedBuffer::Recompute,
    ];
}

/// Where an activation and its gradient live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Training: the value has a buffer of its own (the backward pass reads it); the
    /// gradient is a view of the shared buffer.
    OwnValue { grad: SharedBuffer },
    /// The value is a view of the shared buffer; the gradient field aliases the value and
    /// nothing writes or reads it (inference; a downsample's output, whose backward takes
    /// the block output's gradient).
    SharedValue(SharedBuffer),
    /// Training: the value has a buffer of its own and its gradient is written over it
    /// (a convolution output `z`: batch norm's backward reads each element of `z` before
    /// it writes `dz` there, and nothing reads `z` after that in the step).
    InPlace,
    /// Training: the value is a view of a shared buffer that the backward pass rewrites
    /// before reading it ([`SharedBuffer::Recompute`]); the gradient a view of another.
    Recomputed {
        value: SharedBuffer,
        grad: SharedBuffer,
    },
}

impl Placement {
    /// A pair in `shared`: the gradient in training, the value in inference.
    fn by_mode(mode: NetMode, shared: SharedBuffer) -> Placement {
        match mode {
            NetMode::Train => Placement::OwnValue { grad: shared },
            NetMode::Inference => Placement::SharedValue(shared),
        }
    }
}

/// Placements of one unit's convolution output `z` (with `dz`) and BN output `y` (with
/// `dy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UnitPlacement {
    pub(crate) z: Placement,
    pub(crate) y: Placement,
}

/// Placements of one block's units and downsample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockPlacement {
    pub(crate) units: Vec<UnitPlacement>,
    pub(crate) downsample: Option<UnitPlacement>,
}

/// Elements of each shared buffer (one where a mode places nothing in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SharedSizes {
    pub(crate) conv_out: usize,
    /// Each of the two boundary buffers.
    pub(crate) boundary: usize,
    pub(crate) inner: usize,
    pub(crate) recompute: usize,
}

impl SharedSizes {
    pub fn of(&self, b: SharedBuffer) -> usize {
        match b {
            SharedBuffer::ConvOut => self.conv_out,
            SharedBuffer::Boundary(_) => self.boundary,
            SharedBuffer::Inner => self.inner,
            SharedBuffer::Recompute => self.recompute,
        }
    }
}

/// Storage of every activation and activation gradient, by liveness.
///
/// Training ([`NetMode::Train`]): the forward activations that backward reads get buffers
/// of their own, except where they can be rebuilt exactly; the gradients share the
/// [`SharedBuffer`]s. Every `dz` is written over its own `z` ([`Placement::InPlace`]:
/// batch norm's backward is the last reader of `z`). Block-boundary gradients alternate
/// between two buffers, and the gradients inside a block (and the stem's before the max
/// pool) share one more (a unit's BN backward has consumed its `dy` before its
/// convolution's data gradient writes the previous unit's). The outputs inside a block
/// (units before the last) share one buffer and are recomputed in backward from their
/// unit's `z` and saved batch statistics by the same batch-norm pass as in forward, so
/// bit for bit the same ([`SharedBuffer::Recompute`]). A downsample's output, which
/// backward never reads, lives in the inner buffer (the residual join reads it right
/// after it is written, and the buffer holds gradients only during the backward pass);
/// its `dy` is never read.
///
/// Inference ([`NetMode::Inference`]): the same sharing applied to the activations
/// themselves (there is no backward to keep them for); the downsample's output goes to
/// the inner buffer as in training.
///
/// The whole-network gradient test, the PyTorch parity test and the inference-vs-training
/// test check that nothing live is overwritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActivationLayout {
    pub(crate) mode: NetMode,
    pub(crate) sizes: SharedSizes,
    pub(crate) stem: UnitPlacement,
    /// The max pool's output (and its gradient).
    pub(crate) pool: Option<Placement>,
    pub(crate) blocks: Vec<BlockPlacement>,
}

impl ActivationLayout {
    pub fn new(topo: &Topology, mode: NetMode) -> ActivationLayout {
        let act = |u: &Unit| u.out_len();
        let train = mode == NetMode::Train;
        let mut conv_out = act(&topo.stem);
        let mut inner = if topo.pool.is_some() {
            act(&topo.stem)
        } else {
            1
        };
        let mut boundary: usize = topo.stem_out_shape().iter().product();
        let mut recompute = 1;
        for b in &topo.blocks {
            for (i, u) in b.units.iter().enumerate() {
                conv_out = conv_out.max(act(u));
                if i + 1 < b.units.len() {
                    inner = inner.max(act(u));
                    recompute = recompute.max(act(u));
                }
            }
            if let Some(ds) = &b.downsample {
                conv_out = conv_out.max(act(ds));
                inner = inner.max(act(ds));
            }
            boundary = boundary.max(act(b.last()));
        }
        // Nothing is placed in conv_out in training (every dz is in place), nor in
        // recompute in inference.
        let (conv_out, recompute) = if train { (1, recompute) } else { (conv_out, 1) };
        let pair = |s| Placement::by_mode(mode, s);
        let z = if train {
            Placement::InPlace
        } else {
            Placement::SharedValue(SharedBuffer::ConvOut)
        };
        let inner_y = if train {
            Placement::Recomputed {
                value: SharedBuffer::Recompute,
                grad: SharedBuffer::Inner,
            }
        } else {
            Placement::SharedValue(SharedBuffer::Inner)
        };
        // The stem output is boundary 0; with a max pool, the stem's own output is inner.
        let (stem_y, pool) = match topo.pool {
            Some(_) => (
                pair(SharedBuffer::Inner),
                Some(pair(SharedBuffer::Boundary(0))),
            ),
            None => (pair(SharedBuffer::Boundary(0)), None),
        };
        let blocks = topo
            .blocks
            .iter()
            .enumerate()
            .map(|(bi, b)| BlockPlacement {
                units: (0..b.units.len())
                    .map(|i| UnitPlacement {
                        z,
                        y: if i + 1 == b.units.len() {
                            pair(SharedBuffer::Boundary((bi + 1) % 2))
                        } else {
                            inner_y
                        },
                    })
                    .collect(),
                // In both modes: the downsample's output is read once, by the residual
                // join right after it is written (its backward takes the block output's
                // gradient), and in training the inner buffer holds gradients only during
                // the backward pass.
                downsample: b.downsample.as_ref().map(|_| UnitPlacement {
                    z,
                    y: Placement::SharedValue(SharedBuffer::Inner),
                }),
            })
            .collect();
        ActivationLayout {
            mode,
            sizes: SharedSizes {
                conv_out,
                boundary,
                inner,
                recompute,
            },
            stem: UnitPlacement { z, y: stem_y },
            pool,
            blocks,
        }
    }
}

/// What a buffer is for (the rows of [`MemoryPlan::by_category`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// Trainable values (conv weights, BN gamma/beta, head).
    Parameters,
    /// Mixed precision: the f16 copies of the conv and head weights.
    HalfWeights,
    /// Their gradients.
    Gradients,
    /// SGD momentum (velocity).
    Momentum,
    /// BN running mean and variance.
    BnRunningStats,
    /// BN `save_mean` / `save_invstd` of the last training batch.
    BnBatchStats,
    /// Convolution outputs `z`: own buffers in training, the shared `conv_out` in
    /// inference.
    ConvOutputs,
    /// BN (+ ReLU, + residual join) outputs `y` and the max pool's output.
    BnOutputs,
    /// The shared activation-gradient buffers (training).
    ActivationGradients,
    /// Max-pool argmax indices.
    PoolIndex,
    /// Class maps and their gradient.
    ClassMaps,
    /// Image scores and their gradient.
    Scores,
    /// Diversification-block suppression mask.
    Mask,
    /// Input images.
    Images,
    /// Labels.
    Labels,
    /// Step counter, SGD hyper-parameters, loss statistics.
    Control,
    /// Split-K partial weight gradients, one buffer for every layer.
    SplitKScratch,
    /// Batch-norm reduction partials, one buffer for every launch (training).
    BnPartials,
    /// The loss's per-image statistics, one per training list.
    LossScratch,
}

impl Category {
    pub const ALL: [Category; 19] = [
        Category::Parameters,
        Category::HalfWeights,
        Category::Gradients,
        Category::Momentum,
        Category::BnRunningStats,
        Category::BnBatchStats,
        Category::ConvOutputs,
        Category::BnOutputs,
        Category::ActivationGradients,
        Category::PoolIndex,
        Category::ClassMaps,
        Category::Scores,
        Category::Mask,
        Category::Images,
        Category::Labels,
        Category::Control,
        Category::SplitKScratch,
        Category::BnPartials,
        Category::LossScratch,
    ];

    /// Row name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Category::Parameters => "parameters",
            Category::HalfWeights => "f16 weight copies",
            Category::Gradients => "parameter gradients",
            Category::Momentum => "SGD momentum",
            Category::BnRunningStats => "BN running stats",
            Category::BnBatchStats => "BN save_mean / save_invstd",
            Category::ConvOutputs => "activations: conv outputs z",
            Category::BnOutputs => "activations: BN/ReLU/pool outputs y",
            Category::ActivationGradients => "activation gradients (shared)",
            Category::PoolIndex => "max-pool index",
            Category::ClassMaps => "class maps (+ grad)",
            Category::Scores => "scores (+ grad)",
            Category::Mask => "DB mask",
            Category::Images => "images",
            Category::Labels => "labels",
            Category::Control => "step / hyper / stats",
            Category::SplitKScratch => "split-K scratch",
            Category::BnPartials => "BN reduction partials",
            Category::LossScratch => "loss per-image scratch",
        }
    }
}

/// One GPU buffer of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedBuffer {
    /// The buffer's label (as the network or the launcher creating it spells it; the
    /// launchers' scratch buffers of the two training lists share labels).
    pub label: String,
    pub category: Category,
    pub dtype: DType,
    /// Elements (of `dtype`).
    pub elements: usize,
    /// The shape the network allocates it with (its product is `elements`).
    pub shape: Vec<usize>,
    /// Labels of the tensors that are views of this buffer (the buffer's own label first
    /// when a tensor of that name uses it; tensors that alias another tensor carry its
    /// label).
    pub tensors: Vec<String>,
}

impl PlannedBuffer {
    /// Bytes the buffer takes (whole 4-byte words, never fewer than 4, as `Gpu` allocates
    /// them).
    pub fn bytes(&self) -> u64 {
        (self.elements as u64 * self.dtype.size())
            .next_multiple_of(4)
            .max(4)
    }
}

/// Every buffer a network of one model, batch size and mode allocates on one class of
/// adapter (see the module docs for what is left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    pub mode: NetMode,
    pub precision: Precision,
    pub batch: usize,
    pub class: AdapterClass,
    /// Training dispatch lists (`training_lists`).
    pub lists: usize,
    pub buffers: Vec<PlannedBuffer>,
}

impl MemoryPlan {
    /// The plan of `Network::new(gpu, config, batch, method, _)` ([`NetMode::Train`]) or
    /// `Network::inference(gpu, config, batch)` on an adapter of class `class` (f32).
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        mode: NetMode,
        class: AdapterClass,
        method: &MethodConfig,
    ) -> Result<MemoryPlan> {
        MemoryPlan::with_precision(config, batch, mode, class, method, Precision::F32)
    }

    /// As [`MemoryPlan::new`], for a network in `precision`
    /// (`Network::with_precision`, `Network::inference_with_precision`).
    pub fn with_precision(
        config: &ModelConfig,
        batch: usize,
        mode: NetMode,
        class: AdapterClass,
        method: &MethodConfig,
        precision: Precision,
    ) -> Result<MemoryPlan> {
        let topo = Topology::new(config, batch)?;
        let lists = training_lists(mode, method);
        MemoryPlan::for_topology(&topo, (mode, precision), class, lists)
    }

    /// The plan of a network of `topo` with `lists` training dispatch lists (ignored in
    /// inference, which has none).
    pub(crate) fn for_topology(
        topo: &Topology,
        (mode, precision): (NetMode, Precision),
        class: AdapterClass,
        lists: usize,
    ) -> Result<MemoryPlan> {
        let act = precision.activations();
        let mut p = Builder {
            act,
            ..Default::default()
        };
        let train = mode == NetMode::Train;
        let lists = if train { lists } else { 0 };
        let mixed = precision == Precision::Mixed;
        let (params, state) = param_specs(topo)?;
        for spec in &params {
            let shape = spec.layout.shape();
            p.own(&spec.name, Category::Parameters, &shape);
            if mixed && spec.layout.has_half() {
                let half = half_label(&spec.name);
                p.push(&half, Category::HalfWeights, DType::F16, &shape);
            }
            if train {
                p.own(&grad_label(&spec.name), Category::Gradients, &shape);
                p.own(&momentum_label(&spec.name), Category::Momentum, &shape);
            }
        }
        for s in &state {
            p.own(&s.name, Category::BnRunningStats, &[s.len]);
        }
        for u in topo.units() {
            for what in ["save_mean", "save_invstd"] {
                let label = format!("{}.{what}", u.bn_name);
                p.own(&label, Category::BnBatchStats, &[u.channels()]);
            }
        }

        let layout = ActivationLayout::new(topo, mode);
        p.unit(&topo.stem, &layout.stem);
        if let (Some(ps), Some(at)) = (&topo.pool, layout.pool) {
            let shape = ps.output_shape();
            p.activation("maxpool.out".into(), &shape, at, Category::BnOutputs);
        }
        for (b, at) in topo.blocks.iter().zip(&layout.blocks) {
            for (u, a) in b.units.iter().zip(&at.units) {
                p.unit(u, a);
            }
            if let (Some(ds), Some(a)) = (&b.downsample, &at.downsample) {
                p.unit(ds, a);
            }
        }
        for (i, b) in SharedBuffer::ALL.iter().enumerate() {
            let cat = match (mode, b) {
                (_, SharedBuffer::Recompute) => Category::BnOutputs,
                (NetMode::Train, _) => Category::ActivationGradients,
                (NetMode::Inference, SharedBuffer::ConvOut) => Category::ConvOutputs,
                (NetMode::Inference, _) => Category::BnOutputs,
            };
            p.buffers.push(PlannedBuffer {
                label: b.label(mode),
                category: cat,
                dtype: act,
                elements: layout.sizes.of(*b),
                shape: vec![layout.sizes.of(*b)],
                tensors: std::mem::take(&mut p.views[i]),
            });
        }
        if let Some(ps) = &topo.pool {
            p.own_u32("maxpool.index", Category::PoolIndex, &ps.output_shape());
        }

        let n = topo.batch;
        let maps = topo.maps_shape();
        let scores = [n, topo.classes];
        p.own(IMAGES, Category::Images, &topo.input);
        if mixed {
            p.push(IMAGES_F16, Category::Images, DType::F16, &topo.input);
            if train {
                p.push(DMAPS_F16, Category::ClassMaps, DType::F16, &maps);
                let feat = topo.features_shape();
                p.own(DFEAT_F32, Category::ActivationGradients, &feat);
                p.own_u32(AMP_STATE, Category::Control, &[AMP_LEN]);
            }
        }
        p.own_u32(LABELS, Category::Labels, &[n]);
        p.own(MAPS, Category::ClassMaps, &maps);
        p.own(SCORES, Category::Scores, &scores);
        if train {
            p.own(&grad_label(MAPS), Category::ClassMaps, &maps);
            p.own(&grad_label(SCORES), Category::Scores, &scores);
        }
        p.own_u32(MASK, Category::Mask, &maps);
        p.own_u32(MASK_SEED, Category::Control, &[2]);
        p.own(HYPER, Category::Control, &[HYPER_LEN]);
        p.own(STATS_LABEL, Category::Control, &[STATS]);

        let scratch = split_k_scratch_len(topo, class);
        if train && scratch > 0 {
            p.own(SPLIT_K_SCRATCH, Category::SplitKScratch, &[scratch]);
        }
        if lists > 0 {
            // One buffer for every batch-norm launch of every list: each launch's
            // finalize pass consumes its partials before the next launch writes them.
            let len = topo
                .units()
                .map(|u| u.bn.partials_len(class.bn))
                .max()
                .unwrap_or(1);
            p.own(BN_PARTIALS, Category::BnPartials, &[len]);
        }
        for _ in 0..lists {
            p.own(LOSS_PER_IMAGE, Category::LossScratch, &[topo.batch, STATS]);
        }
        Ok(MemoryPlan {
            mode,
            precision,
            batch: topo.batch,
            class,
            lists,
            buffers: p.buffers,
        })
    }

    /// Allocate every buffer of the plan on `gpu`, zero-filled: the network's buffers, each
    /// handed to the part of the network that uses it ([`Allocation::take`]). Nothing else
    /// is sized or allocated anywhere.
    pub(crate) fn allocate(&self, gpu: &Gpu) -> Result<Allocation> {
        let buffers = self
            .buffers
            .iter()
            .map(|b| Ok((b.label.clone(), gpu.zeros_of(&b.label, &b.shape, b.dtype)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Allocation::new(buffers))
    }

    /// Bytes of every buffer.
    pub fn total_bytes(&self) -> u64 {
        self.buffers.iter().map(|b| b.bytes()).sum()
    }

    /// Bytes per category, in [`Category::ALL`] order, categories without buffers left out.
    pub fn by_category(&self) -> Vec<(Category, u64)> {
        Category::ALL
            .iter()
            .filter_map(|&c| {
                let mut it = self.buffers.iter().filter(|b| b.category == c).peekable();
                it.peek()?;
                Some((c, it.map(|b| b.bytes()).sum()))
            })
            .collect()
    }

    /// Bytes of one category (0 when it has no buffers).
    pub fn category_bytes(&self, c: Category) -> u64 {
        self.buffers
            .iter()
            .filter(|b| b.category == c)
            .map(|b| b.bytes())
            .sum()
    }

    /// The `n` largest buffers, largest first.
    pub fn largest(&self, n: usize) -> Vec<&PlannedBuffer> {
        let mut v: Vec<&PlannedBuffer> = self.buffers.iter().collect();
        v.sort_by(|a, b| b.bytes().cmp(&a.bytes()).then(a.label.cmp(&b.label)));
        v.truncate(n);
        v
    }

    /// The buffer that holds the tensor labelled `label`: a buffer of that label, or the
    /// shared buffer it is a view of.
    pub fn buffer_of(&self, label: &str) -> Option<&PlannedBuffer> {
        self.buffers.iter().find(|b| b.label == label).or_else(|| {
            self.buffers
                .iter()
                .find(|b| b.tensors.iter().any(|t| t == label))
        })
    }

    /// A markdown table: category, bytes, MiB, and the total.
    pub fn markdown_table(&self) -> String {
        let mut s = String::from("| category | bytes | MiB |\n|---|---:|---:|\n");
        for (c, b) in self.by_category() {
            s += &format!("| {} | {b} | {:.1} |\n", c.name(), mib(b));
        }
        let t = self.total_bytes();
        s += &format!("| **total** | **{t}** | **{:.1}** |\n", mib(t));
        s
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[derive(Default)]
struct Builder {
    /// Element type of the activations and their gradients.
    act: DType,
    buffers: Vec<PlannedBuffer>,
    /// Tensors in each shared buffer, in [`SharedBuffer::ALL`] order.
    views: [Vec<String>; 5],
}

impl Builder {
    /// An activation of `shape` placed at `placement`.
    fn activation(&mut self, label: String, shape: &[usize], at: Placement, category: Category) {
        match at {
            Placement::OwnValue { grad } => {
                self.push(&label, category, self.act, shape);
                self.views[grad.index()].push(grad_label(&label));
            }
            Placement::SharedValue(b) => self.views[b.index()].push(label),
            Placement::InPlace => {
                let grad = grad_label(&label);
                self.push(&label, category, self.act, shape);
                if let Some(b) = self.buffers.last_mut() {
                    b.tensors.push(grad);
                }
            }
            Placement::Recomputed { value, grad } => {
                self.views[grad.index()].push(grad_label(&label));
                self.views[value.index()].push(label);
            }
        }
    }

    /// A unit's `z` and `y`.
    fn unit(&mut self, u: &Unit, at: &UnitPlacement) {
        self.activation(u.z_label(), &u.out_shape(), at.z, Category::ConvOutputs);
        self.activation(u.y_label(), &u.out_shape(), at.y, Category::BnOutputs);
    }

    fn push(&mut self, label: &str, category: Category, dtype: DType, shape: &[usize]) {
        self.buffers.push(PlannedBuffer {
            label: label.to_string(),
            category,
            dtype,
            elements: shape.iter().product(),
            shape: shape.to_vec(),
            tensors: vec![label.to_string()],
        });
    }

    fn own(&mut self, label: &str, category: Category, shape: &[usize]) {
        self.push(label, category, DType::F32, shape);
    }

    fn own_u32(&mut self, label: &str, category: Category, shape: &[usize]) {
        self.push(label, category, DType::U32, shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::KernelFamily;
    use std::collections::HashMap;

    fn tiny() -> Topology {
        let cfg = ModelConfig::preset("tiny", 1, 12, 3).unwrap();
        Topology::new(&cfg, 4).unwrap()
    }

    fn bytes(plan: &MemoryPlan, c: Category) -> u64 {
        plan.category_bytes(c)
    }

    /// The tiny model (1 x 12 x 12, 3 classes) at batch 4, counted by hand: stem 3x3 1->16
    /// at 12x12, then one basic block per stage (16, 32, 64 channels; stride 2: 6x6, 3x3,
    /// 2x2), each with a 1x1 downsample.
    #[test]
    fn tiny_training_plan_counted_by_hand() {
        let plan = MemoryPlan::for_topology(
            &tiny(),
            (NetMode::Train, Precision::F32),
            AdapterClass::CPU,
            2,
        )
        .unwrap();
        // conv weights 144 + 2304 + 2304 + 256 + 4608 + 9216 + 512 + 18432 + 36864 + 2048,
        // BN gamma and beta 2 x 352, head 64 x 3 + 3.
        let params = (76688 + 704 + 195) * 4;
        assert_eq!(bytes(&plan, Category::Parameters), params);
        assert_eq!(bytes(&plan, Category::Gradients), params);
        assert_eq!(bytes(&plan, Category::Momentum), params);
        // 352 BN channels: mean + var, save_mean + save_invstd.
        assert_eq!(bytes(&plan, Category::BnRunningStats), 2 * 352 * 4);
        assert_eq!(bytes(&plan, Category::BnBatchStats), 2 * 352 * 4);
        // Every z its own (dz written over it): stem 4x12x12x16, then three units of
        // 4x6x6x16, 4x3x3x32, 4x2x2x64 per stage.
        let acts = (9216 + 3 * 2304 + 3 * 1152 + 3 * 1024) * 4;
        assert_eq!(bytes(&plan, Category::ConvOutputs), acts);
        // Every y its own too, except the downsample outputs (in the shared inner buffer)
        // and each block's first output (recomputed in backward, into one buffer of the
        // largest: layer1's, 4x6x6x16).
        let ds = (2304 + 1152 + 1024) * 4;
        assert_eq!(bytes(&plan, Category::BnOutputs), acts - 2 * ds + 2304 * 4);
        // conv_out: unused (one element); boundaries: the stem output; inner: layer1's
        // conv1.
        assert_eq!(
            bytes(&plan, Category::ActivationGradients),
            (1 + 2 * 9216 + 2304) * 4
        );
        assert_eq!(bytes(&plan, Category::ClassMaps), 2 * 4 * 2 * 2 * 3 * 4);
        assert_eq!(bytes(&plan, Category::Scores), 2 * 4 * 3 * 4);
        assert_eq!(bytes(&plan, Category::Mask), 4 * 2 * 2 * 3 * 4);
        assert_eq!(bytes(&plan, Category::Images), 4 * 144 * 4);
        assert_eq!(bytes(&plan, Category::Labels), 16);
        assert_eq!(bytes(&plan, Category::Control), 8 + 16 + 16);
        assert_eq!(bytes(&plan, Category::PoolIndex), 0);
        // Broadcast kernels never split the weight gradient.
        assert_eq!(bytes(&plan, Category::SplitKScratch), 0);
        // CPU sizing: every BN here has at most 576 rows, one chunk of (2, C); one buffer
        // for every launch, of the widest (64 channels).
        assert_eq!(bytes(&plan, Category::BnPartials), 2 * 64 * 4);
        assert_eq!(bytes(&plan, Category::LossScratch), 2 * 4 * 4 * 4);
        // 1,234,236 before dz went in place (conv_out held the largest z), the partials
        // were shared (one (2, C) per launch per list) and the block outputs recomputed.
        let before = 1_234_236;
        let saved = (9216 * 4 - 4) + (2 * 2 * 2 * 352 - 2 * 64) * 4 + ds - 2304 * 4;
        assert_eq!(plan.total_bytes(), before - saved);
        assert_eq!(plan.total_bytes(), 1_177_920);
        let sum: u64 = plan.by_category().iter().map(|(_, b)| b).sum();
        assert_eq!(sum, plan.total_bytes());
    }

    #[test]
    fn tiny_inference_plan_counted_by_hand() {
        let plan = MemoryPlan::for_topology(
            &tiny(),
            (NetMode::Inference, Precision::F32),
            AdapterClass::CPU,
            0,
        )
        .unwrap();
        assert_eq!(bytes(&plan, Category::Parameters), 77587 * 4);
        for c in [
            Category::Gradients,
            Category::Momentum,
            Category::ActivationGradients,
            Category::SplitKScratch,
            Category::BnPartials,
            Category::LossScratch,
        ] {
            assert_eq!(bytes(&plan, c), 0, "{c:?}");
        }
        // The activations live in the four shared buffers only (the fifth, for outputs
        // recomputed in training, holds one element).
        assert_eq!(bytes(&plan, Category::ConvOutputs), 9216 * 4);
        assert_eq!(bytes(&plan, Category::BnOutputs), (2 * 9216 + 2304 + 1) * 4);
        assert_eq!(bytes(&plan, Category::ClassMaps), 48 * 4);
        assert_eq!(plan.total_bytes(), 438_584);
        assert!(plan
            .buffers
            .iter()
            .all(|b| b.category != Category::Gradients));
    }

    #[test]
    fn shared_buffer_views_follow_the_sharing_rules() {
        let plan = MemoryPlan::for_topology(
            &tiny(),
            (NetMode::Train, Precision::F32),
            AdapterClass::CPU,
            1,
        )
        .unwrap();
        let views = |label: &str| plan.buffer_of(label).unwrap().tensors.clone();
        // No gradient in conv_out: every dz is written over its z.
        assert!(views("grad.shared.conv_out").is_empty());
        assert_eq!(
            views("layer2.0.conv1.out"),
            ["layer2.0.conv1.out", "layer2.0.conv1.out.grad"]
        );
        assert_eq!(
            views("act.shared.recompute"),
            ["layer1.0.bn1.out", "layer2.0.bn1.out", "layer3.0.bn1.out"]
        );
        assert_eq!(
            views("grad.shared.boundary0"),
            ["bn1.out.grad", "layer2.0.bn2.out.grad"]
        );
        assert_eq!(
            views("grad.shared.boundary1"),
            ["layer1.0.bn2.out.grad", "layer3.0.bn2.out.grad"]
        );
        assert_eq!(
            views("grad.shared.inner"),
            [
                "layer1.0.bn1.out.grad",
                "layer1.0.downsample.1.out",
                "layer2.0.bn1.out.grad",
                "layer2.0.downsample.1.out",
                "layer3.0.bn1.out.grad",
                "layer3.0.downsample.1.out",
            ]
        );
        assert_eq!(
            plan.buffer_of("layer2.0.conv1.out.grad").unwrap().label,
            "layer2.0.conv1.out"
        );
        // Own buffers carry their own label; buffers the network names are named once.
        let mut seen = HashMap::new();
        for b in &plan.buffers {
            if !matches!(b.category, Category::BnPartials | Category::LossScratch) {
                assert!(seen.insert(b.label.clone(), ()).is_none(), "{}", b.label);
            }
        }
        let inf = MemoryPlan::for_topology(
            &tiny(),
            (NetMode::Inference, Precision::F32),
            AdapterClass::CPU,
            0,
        )
        .unwrap();
        assert_eq!(
            inf.buffer_of("layer1.0.downsample.1.out").unwrap().label,
            "act.shared.inner"
        );
        assert_eq!(
            inf.buffer_of("bn1.out").unwrap().label,
            "act.shared.boundary0"
        );
    }

    /// Replays the forward (both modes) and then the backward (training) in dispatch
    /// order on the layout's shared buffers and on the buffers that hold a value and then
    /// its gradient in place, and checks that every read finds the tensor it wants, for
    /// every preset: nothing live is overwritten, and every recomputed output is rebuilt
    /// before it is read.
    #[test]
    fn no_live_tensor_is_overwritten() {
        for (name, size) in [
            ("tiny", 28),
            ("small", 32),
            ("resnet18", 64),
            ("resnet34", 64),
            ("resnet50", 64),
        ] {
            let cfg = ModelConfig::preset(name, 3, size, 5).unwrap();
            let topo = Topology::new(&cfg, 2).unwrap();
            let train = ActivationLayout::new(&topo, NetMode::Train);
            replay_forward(&topo, &ActivationLayout::new(&topo, NetMode::Inference));
            let after_forward = replay_forward(&topo, &train);
            replay_backward(&topo, &train, after_forward);
        }
    }

    /// Which tensor each buffer holds: shared buffers by [`SharedBuffer::index`], a value
    /// with its gradient in place by `IN_PLACE + its unit's number`.
    struct Replay {
        holds: HashMap<usize, String>,
        slot: HashMap<String, Option<usize>>,
    }

    const IN_PLACE: usize = 1000;

    impl Replay {
        fn new() -> Self {
            Replay {
                holds: HashMap::new(),
                slot: HashMap::new(),
            }
        }
        /// `t` lives in buffer `b` (None: a buffer of its own, never shared).
        fn place(&mut self, t: &str, b: Option<usize>) {
            self.slot.insert(t.to_string(), b);
        }
        fn write(&mut self, t: &str) {
            if let Some(Some(b)) = self.slot.get(t) {
                self.holds.insert(*b, t.to_string());
            }
        }
        fn read(&self, t: &str) {
            match self.slot.get(t) {
                Some(Some(b)) => assert_eq!(
                    self.holds.get(b).map(String::as_str),
                    Some(t),
                    "`{t}` was overwritten (or not rebuilt) before it was read"
                ),
                Some(None) => {}
                None => panic!("`{t}` has no placement"),
            }
        }
    }

    /// Buffers of a value and of its gradient placed at `p`, for the unit numbered `k`.
    fn slots(p: Placement, k: usize) -> (Option<usize>, Option<usize>) {
        match p {
            Placement::SharedValue(b) => (Some(b.index()), Some(b.index())),
            Placement::OwnValue { grad } => (None, Some(grad.index())),
            Placement::InPlace => (Some(IN_PLACE + k), Some(IN_PLACE + k)),
            Placement::Recomputed { value, grad } => (Some(value.index()), Some(grad.index())),
        }
    }

    /// Every unit with its placement and number, stem first.
    fn placed<'a>(
        topo: &'a Topology,
        l: &'a ActivationLayout,
    ) -> impl Iterator<Item = (usize, &'a Unit, &'a UnitPlacement)> {
        topo.units()
            .zip(
                std::iter::once(&l.stem).chain(
                    l.blocks
                        .iter()
                        .flat_map(|b| b.units.iter().chain(&b.downsample)),
                ),
            )
            .enumerate()
            .map(|(k, (u, at))| (k, u, at))
    }

    fn replay_forward(topo: &Topology, l: &ActivationLayout) -> Replay {
        let mut r = Replay::new();
        for (k, u, at) in placed(topo, l) {
            r.place(&u.z_label(), slots(at.z, k).0);
            r.place(&u.y_label(), slots(at.y, k).0);
        }
        let unit = |r: &mut Replay, u: &Unit, x: &str| {
            r.read(x);
            r.write(&u.z_label());
            r.read(&u.z_label());
            r.write(&u.y_label());
        };
        r.place("images", None);
        unit(&mut r, &topo.stem, "images");
        let mut x = topo.stem.y_label();
        if let Some(p) = l.pool {
            r.place("maxpool.out", slots(p, usize::MAX).0);
            r.read(&x);
            r.write("maxpool.out");
            x = "maxpool.out".into();
        }
        for b in &topo.blocks {
            let mut inp = x.clone();
            for u in &b.units {
                unit(&mut r, u, &inp);
                inp = u.y_label();
            }
            let short = match &b.downsample {
                Some(ds) => {
                    unit(&mut r, ds, &x);
                    ds.y_label()
                }
                None => x.clone(),
            };
            r.read(&inp);
            r.read(&short);
            r.write(&inp);
            x = inp;
        }
        r.read(&x); // the head
        r
    }

    /// The backward as `record.rs` records it, continuing from the forward's buffers.
    fn replay_backward(topo: &Topology, l: &ActivationLayout, mut r: Replay) {
        let g = |t: String| grad_label(&t);
        let mut recomputed = HashMap::new();
        for (k, u, at) in placed(topo, l) {
            r.place(&g(u.z_label()), slots(at.z, k).1);
            r.place(&g(u.y_label()), slots(at.y, k).1);
            recomputed.insert(u.y_label(), matches!(at.y, Placement::Recomputed { .. }));
        }
        if let Some(p) = l.pool {
            r.place("maxpool.out.grad", slots(p, usize::MAX).1);
        }
        // A unit's backward from `dy`: its ReLU, batch norm (dz over z where in place),
        // the rebuild of its input `x` when that is recomputed (`x_unit`), then the weight
        // gradient (reads x) and the data gradient (writes `dx`).
        let unit = |r: &mut Replay, u: &Unit, dy: &str, x: &str, x_unit: Option<&Unit>| {
            if u.relu {
                r.read(&u.y_label());
                r.read(dy);
            }
            r.read(&u.z_label());
            r.read(dy);
            r.write(&g(u.z_label()));
            if let Some(p) = x_unit.filter(|p| recomputed[&p.y_label()]) {
                r.read(&p.z_label());
                r.write(&p.y_label());
            }
            r.read(&g(u.z_label()));
            r.read(x);
        };
        let stem_out = match l.pool {
            Some(_) => "maxpool.out".to_string(),
            None => topo.stem.y_label(),
        };
        let input = |b: usize| match b {
            0 => stem_out.clone(),
            _ => topo.blocks[b - 1].last().y_label(),
        };
        r.write(&g(input(topo.blocks.len()))); // head backward
        for (bi, b) in topo.blocks.iter().enumerate().rev() {
            let last = b.last();
            let (x, dx) = (input(bi), g(input(bi)));
            r.read(&last.y_label()); // relu backward of the join
            r.read(&g(last.y_label()));
            for i in (0..b.units.len()).rev() {
                let u = &b.units[i];
                let (ux, udx, prev) = match i {
                    0 => (x.clone(), dx.clone(), None),
                    _ => {
                        let p = &b.units[i - 1];
                        (p.y_label(), g(p.y_label()), Some(p))
                    }
                };
                unit(&mut r, u, &g(u.y_label()), &ux, prev);
                r.write(&udx);
            }
            if let Some(ds) = &b.downsample {
                unit(&mut r, ds, &g(last.y_label()), &x, None);
            } else {
                r.read(&g(last.y_label()));
            }
            r.read(&dx); // the shortcut accumulates into it
        }
        if topo.pool.is_some() {
            r.read("maxpool.out.grad");
            r.write(&g(topo.stem.y_label()));
        }
        unit(&mut r, &topo.stem, &g(topo.stem.y_label()), "images", None);
    }

    #[test]
    fn split_k_scratch_depends_on_the_adapter_class() {
        let cfg = ModelConfig::preset("resnet18", 3, 64, 10).unwrap();
        let topo = Topology::new(&cfg, 2).unwrap();
        let plan = |class| {
            MemoryPlan::for_topology(&topo, (NetMode::Train, Precision::F32), class, 1).unwrap()
        };
        let scratch = |p: &MemoryPlan| p.category_bytes(Category::SplitKScratch);
        assert_eq!(scratch(&plan(AdapterClass::CPU)), 0);
        let expect = topo
            .units()
            .map(|u| weight_grad_scratch_len(&u.conv, KernelFamily::Tiled))
            .max()
            .unwrap() as u64
            * 4;
        assert!(expect > 0);
        assert_eq!(scratch(&plan(AdapterClass::GPU)), expect);
        let inf = MemoryPlan::for_topology(
            &topo,
            (NetMode::Inference, Precision::F32),
            AdapterClass::GPU,
            0,
        );
        assert_eq!(scratch(&inf.unwrap()), 0);
    }

    #[test]
    fn training_lists_follow_the_loss() {
        let ce = MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
            accumulate: false,
        };
        let gce = MethodConfig {
            diversify: None,
            loss: LossKind::Gce { k: 3 },
            accumulate: false,
        };
        assert_eq!(training_lists(NetMode::Train, &ce), 1);
        assert_eq!(training_lists(NetMode::Train, &gce), 2);
        assert_eq!(training_lists(NetMode::Inference, &gce), 0);
        let cfg = ModelConfig::preset("tiny", 1, 12, 3).unwrap();
        let one = MemoryPlan::new(&cfg, 4, NetMode::Train, AdapterClass::CPU, &ce).unwrap();
        let two = MemoryPlan::new(&cfg, 4, NetMode::Train, AdapterClass::CPU, &gce).unwrap();
        // A second list adds only the loss's per-image statistics (the batch-norm
        // partials are shared by both).
        let list = two.total_bytes() - one.total_bytes();
        assert_eq!(list, 4 * 4 * 4);
        assert!(MemoryPlan::new(&cfg, 0, NetMode::Train, AdapterClass::CPU, &ce).is_err());
    }

    #[test]
    fn adapter_classes_parse() {
        assert_eq!("gpu".parse::<AdapterClass>().unwrap(), AdapterClass::GPU);
        assert_eq!(
            "cpu-subgroup".parse::<AdapterClass>().unwrap(),
            AdapterClass::CPU_SUBGROUP
        );
        assert!("tpu".parse::<AdapterClass>().is_err());
    }
}
