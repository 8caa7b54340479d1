//! Kernel benchmark: validates, then times, the GEMM and the convolution passes at
//! ResNet-50-at-448px layer shapes, and the share of the method's kernels (diversification
//! block + loss) in a whole training step. Prints tables of ms and GFLOP/s. With `--memory`,
//! prints the GPU memory plan of a model instead (see `finegrain::train::memory`).
//!
//! cargo run --release --example bench                      # sizes chosen for the adapter
//! cargo run --release --example bench -- --full            # H200-sized runs on any adapter
//! cargo run --release --example bench -- --gemm 512,1024 --conv-batch 2 --reps 5
//! cargo run --release --example bench -- --memory resnet50,448,16,200   # no device needed

use clap::Parser;
use finegrain::gpu::{AdapterClass, KernelFamily};
use finegrain::gpu::{Dispatch, Gpu, GpuOptions, Profiler};
use finegrain::kernels::conv2d::coop::{
    conv2d_backward_data_coop, conv2d_backward_weight_coop, conv2d_forward_coop, CoopConvOptions,
    CoopTile,
};
use finegrain::kernels::conv2d::{
    conv2d_backward_data, conv2d_backward_weight, conv2d_forward, weight_grad_splits,
    Conv2dBackwardData, Conv2dBackwardWeight, Conv2dForward, Conv2dOptions, Conv2dShape,
};
use finegrain::kernels::gemm::{gemm, Gemm, GemmKernel, GemmOptions, GemmSpec};
use finegrain::model::ModelConfig;
use finegrain::train::memory::{mib, Category, MemoryPlan};
use finegrain::train::topology::Topology;
use finegrain::train::{NetMode, TrainConfig, Trainer};
use finegrain::Precision;
use rand::{Rng, SeedableRng};
use std::time::Instant;

mod common;

/// Kernel benchmark (GEMM, convolutions, a whole training step) and memory plans. Sizes
/// not given follow the adapter: small on a CPU adapter, ResNet-50 at 448 px on a GPU.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Cli {
    /// H200-sized runs on any adapter: GEMM 1024..8192, conv batch 16, the ResNet-50
    /// 448 px batch 16 200-class training step (flags given explicitly still win).
    #[arg(long)]
    full: bool,
    /// GEMM sizes M = N = K.
    #[arg(long, value_name = "N,N,..", value_delimiter = ',')]
    gemm: Option<Vec<usize>>,
    /// Batch of the ResNet-50 convolution shapes (0 skips them).
    #[arg(long, value_name = "N")]
    conv_batch: Option<usize>,
    /// Batch of the tiny model's convolutions timed with every kernel variant (0 skips).
    #[arg(long = "tiny-conv", value_name = "BATCH", default_value_t = 32)]
    tiny_batch: usize,
    /// Timed repetitions (at least 1).
    #[arg(long, value_name = "N")]
    reps: Option<usize>,
    /// Model of the training-step benchmark.
    #[arg(long, value_name = "NAME")]
    step_model: Option<String>,
    /// Input size of the training step, in pixels.
    #[arg(long, value_name = "PX")]
    step_size: Option<usize>,
    /// Batch of the training step.
    #[arg(long, value_name = "N")]
    step_batch: Option<usize>,
    /// Classes of the training step.
    #[arg(long, value_name = "C")]
    step_classes: Option<usize>,
    /// Precisions of the training step (and of the memory plans): f32, mixed (default:
    /// both where the adapter has shader-f16, else f32).
    #[arg(long, value_name = "P,P", value_delimiter = ',')]
    precision: Option<Vec<Precision>>,
    /// Print the GPU memory plan of a training and an inference network (bytes by
    /// category, total, largest buffers) and exit, without opening a device.
    #[arg(long, value_name = "MODEL,SIZE,BATCH,CLASSES[,CHANNELS]")]
    memory: Option<String>,
    /// Adapter class the memory plan is for: gpu (tiled convolutions), cpu-subgroup
    /// (lavapipe on x86-64) or cpu.
    #[arg(long, value_name = "CLASS", default_value = "gpu")]
    memory_adapter: String,
}

/// The benchmark's sizes, resolved: a flag, else `--full`, else the adapter's default.
struct Args {
    gemm: Vec<usize>,
    conv_batch: usize,
    tiny_batch: usize,
    reps: usize,
    step_model: String,
    step_size: usize,
    step_batch: usize,
    step_classes: usize,
    precisions: Vec<Precision>,
}

impl Args {
    fn resolve(cli: &Cli, gpu: &Gpu) -> Args {
        let big = cli.full || !gpu.is_cpu();
        let pick = |flag: Option<usize>, gpu_value: usize, cpu_value: usize| {
            flag.unwrap_or(if big { gpu_value } else { cpu_value })
        };
        let gemm = match &cli.gemm {
            Some(g) => g.clone(),
            None if big => vec![1024, 2048, 4096, 8192],
            None => vec![128, 256, 512],
        };
        let step_model = match &cli.step_model {
            Some(m) => m.clone(),
            None if big => "resnet50".into(),
            None => "tiny".into(),
        };
        // `--full` leaves the repetitions to the adapter.
        let reps = cli.reps.unwrap_or(if gpu.is_cpu() { 3 } else { 10 });
        Args {
            gemm,
            conv_batch: pick(cli.conv_batch, 16, 1),
            tiny_batch: cli.tiny_batch,
            reps: reps.max(1),
            step_model,
            step_size: pick(cli.step_size, 448, 28),
            step_batch: pick(cli.step_batch, 16, 32),
            step_classes: pick(cli.step_classes, 200, 10),
            precisions: match &cli.precision {
                Some(p) => p.clone(),
                None if gpu.features.shader_f16 => vec![Precision::F32, Precision::Mixed],
                None => vec![Precision::F32],
            },
        }
    }
}

/// `--memory MODEL,SIZE,BATCH,CLASSES[,CHANNELS]`: the memory plans of a training network
/// (with the default recipe's method: diversification block, GCE and its cross-entropy
/// warm-up list) and of an inference network, from the model alone.
fn print_memory(spec: &str, class_name: &str, precisions: &[Precision]) -> finegrain::Result<()> {
    let bad = |m: String| finegrain::Error::invalid("--memory", m);
    let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
    if !(4..=5).contains(&parts.len()) {
        return Err(bad(format!(
            "`{spec}`: expected MODEL,SIZE,BATCH,CLASSES[,CHANNELS], e.g. resnet50,448,16,200"
        )));
    }
    let num = |i: usize, what: &str| {
        parts[i]
            .parse::<usize>()
            .map_err(|e| bad(format!("{what} `{}`: {e}", parts[i])))
    };
    let (size, batch, classes) = (num(1, "size")?, num(2, "batch")?, num(3, "classes")?);
    let channels = if parts.len() == 5 {
        num(4, "channels")?
    } else {
        3
    };
    let class = class_name.parse::<AdapterClass>()?;
    let model = ModelConfig::preset(parts[0], channels, size, classes)?;
    let (method, _) = TrainConfig {
        batch,
        ..TrainConfig::default()
    }
    .method(model.num_classes, model.feature_size())?;
    for &precision in precisions {
        let plan =
            |mode| MemoryPlan::with_precision(&model, batch, mode, class, &method, precision);
        let (train, infer) = (plan(NetMode::Train)?, plan(NetMode::Inference)?);
        println!(
            "memory plan ({precision}): {} {size} px x {channels} channels, batch {batch}, \
             {classes} classes; adapter class {class_name} ({:?} convolutions, {:?} batch-norm \
             sizing); training with {} dispatch lists (DB + GCE, cross-entropy warm-up)\n",
            parts[0], class.kernels, class.bn, train.lists
        );
        print_plans(&train, &infer);
    }
    print_exchange(&model, batch, class, &method)?;
    Ok(())
}

/// What a data-parallel step exchanges per rank (`finegrain::distributed`): the gradients
/// and BN running statistics of the plan, the bytes each rank sends, and an estimate of
/// the time on links of the stated bandwidths (computed, not measured).
fn print_exchange(
    model: &ModelConfig,
    batch: usize,
    class: AdapterClass,
    method: &finegrain::train::MethodConfig,
) -> finegrain::Result<()> {
    let plan =
        MemoryPlan::with_precision(model, batch, NetMode::Train, class, method, Precision::F32)?;
    let grads = (plan.category_bytes(Category::Gradients) / 4) as usize;
    let stats = (plan.category_bytes(Category::BnRunningStats) / 4) as usize;
    println!(
        "data-parallel step (--features mpi): each rank exchanges {grads} gradient values \
         ({:.1} MiB) and {stats} BN running statistics ({:.1} KiB), staged through host \
         memory (GPU to host and back: {:.1} MiB each way)\n",
        mib(4 * grads as u64),
        4.0 * stats as f64 / 1024.0,
        mib(4 * (grads + stats) as u64)
    );
    // Estimates from nominal link rates: PCIe 5.0 x16 (about 64 GB/s each way; an H200
    // SXM's host link), and 400 Gb/s InfiniBand NDR (50 GB/s) between machines.
    let (pcie, link) = (64e9, 50e9);
    println!(
        "| ranks | MiB sent per rank per step | estimate: staging over PCIe 5.0 x16 | estimate: exchange over 400 Gb/s |\n|---:|---:|---:|---:|"
    );
    // The chain is pipelined in messages of 4 MiB (`distributed::mpi::CHUNK` f32 values):
    // the last rank has the sum one message per link after the first rank starts.
    let chunk = 4.0 * (1 << 20) as f64;
    for ranks in [2, 4, 8, 16] {
        let sent = finegrain::distributed::bytes_per_step(grads, stats, ranks);
        let staging = 2.0 * 4.0 * (grads + stats) as f64 / pcie;
        let exchange = (sent as f64 + (ranks - 1) as f64 * chunk) / link;
        println!(
            "| {ranks} | {:.1} | {:.1} ms | {:.1} ms |",
            mib(sent),
            1e3 * staging,
            1e3 * exchange
        );
    }
    println!();
    Ok(())
}

/// The category table and the largest buffers of a training and an inference plan.
fn print_plans(train: &MemoryPlan, infer: &MemoryPlan) {
    println!(
        "| category | train bytes | train MiB | inference bytes | inference MiB |\n\
         |---|---:|---:|---:|---:|"
    );
    for c in Category::ALL {
        let (t, i) = (train.category_bytes(c), infer.category_bytes(c));
        if t + i > 0 {
            println!(
                "| {} | {t} | {:.1} | {i} | {:.1} |",
                c.name(),
                mib(t),
                mib(i)
            );
        }
    }
    let (t, i) = (train.total_bytes(), infer.total_bytes());
    println!(
        "| **total** | **{t}** | **{:.1}** ({:.2} GiB) | **{i}** | **{:.1}** ({:.2} GiB) |",
        mib(t),
        mib(t) / 1024.0,
        mib(i),
        mib(i) / 1024.0
    );
    println!(
        "\n{} buffers in training, {} in inference; not counted: one uniform parameter block \
         per dispatch (16-80 bytes), host staging buffers, driver overhead.",
        train.buffers.len(),
        infer.buffers.len()
    );
    for (plan, mode) in [(train, "training"), (infer, "inference")] {
        println!("\n| largest buffers ({mode}) | category | MiB | tensors |\n|---|---|---:|---:|");
        for b in plan.largest(12) {
            println!(
                "| {} | {} | {:.1} | {} |",
                b.label,
                b.category.name(),
                mib(b.bytes()),
                b.tensors.len()
            );
        }
    }
    println!();
}

/// Median GPU time (ms) of running `ds` together: timestamp queries when the adapter has
/// them, else host time around a full wait.
fn time(gpu: &Gpu, ds: &[&Dispatch], reps: usize) -> finegrain::Result<f64> {
    gpu.run(ds)?; // warm-up: pipeline first use
    let mut prof = Profiler::new(gpu, ds.len() as u32);
    let mut v = Vec::new();
    for _ in 0..reps {
        v.push(time_once(gpu, prof.as_mut(), ds)?);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[v.len() / 2])
}

/// One run of `ds` in ms: the sum of the kernels' timestamp intervals with a profiler (for
/// at least `ds.len()` dispatches; `None` where the adapter has no timestamp queries), else
/// the host clock around a submit-and-wait.
fn time_once(gpu: &Gpu, prof: Option<&mut Profiler>, ds: &[&Dispatch]) -> finegrain::Result<f64> {
    match prof {
        Some(p) => {
            let mut enc = gpu.encoder("bench");
            p.record(&mut enc, ds)?;
            Ok(p.finish(gpu, enc)?.iter().map(|r| r.ms).sum())
        }
        None => {
            let t = Instant::now();
            gpu.run(ds)?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    }
}

fn rand_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn check(name: &str, got: f32, want: f64, scale: f64) -> Result<(), String> {
    let err = (got as f64 - want).abs();
    if err.is_nan() || err > 1e-4 * scale + 1e-3 {
        return Err(format!("{name}: gpu {got} vs f64 {want} (err {err:e})"));
    }
    Ok(())
}

/// GEMM M = N = K with every kernel the adapter can run (f32; f16 storage with f32 math;
/// cooperative matrices f16 x f16 -> f32, 8x8 and 16x16): one table, each row validated at
/// 32 random entries against an f64 dot product of the operands the kernel saw (f16-rounded
/// for the f16 kernels).
fn bench_gemm(gpu: &Gpu, a: &Args, rng: &mut impl Rng) -> finegrain::Result<()> {
    println!("\n| GEMM M=N=K | kernel | ms | GFLOP/s | TFLOP/s |\n|---|---|---|---|---|");
    let kernels: Vec<GemmKernel> = GemmKernel::ALL
        .into_iter()
        .filter(|k| k.available(gpu))
        .collect();
    for &n in &a.gemm {
        let mut av = rand_vec(rng, n * n);
        let mut bv = rand_vec(rng, n * n);
        let tc = gpu.zeros("c", &[n, n])?;
        let spec = GemmSpec::new(n, n, n);
        for &kernel in &kernels {
            let f16 = kernel != GemmKernel::F32;
            let (ta, tb) = if f16 {
                av = finegrain::reference::gemm::round_f16(&av);
                bv = finegrain::reference::gemm::round_f16(&bv);
                (
                    gpu.tensor_f16("a", &[n, n], &av)?,
                    gpu.tensor_f16("b", &[n, n], &bv)?,
                )
            } else {
                (
                    gpu.tensor("a", &[n, n], &av)?,
                    gpu.tensor("b", &[n, n], &bv)?,
                )
            };
            let t = Gemm {
                a: &ta,
                b: &tb,
                c: &tc,
            };
            let o = GemmOptions {
                kernel,
                ..Default::default()
            };
            let d = gemm(gpu, &t, &o)?;
            gpu.run(&[&d])?;
            let c = gpu.download(&tc)?;
            for _ in 0..32 {
                let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
                let want: f64 = (0..n)
                    .map(|l| av[i * n + l] as f64 * bv[l * n + j] as f64)
                    .sum();
                check(
                    &format!("gemm {kernel:?} {n} C[{i},{j}]"),
                    c[i * n + j],
                    want,
                    (n as f64).sqrt(),
                )
                .map_err(|e| finegrain::Error::invalid("validation", e))?;
            }
            let ms = time(gpu, &[&d], a.reps)?;
            let gflops = spec.gflop() / (ms * 1e-3);
            println!(
                "| {n} | {} | {ms:.3} | {gflops:.1} | {:.2} |",
                kernel.describe(),
                gflops * 1e-3
            );
        }
    }
    Ok(())
}

fn conv_point(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    n: usize,
    oy: usize,
    ox: usize,
    co: usize,
) -> f64 {
    let mut acc = 0.0;
    for ky in 0..s.kh {
        for kx in 0..s.kw {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            let ix = (ox * s.stride + kx) as isize - s.pad as isize;
            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                continue;
            }
            for ci in 0..s.cin {
                let xv = x[((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci] as f64;
                acc += xv * w[((ky * s.kw + kx) * s.cin + ci) * s.cout + co] as f64;
            }
        }
    }
    acc
}

fn bench_conv(gpu: &Gpu, a: &Args, rng: &mut impl Rng) -> finegrain::Result<()> {
    let b = a.conv_batch;
    if b == 0 {
        return Ok(()); // --conv-batch 0 skips the ResNet-50 shapes
    }
    let family = gpu.kernels();
    println!(
        "\n| conv2d (ResNet-50 @448, batch {b}, {family:?} kernels) | pass | ms | GFLOP/s |\n|---|---|---|---|"
    );
    let shapes = [
        (
            "3x3 64ch 112x112",
            Conv2dShape {
                n: b,
                h: 112,
                w: 112,
                cin: 64,
                cout: 64,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "3x3 128ch 56x56",
            Conv2dShape {
                n: b,
                h: 56,
                w: 56,
                cin: 128,
                cout: 128,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "3x3 256ch 28x28",
            Conv2dShape {
                n: b,
                h: 28,
                w: 28,
                cin: 256,
                cout: 256,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "3x3 512ch 14x14",
            Conv2dShape {
                n: b,
                h: 14,
                w: 14,
                cin: 512,
                cout: 512,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "7x7/2 stem 3->64 448x448",
            Conv2dShape {
                n: b,
                h: 448,
                w: 448,
                cin: 3,
                cout: 64,
                kh: 7,
                kw: 7,
                stride: 2,
                pad: 3,
            },
        ),
        (
            "1x1 256->64 112x112",
            Conv2dShape {
                n: b,
                h: 112,
                w: 112,
                cin: 256,
                cout: 64,
                kh: 1,
                kw: 1,
                stride: 1,
                pad: 0,
            },
        ),
    ];
    for (name, s) in shapes {
        let xv = rand_vec(rng, s.n * s.h * s.w * s.cin);
        let wv = rand_vec(rng, s.kh * s.kw * s.cin * s.cout);
        let dyv = rand_vec(rng, s.n * s.oh() * s.ow() * s.cout);
        let x = gpu.tensor("x", &[s.n, s.h, s.w, s.cin], &xv)?;
        let w = gpu.tensor("w", &[s.kh, s.kw, s.cin, s.cout], &wv)?;
        let y = gpu.zeros("y", &[s.n, s.oh(), s.ow(), s.cout])?;
        let dy = gpu.tensor("dy", &[s.n, s.oh(), s.ow(), s.cout], &dyv)?;
        let dx = gpu.zeros("dx", &[s.n, s.h, s.w, s.cin])?;
        let dw = gpu.zeros("dw", &[s.kh, s.kw, s.cin, s.cout])?;
        let (g, o) = (s.geometry(), Conv2dOptions::default());
        let fwd = conv2d_forward(
            gpu,
            &Conv2dForward {
                x: &x,
                w: &w,
                y: &y,
            },
            g,
            &o,
        )?;
        let t = Conv2dBackwardData {
            dy: &dy,
            w: &w,
            dx: &dx,
        };
        let bd = conv2d_backward_data(gpu, &t, g, &o)?;
        let t = Conv2dBackwardWeight {
            x: &x,
            dy: &dy,
            dw: &dw,
        };
        let bw = conv2d_backward_weight(gpu, &t, g, &o)?;
        let mut all = vec![&fwd, &bd];
        all.extend(&bw);
        gpu.run(&all)?;
        // Validate sampled outputs of each pass against f64 sums.
        let (yg, dxg, dwg) = (gpu.download(&y)?, gpu.download(&dx)?, gpu.download(&dw)?);
        let red = |k: usize| (k as f64).sqrt();
        let err = |e: String| finegrain::Error::invalid("validation", e);
        for _ in 0..16 {
            let (n, oy, ox, co) = (
                rng.random_range(0..s.n),
                rng.random_range(0..s.oh()),
                rng.random_range(0..s.ow()),
                rng.random_range(0..s.cout),
            );
            let want = conv_point(&s, &xv, &wv, n, oy, ox, co);
            check(
                &format!("{name} forward"),
                yg[((n * s.oh() + oy) * s.ow() + ox) * s.cout + co],
                want,
                red(s.kh * s.kw * s.cin),
            )
            .map_err(err)?;
            // dW[ky,kx,ci,co] = sum_{n,oy,ox} x[n, oy*s+ky-p, ox*s+kx-p, ci] * dy[n,oy,ox,co]
            let (ky, kx, ci) = (
                rng.random_range(0..s.kh),
                rng.random_range(0..s.kw),
                rng.random_range(0..s.cin),
            );
            let mut want = 0.0;
            for n in 0..s.n {
                for oy in 0..s.oh() {
                    for ox in 0..s.ow() {
                        let iy = (oy * s.stride + ky) as isize - s.pad as isize;
                        let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                            want += xv[((n * s.h + iy as usize) * s.w + ix as usize) * s.cin + ci]
                                as f64
                                * dyv[((n * s.oh() + oy) * s.ow() + ox) * s.cout + co] as f64;
                        }
                    }
                }
            }
            check(
                &format!("{name} backward_weight"),
                dwg[((ky * s.kw + kx) * s.cin + ci) * s.cout + co],
                want,
                red(s.n * s.oh() * s.ow()),
            )
            .map_err(err)?;
            // dX[n,iy,ix,ci] = sum over taps/outputs that read it.
            let (iy, ix) = (rng.random_range(0..s.h), rng.random_range(0..s.w));
            let mut want = 0.0;
            for ky in 0..s.kh {
                for kx in 0..s.kw {
                    let ty = iy as isize + s.pad as isize - ky as isize;
                    let tx = ix as isize + s.pad as isize - kx as isize;
                    if ty < 0
                        || tx < 0
                        || ty % s.stride as isize != 0
                        || tx % s.stride as isize != 0
                    {
                        continue;
                    }
                    let (oy, ox) = (ty as usize / s.stride, tx as usize / s.stride);
                    if oy >= s.oh() || ox >= s.ow() {
                        continue;
                    }
                    for co in 0..s.cout {
                        want += dyv[((n * s.oh() + oy) * s.ow() + ox) * s.cout + co] as f64
                            * wv[((ky * s.kw + kx) * s.cin + ci) * s.cout + co] as f64;
                    }
                }
            }
            check(
                &format!("{name} backward_data"),
                dxg[((n * s.h + iy) * s.w + ix) * s.cin + ci],
                want,
                red(s.kh * s.kw * s.cout),
            )
            .map_err(err)?;
        }
        let gf = s.gflop();
        let bw_name = if bw.len() > 1 {
            format!(
                "backward_weight (split-K {})",
                weight_grad_splits(&s, gpu.kernels())
            )
        } else {
            "backward_weight".to_string()
        };
        let bw: Vec<&Dispatch> = bw.iter().collect();
        for (pass, d) in [
            ("forward".to_string(), vec![&fwd]),
            ("backward_data".to_string(), vec![&bd]),
            (bw_name, bw),
        ] {
            let ms = time(gpu, &d, a.reps)?;
            println!("| {name} | {pass} | {ms:.3} | {:.1} |", gf / (ms * 1e-3));
        }
        if let Some(tile) = CoopTile::best(gpu) {
            bench_conv_coop(gpu, a, rng, name, &s, tile, [&xv, &wv, &dyv])?;
        }
    }
    Ok(())
}

/// The three passes of one shape on cooperative matrices (f16 operands, f32 out), checked
/// at sampled outputs against the adapter's f32 kernels run on the same f16-rounded
/// operands (the same products, summed in another order), then timed.
fn bench_conv_coop(
    gpu: &Gpu,
    a: &Args,
    rng: &mut impl Rng,
    name: &str,
    s: &Conv2dShape,
    tile: CoopTile,
    [xv, wv, dyv]: [&[f32]; 3],
) -> finegrain::Result<()> {
    use finegrain::reference::gemm::round_f16;
    let (xs, ws, ys) = (s.x_shape(), s.w_shape(), s.y_shape());
    let (xr, wr, dyr) = (round_f16(xv), round_f16(wv), round_f16(dyv));
    let x16 = gpu.tensor_f16("x16", &xs, &xr)?;
    let w16 = gpu.tensor_f16("w16", &ws, &wr)?;
    let dy16 = gpu.tensor_f16("dy16", &ys, &dyr)?;
    let x32 = gpu.tensor("x", &xs, &xr)?;
    let w32 = gpu.tensor("w", &ws, &wr)?;
    let dy32 = gpu.tensor("dy", &ys, &dyr)?;
    let outs = |tag: &str| -> finegrain::Result<[finegrain::gpu::Tensor; 3]> {
        Ok([
            gpu.zeros(&format!("y{tag}"), &ys)?,
            gpu.zeros(&format!("dx{tag}"), &xs)?,
            gpu.zeros(&format!("dw{tag}"), &ws)?,
        ])
    };
    let [y, dx, dw] = outs("_coop")?;
    let [yr, dxr, dwr] = outs("_f32")?;
    let (g, o, oc) = (
        s.geometry(),
        Conv2dOptions::default(),
        CoopConvOptions {
            tile: Some(tile),
            ..Default::default()
        },
    );
    let fwd = conv2d_forward_coop(
        gpu,
        &Conv2dForward {
            x: &x16,
            w: &w16,
            y: &y,
        },
        g,
        &oc,
    )?;
    let t = Conv2dBackwardData {
        dy: &dy16,
        w: &w16,
        dx: &dx,
    };
    let bd = conv2d_backward_data_coop(gpu, &t, g, &oc)?;
    let t = Conv2dBackwardWeight {
        x: &x16,
        dy: &dy16,
        dw: &dw,
    };
    let bw = conv2d_backward_weight_coop(gpu, &t, g, &oc)?;
    let mut reference = vec![conv2d_forward(
        gpu,
        &Conv2dForward {
            x: &x32,
            w: &w32,
            y: &yr,
        },
        g,
        &o,
    )?];
    let t = Conv2dBackwardData {
        dy: &dy32,
        w: &w32,
        dx: &dxr,
    };
    reference.push(conv2d_backward_data(gpu, &t, g, &o)?);
    let t = Conv2dBackwardWeight {
        x: &x32,
        dy: &dy32,
        dw: &dwr,
    };
    reference.extend(conv2d_backward_weight(gpu, &t, g, &o)?);
    let mut all: Vec<&Dispatch> = vec![&fwd, &bd, &bw];
    all.extend(reference.iter());
    gpu.run(&all)?;
    let red = [
        s.kh * s.kw * s.cin,
        s.kh * s.kw * s.cout,
        s.n * s.oh() * s.ow(),
    ];
    for (((got, want), k), pass) in [&y, &dx, &dw]
        .into_iter()
        .zip([&yr, &dxr, &dwr])
        .zip(red)
        .zip(["forward", "backward_data", "backward_weight"])
    {
        let (got, want) = (gpu.download(got)?, gpu.download(want)?);
        for _ in 0..64 {
            let i = rng.random_range(0..got.len());
            check(
                &format!("{name} {pass} coop {tile:?} [{i}]"),
                got[i],
                want[i] as f64,
                (k as f64).sqrt(),
            )
            .map_err(|e| finegrain::Error::invalid("validation", e))?;
        }
    }
    let gf = s.gflop();
    let t = tile.side();
    for (pass, d) in [
        ("forward", &fwd),
        ("backward_data", &bd),
        ("backward_weight", &bw),
    ] {
        let ms = time(gpu, &[d], a.reps)?;
        println!(
            "| {name} | {pass}, coop-matrix {t}x{t} f16->f32 | {ms:.3} | {:.1} |",
            gf / (ms * 1e-3)
        );
    }
    Ok(())
}

/// The ten convolutions of the `tiny` model (the default training run) at `--tiny-conv`
/// batch, timed with every kernel variant. Variants and passes are interleaved and the
/// fastest of the repetitions is kept, so a busy or throttled CPU adapter still gives a fair
/// comparison; the variants' outputs are checked against each other first.
fn bench_tiny_conv(gpu: &Gpu, a: &Args, rng: &mut impl Rng) -> finegrain::Result<()> {
    let n = a.tiny_batch;
    if n == 0 {
        return Ok(());
    }
    let sh = |h: usize, cin: usize, cout: usize, k: usize, stride: usize| Conv2dShape {
        n,
        h,
        w: h,
        cin,
        cout,
        kh: k,
        kw: k,
        stride,
        pad: k / 2,
    };
    // (shape, whether training computes its data gradient: not for the stem)
    let layers = [
        (sh(28, 1, 16, 3, 1), false),
        (sh(28, 16, 16, 3, 2), true),
        (sh(14, 16, 16, 3, 1), true),
        (sh(28, 16, 16, 1, 2), true),
        (sh(14, 16, 32, 3, 2), true),
        (sh(7, 32, 32, 3, 1), true),
        (sh(14, 16, 32, 1, 2), true),
        (sh(7, 32, 64, 3, 2), true),
        (sh(4, 64, 64, 3, 1), true),
        (sh(7, 32, 64, 1, 2), true),
    ];
    let variants: Vec<KernelFamily> = [
        KernelFamily::Subgroup,
        KernelFamily::Broadcast,
        KernelFamily::Tiled,
    ]
    .into_iter()
    .filter(|k| k.check(gpu).is_ok())
    .collect();
    let passes = ["forward", "backward_data", "backward_weight"];
    // dispatches[variant][pass], outputs[variant] (y, dx, dw per layer)
    let mut dispatches: Vec<[Vec<Dispatch>; 3]> = Vec::new();
    let mut outputs: Vec<Vec<finegrain::gpu::Tensor>> = Vec::new();
    let mut inputs = Vec::new();
    for (s, _) in &layers {
        let x = gpu.tensor("x", &s.x_shape(), &rand_vec(rng, numel(&s.x_shape())))?;
        let w = gpu.tensor("w", &s.w_shape(), &rand_vec(rng, numel(&s.w_shape())))?;
        let dy = gpu.tensor("dy", &s.y_shape(), &rand_vec(rng, numel(&s.y_shape())))?;
        inputs.push((x, w, dy));
    }
    let mut flop = [0.0f64; 3];
    for &(s, data_grad) in &layers {
        flop[0] += s.gflop();
        flop[1] += if data_grad { s.gflop() } else { 0.0 };
        flop[2] += s.gflop();
    }
    for &k in &variants {
        let mut ds: [Vec<Dispatch>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut outs = Vec::new();
        for ((s, data_grad), (x, w, dy)) in layers.iter().zip(&inputs) {
            let y = gpu.zeros("y", &s.y_shape())?;
            let dx = gpu.zeros("dx", &s.x_shape())?;
            let dw = gpu.zeros("dw", &s.w_shape())?;
            let (g, o) = (
                s.geometry(),
                Conv2dOptions {
                    kernel: Some(k),
                    ..Default::default()
                },
            );
            ds[0].push(conv2d_forward(gpu, &Conv2dForward { x, w, y: &y }, g, &o)?);
            if *data_grad {
                let t = Conv2dBackwardData { dy, w, dx: &dx };
                ds[1].push(conv2d_backward_data(gpu, &t, g, &o)?);
            }
            let t = Conv2dBackwardWeight { x, dy, dw: &dw };
            ds[2].extend(conv2d_backward_weight(gpu, &t, g, &o)?);
            outs.extend([y, dx, dw]);
        }
        let all: Vec<&Dispatch> = ds.iter().flatten().collect();
        gpu.run(&all)?;
        outputs.push(outs);
        dispatches.push(ds);
    }
    // The variants must agree (each is tested against the f64 twin in tests/gpu/conv2d.rs).
    let reference: Vec<Vec<f32>> = outputs[0]
        .iter()
        .map(|t| gpu.download(t))
        .collect::<finegrain::Result<_>>()?;
    for (vi, outs) in outputs.iter().enumerate().skip(1) {
        for (t, want) in outs.iter().zip(&reference) {
            let got = gpu.download(t)?;
            let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
            // f32::max skips NaN, so unwritten or NaN outputs are checked on their own.
            let finite = got.iter().chain(want).all(|v| v.is_finite());
            if !finite || worst > 1e-4 * scale {
                return Err(finegrain::Error::invalid(
                    "validation",
                    format!(
                        "tiny conv {:?} differs from {:?} by {worst} (scale {scale})",
                        variants[vi], variants[0]
                    ),
                ));
            }
        }
    }
    let most = dispatches
        .iter()
        .flatten()
        .map(|d| d.len())
        .max()
        .unwrap_or(1);
    let mut prof = Profiler::new(gpu, most as u32);
    let mut best = vec![[f64::INFINITY; 3]; variants.len()];
    for _ in 0..a.reps.max(5) {
        for (vi, ds) in dispatches.iter().enumerate() {
            for (pi, d) in ds.iter().enumerate() {
                let refs: Vec<&Dispatch> = d.iter().collect();
                let ms = time_once(gpu, prof.as_mut(), &refs)?; // warmed up by the check above
                best[vi][pi] = best[vi][pi].min(ms);
            }
        }
    }
    println!(
        "\n| conv2d, the tiny model's 10 layers, batch {n} (fastest of {} runs) | {} |\n|---|{}",
        a.reps.max(5),
        variants
            .iter()
            .map(|k| format!("{k:?} ms (GFLOP/s)"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(variants.len())
    );
    for (pi, pass) in passes.iter().enumerate() {
        let cells: Vec<String> = best
            .iter()
            .map(|b| format!("{:.2} ({:.1})", b[pi], flop[pi] / (b[pi] * 1e-3)))
            .collect();
        println!("| {pass} | {} |", cells.join(" | "));
    }
    let total: Vec<String> = best
        .iter()
        .map(|b| format!("{:.2}", b.iter().sum::<f64>()))
        .collect();
    println!("| all three passes | {} |", total.join(" | "));
    Ok(())
}

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

/// The training step in each precision, then one summary table.
fn bench_steps(gpu: &Gpu, a: &Args, rng: &mut impl Rng) -> finegrain::Result<()> {
    let model = ModelConfig::preset(&a.step_model, 3, a.step_size, a.step_classes)?;
    let gflop = Topology::new(&model, a.step_batch)?.training_gflop();
    let mut rows = Vec::new();
    for &p in &a.precisions {
        let ms = bench_step(gpu, a, rng, p)?;
        rows.push((p, step_kernels(gpu, p), ms));
        if p == Precision::Mixed && CoopTile::best(gpu).is_some() {
            // The same step over f16 storage: a device without cooperative matrices.
            let plain = Gpu::new(&GpuOptions {
                cooperative_matrices: false,
                ..GpuOptions::from_env()?
            })?;
            let ms = bench_step(&plain, a, rng, p)?;
            rows.push((p, step_kernels(&plain, p), ms));
        }
    }
    println!(
        "\n| training step {} {}px batch {}, {} classes, DB+GCE ({gflop:.1} GFLOP of \
         convolutions and head) | kernels | ms | images/s | TFLOP/s |\n|---|---|---:|---:|---:|",
        a.step_model, a.step_size, a.step_batch, a.step_classes
    );
    for (p, k, ms) in rows {
        println!(
            "| {p} | {k} | {ms:.2} | {:.0} | {:.3} |",
            a.step_batch as f64 * 1e3 / ms,
            gflop / ms
        );
    }
    Ok(())
}

/// What the convolutions of a training network in `p` run on this adapter.
fn step_kernels(gpu: &Gpu, p: Precision) -> String {
    let family = format!("{:?}", gpu.kernels());
    match (p, CoopTile::best(gpu)) {
        (Precision::F32, _) => format!("f32, {family} convolutions"),
        (Precision::Mixed, Some(t)) => format!(
            "mixed, coop-matrix {}x{} f16->f32 convolutions and head",
            t.side(),
            t.side()
        ),
        (Precision::Mixed, None) => format!("mixed, f16-storage {family} convolutions"),
    }
}

/// One precision's step table; returns the steady-state ms per step.
fn bench_step(
    gpu: &Gpu,
    a: &Args,
    rng: &mut impl Rng,
    precision: Precision,
) -> finegrain::Result<f64> {
    let model = ModelConfig::preset(&a.step_model, 3, a.step_size, a.step_classes)?;
    let cfg = TrainConfig {
        batch: a.step_batch,
        precision,
        ..TrainConfig::default()
    };
    let bytes0 = gpu.bytes_created();
    let mut trainer = Trainer::new(gpu, &model, &cfg, 100)?;
    let net_mib = (gpu.bytes_created() - bytes0) as f64 / (1 << 20) as f64;
    let n = a.step_batch;
    let images = rand_vec(rng, n * a.step_size * a.step_size * 3);
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..a.step_classes as u32))
        .collect();
    trainer.step(gpu, &images, &labels)?;
    trainer.drain(gpu)?;
    let steps = trainer.net().train_main.len() + trainer.net().optimizer.len();
    let mut prof = Profiler::new(gpu, steps as u32);
    println!(
        "\n| training step: {} {}px batch {n}, {} classes, DB+GCE, {} | ms |\n|---|---|",
        a.step_model,
        a.step_size,
        a.step_classes,
        step_kernels(gpu, precision)
    );
    let mut whole = Vec::new();
    let mut method_ms = Vec::new();
    // Per kernel, the fastest of the profiled steps: on a shared or CPU adapter single
    // passes are noisy, and the minimum is the figure a change can be compared by.
    let mut best_rows: Vec<finegrain::gpu::ProfileRow> = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        trainer.step(gpu, &images, &labels)?;
        trainer.drain(gpu)?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(p) = prof.as_mut() {
            let net = trainer.net();
            let ds: Vec<&Dispatch> = net.train_main.iter().chain(&net.optimizer).collect();
            let mut enc = gpu.encoder("bench.step");
            p.record(&mut enc, &ds)?;
            let rows = p.finish(gpu, enc)?;
            let total: f64 = rows.iter().map(|r| r.ms).sum();
            let m: f64 = rows
                .iter()
                .filter(|r| r.name.starts_with("diversify.") || r.name.starts_with("loss."))
                .map(|r| r.ms)
                .sum();
            method_ms.push((m, total));
            for r in rows {
                match best_rows.iter_mut().find(|b| b.name == r.name) {
                    Some(b) => b.ms = b.ms.min(r.ms),
                    None => best_rows.push(r),
                }
            }
        }
    }
    whole.sort_by(|a, b| a.total_cmp(b));
    println!(
        "| whole step (host clock, one submit, waited) | {:.2} |",
        whole[whole.len() / 2]
    );
    // Steady state: steps submitted back to back, statistics read a few steps late, as the
    // training loop runs them.
    let steps = (2 * a.reps).max(4);
    let t = Instant::now();
    for _ in 0..steps {
        trainer.step(gpu, &images, &labels)?;
    }
    trainer.drain(gpu)?;
    let per_step = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(
        "| steady-state step ({steps} steps pipelined) | {per_step:.2} ({:.0} images/s) |",
        n as f64 * 1e3 / per_step
    );
    println!("| GPU buffers of the training network | {net_mib:.0} MiB |");
    if !method_ms.is_empty() {
        method_ms.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (m, t) = method_ms[method_ms.len() / 2];
        println!("| sum of kernel times (timestamps, one pass per kernel) | {t:.2} |");
        println!(
            "| diversification block + loss kernels | {m:.3} ({:.2}% of the step) |",
            100.0 * m / t
        );
        best_rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        let best: f64 = best_rows.iter().map(|r| r.ms).sum();
        println!(
            "\n| kernel (fastest of {} profiled steps) | calls | ms | share |\n|---|---|---|---|",
            method_ms.len()
        );
        for r in &best_rows {
            println!(
                "| {} | {} | {:.3} | {:.1}% |",
                r.name,
                r.calls,
                r.ms,
                100.0 * r.ms / best
            );
        }
    }
    Ok(per_step)
}

fn main() {
    let cli = Cli::parse();
    if let Some(spec) = &cli.memory {
        let precisions = cli
            .precision
            .clone()
            .unwrap_or(vec![Precision::F32, Precision::Mixed]);
        if let Err(e) = print_memory(spec, &cli.memory_adapter, &precisions) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        return;
    }
    let gpu = match Gpu::from_env() {
        Ok(g) => g,
        Err(e) => {
            common::report(&e);
            std::process::exit(1);
        }
    };
    let args = Args::resolve(&cli, &gpu);
    println!("device: {}", gpu.describe());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let r = bench_gemm(&gpu, &args, &mut rng)
        .and_then(|_| bench_conv(&gpu, &args, &mut rng))
        .and_then(|_| bench_tiny_conv(&gpu, &args, &mut rng))
        .and_then(|_| bench_steps(&gpu, &args, &mut rng));
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
