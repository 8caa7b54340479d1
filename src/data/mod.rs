//! Datasets and the background loader that feeds the GPU training loop.
//!
//! Three sources share the [`Dataset`] trait:
//! - [`IdxDataset`] / [`FashionMnist`]: IDX files (MNIST format), raw or gzipped; the crate
//!   ships a 10,000 / 2,000 image Fashion-MNIST subset (see [`fashion_mnist_default`]);
//! - [`ImageFolder`]: `root/<class>/<images>` trees, optionally pre-split into `train/` and
//!   `test/`;
//! - [`Cub`]: the CUB-200-2011 layout.
//!
//! Samples come out as f32 HWC (`(N, H, W, C)` in a [`Batch`]), preprocessed by an
//! [`Preprocessing`] resolved from [`DataOptions`]. [`Loader`] decodes batches in worker threads;
//! the order and every random draw are a pure function of (seed, epoch, sample index).

pub(crate) mod cub;
pub(crate) mod folder;
pub(crate) mod idx;
pub(crate) mod loader;
pub(crate) mod preprocess;

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

pub use cub::{is_cub_dir, Cub};
pub use folder::{
    decode_image, image_files, read_image, ImageFolder, Unusable, MAX_DECODE_BYTES, MAX_DECODE_SIDE,
};
pub use idx::{
    fashion_mnist_default, is_idx_dir, read_idx_images, read_idx_labels, read_idx_pair,
    resolve_fashion_mnist, write_idx_images, write_idx_labels, FashionMnist, IdxDataset, IdxImages,
    FASHION_MNIST_CLASSES, FASHION_MNIST_SUBSET_DIR, FASHION_MNIST_SYSTEM_DIR,
};
pub use preprocess::{ImageU8, Normalize, Preprocessing, TrainCrop};

/// Pixel mean of the Fashion-MNIST training set (0..1 scale): the IDX reader's and the
/// preprocessing's (here, so that neither module depends on the other for it).
pub const FASHION_MNIST_MEAN: f32 = 0.2860;
/// Pixel standard deviation of the Fashion-MNIST training set (0..1 scale).
pub const FASHION_MNIST_STD: f32 = 0.3530;
pub use loader::{epoch_order, num_batches, sample_rng, Batch, Loader, LoaderOptions};

use crate::{Error, Result};

/// What a dataset produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    pub num_classes: usize,
    /// By label.
    pub class_names: Vec<String>,
    /// Of one output sample (1 or 3).
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl DatasetInfo {
    /// `height * width * channels`: f32 values per sample.
    pub fn sample_len(&self) -> usize {
        self.height * self.width * self.channels
    }
}

/// A split of a dataset: indexable samples with labels, decoded and augmented on demand.
pub trait Dataset: Send + Sync {
    /// Classes and output shape.
    fn info(&self) -> &DatasetInfo;
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label of sample `i` (`< info().num_classes`); needs no decoding.
    fn label(&self, i: usize) -> u32;
    /// Decodes and preprocesses sample `i` into `out` (`H * W * C` f32, HWC); random choices
    /// (training only) come from `rng`. `Err` for a bad file: the loader skips and counts it.
    fn load(&self, i: usize, train: bool, rng: &mut StdRng, out: &mut [f32]) -> Result<()>;
    /// Where sample `i` comes from (a file path), for warnings.
    fn describe(&self, i: usize) -> String;
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

/// The kinds of dataset [`open_dataset`] recognises; each has its own preprocessing defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// IDX files that are not Fashion-MNIST (e.g. MNIST).
    Idx,
    /// IDX files whose folder path contains `fashion`.
    FashionMnist,
    ImageFolder,
    Cub,
}

/// How to open and preprocess a dataset; `None` fields take the dataset kind's default.
///
/// | field | IDX (Fashion-MNIST, MNIST) | image folders, CUB |
/// | --- | --- | --- |
/// | `channels` | 1 | 3 |
/// | `size` (output H = W) | the files' own (28 x 28) | 224 |
/// | `eval_resize` | `min(H, W)` (the whole image) | `round(size * 256 / 224)` |
/// | `train_crop` | `Pad { pad: max(1, size / 14) }` | `RandomResized` (0.08..1, 3/4..4/3) |
/// | `hflip` | Fashion-MNIST: true, other IDX: false | true |
/// | `normalize` | Fashion-MNIST 0.2860 / 0.3530, MNIST 0.1307 / 0.3081 | ImageNet |
///
/// Every image, whatever its shape, has its shorter side resized to `eval_resize` and the
/// centre `size x size` cropped (never stretched); training crops come from the same image
/// ([`Preprocessing`]). [`crate::recipe::Recipe`] sets `eval_resize` to `size` except for photos.
#[derive(Clone, Debug, PartialEq)]
pub struct DataOptions {
    pub channels: Option<usize>,
    pub size: Option<usize>,
    pub eval_resize: Option<usize>,
    pub train_crop: Option<TrainCrop>,
    pub hflip: Option<bool>,
    pub normalize: Option<Normalize>,
    /// Class folders without `train/` and `test/`: fraction of each class held out for test.
    pub test_fraction: f64,
    /// Class folders without `train/` and `test/`: seed of the held-out choice.
    pub split_seed: u64,
    /// Class folders: an entry that cannot be used (a symbolic link loop, a folder that
    /// cannot be read, a broken link) is an error naming it, instead of being skipped with
    /// a warning. Unreadable image files are the loader's ([`LoaderOptions::strict`]).
    pub strict: bool,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            channels: None,
            size: None,
            eval_resize: None,
            train_crop: None,
            hflip: None,
            normalize: None,
            test_fraction: 0.2,
            split_seed: 0,
            strict: false,
        }
    }
}

/// Largest output height or width (pixels) a dataset or checkpoint may ask for: far above
/// any input size these models train at (the paper's largest is 448), and small enough that
/// one sample's `H * W * C` floats cannot overflow.
pub const MAX_IMAGE_SIZE: usize = 4096;

/// Largest `eval_resize` as a multiple of the output size: a larger one would crop less than
/// 1/16 of the shorter side's square, which is never what was meant.
pub const MAX_EVAL_RESIZE_FACTOR: usize = 4;

impl DataOptions {
    /// Checks the fields that are given, before any file is read; errors name the field:
    /// `channels` 1 or 3, `size` in 1..=[`MAX_IMAGE_SIZE`], `eval_resize` from `size` to
    /// [`MAX_EVAL_RESIZE_FACTOR`] times it, `test_fraction` a number in [0, 1) (0: every image
    /// trains), `normalize` one finite mean and std > 0 per channel, `train_crop` a valid
    /// crop for `size`. [`DataOptions::preprocessing`] checks the resolved preprocessing again.
    pub fn validate(&self) -> Result<()> {
        if let Some(c) = self.channels {
            if c != 1 && c != 3 {
                return Err(Error::invalid("channels", format!("{c}: must be 1 or 3")));
            }
        }
        if let Some(s) = self.size {
            if s == 0 || s > MAX_IMAGE_SIZE {
                return Err(Error::invalid(
                    "size",
                    format!("{s}: the image size must be in 1..={MAX_IMAGE_SIZE} pixels"),
                ));
            }
        }
        if let Some(r) = self.eval_resize {
            let lo = self.size.unwrap_or(1);
            let hi = self.size.unwrap_or(MAX_IMAGE_SIZE) * MAX_EVAL_RESIZE_FACTOR;
            if r < lo || r > hi {
                return Err(Error::invalid(
                    "eval_resize",
                    format!(
                        "{r}: must be in {lo}..={hi}{}",
                        match self.size {
                            Some(s) => format!(
                                " for size {s} (at least the size, at most \
                                 {MAX_EVAL_RESIZE_FACTOR} times it)"
                            ),
                            None => String::new(),
                        }
                    ),
                ));
            }
        }
        if !(self.test_fraction >= 0.0 && self.test_fraction < 1.0) {
            return Err(Error::invalid(
                "test_fraction",
                format!(
                    "{}: must be a number in [0, 1) (the share of each class held out for \
                     testing; 0 trains on every image)",
                    self.test_fraction
                ),
            ));
        }
        if let (Some(n), Some(c)) = (&self.normalize, self.channels) {
            n.validate(c)?;
        }
        Ok(())
    }

    /// Resolves the preprocessing for a dataset of `kind` whose images are natively
    /// `native_h x native_w` (IDX; pass 0, 0 for variable-size images), and validates it.
    pub fn preprocessing(
        &self,
        kind: DatasetKind,
        native_h: usize,
        native_w: usize,
    ) -> Result<Preprocessing> {
        self.validate()?;
        let idx = matches!(kind, DatasetKind::Idx | DatasetKind::FashionMnist);
        let channels = self.channels.unwrap_or(if idx { 1 } else { 3 });
        let (height, width) = match self.size {
            Some(s) => (s, s),
            None if idx => (native_h, native_w),
            None => (224, 224),
        };
        let eval_resize = self.eval_resize.unwrap_or(if idx {
            height.min(width)
        } else {
            ((height.max(width) as f64) * 256.0 / 224.0).round() as usize
        });
        let train_crop = self.train_crop.clone().unwrap_or(if idx {
            TrainCrop::Pad {
                pad: (height.min(width) / 14)
                    .max(1)
                    .min(height.min(width).saturating_sub(1)),
            }
        } else {
            TrainCrop::RANDOM_RESIZED_DEFAULT
        });
        let hflip = self.hflip.unwrap_or(kind != DatasetKind::Idx);
        let normalize = self.normalize.clone().unwrap_or(match kind {
            DatasetKind::FashionMnist => Normalize::fashion_mnist(channels),
            DatasetKind::Idx => Normalize::uniform(channels, idx::MNIST_MEAN, idx::MNIST_STD),
            _ => Normalize::imagenet(channels),
        });
        let a = Preprocessing {
            height,
            width,
            channels,
            eval_resize,
            train_crop,
            hflip,
            normalize,
        };
        a.validate()?;
        Ok(a)
    }
}

/// Opens `split` of the dataset at `path`, recognising its layout:
///
/// 1. `path/images.txt` exists → CUB-200-2011 layout ([`Cub`]); `path/CUB_200_2011/images.txt`
///    (the archive's top folder) too;
/// 2. `path` holds `train-images-idx3-ubyte[.gz]` or `t10k-images-idx3-ubyte[.gz]` → IDX
///    ([`IdxDataset`]; Fashion-MNIST defaults when the path contains `fashion`);
/// 3. otherwise a class-per-folder tree ([`ImageFolder`]).
///
/// A path that does not exist is an error naming it.
pub fn open_dataset(path: &Path, split: Split, opts: &DataOptions) -> Result<Box<dyn Dataset>> {
    opts.validate()?;
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "dataset folder not found (expected a CUB-200-2011 folder, an IDX folder or a \
                 class-per-folder image tree)",
            ),
        ));
    }
    let cub_sub: PathBuf = path.join("CUB_200_2011");
    Ok(if is_cub_dir(path) {
        Box::new(Cub::open(path, split, opts)?)
    } else if is_cub_dir(&cub_sub) {
        Box::new(Cub::open(&cub_sub, split, opts)?)
    } else if is_idx_dir(path) {
        Box::new(IdxDataset::open(path, split, opts)?)
    } else {
        Box::new(ImageFolder::open(path, split, opts)?)
    })
}

/// Error ([`Error::format`] naming `path` and both lines) unless every class name in
/// `names` (name, line number in `path`) is distinct: two classes of one name could not be
/// told apart in predictions, evaluation reports or a checkpoint's class list.
pub(crate) fn check_unique_class_names(path: &Path, names: &[(String, usize)]) -> Result<()> {
    let mut first = std::collections::HashMap::new();
    for (name, line) in names {
        if let Some(prev) = first.insert(name.as_str(), *line) {
            return Err(Error::format(
                path,
                format!("line {line}: class name `{name}` appears twice (first on line {prev})"),
            ));
        }
    }
    Ok(())
}

/// The kind of dataset at `path`, by the rules of [`open_dataset`] (no file is decoded).
pub fn dataset_kind(path: &Path) -> DatasetKind {
    if is_cub_dir(path) || is_cub_dir(&path.join("CUB_200_2011")) {
        DatasetKind::Cub
    } else if is_idx_dir(path) {
        if path.to_string_lossy().to_lowercase().contains("fashion") {
            DatasetKind::FashionMnist
        } else {
            DatasetKind::Idx
        }
    } else {
        DatasetKind::ImageFolder
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
