//! The main job: train a fine-grained classifier (class-map head + diversification block +
//! gradient-boosting cross-entropy) entirely on the GPU.
//!
//! With no flags it trains the `tiny` ResNet for 4 epochs on Fashion-MNIST: the full 60k/10k set when
//! Debian's `dataset-fashion-mnist` is installed, else the 10k/2k subset shipped in `data/`.
//!
//!     cargo run --release --example train
//!     cargo run --release --example train -- --data path/to/CUB_200_2011 --model resnet50 --input-size 448
//!     cargo run --release --example train -- --resume runs/default/last.safetensors

use clap::{Parser, ValueEnum};
use finegrain::data::{
    dataset_kind, open_dataset, resolve_fashion_mnist, DataOptions, Dataset, DatasetKind, Split,
};
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::model::ModelConfig;
use finegrain::train::run::{run, RunOptions, PREPROCESS_KEY};
use finegrain::train::{LossChoice, Schedule, TrainConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ScheduleArg {
    Cosine,
    Step,
    Constant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AugmentArg {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LossArg {
    Ce,
    Gce,
}

/// Train a fine-grained image classifier on the GPU (WGSL compute shaders through wgpu).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Dataset folder: a CUB-200-2011 folder (images.txt, image_class_labels.txt,
    /// train_test_split.txt, classes.txt, images/), an IDX folder (train-images-idx3-ubyte[.gz]
    /// ...), or a class-per-folder image tree (optionally with train/ and test/).
    /// Default: Fashion-MNIST, the full set if installed in /usr/share/datasets/fashion-mnist,
    /// else the subset shipped in data/fashion-mnist-subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use the shipped Fashion-MNIST subset even when the full set is installed.
    #[arg(long)]
    subset: bool,
    /// Backbone: tiny (28 px grayscale), small, resnet18, resnet34, resnet50.
    /// Default: tiny for IDX data, resnet50 for image datasets.
    #[arg(long)]
    model: Option<String>,
    /// Input size in pixels (square). Default: 28 for IDX data, 224 for images (the paper: 448).
    #[arg(long)]
    input_size: Option<usize>,
    /// Number of epochs.
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Base learning rate (SGD with momentum).
    #[arg(long, default_value_t = 0.1)]
    lr: f32,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Weight decay on convolution and head weights.
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f32,
    /// Learning-rate schedule after warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// Epochs at which the step schedule multiplies the rate by --gamma (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    milestones: Vec<usize>,
    /// Step schedule factor.
    #[arg(long, default_value_t = 0.1)]
    gamma: f32,
    /// Linear learning-rate warm-up in epochs (fractions allowed).
    #[arg(long, default_value_t = 0.2)]
    warmup_epochs: f32,
    /// Loss: ce (plain cross-entropy) or gce (gradient-boosting cross-entropy).
    #[arg(long, value_enum, default_value_t = LossArg::Gce)]
    loss: LossArg,
    /// GCE's number of negatives k (clamped to classes - 1; the paper: 15 for 200 classes).
    /// Default: 15, or 3 for 10-class data (where 15 would make GCE equal cross-entropy).
    #[arg(long)]
    k: Option<u32>,
    /// Train the first N epochs with cross-entropy before switching to GCE.
    #[arg(long, default_value_t = 1)]
    ce_warmup_epochs: usize,
    /// Turn the diversification block off (baseline / ablation).
    #[arg(long)]
    no_db: bool,
    /// Activation suppression factor alpha of the diversification block.
    #[arg(long, default_value_t = 0.1)]
    alpha: f32,
    /// Probability that a class map's peak is suppressed.
    #[arg(long, default_value_t = 0.5)]
    p_peak: f32,
    /// Probability that each patch of a class map is suppressed.
    #[arg(long, default_value_t = 0.5)]
    p_patch: f32,
    /// Patch size G of the diversification block; 0 scales it with the class-map size
    /// (3 at 14x14).
    #[arg(long, default_value_t = 0)]
    grid: u32,
    /// Training augmentation (random crop / shift and horizontal flip): auto = off for
    /// small IDX images such as Fashion-MNIST (short runs learn faster without it), on for
    /// photographs.
    #[arg(long, value_enum, default_value_t = AugmentArg::Auto)]
    augment: AugmentArg,
    /// Seed for initialisation, data order, augmentation and masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for last.safetensors, metrics.csv and the plot.
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Continue a run from its checkpoint (its model and settings are used).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also write a checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop after N steps in total.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Fail on the first unreadable image instead of skipping it with a warning.
    #[arg(long)]
    strict: bool,
    /// Image decoding threads (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Graphics backend: vulkan, metal, dx12, gl, auto (default: WGPU_BACKEND or auto).
    #[arg(long)]
    backend: Option<String>,
    /// Part of the adapter name to use (default: FINEGRAIN_ADAPTER or the best adapter).
    #[arg(long)]
    adapter: Option<String>,
    /// Initialise the backbone from a torchvision/timm ResNet state dict saved as
    /// safetensors (e.g. ImageNet-pretrained resnet50); `fc` initialises the class-map head
    /// when the class count matches.
    #[arg(long)]
    init: Option<PathBuf>,
    /// After training, also export the model as a plain torchvision ResNet state dict
    /// (safetensors; the head becomes `fc`).
    #[arg(long)]
    export_torchvision: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> finegrain::Result<()> {
    let gopts = GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    let gpu = Gpu::new(&gopts)?;
    println!("device: {}", gpu.describe());

    let (path, note) = match &args.data {
        Some(p) if !args.subset => (p.clone(), None),
        _ => {
            let (p, full) = resolve_fashion_mnist(args.data.as_deref(), args.subset)?;
            let n = if full {
                "full Fashion-MNIST (60k/10k)"
            } else {
                "shipped Fashion-MNIST subset (10k/2k)"
            };
            (p, Some(n))
        }
    };
    let mut dopts = DataOptions::default();
    if let Some(s) = args.input_size {
        dopts.size = Some(s);
    }
    dopts.split_seed = args.seed;
    let kind = dataset_kind(&path);
    let augment_off = match args.augment {
        AugmentArg::On => false,
        AugmentArg::Off => true,
        AugmentArg::Auto => matches!(kind, DatasetKind::Idx | DatasetKind::FashionMnist),
    };
    if augment_off {
        dopts.train_crop = Some(finegrain::data::TrainCrop::Center);
        dopts.hflip = Some(false);
    }
    let train: Arc<dyn Dataset> = Arc::from(open_dataset(&path, Split::Train, &dopts)?);
    let test: Arc<dyn Dataset> = Arc::from(open_dataset(&path, Split::Test, &dopts)?);
    let info = train.info().clone();
    println!(
        "data: {}{} — {} train / {} test images, {} classes, {}x{}x{}",
        path.display(),
        note.map(|n| format!(" ({n})")).unwrap_or_default(),
        train.len(),
        test.len(),
        info.num_classes,
        info.height,
        info.width,
        info.channels
    );
    println!(
        "training augmentation: {}",
        if augment_off {
            "off"
        } else {
            "random crop/shift + horizontal flip"
        }
    );
    let idx_like = info.height <= 64;
    let model_name = args.model.clone().unwrap_or_else(|| {
        if idx_like {
            "tiny".into()
        } else {
            "resnet50".into()
        }
    });
    let model = ModelConfig::preset(&model_name, info.channels, info.height, info.num_classes)?;
    let k = args
        .k
        .unwrap_or(if info.num_classes <= 10 { 3 } else { 15 });
    let config = TrainConfig {
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        schedule: match args.schedule {
            ScheduleArg::Cosine => Schedule::Cosine { min_factor: 0.0 },
            ScheduleArg::Step => Schedule::Step {
                milestones: args.milestones.clone(),
                gamma: args.gamma,
            },
            ScheduleArg::Constant => Schedule::Constant,
        },
        warmup_epochs: args.warmup_epochs,
        loss: match args.loss {
            LossArg::Ce => LossChoice::Ce,
            LossArg::Gce => LossChoice::Gce,
        },
        k,
        ce_warmup_epochs: args.ce_warmup_epochs,
        diversify: !args.no_db,
        p_peak: args.p_peak,
        p_patch: args.p_patch,
        grid: args.grid,
        alpha: args.alpha,
        seed: args.seed,
    };
    // Record the evaluation preprocessing so `infer` prepares images the same way.
    let (nh, nw) = if idx_like {
        (info.height, info.width)
    } else {
        (0, 0)
    };
    let augment = dopts.augment(kind, nh, nw)?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        PREPROCESS_KEY.to_string(),
        serde_json::to_string(&augment)
            .map_err(|e| finegrain::Error::invalid("preprocessing", e.to_string()))?,
    );
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let opts = RunOptions {
        out_dir: args.out.clone(),
        max_steps: args.max_steps,
        checkpoint_every: args.checkpoint_every,
        strict: args.strict,
        threads,
        progress_bar: !args.quiet,
        evaluate: true,
        metadata,
        init: args.init.clone(),
    };
    println!(
        "method: {} loss{}, diversification block {}",
        match config.loss {
            LossChoice::Ce => "cross-entropy".to_string(),
            LossChoice::Gce => format!("GCE (k = {k})"),
        },
        if config.ce_warmup_epochs > 0 && config.loss == LossChoice::Gce {
            let e = config.ce_warmup_epochs;
            format!(
                " after {e} cross-entropy epoch{}",
                if e == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        },
        if config.diversify {
            format!(
                "on (alpha {}, p_peak {}, p_patch {})",
                config.alpha, config.p_peak, config.p_patch
            )
        } else {
            "off".into()
        }
    );
    let t0 = std::time::Instant::now();
    let summary = run(
        &gpu,
        &model,
        &config,
        train,
        Some(test),
        args.resume.as_deref(),
        &opts,
        &mut |s| println!("{s}"),
    )?;
    println!(
        "finished in {:.0} s; checkpoint {}",
        t0.elapsed().as_secs_f64(),
        args.out.join("last.safetensors").display()
    );
    if !summary.skipped.is_empty() {
        println!("{} unreadable images were skipped:", summary.skipped.len());
        for (f, why) in summary.skipped.iter().take(20) {
            println!("  {f}: {why}");
        }
    }
    if let Some(p) = &args.export_torchvision {
        let ck = finegrain::checkpoint::Checkpoint::open(&args.out.join("last.safetensors"))?;
        let net = finegrain::train::Predictor::from_checkpoint(&gpu, &ck, 1)?.net;
        finegrain::checkpoint::export_torchvision(&gpu, &net, p)?;
        println!("exported a torchvision state dict to {}", p.display());
    }
    if let Some(e) = &summary.final_eval {
        println!(
            "\ntest: top-1 {:.2}%  top-5 {:.2}%  ({} images)",
            100.0 * e.top1_acc(),
            100.0 * e.top5_acc(),
            e.images
        );
        let names = &info.class_names;
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
        println!("per-class top-1:");
        for (i, a) in e.per_class().iter().enumerate() {
            println!("  {:>24}  {:6.2}%", name(i), 100.0 * a);
        }
        println!("most confused (true -> predicted: count):");
        for (t, p, n) in e.most_confused(5) {
            println!("  {} -> {}: {n}", name(t), name(p));
        }
    }
    Ok(())
}
