//! The network on the GPU: every parameter, gradient, optimizer state and activation
//! allocated once from a [`ModelConfig`], and the dispatch lists of one training iteration
//! (forward, diversification block, loss, backward in reverse, optimizer) and of one
//! evaluation batch, built once and recorded every step.
//!
//! Buffer conventions: activations are NHWC. Each conv+BN unit has its convolution output
//! `z` and its BN output `y` (the unit's ReLU, when it has one, fused into batch norm's last
//! pass; for the last unit of a residual block `y` becomes the block output
//! `relu(y + shortcut)`), and the gradients `dz`, `dy`.
//! In a training network every `z` and `y` has a buffer of its own and the gradients are
//! views of a few buffers shared by liveness; in an inference network the activations
//! themselves share buffers (see `Layers::place_activations`). A tensor consumed twice (a
//! block input feeds the main branch and the shortcut) gets its gradient overwritten by the
//! main branch and accumulated by the shortcut.

use crate::error::{Error, Result};
use crate::gpu::{DType, Dispatch, Gpu, Tensor};
use crate::kernels::batchnorm::{
    batchnorm_backward, batchnorm_forward_eval_sized, batchnorm_forward_train_sized,
    BatchNormShape, BnSizing,
};
use crate::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, weight_grad_scratch_len,
    Conv2dShape,
};
use crate::kernels::elementwise::{add_inplace, add_relu_inplace, relu_backward_inplace};
use crate::kernels::pool::{maxpool_backward, maxpool_forward, MaxPoolShape};
use crate::kernels::sgd::sgd_step;
use crate::method::diversify::{
    average_scores, average_scores_backward, diversify_backward, diversify_forward, DiversifyConfig,
};
use crate::method::head::{head_backward, head_forward};
use crate::method::loss::{loss_forward_backward, LossKind};
use crate::model::{BlockKind, ModelConfig};
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
}

/// A non-trainable state tensor (BN running statistics).
pub struct StateTensor {
    pub name: String,
    pub value: Tensor,
}

/// One convolution followed by batch norm (and optionally ReLU).
struct ConvBn {
    conv: Conv2dShape,
    bn: BatchNormShape,
    weight: usize,
    gamma: usize,
    beta: usize,
    running_mean: usize,
    running_var: usize,
    save_mean: Tensor,   // (Cout)
    save_invstd: Tensor, // (Cout)
    z: Tensor,           // (N, OH, OW, Cout) convolution output
    dz: Tensor,          // (N, OH, OW, Cout)
    y: Tensor,           // (N, OH, OW, Cout) BN output (ReLU / residual join in place)
    dy: Tensor,          // (N, OH, OW, Cout) gradient of y
    relu: bool,
}

struct Block {
    units: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

/// Method settings the iteration is built with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodConfig {
    /// `None`: plain global average pooling (baseline).
    pub diversify: Option<DiversifyConfig>,
    /// The loss of the main phase.
    pub loss: LossKind,
}

/// What a [`Network`] is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetMode {
    /// Everything training needs: gradients, SGD momentum, activation gradients, the
    /// training dispatch lists and the evaluation list.
    Train,
    /// Parameters, batch-norm statistics and four activation buffers shared by liveness,
    /// and only the evaluation list (ResNet-50 at 448 px, batch 2: 201 MiB against the
    /// training network's 1126 MiB). The gradient fields (`Param::grad`,
    /// `Param::velocity`, `dmaps`, `dscores`, activation gradients) alias the values they
    /// would be the gradients of; nothing writes them.
    Inference,
}

/// The whole network, its buffers and its recorded dispatch lists.
pub struct Network {
    pub config: ModelConfig,
    pub mode: NetMode,
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
    pub map_size: (usize, usize),
    /// Forward + DB + loss (main-phase loss) + backward + optimizer.
    pub train_main: Vec<Dispatch>,
    /// The same with plain cross-entropy (warm-up phase).
    pub train_ce: Vec<Dispatch>,
    /// Evaluation forward (running BN statistics, no masks) to `scores`.
    pub eval: Vec<Dispatch>,
}

struct Alloc<'a> {
    gpu: &'a Gpu,
    mode: NetMode,
    params: Vec<Param>,
    state: Vec<StateTensor>,
    rng: rand::rngs::StdRng,
    /// A 4-byte buffer behind every activation placeholder until the whole network's
    /// shapes are known (see [`Layers::place_activations`]).
    dummy: wgpu::Buffer,
}

/// A tensor of `shape` with no storage of its own yet (see `Alloc::dummy`).
fn placeholder(dummy: &wgpu::Buffer, label: String, shape: &[usize]) -> Tensor {
    Tensor {
        buffer: dummy.clone(),
        shape: shape.to_vec(),
        dtype: DType::F32,
        label,
    }
}

impl Alloc<'_> {
    fn param(
        &mut self,
        name: &str,
        layout: ParamLayout,
        init: Vec<f32>,
        decay: bool,
    ) -> Result<usize> {
        let shape = layout.shape();
        let value = self.gpu.tensor(name, &shape, &init)?;
        let (grad, velocity) = match self.mode {
            NetMode::Train => (
                self.gpu.zeros(&format!("{name}.grad"), &shape)?,
                self.gpu.zeros(&format!("{name}.momentum"), &shape)?,
            ),
            NetMode::Inference => (value.clone(), value.clone()),
        };
        self.params.push(Param {
            name: name.to_string(),
            layout,
            value,
            grad,
            velocity,
            decay,
        });
        Ok(self.params.len() - 1)
    }

    fn state(&mut self, name: &str, init: Vec<f32>) -> Result<usize> {
        let value = self.gpu.tensor(name, &[init.len()], &init)?;
        self.state.push(StateTensor {
            name: name.to_string(),
            value,
        });
        Ok(self.state.len() - 1)
    }

    /// Kaiming-normal (fan_out, ReLU gain) like torchvision's ResNet init.
    fn kaiming(&mut self, n: usize, fan_out: usize) -> Vec<f32> {
        let std = (2.0 / fan_out as f64).sqrt();
        (0..n)
            .map(|_| {
                // Box-Muller
                let u1: f64 = self.rng.random::<f64>().max(1e-12);
                let u2: f64 = self.rng.random();
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        prefix: &str,
        conv_name: &str,
        bn_name: &str,
        n: usize,
        hw: (usize, usize),
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        relu: bool,
        cfg: &ModelConfig,
    ) -> Result<ConvBn> {
        let conv = Conv2dShape {
            n,
            h: hw.0,
            w: hw.1,
            cin,
            cout,
            kh: k,
            kw: k,
            stride,
            pad,
        };
        conv.validate()?;
        let (oh, ow) = (conv.oh(), conv.ow());
        let rows = n * oh * ow;
        let bn = BatchNormShape {
            rows,
            channels: cout,
            eps: cfg.bn_eps,
            momentum: cfg.bn_momentum,
        };
        let wname = format!("{prefix}{conv_name}.weight");
        let init = self.kaiming(k * k * cin * cout, k * k * cout);
        let weight = self.param(
            &wname,
            ParamLayout::Conv {
                kh: k,
                kw: k,
                cin,
                cout,
            },
            init,
            true,
        )?;
        let b = format!("{prefix}{bn_name}");
        let gamma = self.param(
            &format!("{b}.weight"),
            ParamLayout::Vector(cout),
            vec![1.0; cout],
            false,
        )?;
        let beta = self.param(
            &format!("{b}.bias"),
            ParamLayout::Vector(cout),
            vec![0.0; cout],
            false,
        )?;
        let running_mean = self.state(&format!("{b}.running_mean"), vec![0.0; cout])?;
        let running_var = self.state(&format!("{b}.running_var"), vec![1.0; cout])?;
        let g = self.gpu;
        let act = [n, oh, ow, cout];
        let ph = |label: String| placeholder(&self.dummy, label, &act);
        let z = ph(format!("{prefix}{conv_name}.out"));
        let y = ph(format!("{b}.out"));
        let dz = ph(format!("{prefix}{conv_name}.out.grad"));
        let dy = ph(format!("{b}.out.grad"));
        Ok(ConvBn {
            conv,
            bn,
            weight,
            gamma,
            beta,
            running_mean,
            running_var,
            save_mean: g.zeros(&format!("{b}.save_mean"), &[cout])?,
            save_invstd: g.zeros(&format!("{b}.save_invstd"), &[cout])?,
            z,
            dz,
            y,
            dy,
            relu,
        })
    }
}

impl ConvBn {
    fn out_hw(&self) -> (usize, usize) {
        (self.conv.oh(), self.conv.ow())
    }

    fn forward(
        &self,
        gpu: &Gpu,
        net: &NetRefs,
        x: &Tensor,
        train: bool,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        out.push(conv2d_forward(
            gpu,
            &self.conv,
            x,
            &net.params[self.weight].value,
            &self.z,
        )?);
        let (gamma, beta) = (&net.params[self.gamma].value, &net.params[self.beta].value);
        let (rm, rv) = (
            &net.state[self.running_mean].value,
            &net.state[self.running_var].value,
        );
        // The ReLU, when this unit has one, is fused into batch norm's last pass.
        let sizing = BnSizing::for_gpu(gpu);
        if train {
            out.extend(batchnorm_forward_train_sized(
                gpu,
                &self.bn,
                sizing,
                self.relu,
                [
                    &self.z,
                    gamma,
                    beta,
                    rm,
                    rv,
                    &self.save_mean,
                    &self.save_invstd,
                    &self.y,
                ],
            )?);
        } else {
            out.push(batchnorm_forward_eval_sized(
                gpu,
                &self.bn,
                sizing,
                self.relu,
                [&self.z, gamma, beta, rm, rv, &self.y],
            )?);
        }
        Ok(())
    }

    /// Backward from `dy` (gradient of this unit's output, ReLU not yet applied when
    /// `self.relu`). Writes parameter gradients; writes (or accumulates into) `dx` if given.
    fn backward(
        &self,
        gpu: &Gpu,
        net: &NetRefs,
        x: &Tensor,
        dy: &Tensor,
        dx: Option<(&Tensor, bool)>,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        if self.relu {
            out.push(relu_backward_inplace(gpu, &self.y, dy)?);
        }
        let p = net.params;
        out.extend(batchnorm_backward(
            gpu,
            &self.bn,
            &self.z,
            dy,
            &p[self.gamma].value,
            &self.save_mean,
            &self.save_invstd,
            &self.dz,
            &p[self.gamma].grad,
            &p[self.beta].grad,
        )?);
        out.extend(conv2d_backward_weight(
            gpu,
            &self.conv,
            x,
            &self.dz,
            &p[self.weight].grad,
            false,
            net.scratch,
        )?);
        if let Some((dx, accumulate)) = dx {
            out.push(conv2d_backward_data(
                gpu,
                &self.conv,
                &self.dz,
                &p[self.weight].value,
                dx,
                accumulate,
            )?);
        }
        Ok(())
    }
}

struct NetRefs<'a> {
    params: &'a [Param],
    state: &'a [StateTensor],
    /// Split-K partials of the weight gradients, shared by every layer and dispatch list.
    scratch: Option<&'a Tensor>,
}

struct Layers {
    stem: ConvBn,
    pool: Option<(MaxPoolShape, Tensor, Tensor, Tensor)>, // shape, y, dy, idx
    blocks: Vec<Block>,
    head_weight: usize,
    head_bias: usize,
}

impl Layers {
    /// Give every activation and activation gradient its storage, by liveness.
    ///
    /// Training ([`NetMode::Train`]): every forward activation gets a buffer of its own
    /// (backward reads them all); the gradients share a few buffers:
    /// - every unit's `dz` (written by its BN backward, read at once by its convolution's
    ///   backward) shares one;
    /// - the gradient of a block boundary (the stem output and each block output) alternates
    ///   between two: block b reads its output's gradient and writes its input's;
    /// - the gradients inside a block (units before the last) and of the stem before the
    ///   max pool share one more: a unit's BN backward has consumed its `dy` before its
    ///   convolution's data gradient writes the previous unit's;
    /// - a downsample's `dy` is never read (its backward takes the block output gradient).
    ///
    /// Inference ([`NetMode::Inference`]): the same sharing applied to the activations
    /// themselves (there is no backward to keep them for): every `z` in one buffer (BN
    /// reads it at once), block boundaries alternating between two (a block reads its input
    /// until its residual join), and the outputs inside a block, the stem's before the max
    /// pool and the downsample's in one more (each is dead before the next is written).
    /// Gradient fields alias the activations; nothing writes them.
    ///
    /// The whole-network gradient test, the PyTorch parity test and the inference-vs-training
    /// test check that nothing live is overwritten.
    fn place_activations(&mut self, gpu: &Gpu, mode: NetMode) -> Result<()> {
        let act = |u: &ConvBn| u.z.numel();
        let mut z_len = act(&self.stem);
        let mut inner_len = if self.pool.is_some() {
            act(&self.stem)
        } else {
            1
        };
        let mut edge_len = self.stem_out().0.numel();
        for b in &self.blocks {
            for (i, u) in b.units.iter().enumerate() {
                z_len = z_len.max(act(u));
                if i + 1 < b.units.len() {
                    inner_len = inner_len.max(act(u));
                }
            }
            if let Some(ds) = &b.downsample {
                z_len = z_len.max(act(ds));
                inner_len = inner_len.max(act(ds));
            }
            edge_len = edge_len.max(act(b.units.last().expect("units")));
        }
        let kind = match mode {
            NetMode::Train => "grad",
            NetMode::Inference => "act",
        };
        let z_buf = gpu.zeros(&format!("{kind}.shared.conv_out"), &[z_len])?;
        let edge = [
            gpu.zeros(&format!("{kind}.shared.boundary0"), &[edge_len])?,
            gpu.zeros(&format!("{kind}.shared.boundary1"), &[edge_len])?,
        ];
        let inner = gpu.zeros(&format!("{kind}.shared.inner"), &[inner_len])?;
        let view = |t: &Tensor, like: &Tensor| t.view(&like.label, &like.shape);
        let own = |like: &Tensor| gpu.zeros(&like.label, &like.shape);
        // (value, gradient) pairs: in training the shared buffers hold the gradient and the
        // value gets its own buffer; in inference the shared buffers hold the value.
        let place = |v: &mut Tensor, d: &mut Tensor, shared: &Tensor| -> Result<()> {
            match mode {
                NetMode::Train => {
                    *d = view(shared, d)?;
                    *v = own(v)?;
                }
                NetMode::Inference => {
                    *v = view(shared, v)?;
                    *d = v.clone();
                }
            }
            Ok(())
        };
        // Stem output (node -1): boundary buffer 0; with a max pool, the stem's own output
        // is an inner buffer.
        match &mut self.pool {
            Some((_, y, dy, _)) => {
                place(y, dy, &edge[0])?;
                place(&mut self.stem.y, &mut self.stem.dy, &inner)?;
            }
            None => place(&mut self.stem.y, &mut self.stem.dy, &edge[0])?,
        }
        place(&mut self.stem.z, &mut self.stem.dz, &z_buf)?;
        for (bi, b) in self.blocks.iter_mut().enumerate() {
            let last = b.units.len() - 1;
            for (i, u) in b.units.iter_mut().enumerate() {
                place(&mut u.z, &mut u.dz, &z_buf)?;
                let shared = if i == last {
                    &edge[(bi + 1) % 2]
                } else {
                    &inner
                };
                place(&mut u.y, &mut u.dy, shared)?;
            }
            if let Some(ds) = &mut b.downsample {
                place(&mut ds.z, &mut ds.dz, &z_buf)?;
                match mode {
                    NetMode::Train => {
                        ds.y = own(&ds.y)?;
                        ds.dy = ds.y.clone(); // never read
                    }
                    NetMode::Inference => {
                        ds.y = view(&inner, &ds.y)?;
                        ds.dy = ds.y.clone();
                    }
                }
            }
        }
        // Every placeholder has been replaced (an internal invariant, cheap to check).
        let mut all: Vec<&Tensor> = Vec::new();
        for u in std::iter::once(&self.stem).chain(
            self.blocks
                .iter()
                .flat_map(|b| b.units.iter().chain(&b.downsample)),
        ) {
            all.extend([&u.z, &u.y, &u.dz, &u.dy]);
        }
        if let Some((_, y, dy, _)) = &self.pool {
            all.extend([y, dy]);
        }
        if let Some(t) = all.iter().find(|t| t.buffer.size() < t.bytes()) {
            return Err(Error::invalid(
                format!("activation `{}`", t.label),
                "was given no storage (internal error)",
            ));
        }
        Ok(())
    }

    /// Output of the stem (after the optional max pool) and its gradient.
    fn stem_out(&self) -> (&Tensor, &Tensor) {
        match &self.pool {
            Some((_, y, dy, _)) => (y, dy),
            None => (&self.stem.y, &self.stem.dy),
        }
    }

    /// Output of block `i` (or the stem when `i` is None) and its gradient.
    fn node(&self, i: Option<usize>) -> (&Tensor, &Tensor) {
        match i {
            None => self.stem_out(),
            Some(b) => {
                let u = self.blocks[b].units.last().expect("blocks have units");
                (&u.y, &u.dy)
            }
        }
    }

    fn forward(
        &self,
        gpu: &Gpu,
        net: &NetRefs,
        images: &Tensor,
        train: bool,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        self.stem.forward(gpu, net, images, train, out)?;
        if let Some((s, y, _, idx)) = &self.pool {
            out.push(maxpool_forward(gpu, s, &self.stem.y, y, idx)?);
        }
        for (b, block) in self.blocks.iter().enumerate() {
            let prev = if b == 0 { None } else { Some(b - 1) };
            let (x, _) = self.node(prev);
            let mut inp = x;
            for u in &block.units {
                u.forward(gpu, net, inp, train, out)?;
                inp = &u.y;
            }
            let last = block.units.last().expect("units");
            match &block.downsample {
                Some(ds) => {
                    ds.forward(gpu, net, x, train, out)?;
                    out.push(add_relu_inplace(gpu, &last.y, &ds.y)?);
                }
                None => out.push(add_relu_inplace(gpu, &last.y, x)?),
            }
        }
        Ok(())
    }

    fn backward(
        &self,
        gpu: &Gpu,
        net: &NetRefs,
        images: &Tensor,
        out: &mut Vec<Dispatch>,
    ) -> Result<()> {
        for b in (0..self.blocks.len()).rev() {
            let block = &self.blocks[b];
            let prev = if b == 0 { None } else { Some(b - 1) };
            let (x, dx) = self.node(prev);
            let last = block.units.last().expect("units");
            // d(out) -> d(sum) in place: out = relu(main + shortcut).
            out.push(relu_backward_inplace(gpu, &last.y, &last.dy)?);
            for i in (0..block.units.len()).rev() {
                let u = &block.units[i];
                let (ux, udx) = if i == 0 {
                    (x, dx)
                } else {
                    (&block.units[i - 1].y, &block.units[i - 1].dy)
                };
                u.backward(gpu, net, ux, &u.dy, Some((udx, false)), out)?;
            }
            match &block.downsample {
                Some(ds) => ds.backward(gpu, net, x, &last.dy, Some((dx, true)), out)?,
                None => out.push(add_inplace(gpu, dx, &last.dy)?),
            }
        }
        if let Some((s, _, dy, idx)) = &self.pool {
            out.push(maxpool_backward(gpu, s, dy, idx, &self.stem.dy)?);
        }
        self.stem
            .backward(gpu, net, images, &self.stem.dy, None, out)
    }
}

impl Network {
    /// Allocate every buffer of `config` for batch size `batch` and build the dispatch lists
    /// (a [`NetMode::Train`] network).
    pub fn new(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
    ) -> Result<Network> {
        Network::build(gpu, config, batch, method, seed, NetMode::Train)
    }

    /// An inference-only network ([`NetMode::Inference`]): weights initialised as by
    /// [`Network::new`] with seed 0 (load a checkpoint into it), only the `eval` list.
    pub fn inference(gpu: &Gpu, config: &ModelConfig, batch: usize) -> Result<Network> {
        let method = MethodConfig {
            diversify: None,
            loss: LossKind::CrossEntropy,
        };
        Network::build(gpu, config, batch, &method, 0, NetMode::Inference)
    }

    fn build(
        gpu: &Gpu,
        config: &ModelConfig,
        batch: usize,
        method: &MethodConfig,
        seed: u64,
        mode: NetMode,
    ) -> Result<Network> {
        config.validate()?;
        if batch == 0 {
            return Err(Error::invalid("--batch", "batch size must be at least 1"));
        }
        let mut a = Alloc {
            gpu,
            mode,
            dummy: gpu.zeros("activation.placeholder", &[1])?.buffer,
            params: Vec::new(),
            state: Vec::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_1417),
        };
        let n = batch;
        let s = config.input_size;
        let stem = a.conv_bn(
            "",
            "conv1",
            "bn1",
            n,
            (s, s),
            config.in_channels,
            config.stem.channels,
            config.stem.kernel,
            config.stem.stride,
            config.stem.pad,
            true,
            config,
        )?;
        let mut hw = stem.out_hw();
        let mut c = config.stem.channels;
        let pool = if config.stem.maxpool {
            let ps = MaxPoolShape {
                n,
                h: hw.0,
                w: hw.1,
                c,
                k: 3,
                stride: 2,
                pad: 1,
            };
            hw = (ps.oh(), ps.ow());
            let shape = [n, hw.0, hw.1, c];
            let y = placeholder(&a.dummy, "maxpool.out".into(), &shape);
            let dy = placeholder(&a.dummy, "maxpool.out.grad".into(), &shape);
            Some((ps, y, dy, gpu.zeros_u32("maxpool.index", &shape)?))
        } else {
            None
        };
        let exp = config.block.expansion();
        let mut blocks = Vec::new();
        for (si, ((&nb, &width), &stride)) in config
            .layers
            .iter()
            .zip(&config.widths)
            .zip(&config.strides)
            .enumerate()
        {
            for bi in 0..nb {
                let st = if bi == 0 { stride } else { 1 };
                let prefix = format!("layer{}.{}.", si + 1, bi);
                let cout = width * exp;
                let mut units = Vec::new();
                match config.block {
                    BlockKind::Basic => {
                        let u1 = a.conv_bn(
                            &prefix, "conv1", "bn1", n, hw, c, width, 3, st, 1, true, config,
                        )?;
                        let h1 = u1.out_hw();
                        units.push(u1);
                        units.push(a.conv_bn(
                            &prefix, "conv2", "bn2", n, h1, width, width, 3, 1, 1, false, config,
                        )?);
                    }
                    BlockKind::Bottleneck => {
                        let u1 = a.conv_bn(
                            &prefix, "conv1", "bn1", n, hw, c, width, 1, 1, 0, true, config,
                        )?;
                        let u2 = a.conv_bn(
                            &prefix, "conv2", "bn2", n, hw, width, width, 3, st, 1, true, config,
                        )?;
                        let h2 = u2.out_hw();
                        units.push(u1);
                        units.push(u2);
                        units.push(a.conv_bn(
                            &prefix, "conv3", "bn3", n, h2, width, cout, 1, 1, 0, false, config,
                        )?);
                    }
                }
                let downsample = if st != 1 || c != cout {
                    Some(a.conv_bn(
                        &prefix,
                        "downsample.0",
                        "downsample.1",
                        n,
                        hw,
                        c,
                        cout,
                        1,
                        st,
                        0,
                        false,
                        config,
                    )?)
                } else {
                    None
                };
                hw = units.last().expect("units").out_hw();
                c = cout;
                blocks.push(Block { units, downsample });
            }
        }
        let classes = config.num_classes;
        let bound = 1.0 / (c as f32).sqrt();
        let hw_init: Vec<f32> = (0..c * classes)
            .map(|_| a.rng.random_range(-bound..bound))
            .collect();
        let hb_init: Vec<f32> = (0..classes)
            .map(|_| a.rng.random_range(-bound..bound))
            .collect();
        let head_weight = a.param(
            "head.weight",
            ParamLayout::Head { d: c, c: classes },
            hw_init,
            true,
        )?;
        let head_bias = a.param("head.bias", ParamLayout::Vector(classes), hb_init, false)?;
        let mut layers = Layers {
            stem,
            pool,
            blocks,
            head_weight,
            head_bias,
        };
        layers.place_activations(gpu, mode)?;

        let (mh, mw) = hw;
        let rows = n * mh * mw;
        let images = gpu.zeros("images", &[n, s, s, config.in_channels])?;
        let labels = gpu.zeros_u32("labels", &[n])?;
        let maps = gpu.zeros("class_maps", &[n, mh, mw, classes])?;
        let scores = gpu.zeros("scores", &[n, classes])?;
        let (dmaps, dscores) = match mode {
            NetMode::Train => (
                gpu.zeros("class_maps.grad", &[n, mh, mw, classes])?,
                gpu.zeros("scores.grad", &[n, classes])?,
            ),
            NetMode::Inference => (maps.clone(), scores.clone()),
        };
        let mask = gpu.zeros_u32("diversify.mask", &[n, mh, mw, classes])?;
        let step = gpu.zeros_u32("step", &[2])?;
        let hyper = gpu.zeros("sgd.hyper", &[4])?;
        let stats = gpu.zeros("loss.stats", &[4])?;

        let params = a.params;
        let state = a.state;
        let units = layers
            .blocks
            .iter()
            .flat_map(|b| b.units.iter().chain(&b.downsample))
            .chain(std::iter::once(&layers.stem));
        let scratch_len = units
            .map(|u| weight_grad_scratch_len(gpu, &u.conv))
            .max()
            .unwrap_or(0);
        let scratch = if scratch_len > 0 && mode == NetMode::Train {
            Some(gpu.zeros("conv.weight_grad.partials", &[scratch_len])?)
        } else {
            None
        };
        let refs = NetRefs {
            params: &params,
            state: &state,
            scratch: scratch.as_ref(),
        };
        let (feat, dfeat) = layers.node(Some(layers.blocks.len() - 1));
        let hwp = &params[layers.head_weight];
        let hbp = &params[layers.head_bias];

        let build_train = |loss: LossKind| -> Result<Vec<Dispatch>> {
            let mut d = Vec::new();
            layers.forward(gpu, &refs, &images, true, &mut d)?;
            d.extend(head_forward(
                gpu, rows, c, classes, feat, &hwp.value, &hbp.value, &maps,
            )?);
            match &method.diversify {
                Some(cfg) => d.extend(diversify_forward(
                    gpu, n, mh, mw, classes, cfg, &maps, &step, &mask, &scores,
                )?),
                None => d.push(average_scores(gpu, n, mh, mw, classes, &maps, &scores)?),
            }
            d.extend(loss_forward_backward(
                gpu, n, classes, loss, &scores, &labels, &dscores, &stats, false,
            )?);
            match &method.diversify {
                Some(cfg) => d.push(diversify_backward(
                    gpu, n, mh, mw, classes, cfg, &dscores, &mask, &dmaps,
                )?),
                None => d.push(average_scores_backward(
                    gpu, n, mh, mw, classes, &dscores, &dmaps,
                )?),
            }
            d.extend(head_backward(
                gpu, rows, c, classes, feat, &hwp.value, &dmaps, dfeat, &hwp.grad, &hbp.grad,
            )?);
            layers.backward(gpu, &refs, &images, &mut d)?;
            for p in refs.params {
                d.push(sgd_step(
                    gpu,
                    &p.value,
                    &p.grad,
                    &p.velocity,
                    &hyper,
                    p.decay,
                )?);
            }
            Ok(d)
        };
        let train_main = match mode {
            NetMode::Train => build_train(method.loss)?,
            NetMode::Inference => Vec::new(),
        };
        let train_ce = if method.loss == LossKind::CrossEntropy || mode == NetMode::Inference {
            Vec::new()
        } else {
            build_train(LossKind::CrossEntropy)?
        };
        let mut eval = Vec::new();
        layers.forward(gpu, &refs, &images, false, &mut eval)?;
        eval.extend(head_forward(
            gpu, rows, c, classes, feat, &hwp.value, &hbp.value, &maps,
        )?);
        eval.push(average_scores(gpu, n, mh, mw, classes, &maps, &scores)?);

        Ok(Network {
            config: config.clone(),
            mode,
            batch,
            params,
            state,
            images,
            labels,
            maps,
            dmaps,
            scores,
            dscores,
            mask,
            step,
            hyper,
            stats,
            map_size: (mh, mw),
            train_main,
            train_ce,
            eval,
        })
    }

    /// Dispatches of one training iteration for the given phase.
    pub fn train_dispatches(&self, cross_entropy_phase: bool) -> &[Dispatch] {
        if cross_entropy_phase && !self.train_ce.is_empty() {
            &self.train_ce
        } else {
            &self.train_main
        }
    }

    /// Total number of trainable values.
    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.value.numel()).sum()
    }
}
