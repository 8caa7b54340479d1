//! The exact WGSL of every shader module finegrain builds (the sources in `shaders/` are
//! glued together by macros in `finegrain::kernels`), for reading and for other compilers.
//!
//!     cargo run --example wgsl -- --list                 # module, features, entry points
//!     cargo run --example wgsl -- conv2d_subgroup        # one module's WGSL on stdout
//!     cargo run --example wgsl -- --out DIR [--spirv]    # every module into DIR
//!
//! `--out` writes `NAME.wgsl` as a browser's compiler must see it (with `enable subgroups;`
//! where the module uses subgroups; naga itself refuses that directive) and `manifest.json`:
//! one entry per module with its file, the features it needs and its compute entry points
//! (the pipelines finegrain creates from it). `--spirv` adds naga's SPIR-V of every complete
//! module but the cooperative-matrix ones (`NAME.spv`), for `spirv-val`.

use clap::Parser;
use finegrain::kernels::ALL_SHADERS;
use finegrain::{Error, Result};
use std::path::PathBuf;

/// Print or write the assembled WGSL of finegrain's shader modules.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Print this module's WGSL (as naga compiles it natively).
    module: Option<String>,
    /// List every module with the features it needs and its entry points.
    #[arg(long)]
    list: bool,
    /// Write every module (browser form) and manifest.json into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With --out: also write naga's SPIR-V of every complete module.
    #[arg(long)]
    spirv: bool,
}

fn main() {
    if let Err(e) = real_main(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<()> {
    if let Some(name) = &args.module {
        let s = ALL_SHADERS.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = ALL_SHADERS.iter().map(|s| s.name).collect();
            Error::invalid(
                "MODULE",
                format!("`{name}` is not one of {}", names.join(", ")),
            )
        })?;
        print!("{}", s.source);
        return Ok(());
    }
    if args.list {
        for s in ALL_SHADERS {
            println!(
                "{:28} {:40} {}",
                s.name,
                s.features().join(","),
                s.entry_points()?.join(" ")
            );
        }
        return Ok(());
    }
    let Some(dir) = &args.out else {
        return Err(Error::invalid(
            "arguments",
            "give a MODULE, --list or --out DIR",
        ));
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut manifest = Vec::new();
    for s in ALL_SHADERS {
        let file = format!("{}.wgsl", s.name);
        let path = dir.join(&file);
        std::fs::write(&path, s.browser_source()).map_err(|e| Error::io(&path, e))?;
        let entries = s.entry_points()?;
        // The cooperative-matrix modules are left out: their tile width is an override
        // that the launcher sets per adapter, and naga's SPIR-V writer takes modules with
        // every override resolved.
        let coop = s.features().contains(&"cooperative-matrix");
        if args.spirv && !entries.is_empty() && !coop {
            let spv = spirv(s)?;
            let path = dir.join(format!("{}.spv", s.name));
            std::fs::write(&path, bytemuck::cast_slice::<u32, u8>(&spv))
                .map_err(|e| Error::io(&path, e))?;
        }
        manifest.push(serde_json::json!({
            "name": s.name,
            "file": file,
            "features": s.features(),
            "entries": entries,
        }));
    }
    let path = dir.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("a JSON value serialises");
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    println!("{} modules written to {}", ALL_SHADERS.len(), dir.display());
    Ok(())
}

/// naga's SPIR-V 1.3 of one module (the version wgpu's Vulkan backend writes on Vulkan 1.1
/// and later, and the first with subgroup operations).
fn spirv(s: &finegrain::gpu::ShaderSource) -> Result<Vec<u32>> {
    let module = s.validate()?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| Error::Shader {
        shader: s.name.into(),
        message: e.to_string(),
    })?;
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    naga::back::spv::write_vec(&module, &info, &options, None).map_err(|e| Error::Shader {
        shader: s.name.into(),
        message: e.to_string(),
    })
}
