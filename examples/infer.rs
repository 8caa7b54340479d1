//! Inference: top-5 classes with probabilities for image files or folders, batched on the
//! GPU, optionally with class activation maps overlaid on each image.
//!
//!     cargo run --release --example infer -- path/to/image.png path/to/folder
//!     cargo run --release --example infer -- --weights runs/run-1/last.safetensors --cam cams/ images/
//!
//! Without `--weights` it uses the model shipped in `weights/` (trained with the train example).
//! Everything but argument parsing and printing is `finegrain::classify::Classifier`.

use clap::Parser;
use finegrain::classify::Classifier;
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

mod common;

const DEFAULT_WEIGHTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/weights/fashion-mnist-tiny.safetensors"
);

/// Classify images with a finegrain model on the GPU.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Image files (PNG, JPEG) or folders of them.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Model checkpoint (safetensors written by the train example). Default: the shipped
    /// Fashion-MNIST model in weights/.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Write a class-activation-map overlay PNG per image into this folder.
    #[arg(long)]
    cam: Option<PathBuf>,
    /// How many top classes' maps each overlay shows.
    #[arg(long, default_value_t = 3)]
    cam_classes: usize,
    /// Graphics backend: vulkan, metal, dx12, gl, auto.
    #[arg(long)]
    backend: Option<String>,
    /// Part of the adapter name to use.
    #[arg(long)]
    adapter: Option<String>,
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Numeric precision of the inference network: f32 or mixed (f16 activations).
    /// Default: the precision the checkpoint was trained in.
    #[arg(long)]
    precision: Option<finegrain::Precision>,
    /// Print one JSON object per image on standard output ({"file", "top": [{"class",
    /// "name", "probability", "score"}]}), and everything else on standard error.
    #[arg(long)]
    json: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main(Args::parse()) {
        common::report(&e);
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<()> {
    if args.top == 0 || args.cam_classes == 0 || args.threads == Some(0) {
        return Err(Error::invalid(
            "--top, --cam-classes, --threads",
            "must be at least 1",
        ));
    }
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS));
    let files = finegrain::data::image_files(&args.images)?;
    let gopts = GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let gpu = Gpu::new(&gopts)?;
    // With --json, standard output carries only the results.
    let info = |line: String| {
        if args.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    info(format!("device: {}", gpu.describe()));
    let ck = finegrain::checkpoint::Checkpoint::open(&weights)?;
    let precision = args.precision.unwrap_or(ck.precision());
    let batch = args.batch.min(files.len()).max(1);
    let clf = Classifier::from_checkpoint_with_precision(&gpu, &ck, batch, precision)?;
    info(format!(
        "model: {} classes from {}, precision {precision}",
        clf.classes().len(),
        weights.display()
    ));
    if let Some(d) = &args.cam {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let (mut done, mut skipped, mut gpu_secs) = (0usize, 0usize, 0.0);
    let t0 = Instant::now();
    for chunk in files.chunks(clf.batch()) {
        let mut inputs = Vec::new();
        let mut ok = Vec::new();
        for (f, r) in chunk.iter().zip(clf.prepare_all(chunk, threads)) {
            match r {
                Ok(v) => {
                    inputs.extend(v);
                    ok.push(f);
                }
                Err(e) => {
                    eprintln!("warning: skipped {e}"); // the error names the file
                    skipped += 1;
                }
            }
        }
        let tg = Instant::now();
        let maps = if args.cam.is_some() {
            args.cam_classes
        } else {
            0
        };
        let results = clf.classify_with_maps(&gpu, &inputs, args.top, maps)?;
        gpu_secs += tg.elapsed().as_secs_f64();
        for (i, (f, (pred, class_maps))) in ok.iter().zip(&results).enumerate() {
            if args.json {
                let top: Vec<_> = pred
                    .top
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "class": c.class,
                            "name": c.name,
                            "probability": c.probability,
                            "score": c.score,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "file": f.display().to_string(), "top": top })
                );
            } else {
                let line: Vec<String> = pred
                    .top
                    .iter()
                    .map(|c| format!("{} {:.1}%", c.name, 100.0 * c.probability))
                    .collect();
                println!("{}: {}", f.display(), line.join(", "));
            }
            if let Some(dir) = &args.cam {
                let input = &inputs[i * clf.input_len()..(i + 1) * clf.input_len()];
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "image".into());
                let out = dir.join(format!("{:05}_{stem}_cam.png", done + i));
                finegrain::viz::save_png(&out, &clf.cam_image(input, pred, class_maps))?;
            }
        }
        done += ok.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    info(format!(
        "{done} images in {secs:.2} s: {:.1} images/s end to end, {:.1} images/s on the GPU{}",
        done as f64 / secs.max(1e-9),
        done as f64 / gpu_secs.max(1e-9),
        if skipped > 0 {
            format!(" ({skipped} unreadable files skipped)")
        } else {
            String::new()
        }
    ));
    if let Some(d) = &args.cam {
        info(format!("class activation maps written to {}", d.display()));
    }
    if done == 0 {
        return Err(Error::invalid(
            "IMAGES",
            "none of the given images could be read",
        ));
    }
    Ok(())
}
