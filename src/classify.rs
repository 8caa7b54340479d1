//! Inference from a checkpoint: top-k classes with probabilities, and class maps for class
//! activation map (CAM) pictures.
//!
//! A [`Classifier`] is an inference-only network (no gradients or momentum; activations in
//! four buffers shared by liveness) with the checkpoint's weights, class names and
//! evaluation preprocessing, so images are prepared exactly as the test set was.
//!
//! ```no_run
//! use finegrain::classify::Classifier;
//! use finegrain::gpu::Gpu;
//! let gpu = Gpu::from_env()?;
//! let clf = Classifier::open(&gpu, "runs/run-1/last.safetensors".as_ref(), 32)?;
//! let files = finegrain::data::image_files(&["photos/".into()])?;
//! for (file, result) in files.iter().zip(clf.classify_paths(&gpu, &files, 5, 4)?) {
//!     match result {
//!         Ok(p) => println!("{}: {} {:.1}%", file.display(), p.top[0].name, 100.0 * p.top[0].probability),
//!         Err(e) => eprintln!("skipped {e}"),
//!     }
//! }
//! # Ok::<(), finegrain::Error>(())
//! ```

use crate::checkpoint::Checkpoint;
use crate::data::{
    decode_image, open_dataset, DataOptions, Dataset, ImageU8, Preprocessing, Split,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Precision;
use crate::inference::Predictor;
use crate::train::EvalReport;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One class of a prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassScore {
    /// Class index (the label).
    pub class: usize,
    /// Class name from the checkpoint.
    pub name: String,
    /// Softmax probability over all classes.
    pub probability: f64,
    /// The raw score (the class map's average).
    pub score: f32,
}

/// The top classes of one image, most probable first.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub top: Vec<ClassScore>,
}

/// One class's map for one image: `(height, width)` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMap {
    pub class: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// A checkpoint loaded for inference (see the module docs).
pub struct Classifier {
    predictor: Predictor,
    classes: Vec<String>,
    /// Whether the checkpoint recorded its class names (else `classes` are placeholders).
    named: bool,
    preprocessing: Preprocessing,
    /// The training run's seed: class folders without train/ and test/ are split with it.
    split_seed: u64,
    path: PathBuf,
}

impl Classifier {
    /// Open the checkpoint at `path` with an inference network of `batch` images per GPU
    /// pass (any number of images can be classified; they go through in batches).
    pub fn open(gpu: &Gpu, path: &Path, batch: usize) -> Result<Classifier> {
        Classifier::from_checkpoint(gpu, &Checkpoint::open(path)?, batch)
    }

    /// [`Classifier::open`] for a checkpoint already read.
    pub fn from_checkpoint(gpu: &Gpu, ck: &Checkpoint, batch: usize) -> Result<Classifier> {
        Classifier::from_checkpoint_with_precision(gpu, ck, batch, Precision::F32)
    }

    /// [`Classifier::from_checkpoint`] computing in `precision` (mixed: f16 activations
    /// and weight copies; [`Precision`]). [`Checkpoint::precision`] is the one it was
    /// trained in.
    pub fn from_checkpoint_with_precision(
        gpu: &Gpu,
        ck: &Checkpoint,
        batch: usize,
        precision: Precision,
    ) -> Result<Classifier> {
        if batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        let preprocessing = ck.preprocessing().clone();
        if preprocessing.height != preprocessing.width {
            return Err(Error::format(
                ck.path(),
                format!(
                    "records a {}x{} input; only square inputs are supported",
                    preprocessing.height, preprocessing.width
                ),
            ));
        }
        let predictor = Predictor::from_checkpoint_with_precision(gpu, ck, batch, precision)?;
        Ok(Classifier {
            predictor,
            classes: ck.class_names(),
            named: ck.has_class_names(),
            preprocessing,
            split_seed: ck.train_config().map(|c| c.seed).unwrap_or(0),
            path: ck.path().to_path_buf(),
        })
    }

    /// How to open a labelled dataset so that its images are prepared exactly as the
    /// checkpoint's test images were (and class folders without train/ and test/ are split
    /// as the training run split them).
    pub fn data_options(&self) -> DataOptions {
        let aug = &self.preprocessing;
        DataOptions {
            channels: Some(aug.channels),
            size: Some(aug.height),
            eval_resize: Some(aug.eval_resize),
            normalize: Some(aug.normalize.clone()),
            split_seed: self.split_seed,
            ..DataOptions::default()
        }
    }

    /// Open `split` of the labelled dataset at `path` with [`Classifier::data_options`],
    /// checking that its classes are the checkpoint's, in the same order (without recorded
    /// names only the count can be compared).
    pub fn open_data(&self, path: &Path, split: Split) -> Result<Arc<dyn Dataset>> {
        self.open_data_with(path, split, false)
    }

    /// [`Classifier::open_data`]; `strict` refuses a class-folder entry that cannot be used
    /// ([`DataOptions::strict`]) instead of skipping it with a warning. A split without
    /// images is an error naming the dataset.
    pub fn open_data_with(
        &self,
        path: &Path,
        split: Split,
        strict: bool,
    ) -> Result<Arc<dyn Dataset>> {
        let opts = DataOptions {
            strict,
            ..self.data_options()
        };
        let data: Arc<dyn Dataset> = Arc::from(open_dataset(path, split, &opts)?);
        if data.is_empty() {
            return Err(Error::format(
                path,
                format!(
                    "the {split:?} split has no images (a class folder of one or two images \
                     holds none out for testing)"
                ),
            ));
        }
        let (have, want) = (&data.info().class_names, &self.classes);
        if have.len() != want.len() {
            return Err(Error::format(
                path,
                format!(
                    "has {} classes; the checkpoint {} was trained on {}",
                    have.len(),
                    self.path.display(),
                    want.len()
                ),
            ));
        }
        if let Some(i) = (0..have.len()).find(|&i| self.named && have[i] != want[i]) {
            return Err(Error::format(
                path,
                format!(
                    "class {i} is `{}`, but in the checkpoint {} it is `{}` (same classes in \
                     the same order needed)",
                    have[i],
                    self.path.display(),
                    want[i]
                ),
            ));
        }
        Ok(data)
    }

    /// Evaluate on a labelled dataset (opened with [`Classifier::open_data`]): top-1,
    /// top-5, mean loss, confusion matrix, and the files skipped as unreadable (file,
    /// reason); `strict` makes the first unreadable file an error.
    pub fn evaluate(
        &self,
        gpu: &Gpu,
        data: Arc<dyn Dataset>,
        threads: usize,
        strict: bool,
    ) -> Result<(EvalReport, Vec<(String, String)>)> {
        crate::train::run::evaluate_with(
            data,
            self.batch(),
            self.classes.len(),
            threads,
            strict,
            |images, valid| self.predictor.scores(gpu, images, valid),
        )
    }

    /// Class names, by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The evaluation preprocessing every input goes through.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.preprocessing
    }

    /// Images per GPU pass.
    pub fn batch(&self) -> usize {
        self.predictor.net.batch
    }

    /// Class-map size (h, w).
    pub fn map_size(&self) -> (usize, usize) {
        self.predictor.net.map_size
    }

    /// f32 values of one prepared input (`H * W * C`).
    pub fn input_len(&self) -> usize {
        self.preprocessing.sample_len()
    }

    /// Decode an image file and preprocess it as the checkpoint's test images were. A
    /// decoder that panics on a malformed file gives an error naming the file.
    pub fn prepare(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.prepare_bytes(path, &bytes)
    }

    /// [`Classifier::prepare`] for an image file already in memory (one a web page was
    /// given); `path` names it in errors.
    pub fn prepare_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Vec<f32>> {
        let aug = &self.preprocessing;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (data, width, height) = decode_image(path, bytes, aug.channels)?;
            let src = ImageU8 {
                data: &data,
                width,
                height,
                channels: aug.channels,
            };
            let mut out = vec![0.0; aug.sample_len()];
            // Evaluation preprocessing draws nothing from the generator.
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            aug.apply(&src, false, &mut rng, &mut out)?;
            Ok(out)
        }))
        .unwrap_or_else(|_| {
            Err(Error::format(
                path,
                "the image decoder panicked on this file",
            ))
        })
    }

    /// [`Classifier::prepare`] for every file, on `threads` threads; results in file order.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prepare_all(&self, files: &[PathBuf], threads: usize) -> Vec<Result<Vec<f32>>> {
        let per = files.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            let parts: Vec<_> = files
                .chunks(per)
                .map(|part| {
                    s.spawn(move || part.iter().map(|f| self.prepare(f)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .zip(files.chunks(per))
                .flat_map(|(h, part)| {
                    h.join().unwrap_or_else(|_| {
                        part.iter()
                            .map(|f| Err(Error::format(f, "the decoding thread failed")))
                            .collect()
                    })
                })
                .collect()
        })
    }

    /// The top `top_k` classes of each prepared input (`inputs` holds whole inputs,
    /// [`Classifier::input_len`] values each).
    pub fn classify(&self, gpu: &Gpu, inputs: &[f32], top_k: usize) -> Result<Vec<Prediction>> {
        Ok(self
            .classify_with_maps(gpu, inputs, top_k, 0)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    /// [`Classifier::classify`] plus the class maps of each image's `maps` most probable
    /// classes (for [`Classifier::cam_image`]; `maps` = 0: none, and nothing extra is read
    /// back from the GPU).
    pub fn classify_with_maps(
        &self,
        gpu: &Gpu,
        inputs: &[f32],
        top_k: usize,
        maps: usize,
    ) -> Result<Vec<(Prediction, Vec<ClassMap>)>> {
        pollster::block_on(self.classify_with_maps_async(gpu, inputs, top_k, maps))
    }

    /// [`Classifier::classify_with_maps`] as a future: the one implementation, which a web
    /// page awaits (the browser hands back GPU results only once control returns to it) and
    /// native code blocks on.
    pub async fn classify_with_maps_async(
        &self,
        gpu: &Gpu,
        inputs: &[f32],
        top_k: usize,
        maps: usize,
    ) -> Result<Vec<(Prediction, Vec<ClassMap>)>> {
        let len = self.input_len();
        if !inputs.len().is_multiple_of(len) {
            return Err(Error::invalid(
                "inputs",
                format!(
                    "{} values is not a whole number of {}x{}x{} inputs",
                    inputs.len(),
                    self.preprocessing.height,
                    self.preprocessing.width,
                    self.preprocessing.channels
                ),
            ));
        }
        if top_k == 0 {
            return Err(Error::invalid("top_k", "must be at least 1"));
        }
        let (n, c) = (self.batch(), self.classes.len());
        let (mh, mw) = self.map_size();
        let mut out = Vec::with_capacity(inputs.len() / len);
        let mut padded = vec![0.0f32; n * len];
        for chunk in inputs.chunks(n * len) {
            let valid = chunk.len() / len;
            padded[..chunk.len()].copy_from_slice(chunk);
            let scores = self.predictor.scores_async(gpu, &padded, valid).await?;
            let all_maps = if maps > 0 {
                Some(gpu.download_async(&self.predictor.net.maps).await?)
            } else {
                None
            };
            for (i, row) in scores.chunks_exact(c).enumerate() {
                let top = top_classes(row, &self.classes, top_k);
                let m = match &all_maps {
                    Some(all) => top
                        .iter()
                        .take(maps)
                        .map(|t| ClassMap {
                            class: t.class,
                            height: mh,
                            width: mw,
                            values: (0..mh * mw)
                                .map(|q| all[(i * mh * mw + q) * c + t.class])
                                .collect(),
                        })
                        .collect(),
                    None => Vec::new(),
                };
                out.push((Prediction { top }, m));
            }
        }
        Ok(out)
    }

    /// Decode, preprocess and classify image files: one result per file, in order; a file
    /// that cannot be read is an `Err` naming it, and the others are still classified.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn classify_paths(
        &self,
        gpu: &Gpu,
        files: &[PathBuf],
        top_k: usize,
        threads: usize,
    ) -> Result<Vec<Result<Prediction>>> {
        let mut out = Vec::with_capacity(files.len());
        for chunk in files.chunks(self.batch()) {
            let prepared = self.prepare_all(chunk, threads);
            let mut inputs = Vec::new();
            for v in prepared.iter().flatten() {
                inputs.extend_from_slice(v);
            }
            let mut preds = self.classify(gpu, &inputs, top_k)?.into_iter();
            for p in prepared {
                out.push(p.map(|_| preds.next().expect("one prediction per prepared input")));
            }
        }
        Ok(out)
    }

    /// A prepared input as the network sees it, de-normalised to RGB for display.
    pub fn input_image(&self, input: &[f32]) -> image::RgbImage {
        let aug = &self.preprocessing;
        image::RgbImage::from_fn(aug.width as u32, aug.height as u32, |px, py| {
            let base = (py as usize * aug.width + px as usize) * aug.channels;
            let v = |ch: usize| {
                let k = ch.min(aug.channels - 1);
                let x = input.get(base + k).copied().unwrap_or(0.0);
                ((x * aug.normalize.std[k] + aug.normalize.mean[k]) * 255.0).clamp(0.0, 255.0) as u8
            };
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    /// The input with each class map upsampled and overlaid, one panel per map, labelled
    /// with the class name and probability.
    pub fn cam_image(
        &self,
        input: &[f32],
        prediction: &Prediction,
        maps: &[ClassMap],
    ) -> image::RgbImage {
        let (mh, mw) = self.map_size();
        let panels: Vec<(String, Vec<f32>)> = maps
            .iter()
            .map(|m| {
                let label = match prediction.top.iter().find(|t| t.class == m.class) {
                    Some(t) => format!("{} {:.1}%", t.name, 100.0 * t.probability),
                    None => self.classes[m.class].clone(),
                };
                (label, m.values.clone())
            })
            .collect();
        crate::viz::cam_overlay(&self.input_image(input), &panels, mh, mw)
    }
}

/// The `k` best classes of one score row with softmax probabilities (ties: lower index
/// first).
pub fn top_classes(scores: &[f32], names: &[String], k: usize) -> Vec<ClassScore> {
    let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = scores.iter().map(|&s| ((s - m) as f64).exp()).sum();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|j| ClassScore {
            class: j,
            name: names
                .get(j)
                .cloned()
                .unwrap_or_else(|| format!("class {j}")),
            probability: ((scores[j] - m) as f64).exp() / z,
            score: scores[j],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_sorted_softmax_probabilities() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let t = top_classes(&[1.0, 3.0, 1.0], &names, 2);
        assert_eq!(t[0].class, 1);
        assert_eq!(t[1].class, 0, "ties go to the lower index");
        let z = 2.0 * (-2.0f64).exp() + 1.0;
        assert!((t[0].probability - 1.0 / z).abs() < 1e-12);
        assert!((t[1].probability - (-2.0f64).exp() / z).abs() < 1e-12);
    }
}
