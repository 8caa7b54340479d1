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
use finegrain::data::{open_dataset, resolve_fashion_mnist, DataOptions, Dataset, Split};
use finegrain::fsio::write_csv;
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::train::run::evaluate_with;
use finegrain::train::{EvalReport, Predictor};
use finegrain::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    /// Stop at the first unreadable image instead of skipping it.
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
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = real_main(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::invalid("--batch", "must be at least 1"));
    }
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS));
    // Opening checks the metadata: class names, preprocessing and model agree.
    let ck = Checkpoint::open(&weights)?;
    let names = ck.class_names();
    let aug = ck.preprocessing().clone();
    if aug.height != aug.width {
        return Err(Error::format(
            &weights,
            format!(
                "records a {}x{} input; evaluate supports square inputs",
                aug.height, aug.width
            ),
        ));
    }

    // The dataset, prepared exactly as the checkpoint's test images were.
    let path = match &args.data {
        Some(p) if !args.subset => p.clone(),
        _ => resolve_fashion_mnist(args.data.as_deref(), args.subset)?.0,
    };
    let dopts = DataOptions {
        channels: Some(aug.channels),
        size: Some(aug.height),
        eval_resize: Some(aug.eval_resize),
        normalize: Some(aug.normalize.clone()),
        // Class folders without train/ and test/ are split as the training run split them.
        split_seed: ck.train_config().map(|c| c.seed).unwrap_or(0),
        ..DataOptions::default()
    };
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let data: Arc<dyn Dataset> = Arc::from(open_dataset(&path, split, &dopts)?);
    check_classes(
        &path,
        &data.info().class_names,
        &names,
        ck.has_class_names(),
        &weights,
    )?;

    let gopts = GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let gpu = Gpu::new(&gopts)?;
    println!("device: {}", gpu.describe());
    println!(
        "model: {} ({} classes) from {}",
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

    let batch = args.batch.min(data.len().max(1));
    let predictor = Predictor::from_checkpoint(&gpu, &ck, batch)?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let t0 = Instant::now();
    let (report, skipped) = evaluate_with(
        data.clone(),
        batch,
        ck.model.num_classes,
        threads,
        args.strict,
        |images, valid| predictor.scores(&gpu, images, valid),
    )?;
    let secs = t0.elapsed().as_secs_f64();
    print_report(&report, &names, skipped.len(), secs);
    if let Some(dir) = &args.report {
        write_report(dir, &report, &names)?;
        println!("report written to {}", dir.display());
    }
    Ok(())
}

/// The dataset's classes must be the checkpoint's, in the same order: otherwise every
/// accuracy would be meaningless. Without recorded names (`named` false, placeholders) only
/// the count can be compared.
fn check_classes(
    data: &Path,
    have: &[String],
    want: &[String],
    named: bool,
    weights: &Path,
) -> Result<()> {
    if have.len() != want.len() {
        return Err(Error::format(
            data,
            format!(
                "has {} classes; the checkpoint {} was trained on {}",
                have.len(),
                weights.display(),
                want.len()
            ),
        ));
    }
    if let Some(i) = (0..have.len()).find(|&i| named && have[i] != want[i]) {
        return Err(Error::format(
            data,
            format!(
                "class {i} is `{}`, but in the checkpoint {} it is `{}` (same classes in the \
                 same order needed)",
                have[i],
                weights.display(),
                want[i]
            ),
        ));
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
