//! IDX files (the MNIST / Fashion-MNIST format), raw or gzipped, and the datasets built on them.
//!
//! Format: a big-endian `u32` magic `0x0000_08NN` (`08` = unsigned bytes, `NN` = number of
//! dimensions), then `NN` big-endian `u32` sizes, then the data, row-major. Images are
//! `0x00000803` (count, rows, cols), labels `0x00000801` (count). A file starting with the
//! gzip magic `1f 8b` is decompressed on the fly, whatever its name.
//!
//! Every error names the file and says what was wrong; nothing here panics on a bad file.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

use super::preprocess::{ImageU8, Preprocessing};
use super::{DataOptions, Dataset, DatasetInfo, DatasetKind, Split};
use crate::{Error, Result};

/// Magic number of an IDX file of unsigned-byte images `(count, rows, cols)`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels `(count)`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The class names of Fashion-MNIST, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Pixel mean of the MNIST training set, used for IDX folders that are not Fashion-MNIST.
pub const MNIST_MEAN: f32 = 0.1307;
/// Pixel standard deviation of the MNIST training set.
pub const MNIST_STD: f32 = 0.3081;

/// Where Debian's package `dataset-fashion-mnist` installs the full set.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The subset shipped with the crate (first 10,000 train / 2,000 test images).
pub const FASHION_MNIST_SUBSET_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist-subset");

/// A block of `count` grayscale images of `rows x cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i` (`rows * cols` bytes). Panics when `i >= count`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let head = std::io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(file);
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Reads exactly `buf.len()` bytes; returns how many were read before the end of the stream.
fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::format(
                    path,
                    format!("cannot read IDX data (corrupt or truncated gzip stream?): {e}"),
                ))
            }
        }
    }
    Ok(got)
}

/// Reads an IDX header with the given magic and returns its dimensions and the data.
fn read_idx(path: &Path, magic: u32, what: &str) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut r = open_maybe_gz(path)?;
    let ndim = (magic & 0xff) as usize;
    let mut head = vec![0u8; 4 + 4 * ndim];
    let got = read_full(&mut *r, &mut head, path)?;
    if got < 4 {
        return Err(Error::format(
            path,
            format!("not an IDX {what} file: only {got} bytes, too short for the 4-byte magic"),
        ));
    }
    let found = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if found != magic {
        return Err(Error::format(
            path,
            format!(
                "bad magic {found:#010x}: expected {magic:#010x} for an IDX {what} file \
                 (unsigned bytes, {ndim} dimension(s))"
            ),
        ));
    }
    if got < head.len() {
        return Err(Error::format(
            path,
            format!(
                "truncated header: {got} bytes, an IDX {what} header has {}",
                head.len()
            ),
        ));
    }
    let dims: Vec<usize> = head[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    // Read at most one byte more than announced: memory is bounded by what the file holds.
    let mut data = Vec::new();
    r.by_ref()
        .take(expected as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| {
            Error::format(
                path,
                format!("cannot read IDX data (corrupt or truncated gzip stream?): {e}"),
            )
        })?;
    if data.len() < expected {
        return Err(Error::format(
            path,
            format!(
                "truncated: the header announces dimensions {dims:?} ({expected} bytes of data) \
                 but only {} bytes follow",
                data.len()
            ),
        ));
    }
    if data.len() > expected {
        return Err(Error::format(
            path,
            format!(
                "more data than the header's dimensions {dims:?} announce ({expected} bytes): \
                 wrong header or two files joined"
            ),
        ));
    }
    Ok((dims, data))
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzipped.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let (dims, pixels) = read_idx(path, IDX_IMAGES_MAGIC, "images")?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::format(
            path,
            format!(
                "images of size {}x{}: rows and cols must be > 0",
                dims[1], dims[2]
            ),
        ));
    }
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzipped.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_idx(path, IDX_LABELS_MAGIC, "labels")?.1)
}

/// Reads an image file and its label file and checks that their counts agree.
pub fn read_idx_pair(images: &Path, labels: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let im = read_idx_images(images)?;
    let lb = read_idx_labels(labels)?;
    if im.count != lb.len() {
        return Err(Error::format(
            labels,
            format!(
                "count mismatch: {} labels here but {} images in {}",
                lb.len(),
                im.count,
                images.display()
            ),
        ));
    }
    Ok((im, lb))
}

fn write_idx(path: &Path, magic: u32, dims: &[usize], data: &[u8]) -> Result<()> {
    let mut head = magic.to_be_bytes().to_vec();
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::invalid("IDX dimension", format!("{d} does not fit in a u32")))?;
        head.extend_from_slice(&d.to_be_bytes());
    }
    crate::fsio::write_atomic_with(path, |file| {
        if path.extension().is_some_and(|e| e == "gz") {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
            gz.write_all(&head)?;
            gz.write_all(data)?;
            gz.finish()?.flush()
        } else {
            file.write_all(&head)?;
            file.write_all(data)?;
            file.flush()
        }
    })
}

/// Writes an IDX image file; gzipped when `path` ends in `.gz`.
pub fn write_idx_images(path: &Path, images: &IdxImages) -> Result<()> {
    if images.pixels.len() != images.count * images.rows * images.cols {
        return Err(Error::invalid(
            "IDX images",
            format!(
                "{} pixel bytes for {} images of {}x{}",
                images.pixels.len(),
                images.count,
                images.rows,
                images.cols
            ),
        ));
    }
    write_idx(
        path,
        IDX_IMAGES_MAGIC,
        &[images.count, images.rows, images.cols],
        &images.pixels,
    )
}

/// Writes an IDX label file; gzipped when `path` ends in `.gz`.
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_idx(path, IDX_LABELS_MAGIC, &[labels.len()], labels)
}

/// The file of `split`'s images or labels in an IDX folder, if one exists: `{train,t10k}-
/// {images-idx3,labels-idx1}-ubyte`, optionally with `.gz`, and also the `.idx3-ubyte`
/// spelling some mirrors use.
pub fn idx_file(dir: &Path, split: Split, labels: bool) -> Option<PathBuf> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let (kind, n) = if labels { ("labels", 1) } else { ("images", 3) };
    for sep in ['-', '.'] {
        for gz in [".gz", ""] {
            let p = dir.join(format!("{prefix}-{kind}{sep}idx{n}-ubyte{gz}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Whether `dir` looks like an IDX folder (has a train or t10k image file).
pub fn is_idx_dir(dir: &Path) -> bool {
    idx_file(dir, Split::Train, false).is_some() || idx_file(dir, Split::Test, false).is_some()
}

const IDX_LAYOUT: &str = "expected an IDX folder with train-images-idx3-ubyte[.gz], \
    train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]";

/// One split of an IDX folder (MNIST, Fashion-MNIST or anything in their format).
///
/// Class names: from `classes.txt` in the folder (one name per line, by label) when present;
/// otherwise Fashion-MNIST's names when the folder's path contains `fashion` (any case) or
/// the kind is given as [`DatasetKind::FashionMnist`]; otherwise the label numbers up to the
/// largest label of either split. Default normalisation: Fashion-MNIST's mean/std for
/// Fashion-MNIST, MNIST's otherwise.
pub struct IdxDataset {
    info: DatasetInfo,
    images: IdxImages,
    labels: Vec<u8>,
    augment: Preprocessing,
    images_path: PathBuf,
}

impl IdxDataset {
    /// Opens `split` of the IDX folder `dir` with the given options.
    pub fn open(dir: &Path, split: Split, opts: &DataOptions) -> Result<Self> {
        let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
        let kind = if fashion {
            DatasetKind::FashionMnist
        } else {
            DatasetKind::Idx
        };
        Self::open_as(dir, split, opts, kind)
    }

    /// Like [`IdxDataset::open`] with the kind given rather than guessed from the path:
    /// [`DatasetKind::FashionMnist`] (Fashion-MNIST's class names and defaults whatever the
    /// folder is called) or [`DatasetKind::Idx`].
    pub fn open_as(
        dir: &Path,
        split: Split,
        opts: &DataOptions,
        kind: DatasetKind,
    ) -> Result<Self> {
        if !matches!(kind, DatasetKind::Idx | DatasetKind::FashionMnist) {
            return Err(Error::invalid(
                "dataset kind",
                format!("{kind:?} is not an IDX kind (Idx or FashionMnist)"),
            ));
        }
        let fashion = kind == DatasetKind::FashionMnist;
        if !dir.is_dir() {
            return Err(Error::format(dir, format!("not a folder; {IDX_LAYOUT}")));
        }
        let missing = |what: &str| {
            Error::format(
                dir,
                format!("no {split:?} {what} file (a {} file); {IDX_LAYOUT}", {
                    let prefix = if split == Split::Train {
                        "train"
                    } else {
                        "t10k"
                    };
                    if what == "images" {
                        format!("{prefix}-images-idx3-ubyte[.gz]")
                    } else {
                        format!("{prefix}-labels-idx1-ubyte[.gz]")
                    }
                }),
            )
        };
        let images_path = idx_file(dir, split, false).ok_or_else(|| missing("images"))?;
        let labels_path = idx_file(dir, split, true).ok_or_else(|| missing("labels"))?;
        let (images, labels) = read_idx_pair(&images_path, &labels_path)?;
        let max_label = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let classes_txt = dir.join("classes.txt");
        let class_names: Vec<String> = if classes_txt.is_file() {
            let text =
                std::fs::read_to_string(&classes_txt).map_err(|e| Error::io(&classes_txt, e))?;
            let named: Vec<(String, usize)> = text
                .lines()
                .enumerate()
                .map(|(i, l)| (l.trim().to_string(), i + 1))
                .filter(|(l, _)| !l.is_empty())
                .collect();
            super::check_unique_class_names(&classes_txt, &named)?;
            named.into_iter().map(|(l, _)| l).collect()
        } else if fashion {
            FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            // Numbers; the class count covers both splits so that train and test agree.
            let other = if split == Split::Train {
                Split::Test
            } else {
                Split::Train
            };
            let mut n = max_label;
            if let Some(p) = idx_file(dir, other, true) {
                let o = read_idx_labels(&p)?;
                n = n.max(o.iter().copied().max().map_or(0, |m| m as usize + 1));
            }
            (0..n.max(1)).map(|i| i.to_string()).collect()
        };
        if max_label > class_names.len() {
            return Err(Error::format(
                &labels_path,
                format!(
                    "label {} out of range: the dataset has {} classes{}",
                    max_label - 1,
                    class_names.len(),
                    if classes_txt.is_file() {
                        format!(" (from {})", classes_txt.display())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        let augment = opts.preprocessing(kind, images.rows, images.cols)?;
        let info = DatasetInfo {
            num_classes: class_names.len(),
            class_names,
            channels: augment.channels,
            height: augment.height,
            width: augment.width,
        };
        Ok(IdxDataset {
            info,
            images,
            labels,
            augment,
            images_path,
        })
    }

    /// The raw images.
    pub fn images(&self) -> &IdxImages {
        &self.images
    }

    /// The raw labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The preprocessing applied by [`Dataset::load`].
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.augment
    }
}

impl Dataset for IdxDataset {
    fn info(&self) -> &DatasetInfo {
        &self.info
    }
    fn len(&self) -> usize {
        self.images.count
    }
    fn label(&self, i: usize) -> u32 {
        self.labels[i] as u32
    }
    fn load(&self, i: usize, train: bool, rng: &mut StdRng, out: &mut [f32]) -> Result<()> {
        if i >= self.images.count {
            return Err(Error::invalid(
                "sample index",
                format!(
                    "{i} >= {} images in {}",
                    self.images.count,
                    self.images_path.display()
                ),
            ));
        }
        let src = ImageU8 {
            data: self.images.image(i),
            width: self.images.cols,
            height: self.images.rows,
            channels: 1,
        };
        self.augment.apply(&src, train, rng, out)
    }
    fn describe(&self, i: usize) -> String {
        format!("{}[{i}]", self.images_path.display())
    }
}

/// Both splits of Fashion-MNIST (an IDX folder opened as [`DatasetKind::FashionMnist`]).
pub struct FashionMnist {
    pub dir: PathBuf,
    pub train: IdxDataset,
    pub test: IdxDataset,
}

impl FashionMnist {
    /// Opens the IDX folder `dir` as Fashion-MNIST with default options (28x28, 1 channel,
    /// Fashion-MNIST's class names and normalisation, whatever the folder is called).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &DataOptions::default())
    }

    /// Opens the IDX folder `dir` with the given options.
    pub fn open_with(dir: &Path, opts: &DataOptions) -> Result<Self> {
        Ok(FashionMnist {
            dir: dir.to_path_buf(),
            train: IdxDataset::open_as(dir, Split::Train, opts, DatasetKind::FashionMnist)?,
            test: IdxDataset::open_as(dir, Split::Test, opts, DatasetKind::FashionMnist)?,
        })
    }
}

/// Number of training images in the full Fashion-MNIST set.
pub const FASHION_MNIST_FULL_TRAIN: usize = 60_000;

fn idx_train_count(dir: &Path) -> Result<usize> {
    let path = idx_file(dir, Split::Train, false)
        .ok_or_else(|| Error::format(dir, format!("no training images; {IDX_LAYOUT}")))?;
    let mut r = open_maybe_gz(&path)?;
    let mut head = [0u8; 8];
    if read_full(&mut *r, &mut head, &path)? < 8 {
        return Err(Error::format(&path, "truncated IDX header"));
    }
    Ok(u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize)
}

/// Chooses the Fashion-MNIST folder to train on and says whether it is the full set
/// (60,000 training images, read from the file header).
///
/// - `data: Some(path)`: that folder (the train example's `--data PATH`), whatever it holds;
/// - else `subset: true`: the subset shipped in [`FASHION_MNIST_SUBSET_DIR`] (`--subset`);
/// - else the full set at [`FASHION_MNIST_SYSTEM_DIR`] when its four files are present
///   (Debian's `dataset-fashion-mnist`), otherwise the shipped subset.
///
/// The choice is logged with `log::info!`.
pub fn resolve_fashion_mnist(data: Option<&Path>, subset: bool) -> Result<(PathBuf, bool)> {
    let complete = |d: &Path| {
        [Split::Train, Split::Test]
            .iter()
            .all(|&s| idx_file(d, s, false).is_some() && idx_file(d, s, true).is_some())
    };
    let (dir, why) = if let Some(d) = data {
        if !complete(d) {
            return Err(Error::format(
                d,
                format!("not a complete IDX folder; {IDX_LAYOUT}"),
            ));
        }
        (d.to_path_buf(), "given by the caller")
    } else {
        let system = Path::new(FASHION_MNIST_SYSTEM_DIR);
        let shipped = Path::new(FASHION_MNIST_SUBSET_DIR);
        if !subset && complete(system) {
            (
                system.to_path_buf(),
                "full set installed by Debian's dataset-fashion-mnist",
            )
        } else if complete(shipped) {
            (
                shipped.to_path_buf(),
                if subset {
                    "shipped subset, as asked"
                } else {
                    "shipped subset; the full set (Debian's package dataset-fashion-mnist) is not installed"
                },
            )
        } else {
            return Err(Error::format(
                shipped,
                format!(
                    "Fashion-MNIST not found: neither {FASHION_MNIST_SYSTEM_DIR} (Debian's \
                     dataset-fashion-mnist) nor the shipped subset is complete; {IDX_LAYOUT}"
                ),
            ));
        }
    };
    let full = idx_train_count(&dir)? >= FASHION_MNIST_FULL_TRAIN;
    log::info!(
        "Fashion-MNIST: {} ({why}; {})",
        dir.display(),
        if full { "full set" } else { "subset" }
    );
    Ok((dir, full))
}

/// [`resolve_fashion_mnist`]`(None, false)`: the full set when installed, else the shipped
/// subset.
pub fn fashion_mnist_default() -> Result<(PathBuf, bool)> {
    resolve_fashion_mnist(None, false)
}
