//! The GPU side of the topology: each unit's shapes, parameter ids, saved batch statistics
//! and activation tensors, the activations given storage by the memory plan's
//! `ActivationLayout`.
//!
//! Per unit: the convolution output `z` and the BN output `y` (the unit's ReLU, when it has
//! one, fused into batch norm's last pass; for the last unit of a residual block `y` becomes
//! the block output `relu(y + shortcut)`), and their gradients `dz`, `dy`, all
//! (N, OH, OW, Cout), stored f32, or f16 in a mixed-precision network (the batch
//! statistics stay f32).

use crate::error::Result;
use crate::gpu::BnSizing;
use crate::gpu::Tensor;
use crate::kernels::batchnorm::BatchNormOptions;
use crate::kernels::conv2d::Conv2dShape;
use crate::kernels::pool::MaxPoolShape;
use crate::train::allocation::Allocation;
use crate::train::memory::{ActivationLayout, Placement, SharedBuffer, UnitPlacement};
use crate::train::params::{grad_label, HeadParams, UnitParams};
use crate::train::topology::{Topology, Unit};
use crate::train::NetMode;

/// One convolution followed by batch norm (and optionally ReLU).
pub(super) struct ConvBn {
    pub conv: Conv2dShape,
    /// eps, momentum, the fused ReLU (`bn.relu`) and the adapter's sizing.
    pub bn: BatchNormOptions,
    pub params: UnitParams,
    pub save_mean: Tensor,   // (Cout)
    pub save_invstd: Tensor, // (Cout)
    pub z: Tensor,           // (N, OH, OW, Cout) convolution output
    pub dz: Tensor,          // (N, OH, OW, Cout)
    pub y: Tensor,           // (N, OH, OW, Cout) BN output (ReLU / residual join in place)
    pub dy: Tensor,          // (N, OH, OW, Cout) gradient of y
    /// Training: `y` is rebuilt in backward from `z` and the saved statistics before it
    /// is read ([`Placement::Recomputed`]).
    pub recomputed: bool,
}

pub(super) struct Block {
    pub units: Vec<ConvBn>,
    pub downsample: Option<ConvBn>,
}

impl Block {
    /// The unit whose `y` is the block output.
    pub fn last(&self) -> &ConvBn {
        &self.units[self.units.len() - 1]
    }
}

/// The stem's max pool: its output, the output's gradient and the argmax indices, all
/// (N, OH, OW, C).
pub(super) struct MaxPool {
    pub shape: MaxPoolShape,
    pub y: Tensor,
    pub dy: Tensor,
    pub index: Tensor,
}

pub(super) struct Layers {
    pub stem: ConvBn,
    pub pool: Option<MaxPool>,
    pub blocks: Vec<Block>,
    pub head: HeadParams,
    /// The shared buffers, in [`SharedBuffer::ALL`] order.
    pub shared: Vec<Tensor>,
}

/// Places the activations by an `ActivationLayout`, in buffers taken from the memory plan's
/// allocation.
struct Alloc<'a> {
    bufs: &'a mut Allocation,
    sizing: BnSizing,
    shared: Vec<Tensor>,
}

impl Alloc<'_> {
    /// (value, gradient) of an activation of `shape` labelled `label`, at `at`.
    fn pair(&mut self, label: String, shape: &[usize], at: Placement) -> Result<(Tensor, Tensor)> {
        match at {
            Placement::OwnValue { grad } => {
                let v = self.bufs.take(&label)?;
                let d = self.shared[grad.index()].view(&grad_label(&label), shape)?;
                Ok((v, d))
            }
            Placement::SharedValue(b) => {
                let v = self.shared[b.index()].view(&label, shape)?;
                Ok((v.clone(), v))
            }
            Placement::InPlace => {
                let v = self.bufs.take(&label)?;
                let d = v.view(&grad_label(&label), shape)?;
                Ok((v, d))
            }
            Placement::Recomputed { value, grad } => {
                let v = self.shared[value.index()].view(&label, shape)?;
                let d = self.shared[grad.index()].view(&grad_label(&label), shape)?;
                Ok((v, d))
            }
        }
    }

    fn unit(&mut self, u: &Unit, params: UnitParams, at: &UnitPlacement) -> Result<ConvBn> {
        let shape = u.out_shape();
        let (z, dz) = self.pair(u.z_label(), &shape, at.z)?;
        let (y, dy) = self.pair(u.y_label(), &shape, at.y)?;
        let recomputed = matches!(at.y, Placement::Recomputed { .. });
        Ok(ConvBn {
            conv: u.conv,
            bn: u.bn_options(self.sizing),
            params,
            save_mean: self.bufs.take(&format!("{}.save_mean", u.bn_name))?,
            save_invstd: self.bufs.take(&format!("{}.save_invstd", u.bn_name))?,
            z,
            dz,
            y,
            dy,
            recomputed,
        })
    }
}

impl Layers {
    /// Every unit's tensors, taken from `bufs`; `units` are the units' parameters in
    /// [`Topology::units`] order; `sizing` is the batch-norm sizing the dispatches will use.
    pub fn allocate(
        (bufs, sizing): (&mut Allocation, BnSizing),
        topo: &Topology,
        layout: &ActivationLayout,
        units: &[UnitParams],
        head: HeadParams,
    ) -> Result<Layers> {
        let mode: NetMode = layout.mode;
        let shared = SharedBuffer::ALL
            .iter()
            .map(|b| bufs.take(&b.label(mode)))
            .collect::<Result<Vec<_>>>()?;
        let mut a = Alloc {
            bufs,
            sizing,
            shared,
        };
        let mut ids = units.iter().copied();
        let mut next = || {
            ids.next().ok_or_else(|| {
                crate::Error::invalid("network parameters", "fewer than units (internal error)")
            })
        };
        let stem = a.unit(&topo.stem, next()?, &layout.stem)?;
        let pool = match (&topo.pool, layout.pool) {
            (Some(shape), Some(at)) => {
                let out = shape.output_shape();
                let (y, dy) = a.pair("maxpool.out".into(), &out, at)?;
                let index = a.bufs.take("maxpool.index")?;
                Some(MaxPool {
                    shape: *shape,
                    y,
                    dy,
                    index,
                })
            }
            _ => None,
        };
        let mut blocks = Vec::new();
        for (b, at) in topo.blocks.iter().zip(&layout.blocks) {
            let mut units = Vec::new();
            for (u, ua) in b.units.iter().zip(&at.units) {
                units.push(a.unit(u, next()?, ua)?);
            }
            let downsample = match (&b.downsample, &at.downsample) {
                (Some(ds), Some(da)) => Some(a.unit(ds, next()?, da)?),
                _ => None,
            };
            blocks.push(Block { units, downsample });
        }
        Ok(Layers {
            stem,
            pool,
            blocks,
            head,
            shared: a.shared,
        })
    }

    /// Output of the stem (after the optional max pool) and its gradient.
    pub fn stem_out(&self) -> (&Tensor, &Tensor) {
        match &self.pool {
            Some(p) => (&p.y, &p.dy),
            None => (&self.stem.y, &self.stem.dy),
        }
    }

    /// Input of block `b` (the stem output or block `b - 1`'s) and its gradient.
    pub fn block_input(&self, b: usize) -> (&Tensor, &Tensor) {
        match b.checked_sub(1) {
            None => self.stem_out(),
            Some(prev) => {
                let u = self.blocks[prev].last();
                (&u.y, &u.dy)
            }
        }
    }

    /// The backbone's output features (N, h, w, D) and their gradient.
    pub fn features(&self) -> (&Tensor, &Tensor) {
        self.block_input(self.blocks.len())
    }

    /// Every unit, stem first.
    pub fn units(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.stem).chain(
            self.blocks
                .iter()
                .flat_map(|b| b.units.iter().chain(&b.downsample)),
        )
    }

    /// Every tensor the layers hold (views of shared buffers included).
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut v: Vec<&Tensor> = self.shared.iter().collect();
        for u in self.units() {
            v.extend([&u.save_mean, &u.save_invstd, &u.z, &u.dz, &u.y, &u.dy]);
        }
        if let Some(p) = &self.pool {
            v.extend([&p.y, &p.dy, &p.index]);
        }
        v
    }
}
