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

/// Largest channel count, class count, stage depth or stride a model configuration may
/// give ([`ModelConfig::validate`]): a bound that keeps every size product far from
/// overflowing.
pub const MAX_MODEL_DIM: usize = 1 << 16;

impl ModelConfig {
    /// A preset by name: `tiny` (28x28 grayscale, 3 stages, fast on a CPU adapter),
    /// `small` (32-64 px), `resnet18`, `resnet34`, `resnet50` (torchvision topology).
    /// An input smaller than [`ModelConfig::min_input_size`] (32 px for the ResNets, 8 for
    /// `tiny`, 4 for `small`) is refused, naming that size.
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
        let (stride, min) = (c.total_stride(), c.min_input_size());
        if input_size < min {
            return Err(Error::invalid(
                "input size",
                format!(
                    "{input_size} px is too small for {name}, whose class maps are 1/{stride} \
                     of the input: the smallest input that gives a 1x1 class map is {min} px \
                     (the paper's 14x14 maps need {})",
                    14 * stride
                ),
            ));
        }
        Ok(c)
    }

    /// How many input pixels one class-map cell spans on a side: the product of the
    /// stem's, the max pool's and every stage's stride (32 for the ResNets, 8 for `tiny`,
    /// 4 for `small`).
    pub fn total_stride(&self) -> usize {
        let pool = if self.stem.maxpool { 2 } else { 1 };
        self.strides
            .iter()
            .fold(self.stem.stride.saturating_mul(pool), |a, &s| {
                a.saturating_mul(s)
            })
    }

    /// The smallest input size whose class maps are at least 1x1 without the padding
    /// alone making them: [`ModelConfig::total_stride`]. A smaller input still gives 1x1
    /// maps (every convolution is padded), but made of padding and one corner of the
    /// image, so [`ModelConfig::preset`] refuses it.
    pub fn min_input_size(&self) -> usize {
        self.total_stride()
    }

    /// Check that the configuration describes a buildable network: sizes within bounds
    /// (checked first, so that no size arithmetic can overflow on hostile values, from a
    /// checkpoint or from flags), stages consistent, the input large enough.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("model configuration", m));
        // Far above any ResNet (the largest stage width is 512, the stem kernel 7).
        let max = crate::data::MAX_IMAGE_SIZE;
        let stem = &self.stem;
        for (field, v) in [
            ("input_size", self.input_size),
            ("stem kernel", stem.kernel),
            ("stem stride", stem.stride),
            ("stem pad", stem.pad),
        ] {
            if v > max {
                return bad(format!("{field} {v} is larger than {max}"));
            }
        }
        for (field, v) in [
            ("stem channels", stem.channels),
            ("num_classes", self.num_classes),
            ("in_channels", self.in_channels),
        ]
        .into_iter()
        .chain(self.widths.iter().map(|&w| ("a stage width", w)))
        .chain(self.layers.iter().map(|&l| ("a stage's block count", l)))
        .chain(self.strides.iter().map(|&s| ("a stage stride", s)))
        {
            if v > MAX_MODEL_DIM {
                return bad(format!("{field} {v} is larger than {MAX_MODEL_DIM}"));
            }
        }
        if self.layers.len() > 64 {
            return bad(format!("{} stages, more than 64", self.layers.len()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An input below the network's total stride is refused, naming the smallest that
    /// gives a 1x1 class map and the paper's 448 for 14x14; that smallest one builds.
    #[test]
    fn an_input_too_small_for_the_model_is_refused_naming_the_smallest() {
        for (name, min) in [
            ("tiny", 8),
            ("small", 4),
            ("resnet18", 32),
            ("resnet34", 32),
            ("resnet50", 32),
        ] {
            let m = ModelConfig::preset(name, 3, min, 10).unwrap();
            assert_eq!(
                (m.min_input_size(), m.feature_size()),
                (min, (1, 1)),
                "{name}"
            );
            let e = ModelConfig::preset(name, 3, min - 1, 10)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("input size")
                    && e.contains(&format!("{} px is too small for {name}", min - 1))
                    && e.contains(&format!("1x1 class map is {min} px")),
                "{e}"
            );
        }
        let e = ModelConfig::preset("resnet50", 3, 4, 200)
            .unwrap_err()
            .to_string();
        assert!(e.contains("14x14 maps need 448"), "{e}");
        assert_eq!(
            ModelConfig::preset("resnet50", 3, 448, 200)
                .unwrap()
                .feature_size(),
            (14, 14)
        );
    }

    /// Out-of-bound sizes are refused by `validate` itself (whatever the configuration
    /// came from), naming the field, before any size arithmetic.
    #[test]
    fn validate_bounds_every_size() {
        let ok = ModelConfig::preset("resnet18", 3, 64, 10).unwrap();
        assert!(ok.validate().is_ok());
        type Break = fn(&mut ModelConfig);
        let cases: [(&str, Break); 5] = [
            ("a stage width", |m| m.widths[0] = MAX_MODEL_DIM + 1),
            ("num_classes", |m| m.num_classes = usize::MAX),
            ("stem pad", |m| m.stem.pad = usize::MAX / 2),
            ("input_size", |m| m.input_size = usize::MAX),
            ("a stage stride", |m| m.strides[1] = usize::MAX),
        ];
        for (field, break_it) in cases {
            let mut m = ok.clone();
            break_it(&mut m);
            let e = m.validate().unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains("larger than"),
                "{field}: {e}"
            );
        }
    }
}
