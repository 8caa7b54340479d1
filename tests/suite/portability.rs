//! Every shader in `shaders/` parses and validates with naga and translates to MSL (Metal),
//! HLSL (DX12) and SPIR-V (Vulkan). This is how CI shows the shaders are portable without
//! those machines. It also checks the portable limits DESIGN.md names: at most 16 KiB of
//! workgroup memory, 256 invocations per workgroup, 8 storage buffers per entry point, no f64.

use finegrain::kernels::ALL_SHADERS;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

fn validate(name: &str, src: &str) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    // Subgroup operations are allowed: only `conv2d_subgroup` uses them, and the launchers
    // pick it only on adapters whose subgroups are 8 wide. f16 and cooperative matrices
    // are allowed in the mixed-precision GEMMs, chosen only where the adapter has them.
    let caps =
        Capabilities::SUBGROUP | Capabilities::SHADER_FLOAT16 | Capabilities::COOPERATIVE_MATRIX;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    // Override constants at the largest value a launcher sets (the cooperative-matrix
    // GEMM's virtual-subgroup width SG is at most 64), so that the workgroup size and
    // memory checked below are the largest a pipeline gets.
    let mut constants = naga::back::PipelineConstants::default();
    for (_, o) in module.overrides.iter() {
        if let Some(n) = &o.name {
            assert_eq!(
                n, "SG",
                "{name}: unknown override `{n}`: give it its largest value here"
            );
            constants.insert(n.clone(), 64.0);
        }
    }
    let (module, info) =
        naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
            .unwrap_or_else(|e| panic!("{name}: overrides: {e}"));
    (module.into_owned(), info.into_owned())
}

/// Cooperative matrices exist in SPIR-V and MSL only (wgpu: Vulkan and Metal).
fn uses_coop(src: &str) -> bool {
    src.contains("enable wgpu_cooperative_matrix")
}

fn type_size(module: &naga::Module, ty: naga::Handle<naga::Type>) -> u32 {
    module.types[ty].inner.size(module.to_ctx())
}

#[test]
fn every_shader_file_is_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        let stem = f.trim_end_matches(".wgsl");
        // A shader of the file's name, or one that embeds the file (coop_tiles.wgsl is a
        // body that needs an accessor file appended to be a module).
        let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        assert!(
            ALL_SHADERS
                .iter()
                .any(|s| s.name == stem || s.source.contains(&text)),
            "shaders/{f} is neither listed in finegrain::kernels::ALL_SHADERS nor embedded in one"
        );
    }
}

#[test]
fn shaders_translate_to_msl_hlsl_spirv_within_portable_limits() {
    for s in ALL_SHADERS {
        let (module, info) = validate(s.name, s.source);
        assert!(
            !s.source.contains("f64"),
            "{}: f64 is not available on Metal",
            s.name
        );

        // Workgroup memory and invocation limits.
        let wg_bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| type_size(&module, v.ty))
            .sum();
        assert!(
            wg_bytes <= 16384,
            "{}: {wg_bytes} bytes of workgroup memory > 16 KiB",
            s.name
        );
        for ep in &module.entry_points {
            let inv: u32 = ep.workgroup_size.iter().product();
            assert!(
                inv <= 256,
                "{}.{}: {inv} invocations > 256",
                s.name,
                ep.name
            );
        }
        let storage = module
            .global_variables
            .iter()
            .filter(|(_, v)| matches!(v.space, naga::AddressSpace::Storage { .. }))
            .count();
        assert!(storage <= 8, "{}: {storage} storage buffers > 8", s.name);

        // SPIR-V (Vulkan).
        spv::write_vec(&module, &info, &spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", s.name));

        // MSL (Metal), per entry point with explicit buffer bindings.
        for ep in module.entry_points.iter() {
            let mut resources = std::collections::BTreeMap::new();
            for (_, v) in module.global_variables.iter() {
                if let Some(rb) = &v.binding {
                    resources.insert(
                        *rb,
                        msl::BindTarget {
                            buffer: Some(rb.binding as u8),
                            ..Default::default()
                        },
                    );
                }
            }
            let mut per_ep = msl::EntryPointResourceMap::default();
            per_ep.insert(
                ep.name.clone(),
                msl::EntryPointResources {
                    resources,
                    sizes_buffer: Some(28),
                    ..Default::default()
                },
            );
            let opts = msl::Options {
                lang_version: (2, 4),
                per_entry_point_map: per_ep,
                fake_missing_bindings: false,
                ..Default::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some((ep.stage, ep.name.clone())),
                ..Default::default()
            };
            msl::write_string(&module, &info, &opts, &pipeline)
                .unwrap_or_else(|e| panic!("{}.{}: MSL: {e:?}", s.name, ep.name));
        }

        // HLSL (DX12): no cooperative matrices there (wgpu offers them on Vulkan and
        // Metal); the f32 path and the f16-storage GEMM must translate.
        if uses_coop(s.source) {
            continue;
        }
        let mut out = String::new();
        // Shader model 6.0: the first with wave (subgroup) intrinsics; what DXC targets.
        // 6.2 for f16 (native 16-bit types).
        let shader_model = if s.source.contains("enable f16") {
            hlsl::ShaderModel::V6_2
        } else {
            hlsl::ShaderModel::V6_0
        };
        let ho = hlsl::Options {
            shader_model,
            ..Default::default()
        };
        let hp = hlsl::PipelineOptions::default();
        let mut w = hlsl::Writer::new(&mut out, &ho, &hp);
        w.write(&module, &info, None)
            .unwrap_or_else(|e| panic!("{}: HLSL: {e:?}", s.name));
    }
}
