//! Class-per-folder image trees and the image decoding shared with CUB.
//!
//! Layout: `root/<class>/<image files>`, classes sorted by folder name (byte order), label =
//! position in that order. When `root/train/` and `root/test/` both exist they are the split
//! (classes taken from `train/`; every `test/` class must also be in `train/`). Otherwise each
//! class's files are split deterministically: ordered by a hash of (split seed, relative
//! path) and the first `round(test_fraction * n)` are the test set (at least one image is kept
//! for training). Image files are those ending in `.jpg`, `.jpeg` or `.png` (any case); hidden
//! files and anything else are ignored; files are sorted by path.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

use super::augment::{Augment, ImageU8};
use super::{DataOptions, Dataset, DatasetInfo, DatasetKind, Split};
use crate::{Error, Result};

/// Decodes a JPEG or PNG file (format found from its contents) to 8-bit HWC with `channels`
/// channels (1: luminance, 3: RGB). Grayscale is replicated, alpha dropped, 16-bit scaled to
/// 8-bit. Returns (pixels, width, height).
pub fn read_image(path: &Path, channels: usize) -> Result<(Vec<u8>, usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::format(path, "empty file (0 bytes), not an image"));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::format(path, format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::format(
            path,
            "not a JPEG or PNG file (unrecognised contents)",
        ));
    }
    let img = reader
        .decode()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::format(path, format!("image has size {w}x{h}")));
    }
    let data = match channels {
        1 => img.into_luma8().into_raw(),
        3 => img.into_rgb8().into_raw(),
        c => return Err(Error::invalid("channels", format!("{c}: must be 1 or 3"))),
    };
    Ok((data, w, h))
}

/// Decodes `path` and runs `augment` on it into `out`.
pub(crate) fn load_image_file(
    path: &Path,
    augment: &Augment,
    train: bool,
    rng: &mut StdRng,
    out: &mut [f32],
) -> Result<()> {
    let (data, width, height) = read_image(path, augment.channels)?;
    let src = ImageU8 {
        data: &data,
        width,
        height,
        channels: augment.channels,
    };
    augment
        .apply(&src, train, rng, out)
        .map_err(|e| Error::format(path, e.to_string()))
}

const FOLDER_LAYOUT: &str = "expected root/<class>/<image files> (.jpg, .jpeg, .png), \
    optionally split as root/train/<class>/... and root/test/<class>/...";

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        if !hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn class_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect())
}

/// Image files below `dir` (recursively), sorted by path.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for p in read_dir_sorted(&d)? {
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// 64-bit FNV-1a, then a SplitMix64 finaliser: a stable hash for the split.
fn stable_hash(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    super::splitmix64(h)
}

/// One split of a class-per-folder image tree.
pub struct ImageFolder {
    info: DatasetInfo,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    augment: Augment,
    root: PathBuf,
}

impl ImageFolder {
    /// Opens `split` of the tree at `root` (layout in the module docs).
    pub fn open(root: &Path, split: Split, opts: &DataOptions) -> Result<Self> {
        if !root.is_dir() {
            if !root.exists() {
                return Err(Error::io(
                    root,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
                ));
            }
            return Err(Error::format(
                root,
                format!("not a folder; {FOLDER_LAYOUT}"),
            ));
        }
        let (train_dir, test_dir) = (root.join("train"), root.join("test"));
        let presplit = train_dir.is_dir() && test_dir.is_dir();
        let class_root = if presplit { &train_dir } else { root };
        let classes = class_dirs(class_root)?;
        if classes.is_empty() {
            return Err(Error::format(
                class_root,
                format!("no class folders found; {FOLDER_LAYOUT}"),
            ));
        }
        let class_names: Vec<String> = classes.iter().map(|p| name_of(p)).collect();
        let mut files = Vec::new();
        let mut labels = Vec::new();
        if presplit {
            let dir = if split == Split::Train {
                &train_dir
            } else {
                &test_dir
            };
            if split == Split::Test {
                for d in class_dirs(&test_dir)? {
                    if !class_names.contains(&name_of(&d)) {
                        return Err(Error::format(
                            &d,
                            format!(
                                "class folder `{}` is not in {}; the test classes must be a \
                                 subset of the train classes",
                                name_of(&d),
                                train_dir.display()
                            ),
                        ));
                    }
                }
            }
            for (label, name) in class_names.iter().enumerate() {
                let d = dir.join(name);
                let found = if d.is_dir() {
                    image_files(&d)?
                } else {
                    Vec::new()
                };
                if found.is_empty() && split == Split::Train {
                    return Err(Error::format(
                        &d,
                        format!("class folder has no image files; {FOLDER_LAYOUT}"),
                    ));
                }
                labels.extend(std::iter::repeat_n(label as u32, found.len()));
                files.extend(found);
            }
        } else {
            if !(0.0..1.0).contains(&opts.test_fraction) {
                return Err(Error::invalid(
                    "test_fraction",
                    format!("{}: must be in [0, 1)", opts.test_fraction),
                ));
            }
            for (label, d) in classes.iter().enumerate() {
                let found = image_files(d)?;
                if found.is_empty() {
                    return Err(Error::format(
                        d,
                        format!("class folder has no image files; {FOLDER_LAYOUT}"),
                    ));
                }
                let n = found.len();
                let n_test = ((opts.test_fraction * n as f64).round() as usize).min(n - 1);
                let mut keyed: Vec<(u64, PathBuf)> = found
                    .into_iter()
                    .map(|p| {
                        let rel = p
                            .strip_prefix(root)
                            .unwrap_or(&p)
                            .to_string_lossy()
                            .into_owned();
                        (stable_hash(opts.split_seed, &rel), p)
                    })
                    .collect();
                keyed.sort();
                let mut chosen: Vec<PathBuf> = match split {
                    Split::Test => keyed.into_iter().take(n_test).map(|(_, p)| p).collect(),
                    Split::Train => keyed.into_iter().skip(n_test).map(|(_, p)| p).collect(),
                };
                chosen.sort();
                labels.extend(std::iter::repeat_n(label as u32, chosen.len()));
                files.extend(chosen);
            }
        }
        if files.is_empty() {
            return Err(Error::format(
                root,
                format!("the {split:?} split has no images; {FOLDER_LAYOUT}"),
            ));
        }
        let augment = opts.augment(DatasetKind::ImageFolder, 0, 0)?;
        Ok(ImageFolder {
            info: DatasetInfo {
                num_classes: class_names.len(),
                class_names,
                channels: augment.channels,
                height: augment.height,
                width: augment.width,
            },
            files,
            labels,
            augment,
            root: root.to_path_buf(),
        })
    }

    /// The image files of this split, in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The tree's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Dataset for ImageFolder {
    fn info(&self) -> &DatasetInfo {
        &self.info
    }
    fn len(&self) -> usize {
        self.files.len()
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }
    fn load(&self, i: usize, train: bool, rng: &mut StdRng, out: &mut [f32]) -> Result<()> {
        load_image_file(&self.files[i], &self.augment, train, rng, out)
    }
    fn describe(&self, i: usize) -> String {
        self.files[i].display().to_string()
    }
}
