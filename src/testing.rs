//! Helpers shared by the tests, the benchmark and the examples' self-checks: the shared
//! test adapter, fresh random inputs, and the GPU-versus-twin comparison.

use crate::gpu::Gpu;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// Environment variable that lets GPU tests pass without an adapter (they print that they
/// checked nothing). Without it, a missing adapter fails every GPU test.
pub const ALLOW_NO_GPU: &str = "FINEGRAIN_ALLOW_NO_GPU";

/// The adapter shared by every test in a test binary. Panics (failing the test) when no
/// adapter can be created, unless `FINEGRAIN_ALLOW_NO_GPU=1` is set, in which case it
/// returns `None` and the caller returns early.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        let r = Gpu::from_env().map_err(|e| e.to_string());
        if let Ok(g) = &r {
            eprintln!("finegrain tests on: {}", g.describe());
        }
        r
    });
    match g {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var(ALLOW_NO_GPU).is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED (no adapter, {ALLOW_NO_GPU}=1): {e}");
                None
            } else {
                panic!("GPU test needs an adapter: {e}\n(set {ALLOW_NO_GPU}=1 to skip GPU tests)");
            }
        }
    }
}

/// A random generator seeded from `FINEGRAIN_TEST_SEED` or fresh entropy; the seed is
/// printed so a failure can be replayed.
pub fn rng(test: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("FINEGRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: FINEGRAIN_TEST_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn uniform(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Widen to f64 for the twins.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Result of comparing GPU output against a twin.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub bad: usize,
    pub worst_index: usize,
    pub worst_err: f64,
    pub max_abs_err: f64,
    pub report: String,
}

/// Compare `|got - want| <= atol + rtol * |want|` elementwise (NaN never passes).
pub fn compare(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) -> Comparison {
    let mut bad = 0;
    let mut first = Vec::new();
    let mut worst_index = 0;
    let mut worst_ratio = -1.0f64;
    let mut max_abs_err = 0.0f64;
    if got.len() != want.len() {
        return Comparison {
            bad: got.len().max(want.len()),
            worst_index: 0,
            worst_err: f64::INFINITY,
            max_abs_err: f64::INFINITY,
            report: format!(
                "{name}: length {} != reference length {}",
                got.len(),
                want.len()
            ),
        };
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let tol = atol + rtol * w.abs();
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / tol
        };
        // Written so that a NaN error counts as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let fails = !(err <= tol);
        if fails {
            bad += 1;
            if first.len() < 5 {
                first.push(format!("[{i}] gpu {g:e} ref {w:e} err {err:e}"));
            }
        }
        if ratio > worst_ratio {
            worst_ratio = ratio;
            worst_index = i;
        }
        if err.is_nan() || err > max_abs_err {
            max_abs_err = if err.is_nan() { f64::INFINITY } else { err };
        }
    }
    let worst_err = if got.is_empty() {
        0.0
    } else {
        (got[worst_index] as f64 - want[worst_index]).abs()
    };
    let report = format!(
        "{name}: {bad}/{} elements outside atol {atol:e} + rtol {rtol:e}; worst [{worst_index}] gpu {:e} ref {:e} (err {worst_err:e}); max abs err {max_abs_err:e}{}",
        got.len(),
        got.get(worst_index).copied().unwrap_or(f32::NAN),
        want.get(worst_index).copied().unwrap_or(f64::NAN),
        if first.is_empty() { String::new() } else { format!("\n  first: {}", first.join("; ")) }
    );
    Comparison {
        bad,
        worst_index,
        worst_err,
        max_abs_err,
        report,
    }
}

/// Panic with a report (worst element, first failures) unless `got` matches `want`.
#[track_caller]
pub fn assert_close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    let c = compare(name, got, want, atol, rtol);
    assert!(c.bad == 0, "{}", c.report);
}

/// Central finite-difference gradient of `f` at `x` for the listed coordinates.
pub fn finite_diff(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    coords: &[usize],
    h: f64,
) -> Vec<f64> {
    let mut xp = x.to_vec();
    coords
        .iter()
        .map(|&i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let fp = f(&xp);
            xp[i] = orig - h;
            let fm = f(&xp);
            xp[i] = orig;
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Assert an analytic gradient matches central differences of `f` on `samples` coordinates
/// (all coordinates when there are at most `samples`).
#[track_caller]
pub fn check_grad(
    name: &str,
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    samples: usize,
    rng: &mut impl Rng,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let coords: Vec<usize> = if x.len() <= samples {
        (0..x.len()).collect()
    } else {
        (0..samples).map(|_| rng.random_range(0..x.len())).collect()
    };
    let num = finite_diff(f, x, &coords, 1e-5);
    for (j, &i) in coords.iter().enumerate() {
        let err = (num[j] - analytic[i]).abs();
        let tol = 1e-6 + 1e-5 * num[j].abs().max(analytic[i].abs());
        assert!(
            err <= tol,
            "{name}: d/dx[{i}] analytic {:e} vs finite difference {:e} (err {err:e})",
            analytic[i],
            num[j]
        );
    }
}

/// Write a class-per-folder tree of `per_class` grayscale `size` x `size` PNGs per class
/// under `root/<name>/`, whose class is visible (class 0: bright left half, 1: bright top
/// half, 2 and up: a checkerboard of cell `c - 1`), with uniform noise of +-30 drawn from
/// `seed`. For the end-to-end tests.
pub fn write_toy_folders(
    root: &std::path::Path,
    names: &[&str],
    per_class: usize,
    size: u32,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for (c, name) in names.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("test folder");
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(size, size, |x, y| {
                let on = match c {
                    0 => x < size / 2,
                    1 => y < size / 2,
                    _ => (x / (c as u32 - 1) + y / (c as u32 - 1)).is_multiple_of(2),
                };
                let base: f32 = if on { 200.0 } else { 40.0 };
                image::Luma([(base + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0) as u8])
            });
            img.save(dir.join(format!("{i}.png"))).expect("test image");
        }
    }
}

/// A tree written by [`write_toy_folders`], opened whole as a training set (grayscale, its
/// own `size`, nothing held out).
pub fn open_toy_folders(
    root: &std::path::Path,
    size: usize,
) -> std::sync::Arc<dyn crate::data::Dataset> {
    let opts = crate::data::DataOptions {
        channels: Some(1),
        size: Some(size),
        test_fraction: 0.0,
        ..crate::data::DataOptions::default()
    };
    std::sync::Arc::from(
        crate::data::open_dataset(root, crate::data::Split::Train, &opts).expect("toy dataset"),
    )
}

/// The tensors of a safetensors file: (name, dtype, shape, little-endian bytes), sorted by
/// name, as the fuzz targets and the hostile-input catalogue edit them.
pub type StTensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// The metadata and tensors of the safetensors bytes `b` (panics on a file that is not
/// one: the callers pass files they made).
pub fn read_safetensors(b: &[u8]) -> (std::collections::HashMap<String, String>, StTensors) {
    let (_, header) = safetensors::SafeTensors::read_metadata(b).expect("a safetensors file");
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(b).expect("a safetensors file");
    let mut t: StTensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    (meta, t)
}

/// Safetensors bytes of `t` with metadata `meta`.
pub fn write_safetensors(
    meta: Option<&std::collections::HashMap<String, String>>,
    t: &StTensors,
) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b);
            (n.clone(), v.expect("consistent tensor"))
        })
        .collect();
    safetensors::serialize(views, meta.cloned()).expect("serializable tensors")
}

/// The backbone of the finegrain checkpoint `checkpoint` (bytes) as a torchvision state
/// dict: the head as `fc`, no momentum, a `num_batches_tracked` per batch norm.
pub fn torchvision_state_dict(checkpoint: &[u8]) -> Vec<u8> {
    let (_, t) = read_safetensors(checkpoint);
    let mut sd: StTensors = Vec::new();
    for (n, d, s, b) in t {
        if n.starts_with(crate::checkpoint::MOMENTUM_PREFIX) {
            continue;
        }
        match n.as_str() {
            "head.weight" => sd.push(("fc.weight".into(), d, s[..2].to_vec(), b)),
            "head.bias" => sd.push(("fc.bias".into(), d, s, b)),
            _ => {
                if let Some(bn) = n.strip_suffix(".running_mean") {
                    let tracked = 7i64.to_le_bytes().to_vec();
                    let name = format!("{bn}.num_batches_tracked");
                    sd.push((name, safetensors::Dtype::I64, vec![], tracked));
                }
                sd.push((n, d, s, b));
            }
        }
    }
    write_safetensors(None, &sd)
}

/// A stand-in for the Hugging Face Hub on 127.0.0.1, for tests that must not touch the
/// internet: it serves files in the Hub's URL layout (`/{owner}/{name}/resolve/{rev}/{file}`)
/// with the headers `hf-hub` reads (`x-repo-commit`, `x-linked-etag` = the file's SHA-256,
/// `content-range` for range requests), and answers 404 with the Hub's `x-error-code`
/// (`RepoNotFound`, `EntryNotFound`) otherwise. It stops when dropped.
#[cfg(not(target_arch = "wasm32"))]
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`: the `HF_ENDPOINT` of the tests.
    pub endpoint: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One file a [`FakeHub`] serves.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug)]
pub struct HubFixture {
    /// `owner/name`.
    pub repo: String,
    pub file: String,
    pub bytes: Vec<u8>,
    /// Announce this SHA-256 instead of the bytes' own (a corrupted transfer).
    pub wrong_sha: bool,
}

#[cfg(not(target_arch = "wasm32"))]
impl FakeHub {
    /// Serve `files` on a fresh port of 127.0.0.1.
    pub fn serve(files: Vec<HubFixture>) -> FakeHub {
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let files: Vec<(HubFixture, String)> = files
            .into_iter()
            .map(|f| {
                let mut sha: String = Sha256::digest(&f.bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if f.wrong_sha {
                    sha = sha.chars().rev().collect();
                }
                (f, sha)
            })
            .collect();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req, stp) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                req.fetch_add(1, Ordering::SeqCst);
                let _ = answer(conn, &files);
            }
        });
        FakeHub {
            endpoint: format!("http://{addr}"),
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// HTTP requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer one HTTP/1.1 request of `hf-hub` (GET, optionally with `Range: bytes=a-[b]`).
#[cfg(not(target_arch = "wasm32"))]
fn answer(mut conn: std::net::TcpStream, files: &[(HubFixture, String)]) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                if let Some((a, b)) = v.trim().trim_start_matches("bytes=").split_once('-') {
                    range = a.parse().ok().map(|a| (a, b.parse().ok()));
                }
            }
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let not_found = |conn: &mut std::net::TcpStream, code: &str| {
        let body = format!("{{\"error\":\"{code}\"}}");
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nx-error-code: {code}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if parts.len() < 5 || parts[2] != "resolve" {
        return not_found(&mut conn, "RepoNotFound");
    }
    let repo = format!("{}/{}", parts[0], parts[1]);
    let (revision, file) = (parts[3], parts[4]);
    if !files.iter().any(|(f, _)| f.repo == repo) {
        return not_found(&mut conn, "RepoNotFound");
    }
    let Some((f, sha)) = files
        .iter()
        .find(|(f, _)| f.repo == repo && f.file == file && revision == "main")
    else {
        return not_found(&mut conn, "EntryNotFound");
    };
    let n = f.bytes.len();
    let (a, b) = match range {
        Some((a, b)) => (a.min(n), b.map_or(n, |b| (b + 1).min(n))),
        None => (0, n),
    };
    let body = &f.bytes[a..b.max(a)];
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nx-repo-commit: {commit}\r\nx-linked-etag: \"{sha}\"\r\n\
         etag: \"{sha}\"\r\ncontent-range: bytes {a}-{}/{n}\r\ncontent-length: {}\r\n\
         content-type: application/octet-stream\r\nconnection: close\r\n\r\n",
        b.max(a + 1) - 1,
        body.len()
    )?;
    conn.write_all(body)?;
    conn.flush()
}

/// A torchvision-named ImageNet-style state dict for `model` (a preset name, 3 channels),
/// with random weights drawn from `seed`, as timm publishes them: `fc` for 1,000 classes,
/// and `num_batches_tracked` only when `tracked` is set. The pretrained fixture of the
/// Hub tests, in place of the real 100 MB download.
pub fn imagenet_fixture(model: &str, seed: u64, tracked: bool) -> crate::Result<Vec<u8>> {
    use crate::train::network::ParamLayout;
    let config = crate::model::ModelConfig::preset(model, 3, 224, 1000)?;
    let topo = crate::train::topology::Topology::new(&config, 1)?;
    let (params, state) = crate::train::params::param_specs(&topo)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut t: StTensors = Vec::new();
    let f32s = |v: Vec<f32>| bytemuck::cast_slice::<f32, u8>(&v).to_vec();
    for p in &params {
        let (shape, v) = match p.layout {
            ParamLayout::Conv { kh, kw, cin, .. } => {
                let n = p.layout.numel();
                let a = (6.0 / (kh * kw * cin) as f32).sqrt();
                let (shape, v) = crate::checkpoint::to_torch(p.layout, &uniform(&mut rng, n, a));
                (shape, v)
            }
            ParamLayout::Head { d, c } => {
                let v = uniform(&mut rng, d * c, (1.0 / d as f32).sqrt());
                (vec![c, d], v)
            }
            ParamLayout::Vector(n) if p.name.ends_with(".weight") => (
                vec![n],
                (0..n).map(|_| rng.random_range(0.5..1.5)).collect(),
            ),
            ParamLayout::Vector(n) => (vec![n], uniform(&mut rng, n, 0.1)),
        };
        let name = match p.name.as_str() {
            "head.weight" => "fc.weight".to_string(),
            "head.bias" => "fc.bias".to_string(),
            n => n.to_string(),
        };
        t.push((name, safetensors::Dtype::F32, shape, f32s(v)));
    }
    for s in &state {
        let v: Vec<f32> = if s.name.ends_with("running_var") {
            (0..s.len).map(|_| rng.random_range(0.5..2.0)).collect()
        } else {
            uniform(&mut rng, s.len, 0.2)
        };
        t.push((
            s.name.clone(),
            safetensors::Dtype::F32,
            vec![s.len],
            f32s(v),
        ));
        if tracked && s.name.ends_with("running_mean") {
            let bn = s.name.trim_end_matches(".running_mean");
            let n = 1000i64.to_le_bytes().to_vec();
            t.push((
                format!("{bn}.num_batches_tracked"),
                safetensors::Dtype::I64,
                vec![],
                n,
            ));
        }
    }
    t.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(write_safetensors(None, &t))
}

/// The ranks of an in-process data-parallel job: one [`ThreadRank`] per thread, exchanging
/// through shared memory with the same rank-order sum as MPI's
/// (`((g_0 + g_1) + g_2) + ...`), so the rank-equivalence checks run in `cargo test`
/// without MPI.
pub fn thread_group(ranks: usize) -> Vec<ThreadRank> {
    let shared = std::sync::Arc::new(ThreadShared {
        barrier: std::sync::Barrier::new(ranks),
        slots: std::sync::Mutex::new(vec![Vec::new(); ranks]),
    });
    (0..ranks)
        .map(|rank| ThreadRank {
            rank,
            ranks,
            shared: shared.clone(),
        })
        .collect()
}

struct ThreadShared {
    barrier: std::sync::Barrier,
    /// Each rank's contribution to the exchange in progress, as f64 bits.
    slots: std::sync::Mutex<Vec<Vec<u64>>>,
}

/// One rank of [`thread_group`] (move it into its thread).
pub struct ThreadRank {
    rank: usize,
    ranks: usize,
    shared: std::sync::Arc<ThreadShared>,
}

impl std::fmt::Debug for ThreadRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "thread rank {} of {}", self.rank, self.ranks)
    }
}

impl ThreadRank {
    /// Every rank's `values` (as u64 bits), in rank order, once all have given theirs.
    fn gather(&self, values: Vec<u64>) -> Vec<Vec<u64>> {
        let s = &self.shared;
        s.slots.lock().expect("slots")[self.rank] = values;
        s.barrier.wait();
        let all = s.slots.lock().expect("slots").clone();
        s.barrier.wait();
        all
    }
}

impl crate::distributed::Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.ranks
    }
    fn sum(&self, buf: &mut [f32]) -> crate::Result<()> {
        let all = self.gather(buf.iter().map(|v| v.to_bits() as u64).collect());
        for (i, v) in buf.iter_mut().enumerate() {
            let mut acc = f32::from_bits(all[0][i] as u32);
            for r in &all[1..] {
                acc += f32::from_bits(r[i] as u32);
            }
            *v = acc;
        }
        Ok(())
    }
    fn sum_f64(&self, buf: &mut [f64]) -> crate::Result<()> {
        let all = self.gather(buf.iter().map(|v| v.to_bits()).collect());
        for (i, v) in buf.iter_mut().enumerate() {
            let mut acc = f64::from_bits(all[0][i]);
            for r in &all[1..] {
                acc += f64::from_bits(r[i]);
            }
            *v = acc;
        }
        Ok(())
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> crate::Result<()> {
        let all = self.gather(buf.iter().map(|v| v.to_bits() as u64).collect());
        for (v, b) in buf.iter_mut().zip(&all[root]) {
            *v = f32::from_bits(*b as u32);
        }
        Ok(())
    }
    fn abort(&self, message: &str) {
        panic!("rank {} of {}: {message}", self.rank, self.ranks);
    }
}

/// Every parameter, momentum and state tensor of `net`, as bits: (parameters and momentum,
/// state), in table order.
pub fn network_bits(gpu: &Gpu, net: &crate::train::Network) -> (Vec<u32>, Vec<u32>) {
    let bits = |t: &crate::gpu::Tensor| -> Vec<u32> {
        let v = gpu.download(t).expect("download");
        v.iter().map(|x| x.to_bits()).collect()
    };
    let mut params = Vec::new();
    for p in &net.params {
        params.extend(bits(&p.value));
        params.extend(bits(&p.velocity));
    }
    let state = net.state.iter().flat_map(|s| bits(&s.value)).collect();
    (params, state)
}

/// The rank-equivalence check of data-parallel training, run by every rank of `comm` (in
/// threads through [`thread_group`], or under `mpirun`): `steps` f32 steps of the tiny model
/// on a toy set in `dir` (a folder every rank sees; rank 0 writes it) with batch `batch`
/// per rank, the diversification block and GCE. After every step the ranks' parameters,
/// momentum and batch-norm statistics must be bit-identical (rank 0's are broadcast and
/// compared on every rank). Then rank 0 alone trains the same steps in one process with
/// `accumulate` = the rank count over the same global order, and its parameters and
/// momentum must equal the job's bit for bit. Panics on any difference, naming the rank
/// and step.
pub fn check_rank_equivalence(
    gpu: &Gpu,
    comm: &dyn crate::distributed::Collective,
    dir: &std::path::Path,
    steps: usize,
) {
    use crate::data::{Loader, LoaderOptions};
    use crate::method::loss::LossKind;
    use crate::train::{TrainConfig, Trainer};
    let (rank, ranks) = (comm.rank(), comm.size());
    let size = 12;
    if rank == 0 && !dir.join("c").is_dir() {
        write_toy_folders(dir, &["a", "b", "c"], 24, size as u32, 5);
    }
    comm.sum(&mut [0.0]).expect("barrier");
    let data = open_toy_folders(dir, size);
    let model = crate::model::ModelConfig::preset("tiny", 1, size, 3).expect("tiny model");
    let batch = 4;
    let cfg = TrainConfig {
        batch,
        lr: 0.05,
        loss: LossKind::Gce { k: 1 },
        ce_warmup_epochs: 0,
        warmup_epochs: 0.0,
        seed: 7,
        ..TrainConfig::default()
    };
    let train = |cfg: &TrainConfig, comm: &dyn crate::distributed::Collective, check: bool| {
        let global = cfg.batch * cfg.accumulate * comm.size();
        let spe = (data.len() / global) as u64;
        let mut t = Trainer::new(gpu, &model, cfg, spe).expect("trainer");
        let mut loader = Loader::new(
            data.clone(),
            LoaderOptions {
                batch: cfg.batch * cfg.accumulate,
                seed: cfg.seed,
                threads: 0,
                shard: (comm.rank(), comm.size()),
                ..LoaderOptions::default()
            },
        )
        .expect("loader");
        for step in 0..steps {
            let b = loader.next().expect("enough batches").expect("batch");
            t.step_with(gpu, &b.images, &b.labels, comm, false)
                .expect("step");
            t.drain(gpu).expect("drain");
            if check {
                let (params, state) = network_bits(gpu, &t.net);
                for (what, mine) in [
                    ("parameters and momentum", params),
                    ("BN statistics", state),
                ] {
                    let mut root: Vec<f32> = mine.iter().map(|b| f32::from_bits(*b)).collect();
                    comm.broadcast(&mut root, 0).expect("broadcast");
                    let differ = root
                        .iter()
                        .zip(&mine)
                        .filter(|(r, m)| r.to_bits() != **m)
                        .count();
                    // Every rank learns the total, so all fail together (none is left
                    // waiting in the next exchange).
                    let mut total = [differ as f32];
                    comm.sum(&mut total).expect("sum");
                    assert_eq!(
                        total[0], 0.0,
                        "step {step}: {} values of the ranks' {what} differ from rank 0's \
                         ({differ} on rank {rank} of {ranks})",
                        total[0]
                    );
                }
            }
        }
        t
    };
    let job = train(&cfg, comm, true);
    if rank == 0 {
        let solo_cfg = TrainConfig {
            accumulate: ranks,
            ..cfg.clone()
        };
        let solo = train(&solo_cfg, &crate::distributed::Solo, false);
        let (a, _) = network_bits(gpu, &job.net);
        let (b, _) = network_bits(gpu, &solo.net);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(
            differ,
            0,
            "{ranks} ranks vs one process accumulating {ranks} micro-batches: {differ} of {} \
             parameter and momentum values differ",
            a.len()
        );
    }
}
