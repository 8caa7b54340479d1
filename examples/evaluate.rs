//! Evaluate a checkpoint on a labelled dataset: top-1 / top-5 accuracy, mean loss, per-class
//! accuracy and the most-confused class pairs, with the checkpoint's own preprocessing, on
//! an inference-only network.
//!
//!     cargo run --release --example evaluate                     # shipped model, shipped test set
//!     cargo run --release --example evaluate -- --weights runs/cub/last.safetensors \
//!         --data ~/data/CUB_200_2011 --report eval/
//!
//! `--report DIR` also writes `per_class.csv` and `confusion.csv` (rows: true class,
//! columns: predicted class).

use clap::{Parser, ValueEnum};
use finegrain::checkpoint::Checkpoint;
use finegrain::classify::Classifier;
use finegrain::data::{resolve_fashion_mnist, Split};
use finegrain::fsio::write_csv;
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::train::EvalReport;
use finegrain::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

const DEFAULT_WEIGHTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/weights/fashion-mnist-tiny.safetensors"
);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

/// Evaluate a finegrain checkpoint on a labelled dataset.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Checkpoint (safetensors written by the train example). Default: the shipped
    /// Fashion-MNIST model in weights/.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Dataset: an IDX folder (Fashion-MNIST/MNIST), a class-per-folder tree (with or
    /// without train/ and test/), or a CUB-200-2011 folder. Default: Fashion-MNIST, the full
    /// set when Debian's dataset-fashion-mnist is installed, else the shipped subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use the shipped Fashion-MNIST subset even when the full set is installed.
    #[arg(long)]
    subset: bool,
    /// Which split to evaluate.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Write per_class.csv and confusion.csv into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop at the first unreadable image or unusable folder entry (a link loop, an
    /// unreadable folder, a broken link) instead of skipping it with a warning.
    #[arg(long)]
    strict: bool,
    /// Image decoding threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Graphics backend: vulkan, metal, dx12, gl (default: the best available).
    #[arg(long)]
    backend: Option<String>,
    /// Part of the adapter name to use (e.g. "llvmpipe", "H200", "M2").
    #[arg(long)]
    adapter: Option<String>,
    /// Numeric precision of the inference network: f32 or mixed (f16 activations).
    /// Default: the precision the checkpoint was trained in.
    #[arg(long)]
    precision: Option<finegrain::Precision>,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main(Args::parse()) {
        common::report(&e);
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<()> {
    if args.threads == Some(0) {
        return Err(Error::invalid("--threads", "must be at least 1"));
    }
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS));
    let path = match &args.data {
        Some(p) if !args.subset => p.clone(),
        _ => resolve_fashion_mnist(args.data.as_deref(), args.subset)?.0,
    };
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let gopts = GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let gpu = Gpu::new(&gopts)?;
    println!("device: {}", gpu.describe());
    // Opening checks the metadata (class names, preprocessing and model agree); the data is
    // prepared as the checkpoint's test images were and must have its classes.
    let ck = Checkpoint::open(&weights)?;
    let precision = args.precision.unwrap_or(ck.precision());
    let clf = Classifier::from_checkpoint_with_precision(&gpu, &ck, args.batch, precision)?;
    let data = clf.open_data_with(&path, split, args.strict)?;
    println!(
        "model: {} ({} classes) from {}, precision {precision}",
        ck.model.name,
        ck.model.num_classes,
        weights.display()
    );
    println!(
        "data: {} ({:?} split, {} images)",
        path.display(),
        split,
        data.len()
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t0 = Instant::now();
    let (report, skipped) = clf.evaluate(&gpu, data, threads, args.strict)?;
    let secs = t0.elapsed().as_secs_f64();
    print_report(&report, clf.classes(), skipped.len(), secs);
    if let Some(dir) = &args.report {
        write_report(dir, &report, clf.classes())?;
        println!("report written to {}", dir.display());
    }
    Ok(())
}

fn print_report(r: &EvalReport, names: &[String], skipped: usize, secs: f64) {
    println!(
        "top-1 {:.2}%  top-5 {:.2}%  mean loss {:.4}  ({} images in {:.1} s, {:.0} images/s{})",
        100.0 * r.top1_acc(),
        100.0 * r.top5_acc(),
        r.mean_loss(),
        r.images,
        secs,
        r.images as f64 / secs.max(1e-9),
        if skipped > 0 {
            format!(", {skipped} unreadable images skipped")
        } else {
            String::new()
        }
    );
    println!("per-class top-1:");
    for (i, a) in r.per_class().iter().enumerate() {
        println!("  {:>24}  {:6.2}%", names[i], 100.0 * a);
    }
    println!("most confused (true -> predicted: count):");
    for (t, p, n) in r.most_confused(5) {
        println!("  {} -> {}: {n}", names[t], names[p]);
    }
}

/// A row of `per_class.csv`.
#[derive(serde::Serialize)]
struct PerClassRow<'a> {
    class: usize,
    name: &'a str,
    images: usize,
    top1: f64,
}

/// `per_class.csv` (class, name, images, top-1) and `confusion.csv` (a header of predicted
/// classes, then one row per true class), each written atomically.
fn write_report(dir: &Path, r: &EvalReport, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let per_class: Vec<PerClassRow> = r
        .per_class()
        .iter()
        .enumerate()
        .map(|(i, &acc)| PerClassRow {
            class: i,
            name: &names[i],
            images: r.confusion[i].iter().sum(),
            // Six decimals are plenty for an accuracy.
            top1: (acc * 1e6).round() / 1e6,
        })
        .collect();
    write_csv(&dir.join("per_class.csv"), &per_class)?;
    let mut confusion: Vec<Vec<String>> = Vec::with_capacity(names.len() + 1);
    confusion.push(
        std::iter::once("true\\predicted".to_string())
            .chain(names.iter().cloned())
            .collect(),
    );
    for (i, row) in r.confusion.iter().enumerate() {
        confusion.push(
            std::iter::once(names[i].clone())
                .chain(row.iter().map(|k| k.to_string()))
                .collect(),
        );
    }
    write_csv(&dir.join("confusion.csv"), &confusion)
}
