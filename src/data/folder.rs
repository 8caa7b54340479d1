//! Class-per-folder image trees and the image decoding shared with CUB.
//!
//! Layout: `root/<class>/<image files>`, classes sorted by folder name (byte order), label =
//! position in that order. When `root/train/` and `root/test/` both exist they are the split
//! (classes taken from `train/`; every `test/` class must also be in `train/`). Otherwise each
//! class's files are split deterministically: ordered by a hash of (split seed, relative
//! path) and the first `round(test_fraction * n)` are the test set (at least one image is kept
//! for training; a class of one or two images holds none out, so a tree of such classes has an
//! empty test split). Image files are those ending in `.jpg`, `.jpeg` or `.png` (any case);
//! hidden files and anything else are ignored; files are sorted by path. Symbolic links are
//! followed. Entries that cannot be used (a symbolic link loop, a folder that cannot be read, a
//! broken link where a class folder or an image file would be) are skipped with a warning
//! naming them ([`ImageFolder::skipped`]), or refused with [`DataOptions::strict`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::rngs::StdRng;

use super::preprocess::{ImageU8, Preprocessing};
use super::{DataOptions, Dataset, DatasetInfo, DatasetKind, Split};
use crate::{Error, Result};

/// Largest width or height [`read_image`] decodes (pixels): far above any photograph a
/// fine-grained dataset holds, and below the sizes at which decoders' own size arithmetic
/// overflows (a JPEG's is 65,535).
pub const MAX_DECODE_SIDE: u32 = 16_384;

/// Most memory [`read_image`] lets a decoder allocate for one image (bytes): an image whose
/// header announces more (a 9,000 x 9,000 RGB photograph is about 243 MiB) is refused before
/// anything is decoded, so a small damaged file cannot claim gigabytes.
pub const MAX_DECODE_BYTES: u64 = 256 << 20;

/// The decoder limits of [`read_image`]: [`MAX_DECODE_SIDE`] and [`MAX_DECODE_BYTES`].
fn decode_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_DECODE_SIDE);
    l.max_image_height = Some(MAX_DECODE_SIDE);
    l.max_alloc = Some(MAX_DECODE_BYTES);
    l
}

/// Decodes a JPEG or PNG file (format found from its contents) to 8-bit HWC with `channels`
/// channels (1: luminance, 3: RGB). Grayscale is replicated, alpha dropped, 16-bit scaled to
/// 8-bit. Returns (pixels, width, height). Images wider or taller than [`MAX_DECODE_SIDE`],
/// or needing more than [`MAX_DECODE_BYTES`] to decode, are an error naming the file and
/// the size its header announces, before any pixel is decoded.
pub fn read_image(path: &Path, channels: usize) -> Result<(Vec<u8>, usize, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_image(path, &bytes, channels)
}

/// [`read_image`] for an image already in memory (a file a web page was given); `path`
/// names it in errors.
pub fn decode_image(path: &Path, bytes: &[u8], channels: usize) -> Result<(Vec<u8>, usize, usize)> {
    if bytes.is_empty() {
        return Err(Error::format(path, "empty file (0 bytes), not an image"));
    }
    let guess = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::format(path, format!("cannot read image: {e}")))
    };
    let probe = guess()?;
    if probe.format().is_none() {
        return Err(Error::format(
            path,
            "not a JPEG or PNG file (unrecognised contents)",
        ));
    }
    // The header's size first, so an oversized image is named with its size.
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))?;
    if w > MAX_DECODE_SIDE || h > MAX_DECODE_SIDE {
        return Err(Error::format(
            path,
            format!(
                "image of {w}x{h} pixels: larger than the {MAX_DECODE_SIDE}-pixel limit on a \
                 side (finegrain::data::MAX_DECODE_SIDE)"
            ),
        ));
    }
    let mut reader = guess()?;
    reader.limits(decode_limits());
    // A decoder that panics on a hostile file (a bug of the decoder's) costs that file,
    // not the run: the panic becomes an error naming it.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()))
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Error::format(
                path,
                format!("the image decoder failed (it panicked: {why})"),
            )
        })?;
    let img = decoded.map_err(|e| match e {
        image::ImageError::Limits(e) => Error::format(
            path,
            format!(
                "image of {w}x{h} pixels needs more memory to decode than the {} MiB limit \
                 (finegrain::data::MAX_DECODE_BYTES): {e}",
                MAX_DECODE_BYTES >> 20
            ),
        ),
        e => Error::format(path, format!("cannot decode image: {e}")),
    })?;
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
    augment: &Preprocessing,
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

/// A folder entry that cannot be used, and why.
pub type Unusable = (PathBuf, String);

/// What [`walk`] found: (path, is a folder) of each entry, and the entries it cannot use.
type Walked = (Vec<(PathBuf, bool)>, Vec<Unusable>);

/// The entries below `dir` down to `max_depth` levels (1: its children only), not `dir`
/// itself, skipping hidden files and never entering hidden folders; symbolic links are
/// followed. Returns (path, is a folder), unsorted, and the entries that cannot be used: a
/// link loop, a folder that cannot be read, a broken link (kept when `wanted(path)` says a
/// broken link of that name would have been used, else ignored like any other unused file).
/// An error only when `dir` itself cannot be read.
fn walk(dir: &Path, max_depth: usize, wanted: impl Fn(&Path) -> bool) -> Result<Walked> {
    let (mut out, mut unusable) = (Vec::new(), Vec::new());
    let mut walker = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .max_depth(max_depth)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| !hidden(e.path()));
    while let Some(entry) = walker.next() {
        let err = match entry {
            Ok(e) => {
                let is_dir = e.file_type().is_dir();
                if is_dir && e.path_is_symlink() {
                    if let Some(target) = link_to_a_container(e.path()) {
                        // The walk would only see the loop where it re-enters one of its
                        // own folders, taking in what lies between (another class's
                        // images) first.
                        unusable.push((
                            e.path().to_path_buf(),
                            format!(
                                "symbolic link loop: it leads back to {}, a folder that \
                                 contains it",
                                target.display()
                            ),
                        ));
                        walker.skip_current_dir();
                        continue;
                    }
                }
                out.push((e.path().to_path_buf(), is_dir));
                continue;
            }
            Err(err) => err,
        };
        let path = err.path().unwrap_or(dir).to_path_buf();
        if path != dir && hidden(&path) {
            // Hidden entries are ignored, whatever they are.
            continue;
        }
        if let Some(ancestor) = err.loop_ancestor() {
            unusable.push((
                path,
                format!(
                    "symbolic link loop: it leads back to {}, a folder that contains it",
                    ancestor.display()
                ),
            ));
            continue;
        }
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if let (true, Err(e)) = (is_link, std::fs::metadata(&path)) {
            if wanted(&path) {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "its target".into());
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("broken symbolic link: {target} does not exist")
                } else {
                    format!("symbolic link to {target} that cannot be followed: {e}")
                };
                unusable.push((path, why));
            }
            continue;
        }
        let msg = err.to_string();
        let io = err
            .into_io_error()
            .unwrap_or_else(|| std::io::Error::other(msg));
        if path == dir {
            return Err(Error::io(path, io));
        }
        unusable.push((path, format!("cannot be read: {io}")));
    }
    Ok((out, unusable))
}

/// Where the symbolic link `link` to a folder leads, when that folder contains the link
/// (after every link on both ways is resolved): following it would go round for ever.
fn link_to_a_container(link: &Path) -> Option<PathBuf> {
    let target = std::fs::canonicalize(link).ok()?;
    let parent = std::fs::canonicalize(link.parent()?).ok()?;
    parent.starts_with(&target).then_some(target)
}

/// The class folders directly inside `dir` (not hidden), sorted by name, and the entries
/// there that cannot be used (a class folder that cannot be read is one).
fn class_dirs(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Unusable>)> {
    let (entries, mut unusable) = walk(dir, 1, |_| true)?;
    let mut v = Vec::new();
    for (p, is_dir) in entries {
        if !is_dir {
            continue;
        }
        match std::fs::read_dir(&p) {
            Ok(_) => v.push(p),
            Err(e) => unusable.push((p, format!("class folder cannot be read: {e}"))),
        }
    }
    v.sort();
    Ok((v, unusable))
}

/// Image files below `dir` (recursively, hidden entries skipped), sorted by path, and the
/// entries below it that cannot be used.
fn images_below(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Unusable>)> {
    let (entries, unusable) = walk(dir, usize::MAX, is_image)?;
    let mut out: Vec<PathBuf> = entries
        .into_iter()
        .filter_map(|(p, is_dir)| (!is_dir && is_image(&p)).then_some(p))
        .collect();
    out.sort();
    Ok((out, unusable))
}

/// Logs a warning naming each unusable entry, once per entry in this process (a tree is
/// walked again for each split it is opened for).
fn warn_unusable(unusable: &[Unusable]) {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    for (path, why) in unusable {
        if warned.insert(path.clone()) {
            log::warn!("skipping {}: {why}", path.display());
        }
    }
}

/// The image files named by `paths`, for inference over files and folders: a file is taken
/// as given (its contents decide whether it decodes); a folder contributes its PNG and JPEG
/// files (`.png`, `.jpg`, `.jpeg`, any case) found recursively, hidden files and folders
/// skipped, sorted by path. Inputs keep their order. A path that does not exist is an error
/// naming it; finding no image at all is an error naming the inputs.
pub fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let (found, unusable) = images_below(p)?;
            warn_unusable(&unusable);
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such image file or folder"),
            ));
        }
    }
    if out.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::invalid(
            "image paths",
            if names.is_empty() {
                "none given: name image files or folders holding PNG or JPEG files".to_string()
            } else {
                format!(
                    "no PNG or JPEG files (.png, .jpg, .jpeg) found in {}",
                    names.join(", ")
                )
            },
        ));
    }
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
    augment: Preprocessing,
    root: PathBuf,
    skipped: Vec<Unusable>,
}

impl ImageFolder {
    /// Opens `split` of the tree at `root` (layout in the module docs).
    pub fn open(root: &Path, split: Split, opts: &DataOptions) -> Result<Self> {
        opts.validate()?;
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
        let mut skipped = Vec::new();
        let mut keep = |(v, unusable): (Vec<PathBuf>, Vec<Unusable>)| {
            skipped.extend(unusable);
            v
        };
        let classes = keep(class_dirs(class_root)?);
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
                for d in keep(class_dirs(&test_dir)?) {
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
                    keep(images_below(&d)?)
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
            for (label, d) in classes.iter().enumerate() {
                let found = keep(images_below(d)?);
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
        // A held-out test split may be empty (every class too small to hold an image out):
        // a run then trains without evaluation. Anything else without images is an error.
        if files.is_empty() && (presplit || split == Split::Train) {
            return Err(Error::format(
                root,
                format!("the {split:?} split has no images; {FOLDER_LAYOUT}"),
            ));
        }
        if let (true, Some((path, why))) = (opts.strict, skipped.first()) {
            return Err(Error::format(
                path,
                format!(
                    "{why}; strict mode refuses an unusable folder entry (without it the \
                     entry is skipped with a warning)"
                ),
            ));
        }
        warn_unusable(&skipped);
        let augment = opts.preprocessing(DatasetKind::ImageFolder, 0, 0)?;
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
            skipped,
        })
    }

    /// The folder entries that could not be used and were skipped (each logged once as a
    /// warning): (path, why). Empty when opened with [`DataOptions::strict`], which refuses
    /// them.
    pub fn skipped(&self) -> &[Unusable] {
        &self.skipped
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
