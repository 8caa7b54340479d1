//! Checkpoints as safetensors: weights, batch-norm statistics and (optionally) SGD momentum,
//! stored under torchvision's names and in PyTorch's layouts (conv weights OIHW, the head as
//! a 1x1 convolution `(C, D, 1, 1)`), with the model configuration and training state as
//! JSON strings in the safetensors metadata. Files are written atomically: a temporary file
//! in the same folder, fsync, rename, so a kill at any moment leaves the previous file intact.
//!
//! The metadata is checked against the model and against itself both when a checkpoint is
//! saved and when it is opened ([`Checkpoint::open`] lists the checks): class names,
//! evaluation preprocessing, training configuration and progress that disagree are an error
//! naming the file and the metadata key, never a failure later in inference.

use crate::data::{Normalize, Preprocessing, TrainCrop};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Precision;
use crate::kernels::amp::{valid_scale, AMP_SCALE, AMP_SKIPPED, MAX_SCALE, MIN_SCALE};
use crate::model::ModelConfig;
use crate::train::config::TrainConfig;
use crate::train::network::{Network, ParamLayout};
use crate::train::NetMode;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where a run is and what it has written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Global step of the next iteration.
    pub step: u64,
    /// Epoch of the next iteration (0-based).
    pub epoch: usize,
    /// Batch index within that epoch of the next iteration.
    pub batch: usize,
    /// Mixed precision: the loss-scaling state after the last step
    /// ([`crate::kernels::amp`]: scale bits, clean steps, skipped steps, flag), so a resumed
    /// run continues with the same scale.
    #[serde(default)]
    pub amp: Option<[u32; 4]>,
    /// Ranks of the data-parallel run that wrote it (0, as in checkpoints written before
    /// this field existed, or 1: one process). A run resumed on another number of ranks
    /// keeps the global batch by adjusting its accumulation.
    #[serde(default)]
    pub ranks: usize,
}

/// Metadata key holding the model configuration JSON.
pub const MODEL_KEY: &str = "finegrain.model";
/// Metadata key holding the format tag.
pub const FORMAT_KEY: &str = "finegrain.format";
/// Current format tag.
pub const FORMAT: &str = "finegrain-checkpoint-1";
/// Prefix of optimizer-state tensors.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// Metadata key: training configuration JSON (a [`TrainConfig`]).
pub const TRAIN_KEY: &str = "finegrain.train";
/// Metadata key: progress JSON (`{"step":..,"epoch":..,"batch":..}`, a [`Progress`]).
pub const PROGRESS_KEY: &str = "finegrain.progress";
/// Metadata key: the evaluation preprocessing (a [`Preprocessing`] as JSON), so inference
/// prepares images exactly as the test set was.
pub const PREPROCESS_KEY: &str = "finegrain.preprocess";
/// Metadata key: class names JSON (a list of strings, by label).
pub const CLASSES_KEY: &str = "finegrain.classes";

/// A parameter in `layout` (GPU) converted to PyTorch's layout, with its PyTorch shape.
pub fn to_torch(layout: ParamLayout, v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    match layout {
        ParamLayout::Conv { kh, kw, cin, cout } => {
            let mut out = vec![0.0; v.len()];
            for y in 0..kh {
                for x in 0..kw {
                    for i in 0..cin {
                        for o in 0..cout {
                            out[((o * cin + i) * kh + y) * kw + x] =
                                v[((y * kw + x) * cin + i) * cout + o];
                        }
                    }
                }
            }
            (vec![cout, cin, kh, kw], out)
        }
        ParamLayout::Head { d, c } => {
            let mut out = vec![0.0; v.len()];
            for i in 0..d {
                for j in 0..c {
                    out[j * d + i] = v[i * c + j];
                }
            }
            (vec![c, d, 1, 1], out)
        }
        ParamLayout::Vector(n) => (vec![n], v.to_vec()),
    }
}

/// A parameter in PyTorch's layout converted to the GPU `layout`.
pub fn from_torch(layout: ParamLayout, v: &[f32]) -> Vec<f32> {
    match layout {
        ParamLayout::Conv { kh, kw, cin, cout } => {
            let mut out = vec![0.0; v.len()];
            for y in 0..kh {
                for x in 0..kw {
                    for i in 0..cin {
                        for o in 0..cout {
                            out[((y * kw + x) * cin + i) * cout + o] =
                                v[((o * cin + i) * kh + y) * kw + x];
                        }
                    }
                }
            }
            out
        }
        ParamLayout::Head { d, c } => {
            let mut out = vec![0.0; v.len()];
            for i in 0..d {
                for j in 0..c {
                    out[i * c + j] = v[j * d + i];
                }
            }
            out
        }
        ParamLayout::Vector(_) => v.to_vec(),
    }
}

fn torch_shape(layout: ParamLayout) -> Vec<usize> {
    match layout {
        ParamLayout::Conv { kh, kw, cin, cout } => vec![cout, cin, kh, kw],
        ParamLayout::Head { d, c } => vec![c, d, 1, 1],
        ParamLayout::Vector(n) => vec![n],
    }
}

use crate::fsio::write_atomic;

/// `write_atomic` after creating the file's folder: checkpoints and exports go into run
/// folders that may not exist yet.
fn write_in_new_folder(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, bytes)
}

/// Save the network's weights, BN statistics and (with `optimizer`) momentum, plus
/// `metadata` (training state) and the model configuration.
pub fn save(
    gpu: &Gpu,
    net: &Network,
    path: &Path,
    metadata: &HashMap<String, String>,
    optimizer: bool,
) -> Result<()> {
    if optimizer && net.mode == NetMode::Inference {
        return Err(Error::invalid_in(
            "checkpoint",
            path.display().to_string(),
            "an inference network has no optimizer state to save",
        ));
    }
    let mut meta = metadata.clone();
    meta.insert(FORMAT_KEY.into(), FORMAT.into());
    meta.insert(
        MODEL_KEY.into(),
        serde_json::to_string(&net.config)
            .map_err(|e| Error::invalid("model configuration", e.to_string()))?,
    );
    // Never write a checkpoint that `Checkpoint::open` would refuse.
    Metadata::parse(&net.config, &meta).map_err(|m| {
        Error::format(
            path,
            format!("not saved, its metadata is inconsistent: {m}"),
        )
    })?;
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    // One readback for everything: values, (momentum), statistics.
    let mut wanted: Vec<&crate::gpu::Tensor> = net.params.iter().map(|p| &p.value).collect();
    if optimizer {
        wanted.extend(net.params.iter().map(|p| &p.velocity));
    }
    wanted.extend(net.state.iter().map(|s| &s.value));
    let mut host = gpu.download_many(&wanted)?.into_iter();
    let mut next = || host.next().expect("one readback per tensor asked for");
    let values: Vec<Vec<f32>> = net.params.iter().map(|_| next()).collect();
    let velocities: Vec<Vec<f32>> = if optimizer {
        net.params.iter().map(|_| next()).collect()
    } else {
        Vec::new()
    };
    let stats: Vec<Vec<f32>> = net.state.iter().map(|_| next()).collect();
    for (pi, p) in net.params.iter().enumerate() {
        let value = &values[pi];
        if let Some(i) = value.iter().position(|x| !x.is_finite()) {
            // Never replace a good checkpoint with a diverged model.
            return Err(Error::NotSaved {
                path: path.to_path_buf(),
                tensor: p.name.clone(),
                problem: format!("parameter `{}` holds a non-finite value at {i}", p.name),
            });
        }
        let (shape, v) = to_torch(p.layout, value);
        tensors.insert(p.name.clone(), (shape, bytemuck::cast_slice(&v).to_vec()));
        if optimizer {
            if let Some(i) = velocities[pi].iter().position(|x| !x.is_finite()) {
                return Err(Error::NotSaved {
                    path: path.to_path_buf(),
                    tensor: format!("{MOMENTUM_PREFIX}{}", p.name),
                    problem: format!(
                        "the momentum of `{}` holds a non-finite value at {i}",
                        p.name
                    ),
                });
            }
            let (shape, v) = to_torch(p.layout, &velocities[pi]);
            tensors.insert(
                format!("{MOMENTUM_PREFIX}{}", p.name),
                (shape, bytemuck::cast_slice(&v).to_vec()),
            );
        }
    }
    for (s, v) in net.state.iter().zip(&stats) {
        if let Some(problem) = bad_statistic(&s.name, v) {
            return Err(Error::NotSaved {
                path: path.to_path_buf(),
                tensor: s.name.clone(),
                problem,
            });
        }
        tensors.insert(
            s.name.clone(),
            (vec![v.len()], bytemuck::cast_slice(v).to_vec()),
        );
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::invalid_in("tensor", format!("`{k}`"), e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    write_in_new_folder(path, &bytes)
}

/// Why a batch-norm statistic cannot be used, if it cannot: a non-finite value anywhere, or
/// a negative running variance.
fn bad_statistic(name: &str, v: &[f32]) -> Option<String> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Some(format!("tensor `{name}` holds a non-finite value at {i}"));
    }
    if name.ends_with("running_var") {
        if let Some(i) = v.iter().position(|&x| x < 0.0) {
            return Some(format!(
                "tensor `{name}` holds a negative variance {} at {i}",
                v[i]
            ));
        }
    }
    None
}

/// The metadata of a checkpoint, parsed and checked against its model and against itself.
#[derive(Clone, Debug)]
struct Metadata {
    preprocessing: Preprocessing,
    class_names: Option<Vec<String>>,
    train: Option<TrainConfig>,
    progress: Option<Progress>,
}

/// The evaluation preprocessing of a checkpoint without [`PREPROCESS_KEY`]: Fashion-MNIST
/// normalisation at native size for one channel, ImageNet normalisation and a 256/224
/// resize otherwise.
fn default_preprocessing(m: &ModelConfig) -> Preprocessing {
    let normalize = if m.in_channels == 1 {
        Normalize::fashion_mnist(1)
    } else {
        Normalize::imagenet(m.in_channels)
    };
    let eval_resize = if m.input_size <= 64 {
        m.input_size
    } else {
        (m.input_size as f64 * 256.0 / 224.0).round() as usize
    };
    Preprocessing {
        height: m.input_size,
        width: m.input_size,
        channels: m.in_channels,
        eval_resize,
        train_crop: TrainCrop::Center,
        hflip: false,
        normalize,
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    meta: &HashMap<String, String>,
    key: &str,
    what: &str,
) -> std::result::Result<Option<T>, String> {
    meta.get(key)
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| format!("`{key}` ({what}) cannot be read: {e}"))
}

/// Checks of the model configuration beyond [`ModelConfig::validate`] that matter to a
/// checkpoint: what the data pipeline can feed it and batch-norm constants that work.
fn check_model(m: &ModelConfig) -> std::result::Result<(), String> {
    let bad = |msg: String| Err(format!("`{MODEL_KEY}` (model configuration): {msg}"));
    // Bounds (checked first by validate, so that its size arithmetic cannot overflow on a
    // damaged file), shape and buildability.
    if let Err(e) = m.validate() {
        return bad(match e {
            Error::Invalid { message, .. } => message,
            e => e.to_string(),
        });
    }
    if m.in_channels != 1 && m.in_channels != 3 {
        return bad(format!(
            "in_channels is {}; images are read with 1 or 3 channels",
            m.in_channels
        ));
    }
    let max = crate::data::MAX_IMAGE_SIZE;
    if m.input_size == 0 || m.input_size > max {
        return bad(format!("input_size {} is not in 1..={max}", m.input_size));
    }
    if !(m.bn_eps > 0.0 && m.bn_eps.is_finite()) {
        return bad(format!("bn_eps {} is not a finite number > 0", m.bn_eps));
    }
    if !(0.0..=1.0).contains(&m.bn_momentum) {
        return bad(format!("bn_momentum {} is not in [0, 1]", m.bn_momentum));
    }
    Ok(())
}

impl Metadata {
    /// Parse and cross-check everything a checkpoint's metadata records; the error is one
    /// message naming the metadata key (and the field inside it) that disagrees.
    fn parse(
        model: &ModelConfig,
        meta: &HashMap<String, String>,
    ) -> std::result::Result<Metadata, String> {
        if let Some(tag) = meta.get(FORMAT_KEY) {
            if tag != FORMAT {
                return Err(format!(
                    "`{FORMAT_KEY}` is `{tag}`; this version of finegrain reads `{FORMAT}`"
                ));
            }
        }
        check_model(model)?;
        let pre_key = PREPROCESS_KEY;
        let preprocessing =
            match parse_json::<Preprocessing>(meta, pre_key, "evaluation preprocessing")? {
                Some(a) => a,
                None => default_preprocessing(model),
            };
        preprocessing
            .validate()
            .map_err(|e| format!("`{pre_key}` (evaluation preprocessing): {e}"))?;
        if preprocessing.channels != model.in_channels {
            return Err(format!(
                "`{pre_key}` channels is {}, but the model (`{MODEL_KEY}` in_channels) takes {}",
                preprocessing.channels, model.in_channels
            ));
        }
        if preprocessing.height != model.input_size || preprocessing.width != model.input_size {
            return Err(format!(
                "`{pre_key}` height x width is {}x{}, but the model (`{MODEL_KEY}` input_size) \
                 takes {}x{}",
                preprocessing.height, preprocessing.width, model.input_size, model.input_size
            ));
        }
        let class_names = parse_json::<Vec<String>>(meta, CLASSES_KEY, "class names")?;
        if let Some(names) = &class_names {
            if names.len() != model.num_classes {
                return Err(format!(
                    "`{CLASSES_KEY}` has {} class names, but the model (`{MODEL_KEY}` \
                     num_classes) has {} classes",
                    names.len(),
                    model.num_classes
                ));
            }
            if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                return Err(format!("`{CLASSES_KEY}`: class {i} has an empty name"));
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, n) in names.iter().enumerate() {
                if let Some(j) = seen.insert(n.as_str(), i) {
                    return Err(format!(
                        "`{CLASSES_KEY}`: classes {j} and {i} are both named `{n}`"
                    ));
                }
            }
        }
        let train = parse_json::<TrainConfig>(meta, TRAIN_KEY, "training configuration")?;
        if let Some(t) = &train {
            t.validate()
                .and_then(|()| t.method(model.num_classes, model.feature_size()))
                .map_err(|e| format!("`{TRAIN_KEY}` (training configuration): {e}"))?;
        }
        let progress = parse_json::<Progress>(meta, PROGRESS_KEY, "training progress")?;
        if let Some(p) = &progress {
            let bad = |m: String| Err(format!("`{PROGRESS_KEY}` (training progress): {m}"));
            if let Some(t) = &train {
                if p.epoch > t.epochs || (p.epoch == t.epochs && p.batch > 0) {
                    return bad(format!(
                        "epoch {} batch {} is past the end of the run (`{TRAIN_KEY}` epochs is {})",
                        p.epoch, p.batch, t.epochs
                    ));
                }
            }
            // The loss-scaling state: only a mixed-precision run has one, with a power-of-two
            // scale within the scaler's range and no more skipped steps than steps.
            let mixed = train.as_ref().map(|t| t.precision) == Some(Precision::Mixed);
            match (&p.amp, mixed) {
                (Some(_), false) => {
                    return bad(format!(
                        "has a loss-scaling state (`amp`), but the run is not in mixed \
                         precision (`{TRAIN_KEY}` precision)"
                    ))
                }
                (Some(a), true) => {
                    let scale = f32::from_bits(a[AMP_SCALE]);
                    if !valid_scale(scale) {
                        return bad(format!(
                            "`amp` loss scale {scale} is not a power of two in \
                             [{MIN_SCALE}, {MAX_SCALE}]"
                        ));
                    }
                    if a[AMP_SKIPPED] as u64 > p.step {
                        return bad(format!(
                            "`amp` counts {} skipped steps in {} steps",
                            a[AMP_SKIPPED], p.step
                        ));
                    }
                }
                (None, _) => {}
            }
            // Every finished epoch took at least one step, and so did every batch of this one.
            let least = (p.epoch as u64).saturating_add(p.batch as u64);
            if p.step < least {
                return bad(format!(
                    "step {} is less than the {least} steps that epoch {} batch {} needs",
                    p.step, p.epoch, p.batch
                ));
            }
        }
        Ok(Metadata {
            preprocessing,
            class_names,
            train,
            progress,
        })
    }
}

/// Check `metadata` (as [`save`] would write it with `model`) the way [`Checkpoint::open`]
/// will: the class names, preprocessing, training configuration and progress must agree with
/// the model and with each other. The error names `path` and the metadata key.
pub fn check_metadata(
    path: &Path,
    model: &ModelConfig,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    Metadata::parse(model, metadata)
        .map(|_| ())
        .map_err(|m| Error::format(path, m))
}

/// The expected shapes of the tensors whose shapes follow from the model configuration
/// alone (the stem convolution and the class-map head), checked when a checkpoint is opened
/// so that a model configuration that disagrees with the weights is named at once.
fn model_tensor_shapes(m: &ModelConfig) -> [(&'static str, Vec<usize>, String); 3] {
    let (c, d) = (m.num_classes, m.feature_channels());
    let k = m.stem.kernel;
    [
        (
            "conv1.weight",
            vec![m.stem.channels, m.in_channels, k, k],
            format!(
                "stem channels {}, in_channels {}, stem kernel {k}",
                m.stem.channels, m.in_channels
            ),
        ),
        (
            "head.weight",
            vec![c, d, 1, 1],
            format!("num_classes {c}, {d} feature channels"),
        ),
        ("head.bias", vec![c], format!("num_classes {c}")),
    ]
}

/// A checkpoint read into memory, its metadata checked against its model and itself.
pub struct Checkpoint {
    pub model: ModelConfig,
    pub metadata: HashMap<String, String>,
    meta: Metadata,
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Checkpoint {
    /// Read a checkpoint written by [`save`] and check it. Every problem is an error naming
    /// the file and the metadata key or tensor:
    /// - not a safetensors file, or a corrupt one (header, offsets);
    /// - a format tag other than [`FORMAT`]; no or a bad model configuration ([`MODEL_KEY`]:
    ///   [`ModelConfig::validate`], 1 or 3 input channels, batch-norm constants);
    /// - the evaluation preprocessing ([`PREPROCESS_KEY`]): [`Preprocessing::validate`] (a mean and a
    ///   std > 0 per channel, `eval_resize` at least the size...), its channels and size
    ///   against the model's;
    /// - the class names ([`CLASSES_KEY`]): one per class of the model, none empty, no two
    ///   alike;
    /// - the training configuration ([`TRAIN_KEY`]): [`TrainConfig::validate`] and its method
    ///   settings for this model; the progress ([`PROGRESS_KEY`]) within the run;
    /// - the stem convolution's and the head's tensor shapes against the model.
    ///
    /// Tensors' presence, the other shapes and their values are checked by
    /// [`Checkpoint::load_into`], against the network built from the model.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::from_bytes(path, bytes)
    }

    /// [`Checkpoint::open`] for a checkpoint already in memory (a file a web page was given,
    /// or fetched); `path` names it in errors. The same checks.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Checkpoint> {
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let model_json = metadata.get(MODEL_KEY).ok_or_else(|| {
            Error::format(
                path,
                format!("no `{MODEL_KEY}` metadata: not a finegrain checkpoint"),
            )
        })?;
        let model: ModelConfig = serde_json::from_str(model_json).map_err(|e| {
            Error::format(
                path,
                format!("`{MODEL_KEY}` (model configuration) cannot be read: {e}"),
            )
        })?;
        let meta = Metadata::parse(&model, &metadata).map_err(|m| Error::format(path, m))?;
        for (name, want, why) in model_tensor_shapes(&model) {
            if let Ok(t) = st.tensor(name) {
                if t.shape() != want.as_slice() {
                    return Err(Error::format(
                        path,
                        format!(
                            "tensor `{name}` has shape {:?}, but the model (`{MODEL_KEY}`: \
                             {why}) needs {want:?}",
                            t.shape()
                        ),
                    ));
                }
            }
        }
        drop(st);
        Ok(Checkpoint {
            model,
            metadata,
            meta,
            bytes,
            path: path.to_path_buf(),
        })
    }

    /// The file this checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The evaluation preprocessing recorded in [`PREPROCESS_KEY`], or, for a checkpoint
    /// without it, the default for its model: Fashion-MNIST normalisation at native size for
    /// one channel, ImageNet normalisation and a 256/224 resize otherwise. Its channels and
    /// size are the model's.
    pub fn preprocessing(&self) -> &Preprocessing {
        &self.meta.preprocessing
    }

    /// The class names recorded in [`CLASSES_KEY`] (one per class, unique, non-empty), or
    /// `class 0`, `class 1`, ... for a checkpoint without them.
    pub fn class_names(&self) -> Vec<String> {
        match &self.meta.class_names {
            Some(n) => n.clone(),
            None => (0..self.model.num_classes)
                .map(|i| format!("class {i}"))
                .collect(),
        }
    }

    /// Whether the checkpoint records its class names (else [`Checkpoint::class_names`]
    /// makes up placeholders).
    pub fn has_class_names(&self) -> bool {
        self.meta.class_names.is_some()
    }

    /// The training configuration recorded in [`TRAIN_KEY`]; an error naming the file and the
    /// key when the checkpoint has none (it was saved without a training run).
    pub fn train_config(&self) -> Result<&TrainConfig> {
        self.meta.train.as_ref().ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "has no training configuration (`{TRAIN_KEY}` metadata), so its run cannot \
                     be resumed"
                ),
            )
        })
    }

    /// The precision its run trained in (f32 when it records no training configuration,
    /// or one from before mixed precision existed). The weights are f32 either way.
    pub fn precision(&self) -> Precision {
        self.meta
            .train
            .as_ref()
            .map(|t| t.precision)
            .unwrap_or_default()
    }

    /// Where the run that wrote it stood ([`PROGRESS_KEY`]); an error naming the file and the
    /// key when the checkpoint has no progress record.
    pub fn progress(&self) -> Result<Progress> {
        self.meta.progress.ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "has no training progress (`{PROGRESS_KEY}` metadata), so its run cannot be \
                     resumed"
                ),
            )
        })
    }

    /// Copy weights and BN statistics (and momentum with `optimizer`) into `net`. Every
    /// tensor must be present with the right shape; missing, extra or mis-shaped tensors
    /// are listed in the error.
    pub fn load_into(&self, gpu: &Gpu, net: &Network, optimizer: bool) -> Result<()> {
        if optimizer && net.mode == NetMode::Inference {
            return Err(Error::invalid_in(
                "checkpoint",
                self.path.display().to_string(),
                "cannot load optimizer state into an inference network",
            ));
        }
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::format(&self.path, format!("corrupt safetensors: {e}")))?;
        let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
        for p in &net.params {
            expected.push((p.name.clone(), torch_shape(p.layout)));
            if optimizer {
                expected.push((
                    format!("{MOMENTUM_PREFIX}{}", p.name),
                    torch_shape(p.layout),
                ));
            }
        }
        for s in &net.state {
            expected.push((s.name.clone(), s.value.shape.clone()));
        }
        let names: std::collections::HashSet<String> =
            st.names().into_iter().map(String::from).collect();
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match st.tensor(name) {
                Err(_) => problems.push(format!("missing tensor `{name}` {shape:?}")),
                Ok(v) => {
                    if v.dtype() != Dtype::F32 {
                        problems.push(format!(
                            "tensor `{name}` has dtype {:?}, expected F32",
                            v.dtype()
                        ));
                    } else if v.shape() != shape.as_slice() {
                        problems.push(format!(
                            "tensor `{name}` has shape {:?}, expected {shape:?}",
                            v.shape()
                        ));
                    }
                }
            }
        }
        for n in &names {
            let known = expected.iter().any(|(e, _)| e == n);
            let skipped_momentum = !optimizer && n.starts_with(MOMENTUM_PREFIX);
            if !known && !skipped_momentum {
                problems.push(format!("unexpected tensor `{n}`"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::format(
                &self.path,
                format!("does not match the model:\n  {}", problems.join("\n  ")),
            ));
        }
        let read = |name: &str| -> Result<Vec<f32>> {
            let v = st
                .tensor(name)
                .map_err(|e| Error::format(&self.path, format!("`{name}`: {e}")))?;
            let data = v.data();
            Ok(data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let finite = |name: &str, v: Vec<f32>| -> Result<Vec<f32>> {
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(Error::format(
                    &self.path,
                    format!("tensor `{name}` holds a non-finite value at {i}"),
                )),
                None => Ok(v),
            }
        };
        // Read and check everything before uploading anything, so a bad file leaves the
        // network as it was.
        let mut uploads: Vec<(&crate::gpu::Tensor, Vec<f32>)> = Vec::new();
        for p in &net.params {
            let v = finite(&p.name, read(&p.name)?)?;
            uploads.push((&p.value, from_torch(p.layout, &v)));
            if optimizer {
                let name = format!("{MOMENTUM_PREFIX}{}", p.name);
                let m = finite(&name, read(&name)?)?;
                uploads.push((&p.velocity, from_torch(p.layout, &m)));
            }
        }
        for s in &net.state {
            let v = read(&s.name)?;
            if let Some(problem) = bad_statistic(&s.name, &v) {
                return Err(Error::format(&self.path, problem));
            }
            uploads.push((&s.value, v));
        }
        for (t, v) in uploads {
            gpu.upload(t, &v)?;
        }
        gpu.flush()
    }
}

/// What [`load_torchvision`] did besides copying the backbone.
#[derive(Clone, Debug, Default)]
pub struct BackboneReport {
    /// The head was initialised from `fc.weight` / `fc.bias` (class counts matched).
    pub head_from_fc: bool,
    /// The file's `fc` has this many classes, not the model's: the head starts afresh.
    pub fc_classes: Option<usize>,
    /// Tensors in the file that the model has no use for (warned about, not an error).
    pub ignored: Vec<String>,
}

fn f32_tensor(path: &Path, st: &SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let v = st
        .tensor(name)
        .map_err(|e| Error::format(path, format!("`{name}`: {e}")))?;
    if v.dtype() != Dtype::F32 {
        return Err(Error::format(
            path,
            format!(
                "tensor `{name}` has dtype {:?}; convert the state dict to float32 first",
                v.dtype()
            ),
        ));
    }
    let data = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((v.shape().to_vec(), data))
}

/// Load a torchvision / timm ResNet state dict saved as safetensors (names such as
/// `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`, `fc.weight`) as the
/// backbone of `net`, which is how the paper trains (ImageNet-pretrained ResNet-50).
/// Every backbone tensor must be present with the right shape (missing or mis-shaped
/// tensors are listed in the error), in float32, finite, with no negative running variance;
/// `fc` initialises the class-map head when its class count matches (else the head starts
/// afresh, [`BackboneReport::fc_classes`]); `num_batches_tracked` may be there or not;
/// other extra tensors are ignored and reported. Everything is read and checked before
/// anything is uploaded: on an error the network is as it was.
pub fn load_torchvision(gpu: &Gpu, net: &Network, path: &Path) -> Result<BackboneReport> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let mut problems = Vec::new();
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    for p in net.params.iter().filter(|p| !p.name.starts_with("head.")) {
        let want = torch_shape(p.layout);
        match st.tensor(&p.name) {
            Err(_) => problems.push(format!("missing tensor `{}` {want:?}", p.name)),
            Ok(v) if v.shape() != want.as_slice() => problems.push(format!(
                "tensor `{}` has shape {:?}, expected {want:?}",
                p.name,
                v.shape()
            )),
            Ok(_) => {}
        }
    }
    for s in &net.state {
        match st.tensor(&s.name) {
            Err(_) => problems.push(format!("missing tensor `{}` {:?}", s.name, s.value.shape)),
            Ok(v) if v.shape() != s.value.shape.as_slice() => problems.push(format!(
                "tensor `{}` has shape {:?}, expected {:?}",
                s.name,
                v.shape(),
                s.value.shape
            )),
            Ok(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "does not fit the {} backbone:\n  {}",
                net.config.name,
                problems.join("\n  ")
            ),
        ));
    }
    // Read and check every tensor before uploading any, so a bad file leaves the network
    // as it was.
    let finite = |name: &str, v: Vec<f32>| -> Result<Vec<f32>> {
        match bad_statistic(name, &v) {
            Some(problem) => Err(Error::format(path, problem)),
            None => Ok(v),
        }
    };
    let mut uploads: Vec<(&crate::gpu::Tensor, Vec<f32>)> = Vec::new();
    for p in net.params.iter().filter(|p| !p.name.starts_with("head.")) {
        let (_, v) = f32_tensor(path, &st, &p.name)?;
        uploads.push((&p.value, from_torch(p.layout, &finite(&p.name, v)?)));
        used.insert(p.name.clone());
    }
    for s in &net.state {
        let (_, v) = f32_tensor(path, &st, &s.name)?;
        uploads.push((&s.value, finite(&s.name, v)?));
        used.insert(s.name.clone());
    }
    let mut report = BackboneReport::default();
    let head_w = net.params.iter().find(|p| p.name == "head.weight");
    let head_b = net.params.iter().find(|p| p.name == "head.bias");
    if let (Some(hw), Some(hb), Ok(fw), Ok(fb)) =
        (head_w, head_b, st.tensor("fc.weight"), st.tensor("fc.bias"))
    {
        if let ParamLayout::Head { d, c } = hw.layout {
            if fw.shape() == [c, d] && fb.shape() == [c] {
                let (_, w) = f32_tensor(path, &st, "fc.weight")?;
                let (_, b) = f32_tensor(path, &st, "fc.bias")?;
                uploads.push((&hw.value, from_torch(hw.layout, &finite("fc.weight", w)?)));
                uploads.push((&hb.value, finite("fc.bias", b)?));
                used.insert("fc.weight".into());
                used.insert("fc.bias".into());
                report.head_from_fc = true;
            } else if fw.shape().len() == 2 {
                report.fc_classes = Some(fw.shape()[0]);
                used.insert("fc.weight".into());
                used.insert("fc.bias".into());
            }
        }
    }
    for (t, v) in uploads {
        gpu.upload(t, &v)?;
    }
    gpu.flush()?;
    for n in st.names() {
        if !used.contains(n) && !n.ends_with("num_batches_tracked") {
            report.ignored.push(n.to_string());
        }
    }
    report.ignored.sort();
    for n in &report.ignored {
        log::warn!("{}: tensor `{n}` is not used by the model", path.display());
    }
    Ok(report)
}

/// Export `net` as a plain torchvision ResNet state dict (safetensors): the backbone under
/// its own names, the class-map head as `fc.weight` (C, D) and `fc.bias` (a 1x1 convolution
/// followed by global average pooling equals pooling followed by that linear layer, so the
/// exported model gives the same evaluation scores), and `num_batches_tracked` (I64, 0) for
/// every batch norm so `load_state_dict(strict=True)` accepts it.
pub fn export_torchvision(gpu: &Gpu, net: &Network, path: &Path) -> Result<()> {
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let wanted: Vec<&crate::gpu::Tensor> = (net.params.iter().map(|p| &p.value))
        .chain(net.state.iter().map(|s| &s.value))
        .collect();
    let host = gpu.download_many(&wanted)?;
    let (values, stats) = host.split_at(net.params.len());
    for (p, v) in net.params.iter().zip(values) {
        let (mut shape, data) = to_torch(p.layout, v);
        let name = match p.name.as_str() {
            "head.weight" => {
                shape.truncate(2);
                "fc.weight".to_string()
            }
            "head.bias" => "fc.bias".to_string(),
            n => n.to_string(),
        };
        tensors.insert(
            name,
            (Dtype::F32, shape, bytemuck::cast_slice(&data).to_vec()),
        );
    }
    for (s, v) in net.state.iter().zip(stats) {
        tensors.insert(
            s.name.clone(),
            (Dtype::F32, vec![v.len()], bytemuck::cast_slice(v).to_vec()),
        );
        if let Some(bn) = s.name.strip_suffix(".running_mean") {
            tensors.insert(
                format!("{bn}.num_batches_tracked"),
                (Dtype::I64, vec![], 0i64.to_le_bytes().to_vec()),
            );
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (dt, shape, data))| {
            TensorView::new(*dt, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::invalid_in("tensor", format!("`{k}`"), e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes =
        safetensors::serialize(views, None).map_err(|e| Error::invalid("export", e.to_string()))?;
    write_in_new_folder(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let conv = ParamLayout::Conv {
            kh: 3,
            kw: 2,
            cin: 5,
            cout: 7,
        };
        let v: Vec<f32> = (0..3 * 2 * 5 * 7).map(|i| i as f32).collect();
        let (shape, t) = to_torch(conv, &v);
        assert_eq!(shape, vec![7, 5, 3, 2]);
        // element (kh=2, kw=1, ci=4, co=6) in HWIO is at ((2*2+1)*5+4)*7+6
        assert_eq!(
            t[((6 * 5 + 4) * 3 + 2) * 2 + 1],
            v[((2 * 2 + 1) * 5 + 4) * 7 + 6]
        );
        assert_eq!(from_torch(conv, &t), v);
        let head = ParamLayout::Head { d: 4, c: 3 };
        let h: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (shape, t) = to_torch(head, &h);
        assert_eq!(shape, vec![3, 4, 1, 1]);
        assert_eq!(from_torch(head, &t), h);
    }
}
