//! Inference: top-5 classes with probabilities for image files or folders, batched on the
//! GPU, optionally with class activation maps overlaid on each image.
//!
//!     cargo run --release --example infer -- path/to/image.png path/to/folder
//!     cargo run --release --example infer -- --weights runs/default/last.safetensors --cam cams/ images/
//!
//! Without `--weights` it uses the model shipped in `weights/` (trained with the train example).

use clap::Parser;
use finegrain::checkpoint::Checkpoint;
use finegrain::data::{read_image, Augment, ImageU8};
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::train::run::{class_names_of, preprocessing_of};
use finegrain::train::Predictor;
use finegrain::{Error, Result};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Decode and preprocess one image as the checkpoint's test images were.
fn decode(f: &Path, aug: &Augment) -> Result<Vec<f32>> {
    let (data, w, h) = read_image(f, aug.channels)?;
    let src = ImageU8 {
        data: &data,
        width: w,
        height: h,
        channels: aug.channels,
    };
    let mut out = vec![0.0; aug.sample_len()];
    // Evaluation preprocessing draws nothing from the generator.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    aug.apply(&src, false, &mut rng, &mut out)?;
    Ok(out)
}

/// `decode` every file on `threads` threads, results in file order. A decoder that panics
/// on a malformed file makes that file's error, not the program's.
fn decode_all(files: &[PathBuf], aug: &Augment, threads: usize) -> Vec<Result<Vec<f32>>> {
    let per = files.len().div_ceil(threads).max(1);
    let one = |f: &PathBuf| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(f, aug)))
            .unwrap_or_else(|_| Err(Error::format(f, "the image decoder panicked on this file")))
    };
    std::thread::scope(|s| {
        let parts: Vec<_> = files
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .zip(files.chunks(per))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|f| Err(Error::format(f, "decoding thread failed")))
                        .collect()
                })
            })
            .collect()
    })
}

fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(&d)
                    .map_err(|e| Error::io(&d, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                entries.sort();
                for e in entries {
                    if e.is_dir() {
                        stack.push(e);
                    } else if e.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                        matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                    }) {
                        out.push(e);
                    }
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Error::io(
                p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such image file or folder"),
            ));
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "IMAGES",
            "no PNG or JPEG files found in the given paths",
        ));
    }
    Ok(out)
}

fn real_main(args: Args) -> Result<()> {
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS));
    let ck = Checkpoint::open(&weights)?;
    let classes = class_names_of(&ck)?;
    let aug = preprocessing_of(&ck)?;
    let files = collect_images(&args.images)?;
    if args.batch == 0 {
        return Err(Error::invalid("--batch", "must be at least 1"));
    }

    let gopts = GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let gpu = Gpu::new(&gopts)?;
    println!("device: {}", gpu.describe());
    println!(
        "model: {} ({} classes) from {}",
        ck.model.name,
        ck.model.num_classes,
        weights.display()
    );

    let batch = args.batch.min(files.len());
    let predictor = Predictor::from_checkpoint(&gpu, &ck, batch)?;
    if let Some(d) = &args.cam {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }

    let c = ck.model.num_classes;
    let sample = aug.sample_len();
    let (mh, mw) = predictor.net.map_size;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let (mut done, mut skipped) = (0usize, 0usize);
    let mut gpu_secs = 0.0;
    let t0 = Instant::now();
    for chunk in files.chunks(batch) {
        let mut images = vec![0.0f32; batch * sample];
        let mut ok: Vec<&Path> = Vec::new();
        for (f, res) in chunk.iter().zip(decode_all(chunk, &aug, threads)) {
            match res {
                Ok(v) => {
                    let slot = ok.len();
                    images[slot * sample..(slot + 1) * sample].copy_from_slice(&v);
                    ok.push(f);
                }
                Err(e) => {
                    eprintln!("warning: skipped {e}"); // the error names the file
                    skipped += 1;
                }
            }
        }
        if ok.is_empty() {
            continue;
        }
        let tg = Instant::now();
        let scores = predictor.scores(&gpu, &images, ok.len())?;
        gpu_secs += tg.elapsed().as_secs_f64();
        let maps = if args.cam.is_some() {
            Some(gpu.download(&predictor.net.maps)?)
        } else {
            None
        };
        for (i, f) in ok.iter().enumerate() {
            let row = &scores[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&s| ((s - m) as f64).exp()).sum();
            let mut order: Vec<usize> = (0..c).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top: Vec<(usize, f64)> = order
                .iter()
                .take(5)
                .map(|&j| (j, ((row[j] - m) as f64).exp() / z))
                .collect();
            println!(
                "{}: {}",
                f.display(),
                top.iter()
                    .map(|(j, p)| format!("{} {:.1}%", classes[*j], 100.0 * p))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let (Some(dir), Some(maps)) = (&args.cam, &maps) {
                // The network's own input (after preprocessing), de-normalised for display.
                let x = &images[i * sample..(i + 1) * sample];
                let rgb =
                    image::RgbImage::from_fn(aug.width as u32, aug.height as u32, |px, py| {
                        let base = (py as usize * aug.width + px as usize) * aug.channels;
                        let v = |ch: usize| {
                            let k = ch.min(aug.channels - 1);
                            ((x[base + k] * aug.normalize.std[k] + aug.normalize.mean[k]) * 255.0)
                                .clamp(0.0, 255.0) as u8
                        };
                        image::Rgb([v(0), v(1), v(2)])
                    });
                let panels: Vec<(String, Vec<f32>)> = top
                    .iter()
                    .take(args.cam_classes.max(1))
                    .map(|&(j, p)| {
                        let map: Vec<f32> = (0..mh * mw)
                            .map(|q| maps[(i * mh * mw + q) * c + j])
                            .collect();
                        (format!("{} {:.1}%", classes[j], 100.0 * p), map)
                    })
                    .collect();
                let img = finegrain::viz::cam_overlay(&rgb, &panels, mh, mw);
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_else(|| "image".into());
                let out = dir.join(format!("{:05}_{stem}_cam.png", done + i));
                finegrain::viz::save_png(&out, &img)?;
            }
        }
        done += ok.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{done} images in {secs:.2} s: {:.1} images/s end to end, {:.1} images/s on the GPU{}",
        done as f64 / secs.max(1e-9),
        done as f64 / gpu_secs.max(1e-9),
        if skipped > 0 {
            format!(" ({skipped} unreadable files skipped)")
        } else {
            String::new()
        }
    );
    if let Some(d) = &args.cam {
        println!("class activation maps written to {}", d.display());
    }
    if done == 0 {
        return Err(Error::invalid(
            "IMAGES",
            "none of the given images could be read",
        ));
    }
    Ok(())
}
