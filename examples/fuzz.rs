//! Long fuzzing runs over every reader of user data (the harness is `tests/fuzz_targets/`,
//! which `cargo test --test suite fuzz::` runs for a few hundred cases per reader).
//!
//! ```text
//! cargo run --release --example fuzz -- --reader all --cases 1000000 --seed 1
//! cargo run --release --example fuzz -- --reader image --seed 7 --first 152 --cases 1
//! ```
//!
//! Prints a markdown table per reader: cases, inputs accepted, errors (each naming the
//! file), failures (panics, cases over 2 s, allocations over 1 GiB, errors that do not name
//! the file), the slowest case, the largest allocation growth of one case and the rate.
//! Exits 1 if any case failed, after printing the replay command of each failure.

#[path = "../tests/fuzz_targets/mod.rs"]
mod fuzz_targets;

use clap::Parser;
use fuzz_targets::{quiet_panics, run, Target, READERS};

#[derive(Parser)]
#[command(about = "Seeded structure-aware fuzzing of finegrain's readers of user data")]
struct Args {
    /// A reader (see --list) or `all`.
    #[arg(long, default_value = "all")]
    reader: String,
    /// Cases per reader.
    #[arg(long, default_value_t = 10_000)]
    cases: u64,
    /// Index of the first case (to replay one: --first I --cases 1).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Seed of the run (fresh when not given; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Stop a reader after this many failures.
    #[arg(long, default_value_t = 20)]
    max_failures: usize,
    /// List the readers and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let args = Args::parse();
    if args.list {
        for r in READERS {
            println!("{r}");
        }
        return;
    }
    let readers: Vec<&str> = if args.reader == "all" {
        READERS.to_vec()
    } else {
        args.reader.split(',').collect()
    };
    for r in &readers {
        if !READERS.contains(r) {
            eprintln!("unknown reader `{r}`; readers: {}", READERS.join(", "));
            std::process::exit(2);
        }
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let gpu = if readers.contains(&"torchvision") {
        match finegrain::Gpu::from_env() {
            Ok(g) => Some(&*Box::leak(Box::new(g))),
            Err(e) => {
                eprintln!("torchvision skipped: no adapter ({e})");
                None
            }
        }
    } else {
        None
    };
    eprintln!("seed {seed}");
    println!(
        "| reader | cases | accepted | errors (named) | failures | slowest case | peak alloc | cases/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut failures = Vec::new();
    quiet_panics();
    for r in readers {
        let mut t = Target::new(r, gpu);
        if !t.available() {
            println!("| {r} | skipped (no adapter) | | | | | | |");
            continue;
        }
        let s = run(&mut t, seed, args.first, args.cases, args.max_failures);
        println!(
            "| {r} | {} | {} | {} | {} | {:.1} ms | {:.1} MiB | {:.0} |",
            s.cases,
            s.ok,
            s.errors,
            s.failures.len(),
            s.slowest.as_secs_f64() * 1e3,
            s.peak_alloc as f64 / (1 << 20) as f64,
            s.cases as f64 / s.elapsed.as_secs_f64().max(1e-9)
        );
        failures.extend(s.failures);
    }
    let _ = std::panic::take_hook();
    if !failures.is_empty() {
        eprintln!("\n{} failing case(s):", failures.len());
        for f in &failures {
            eprintln!("{f}");
        }
        std::process::exit(1);
    }
}
