//! The main job: train a fine-grained classifier (class-map head + diversification block +
//! gradient-boosting cross-entropy) entirely on the GPU.
//!
//! With no flags it trains on Fashion-MNIST: the full 60k/10k set when Debian's
//! `dataset-fashion-mnist` is installed, else the 10k/2k subset shipped in `data/`. Every
//! default comes from the data through `finegrain::recipe::Recipe`; flags override it.
//!
//!     cargo run --release --example train
//!     cargo run --release --example train -- --data path/to/CUB_200_2011 --model resnet50 --input-size 448
//!     cargo run --release --example train -- --resume runs/run-1/last.safetensors
//!
//! Each run writes to a new folder `runs/run-N` unless `--out` names one; a folder holding
//! another run is refused unless `--overwrite`, and one a live run writes to is refused.
//!
//! Built with the feature `mpi`, it is one rank of a data-parallel job when started by
//! `mpirun -np R` or `srun` (each rank on its own GPU, rank 0 printing and writing):
//!
//!     mpirun -np 2 cargo run --release --features mpi --example train -- --data photos/

use clap::{Parser, ValueEnum};
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::method::loss::LossKind;
use finegrain::recipe::{Choices, Recipe};
use finegrain::train::{Console, ProgressStyle};
use finegrain::train::{OutDir, Run, RunOptions, Schedule};
use finegrain::Collective;
use std::path::PathBuf;
use std::rc::Rc;

mod common;

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

/// Train a fine-grained image classifier on the GPU (WGSL compute shaders through wgpu).
/// Flags without a default shown take the recipe's choice for the data (printed at start).
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
    /// Backbone: tiny, small, resnet18, resnet34, resnet50 (recipe: tiny for images up to
    /// 64 px, resnet18 up to 160 px, resnet50 for photos).
    #[arg(long)]
    model: Option<String>,
    /// Input size in pixels, square (recipe: the images' own size up to 64 px, 224 for
    /// photos; the paper: 448).
    #[arg(long)]
    input_size: Option<usize>,
    /// Number of epochs (recipe: 4 for small images, 30 otherwise, 90 fine-tuning).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch (recipe: 32; 16 for photos).
    #[arg(long)]
    batch: Option<usize>,
    /// Gradient accumulation: N micro-batches of --batch images per optimizer step (a
    /// larger effective batch than the GPU holds; batch norm still sees --batch images).
    #[arg(long, default_value_t = 1)]
    accumulate: usize,
    /// Base learning rate, SGD with momentum (recipe: 0.1; 0.05 for photos; 0.001 fine-tuning).
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f32>,
    /// Weight decay on convolution and head weights.
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Learning-rate schedule after warm-up (recipe: cosine; step when fine-tuning).
    #[arg(long, value_enum)]
    schedule: Option<ScheduleArg>,
    /// Epochs at which the step schedule multiplies the rate by --gamma (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "30,60")]
    milestones: Vec<usize>,
    /// Step schedule factor.
    #[arg(long, default_value_t = 0.1)]
    gamma: f32,
    /// Linear learning-rate warm-up in epochs (fractions allowed).
    #[arg(long)]
    warmup_epochs: Option<f32>,
    /// Loss: ce (plain cross-entropy) or gce (gradient-boosting cross-entropy).
    #[arg(long, value_parser = ["ce", "gce"])]
    loss: Option<String>,
    /// GCE's number of negatives k (clamped to classes - 1; recipe: classes / 4 within
    /// 3..=15, the paper's 15 for 200 classes).
    #[arg(long)]
    k: Option<u32>,
    /// Train the first N epochs with cross-entropy before switching to GCE (recipe: 1).
    #[arg(long)]
    ce_warmup_epochs: Option<usize>,
    /// Turn the diversification block off (baseline / ablation).
    #[arg(long)]
    no_db: bool,
    /// Activation suppression factor alpha of the diversification block.
    #[arg(long)]
    alpha: Option<f32>,
    /// Probability that a class map's peak is suppressed.
    #[arg(long)]
    p_peak: Option<f32>,
    /// Probability that each patch of a class map is suppressed.
    #[arg(long)]
    p_patch: Option<f32>,
    /// Patch size G of the diversification block; 0 scales it with the class-map size
    /// (3 at 14x14).
    #[arg(long)]
    grid: Option<u32>,
    /// Numeric precision: f32, or mixed (f16 activations and weight copies, the GPU's
    /// matrix units where it has them, f32 master weights, dynamic loss scaling; needs
    /// shader-f16). Default f32 (mixed is not yet measured faster on a GPU). With --resume:
    /// continue the run in this precision instead of the checkpoint's.
    #[arg(long)]
    precision: Option<finegrain::Precision>,
    /// Training augmentation (random crop / shift and horizontal flip): auto = the recipe's
    /// (off for images up to 64 px, where short runs learn faster without it; on for photos).
    #[arg(long, value_enum, default_value_t = AugmentArg::Auto)]
    augment: AugmentArg,
    /// Seed for initialisation, data order, augmentation and masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder for last.safetensors, metrics.csv and the plot. Default: a new folder
    /// runs/run-N for each run (with --resume: the checkpoint's folder). A folder that holds
    /// another run is refused unless --overwrite.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Let this run replace the run already in --out (its files stay until this run writes
    /// its first checkpoint). A folder that a running run writes to is refused all the same.
    #[arg(long)]
    overwrite: bool,
    /// Continue a run from its checkpoint (its model and settings are used).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Also write a checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Stop after N steps in total.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Fail on the first unreadable image or unusable folder entry (a link loop, an
    /// unreadable folder, a broken link) instead of skipping it with a warning.
    #[arg(long)]
    strict: bool,
    /// Image decoding threads (default: number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Graphics backend: vulkan, metal, dx12, gl, auto (default: WGPU_BACKEND or auto).
    #[arg(long)]
    backend: Option<String>,
    /// Part of the adapter name to use (default: FINEGRAIN_ADAPTER or the best adapter; each
    /// rank of an MPI job takes the next of the best adapters, by its rank on the machine).
    #[arg(long)]
    adapter: Option<String>,
    /// Backbone weights: a torchvision/timm ResNet state dict (safetensors file), a Hugging
    /// Face Hub id (e.g. timm/resnet50.tv_in1k, downloaded once into the Hub cache), or
    /// `none` to train from scratch. `fc` initialises the class-map head when the class
    /// count matches. Pretrained weights switch the recipe to the paper's fine-tuning
    /// (recipe: photos start from torchvision's ImageNet weights for their model).
    #[arg(long, value_name = "FILE|HUB-ID|none")]
    init: Option<finegrain::BackboneInit>,
    /// After training, also export the model as a plain torchvision ResNet state dict
    /// (safetensors; the head becomes `fc`).
    #[arg(long)]
    export_torchvision: Option<PathBuf>,
    /// No progress bar or progress lines (epoch lines only).
    #[arg(long)]
    quiet: bool,
}

/// This process's rank in the job and its rank on its machine: an MPI job's with the
/// feature `mpi` (one rank when not started by mpirun or srun), else one process.
#[cfg(feature = "mpi")]
fn ranks() -> finegrain::Result<(Rc<dyn Collective>, usize)> {
    let mpi = finegrain::distributed::mpi::Mpi::init()?;
    let local = mpi.local_rank();
    Ok((Rc::new(mpi), local))
}

#[cfg(not(feature = "mpi"))]
fn ranks() -> finegrain::Result<(Rc<dyn Collective>, usize)> {
    Ok((Rc::new(finegrain::Solo), 0))
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    let (comm, local) = match ranks() {
        Ok(r) => r,
        Err(e) => {
            common::report(&e);
            std::process::exit(1);
        }
    };
    if let Err(e) = real_main(args, &comm, local) {
        if comm.size() > 1 {
            // One failed rank ends the job with its message; the others do not wait.
            comm.abort(&format!("error: {e}"));
        }
        common::report(&e);
        std::process::exit(1);
    }
}

/// The recipe for the data, with every flag given applied on top.
fn recipe(args: &Args) -> finegrain::Result<(Recipe, &'static str)> {
    // A resumed run keeps its checkpoint's model, so the data is prepared at its size.
    let resumed = match &args.resume {
        Some(p) => Some(finegrain::checkpoint::Checkpoint::open(p)?.model),
        None => None,
    };
    let choices = Choices {
        model: args
            .model
            .clone()
            .or(resumed.as_ref().map(|m| m.name.clone())),
        input_size: args.input_size.or(resumed.as_ref().map(|m| m.input_size)),
        augment: match args.augment {
            AugmentArg::Auto => None,
            AugmentArg::On => Some(true),
            AugmentArg::Off => Some(false),
        },
        init: args.init.clone(),
        seed: args.seed,
    };
    let (mut r, what) = match &args.data {
        Some(p) if !args.subset => (Recipe::for_data(p, &choices)?, ""),
        _ => {
            let r = Recipe::fashion_mnist(args.subset, &choices)?;
            let what = if r.survey.train_images >= 60_000 {
                " (full Fashion-MNIST, 60k/10k)"
            } else {
                " (shipped Fashion-MNIST subset, 10k/2k)"
            };
            (r, what)
        }
    };
    r.data_options.strict = args.strict;
    let t = &mut r.train;
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = args.$field { t.$field = v; })* };
    }
    set!(
        epochs,
        batch,
        lr,
        momentum,
        weight_decay,
        warmup_epochs,
        ce_warmup_epochs
    );
    set!(alpha, p_peak, p_patch, grid);
    t.accumulate = args.accumulate;
    if let Some(s) = args.schedule {
        t.schedule = match s {
            ScheduleArg::Cosine => Schedule::Cosine { min_factor: 0.0 },
            ScheduleArg::Step => Schedule::Step {
                milestones: args.milestones.clone(),
                gamma: args.gamma,
            },
            ScheduleArg::Constant => Schedule::Constant,
        };
    }
    // --loss picks the loss, --k GCE's k; the recipe's k (it always picks GCE) stays
    // unless --k is given.
    let name = args.loss.as_deref().unwrap_or(t.loss.name());
    if args.k.is_some() && name == "ce" {
        return Err(finegrain::Error::invalid(
            "--k",
            "applies to --loss gce only",
        ));
    }
    let recipe_k = match t.loss {
        LossKind::Gce { k } => k,
        LossKind::CrossEntropy => 1,
    };
    let k = args.k.unwrap_or(recipe_k);
    t.loss = LossKind::named("--loss", name, k)?;
    if args.no_db {
        t.diversify = false;
    }
    if let Some(p) = args.precision {
        t.precision = p;
    }
    Ok((r, what))
}

/// The data flags a command continuing this run needs.
fn data_args(args: &Args) -> String {
    match &args.data {
        Some(d) => format!(" --data {}", shell_word(&d.to_string_lossy())),
        None if args.subset => " --subset".to_string(),
        None => String::new(),
    }
}

/// `word` as one word of a shell command (quoted when needed).
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// An output folder that holds another run: say how to continue that run or replace it,
/// and exit. Other errors are returned as they are.
fn advise(e: finegrain::Error, args: &Args) -> finegrain::Error {
    let finegrain::Error::RunExists {
        dir, checkpoint, ..
    } = &e
    else {
        return e;
    };
    let cmd = "cargo run --release --example train --";
    eprintln!("error: {e}");
    if let Some(ck) = checkpoint {
        eprintln!(
            "  continue that run:  {cmd} --resume {} --out {}{}",
            shell_word(&ck.to_string_lossy()),
            shell_word(&dir.to_string_lossy()),
            data_args(args)
        );
    }
    let given: Vec<String> = std::env::args().skip(1).map(|a| shell_word(&a)).collect();
    eprintln!(
        "  replace it:         {cmd} {} --overwrite",
        given.join(" ")
    );
    eprintln!("  or choose another --out (with none, each run gets a new folder in runs/)");
    std::process::exit(1);
}

/// The file an error names, if any.
fn e_path(e: &finegrain::Error) -> Option<&std::path::Path> {
    match e {
        finegrain::Error::Format { path, .. } | finegrain::Error::Io { path, .. } => Some(path),
        _ => None,
    }
}

fn real_main(args: Args, comm: &Rc<dyn Collective>, local_rank: usize) -> finegrain::Result<()> {
    let (rank, ranks) = (comm.rank(), comm.size());
    let mut gopts =
        GpuOptions::from_env_and_flags(args.backend.as_deref(), args.adapter.as_deref())?;
    if ranks > 1 && args.adapter.is_none() {
        gopts.device_index = Some(local_rank);
    }
    let gpu = Gpu::new(&gopts)?;
    if ranks > 1 {
        // Every rank says which device it took; the rest is rank 0's to print.
        println!("rank {rank} of {ranks}: device {}", gpu.describe());
    }
    if rank > 0 {
        return follow(args, comm, &gpu);
    }
    if ranks == 1 {
        println!("device: {}", gpu.describe());
    }
    let (recipe, what) = recipe(&args)?;
    let train = recipe.open(finegrain::data::Split::Train)?;
    let test = recipe.open(finegrain::data::Split::Test)?;
    let info = train.info().clone();
    println!(
        "data: {}{what} — {} train / {} test images, {} classes, {}x{}x{}",
        recipe.data.display(),
        train.len(),
        test.len(),
        info.num_classes,
        info.height,
        info.width,
        info.channels
    );
    println!("recipe:");
    for r in &recipe.reasons {
        println!("  {r}");
    }
    let config = &recipe.train;
    println!(
        "method: {} loss{}, diversification block {}; precision {}",
        match config.loss {
            LossKind::CrossEntropy => "cross-entropy".to_string(),
            LossKind::Gce { k } => format!("GCE (k = {k})"),
        },
        if config.ce_warmup_epochs > 0 && config.loss != LossKind::CrossEntropy {
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
        },
        config.precision
    );
    if config.accumulate > 1 || ranks > 1 {
        println!(
            "steps: {} micro-batch(es) of {} images on each of {ranks} rank(s): {} images per \
             optimizer step",
            config.accumulate,
            config.batch,
            config.accumulate * config.batch * ranks
        );
    }
    // The pretrained backbone: a file, or the Hub's cache, or a download (a resumed run has
    // its weights in its checkpoint).
    let init = if args.resume.is_some() {
        None
    } else {
        let hub = finegrain::hub::HubOptions::from_env();
        match recipe.fetch_init(&hub) {
            Ok(p) => p,
            Err(e @ finegrain::Error::Hub { .. }) => {
                eprintln!("error: {e}");
                eprintln!(
                    "  The pretrained backbone could not be had. Train from scratch instead \
                     with --init none (a worse model on photos), give a state dict file with \
                     --init FILE, or fix the network (HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN) \
                     and run again: once downloaded, the file is taken from the cache ({})",
                    hub.cache_dir.display()
                );
                std::process::exit(1);
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(p) = &init {
        println!("backbone: {}", p.display());
    }
    // The other ranks take the backbone from the cache rank 0 filled.
    comm.sum(&mut [0.0])?;
    let mut opts = RunOptions {
        out_dir: match &args.out {
            Some(p) => OutDir::At(p.clone()),
            None => OutDir::default(),
        },
        overwrite: args.overwrite,
        max_steps: args.max_steps,
        checkpoint_every: args.checkpoint_every,
        strict: args.strict,
        preprocessing: Some(recipe.preprocessing()?),
        init,
        collective: Some(comm.clone()),
        ..RunOptions::default()
    };
    if let Some(t) = args.threads {
        opts.threads = t;
    }
    opts.precision = args.precision;
    // Ctrl-C / SIGTERM: finish the step, write the checkpoint, say how to resume; a second
    // signal exits at once (the last checkpoint is never half-written). In an MPI job every
    // rank stops at the same step.
    let stop = finegrain::train::StopFlag::on_signals()?;
    opts.stop = Some(stop.clone());
    let run = match &args.resume {
        Some(ck) => Run::resume(&gpu, ck, train, Some(test), opts).map_err(|e| advise(e, &args))?,
        None => {
            let model = recipe.model_config(info.num_classes)?;
            let init = opts.init.clone();
            match Run::new(&gpu, &model, config, train, Some(test), opts) {
                Err(e @ finegrain::Error::Format { .. }) if e_path(&e) == init.as_deref() => {
                    // Most often a backbone of another architecture than --model.
                    eprintln!("error: {e}");
                    eprintln!(
                        "  The weights of --init {} do not fit {}: pick the --model they were \
                         trained as, other weights, or --init none to train from scratch.",
                        recipe.init, recipe.model
                    );
                    std::process::exit(1);
                }
                r => r.map_err(|e| advise(e, &args))?,
            }
        }
    };
    let ck_path = run.checkpoint_path();
    let out_dir = run.out_dir().to_path_buf();
    println!(
        "out: {}{}",
        out_dir.display(),
        if args.out.is_none() && args.resume.is_none() {
            " (a new folder; --out DIR names one)"
        } else {
            ""
        }
    );
    let mut console = if args.quiet {
        Console::with_style(ProgressStyle::None)
    } else {
        Console::new()
    };
    let t0 = std::time::Instant::now();
    let summary = run.run(&mut console).inspect_err(|e| {
        if let finegrain::Error::DeviceLost { .. } = e {
            eprintln!("error: {e}");
            eprintln!(
                "  Restart and resume from the last checkpoint:\n  cargo run --release --example \
                 train -- --resume {} --out {}{}\n  If it happens again, the driver may be \
                 resetting a hung GPU: try a smaller --batch.",
                shell_word(&ck_path.to_string_lossy()),
                shell_word(&out_dir.to_string_lossy()),
                data_args(&args)
            );
            std::process::exit(1);
        }
    })?;
    if summary.interrupted {
        let p = summary.progress.unwrap_or_default();
        println!(
            "interrupted after step {} (epoch {}, batch {}); checkpoint {} written. Resume with:\n  \
             cargo run --release --example train -- --resume {} --out {}{}",
            p.step,
            p.epoch + 1,
            p.batch,
            ck_path.display(),
            shell_word(&ck_path.to_string_lossy()),
            shell_word(&out_dir.to_string_lossy()),
            data_args(&args)
        );
        if ranks > 1 {
            println!(
                "  (one process continues the {ranks}-rank job exactly, accumulating all its \
                 micro-batches; under mpirun, any rank count that divides the micro-batches of a \
                 step: mpirun -np {ranks} cargo run --release --features mpi --example train -- ...)"
            );
        }
        std::process::exit(stop.exit_status());
    }
    println!(
        "finished in {:.0} s; checkpoint {}",
        t0.elapsed().as_secs_f64(),
        ck_path.display()
    );
    if ranks > 1 {
        println!(
            "rank 0 spent {:.2} s of {:.2} s training in the gradient exchange ({:.1}%)",
            summary.exchange_seconds,
            summary.seconds,
            100.0 * summary.exchange_seconds / summary.seconds.max(1e-9)
        );
    }
    if !summary.skipped.is_empty() {
        println!("{} unreadable images were skipped:", summary.skipped.len());
        for (f, why) in summary.skipped.iter().take(20) {
            println!("  {f}: {why}");
        }
    }
    if let Some(p) = &args.export_torchvision {
        let ck = finegrain::checkpoint::Checkpoint::open(&ck_path)?;
        let net = finegrain::inference::Predictor::from_checkpoint(&gpu, &ck, 1)?.net;
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

/// A rank other than 0 of an MPI job: the same data, model and steps as rank 0, silently;
/// rank 0 prints, and writes the folder and its checkpoints.
fn follow(args: Args, comm: &Rc<dyn Collective>, gpu: &Gpu) -> finegrain::Result<()> {
    let (recipe, _) = recipe(&args)?;
    let train = recipe.open(finegrain::data::Split::Train)?;
    let test = recipe.open(finegrain::data::Split::Test)?;
    // Rank 0 fetches the pretrained backbone first (the Hub's cache is shared by the ranks
    // of a machine); this rank then finds it there.
    comm.sum(&mut [0.0])?;
    let init = match args.resume {
        Some(_) => None,
        None => recipe.fetch_init(&finegrain::hub::HubOptions::from_env())?,
    };
    let stop = finegrain::train::StopFlag::on_signals()?;
    let opts = RunOptions {
        out_dir: match &args.out {
            Some(p) => OutDir::At(p.clone()),
            None => OutDir::default(),
        },
        max_steps: args.max_steps,
        checkpoint_every: args.checkpoint_every,
        strict: args.strict,
        threads: args.threads.unwrap_or(RunOptions::default().threads),
        preprocessing: Some(recipe.preprocessing()?),
        init,
        precision: args.precision,
        stop: Some(stop.clone()),
        collective: Some(comm.clone()),
        ..RunOptions::default()
    };
    let run = match &args.resume {
        Some(ck) => Run::resume(gpu, ck, train.clone(), Some(test), opts)?,
        None => {
            let model = recipe.model_config(train.info().num_classes)?;
            Run::new(gpu, &model, &recipe.train, train, Some(test), opts)?
        }
    };
    let summary = run.run(&mut |_: &finegrain::train::Event<'_>| {})?;
    if summary.interrupted {
        std::process::exit(stop.exit_status());
    }
    Ok(())
}
