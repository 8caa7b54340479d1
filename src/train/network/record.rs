//! The dispatch lists: one training iteration (forward, head, diversification block, loss,
//! backward in reverse, optimizer) and one evaluation batch, built once from the network's
//! tensors and recorded every step.
//!
//! Which buffers each step overwrites and which it accumulates into: every activation,
//! activation gradient and parameter gradient is overwritten, except a block input's
//! gradient, which the main branch overwrites and the shortcut then accumulates into (the
//! block input feeds both), and, in the accumulating lists (the second and later
//! micro-batches of an optimizer step), the parameter gradients and the loss statistics,
//! which they add into. Running statistics, parameters and momentum are updated in
//! place.

use super::layers::{ConvBn, Layers};
use super::{MethodConfig, Network, Precision, LOSS_SCALE_INTERVAL};
use crate::error::Result;
use crate::gpu::AdapterClass;
use crate::gpu::{Dispatch, Gpu, Tensor};
use crate::kernels::amp::{amp_check_all, amp_scale, amp_update};
use crate::kernels::batchnorm::{
    batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train, batchnorm_normalize,
    BatchNormBackward, BatchNormEval, BatchNormNormalize, BatchNormTrain,
};
use crate::kernels::cast::cast_values;
use crate::kernels::conv2d::coop::CoopTile;
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, Conv2dBackwardData,
    Conv2dBackwardWeight, Conv2dForward, Conv2dOptions,
};
use crate::kernels::elementwise::{add_inplace, add_relu_inplace, relu_backward_inplace};
use crate::kernels::pool::{maxpool_backward, maxpool_forward, MaxPoolBackward, MaxPoolForward};
use crate::kernels::sgd::{sgd_step, SgdOptions, SgdStep};
use crate::method::diversify::{
    average_scores, average_scores_backward, diversify_backward, diversify_forward,
    DiversifyBackward, DiversifyConfig, DiversifyForward,
};
use crate::method::head::{head_backward, head_forward, HeadBackward, HeadForward, HeadHalf};
use crate::method::loss::{loss_forward_backward, LossForwardBackward, LossKind, LossOptions};
use crate::train::params::{Param, ParamId, StateId};

/// Records the dispatch lists of a network, binding its tensors (the lists are stored in
/// the network after).
pub(super) struct Recorder<'a> {
    pub gpu: &'a Gpu,
    pub class: AdapterClass,
    pub net: &'a Network,
}

impl Recorder<'_> {
    fn param(&self, id: ParamId) -> &Param {
        &self.net.params[id.index()]
    }

    fn state(&self, id: StateId) -> &Tensor {
        &self.net.state[id.index()].value
    }

    fn layers(&self) -> &Layers {
        &self.net.layers
    }

    /// Split-K partials of the weight gradients, shared by every layer and list.
    fn scratch(&self) -> Option<&Tensor> {
        self.net.scratch.as_ref()
    }

    /// Batch-norm reduction partials, shared by every launch and list (training).
    fn bn_partials(&self) -> Option<&Tensor> {
        self.net.bn_partials.as_ref()
    }

    /// The weight the convolutions and the head multiply by: the f16 copy in mixed
    /// precision, else the parameter itself.
    fn weight(&self, id: ParamId) -> &Tensor {
        let p = self.param(id);
        p.half.as_ref().unwrap_or(&p.value)
    }

    /// The batch the stem reads: the f16 copy in mixed precision.
    fn input(&self) -> &Tensor {
        match &self.net.mixed {
            Some(m) => &m.images,
            None => &self.net.images,
        }
    }

    /// Mixed precision: the cooperative-matrix tile the convolutions run on, where the
    /// adapter has one (else the f16-storage form of the adapter's kernel family).
    fn coop(&self) -> Option<CoopTile> {
        match self.net.precision {
            Precision::Mixed => CoopTile::best(self.gpu),
            Precision::F32 => None,
        }
    }

    /// Mixed precision, at the start of each list: the f16 copies of the weights (from the
    /// f32 masters the previous step updated) and of the input batch.
    fn prologue(&self, out: &mut Vec<Dispatch>) -> Result<()> {
        let Some(m) = &self.net.mixed else {
            return Ok(());
        };
        for p in &self.net.params {
            if let Some(h) = &p.half {
                out.push(cast_values(self.gpu, &p.value, h, 1.0)?);
            }
        }
        out.push(cast_values(self.gpu, &self.net.images, &m.images, 1.0)?);
        Ok(())
    }

    /// One micro-batch of a training iteration with `loss` as the loss and `method`'s
    /// diversification block: forward, loss, backward. The parameter gradients and the
    /// loss statistics are overwritten, or with `accumulate` added into (the later
    /// micro-batches of an optimizer step). The optimizer is [`Recorder::optimizer`].
    /// `per_image`: the loss's scratch for this list.
    pub fn training_iteration(
        &self,
        method: &MethodConfig,
        loss: LossKind,
        accumulate: bool,
        per_image: &Tensor,
    ) -> Result<Vec<Dispatch>> {
        let db = method.diversify.as_ref();
        let mut d = Vec::new();
        self.prologue(&mut d)?;
        self.backbone_forward(true, &mut d)?;
        self.head_forward(&mut d)?;
        self.scores_forward(db, &mut d)?;
        self.loss(loss, (accumulate, per_image), &mut d)?;
        if let Some(amp) = &self.net.amp {
            d.push(amp_scale(self.gpu, &self.net.dscores, amp)?);
        }
        self.scores_backward(db, &mut d)?;
        self.head_backward(accumulate, &mut d)?;
        self.backbone_backward(accumulate, &mut d)?;
        Ok(d)
    }

    /// The evaluation forward: running BN statistics, no masks, plain average of the class
    /// maps into `scores`.
    pub fn evaluation(&self) -> Result<Vec<Dispatch>> {
        let mut d = Vec::new();
        self.prologue(&mut d)?;
        self.backbone_forward(false, &mut d)?;
        self.head_forward(&mut d)?;
        self.scores_forward(None, &mut d)?;
        Ok(d)
    }

    /// Image scores from the class maps: the diversification block (suppression mask of
    /// this step, then the average) when given, else the plain average.
    fn scores_forward(&self, db: Option<&DiversifyConfig>, out: &mut Vec<Dispatch>) -> Result<()> {
        let (g, net) = (self.gpu, self.net);
        match db {
            Some(cfg) => {
                let t = DiversifyForward {
                    maps: &net.maps,
                    step: &net.mask_seed,
                    mask: &net.mask,
                    scores: &net.scores,
                };
                out.extend(diversify_forward(g, cfg, &t)?)
            }
            None => out.push(average_scores(g, &net.maps, &net.scores)?),
        }
        Ok(())
    }

    /// Loss statistics of the batch (added into the step's with `accumulate`) and the
    /// scores' gradient.
    fn loss(
        &self,
        loss: LossKind,
        (accumulate, per_image): (bool, &Tensor),
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        let net = self.net;
        let t = LossForwardBackward {
            scores: &net.scores,
            labels: &net.labels,
            dscores: &net.dscores,
            stats: &net.stats,
            per_image: Some(per_image),
        };
        let o = LossOptions {
            accumulate,
            ..LossOptions::new(loss)
        };
        out.extend(loss_forward_backward(self.gpu, &o, &t)?);
        Ok(())
    }

    /// The class maps' gradient from the scores' (through the same mask).
    fn scores_backward(&self, db: Option<&DiversifyConfig>, out: &mut Vec<Dispatch>) -> Result<()> {
        let (g, net) = (self.gpu, self.net);
        out.push(match db {
            Some(cfg) => {
                let t = DiversifyBackward {
                    dscores: &net.dscores,
                    mask: &net.mask,
                    dmaps: &net.dmaps,
                };
                diversify_backward(g, cfg, &t)?
            }
            None => average_scores_backward(g, &net.dscores, &net.dmaps)?,
        });
        Ok(())
    }

    /// Stem, max pool, then each block: its units, its shortcut, the residual join.
    fn backbone_forward(&self, train: bool, out: &mut Vec<Dispatch>) -> Result<()> {
        let l = self.layers();
        self.unit_forward(&l.stem, self.input(), train, out)?;
        if let Some(p) = &l.pool {
            let t = MaxPoolForward {
                x: &l.stem.y,
                y: &p.y,
                idx: &p.index,
            };
            out.push(maxpool_forward(self.gpu, &t, p.shape.window())?);
        }
        for (b, block) in l.blocks.iter().enumerate() {
            let (x, _) = l.block_input(b);
            let mut inp = x;
            for u in &block.units {
                self.unit_forward(u, inp, train, out)?;
                inp = &u.y;
            }
            let last = block.last();
            match &block.downsample {
                Some(ds) => {
                    self.unit_forward(ds, x, train, out)?;
                    out.push(add_relu_inplace(self.gpu, &last.y, &ds.y)?);
                }
                None => out.push(add_relu_inplace(self.gpu, &last.y, x)?),
            }
        }
        Ok(())
    }

    /// Class maps from the backbone features: 1x1 convolution with bias.
    fn head_forward(&self, out: &mut Vec<Dispatch>) -> Result<()> {
        let (feat, _) = self.layers().features();
        let h = self.layers().head;
        let t = HeadForward {
            feat,
            weight: self.weight(h.weight),
            bias: &self.param(h.bias).value,
            maps: &self.net.maps,
        };
        out.extend(head_forward(self.gpu, &t)?);
        Ok(())
    }

    /// Head gradients (added into with `accumulate`) and the gradient of the backbone
    /// features.
    fn head_backward(&self, accumulate: bool, out: &mut Vec<Dispatch>) -> Result<()> {
        let (feat, dfeat) = self.layers().features();
        let (w, b) = (
            self.param(self.layers().head.weight),
            self.param(self.layers().head.bias),
        );
        let t = HeadBackward {
            feat,
            weight: self.weight(self.layers().head.weight),
            dmaps: &self.net.dmaps,
            dfeat,
            dweight: &w.grad,
            dbias: &b.grad,
            half: self
                .net
                .mixed
                .as_ref()
                .and_then(|m| m.head.as_ref())
                .map(|(dmaps, dfeat)| HeadHalf { dmaps, dfeat }),
            accumulate,
        };
        out.extend(head_backward(self.gpu, &t)?);
        Ok(())
    }

    /// The blocks in reverse, the max pool, the stem (no data gradient for the images).
    /// The parameter gradients are added into with `accumulate`.
    fn backbone_backward(&self, accumulate: bool, out: &mut Vec<Dispatch>) -> Result<()> {
        let l = self.layers();
        for (b, block) in l.blocks.iter().enumerate().rev() {
            let (x, dx) = l.block_input(b);
            let last = block.last();
            // d(out) -> d(sum) in place: out = relu(main + shortcut).
            out.push(relu_backward_inplace(self.gpu, &last.y, &last.dy)?);
            for i in (0..block.units.len()).rev() {
                let u = &block.units[i];
                let (ux, udx, rebuild) = match i.checked_sub(1) {
                    None => (x, dx, None),
                    Some(prev) => {
                        let p = &block.units[prev];
                        (&p.y, &p.dy, Some(p).filter(|p| p.recomputed))
                    }
                };
                let data = Some((udx, false));
                self.unit_backward(u, (ux, &u.dy, data), rebuild, accumulate, out)?;
            }
            match &block.downsample {
                Some(ds) => {
                    let data = Some((dx, true));
                    self.unit_backward(ds, (x, &last.dy, data), None, accumulate, out)?
                }
                None => out.push(add_inplace(self.gpu, dx, &last.dy)?),
            }
        }
        if let Some(p) = &l.pool {
            let t = MaxPoolBackward {
                dy: &p.dy,
                idx: &p.index,
                dx: &l.stem.dy,
            };
            out.push(maxpool_backward(self.gpu, &t, p.shape.window())?);
        }
        let stem = (self.input(), &l.stem.dy, None);
        self.unit_backward(&l.stem, stem, None, accumulate, out)
    }

    /// `u.y` from its `z` and the saved batch statistics: forward's own normalize pass
    /// (same pipeline, parameters and inputs), so the same bits.
    fn recompute_y(&self, u: &ConvBn) -> Result<Dispatch> {
        let p = &u.params;
        let t = BatchNormNormalize {
            x: &u.z,
            gamma: &self.param(p.gamma).value,
            beta: &self.param(p.beta).value,
            save_mean: &u.save_mean,
            save_invstd: &u.save_invstd,
            y: &u.y,
        };
        batchnorm_normalize(self.gpu, &t, &u.bn)
    }

    /// SGD with momentum and weight decay on every parameter, in table order. Mixed
    /// precision: every gradient is checked for overflow first, the steps divide by the
    /// loss scale (and are skipped after an overflow), then the scale is updated.
    pub fn optimizer(&self) -> Result<Vec<Dispatch>> {
        let mut out = Vec::new();
        let amp = self.net.amp.as_ref();
        if let Some(amp) = amp {
            let grads: Vec<&Tensor> = self.net.params.iter().map(|p| &p.grad).collect();
            out.extend(amp_check_all(self.gpu, &grads, amp)?);
        }
        for p in &self.net.params {
            let t = SgdStep {
                param: &p.value,
                grad: &p.grad,
                velocity: &p.velocity,
                hyper: &self.net.hyper,
                amp,
            };
            let o = SgdOptions {
                apply_decay: p.decay,
            };
            out.push(sgd_step(self.gpu, &t, &o)?);
        }
        if let Some(amp) = amp {
            out.push(amp_update(self.gpu, amp, LOSS_SCALE_INTERVAL)?);
        }
        Ok(out)
    }

    /// Convolution of `x`, then batch norm (batch statistics when `train`, updating the
    /// running ones; else the running ones), with the unit's ReLU fused into its last pass.
    fn unit_forward(
        &self,
        u: &ConvBn,
        x: &Tensor,
        train: bool,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        let g = self.gpu;
        let p = &u.params;
        let t = Conv2dForward {
            x,
            w: self.weight(p.weight),
            y: &u.z,
        };
        let o = Conv2dOptions {
            kernel: Some(self.class.kernels),
            coop: self.coop(),
            ..Default::default()
        };
        out.push(conv2d_forward(g, &t, u.conv.geometry(), &o)?);
        let (gamma, beta) = (&self.param(p.gamma).value, &self.param(p.beta).value);
        let (rm, rv) = (self.state(p.running_mean), self.state(p.running_var));
        if train {
            let t = BatchNormTrain {
                x: &u.z,
                gamma,
                beta,
                running_mean: rm,
                running_var: rv,
                save_mean: &u.save_mean,
                save_invstd: &u.save_invstd,
                y: &u.y,
                partials: self.bn_partials(),
            };
            out.extend(batchnorm_forward_train(g, &t, &u.bn)?);
        } else {
            let t = BatchNormEval {
                x: &u.z,
                gamma,
                beta,
                running_mean: rm,
                running_var: rv,
                y: &u.y,
            };
            out.push(batchnorm_forward_eval(g, &t, &u.bn)?);
        }
        Ok(())
    }

    /// Backward from `dy` (gradient of the unit's output, ReLU not yet applied when
    /// `u.relu`) given the unit's input `x`: overwrites `dz` and the parameter gradients
    /// (adds into them with `accumulate`); writes (or adds into, when its flag is set)
    /// `dx` if given.
    /// `recompute_x`: the unit whose output `x` is, when that output is recomputed
    /// ([`ConvBn::recomputed`]).
    fn unit_backward(
        &self,
        u: &ConvBn,
        (x, dy, dx): (&Tensor, &Tensor, Option<(&Tensor, bool)>),
        recompute_x: Option<&ConvBn>,
        accumulate: bool,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        let g = self.gpu;
        if u.bn.relu {
            out.push(relu_backward_inplace(g, &u.y, dy)?);
        }
        let (w, gamma, beta) = (
            self.param(u.params.weight),
            self.param(u.params.gamma),
            self.param(u.params.beta),
        );
        let t = BatchNormBackward {
            x: &u.z,
            dy,
            gamma: &gamma.value,
            save_mean: &u.save_mean,
            save_invstd: &u.save_invstd,
            dx: &u.dz,
            dgamma: &gamma.grad,
            dbeta: &beta.grad,
            partials: self.bn_partials(),
            accumulate,
        };
        out.extend(batchnorm_backward(g, &t, &u.bn)?);
        // The input, where forward's copy was not kept: rebuilt now (its reader, the
        // weight gradient, comes next; `u`'s own y, in the same buffer, was last read by
        // the ReLU backward above).
        if let Some(prev) = recompute_x {
            out.push(self.recompute_y(prev)?);
        }
        let t = Conv2dBackwardWeight {
            x,
            dy: &u.dz,
            dw: &w.grad,
        };
        let o = Conv2dOptions {
            kernel: Some(self.class.kernels),
            scratch: self.scratch(),
            coop: self.coop(),
            accumulate,
            ..Default::default()
        };
        out.extend(conv2d_backward_weight(g, &t, u.conv.geometry(), &o)?);
        if let Some((dx, accumulate)) = dx {
            let t = Conv2dBackwardData {
                dy: &u.dz,
                w: self.weight(u.params.weight),
                dx,
            };
            let o = Conv2dOptions {
                kernel: Some(self.class.kernels),
                accumulate,
                coop: self.coop(),
                ..Default::default()
            };
            out.push(conv2d_backward_data(g, &t, u.conv.geometry(), &o)?);
        }
        Ok(())
    }
}
