//! Ctrl-C / SIGTERM during training, in a child process (this test binary run again in
//! child mode): the run finishes its step, writes its checkpoint and exits with 128 +
//! the signal; resuming from that checkpoint reproduces an uninterrupted run's losses bit
//! for bit. A second signal exits at once and leaves the last checkpoint loadable.
#![cfg(unix)]

use finegrain::checkpoint::Checkpoint;
use finegrain::data::Dataset;
use finegrain::method::loss::LossKind;
use finegrain::model::ModelConfig;
use finegrain::train::Event;
use finegrain::train::{Run, RunOptions, StopFlag, TrainConfig};
use rand::Rng;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const SIZE: usize = 12;
/// 9 steps per epoch.
const EPOCHS: usize = 16;
const CHILD_ENV: &str = "FINEGRAIN_INTERRUPT_CHILD";

fn write_dataset(root: &Path) {
    finegrain::testing::write_toy_folders(root, &["left", "top", "checker"], 12, SIZE as u32, 9);
}

fn train_data(root: &Path) -> Arc<dyn Dataset> {
    finegrain::testing::open_toy_folders(root, SIZE)
}

/// 9 steps per epoch (36 images, batch 4), [`EPOCHS`] epochs: long enough that a signal sent
/// after the first steps arrives well before the end.
fn config() -> TrainConfig {
    TrainConfig {
        epochs: EPOCHS,
        batch: 4,
        lr: 0.02,
        warmup_epochs: 0.5,
        loss: LossKind::Gce { k: 1 },
        ce_warmup_epochs: 1,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.into(),
        threads: 1,
        evaluate: false,
        ..RunOptions::default()
    }
}

fn model() -> ModelConfig {
    ModelConfig::preset("tiny", 1, SIZE, 3).unwrap()
}

/// Child mode: train with the signal handlers, print every step's loss bits, exit with
/// the stop flag's status when interrupted.
#[test]
#[ignore = "runs only as the child process of the tests below"]
fn interrupt_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let gpu = finegrain::Gpu::from_env().unwrap();
    let stop = StopFlag::on_signals().unwrap();
    let mut o = opts(&dir.join("out"));
    o.stop = Some(stop.clone());
    o.checkpoint_every = std::env::var("CHECKPOINT_EVERY")
        .ok()
        .and_then(|s| s.parse().ok());
    let run = Run::new(
        &gpu,
        &model(),
        &config(),
        train_data(&dir.join("data")),
        None,
        o,
    )
    .unwrap();
    let summary = run
        .run(&mut |e: &Event| {
            if let Event::StepStats(s) = e {
                println!("STEP {} {}", s.step, s.loss.to_bits());
            }
        })
        .unwrap();
    println!("DONE interrupted={}", summary.interrupted);
    if summary.interrupted {
        std::process::exit(stop.exit_status());
    }
}

/// Run the child until it has printed `after` steps, send it `signals` SIGTERMs, and return
/// its (step, loss bits) lines and exit code.
fn child_interrupted(
    dir: &Path,
    after: u64,
    signals: usize,
    extra: &[(&str, &str)],
) -> (Vec<(u64, u32)>, i32) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "interrupt::interrupt_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(CHILD_ENV, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut steps = Vec::new();
    let mut sent = false;
    for line in out.lines() {
        let line = line.unwrap();
        // The harness prints `test interrupt_child ... ` without a newline before the first
        // step's line.
        if let Some(rest) = line.find("STEP ").map(|i| &line[i + 5..]) {
            let mut f = rest.split(' ');
            let step: u64 = f.next().unwrap().parse().unwrap();
            let bits: u32 = f.next().unwrap().parse().unwrap();
            steps.push((step, bits));
            if step + 1 >= after && !sent {
                sent = true;
                for i in 0..signals {
                    if i > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    let ok = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status()
                        .unwrap();
                    assert!(ok.success());
                }
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        sent,
        "the child finished before it was signalled: {steps:?}"
    );
    (steps, status.code().unwrap_or(-1))
}

#[test]
fn sigterm_checkpoints_and_the_resumed_run_matches_an_uninterrupted_one() {
    let Some(g) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"));
    let (child_steps, code) = child_interrupted(dir.path(), 5, 1, &[]);
    assert_eq!(code, 128 + 15, "exit status 128 + SIGTERM");
    let ck_path = dir.path().join("out/last.safetensors");
    let ck = Checkpoint::open(&ck_path).unwrap();
    let progress = ck.progress().unwrap();
    assert!(
        progress.step >= 5,
        "stopped after the steps it ran: {progress:?}"
    );
    assert!(
        progress.step < 9 * EPOCHS as u64,
        "stopped early: {progress:?}"
    );
    assert_eq!(
        child_steps.len() as u64,
        progress.step,
        "every step the child ran was read back before it stopped: {child_steps:?}"
    );

    // Resume in this process, and compare with a run never interrupted.
    let data = train_data(&dir.path().join("data"));
    let resumed = Run::resume(
        g,
        &ck_path,
        data.clone(),
        None,
        opts(&dir.path().join("out")),
    )
    .unwrap()
    .run(&mut |_: &Event| {})
    .unwrap();
    let straight = Run::new(
        g,
        &model(),
        &config(),
        data,
        None,
        opts(&dir.path().join("straight")),
    )
    .unwrap()
    .run(&mut |_: &Event| {})
    .unwrap();
    let joined: Vec<(u64, u32)> = child_steps
        .into_iter()
        .chain(resumed.step_losses.iter().map(|&(s, l)| (s, l.to_bits())))
        .collect();
    let want: Vec<(u64, u32)> = straight
        .step_losses
        .iter()
        .map(|&(s, l)| (s, l.to_bits()))
        .collect();
    assert_eq!(joined.len(), want.len());
    for (a, b) in joined.iter().zip(&want) {
        assert_eq!(a, b, "step {}: interrupted + resumed vs straight", b.0);
    }
    let rows = finegrain::train::read_metrics(&dir.path().join("out/metrics.csv")).unwrap();
    let epochs: Vec<usize> = rows.iter().map(|r| r.epoch).collect();
    assert_eq!(
        epochs,
        (1..=EPOCHS).collect::<Vec<_>>(),
        "one metrics row per epoch"
    );
}

#[test]
fn a_second_sigterm_exits_at_once_and_keeps_the_last_checkpoint() {
    let Some(_) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"));
    let (steps, code) = child_interrupted(dir.path(), 6, 2, &[("CHECKPOINT_EVERY", "2")]);
    assert_eq!(code, 128 + 15, "exit status 128 + SIGTERM");
    assert!((steps.len() as u64) < 9 * EPOCHS as u64);
    // Whatever the second signal interrupted, the checkpoint is a complete, loadable one.
    let ck = Checkpoint::open(&dir.path().join("out/last.safetensors")).unwrap();
    assert!(ck.progress().unwrap().step >= 2);
}

/// `kill -9` at 20 random moments of a run that checkpoints every step: each time the
/// newest checkpoint is complete, loads, and resumes; the temporary file a killed write
/// leaves behind is cleaned up by the next run.
#[test]
fn kill_9_at_random_moments_always_leaves_a_checkpoint_that_resumes() {
    let Some(g) = finegrain::testing::gpu() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(&dir.path().join("data"));
    let data = train_data(&dir.path().join("data"));
    let mut rng = finegrain::testing::rng("kill_9");
    let out = dir.path().join("out");
    let mut last_step = 0;
    for trial in 0..20 {
        let _ = std::fs::remove_dir_all(&out);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "interrupt::interrupt_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env("CHECKPOINT_EVERY", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Once step 1 is read back, the checkpoint of step 1 is complete (each step is read
        // back before the next checkpoint); then kill at a random moment.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = lines.any(|l| l.is_ok_and(|l| l.contains("STEP 1 ")));
        assert!(started, "trial {trial}: the child ran no steps");
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(0..400)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "trial {trial}: killed before the end");
        let ck_path = out.join("last.safetensors");
        let ck = Checkpoint::open(&ck_path)
            .unwrap_or_else(|e| panic!("trial {trial}: the newest checkpoint: {e}"));
        let p = ck.progress().unwrap();
        assert!(p.step >= 1, "trial {trial}: {p:?}");
        last_step = last_step.max(p.step);
        // It resumes (two more steps), and the next run removes what a killed write left.
        let mut o = opts(&out);
        o.max_steps = Some(p.step + 2);
        let s = Run::resume(g, &ck_path, data.clone(), None, o)
            .unwrap()
            .run(&mut |_: &Event| {})
            .unwrap();
        assert_eq!(s.progress.unwrap().step, p.step + 2, "trial {trial}");
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "trial {trial}: {leftovers:?}");
    }
    assert!(last_step > 1, "the kills landed at different moments");
}
