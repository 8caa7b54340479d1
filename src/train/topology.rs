//! The network's topology as plain data: every conv + BN unit and residual block that a
//! [`ModelConfig`] describes, with its shapes and its parameter names, for a given batch
//! size. No GPU: the memory plan ([`crate::train::memory`]) and `Network::build`
//! both start from it.

use crate::error::{Error, Result};
use crate::gpu::BnSizing;
use crate::kernels::batchnorm::{BatchNormOptions, BatchNormShape};
use crate::kernels::conv2d::Conv2dShape;
use crate::kernels::pool::MaxPoolShape;
use crate::model::{BlockKind, ModelConfig};

/// One convolution (no bias) followed by batch norm, with the unit's ReLU (fused into batch
/// norm's last pass) when `relu`.
#[derive(Clone, Debug)]
pub struct Unit {
    /// torchvision name of the convolution, e.g. `layer1.0.conv1` (its weight is
    /// `layer1.0.conv1.weight`).
    pub conv_name: String,
    /// torchvision name of the batch norm, e.g. `layer1.0.bn1`.
    pub bn_name: String,
    pub conv: Conv2dShape,
    /// The batch norm's (rows, C) view of `z`.
    pub bn: BatchNormShape,
    /// PyTorch's batch-norm `eps` and `momentum` (from the [`ModelConfig`]).
    pub bn_eps: f32,
    pub bn_momentum: f32,
    pub relu: bool,
}

impl Unit {
    /// Shape of the convolution output `z` and of the BN output `y`: (N, OH, OW, Cout).
    pub(crate) fn out_shape(&self) -> [usize; 4] {
        self.conv.y_shape()
    }

    /// Elements of `z` (and of `y`).
    pub(crate) fn out_len(&self) -> usize {
        self.out_shape().iter().product()
    }

    /// The batch norm's options with the given work sizing (the unit's ReLU fused).
    pub(crate) fn bn_options(&self, sizing: BnSizing) -> BatchNormOptions {
        BatchNormOptions {
            eps: self.bn_eps,
            momentum: self.bn_momentum,
            relu: self.relu,
            sizing,
        }
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.conv.cout
    }

    /// Label of the convolution output `z`.
    pub(crate) fn z_label(&self) -> String {
        format!("{}.out", self.conv_name)
    }

    /// Label of the BN output `y`.
    pub(crate) fn y_label(&self) -> String {
        format!("{}.out", self.bn_name)
    }

    fn new(
        conv_name: String,
        bn_name: String,
        conv: Conv2dShape,
        relu: bool,
        config: &ModelConfig,
    ) -> Result<Unit> {
        conv.validate()?;
        let bn = BatchNormShape {
            rows: conv.n * conv.oh() * conv.ow(),
            channels: conv.cout,
        };
        Ok(Unit {
            conv_name,
            bn_name,
            conv,
            bn,
            bn_eps: config.bn_eps,
            bn_momentum: config.bn_momentum,
            relu,
        })
    }
}

/// A residual block: the main branch's units (the last without ReLU: the block's ReLU
/// follows the residual join `relu(main + shortcut)`), and the projection shortcut when
/// the block changes the stride or the channel count (else the identity).
#[derive(Clone, Debug)]
pub struct Block {
    pub units: Vec<Unit>,
    pub downsample: Option<Unit>,
}

impl Block {
    /// The last unit of the main branch, whose `y` becomes the block output.
    pub fn last(&self) -> &Unit {
        // `Topology::new` gives every block two or three units.
        &self.units[self.units.len() - 1]
    }
}

/// Stem, optional max pool, residual blocks and the class-map head of one model at one
/// batch size.
#[derive(Clone, Debug)]
pub struct Topology {
    pub batch: usize,
    /// The input batch (N, S, S, Cin).
    pub input: [usize; 4],
    pub stem: Unit,
    /// The stem's 3x3/s2/p1 max pool, when the model has one.
    pub pool: Option<MaxPoolShape>,
    pub blocks: Vec<Block>,
    /// Channels D of the backbone features (the head's input).
    pub features: usize,
    /// Spatial size (h, w) of the features and class maps.
    pub map: (usize, usize),
    /// Classes C (class maps per image).
    pub classes: usize,
}

impl Topology {
    /// The units and blocks of `config` at batch size `batch`. Errors (invalid config,
    /// batch 0, a layer too small or too large) come before anything is allocated.
    pub fn new(config: &ModelConfig, batch: usize) -> Result<Topology> {
        config.validate()?;
        if batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        let n = batch;
        let s = config.input_size;
        let conv = |hw: (usize, usize), cin, cout, k, stride, pad| Conv2dShape {
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
        let stem = Unit::new(
            "conv1".into(),
            "bn1".into(),
            conv(
                (s, s),
                config.in_channels,
                config.stem.channels,
                config.stem.kernel,
                config.stem.stride,
                config.stem.pad,
            ),
            true,
            config,
        )?;
        let mut hw = (stem.conv.oh(), stem.conv.ow());
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
            Some(ps)
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
                let unit = |i: usize, shape: Conv2dShape, relu: bool| {
                    Unit::new(
                        format!("{prefix}conv{i}"),
                        format!("{prefix}bn{i}"),
                        shape,
                        relu,
                        config,
                    )
                };
                let cout = width * exp;
                let mut units = Vec::new();
                match config.block {
                    BlockKind::Basic => {
                        let u1 = unit(1, conv(hw, c, width, 3, st, 1), true)?;
                        let h1 = (u1.conv.oh(), u1.conv.ow());
                        units.push(u1);
                        units.push(unit(2, conv(h1, width, width, 3, 1, 1), false)?);
                    }
                    BlockKind::Bottleneck => {
                        let u1 = unit(1, conv(hw, c, width, 1, 1, 0), true)?;
                        let u2 = unit(2, conv(hw, width, width, 3, st, 1), true)?;
                        let h2 = (u2.conv.oh(), u2.conv.ow());
                        units.push(u1);
                        units.push(u2);
                        units.push(unit(3, conv(h2, width, cout, 1, 1, 0), false)?);
                    }
                }
                let downsample = if st != 1 || c != cout {
                    Some(Unit::new(
                        format!("{prefix}downsample.0"),
                        format!("{prefix}downsample.1"),
                        conv(hw, c, cout, 1, st, 0),
                        false,
                        config,
                    )?)
                } else {
                    None
                };
                let block = Block { units, downsample };
                hw = (block.last().conv.oh(), block.last().conv.ow());
                c = cout;
                blocks.push(block);
            }
        }
        Ok(Topology {
            batch,
            input: [n, s, s, config.in_channels],
            stem,
            pool,
            blocks,
            features: c,
            map: hw,
            classes: config.num_classes,
        })
    }

    /// Every unit in parameter order: the stem, then each block's units followed by its
    /// downsample. Parameters are created (and drawn from the RNG) in this order.
    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        std::iter::once(&self.stem).chain(
            self.blocks
                .iter()
                .flat_map(|b| b.units.iter().chain(&b.downsample)),
        )
    }

    /// Shape of the stem's output after the optional max pool (the first block's input).
    pub(crate) fn stem_out_shape(&self) -> [usize; 4] {
        match &self.pool {
            Some(p) => p.output_shape(),
            None => self.stem.out_shape(),
        }
    }

    /// Shape of the class maps (N, h, w, C).
    pub(crate) fn maps_shape(&self) -> [usize; 4] {
        [self.batch, self.map.0, self.map.1, self.classes]
    }

    /// Shape of the backbone's output features (N, h, w, D).
    pub(crate) fn features_shape(&self) -> [usize; 4] {
        [self.batch, self.map.0, self.map.1, self.features]
    }

    /// GFLOP (multiply-adds counted as 2) of one training step's convolutions and head:
    /// every convolution's forward pass, data gradient (not the stem's: the images need
    /// none) and weight gradient, and the head's three products. The element-wise passes,
    /// batch norm and the method's kernels add little and are left out.
    pub fn training_gflop(&self) -> f64 {
        let conv = |u: &Unit| {
            let c = &u.conv;
            2.0 * (c.n * c.oh() * c.ow() * c.cout * c.kh * c.kw * c.cin) as f64
        };
        let stem = conv(&self.stem);
        let units: f64 = self.units().map(conv).sum();
        let head = 2.0 * (self.head_rows() * self.features * self.classes) as f64;
        (3.0 * units - stem + 3.0 * head) * 1e-9
    }

    /// Rows N * h * w of the head's GEMMs.
    pub(crate) fn head_rows(&self) -> usize {
        self.batch * self.map.0 * self.map.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's step: torchvision counts ResNet-50 at 4.09 G multiply-adds per 224 px
    /// image, so at 448 px 16.4 G; three passes (less the stem's data gradient) and the
    /// 2048 -> 200 head over 14 x 14, times 16 images, come to about 1.57 TFLOP (what the
    /// issue quotes PyTorch's step at).
    #[test]
    fn training_gflop_of_the_papers_step() {
        let cfg = ModelConfig::preset("resnet50", 3, 448, 200).unwrap();
        let g = Topology::new(&cfg, 16).unwrap().training_gflop();
        assert!((1560.0..1590.0).contains(&g), "{g} GFLOP");
        // Linear in the batch.
        let one = Topology::new(&cfg, 1).unwrap().training_gflop();
        assert!((g / one - 16.0).abs() < 1e-9);
    }

    #[test]
    fn resnet50_has_the_torchvision_layout() {
        let cfg = ModelConfig::preset("resnet50", 3, 224, 10).unwrap();
        let t = Topology::new(&cfg, 2).unwrap();
        assert_eq!(t.units().count(), 53);
        assert_eq!(t.blocks.len(), 16);
        assert_eq!(t.features, 2048);
        assert_eq!(t.map, (7, 7));
        assert_eq!(t.map, cfg.feature_size());
        assert_eq!(t.features, cfg.feature_channels());
        assert_eq!(t.stem_out_shape(), [2, 56, 56, 64]);
        let b = &t.blocks[4]; // layer2.1
        assert_eq!(b.units[1].conv_name, "layer2.1.conv2");
        assert_eq!(b.units[1].bn_name, "layer2.1.bn2");
        assert!(b.downsample.is_none());
        assert!(t.blocks[0].downsample.is_some()); // 64 -> 256 channels
        let d = t.blocks[3].downsample.as_ref().unwrap(); // layer2.0
        assert_eq!(d.conv_name, "layer2.0.downsample.0");
        assert_eq!((d.conv.stride, d.conv.cin, d.conv.cout), (2, 256, 512));
        assert_eq!(t.blocks[3].units[1].conv.stride, 2); // v1.5: stride on the 3x3
    }

    #[test]
    fn batch_zero_and_tiny_inputs_are_errors() {
        let cfg = ModelConfig::preset("tiny", 1, 12, 3).unwrap();
        assert!(Topology::new(&cfg, 0).is_err());
        let mut small = cfg.clone();
        small.input_size = 0;
        assert!(Topology::new(&small, 1).is_err());
        let mut wide = cfg.clone();
        wide.stem.kernel = 15; // larger than the padded 12 x 12 input
        assert!(Topology::new(&wide, 1).is_err());
    }
}
