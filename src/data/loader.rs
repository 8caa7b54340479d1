//! Background batch loader for one epoch.
//!
//! Determinism: the epoch's sample order is a pure function of (seed, epoch) ([`epoch_order`]),
//! batch `b` holds order positions `b * batch .. (b + 1) * batch`, and sample `i` is augmented
//! with [`sample_rng`]`(seed, epoch, i)`. Each batch is built whole by one worker, and batches
//! are handed out in order, so thread count and timing change nothing: a run resumed with
//! `start_batch = k` sees exactly the batches `k..` of the uninterrupted run.
//!
//! Bad samples (a corrupt, empty or unreadable file, i.e. [`Dataset::load`] returned `Err` or
//! panicked) are logged once with `log::warn!` naming the file and recorded ([`Loader::skipped`]).
//! In training mode the batch is then topped up with the next valid samples of the epoch order
//! (wrapping around; a replacement gets an RNG derived from its index, the batch and the slot,
//! so it differs from that sample's own draw), keeping the batch size fixed; in evaluation mode
//! the batch is just shorter (`len`), so no sample counts twice. With `strict` the first bad
//! sample ends the epoch with an error naming the file.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{splitmix64, Dataset};
use crate::{Error, Result};

/// One batch, `(N, H, W, C)` f32 with `N` = the loader's batch size.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Position of this batch in the epoch (0-based).
    pub index: usize,
    /// `batch * H * W * C` values; images `len..` are zeros.
    pub images: Vec<f32>,
    /// `batch` labels; `labels[len..]` are 0 (padding).
    pub labels: Vec<u32>,
    /// Number of valid images (the batch size in training unless the final partial batch is
    /// kept; fewer in evaluation when files were bad).
    pub len: usize,
    /// Dataset indices of the `len` valid images, in order.
    pub indices: Vec<usize>,
}

/// Options of a [`Loader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Images per batch (> 0).
    pub batch: usize,
    /// Shuffle the order each epoch (a pure function of `seed` and `epoch`).
    pub shuffle: bool,
    /// Training augmentation, and replacement of bad samples.
    pub train: bool,
    pub seed: u64,
    pub epoch: usize,
    /// Drop the final partial batch.
    pub drop_last: bool,
    /// Decoding threads; 0 decodes on the caller's thread inside `next()`.
    pub threads: usize,
    /// Fail on the first bad sample instead of skipping it.
    pub strict: bool,
    /// First batch to produce (resume inside an epoch).
    pub start_batch: usize,
    /// Batches decoded ahead of the consumer (> 0; at least `threads` are used).
    pub prefetch: usize,
    /// `(index, count)`: only every `count`-th batch of the epoch, from batch `index`
    /// (`0 <= index < count`): the share of one rank of a data-parallel run. The loader's
    /// batch `j` is the epoch's batch `j * count + index`, and `start_batch` counts the
    /// loader's batches. With `drop_last` every index gets the same number of batches
    /// (`num_batches / count`); without, the first ones get one more. `(0, 1)`: every batch.
    pub shard: (usize, usize),
}

impl LoaderOptions {
    /// Checks the options on their own; errors name the field: `batch` and `prefetch` must
    /// be at least 1 (`threads` may be 0: decoding then happens inside `next()`).
    /// [`Loader::new`] also checks them against the dataset.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            return Err(Error::invalid("batch", "0: must be at least 1 image"));
        }
        if self.prefetch == 0 {
            return Err(Error::invalid(
                "prefetch",
                "0: must be at least 1 batch decoded ahead",
            ));
        }
        let (index, count) = self.shard;
        if index >= count {
            return Err(Error::invalid(
                "shard",
                format!("batch {index} of every {count}: the index must be below the count"),
            ));
        }
        Ok(())
    }
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch: 32,
            shuffle: true,
            train: true,
            seed: 0,
            epoch: 0,
            drop_last: true,
            threads: 2,
            strict: false,
            start_batch: 0,
            prefetch: 3,
            shard: (0, 1),
        }
    }
}

/// The RNG that augments sample `index` in `epoch`.
pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> StdRng {
    let h = splitmix64(splitmix64(splitmix64(seed) ^ epoch as u64) ^ index as u64);
    StdRng::seed_from_u64(h)
}

/// The RNG of sample `index` used as a replacement in slot `slot` of batch `batch`.
fn replacement_rng(seed: u64, epoch: usize, index: usize, batch: usize, slot: usize) -> StdRng {
    let h = splitmix64(splitmix64(splitmix64(seed) ^ epoch as u64) ^ index as u64);
    let h = splitmix64(h ^ 0x7265_706c_6163_6521 ^ splitmix64(batch as u64) ^ slot as u64);
    StdRng::seed_from_u64(h)
}

/// The order of an epoch's samples: `0..len`, shuffled (Fisher-Yates) when `shuffle`.
pub fn epoch_order(len: usize, shuffle: bool, seed: u64, epoch: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(splitmix64(
            splitmix64(seed ^ 0x006f_7264_6572) ^ epoch as u64,
        ));
        for i in (1..len).rev() {
            let j = rng.random_range(0..=i);
            v.swap(i, j);
        }
    }
    v
}

/// Number of batches of an epoch.
pub fn num_batches(len: usize, batch: usize, drop_last: bool) -> usize {
    if batch == 0 {
        0
    } else if drop_last {
        len / batch
    } else {
        len.div_ceil(batch)
    }
}

struct State {
    next_assign: usize,
    next_consume: usize,
    ready: BTreeMap<usize, Result<Batch>>,
    stop: bool,
    pool: Vec<Vec<f32>>,
}

struct Shared {
    dataset: Arc<dyn Dataset>,
    opts: LoaderOptions,
    order: Vec<usize>,
    end: usize,
    state: Mutex<State>,
    cv: Condvar,
    skipped: Mutex<BTreeMap<usize, (String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Shared {
    fn is_known_bad(&self, i: usize) -> bool {
        lock(&self.skipped).contains_key(&i)
    }

    fn record_bad(&self, i: usize, err: &Error) {
        let mut s = lock(&self.skipped);
        if let std::collections::btree_map::Entry::Vacant(e) = s.entry(i) {
            let what = self.dataset.describe(i);
            log::warn!("skipping bad sample {what}: {err}");
            e.insert((what, err.to_string()));
        }
    }

    /// Loads sample `i` into `out`, turning a panic into an error.
    fn load(&self, i: usize, rng: &mut StdRng, out: &mut [f32]) -> Result<()> {
        match catch_unwind(AssertUnwindSafe(|| {
            self.dataset.load(i, self.opts.train, rng, out)
        })) {
            Ok(r) => r,
            Err(p) => Err(Error::format(
                self.dataset.describe(i),
                format!("panicked while decoding: {}", panic_message(p)),
            )),
        }
    }

    /// The loader's batch `j`: the epoch's batch `j * count + index` ([`LoaderOptions::shard`]).
    fn build(&self, j: usize, buf: Option<Vec<f32>>) -> Result<Batch> {
        let o = &self.opts;
        let b = j * o.shard.1 + o.shard.0;
        let n = self.order.len();
        let s = self.dataset.info().sample_len();
        let mut images = buf.unwrap_or_default();
        images.clear();
        images.resize(o.batch * s, 0.0);
        let mut labels = vec![0u32; o.batch];
        let mut indices = Vec::with_capacity(o.batch);
        let (start, stop) = (b * o.batch, ((b + 1) * o.batch).min(n));
        let nominal = stop - start;
        let mut slot = 0;
        for &i in &self.order[start..stop] {
            let mut rng = sample_rng(o.seed, o.epoch, i);
            match self.load(i, &mut rng, &mut images[slot * s..(slot + 1) * s]) {
                Ok(()) => {
                    labels[slot] = self.dataset.label(i);
                    indices.push(i);
                    slot += 1;
                }
                Err(e) => {
                    if o.strict {
                        return Err(strict_error(&*self.dataset, i, e));
                    }
                    self.record_bad(i, &e);
                }
            }
        }
        if o.train && slot < nominal {
            let mut j = 0;
            while slot < nominal {
                if j >= n {
                    return Err(Error::invalid(
                        "dataset",
                        format!(
                            "batch {b}: no valid sample left to fill it ({} bad samples skipped)",
                            lock(&self.skipped).len()
                        ),
                    ));
                }
                let i = self.order[(stop + j) % n];
                j += 1;
                // Samples already found bad fail again: skipping them early changes nothing.
                if self.is_known_bad(i) {
                    continue;
                }
                let mut rng = replacement_rng(o.seed, o.epoch, i, b, slot);
                match self.load(i, &mut rng, &mut images[slot * s..(slot + 1) * s]) {
                    Ok(()) => {
                        labels[slot] = self.dataset.label(i);
                        indices.push(i);
                        slot += 1;
                    }
                    Err(e) => self.record_bad(i, &e),
                }
            }
        }
        images[slot * s..].fill(0.0);
        Ok(Batch {
            index: b,
            images,
            labels,
            len: slot,
            indices,
        })
    }

    fn worker(&self) {
        loop {
            let (b, buf) = {
                let mut st = lock(&self.state);
                loop {
                    if st.stop || st.next_assign >= self.end {
                        return;
                    }
                    if st.next_assign < st.next_consume + self.opts.prefetch {
                        break;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                st.next_assign += 1;
                (st.next_assign - 1, st.pool.pop())
            };
            let r = match catch_unwind(AssertUnwindSafe(|| self.build(b, buf))) {
                Ok(r) => r,
                Err(p) => Err(Error::invalid(
                    "loader",
                    format!("worker panicked building batch {b}: {}", panic_message(p)),
                )),
            };
            let mut st = lock(&self.state);
            st.ready.insert(b, r);
            self.cv.notify_all();
        }
    }
}

fn strict_error(ds: &dyn Dataset, i: usize, e: Error) -> Error {
    let what = ds.describe(i);
    if e.to_string().contains(&what) {
        e
    } else {
        Error::format(what, format!("bad sample {i} (strict mode): {e}"))
    }
}

/// Produces one epoch's batches in order, decoding ahead in worker threads. An iterator of
/// `Result<Batch>`; after an error it ends.
pub struct Loader {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    finished: bool,
}

impl Loader {
    /// Starts loading epoch `opts.epoch` of `dataset` from batch `opts.start_batch`.
    pub fn new(dataset: Arc<dyn Dataset>, opts: LoaderOptions) -> Result<Self> {
        opts.validate()?;
        if dataset.is_empty() {
            return Err(Error::invalid("dataset", "has no samples"));
        }
        let sample = dataset.info().sample_len();
        if opts
            .batch
            .checked_mul(sample)
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()))
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{} images of {sample} values each do not fit in memory",
                    opts.batch
                ),
            ));
        }
        let len = dataset.len();
        let all = num_batches(len, opts.batch, opts.drop_last);
        let (index, count) = opts.shard;
        let end = match opts.drop_last {
            true => all / count,
            false => (all + count - 1 - index) / count,
        };
        if opts.start_batch > end {
            return Err(Error::invalid(
                "start_batch",
                format!("{}: the epoch has {end} batches", opts.start_batch),
            ));
        }
        let mut opts = opts;
        opts.prefetch = opts.prefetch.max(opts.threads).max(1);
        let order = epoch_order(len, opts.shuffle, opts.seed, opts.epoch);
        let threads = opts.threads;
        let shared = Arc::new(Shared {
            dataset,
            order,
            end,
            state: Mutex::new(State {
                next_assign: opts.start_batch,
                next_consume: opts.start_batch,
                ready: BTreeMap::new(),
                stop: false,
                pool: Vec::new(),
            }),
            opts,
            cv: Condvar::new(),
            skipped: Mutex::new(BTreeMap::new()),
        });
        let mut workers = Vec::with_capacity(threads);
        for t in 0..threads {
            let sh = Arc::clone(&shared);
            let h = std::thread::Builder::new()
                .name(format!("finegrain-loader-{t}"))
                .spawn(move || sh.worker())
                .map_err(|e| {
                    Error::invalid("loader", format!("cannot start a worker thread: {e}"))
                })?;
            workers.push(h);
        }
        Ok(Loader {
            shared,
            workers,
            finished: false,
        })
    }

    /// Batches in the whole epoch (including those before `start_batch`; of this shard
    /// only, with [`LoaderOptions::shard`]).
    pub fn num_batches(&self) -> usize {
        self.shared.end
    }

    /// The options in force (`prefetch` raised to at least `threads`).
    pub fn options(&self) -> &LoaderOptions {
        &self.shared.opts
    }

    /// The epoch's sample order.
    pub fn order(&self) -> &[usize] {
        &self.shared.order
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.shared.dataset
    }

    /// Bad samples met so far, as (file, reason), by dataset index. Complete once the epoch
    /// has been consumed.
    pub fn skipped(&self) -> Vec<(String, String)> {
        lock(&self.shared.skipped).values().cloned().collect()
    }

    /// Number of bad samples met so far.
    pub fn skipped_count(&self) -> usize {
        lock(&self.shared.skipped).len()
    }

    /// Hands a consumed batch's image buffer back for reuse (saves an allocation per batch).
    pub fn recycle(&self, batch: Batch) {
        let mut st = lock(&self.shared.state);
        if st.pool.len() <= self.shared.opts.prefetch {
            st.pool.push(batch.images);
        }
    }

    fn stop(&mut self) {
        {
            let mut st = lock(&self.shared.state);
            st.stop = true;
            self.shared.cv.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished {
            return None;
        }
        let sh = &self.shared;
        let r = if self.workers.is_empty() {
            let (b, buf) = {
                let mut st = lock(&sh.state);
                if st.next_consume >= sh.end {
                    self.finished = true;
                    return None;
                }
                st.next_consume += 1;
                (st.next_consume - 1, st.pool.pop())
            };
            sh.build(b, buf)
        } else {
            let mut st = lock(&sh.state);
            if st.next_consume >= sh.end {
                drop(st);
                self.finished = true;
                self.stop();
                return None;
            }
            loop {
                let want = st.next_consume;
                if let Some(r) = st.ready.remove(&want) {
                    st.next_consume += 1;
                    sh.cv.notify_all();
                    break r;
                }
                st = sh.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        if r.is_err() {
            self.finished = true;
            self.stop();
        }
        Some(r)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}
