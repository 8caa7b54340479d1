//! The parameter table: every trainable tensor (with its gradient and SGD momentum) and
//! every batch-norm running statistic, declared once ([`declare`]) in [`Topology::units`]
//! order and initialised from one seeded RNG as torchvision does, and the typed ids the
//! dispatch lists refer to them by.

use super::allocation::Allocation;
use super::config::NetMode;
use super::topology::{Topology, Unit};
use crate::error::Result;
use crate::gpu::Precision;
use crate::gpu::{Gpu, Tensor};
use rand::{Rng, SeedableRng};

/// How a parameter is laid out on the GPU (checkpoints use PyTorch's layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamLayout {
    /// Convolution weight, GPU layout (KH, KW, Cin, Cout); PyTorch (Cout, Cin, KH, KW).
    Conv {
        kh: usize,
        kw: usize,
        cin: usize,
        cout: usize,
    },
    /// Class-map head weight, GPU layout (D, C); PyTorch 1x1 conv (C, D, 1, 1).
    Head { d: usize, c: usize },
    /// A vector (BN gamma/beta, head bias).
    Vector(usize),
}

impl ParamLayout {
    /// Shape of the GPU tensor.
    pub fn shape(&self) -> Vec<usize> {
        match *self {
            ParamLayout::Conv { kh, kw, cin, cout } => vec![kh, kw, cin, cout],
            ParamLayout::Head { d, c } => vec![d, c],
            ParamLayout::Vector(n) => vec![n],
        }
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether a mixed-precision network keeps an f16 copy ([`Param::half`]): the weights
    /// the convolutions and the head multiply by.
    pub fn has_half(&self) -> bool {
        !matches!(self, ParamLayout::Vector(_))
    }
}

/// A trainable tensor with its gradient and SGD velocity.
pub struct Param {
    /// torchvision-style name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    pub layout: ParamLayout,
    pub value: Tensor,
    pub grad: Tensor,
    pub velocity: Tensor,
    /// Weight decay applies (conv and head weights; not BN or biases).
    pub decay: bool,
    /// Mixed precision: the f16 copy the convolution or the head reads (conv and head
    /// weights), rounded from `value` at the start of every dispatch list.
    pub half: Option<Tensor>,
}

/// A non-trainable state tensor (BN running statistics).
pub struct StateTensor {
    pub name: String,
    pub value: Tensor,
}

/// Which [`Param`] of [`super::Network::params`] (only the table hands these out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamId(pub(crate) usize);

/// Which [`StateTensor`] of [`super::Network::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateId(pub(crate) usize);

impl ParamId {
    /// Position in [`super::Network::params`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl StateId {
    /// Position in [`super::Network::state`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// How a parameter's initial values are made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Init {
    /// Kaiming-normal with fan-out and ReLU gain (torchvision's ResNet convolutions):
    /// N(0, 2 / fan_out), drawn from the table's RNG.
    KaimingNormal { fan_out: usize },
    /// Uniform in [-bound, bound) from the table's RNG (torchvision's default for the 1x1
    /// head: bound = 1 / sqrt(fan_in)).
    Uniform { bound: f32 },
    /// Every value the same (BN gamma 1, beta 0; running mean 0, variance 1).
    Constant(f32),
}

/// One parameter as the table declares it (the memory plan lists these without a device).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamSpec {
    pub(crate) name: String,
    pub(crate) layout: ParamLayout,
    /// Weight decay applies.
    pub(crate) decay: bool,
    pub(crate) init: Init,
}

/// One running statistic as the table declares it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StateSpec {
    pub(crate) name: String,
    pub(crate) len: usize,
    pub(crate) init: f32,
}

/// The parameters and running statistics of one conv + BN unit.
#[derive(Clone, Copy, Debug)]
pub(super) struct UnitParams {
    pub weight: ParamId,
    pub gamma: ParamId,
    pub beta: ParamId,
    pub running_mean: StateId,
    pub running_var: StateId,
}

/// The class-map head's parameters.
#[derive(Clone, Copy, Debug)]
pub(super) struct HeadParams {
    pub weight: ParamId,
    pub bias: ParamId,
}

/// Receives the table's declarations in order and hands out their ids.
pub(super) trait ParamSink {
    fn param(&mut self, spec: ParamSpec) -> Result<ParamId>;
    fn state(&mut self, spec: StateSpec) -> Result<StateId>;
}

/// The one listing of the table: every unit's weight, BN gamma and beta, running mean and
/// variance in [`Topology::units`] order, then the head's weight and bias. The RNG draws
/// follow this order, so it is part of what makes a seed reproduce a network.
pub(super) fn declare(
    topo: &Topology,
    sink: &mut impl ParamSink,
) -> Result<(Vec<UnitParams>, HeadParams)> {
    let mut units = Vec::new();
    for u in topo.units() {
        units.push(declare_unit(u, sink)?);
    }
    let (d, classes) = (topo.features, topo.classes);
    let bound = 1.0 / (d as f32).sqrt();
    let weight = sink.param(ParamSpec {
        name: "head.weight".into(),
        layout: ParamLayout::Head { d, c: classes },
        decay: true,
        init: Init::Uniform { bound },
    })?;
    let bias = sink.param(ParamSpec {
        name: "head.bias".into(),
        layout: ParamLayout::Vector(classes),
        decay: false,
        init: Init::Uniform { bound },
    })?;
    Ok((units, HeadParams { weight, bias }))
}

fn declare_unit(u: &Unit, sink: &mut impl ParamSink) -> Result<UnitParams> {
    let c = &u.conv;
    let weight = sink.param(ParamSpec {
        name: format!("{}.weight", u.conv_name),
        layout: ParamLayout::Conv {
            kh: c.kh,
            kw: c.kw,
            cin: c.cin,
            cout: c.cout,
        },
        decay: true,
        init: Init::KaimingNormal {
            fan_out: c.kh * c.kw * c.cout,
        },
    })?;
    let b = &u.bn_name;
    let vector = |what: &str, v: f32| ParamSpec {
        name: format!("{b}.{what}"),
        layout: ParamLayout::Vector(c.cout),
        decay: false,
        init: Init::Constant(v),
    };
    let gamma = sink.param(vector("weight", 1.0))?;
    let beta = sink.param(vector("bias", 0.0))?;
    let stat = |what: &str, v: f32| StateSpec {
        name: format!("{b}.{what}"),
        len: c.cout,
        init: v,
    };
    let running_mean = sink.state(stat("running_mean", 0.0))?;
    let running_var = sink.state(stat("running_var", 1.0))?;
    Ok(UnitParams {
        weight,
        gamma,
        beta,
        running_mean,
        running_var,
    })
}

/// Every parameter of `topo` in the order of [`super::Network::params`], and every running
/// statistic in the order of [`super::Network::state`].
pub(crate) fn param_specs(topo: &Topology) -> Result<(Vec<ParamSpec>, Vec<StateSpec>)> {
    #[derive(Default)]
    struct List(Vec<ParamSpec>, Vec<StateSpec>);
    impl ParamSink for List {
        fn param(&mut self, spec: ParamSpec) -> Result<ParamId> {
            self.0.push(spec);
            Ok(ParamId(self.0.len() - 1))
        }
        fn state(&mut self, spec: StateSpec) -> Result<StateId> {
            self.1.push(spec);
            Ok(StateId(self.1.len() - 1))
        }
    }
    let mut list = List::default();
    declare(topo, &mut list)?;
    Ok((list.0, list.1))
}

/// The table on the GPU: takes each declared tensor (with its gradient and momentum in a
/// training network, its f16 copy in mixed precision) from the memory plan's allocation and
/// uploads its initial values, drawn from the seeded RNG.
pub(super) struct ParamTable<'a> {
    gpu: &'a Gpu,
    bufs: &'a mut Allocation,
    mode: NetMode,
    precision: Precision,
    pub params: Vec<Param>,
    pub state: Vec<StateTensor>,
    rng: rand::rngs::StdRng,
}

impl<'a> ParamTable<'a> {
    pub fn new(
        gpu: &'a Gpu,
        bufs: &'a mut Allocation,
        (mode, precision): (NetMode, Precision),
        seed: u64,
    ) -> Self {
        ParamTable {
            gpu,
            bufs,
            mode,
            precision,
            params: Vec::new(),
            state: Vec::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_1417),
        }
    }

    fn values(&mut self, n: usize, init: Init) -> Vec<f32> {
        match init {
            Init::KaimingNormal { fan_out } => {
                let std = (2.0 / fan_out as f64).sqrt();
                (0..n)
                    .map(|_| {
                        // Box-Muller
                        let u1: f64 = self.rng.random::<f64>().max(1e-12);
                        let u2: f64 = self.rng.random();
                        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std)
                            as f32
                    })
                    .collect()
            }
            Init::Uniform { bound } => (0..n)
                .map(|_| self.rng.random_range(-bound..bound))
                .collect(),
            Init::Constant(v) => vec![v; n],
        }
    }
}

impl ParamSink for ParamTable<'_> {
    fn param(&mut self, spec: ParamSpec) -> Result<ParamId> {
        let init = self.values(spec.layout.numel(), spec.init);
        let value = self.bufs.take(&spec.name)?;
        self.gpu.upload(&value, &init)?;
        let (grad, velocity) = match self.mode {
            NetMode::Train => (
                self.bufs.take(&grad_label(&spec.name))?,
                self.bufs.take(&momentum_label(&spec.name))?,
            ),
            NetMode::Inference => (value.clone(), value.clone()),
        };
        let half = match (self.precision, spec.layout.has_half()) {
            (Precision::Mixed, true) => Some(self.bufs.take(&half_label(&spec.name))?),
            _ => None,
        };
        self.params.push(Param {
            name: spec.name,
            layout: spec.layout,
            value,
            grad,
            velocity,
            decay: spec.decay,
            half,
        });
        Ok(ParamId(self.params.len() - 1))
    }

    fn state(&mut self, spec: StateSpec) -> Result<StateId> {
        let value = self.bufs.take(&spec.name)?;
        self.gpu.upload(&value, &vec![spec.init; spec.len])?;
        self.state.push(StateTensor {
            name: spec.name,
            value,
        });
        Ok(StateId(self.state.len() - 1))
    }
}

/// Label of a parameter's gradient buffer.
pub(crate) fn grad_label(name: &str) -> String {
    format!("{name}.grad")
}

/// Label of a parameter's f16 copy (mixed precision).
pub(crate) fn half_label(name: &str) -> String {
    format!("{name}.f16")
}

/// Label of a parameter's SGD momentum buffer.
pub(crate) fn momentum_label(name: &str) -> String {
    format!("{name}.momentum")
}
