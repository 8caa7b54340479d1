//! Training recipes chosen from the data: the one place where finegrain's defaults live.
//!
//! [`Recipe::for_data`] looks at a dataset (its layout, class count and the headers of a
//! sample of its image files) and picks everything a run needs: the backbone and input size,
//! the channels, the augmentation, GCE's k, the epochs, batch and learning rate. The train
//! example's flags only override what the recipe chose; a program that calls the library
//! gets the same choices. Every choice comes with a reason ([`Recipe::reasons`]).
//!
//! | the data | model | input | augmentation | epochs, batch, lr |
//! | --- | --- | --- | --- | --- |
//! | small images (shorter side <= 64 px, e.g. Fashion-MNIST, 28x28 grayscale) | `tiny` | their shorter side (at least 8) | off (short runs learn faster without it) | 4, 32, 0.1 |
//! | medium images (shorter side 65-160 px) | `resnet18` | their shorter side, rounded down to a multiple of 32 | random crop + flip | 30, 32, 0.1 |
//! | photos (larger), the default: ImageNet-pretrained `timm/resnet50.tv_in1k` from the Hugging Face Hub ([`BackboneInit`]) | `resnet50` | 224 (the paper: 448, `input_size`) | random resized crop + flip | the paper's fine-tuning: 90, 16, 0.001, x0.1 at 30 and 60, no cross-entropy epoch |
//! | photos from scratch ([`BackboneInit::Scratch`]) | by input size, as above | 224 | as above | 30, 16, 0.05 |
//! | any data with a pretrained backbone ([`Choices::init`]) | as chosen | as chosen | as chosen | the paper's fine-tuning |
//!
//! Sizes are those of the median image by shorter side. Non-square images follow one rule
//! in training, evaluation and inference alike: the shorter side is resized (to the input
//! size; photos to `input * 256 / 224`, torchvision's ImageNet evaluation) and the centre
//! square cropped, never stretched; training crops from the same image (a random resized
//! crop, or that centre square shifted, or as is with augmentation off). The checkpoint
//! records this preprocessing ([`Recipe::preprocessing`]) and inference reads it from there.
//!
//! Channels: 1 when every sampled image is grayscale (IDX data always), else 3. GCE's k:
//! `C / 4` clamped to 3..=15 and to C - 1 (3 for 10 classes, the paper's 15 for 200);
//! cross-entropy for the first epoch, then GCE; the diversification block on (alpha 0.1,
//! p_peak = p_patch = 0.5). Small training sets: the batch is at most the training set
//! (each epoch drops its last partial batch), and a run from scratch has at least
//! [`MIN_TRAIN_STEPS`] steps (more epochs, its warm-up and cross-entropy epochs stretched
//! alike). A caller's input size below the model's smallest
//! ([`ModelConfig::min_input_size`]: 32 for ResNets) is refused.
//!
//! ```no_run
//! use finegrain::recipe::{Choices, Recipe};
//! let recipe = Recipe::for_data("photos/".as_ref(), &Choices::default())?;
//! println!("{}: {} at {} px", recipe.data.display(), recipe.model, recipe.input_size);
//! for r in &recipe.reasons {
//!     println!("  {r}");
//! }
//! # Ok::<(), finegrain::Error>(())
//! ```

use crate::data::{
    dataset_kind, open_dataset, resolve_fashion_mnist, Cub, DataOptions, Dataset, DatasetKind,
    ImageFolder, Preprocessing, Split, TrainCrop,
};
use crate::error::{Error, Result};
use crate::hub::HubFile;
use crate::method::loss::LossKind;
use crate::model::ModelConfig;
use crate::train::config::TrainConfig;
use crate::train::schedule::Schedule;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Longest image side (px) up to which images count as small (Fashion-MNIST, CIFAR-like).
pub const SMALL_MAX: usize = 64;
/// Longest image side (px) up to which images count as medium (below photos).
pub const MEDIUM_MAX: usize = 160;
/// Image files whose headers [`survey`] reads (spread evenly over the training split).
pub const SURVEY_SAMPLE: usize = 64;
/// Fewest optimizer steps of a run from scratch: a small training set (few steps per epoch)
/// gets more epochs (Fashion-MNIST's 4 epochs are 1,248 steps).
pub const MIN_TRAIN_STEPS: usize = 100;

/// What [`survey`] found out about a dataset without decoding its images.
#[derive(Clone, Debug, PartialEq)]
pub struct Survey {
    pub path: PathBuf,
    pub kind: DatasetKind,
    pub num_classes: usize,
    pub train_images: usize,
    /// Width and height of the median sampled image by shorter side (IDX: the files'
    /// size), so that [`Survey::shorter_side`] is the median of the images' shorter sides
    /// whatever their orientation.
    pub width: usize,
    pub height: usize,
    /// Whether every sampled image is grayscale.
    pub grayscale: bool,
    /// How many image headers were read (0 for IDX data, whose header gives the size).
    pub sampled: usize,
}

impl Survey {
    /// The longer side of the median image.
    pub fn longest_side(&self) -> usize {
        self.width.max(self.height)
    }

    /// The shorter side of the median image: what the recipe's choices follow, since every
    /// image is prepared by resizing its shorter side and cropping a centre square.
    pub fn shorter_side(&self) -> usize {
        self.width.min(self.height)
    }
}

/// Look at the dataset at `path`: its layout, classes, training-set size, and the size and
/// colour of a sample of its images (headers only).
pub fn survey(path: &Path) -> Result<Survey> {
    let kind = dataset_kind(path);
    // The headers are read through the dataset's own file list, so the survey sees exactly
    // the files training would.
    let (files, num_classes, train_images, idx_size) = match kind {
        DatasetKind::Idx | DatasetKind::FashionMnist => {
            let d = open_dataset(path, Split::Train, &DataOptions::default())?;
            let i = d.info();
            (
                Vec::new(),
                i.num_classes,
                d.len(),
                Some((i.width, i.height)),
            )
        }
        DatasetKind::Cub => {
            let root = if crate::data::is_cub_dir(path) {
                path.to_path_buf()
            } else {
                path.join("CUB_200_2011")
            };
            let d = Cub::open(&root, Split::Train, &DataOptions::default())?;
            (d.files().to_vec(), d.info().num_classes, d.len(), None)
        }
        DatasetKind::ImageFolder => {
            let d = ImageFolder::open(path, Split::Train, &DataOptions::default())?;
            (d.files().to_vec(), d.info().num_classes, d.len(), None)
        }
    };
    if let Some((width, height)) = idx_size {
        return Ok(Survey {
            path: path.to_path_buf(),
            kind,
            num_classes,
            train_images,
            width,
            height,
            grayscale: true,
            sampled: 0,
        });
    }
    let step = files.len().div_ceil(SURVEY_SAMPLE).max(1);
    // (shorter side, width, height) of each image read.
    let (mut sizes, mut grayscale) = (Vec::new(), true);
    let mut unreadable = Vec::new();
    for f in files.iter().step_by(step) {
        match image_header(f) {
            Ok((w, h, gray)) => {
                sizes.push((w.min(h), w, h));
                grayscale &= gray;
            }
            Err(e) => unreadable.push(e),
        }
    }
    if sizes.is_empty() {
        return Err(match unreadable.into_iter().next() {
            Some(e) => e,
            None => Error::format(path, "the dataset has no image files"),
        });
    }
    // The median image by shorter side: 40x30 and 30x40 images have a median shorter side
    // of 30 (the medians of widths and of heights taken apart could be 40 and 40).
    sizes.sort_unstable();
    let (_, width, height) = sizes[sizes.len() / 2];
    Ok(Survey {
        path: path.to_path_buf(),
        kind,
        num_classes,
        train_images,
        width,
        height,
        grayscale,
        sampled: sizes.len(),
    })
}

/// Width, height and whether an image file is grayscale, from its header alone.
fn image_header(path: &Path) -> Result<(usize, usize, bool)> {
    use image::ImageDecoder;
    let decoder = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .into_decoder()
        .map_err(|e| Error::format(path, format!("cannot read the image header: {e}")))?;
    let (w, h) = decoder.dimensions();
    let gray = matches!(
        decoder.color_type(),
        image::ColorType::L8
            | image::ColorType::L16
            | image::ColorType::La8
            | image::ColorType::La16
    );
    Ok((w as usize, h as usize, gray))
}

/// What the caller fixes before the recipe chooses the rest; `None` leaves it to the data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choices {
    /// A backbone preset (`tiny`, `small`, `resnet18`, `resnet34`, `resnet50`).
    pub model: Option<String>,
    /// Square input size in pixels.
    pub input_size: Option<usize>,
    /// Training augmentation on or off.
    pub augment: Option<bool>,
    /// Where the backbone's weights come from. `None`: photos start from torchvision's
    /// ImageNet weights for their model ([`crate::hub::imagenet_weights`]), everything
    /// else from scratch. Any pretrained backbone switches the recipe to the paper's
    /// fine-tuning schedule.
    pub init: Option<BackboneInit>,
    /// Seed of the initialisation, data order, augmentation, masks and held-out split.
    pub seed: u64,
}

/// Where a backbone's initial weights come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackboneInit {
    /// Random initialisation: train from scratch.
    Scratch,
    /// A torchvision/timm ResNet state dict saved as safetensors.
    File(PathBuf),
    /// Such a file on the Hugging Face Hub, e.g. `timm/resnet50.tv_in1k`.
    Hub(HubFile),
}

impl fmt::Display for BackboneInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackboneInit::Scratch => f.write_str("scratch"),
            BackboneInit::File(p) => write!(f, "{}", p.display()),
            BackboneInit::Hub(h) => write!(f, "{h}"),
        }
    }
}

impl FromStr for BackboneInit {
    type Err = Error;

    /// `none` (or `scratch`); a file that exists; `hf://…` or `owner/name[/file][@rev]`
    /// for the Hub; anything else is taken as a file (and fails, naming it, when opened).
    fn from_str(s: &str) -> Result<BackboneInit> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("scratch") {
            return Ok(BackboneInit::Scratch);
        }
        if t.is_empty() {
            return Err(Error::invalid(
                "init",
                "empty: give a safetensors file, a Hugging Face Hub id or `none`",
            ));
        }
        let path = Path::new(t);
        if t.starts_with("hf://") {
            return Ok(BackboneInit::Hub(t.parse()?));
        }
        // `weights/r50.safetensors` is a path even when missing; `timm/resnet50.tv_in1k`
        // a Hub id unless a file of that name exists.
        let two_parts_file = t.matches('/').count() == 1 && t.ends_with(".safetensors");
        if path.exists() || two_parts_file || t.starts_with(['.', '/', '~']) {
            return Ok(BackboneInit::File(path.to_path_buf()));
        }
        match t.parse::<HubFile>() {
            Ok(h) => Ok(BackboneInit::Hub(h)),
            Err(_) => Ok(BackboneInit::File(path.to_path_buf())),
        }
    }
}

/// Everything a training run needs, chosen from the data (see the module docs); change any
/// field before training.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub data: PathBuf,
    pub survey: Survey,
    /// Backbone preset name ([`ModelConfig::preset`]).
    pub model: String,
    pub input_size: usize,
    pub channels: usize,
    /// Training augmentation (random crop or shift, horizontal flip).
    pub augment: bool,
    /// How the dataset is opened and preprocessed.
    pub data_options: DataOptions,
    pub train: TrainConfig,
    /// Where the backbone's weights come from ([`Recipe::fetch_init`] gets the file).
    pub init: BackboneInit,
    /// One line per choice, saying what was chosen and why.
    pub reasons: Vec<String>,
}

/// GCE's k for `classes` classes: `C / 4` clamped to 3..=15, and to `C - 1`.
pub fn k_for_classes(classes: usize) -> u32 {
    ((classes / 4)
        .clamp(3, 15)
        .min(classes.saturating_sub(1))
        .max(1)) as u32
}

impl Recipe {
    /// The recipe for Fashion-MNIST: the full set when Debian's `dataset-fashion-mnist` is
    /// installed and `subset` is false, else the 10k/2k subset shipped with the crate. This
    /// is what `cargo run --example train` trains with no flags.
    pub fn fashion_mnist(subset: bool, choices: &Choices) -> Result<Recipe> {
        let (path, _) = resolve_fashion_mnist(None, subset)?;
        Recipe::for_data(&path, choices)
    }

    /// The recipe for the dataset at `path` (a CUB-200-2011 folder, an IDX folder or a
    /// class-per-folder tree), with `choices` fixed.
    pub fn for_data(path: &Path, choices: &Choices) -> Result<Recipe> {
        let s = survey(path)?;
        Recipe::from_survey(s, choices)
    }

    /// The recipe for a dataset already surveyed (pure: reads no file).
    pub fn from_survey(s: Survey, choices: &Choices) -> Result<Recipe> {
        let mut reasons = Vec::new();
        // Every image is prepared by resizing its shorter side and cropping a centre square
        // (see the module docs), so the shorter side decides.
        let side = s.shorter_side();
        let idx = matches!(s.kind, DatasetKind::Idx | DatasetKind::FashionMnist);
        let looked = if idx {
            format!("{}x{} IDX images", s.width, s.height)
        } else {
            format!(
                "median image {}x{} {} ({} headers read)",
                s.width,
                s.height,
                if s.grayscale { "grayscale" } else { "colour" },
                s.sampled
            )
        };
        // Photos: the paper's setting, an ImageNet-pretrained backbone fine-tuned.
        let photos = !idx && side > MEDIUM_MAX;
        let input_reason = reasons.len();
        let mut input_size = match choices.input_size {
            Some(0) => return Err(Error::invalid("input size", "must be at least 1 pixel")),
            Some(n) => {
                reasons.push(format!("input {n} px: chosen by the caller"));
                n
            }
            None if side <= SMALL_MAX => {
                reasons.push(format!(
                    "input {side} px: the images' own size, their shorter side ({looked})"
                ));
                side
            }
            None if side <= MEDIUM_MAX => {
                let n = (side / 32 * 32).max(64);
                reasons.push(format!(
                    "input {n} px: the images' shorter side rounded down to a multiple of 32 \
                     ({looked})"
                ));
                n
            }
            None => {
                reasons.push(format!(
                    "input 224 px: photos ({looked}); the paper fine-tunes at 448 (input size 448)"
                ));
                224
            }
        };
        // Small inputs get the small model, no augmentation and short runs; medium images
        // whose shorter side rounds down to 64 px stay medium.
        let small = input_size <= SMALL_MAX && (choices.input_size.is_some() || side <= SMALL_MAX);
        let model = match &choices.model {
            Some(m) => {
                reasons.push(format!("model {m}: chosen by the caller"));
                m.clone()
            }
            None if photos && choices.init != Some(BackboneInit::Scratch) => {
                reasons.push(
                    "model resnet50: photos, the paper's backbone, ImageNet-pretrained".into(),
                );
                "resnet50".to_string()
            }
            None => {
                let (m, why) = if small {
                    ("tiny", "small inputs: three 16/32/64-channel stages")
                } else if input_size <= MEDIUM_MAX {
                    ("resnet18", "medium inputs")
                } else {
                    ("resnet50", "photos: the paper's backbone")
                };
                reasons.push(format!("model {m}: {why}"));
                m.to_string()
            }
        };
        // Images smaller than the model takes are enlarged to its smallest input (a caller's
        // size is checked below, and refused naming that smallest).
        if choices.input_size.is_none() {
            let min =
                ModelConfig::preset(&model, 1, crate::data::MAX_IMAGE_SIZE, 2)?.min_input_size();
            if input_size < min {
                reasons[input_reason] = format!(
                    "input {min} px: the images' shorter side ({looked}) enlarged to the \
                     smallest input {model} takes (a 1x1 class map)"
                );
                input_size = min;
            }
        }
        let init = match &choices.init {
            Some(i) => {
                if *i != BackboneInit::Scratch {
                    reasons.push(format!("backbone from {i}: chosen by the caller"));
                }
                i.clone()
            }
            None if photos => match crate::hub::imagenet_weights(&model) {
                Some(w) => {
                    reasons.push(format!(
                        "backbone from {w}: photos fine-tune from torchvision's ImageNet \
                         weights (Hugging Face Hub), as the paper does; init none trains \
                         from scratch"
                    ));
                    BackboneInit::Hub(w)
                }
                None => {
                    reasons.push(format!(
                        "backbone from scratch: there are no ImageNet weights for {model}"
                    ));
                    BackboneInit::Scratch
                }
            },
            None => BackboneInit::Scratch,
        };
        let pretrained = init != BackboneInit::Scratch;
        let channels = if s.grayscale && !pretrained { 1 } else { 3 };
        reasons.push(format!(
            "channels {channels}: {}",
            if pretrained {
                "the pretrained backbone takes RGB"
            } else if s.grayscale {
                "every sampled image is grayscale"
            } else {
                "colour images"
            }
        ));
        // Validate the model against the input early: a clear error before any file is
        // decoded or any GPU buffer allocated.
        ModelConfig::preset(&model, channels, input_size, s.num_classes.max(1))?;
        let augment = match choices.augment {
            Some(a) => {
                reasons.push(format!(
                    "augmentation {}: chosen by the caller",
                    if a { "on" } else { "off" }
                ));
                a
            }
            None if small && !photos => {
                reasons.push(
                    "augmentation off: small images (on Fashion-MNIST a 4-epoch run reaches \
                     87.9% without shift + flip, 82.7% with)"
                        .into(),
                );
                false
            }
            None => {
                reasons.push("augmentation on: random (resized) crop + horizontal flip".into());
                true
            }
        };
        let mut data_options = DataOptions {
            split_seed: choices.seed,
            ..DataOptions::default()
        };
        if !idx {
            data_options.channels = Some(channels);
        }
        if !idx || input_size != s.width || input_size != s.height {
            data_options.size = Some(input_size);
        }
        // The shorter side to the input size, then the centre square: nothing but the longer
        // side's excess is cut. Photos keep torchvision's ImageNet evaluation (the shorter
        // side to size * 256 / 224, the pretrained weights' own preprocessing).
        if !idx && !photos {
            data_options.eval_resize = Some(input_size);
        }
        if !augment {
            data_options.train_crop = Some(TrainCrop::Center);
            data_options.hflip = Some(false);
        }
        let k = k_for_classes(s.num_classes);
        reasons.push(format!(
            "GCE k = {k} for {} classes (C / 4 within 3..=15; the paper: 15 for 200)",
            s.num_classes
        ));
        let mut train = TrainConfig {
            loss: LossKind::Gce { k },
            seed: choices.seed,
            ..TrainConfig::default()
        };
        if !small {
            train.epochs = 30;
        }
        if input_size > MEDIUM_MAX {
            train.batch = 16;
            train.lr = 0.05;
        }
        if pretrained {
            train.epochs = 90;
            train.batch = 16;
            train.lr = 0.001;
            train.schedule = Schedule::Step {
                milestones: vec![30, 60],
                gamma: 0.1,
            };
            train.ce_warmup_epochs = 0;
            reasons.push(
                "fine-tuning a pretrained backbone: the paper's 90 epochs, batch 16, lr 0.001, \
                 x0.1 at epochs 30 and 60"
                    .into(),
            );
        } else {
            reasons.push(format!(
                "{} epochs, batch {}, lr {} (cosine, {} warm-up epochs), cross-entropy for {} epoch then GCE",
                train.epochs, train.batch, train.lr, train.warmup_epochs, train.ce_warmup_epochs
            ));
        }
        // The batch never exceeds the training set: each epoch drops its last partial batch,
        // so a larger batch would leave no step at all.
        if s.train_images < train.batch {
            train.batch = s.train_images.max(1);
            reasons.push(format!(
                "batch {}: the training set has only {} images (each epoch drops its last \
                 partial batch)",
                train.batch, s.train_images
            ));
        }
        // A small training set gives few steps per epoch: a run from scratch gets at least
        // MIN_TRAIN_STEPS steps, its warm-up and cross-entropy phase stretched alike, so they
        // keep their share of the run. Fine-tuning keeps the paper's epochs and milestones.
        let steps_per_epoch = (s.train_images / train.batch).max(1);
        if !pretrained && train.epochs * steps_per_epoch < MIN_TRAIN_STEPS {
            let epochs = MIN_TRAIN_STEPS.div_ceil(steps_per_epoch);
            let stretch = epochs as f64 / train.epochs as f64;
            train.warmup_epochs =
                ((train.warmup_epochs as f64 * stretch * 100.0).round() / 100.0) as f32;
            train.ce_warmup_epochs = (train.ce_warmup_epochs as f64 * stretch).round() as usize;
            train.epochs = epochs;
            reasons.push(format!(
                "{epochs} epochs: {} images give {steps_per_epoch} step{} of {} per epoch, and a \
                 run needs at least {MIN_TRAIN_STEPS} steps; warm-up {} epochs and cross-entropy \
                 for {} epochs keep their share of the run",
                s.train_images,
                if steps_per_epoch == 1 { "" } else { "s" },
                train.batch,
                train.warmup_epochs,
                train.ce_warmup_epochs
            ));
        }
        debug_assert!(matches!(train.loss, LossKind::Gce { .. }));
        Ok(Recipe {
            data: s.path.clone(),
            survey: s,
            model,
            input_size,
            channels,
            augment,
            data_options,
            train,
            init,
            reasons,
        })
    }

    /// Open a split of the dataset with the recipe's preprocessing.
    pub fn open(&self, split: Split) -> Result<Arc<dyn Dataset>> {
        Ok(Arc::from(open_dataset(
            &self.data,
            split,
            &self.data_options,
        )?))
    }

    /// The local file of the recipe's pretrained backbone, `None` from scratch: a file as
    /// it is, a Hub file from the cache or downloaded into it ([`crate::hub::fetch`]).
    pub fn fetch_init(&self, hub: &crate::hub::HubOptions) -> Result<Option<PathBuf>> {
        match &self.init {
            BackboneInit::Scratch => Ok(None),
            BackboneInit::File(p) => Ok(Some(p.clone())),
            BackboneInit::Hub(h) => crate::hub::fetch(h, hub).map(Some),
        }
    }

    /// The model for `num_classes` classes (the dataset's).
    pub fn model_config(&self, num_classes: usize) -> Result<ModelConfig> {
        ModelConfig::preset(&self.model, self.channels, self.input_size, num_classes)
    }

    /// The evaluation preprocessing, recorded in checkpoints so that inference prepares
    /// images exactly as the test set was.
    pub fn preprocessing(&self) -> Result<Preprocessing> {
        let idx = matches!(
            self.survey.kind,
            DatasetKind::Idx | DatasetKind::FashionMnist
        );
        let (h, w) = if idx {
            (self.survey.height, self.survey.width)
        } else {
            (0, 0)
        };
        self.data_options.preprocessing(self.survey.kind, h, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey_of(kind: DatasetKind, side: usize, gray: bool, classes: usize) -> Survey {
        Survey {
            path: PathBuf::from("x"),
            kind,
            num_classes: classes,
            train_images: 1000,
            width: side,
            height: side,
            grayscale: gray,
            sampled: 10,
        }
    }

    #[test]
    fn the_batch_never_exceeds_the_training_set() {
        // (training images, fine-tuning, the batch, whether the cap was said)
        for (images, pretrained, want, capped) in [
            (18, false, 18, true),
            (12, true, 12, true),
            (1, false, 1, true),
            (32, false, 32, false),
            (1000, false, 32, false),
            (20, true, 16, false),
        ] {
            let mut s = survey_of(DatasetKind::ImageFolder, 28, true, 3);
            s.train_images = images;
            let choices = Choices {
                init: pretrained.then(|| BackboneInit::File(PathBuf::from("w.safetensors"))),
                ..Choices::default()
            };
            let r = Recipe::from_survey(s, &choices).unwrap();
            assert_eq!(
                r.train.batch, want,
                "{images} images, pretrained {pretrained}"
            );
            let told = r.reasons.iter().any(|x| x.contains("has only"));
            assert_eq!(told, capped, "{:?}", r.reasons);
        }
    }

    #[test]
    fn small_grayscale_images_get_the_tiny_model_at_their_size() {
        let r = Recipe::from_survey(
            survey_of(DatasetKind::ImageFolder, 28, true, 10),
            &Choices::default(),
        )
        .unwrap();
        assert_eq!(
            (r.model.as_str(), r.input_size, r.channels),
            ("tiny", 28, 1)
        );
        assert!(!r.augment);
        assert_eq!(r.train.loss, LossKind::Gce { k: 3 });
        assert_eq!(r.data_options.size, Some(28));
        assert_eq!(r.data_options.channels, Some(1));
        assert_eq!(
            r.train,
            TrainConfig {
                loss: LossKind::Gce { k: 3 },
                ..TrainConfig::default()
            }
        );
    }

    #[test]
    fn photos_get_resnet50_at_224_with_augmentation() {
        let r = Recipe::from_survey(
            survey_of(DatasetKind::Cub, 500, false, 200),
            &Choices::default(),
        )
        .unwrap();
        assert_eq!(
            (r.model.as_str(), r.input_size, r.channels),
            ("resnet50", 224, 3)
        );
        assert!(r.augment);
        assert_eq!(r.train.loss, LossKind::Gce { k: 15 });
        assert_eq!(r.train.batch, 16);
        let p = Recipe::from_survey(
            survey_of(DatasetKind::Cub, 500, false, 200),
            &Choices {
                init: Some(BackboneInit::File("r50.safetensors".into())),
                input_size: Some(448),
                ..Choices::default()
            },
        )
        .unwrap();
        assert_eq!((p.input_size, p.train.epochs, p.train.lr), (448, 90, 0.001));
    }

    #[test]
    fn photos_fine_tune_from_imagenet_weights_unless_told_otherwise() {
        let photos = || survey_of(DatasetKind::ImageFolder, 500, true, 20);
        let r = Recipe::from_survey(photos(), &Choices::default()).unwrap();
        let want = crate::hub::imagenet_weights("resnet50").unwrap();
        assert_eq!(r.init, BackboneInit::Hub(want));
        assert_eq!(
            r.channels, 3,
            "ImageNet weights take RGB, even for grayscale photos"
        );
        assert_eq!((r.train.lr, r.train.ce_warmup_epochs), (0.001, 0));
        // From scratch: the schedule for training from scratch, the images' own channels.
        let scratch = Choices {
            init: Some(BackboneInit::Scratch),
            ..Choices::default()
        };
        let r = Recipe::from_survey(photos(), &scratch).unwrap();
        assert_eq!(r.init, BackboneInit::Scratch);
        assert_eq!((r.channels, r.train.lr, r.train.epochs), (1, 0.05, 30));
        // A model with no ImageNet weights trains from scratch, and says so.
        let tiny = Choices {
            model: Some("tiny".into()),
            input_size: Some(64),
            ..Choices::default()
        };
        let r = Recipe::from_survey(photos(), &tiny).unwrap();
        assert_eq!(r.init, BackboneInit::Scratch);
        assert!(r
            .reasons
            .iter()
            .any(|x| x.contains("no ImageNet weights for tiny")));
        // The medium row and small images never download anything.
        for side in [28, 100, 160] {
            let s = survey_of(DatasetKind::ImageFolder, side, false, 20);
            let r = Recipe::from_survey(s, &Choices::default()).unwrap();
            assert_eq!(r.init, BackboneInit::Scratch, "{side} px");
        }
    }

    #[test]
    fn init_sources_parse() {
        let p = |s: &str| s.parse::<BackboneInit>().unwrap();
        assert_eq!(p("none"), BackboneInit::Scratch);
        assert_eq!(p("SCRATCH"), BackboneInit::Scratch);
        assert_eq!(
            p("timm/resnet50.tv_in1k"),
            BackboneInit::Hub(crate::hub::HubFile::new(
                "timm/resnet50.tv_in1k",
                "model.safetensors"
            ))
        );
        assert_eq!(
            p("weights/r50.safetensors"),
            BackboneInit::File("weights/r50.safetensors".into())
        );
        assert_eq!(p("./a/b"), BackboneInit::File("./a/b".into()));
        assert_eq!(
            p("r50.safetensors"),
            BackboneInit::File("r50.safetensors".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("timm");
        std::fs::create_dir_all(local.join("resnet50.tv_in1k")).unwrap();
        let existing = local.join("resnet50.tv_in1k");
        assert_eq!(
            p(existing.to_str().unwrap()),
            BackboneInit::File(existing.clone()),
            "a path that exists is a file"
        );
        assert!("".parse::<BackboneInit>().is_err());
    }

    #[test]
    fn medium_images_round_down_to_a_multiple_of_32() {
        let r = Recipe::from_survey(
            survey_of(DatasetKind::ImageFolder, 100, false, 40),
            &Choices::default(),
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.input_size), ("resnet18", 96));
        assert_eq!(r.train.loss, LossKind::Gce { k: 10 });
        // A shorter side of 70 rounds down to 64 and stays medium.
        let r = Recipe::from_survey(
            survey_of(DatasetKind::ImageFolder, 70, false, 40),
            &Choices::default(),
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.input_size), ("resnet18", 64));
        assert!(r.augment);
        assert_eq!(r.train.epochs, 30);
    }

    #[test]
    fn non_square_images_follow_their_shorter_side_cropped_never_stretched() {
        // 40x30 images, landscape or portrait: 30 px, the shorter side to 30 and the centre
        // 30x30 kept, in training (augmentation off) as in evaluation.
        for (w, h) in [(40, 30), (30, 40)] {
            let mut s = survey_of(DatasetKind::ImageFolder, 0, false, 5);
            (s.width, s.height) = (w, h);
            let r = Recipe::from_survey(s, &Choices::default()).unwrap();
            assert_eq!((r.model.as_str(), r.input_size), ("tiny", 30), "{w}x{h}");
            let a = r.preprocessing().unwrap();
            assert_eq!((a.height, a.width, a.eval_resize), (30, 30, 30));
            assert_eq!(a.train_crop, TrainCrop::Center);
        }
        // Medium: the shorter side rounded down to a multiple of 32; photos: 224 with
        // torchvision's 256/224 resize.
        let mut s = survey_of(DatasetKind::ImageFolder, 0, false, 5);
        (s.width, s.height) = (300, 100);
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        assert_eq!((r.model.as_str(), r.input_size), ("resnet18", 96));
        assert_eq!(r.preprocessing().unwrap().eval_resize, 96);
        let mut s = survey_of(DatasetKind::ImageFolder, 0, false, 5);
        (s.width, s.height) = (500, 375);
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        assert_eq!(r.input_size, 224);
        assert_eq!(r.preprocessing().unwrap().eval_resize, 256);
        // Non-square IDX files are cropped alike; square ones keep their own defaults.
        let mut s = survey_of(DatasetKind::Idx, 0, true, 10);
        (s.width, s.height) = (28, 20);
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        let a = r.preprocessing().unwrap();
        assert_eq!(
            (r.input_size, a.height, a.width, a.eval_resize),
            (20, 20, 20, 20)
        );
    }

    #[test]
    fn images_smaller_than_the_model_takes_are_enlarged_and_a_caller_size_refused() {
        let r = Recipe::from_survey(
            survey_of(DatasetKind::ImageFolder, 5, false, 4),
            &Choices::default(),
        )
        .unwrap();
        assert_eq!((r.model.as_str(), r.input_size), ("tiny", 8));
        assert!(
            r.reasons
                .iter()
                .any(|x| x.starts_with("input 8 px") && x.contains("enlarged")),
            "{:?}",
            r.reasons
        );
        let e = Recipe::from_survey(
            survey_of(DatasetKind::Cub, 500, false, 200),
            &Choices {
                model: Some("resnet50".into()),
                input_size: Some(4),
                ..Choices::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("input size") && e.contains("32 px") && e.contains("448"),
            "{e}"
        );
    }

    #[test]
    fn small_training_sets_get_at_least_min_train_steps() {
        // 12 small images: batch 12, one step per epoch, 100 epochs; the warm-up (0.2 of 4
        // epochs) and the cross-entropy epoch (1 of 4) keep their share of the run.
        let mut s = survey_of(DatasetKind::ImageFolder, 28, false, 3);
        s.train_images = 12;
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        let t = &r.train;
        assert_eq!((t.batch, t.epochs, t.ce_warmup_epochs), (12, 100, 25));
        assert_eq!(t.warmup_epochs, 5.0);
        assert!(
            r.reasons
                .iter()
                .any(|x| x.starts_with("100 epochs: 12 images give 1 step of 12")),
            "{:?}",
            r.reasons
        );
        // 500 images: 15 steps per epoch, 7 epochs; medium images stretch 30 epochs alike.
        let mut s = survey_of(DatasetKind::ImageFolder, 28, false, 3);
        s.train_images = 500;
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        assert_eq!((r.train.epochs, r.train.ce_warmup_epochs), (7, 2));
        let mut s = survey_of(DatasetKind::ImageFolder, 100, false, 3);
        s.train_images = 40;
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        assert_eq!((r.train.batch, r.train.epochs), (32, 100));
        assert_eq!((r.train.warmup_epochs, r.train.ce_warmup_epochs), (0.67, 3));
        // Enough steps: untouched (Fashion-MNIST's subset: 312 steps per epoch).
        let mut s = survey_of(DatasetKind::FashionMnist, 28, true, 10);
        s.train_images = 10_000;
        let r = Recipe::from_survey(s, &Choices::default()).unwrap();
        assert_eq!(
            r.train,
            TrainConfig {
                loss: LossKind::Gce { k: 3 },
                ..TrainConfig::default()
            }
        );
        assert_eq!(
            (r.data_options.size, r.data_options.eval_resize),
            (None, None)
        );
        // Fine-tuning keeps the paper's 90 epochs and milestones.
        let mut s = survey_of(DatasetKind::ImageFolder, 28, false, 3);
        s.train_images = 12;
        let choices = Choices {
            init: Some(BackboneInit::File("w.safetensors".into())),
            ..Choices::default()
        };
        let r = Recipe::from_survey(s, &choices).unwrap();
        assert_eq!((r.train.batch, r.train.epochs), (12, 90));
    }

    #[test]
    fn k_follows_the_class_count() {
        assert_eq!(k_for_classes(2), 1);
        assert_eq!(k_for_classes(3), 2);
        assert_eq!(k_for_classes(10), 3);
        assert_eq!(k_for_classes(40), 10);
        assert_eq!(k_for_classes(200), 15);
    }

    #[test]
    fn caller_choices_are_validated() {
        let s = survey_of(DatasetKind::ImageFolder, 28, true, 10);
        let e = Recipe::from_survey(
            s.clone(),
            &Choices {
                input_size: Some(0),
                ..Choices::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("input size"), "{e}");
        let e = Recipe::from_survey(
            s,
            &Choices {
                model: Some("resnet9000".into()),
                ..Choices::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("resnet9000"), "{e}");
    }
}
