//! Checkpoints as safetensors: weights, batch-norm statistics and (optionally) SGD momentum,
//! stored under torchvision's names and in PyTorch's layouts (conv weights OIHW, the head as
//! a 1x1 convolution `(C, D, 1, 1)`), with the model configuration and training state as
//! JSON strings in the safetensors metadata. Files are written atomically: a temporary file
//! in the same folder, fsync, rename, so a kill at any moment leaves the previous file intact.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::ModelConfig;
use crate::train::network::{NetMode, Network, ParamLayout};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// Metadata key holding the model configuration JSON.
pub const MODEL_KEY: &str = "finegrain.model";
/// Metadata key holding the format tag.
pub const FORMAT_KEY: &str = "finegrain.format";
/// Current format tag.
pub const FORMAT: &str = "finegrain-checkpoint-1";
/// Prefix of optimizer-state tensors.
pub const MOMENTUM_PREFIX: &str = "optimizer.momentum.";

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

/// Write `bytes` to `path` atomically (temporary file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
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
        return Err(Error::invalid(
            format!("checkpoint {}", path.display()),
            "an inference network has no optimizer state to save",
        ));
    }
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
            return Err(Error::NonFinite(format!(
                "not saving {}: parameter `{}` holds a non-finite value at {i} (training diverged); \
                 the previous checkpoint is kept",
                path.display(),
                p.name
            )));
        }
        let (shape, v) = to_torch(p.layout, value);
        tensors.insert(p.name.clone(), (shape, bytemuck::cast_slice(&v).to_vec()));
        if optimizer {
            let (shape, v) = to_torch(p.layout, &velocities[pi]);
            tensors.insert(
                format!("{MOMENTUM_PREFIX}{}", p.name),
                (shape, bytemuck::cast_slice(&v).to_vec()),
            );
        }
    }
    for (s, v) in net.state.iter().zip(&stats) {
        tensors.insert(
            s.name.clone(),
            (vec![v.len()], bytemuck::cast_slice(v).to_vec()),
        );
    }
    let mut meta = metadata.clone();
    meta.insert(FORMAT_KEY.into(), FORMAT.into());
    meta.insert(
        MODEL_KEY.into(),
        serde_json::to_string(&net.config)
            .map_err(|e| Error::invalid("model configuration", e.to_string()))?,
    );
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, data))| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::invalid(format!("tensor `{k}`"), e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::invalid("checkpoint", e.to_string()))?;
    write_atomic(path, &bytes)
}

/// A checkpoint read into memory.
pub struct Checkpoint {
    pub model: ModelConfig,
    pub metadata: HashMap<String, String>,
    bytes: Vec<u8>,
    path: std::path::PathBuf,
}

impl Checkpoint {
    /// Read and parse the header of a checkpoint written by [`save`].
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let model_json = metadata.get(MODEL_KEY).ok_or_else(|| {
            Error::format(
                path,
                format!("no `{MODEL_KEY}` metadata: not a finegrain checkpoint"),
            )
        })?;
        let model: ModelConfig = serde_json::from_str(model_json)
            .map_err(|e| Error::format(path, format!("bad model configuration: {e}")))?;
        model.validate()?;
        Ok(Checkpoint {
            model,
            metadata,
            bytes,
            path: path.to_path_buf(),
        })
    }

    /// Copy weights and BN statistics (and momentum with `optimizer`) into `net`. Every
    /// tensor must be present with the right shape; missing, extra or mis-shaped tensors
    /// are listed in the error.
    pub fn load_into(&self, gpu: &Gpu, net: &Network, optimizer: bool) -> Result<()> {
        if optimizer && net.mode == NetMode::Inference {
            return Err(Error::invalid(
                format!("checkpoint {}", self.path.display()),
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
        for p in &net.params {
            let v = read(&p.name)?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::format(
                    &self.path,
                    format!("tensor `{}` holds a non-finite value at {i}", p.name),
                ));
            }
            gpu.upload(&p.value, &from_torch(p.layout, &v))?;
            if optimizer {
                let m = read(&format!("{MOMENTUM_PREFIX}{}", p.name))?;
                gpu.upload(&p.velocity, &from_torch(p.layout, &m))?;
            }
        }
        for s in &net.state {
            gpu.upload(&s.value, &read(&s.name)?)?;
        }
        Ok(())
    }
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

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("finegrain-atomic-{}", std::process::id()));
        let p = dir.join("x.bin");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second version").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second version");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// What [`load_torchvision`] did besides copying the backbone.
#[derive(Clone, Debug, Default)]
pub struct BackboneReport {
    /// The head was initialised from `fc.weight` / `fc.bias` (class counts matched).
    pub head_from_fc: bool,
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
/// tensors are listed in the error); `fc` initialises the class-map head when its class
/// count matches; `num_batches_tracked` and other extra tensors are ignored and reported.
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
    for p in net.params.iter().filter(|p| !p.name.starts_with("head.")) {
        let (_, v) = f32_tensor(path, &st, &p.name)?;
        gpu.upload(&p.value, &from_torch(p.layout, &v))?;
        used.insert(p.name.clone());
    }
    for s in &net.state {
        let (_, v) = f32_tensor(path, &st, &s.name)?;
        gpu.upload(&s.value, &v)?;
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
                gpu.upload(&hw.value, &from_torch(hw.layout, &w))?;
                gpu.upload(&hb.value, &b)?;
                used.insert("fc.weight".into());
                used.insert("fc.bias".into());
                report.head_from_fc = true;
            }
        }
    }
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
                .map_err(|e| Error::invalid(format!("tensor `{k}`"), e.to_string()))
        })
        .collect::<Result<_>>()?;
    let bytes =
        safetensors::serialize(views, None).map_err(|e| Error::invalid("export", e.to_string()))?;
    write_atomic(path, &bytes)
}
