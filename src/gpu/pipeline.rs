//! Shader sources, the pipeline cache, and [`Dispatch`]: a pipeline, its bind group and its
//! workgroup count, built once at setup and recorded many times.

use super::{Gpu, Tensor};
use crate::error::{Error, Result};
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// A WGSL file from `shaders/`, embedded with `include_str!`.
#[derive(Clone, Copy, Debug)]
pub struct ShaderSource {
    /// File stem, e.g. `gemm`; also the shader module's label.
    pub name: &'static str,
    pub source: &'static str,
}

impl ShaderSource {
    /// True when the module uses subgroup operations (`subgroupBroadcast`, the
    /// `subgroup_size` built-in).
    pub(crate) fn uses_subgroups(&self) -> bool {
        self.source.contains("subgroupBroadcast") || self.source.contains("subgroup_size")
    }

    /// The module's WGSL as a browser's compiler must see it. The WGSL standard asks for
    /// `enable subgroups;` before any subgroup operation, which naga 30 does not implement
    /// (it refuses the directive), so [`ShaderSource::source`] leaves it out and this adds
    /// it, with `diagnostic(off, subgroup_uniformity);`: the subgroup convolutions call
    /// `subgroupBroadcast` after a lane-dependent early return that is taken by whole
    /// subgroups only (`if (!subgroupAny(ok)) { return; }`), which the standard's
    /// uniformity analysis cannot prove and Tint (Chrome's compiler) otherwise rejects.
    /// Both go at the start of the first line, so that line numbers in messages stay the
    /// file's.
    pub fn browser_source(&self) -> String {
        if !self.uses_subgroups() {
            return self.source.to_string();
        }
        format!(
            "enable subgroups; diagnostic(off, subgroup_uniformity); {}",
            self.source
        )
    }

    /// The optional device features the module needs, by WebGPU's names: `shader-f16`,
    /// `subgroups`, and wgpu's experimental `cooperative-matrix` (native only).
    pub fn features(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.source.contains("enable f16;") {
            f.push("shader-f16");
        }
        if self.uses_subgroups() {
            f.push("subgroups");
        }
        if self.source.contains("enable wgpu_cooperative_matrix;") {
            f.push("cooperative-matrix");
        }
        f
    }

    /// The compute entry points of the module (none for the fragments that are only ever
    /// appended to another module).
    pub fn entry_points(&self) -> Result<Vec<String>> {
        Ok(self
            .validate()?
            .entry_points
            .iter()
            .filter(|e| e.stage == naga::ShaderStage::Compute)
            .map(|e| e.name.clone())
            .collect())
    }

    /// The WGSL to hand `backend`'s device: [`ShaderSource::browser_source`] for a
    /// browser's WebGPU, the source itself for wgpu's own (native) backends.
    pub(crate) fn for_backend(&self, backend: wgpu::Backend) -> std::borrow::Cow<'static, str> {
        if backend == wgpu::Backend::BrowserWebGpu {
            self.browser_source().into()
        } else {
            self.source.into()
        }
    }

    /// Parse and validate with naga; the error message names the shader and the line.
    pub fn validate(&self) -> Result<naga::Module> {
        let module = naga::front::wgsl::parse_str(self.source).map_err(|e| Error::Shader {
            shader: self.name.to_string(),
            message: e
                .emit_to_string_with_path(self.source, &format!("shaders/{}.wgsl", self.name)),
        })?;
        let mut v = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default()
                | naga::valid::Capabilities::SUBGROUP
                | naga::valid::Capabilities::SHADER_FLOAT16
                | naga::valid::Capabilities::COOPERATIVE_MATRIX,
        );
        v.validate(&module).map_err(|e| Error::Shader {
            shader: self.name.to_string(),
            message: e
                .emit_to_string_with_path(self.source, &format!("shaders/{}.wgsl", self.name)),
        })?;
        Ok(module)
    }
}

/// A recorded-many-times GPU dispatch: one entry point, one bind group, fixed workgroups.
/// Binding 0 of every kernel is its uniform parameter block; bindings 1.. are the tensors
/// in the order the launcher passes them.
pub struct Dispatch {
    /// `shader.entry`, used as pass label and profiler row.
    pub name: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// The uniform parameter buffer (kept alive; may be rewritten with `set_params`).
    pub params: wgpu::Buffer,
}

impl Dispatch {
    /// Record this dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

fn pad16(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    let n = v.len().div_ceil(16).max(1) * 16;
    v.resize(n, 0);
    v
}

impl Gpu {
    /// Run `f` (which creates a wgpu object) inside a validation error scope and return its
    /// first validation error. In a browser a scope's result arrives only once control has
    /// returned to the page's event loop, so there no scope is pushed: the error reaches
    /// the device's uncaptured-error sink, and the next [`Gpu::check`] reports it.
    pub(crate) fn validated<T>(&self, f: impl FnOnce() -> T) -> (T, Option<wgpu::Error>) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let value = f();
            (value, pollster::block_on(scope.pop()))
        }
        #[cfg(target_arch = "wasm32")]
        {
            (f(), None)
        }
    }

    /// The compute pipeline for `shader`'s `entry`, compiled once and cached.
    pub fn pipeline(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        self.pipeline_with(shader, entry, &[])
    }

    /// As [`Gpu::pipeline`], with values for the shader's `override` constants (one
    /// pipeline per distinct set, cached).
    pub(crate) fn pipeline_with(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (
            shader.name,
            entry,
            constants
                .iter()
                .map(|&(n, v)| (n, v.to_bits()))
                .collect::<Vec<_>>(),
        );
        if let Some(p) = self
            .pipelines
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(p);
        }
        let module = self.module(shader)?;
        let label = match constants {
            [] => format!("{}.{}", shader.name, entry),
            c => format!(
                "{}.{}({})",
                shader.name,
                entry,
                c.iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let (p, error) = self.validated(|| {
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&label),
                    layout: None,
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants,
                        ..Default::default()
                    },
                    cache: None,
                })
        });
        if let Some(e) = error {
            return Err(Error::Shader {
                shader: label,
                message: e.to_string(),
            });
        }
        let p = Arc::new(p);
        if let Ok(mut m) = self.pipelines.lock() {
            m.insert(key, p.clone());
        }
        Ok(p)
    }

    fn module(&self, shader: &ShaderSource) -> Result<Arc<wgpu::ShaderModule>> {
        if let Some(m) = self
            .modules
            .lock()
            .ok()
            .and_then(|m| m.get(shader.name).cloned())
        {
            return Ok(m);
        }
        shader.validate()?;
        // wgpu by default wraps every loop in a 64-bit iteration counter ("loop bounding"), so
        // that a driver may not treat an infinite loop as unreachable. Inside our innermost
        // reduction loops that counter is a branch per iteration, which CPU adapters such as
        // lavapipe cannot hide (it cost a fifth of the tiny model's training step). Our
        // shaders are our own and every loop in them runs to a trip count computed from the
        // dispatch's `Params` (tensor shapes), so the counter is dropped; buffer bounds checks,
        // integer-division guards and every other runtime check stay on.
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        // SAFETY: loop bounding is the only check turned off, and no loop in `shaders/` can
        // run forever (see above; the shader tests run every entry point to completion).
        let source = shader.for_backend(self.info.backend);
        let (m, error) = self.validated(|| unsafe {
            self.device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(source),
                },
                checks,
            )
        });
        if let Some(e) = error {
            return Err(Error::Shader {
                shader: shader.name.to_string(),
                message: e.to_string(),
            });
        }
        let m = Arc::new(m);
        if let Ok(mut c) = self.modules.lock() {
            c.insert(shader.name, m.clone());
        }
        Ok(m)
    }

    /// Build a [`Dispatch`]: `params` goes to binding 0 (uniform), `tensors[i]` to binding
    /// `i + 1` (storage). Every binding the entry point declares must be given, and only those.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        params: &P,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let buffers: Vec<&wgpu::Buffer> = tensors.iter().map(|t| &t.buffer).collect();
        self.dispatch_buffers(shader, entry, params, &buffers, workgroups)
    }

    /// As [`Gpu::dispatch`], with each tensor's binding number given (for entry points
    /// that bind a subset of their shader's slots, with gaps).
    pub(crate) fn dispatch_slots<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        params: &P,
        tensors: &[(u32, &Tensor)],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let buffers: Vec<(u32, &wgpu::Buffer)> =
            tensors.iter().map(|(s, t)| (*s, &t.buffer)).collect();
        let pipeline = self.pipeline(shader, entry)?;
        self.dispatch_at(shader, entry, pipeline, params, &buffers, workgroups)
    }

    /// As [`Gpu::dispatch`], with values for the shader's `override` constants.
    pub(crate) fn dispatch_with<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        tensors: &[&Tensor],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let buffers: Vec<&wgpu::Buffer> = tensors.iter().map(|t| &t.buffer).collect();
        let pipeline = self.pipeline_with(shader, entry, constants)?;
        self.dispatch_pipeline(shader, entry, pipeline, params, &buffers, workgroups)
    }

    /// As [`Gpu::dispatch`], with raw buffers.
    pub(crate) fn dispatch_buffers<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let pipeline = self.pipeline(shader, entry)?;
        self.dispatch_pipeline(shader, entry, pipeline, params, buffers, workgroups)
    }

    fn dispatch_pipeline<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        pipeline: Arc<wgpu::ComputePipeline>,
        params: &P,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let slots: Vec<(u32, &wgpu::Buffer)> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32 + 1, *b))
            .collect();
        self.dispatch_at(shader, entry, pipeline, params, &slots, workgroups)
    }

    fn dispatch_at<P: bytemuck::Pod>(
        &self,
        shader: &ShaderSource,
        entry: &'static str,
        pipeline: Arc<wgpu::ComputePipeline>,
        params: &P,
        buffers: &[(u32, &wgpu::Buffer)],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        let name = format!("{}.{}", shader.name, entry);
        let maxd = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > maxd) {
            return Err(Error::invalid_in(
                "dispatch",
                format!("`{name}`"),
                format!("workgroups {workgroups:?} exceed the adapter limit {maxd} per dimension"),
            ));
        }
        let contents = pad16(bytemuck::bytes_of(params));
        self.count_buffer(contents.len() as u64);
        self.count_bind_group();
        let params_buf = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("{name}.params")),
                contents: &contents,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params_buf.as_entire_binding(),
        }];
        for (slot, b) in buffers {
            entries.push(wgpu::BindGroupEntry {
                binding: *slot,
                resource: b.as_entire_binding(),
            });
        }
        let (bind_group, error) = self.validated(|| {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&name),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        });
        if let Some(e) = error {
            return Err(Error::Gpu {
                context: format!("bind group for `{name}`"),
                message: e.to_string(),
            });
        }
        Ok(Dispatch {
            name,
            pipeline,
            bind_group,
            workgroups,
            params: params_buf,
        })
    }
}
