//! The CUB-200-2011 layout (also used by other fine-grained sets).
//!
//! ```text
//! root/images.txt              "<image id> <relative path under images/>"
//! root/image_class_labels.txt  "<image id> <class id, 1-based>"
//! root/train_test_split.txt    "<image id> <1 = train, 0 = test>"
//! root/classes.txt             "<class id> <class name>"
//! root/images/<relative path>
//! ```
//!
//! Image ids may come in any order; samples are ordered by image id. Labels are the 1-based
//! class ids minus one. Every image id must appear in the label and split files; class ids
//! must be in `1..=number of classes`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;

use super::folder::load_image_file;
use super::preprocess::Preprocessing;
use super::{DataOptions, Dataset, DatasetInfo, DatasetKind, Split};
use crate::{Error, Result};

const CUB_LAYOUT: &str = "expected the CUB-200-2011 layout: root/images.txt (\"<id> <path>\"), \
    root/image_class_labels.txt (\"<id> <class id from 1>\"), root/train_test_split.txt \
    (\"<id> <1 train | 0 test>\"), root/classes.txt (\"<class id> <name>\") and the images under \
    root/images/";

/// Whether `dir` has the CUB index file `images.txt`.
pub fn is_cub_dir(dir: &Path) -> bool {
    // Any of the index files only this layout has (not classes.txt, which IDX folders
    // use too): a root missing one of the others is then an error naming that file, not
    // a class-folder tree whose one class is `images`.
    [
        "images.txt",
        "image_class_labels.txt",
        "train_test_split.txt",
    ]
    .iter()
    .any(|f| dir.join(f).is_file())
}

/// Reads "<id> <rest>" lines (blank lines skipped); errors name the file and line.
fn read_pairs(path: &Path) -> Result<Vec<(u64, String, usize)>> {
    if !path.is_file() {
        return Err(Error::format(
            path,
            format!("missing index file; {CUB_LAYOUT}"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let malformed = || {
            Error::format(
                path,
                format!(
                    "line {}: malformed `{line}`: expected \"<id> <value>\"; {CUB_LAYOUT}",
                    n + 1
                ),
            )
        };
        let (id, rest) = line.split_once(char::is_whitespace).ok_or_else(malformed)?;
        let id: u64 = id.parse().map_err(|_| malformed())?;
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(malformed());
        }
        out.push((id, rest.to_string(), n + 1));
    }
    if out.is_empty() {
        return Err(Error::format(
            path,
            format!("empty index file; {CUB_LAYOUT}"),
        ));
    }
    Ok(out)
}

fn to_map(path: &Path, pairs: Vec<(u64, String, usize)>) -> Result<HashMap<u64, (String, usize)>> {
    let mut m = HashMap::with_capacity(pairs.len());
    for (id, v, line) in pairs {
        if m.insert(id, (v, line)).is_some() {
            return Err(Error::format(
                path,
                format!("line {line}: image id {id} appears twice"),
            ));
        }
    }
    Ok(m)
}

/// The path of `images.txt`'s line `line` relative to `root/images/`: relative and inside
/// that folder (no root, drive or `..`), so an index file cannot point anywhere else.
fn image_path<'a>(images_txt: &Path, line: usize, rel: &'a str) -> Result<&'a Path> {
    use std::path::Component;
    let p = Path::new(rel);
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside || p.file_name().is_none() {
        return Err(Error::format(
            images_txt,
            format!(
                "line {line}: image path `{rel}` is not a file path inside images/ (relative, \
                 without `..`); {CUB_LAYOUT}"
            ),
        ));
    }
    Ok(p)
}

/// One split of a CUB-200-2011-style dataset.
pub struct Cub {
    info: DatasetInfo,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    augment: Preprocessing,
}

impl Cub {
    /// Opens `split` of the CUB tree at `root`.
    pub fn open(root: &Path, split: Split, opts: &DataOptions) -> Result<Self> {
        let images_txt = root.join("images.txt");
        let labels_txt = root.join("image_class_labels.txt");
        let split_txt = root.join("train_test_split.txt");
        let classes_txt = root.join("classes.txt");
        let images = read_pairs(&images_txt)?;
        let labels = to_map(&labels_txt, read_pairs(&labels_txt)?)?;
        let splits = to_map(&split_txt, read_pairs(&split_txt)?)?;
        let mut classes = read_pairs(&classes_txt)?;
        classes.sort_by_key(|c| c.0);
        for (k, (id, _, line)) in classes.iter().enumerate() {
            if *id != k as u64 + 1 {
                return Err(Error::format(
                    &classes_txt,
                    format!(
                        "line {line}: class id {id}, expected {} (ids must be 1..=N without gaps)",
                        k + 1
                    ),
                ));
            }
        }
        let named: Vec<(String, usize)> = classes.into_iter().map(|c| (c.1, c.2)).collect();
        super::check_unique_class_names(&classes_txt, &named)?;
        let class_names: Vec<String> = named.into_iter().map(|c| c.0).collect();
        let mut images = images;
        images.sort_by_key(|p| p.0);
        let mut files = Vec::new();
        let mut ys = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (id, rel, line) in images {
            if !seen.insert(id) {
                return Err(Error::format(
                    &images_txt,
                    format!("line {line}: image id {id} appears twice"),
                ));
            }
            let (lab, lline) = labels.get(&id).ok_or_else(|| {
                Error::format(
                    &labels_txt,
                    format!(
                        "no label for image id {id} (listed in {})",
                        images_txt.display()
                    ),
                )
            })?;
            let lab: usize = lab
                .parse()
                .ok()
                .filter(|&l| l >= 1 && l <= class_names.len())
                .ok_or_else(|| {
                    Error::format(
                        &labels_txt,
                        format!(
                            "line {lline}: class id `{lab}` of image {id} is not in 1..={} (classes in {})",
                            class_names.len(),
                            classes_txt.display()
                        ),
                    )
                })?;
            let (is_train, sline) = splits.get(&id).ok_or_else(|| {
                Error::format(
                    &split_txt,
                    format!(
                        "no split for image id {id} (listed in {})",
                        images_txt.display()
                    ),
                )
            })?;
            let is_train = match is_train.as_str() {
                "1" => true,
                "0" => false,
                v => {
                    return Err(Error::format(
                        &split_txt,
                        format!(
                            "line {sline}: `{v}` for image {id}, expected 1 (train) or 0 (test)"
                        ),
                    ))
                }
            };
            if is_train == (split == Split::Train) {
                files.push(
                    root.join("images")
                        .join(image_path(&images_txt, line, &rel)?),
                );
                ys.push(lab as u32 - 1);
            }
        }
        if files.is_empty() {
            return Err(Error::format(
                &split_txt,
                format!("the {split:?} split has no images; {CUB_LAYOUT}"),
            ));
        }
        if !files[0].is_file() {
            return Err(Error::format(
                &files[0],
                format!(
                    "image listed in {} not found; {CUB_LAYOUT}",
                    images_txt.display()
                ),
            ));
        }
        let augment = opts.preprocessing(DatasetKind::Cub, 0, 0)?;
        Ok(Cub {
            info: DatasetInfo {
                num_classes: class_names.len(),
                class_names,
                channels: augment.channels,
                height: augment.height,
                width: augment.width,
            },
            files,
            labels: ys,
            augment,
        })
    }

    /// The image files of this split, in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Dataset for Cub {
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
