//! Tensors: labelled storage buffers with a shape, allocated once.

use super::Gpu;
use crate::error::{Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DType {
    #[default]
    F32,
    U32,
    /// IEEE half precision (WGSL `f16`, needs the adapter's shader-f16 feature): the
    /// storage of mixed precision. The host side converts to and from f32.
    F16,
}

impl DType {
    /// F16 for F16, else F32: the element type of a launcher that takes either (its checks
    /// then name a tensor of any other type).
    pub fn float(self) -> DType {
        match self {
            DType::F16 => DType::F16,
            _ => DType::F32,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
}

/// A storage buffer with a shape. Activations are NHWC; see the module that owns each
/// tensor for what its dimensions mean. `clone()` makes a second handle to the same GPU
/// memory (wgpu buffers are reference counted), not a copy.
#[derive(Clone)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub label: String,
}

impl Tensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size in bytes of the elements (the buffer itself is never smaller than 4 bytes, and
    /// an f16 buffer is rounded up to whole 4-byte words).
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * self.dtype.size()
    }

    /// A tensor of another shape (and label) over the start of this one's buffer: how
    /// buffers are shared between tensors that are never live at the same time. Error
    /// unless the buffer holds `shape`. Kernels bind the whole buffer and index only within
    /// the view's shape.
    pub fn view(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let capacity = (self.buffer.size() / self.dtype.size()) as usize;
        if numel > capacity {
            return Err(Error::invalid_in(
                "view",
                format!("`{label}` of `{}`", self.label),
                format!("shape {shape:?} needs {numel} elements, the buffer holds {capacity}"),
            ));
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            label: label.to_string(),
        })
    }

    /// The one check launchers make of their tensors: error ([`Error::ShapeMismatch`],
    /// naming `launcher`, the tensor's `role` in it and its label) unless it holds `dtype`
    /// elements and `size` fits.
    pub fn check(&self, launcher: &str, role: &str, dtype: DType, size: Size<'_>) -> Result<()> {
        let numel = self.numel();
        let fits = match size {
            Size::Shape(s) => self.shape == s,
            Size::Len(n) => numel == n,
            Size::AtLeast(n) => numel >= n,
        };
        if fits && self.dtype == dtype {
            return Ok(());
        }
        let count = match size {
            Size::Shape(s) => format!("shape {s:?}"),
            Size::Len(n) => format!("{n} elements"),
            Size::AtLeast(n) => format!("at least {n} elements"),
        };
        Err(Error::ShapeMismatch {
            context: format!("{launcher} {role}"),
            tensor: self.label.clone(),
            expected: format!("{count} of {dtype:?}"),
            found: self.shape.clone(),
            dtype: format!("{:?}", self.dtype),
        })
    }
}

/// What [`Tensor::check`] asks of a tensor's size.
#[derive(Clone, Copy, Debug)]
pub enum Size<'a> {
    /// Exactly this shape.
    Shape(&'a [usize]),
    /// Exactly this many elements, in any shape.
    Len(usize),
    /// At least this many elements (a buffer sized for the largest case serving a smaller
    /// one).
    AtLeast(usize),
}

impl Gpu {
    fn alloc(&self, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if dtype == DType::F16 && !self.features.shader_f16 {
            return Err(Error::invalid_in(
                "f16 tensor",
                format!("`{label}`"),
                format!("adapter {} has no shader-f16 feature", self.info.name),
            ));
        }
        // Whole 4-byte words: WGSL storage buffers are bound in multiples of 4 bytes.
        let bytes = (numel as u64 * dtype.size()).next_multiple_of(4).max(4);
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge {
                tensor: label.to_string(),
                bytes,
                limit,
            });
        }
        self.count_buffer(bytes);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// A zero-filled f32 tensor.
    pub fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        self.alloc(label, shape, DType::F32)
    }

    /// A zero-filled u32 tensor.
    pub fn zeros_u32(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        self.alloc(label, shape, DType::U32)
    }

    /// A zero-filled f16 tensor (error unless the adapter has shader-f16).
    pub fn zeros_f16(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        self.alloc(label, shape, DType::F16)
    }

    /// A zero tensor of `dtype`.
    pub fn zeros_of(&self, label: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.alloc(label, shape, dtype)
    }

    /// An f16 tensor holding `data` rounded to the nearest f16 (overflow gives infinity).
    pub fn tensor_f16(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = self.zeros_f16(label, shape)?;
        self.upload_f16(&t, data)?;
        Ok(t)
    }

    /// Write `data`, rounded to f16, into the f16 tensor `t`.
    pub fn upload_f16(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        t.check(
            "upload_f16",
            "destination",
            DType::F16,
            Size::Len(data.len()),
        )?;
        let mut h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        // Pad to the buffer's whole words.
        h.resize(
            ((t.bytes().next_multiple_of(4)) / 2) as usize,
            half::f16::ZERO,
        );
        if !data.is_empty() {
            self.queue
                .write_buffer(&t.buffer, 0, bytemuck::cast_slice(&h));
        }
        Ok(())
    }

    /// Read an f16 tensor back to the host as f32 (exact; submits and waits).
    pub fn download_f16(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.download_f16_async(t))
    }

    async fn download_f16_async(&self, t: &Tensor) -> Result<Vec<f32>> {
        t.check("download_f16", "source", DType::F16, Size::Len(t.numel()))?;
        let b = self
            .read_bytes_async(&t.buffer, t.bytes().next_multiple_of(4))
            .await?;
        let h: Vec<half::f16> = bytemuck::pod_collect_to_vec(&b);
        Ok(h[..t.numel()].iter().map(|v| v.to_f32()).collect())
    }

    /// An f32 tensor holding `data`.
    pub fn tensor(&self, label: &str, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = self.zeros(label, shape)?;
        self.upload(&t, data)?;
        Ok(t)
    }

    /// A u32 tensor holding `data`.
    pub fn tensor_u32(&self, label: &str, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let t = self.zeros_u32(label, shape)?;
        self.upload(&t, data)?;
        Ok(t)
    }

    /// Write `data` into `t` (queued; takes effect before the next submit). f16 tensors take
    /// [`Gpu::upload_f16`].
    pub fn upload<T: bytemuck::Pod>(&self, t: &Tensor, data: &[T]) -> Result<()> {
        if t.dtype == DType::F16 {
            return Err(Error::invalid_in(
                "upload to",
                format!("`{}`", t.label),
                "an f16 tensor takes upload_f16 (f32 values, rounded on the way)",
            ));
        }
        if std::mem::size_of_val(data) as u64 != t.bytes() {
            return Err(Error::invalid_in(
                "upload to",
                format!("`{}`", t.label),
                format!(
                    "{} bytes given, tensor of shape {:?} holds {}",
                    std::mem::size_of_val(data),
                    t.shape,
                    t.bytes()
                ),
            ));
        }
        if !data.is_empty() {
            self.queue
                .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Fill an f32 tensor with one value (NaN poisoning in tests, zeroing accumulators).
    pub fn fill(&self, t: &Tensor, value: f32) -> Result<()> {
        if t.dtype == DType::F16 {
            return self.upload_f16(t, &vec![value; t.numel()]);
        }
        self.upload(t, &vec![value; t.numel()])
    }

    /// Read a buffer's first `bytes` bytes back (submits and waits).
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        pollster::block_on(self.read_bytes_async(buffer, bytes))
    }

    /// [`Gpu::read_bytes`] as a future (what a web page awaits).
    pub async fn read_bytes_async(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.staging_buffer("finegrain.readback", bytes);
        let mut enc = self.encoder("finegrain.readback");
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        map_read_async(self, &staging, bytes).await
    }

    /// Read an f32 tensor (or an f16 one, converted) back to the host (submits and waits).
    pub fn download(&self, t: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.download_async(t))
    }

    /// [`Gpu::download`] as a future (what a web page awaits).
    pub async fn download_async(&self, t: &Tensor) -> Result<Vec<f32>> {
        if t.dtype == DType::F16 {
            return self.download_f16_async(t).await;
        }
        let b = self.read_bytes_async(&t.buffer, t.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }

    /// Read several f32 tensors back with one copy pass, submit and wait per staging
    /// buffer (each at most 256 MiB or the adapter's buffer limit; a tensor larger than that
    /// gets its own), instead of one round trip per tensor.
    pub fn download_many(&self, ts: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        let cap = self.limits.max_buffer_size.min(256 << 20);
        let mut out = Vec::with_capacity(ts.len());
        let mut start = 0;
        while start < ts.len() {
            // Tensors start..end go into one staging buffer.
            let mut end = start;
            let mut total = 0u64;
            while end < ts.len() && (end == start || total + ts[end].bytes() <= cap) {
                total += ts[end].bytes();
                end += 1;
            }
            if total == 0 {
                out.extend((start..end).map(|_| Vec::new()));
                start = end;
                continue;
            }
            let staging = self.staging_buffer("finegrain.readback_many", total);
            let mut enc = self.encoder("finegrain.readback_many");
            let mut off = 0;
            for t in &ts[start..end] {
                if t.bytes() > 0 {
                    enc.copy_buffer_to_buffer(&t.buffer, 0, &staging, off, t.bytes());
                }
                off += t.bytes();
            }
            self.queue.submit([enc.finish()]);
            let bytes = map_read(self, &staging, total)?;
            let mut off = 0usize;
            for t in &ts[start..end] {
                let n = t.bytes() as usize;
                out.push(bytemuck::pod_collect_to_vec(&bytes[off..off + n]));
                off += n;
            }
            start = end;
        }
        Ok(out)
    }

    /// Read a u32 tensor back to the host (submits and waits).
    pub fn download_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let b = self.read_bytes(&t.buffer, t.bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }
}

/// Map a MAP_READ buffer whose copy has been submitted, wait, and copy its bytes out. The
/// blocking form of [`map_read_async`] (native only).
pub(crate) fn map_read(gpu: &Gpu, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    map_read_with(gpu, staging, bytes, |b| b.to_vec())
}

/// [`map_read`] handing the mapped bytes to `read` instead of copying them into a new
/// vector: for a caller that keeps its own host buffer (the gradient exchange reads its
/// whole staging buffer every step).
pub(crate) fn map_read_with<R>(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    bytes: u64,
    read: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    pollster::block_on(map_read_with_async(gpu, staging, bytes, read))
}

/// [`map_read`] as a future. Natively the device is polled until the copy is done, so the
/// future is ready when first polled; in a browser it resolves when the browser has mapped
/// the buffer.
pub(crate) async fn map_read_async(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u8>> {
    map_read_with_async(gpu, staging, bytes, |b| b.to_vec()).await
}

async fn map_read_with_async<R>(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    bytes: u64,
    read: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    let slice = staging.slice(0..bytes);
    let (tx, rx) = futures_channel::oneshot::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    gpu.wait()?;
    let mapped = rx.await.map_err(|_| Error::Gpu {
        context: "map_async".into(),
        message: "callback never ran".into(),
    })?;
    gpu.check("readback")?;
    mapped.map_err(|e| Error::Gpu {
        context: "map_async".into(),
        message: e.to_string(),
    })?;
    let view = slice.get_mapped_range().map_err(|e| Error::Gpu {
        context: "get_mapped_range".into(),
        message: e.to_string(),
    })?;
    let out = read(&view);
    drop(view);
    staging.unmap();
    Ok(out)
}
