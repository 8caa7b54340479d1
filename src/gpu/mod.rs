//! Everything that touches wgpu lives below this module: adapter and device choice, limits
//! and optional features, tensors (labelled storage buffers), the pipeline cache, recorded
//! dispatches and the timestamp profiler. wgpu's API changes between major versions; keeping
//! it here keeps those changes in one place.

mod class;
mod pipeline;
mod profiler;
mod tensor;

pub use class::{AdapterClass, BnSizing, KernelFamily};
pub use pipeline::{Dispatch, ShaderSource};
pub use profiler::{ProfileRow, Profiler};
pub(crate) use tensor::{map_read_async, map_read_with};
pub use tensor::{DType, Size, Tensor};

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Invocations per workgroup used by the element-wise kernels (a portable size).
pub const WG: u32 = 256;

/// Which device limits to request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LimitsMode {
    /// What the adapter has, where finegrain benefits: storage bindings and buffers as
    /// large as it allows, more storage buffers, workgroup memory and invocations.
    #[default]
    Adapter,
    /// WebGPU's default limits only (`wgpu::Limits::default()`: 128 MiB per storage
    /// binding, 256 MiB per buffer, 8 storage buffers per shader stage, 16 KiB of workgroup
    /// memory, 256 invocations per workgroup), what a browser hands a page that asks for
    /// nothing. Every kernel works within them, and a network whose buffers do not fit is
    /// refused naming the buffer, its size and the limit.
    WebGpuDefault,
}

impl LimitsMode {
    /// Parse `adapter` or `webgpu`; `what` names the flag or variable in errors.
    pub fn parse(what: &'static str, v: &str) -> Result<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "adapter" | "" => Ok(LimitsMode::Adapter),
            "webgpu" | "default" => Ok(LimitsMode::WebGpuDefault),
            other => Err(Error::invalid(
                what,
                format!("`{other}` is not one of adapter, webgpu"),
            )),
        }
    }
}

/// How to choose the adapter. [`GpuOptions::from_env`] reads `WGPU_BACKEND`,
/// `FINEGRAIN_ADAPTER`, `FINEGRAIN_KERNELS`, `FINEGRAIN_COOP` and `FINEGRAIN_LIMITS`.
/// [`Default`]: any backend and adapter, the automatic kernel family, cooperative matrices
/// where the adapter has them, the adapter's limits.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Backends to consider; `None` means Vulkan, Metal, DX12, and GL only if none of those has an adapter.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive part of the adapter name to pick (e.g. "llvmpipe", "H200", "M2").
    pub adapter_name: Option<String>,
    /// Convolution kernel family; `None`: the adapter's own ([`KernelFamily::auto`]).
    pub kernels: Option<KernelFamily>,
    /// Use the adapter's cooperative matrices (wgpu's experimental feature) where it lists a
    /// tile the kernels have; `false` leaves the feature off, and mixed precision then runs
    /// its f16-storage kernels.
    pub cooperative_matrices: bool,
    /// The device limits to request: the adapter's, or WebGPU's defaults (how a page in a
    /// browser runs, tested natively).
    pub limits: LimitsMode,
    /// One GPU per process on a machine with several (the ranks of a data-parallel run):
    /// among the adapters as good as the best one (same backend and device type, matching
    /// `adapter_name`), the `n`-th, modulo their count (`n`: the process's rank on its
    /// machine). `None`: the best one.
    pub device_index: Option<usize>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            backends: None,
            adapter_name: None,
            kernels: None,
            cooperative_matrices: true,
            limits: LimitsMode::Adapter,
            device_index: None,
        }
    }
}

impl GpuOptions {
    /// Options from the environment: `WGPU_BACKEND` (vulkan, metal, dx12, gl),
    /// `FINEGRAIN_ADAPTER` (part of an adapter name), `FINEGRAIN_KERNELS` (auto, tiled,
    /// broadcast, subgroup), `FINEGRAIN_COOP` (on, the default, or off: no cooperative matrices) and
    /// `FINEGRAIN_LIMITS` (adapter, the default, or webgpu: WebGPU's default limits). An
    /// unrecognised `FINEGRAIN_KERNELS`, `FINEGRAIN_COOP` or `FINEGRAIN_LIMITS` is an error.
    pub fn from_env() -> Result<Self> {
        let kernels = match std::env::var("FINEGRAIN_KERNELS") {
            Ok(v) => KernelFamily::parse("FINEGRAIN_KERNELS", &v)?,
            Err(_) => None,
        };
        let cooperative_matrices = match std::env::var("FINEGRAIN_COOP").as_deref() {
            Err(_) | Ok("") | Ok("on") => true,
            Ok("off") => false,
            Ok(other) => {
                return Err(Error::invalid(
                    "FINEGRAIN_COOP",
                    format!("`{other}`: expected `on` or `off`"),
                ))
            }
        };
        let limits = match std::env::var("FINEGRAIN_LIMITS") {
            Ok(v) => LimitsMode::parse("FINEGRAIN_LIMITS", &v)?,
            Err(_) => LimitsMode::Adapter,
        };
        Ok(GpuOptions {
            limits,
            backends: wgpu::Backends::from_env(),
            adapter_name: std::env::var("FINEGRAIN_ADAPTER")
                .ok()
                .filter(|s| !s.is_empty()),
            kernels,
            cooperative_matrices,
            device_index: None,
        })
    }

    /// [`GpuOptions::from_env`] overridden by the examples' `--backend` and `--adapter`
    /// flags where given.
    pub fn from_env_and_flags(backend: Option<&str>, adapter: Option<&str>) -> Result<Self> {
        let mut o = GpuOptions::from_env()?;
        if let Some(b) = backend {
            o.backends = Some(GpuOptions::parse_backend(b)?);
        }
        if let Some(a) = adapter {
            o.adapter_name = Some(a.to_string());
        }
        Ok(o)
    }

    /// Parse a backend name as given on a command line.
    pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
        let b = match name.trim().to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "auto" | "" => wgpu::Backends::PRIMARY,
            other => {
                return Err(Error::invalid(
                    "backend",
                    format!("`{other}` is not one of vulkan, metal, dx12, gl, auto"),
                ))
            }
        };
        Ok(b)
    }
}

/// Optional adapter features finegrain uses when present.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuFeatures {
    pub timestamp_query: bool,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Square cooperative-matrix tiles (side 8 or 16) with f16 A and B and an f32
    /// accumulator that the adapter lists in `cooperative_matrix_properties()` (wgpu's
    /// experimental feature, enabled only where such a tile exists).
    pub coop_f16_f32: CoopTiles,
}

/// Which f16 x f16 -> f32 cooperative-matrix tile sides an adapter has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoopTiles {
    pub t8: bool,
    pub t16: bool,
}

impl CoopTiles {
    /// The tiles in `props` that the GEMM kernels can use: M = N = K = 8 or 16, f16 A/B,
    /// f32 C, without saturating accumulation.
    pub fn from_properties(props: &[wgpu::CooperativeMatrixProperties]) -> CoopTiles {
        let has = |side: u32| {
            props.iter().any(|p| {
                p.m_size == side
                    && p.n_size == side
                    && p.k_size == side
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
                    && !p.saturating_accumulation
            })
        };
        CoopTiles {
            t8: has(8),
            t16: has(16),
        }
    }

    pub fn any(&self) -> bool {
        self.t8 || self.t16
    }
}

/// A cached pipeline: shader, entry point, and its override constants (name, f64 bits).
type PipelineKey = (&'static str, &'static str, Vec<(&'static str, u64)>);

/// The chosen adapter, its device and queue, and the pipeline cache.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether `limits` are the adapter's or WebGPU's defaults.
    pub limits_mode: LimitsMode,
    pub features: GpuFeatures,
    /// The launchers' choices on this adapter ([`Gpu::class`]).
    class: AdapterClass,
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Set by the device-lost callback: why the device was lost.
    lost: Arc<Mutex<Option<String>>>,
    buffers_created: AtomicUsize,
    bytes_created: AtomicU64,
    bind_groups_created: AtomicUsize,
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

/// What [`choose_adapter`] picked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterChoice {
    /// Index into the adapter list it was given.
    pub index: usize,
    /// Something to tell the user about the choice (a software OpenGL adapter taken because
    /// GL was asked for).
    pub warning: Option<String>,
}

/// True for Mesa's software OpenGL rasterisers (llvmpipe, softpipe, swrast) and any other
/// GL adapter that reports a CPU device.
pub fn is_software_gl(info: &wgpu::AdapterInfo) -> bool {
    if info.backend != wgpu::Backend::Gl {
        return false;
    }
    let name = info.name.to_ascii_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "softpipe", "swrast"]
            .iter()
            .any(|s| name.contains(s))
}

/// Whether `opts` asks for the GL backend explicitly (`GpuOptions::backends` including GL,
/// as `WGPU_BACKEND=gl` sets it).
pub fn gl_requested(opts: &GpuOptions) -> bool {
    opts.backends
        .is_some_and(|b| b.contains(wgpu::Backends::GL))
}

/// The adapter-choice rule of [`Gpu::new`], as a pure function of the adapters found
/// (`infos`, enumerated on `backends`) and the options: drop the no-op backend and those
/// whose name does not contain `opts.adapter_name` (case-insensitive); then prefer Vulkan,
/// Metal and DX12 over GL, and discrete over integrated over virtual over other over CPU
/// devices (first found wins a tie; with `opts.device_index` = n, the n-th of the adapters
/// that tie with the best, modulo their count). When the best left is a software OpenGL adapter
/// ([`is_software_gl`]) it is refused with [`Error::SoftwareGl`] unless GL was asked for
/// ([`gl_requested`]); when it was, it is taken with a warning.
pub fn choose_adapter(
    infos: &[wgpu::AdapterInfo],
    opts: &GpuOptions,
    backends: wgpu::Backends,
) -> Result<AdapterChoice> {
    let want = opts.adapter_name.as_ref().map(|w| w.to_lowercase());
    let best = infos
        .iter()
        .enumerate()
        .filter(|(_, i)| i.backend != wgpu::Backend::Noop)
        .filter(|(_, i)| {
            want.as_ref()
                .is_none_or(|w| i.name.to_lowercase().contains(w.as_str()))
        })
        .min_by_key(|(k, i)| (backend_rank(i.backend), type_rank(i.device_type), *k));
    let best = match (best, opts.device_index) {
        (Some((_, b)), Some(n)) => {
            let peers: Vec<(usize, &wgpu::AdapterInfo)> = infos
                .iter()
                .enumerate()
                .filter(|(_, i)| i.backend == b.backend && i.device_type == b.device_type)
                .filter(|(_, i)| {
                    want.as_ref()
                        .is_none_or(|w| i.name.to_lowercase().contains(w.as_str()))
                })
                .collect();
            Some(peers[n % peers.len()])
        }
        (best, _) => best,
    };
    let seen = || {
        infos
            .iter()
            .map(|i| format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((index, info)) = best else {
        let detail = if infos.is_empty() {
            format!("backends {backends:?} reported no adapter")
        } else {
            format!(
                "none matched FINEGRAIN_ADAPTER={:?}; available: {}",
                opts.adapter_name.as_deref().unwrap_or(""),
                seen()
            )
        };
        return Err(Error::NoAdapter { detail });
    };
    let mut warning = None;
    if is_software_gl(info) {
        let adapter = format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type);
        if !gl_requested(opts) {
            return Err(Error::SoftwareGl { adapter });
        }
        warning = Some(format!(
            "using the software OpenGL adapter {adapter} because the GL backend was asked \
             for; Mesa's software Vulkan driver (lavapipe) is the CPU adapter finegrain is \
             tested on"
        ));
    }
    Ok(AdapterChoice { index, warning })
}

impl Gpu {
    /// Choose an adapter from the environment (`WGPU_BACKEND`, `FINEGRAIN_ADAPTER`) and
    /// create a device on it.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_env() -> Result<Gpu> {
        Gpu::new(&GpuOptions::from_env()?)
    }

    /// Choose an adapter (a real GPU before a software one, unless a name is given) and
    /// create a device asking for the limits and optional features finegrain can use. A
    /// software OpenGL adapter (llvmpipe) is refused unless GL was asked for
    /// ([`choose_adapter`]). The blocking form of [`Gpu::new_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Gpu::new_async(opts))
    }

    /// [`Gpu::new`] as a future: what a web page awaits (the browser answers adapter and
    /// device requests only after control returns to it).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        // Vulkan, Metal, DX12 first; GL only when asked for or when nothing else exists.
        let mut backends = opts.backends.unwrap_or(wgpu::Backends::PRIMARY);
        let enumerate = |b: wgpu::Backends| {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = b;
            let instance = wgpu::Instance::new(desc);
            async move { instance.enumerate_adapters(b).await }
        };
        let mut adapters = enumerate(backends).await;
        if adapters.is_empty() && opts.backends.is_none() {
            backends = wgpu::Backends::SECONDARY;
            adapters = enumerate(backends).await;
        }
        let infos: Vec<wgpu::AdapterInfo> = adapters.iter().map(|a| a.get_info()).collect();
        let choice = choose_adapter(&infos, opts, backends)?;
        if let Some(w) = &choice.warning {
            log::warn!("{w}");
        }
        let adapter = adapters.swap_remove(choice.index);
        let mut gpu = Gpu::with_adapter(adapter, opts.cooperative_matrices, opts.limits).await?;
        gpu.choose_kernels(opts.kernels)?;
        Ok(gpu)
    }

    /// The browser's adapter (its WebGPU implementation chooses; `opts.adapter_name` and
    /// `opts.backends` do not apply) and a device on it.
    #[cfg(target_arch = "wasm32")]
    pub async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::BROWSER_WEBGPU;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter {
                detail: format!("the browser's WebGPU has no adapter ({e})"),
            })?;
        let mut gpu = Gpu::with_adapter(adapter, false, opts.limits).await?;
        gpu.choose_kernels(opts.kernels)?;
        Ok(gpu)
    }

    /// The device of `adapter`; `coop`: request cooperative matrices where it has them;
    /// `mode`: the limits to request.
    async fn with_adapter(adapter: wgpu::Adapter, coop: bool, mode: LimitsMode) -> Result<Gpu> {
        let info = adapter.get_info();
        let al = adapter.limits();
        // Ask for what the adapter has where the model benefits (big activations, more
        // storage buffers); shaders themselves stay within the portable defaults.
        let limits = match mode {
            LimitsMode::WebGpuDefault => wgpu::Limits::default(),
            LimitsMode::Adapter => wgpu::Limits {
                max_storage_buffer_binding_size: al.max_storage_buffer_binding_size,
                max_buffer_size: al.max_buffer_size,
                max_storage_buffers_per_shader_stage: al.max_storage_buffers_per_shader_stage,
                max_compute_workgroup_storage_size: al.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: al.max_compute_invocations_per_workgroup,
                max_compute_workgroup_size_x: al.max_compute_workgroup_size_x,
                max_compute_workgroup_size_y: al.max_compute_workgroup_size_y,
                max_compute_workgroups_per_dimension: al.max_compute_workgroups_per_dimension,
                ..wgpu::Limits::default()
            },
        };
        let af = adapter.features();
        let mut required = wgpu::Features::empty();
        for f in [
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::SHADER_F16,
            wgpu::Features::SUBGROUP,
        ] {
            if af.contains(f) {
                required |= f;
            }
        }
        // Cooperative matrices: only with f16 (their inputs are f16) and a tile the kernels
        // have (wgpu does not check shaders against the adapter's list, so we choose).
        let mut tiles = CoopTiles::default();
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if coop
            && af.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && required.contains(wgpu::Features::SHADER_F16)
        {
            tiles = CoopTiles::from_properties(&adapter.cooperative_matrix_properties());
            if tiles.any() {
                required |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
                // SAFETY: the experimental feature is used only by the cooperative-matrix
                // GEMM kernels, whose every variant is tested against its f64 twin on the
                // adapters CI has (Mesa 26 lavapipe); wgpu asks callers to opt in.
                experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
            }
        }
        let features = GpuFeatures {
            timestamp_query: required.contains(wgpu::Features::TIMESTAMP_QUERY),
            shader_f16: required.contains(wgpu::Features::SHADER_F16),
            subgroups: required.contains(wgpu::Features::SUBGROUP),
            coop_f16_f32: tiles,
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("finegrain"),
                required_features: required,
                required_limits: limits.clone(),
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        // Errors outside an error scope are collected and surfaced by `check()` instead of
        // aborting the process.
        let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(match reason {
                    wgpu::DeviceLostReason::Destroyed => format!("destroyed ({message})"),
                    _ => message,
                });
            }
        });
        Ok(Gpu {
            adapter,
            device,
            queue,
            info,
            limits,
            limits_mode: mode,
            features,
            class: AdapterClass::GPU,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            errors,
            lost,
            buffers_created: AtomicUsize::new(0),
            bytes_created: AtomicU64::new(0),
            bind_groups_created: AtomicUsize::new(0),
        })
    }

    /// Resolve [`GpuOptions::kernels`] for this adapter, once: the family asked for (an error
    /// where the adapter cannot run it) or its own, and the batch-norm sizing of its type.
    fn choose_kernels(&mut self, asked: Option<KernelFamily>) -> Result<()> {
        let kernels = match asked {
            Some(k) => {
                k.check(self)?;
                k
            }
            None => KernelFamily::auto(self.is_cpu(), self.subgroups_of_8()),
        };
        let bn = if self.is_cpu() {
            BnSizing::Cpu
        } else {
            BnSizing::Gpu
        };
        self.class = AdapterClass { kernels, bn };
        Ok(())
    }

    /// What the launchers choose on this adapter: the convolution kernel family and the
    /// batch-norm sizing.
    pub fn class(&self) -> AdapterClass {
        self.class
    }

    /// The convolution kernel family the launchers use on this adapter.
    pub fn kernels(&self) -> KernelFamily {
        self.class.kernels
    }

    /// One line naming the adapter, backend, type and driver.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let mut opt = Vec::new();
        if self.features.timestamp_query {
            opt.push("timestamps");
        }
        if self.features.shader_f16 {
            opt.push("f16");
        }
        if self.features.subgroups {
            opt.push("subgroups");
        }
        match self.features.coop_f16_f32 {
            CoopTiles {
                t8: true,
                t16: true,
            } => opt.push("coop-matrix 8x8+16x16 f16->f32"),
            CoopTiles { t8: true, .. } => opt.push("coop-matrix 8x8 f16->f32"),
            CoopTiles { t16: true, .. } => opt.push("coop-matrix 16x16 f16->f32"),
            _ => {}
        }
        format!(
            "{} ({:?}, {:?}, driver {} {}; {}max binding {} MiB; features: {})",
            i.name,
            i.backend,
            i.device_type,
            i.driver,
            i.driver_info,
            match self.limits_mode {
                LimitsMode::WebGpuDefault => "WebGPU default limits, ",
                LimitsMode::Adapter => "",
            },
            self.limits.max_storage_buffer_binding_size >> 20,
            if opt.is_empty() {
                "none".to_string()
            } else {
                opt.join(", ")
            }
        )
    }

    /// How many buffers and bind groups finegrain has created on this device so far (the
    /// training loop must create none per step; a test checks that).
    pub fn created(&self) -> (usize, usize) {
        (
            self.buffers_created.load(Ordering::Relaxed),
            self.bind_groups_created.load(Ordering::Relaxed),
        )
    }

    /// Bytes of all the buffers finegrain has created on this device so far (never
    /// decreases: dropping a buffer does not subtract it).
    pub fn bytes_created(&self) -> u64 {
        self.bytes_created.load(Ordering::Relaxed)
    }

    pub(crate) fn count_buffer(&self, bytes: u64) {
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.bytes_created.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count_bind_group(&self) {
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
    }

    /// A host-mappable buffer for reading results back (`MAP_READ | COPY_DST`).
    pub fn staging_buffer(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.count_buffer(size);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// True when the device has subgroup operations and every subgroup is 8 invocations
    /// wide (lavapipe on x86-64: one subgroup per 256-bit SIMD vector), what the subgroup
    /// convolution kernels need.
    pub fn subgroups_of_8(&self) -> bool {
        self.features.subgroups
            && self.info.subgroup_min_size == 8
            && self.info.subgroup_max_size == 8
    }

    /// The width of the cooperative-matrix kernels' virtual subgroups (their `SG`): the
    /// adapter's largest subgroup width rounded up to a power of two, 64 where the adapter
    /// does not say; `None` above 64 (a workgroup of 4 x SG would pass 256 invocations).
    pub fn coop_lanes(&self) -> Option<u32> {
        match self.info.subgroup_max_size {
            0 => Some(64),
            w if w <= 64 => Some(w.next_power_of_two().max(4)),
            _ => None,
        }
    }

    /// The adapter's subgroup widths in words, for messages.
    pub fn subgroup_sizes(&self) -> String {
        let (lo, hi) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        if !self.features.subgroups {
            "no subgroup operations".to_string()
        } else if lo == hi {
            format!("subgroups of {lo}")
        } else {
            format!("subgroups of {lo} to {hi}")
        }
    }

    /// True when the adapter is a CPU implementation (lavapipe, WARP, ...).
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Return (and clear) GPU errors raised outside error scopes.
    pub fn check(&self, context: &str) -> Result<()> {
        self.check_lost(context)?;
        let mut v = self.errors.lock().map_err(|_| Error::Gpu {
            context: context.into(),
            message: "error sink poisoned".into(),
        })?;
        if v.is_empty() {
            Ok(())
        } else {
            let message = v.join("\n");
            v.clear();
            Err(Error::Gpu {
                context: context.into(),
                message,
            })
        }
    }

    /// An error when the device has been lost (driver reset, GPU removed, `destroy`).
    pub fn check_lost(&self, context: &str) -> Result<()> {
        match self.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Err(Error::DeviceLost {
                context: context.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Submit the queued buffer writes ([`Gpu::upload`] only stages them, in memory that is
    /// freed once a submission carrying them completes) and wait for them: a loader that
    /// writes many tensors calls this, so that repeated loads without training in between
    /// do not accumulate staged copies, and a lost device shows up at load time.
    pub fn flush(&self) -> Result<()> {
        self.queue.submit([]);
        self.wait()
    }

    /// Wait until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                context: "device.poll".into(),
                message: e.to_string(),
            })?;
        self.check("submitted work")
    }

    /// A new command encoder.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Record `dispatches` into one compute pass of `encoder`, in order.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        dispatches: &[&Dispatch],
    ) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for d in dispatches {
            d.record(&mut pass);
        }
    }

    /// Record, submit and wait for `dispatches` (tests and one-off work; the training loop
    /// records into its own encoder and never waits mid-step).
    pub fn run(&self, dispatches: &[&Dispatch]) -> Result<()> {
        let mut enc = self.encoder("finegrain.run");
        self.record(&mut enc, "finegrain.run", dispatches);
        self.queue.submit([enc.finish()]);
        self.wait()
    }

    /// Split `workgroups` over x and y so that no dimension exceeds the adapter limit.
    /// Shaders reconstruct the linear workgroup index as `wg.y * num_workgroups.x + wg.x`.
    pub fn grid(&self, workgroups: u64) -> [u32; 3] {
        let maxd = self.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        let w = workgroups.max(1);
        if w <= maxd {
            [w as u32, 1, 1]
        } else {
            let y = w.div_ceil(maxd);
            let x = w.div_ceil(y);
            [x as u32, y as u32, 1]
        }
    }

    /// Grid for a one-thread-per-element kernel with workgroup size [`WG`].
    pub fn grid_for(&self, elements: usize) -> [u32; 3] {
        self.grid((elements as u64).div_ceil(WG as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::{Backend, Backends, DeviceType};

    fn info(name: &str, backend: Backend, device_type: DeviceType) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: name.into(),
            vendor: 0,
            device: 0,
            device_type,
            device_pci_bus_id: String::new(),
            driver: String::new(),
            driver_info: String::new(),
            backend,
            subgroup_min_size: 0,
            subgroup_max_size: 0,
            transient_saves_memory: None,
            limit_bucket: None,
        }
    }

    fn opts(backends: Option<Backends>, name: Option<&str>) -> GpuOptions {
        GpuOptions {
            backends,
            adapter_name: name.map(String::from),
            ..GpuOptions::default()
        }
    }

    fn llvmpipe_gl() -> wgpu::AdapterInfo {
        info(
            "llvmpipe (LLVM 19.1.7, 256 bits)",
            Backend::Gl,
            DeviceType::Cpu,
        )
    }

    #[test]
    fn software_gl_alone_is_refused_unless_gl_was_asked_for() {
        let found = [llvmpipe_gl()];
        // Nothing asked for (Gpu::new fell back to the secondary backends).
        let e = choose_adapter(&found, &opts(None, None), Backends::SECONDARY).unwrap_err();
        assert!(matches!(e, Error::SoftwareGl { .. }), "{e:?}");
        let msg = e.to_string();
        for want in ["llvmpipe", "software OpenGL", "lavapipe", "WGPU_BACKEND=gl"] {
            assert!(msg.contains(want), "`{want}` missing from: {msg}");
        }
        // Asked for by adapter name only: still refused (the backend was not asked for).
        let by_name = choose_adapter(&found, &opts(None, Some("llvm")), Backends::SECONDARY);
        assert!(matches!(by_name, Err(Error::SoftwareGl { .. })));
        // Asked for through the backend (WGPU_BACKEND=gl, or GL among others): taken, with a
        // warning that names the adapter and lavapipe.
        for b in [
            Backends::GL,
            Backends::all(),
            Backends::VULKAN | Backends::GL,
        ] {
            let c = choose_adapter(&found, &opts(Some(b), None), b).unwrap();
            assert_eq!(c.index, 0);
            let w = c.warning.expect("a warning");
            assert!(w.contains("llvmpipe") && w.contains("lavapipe"), "{w}");
        }
        // A software GL adapter that only says so by its name.
        let named = [info("softpipe", Backend::Gl, DeviceType::Other)];
        assert!(matches!(
            choose_adapter(&named, &opts(None, None), Backends::SECONDARY),
            Err(Error::SoftwareGl { .. })
        ));
    }

    #[test]
    fn device_index_spreads_ranks_over_the_best_adapters() {
        let found = [
            info("NVIDIA H200", Backend::Gl, DeviceType::DiscreteGpu),
            info("NVIDIA H200", Backend::Vulkan, DeviceType::DiscreteGpu),
            info("llvmpipe", Backend::Vulkan, DeviceType::Cpu),
            info("NVIDIA H200", Backend::Vulkan, DeviceType::DiscreteGpu),
        ];
        let pick = |n: Option<usize>| {
            let o = GpuOptions {
                device_index: n,
                ..opts(None, None)
            };
            choose_adapter(&found, &o, Backends::PRIMARY).unwrap().index
        };
        // The two Vulkan GPUs, in turn; never the GL duplicate or the CPU adapter.
        assert_eq!(pick(None), 1);
        assert_eq!(
            [0, 1, 2, 3].map(|n| pick(Some(n))),
            [1, 3, 1, 3],
            "rank n takes the n-th best adapter, modulo their count"
        );
        // One adapter (lavapipe alone): every rank shares it.
        let one = [info("llvmpipe", Backend::Vulkan, DeviceType::Cpu)];
        let o = GpuOptions {
            device_index: Some(5),
            ..opts(None, None)
        };
        assert_eq!(
            choose_adapter(&one, &o, Backends::PRIMARY).unwrap().index,
            0
        );
    }

    #[test]
    fn hardware_gl_and_lavapipe_are_taken_without_a_warning() {
        let gl_gpu = [info(
            "Mesa Intel(R) UHD 620",
            Backend::Gl,
            DeviceType::IntegratedGpu,
        )];
        let c = choose_adapter(&gl_gpu, &opts(None, None), Backends::SECONDARY).unwrap();
        assert_eq!(
            c,
            AdapterChoice {
                index: 0,
                warning: None
            }
        );
        let lavapipe = [info(
            "llvmpipe (LLVM 19.1.7, 256 bits)",
            Backend::Vulkan,
            DeviceType::Cpu,
        )];
        let c = choose_adapter(&lavapipe, &opts(None, None), Backends::PRIMARY).unwrap();
        assert_eq!(
            c,
            AdapterChoice {
                index: 0,
                warning: None
            }
        );
        // Vulkan's llvmpipe (lavapipe) beats GL's even when GL is allowed.
        let both = [llvmpipe_gl(), lavapipe[0].clone()];
        let all = Backends::all();
        let c = choose_adapter(&both, &opts(Some(all), None), all).unwrap();
        assert_eq!(
            c,
            AdapterChoice {
                index: 1,
                warning: None
            }
        );
    }

    #[test]
    fn real_gpus_beat_software_and_names_filter() {
        let found = [
            info("noop", Backend::Noop, DeviceType::Other),
            info("llvmpipe", Backend::Vulkan, DeviceType::Cpu),
            info("Intel Arc", Backend::Vulkan, DeviceType::IntegratedGpu),
            info("NVIDIA H200", Backend::Vulkan, DeviceType::DiscreteGpu),
            info("NVIDIA H200", Backend::Gl, DeviceType::DiscreteGpu),
        ];
        let all = Backends::all();
        let pick = |name: Option<&str>| choose_adapter(&found, &opts(Some(all), name), all);
        assert_eq!(pick(None).unwrap().index, 3);
        assert_eq!(pick(Some("LLVMPIPE")).unwrap().index, 1);
        assert_eq!(pick(Some("arc")).unwrap().index, 2);
        let e = pick(Some("M2 Max")).unwrap_err().to_string();
        assert!(e.contains("M2 Max") && e.contains("NVIDIA H200"), "{e}");
        let e = choose_adapter(&[], &opts(None, None), Backends::PRIMARY)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no adapter") && e.contains("lavapipe"), "{e}");
    }

    #[test]
    fn backend_names_parse_and_errors_name_the_field() {
        assert_eq!(GpuOptions::parse_backend("GL").unwrap(), Backends::GL);
        assert_eq!(GpuOptions::parse_backend("vk").unwrap(), Backends::VULKAN);
        let e = GpuOptions::parse_backend("glide").unwrap_err().to_string();
        assert!(
            e.contains("backend") && e.contains("glide") && !e.contains("--"),
            "{e}"
        );
    }
}

/// The numeric format a [`Network`](crate::train::Network) computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every tensor f32, every kernel f32.
    #[default]
    F32,
    /// Automatic mixed precision: f32 master weights, momentum and SGD; activations and the
    /// tensors saved for backward stored in f16; the convolutions and the head on the
    /// GPU's matrix units (cooperative matrices) where the adapter has a matching
    /// configuration, else f16 storage with f32 arithmetic; batch-norm statistics, the
    /// diversification block, the loss and every reduction in f32; dynamic loss scaling
    /// (skipped steps are counted). Needs an adapter with `shader-f16`.
    Mixed,
}

impl Precision {
    /// `f32` or `mixed`, as the flags and checkpoints spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        }
    }

    /// From [`Precision::name`]'s spelling; `what` names the source in the error.
    pub fn parse(s: &str, what: &'static str) -> Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "mixed" => Ok(Precision::Mixed),
            other => Err(Error::invalid(
                what,
                format!("precision `{other}`: expected `f32` or `mixed`"),
            )),
        }
    }

    /// The element type of activations and their gradients.
    pub fn activations(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Mixed => DType::F16,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Precision> {
        Precision::parse(s, "precision")
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
