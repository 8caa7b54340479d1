//! Backbone configurations (ResNet family and small variants for small images) ending in the
//! class-map head. A configuration is data: it is serialised into every checkpoint, and the
//! network is built from it (see [`crate::train::Network`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Residual block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34), expansion 1.
    Basic,
    /// 1x1 -> 3x3 (strided) -> 1x1 with expansion 4 (ResNet-50, torchvision's v1.5).
    Bottleneck,
}

impl BlockKind {
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The stem: one convolution + BN + ReLU, optionally a 3x3/s2/p1 max pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StemConfig {
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub channels: usize,
    pub maxpool: bool,
}

/// A whole network: stem, residual stages, 1x1 class-map head with `num_classes` maps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Preset name (`tiny`, `resnet18`, ...), informational.
    pub name: String,
    pub in_channels: usize,
    pub input_size: usize,
    pub stem: StemConfig,
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: Vec<usize>,
    /// Base width of each stage (output channels are width * expansion).
    pub widths: Vec<usize>,
    /// Stride of the first block of each stage.
    pub strides: Vec<usize>,
    pub num_classes: usize,
    pub bn_eps: f32,
    pub bn_momentum: f32,
}

impl ModelConfig {
    /// A preset by name: `tiny` (28x28 grayscale, 3 stages, fast on a CPU adapter),
    /// `small` (32-64 px), `resnet18`, `resnet34`, `resnet50` (torchvision topology).
    pub fn preset(
        name: &str,
        in_channels: usize,
        input_size: usize,
        num_classes: usize,
    ) -> Result<Self> {
        let tv_stem = StemConfig {
            kernel: 7,
            stride: 2,
            pad: 3,
            channels: 64,
            maxpool: true,
        };
        let (stem, block, layers, widths, strides) = match name {
            "tiny" => (
                StemConfig {
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                    channels: 16,
                    maxpool: false,
                },
                BlockKind::Basic,
                vec![1, 1, 1],
                vec![16, 32, 64],
                vec![2, 2, 2],
            ),
            "small" => (
                StemConfig {
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                    channels: 32,
                    maxpool: false,
                },
                BlockKind::Basic,
                vec![1, 1, 1],
                vec![32, 64, 128],
                vec![1, 2, 2],
            ),
            "resnet18" => (
                tv_stem,
                BlockKind::Basic,
                vec![2, 2, 2, 2],
                vec![64, 128, 256, 512],
                vec![1, 2, 2, 2],
            ),
            "resnet34" => (
                tv_stem,
                BlockKind::Basic,
                vec![3, 4, 6, 3],
                vec![64, 128, 256, 512],
                vec![1, 2, 2, 2],
            ),
            "resnet50" => (
                tv_stem,
                BlockKind::Bottleneck,
                vec![3, 4, 6, 3],
                vec![64, 128, 256, 512],
                vec![1, 2, 2, 2],
            ),
            other => {
                return Err(Error::invalid(
                    "model",
                    format!("`{other}` is not one of tiny, small, resnet18, resnet34, resnet50"),
                ))
            }
        };
        let c = ModelConfig {
            name: name.to_string(),
            in_channels,
            input_size,
            stem,
            block,
            layers,
            widths,
            strides,
            num_classes,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        };
        c.validate()?;
        Ok(c)
    }

    /// Check that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("model configuration", m));
        if self.layers.is_empty()
            || self.layers.len() != self.widths.len()
            || self.layers.len() != self.strides.len()
        {
            return bad(format!(
                "layers {:?}, widths {:?}, strides {:?} must be non-empty and of equal length",
                self.layers, self.widths, self.strides
            ));
        }
        if self.layers.contains(&0) || self.widths.contains(&0) || self.strides.contains(&0) {
            return bad("stage sizes, widths and strides must be positive".into());
        }
        if self.num_classes < 2 {
            return bad(format!(
                "num_classes is {}, need at least 2",
                self.num_classes
            ));
        }
        if self.in_channels == 0
            || self.stem.channels == 0
            || self.stem.kernel == 0
            || self.stem.stride == 0
        {
            return bad("stem and input channels must be positive".into());
        }
        let (h, _) = self.feature_size();
        if h == 0 {
            return bad(format!(
                "input size {} is too small for this network",
                self.input_size
            ));
        }
        Ok(())
    }

    /// Spatial size of the class maps for the configured input size.
    pub fn feature_size(&self) -> (usize, usize) {
        let conv = |s: usize, k: usize, st: usize, p: usize| {
            if s + 2 * p < k {
                0
            } else {
                (s + 2 * p - k) / st + 1
            }
        };
        let mut s = conv(
            self.input_size,
            self.stem.kernel,
            self.stem.stride,
            self.stem.pad,
        );
        if self.stem.maxpool {
            s = conv(s, 3, 2, 1);
        }
        for &st in &self.strides {
            s = conv(s, 3, st, 1);
        }
        (s, s)
    }

    /// Channels of the last feature map (input of the class-map head).
    pub fn feature_channels(&self) -> usize {
        self.widths.last().copied().unwrap_or(0) * self.block.expansion()
    }
}
