//! Data-parallel training over MPI, run under `mpirun -np 2` (`.ci/run` does; the cargo
//! feature `mpi` builds it, and without `mpirun` it is a job of one rank):
//!
//!     cargo test --features mpi --test mpi --no-run   # then, with the binary it names:
//!     mpirun --allow-run-as-root --oversubscribe -np 2 target/debug/deps/mpi-HASH
//!
//! 1. The rank-equivalence check ([`finegrain::testing::check_rank_equivalence`]): the
//!    ranks hold identical weights and BN statistics after every step, and end with the
//!    parameters and momentum of one process accumulating R micro-batches.
//! 2. A whole [`Run`] on R ranks: rank 0 alone writes the folder, the evaluation is split
//!    and summed (every rank gets the same report), and the checkpoint resumes on one rank
//!    (accumulating R) to the same weights as the job resumed on R ranks.
//!
//! A harness of its own (`harness = false`): MPI is started once, on the main thread.

use finegrain::checkpoint::Checkpoint;
use finegrain::distributed::mpi::Mpi;
use finegrain::method::loss::LossKind;
use finegrain::testing::{check_rank_equivalence, gpu, open_toy_folders, write_toy_folders};
use finegrain::train::{OutDir, Run, RunOptions, TrainConfig};
use finegrain::{Collective, Solo};
use std::path::Path;
use std::rc::Rc;

fn main() {
    let mpi = Rc::new(Mpi::init().expect("MPI"));
    let (rank, ranks) = (mpi.rank(), mpi.size());
    let Some(g) = gpu() else {
        println!("test result: ok. 0 passed; 0 failed (no adapter: nothing checked)");
        return;
    };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mpi-{ranks}"));
    if rank == 0 {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("test folder");
    }
    mpi.sum(&mut [0.0]).expect("barrier");
    println!(
        "rank {rank} of {ranks} on {}: {}",
        mpi.processor_name(),
        g.describe()
    );

    check_rank_equivalence(g, &*mpi, &root.join("data"), 5);
    if rank == 0 {
        println!("test rank_equivalence ... ok");
    }

    whole_run(g, &mpi, &root);
    if rank == 0 {
        println!("test whole_run_and_resume_on_one_rank ... ok");
        println!("test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
    }
}

fn whole_run(g: &finegrain::Gpu, mpi: &Rc<Mpi>, root: &Path) {
    let (rank, ranks) = (mpi.rank(), mpi.size());
    let data_dir = root.join("run-data");
    if rank == 0 {
        write_toy_folders(&data_dir, &["a", "b", "c"], 16, 12, 9);
    }
    mpi.sum(&mut [0.0]).expect("barrier");
    let data = open_toy_folders(&data_dir, 12);
    let model = finegrain::model::ModelConfig::preset("tiny", 1, 12, 3).expect("model");
    let cfg = TrainConfig {
        batch: 4,
        epochs: 2,
        loss: LossKind::Gce { k: 1 },
        ce_warmup_epochs: 1,
        seed: 3,
        ..TrainConfig::default()
    };
    let comm: Rc<dyn Collective> = mpi.clone();
    let out = root.join("run");
    let opts = |max: u64, comm: Rc<dyn Collective>| RunOptions {
        out_dir: OutDir::At(out.clone()),
        max_steps: Some(max),
        threads: 1,
        collective: Some(comm),
        ..RunOptions::default()
    };
    // 48 images, 4 x R per step.
    let steps = (48 / (4 * ranks)) as u64;
    let run = Run::new(
        g,
        &model,
        &cfg,
        data.clone(),
        Some(data.clone()),
        opts(steps, comm.clone()),
    )
    .expect("run");
    let summary = run
        .run(&mut |_: &finegrain::train::Event<'_>| {})
        .expect("train");
    let eval = summary.final_eval.expect("evaluated at the epoch end");
    assert_eq!(
        eval.images, 48,
        "rank {rank}: every test image evaluated once"
    );
    let mut agreed = [eval.top1 as f32, eval.loss_sum as f32];
    let mine = agreed;
    mpi.broadcast(&mut agreed, 0).expect("broadcast");
    assert_eq!(
        agreed, mine,
        "rank {rank}: the summed evaluation is every rank's"
    );
    mpi.sum(&mut [0.0]).expect("barrier");
    let ck = out.join("last.safetensors");
    let progress = Checkpoint::open(&ck)
        .expect("rank 0 wrote it")
        .progress()
        .unwrap();
    assert_eq!((progress.step, progress.ranks), (steps, ranks));
    mpi.sum(&mut [0.0]).expect("barrier");

    // The job resumes on R ranks for one more epoch; rank 0 then resumes the same
    // checkpoint alone (accumulating R) into another folder: the same weights.
    let saved = root.join("saved.safetensors");
    if rank == 0 {
        std::fs::copy(&ck, &saved).expect("copy");
    }
    mpi.sum(&mut [0.0]).expect("barrier");
    let resumed =
        Run::resume(g, &ck, data.clone(), None, opts(2 * steps, comm)).expect("resume on R ranks");
    drop(
        resumed
            .run(&mut |_: &finegrain::train::Event<'_>| {})
            .expect("train"),
    );
    mpi.sum(&mut [0.0]).expect("barrier");
    if rank == 0 {
        let solo_out = root.join("solo");
        let mut notes = Vec::new();
        let o = RunOptions {
            out_dir: OutDir::At(solo_out.clone()),
            collective: Some(Rc::new(Solo)),
            ..opts(2 * steps, Rc::new(Solo))
        };
        let solo = Run::resume(g, &saved, data, None, o).expect("resume on one rank");
        solo.run(&mut |e: &finegrain::train::Event<'_>| {
            if let finegrain::train::Event::Note(n) = e {
                notes.push(n.to_string());
            }
        })
        .expect("train");
        if ranks > 1 {
            assert!(
                notes
                    .iter()
                    .any(|n| n.contains(&format!("accumulates {ranks}"))),
                "{notes:?}"
            );
        }
        let read = |p: &Path| {
            let (_, tensors) =
                finegrain::testing::read_safetensors(&std::fs::read(p).expect("checkpoint"));
            tensors
        };
        let a = read(&out.join("last.safetensors"));
        let b = read(&solo_out.join("last.safetensors"));
        assert_eq!(a.len(), b.len());
        let mut compared = 0;
        for (ta, tb) in a.iter().zip(&b) {
            assert_eq!(ta.0, tb.0);
            if ta.0.contains("running_") || ta.0.contains("num_batches") {
                continue; // rank 0's statistics vs those of R micro-batches a step
            }
            assert!(
                ta.3 == tb.3,
                "{}: the job and the one-rank resume differ",
                ta.0
            );
            compared += 1;
        }
        assert!(compared > 10, "compared {compared} tensors");
    }
    mpi.sum(&mut [0.0]).expect("barrier");
}
