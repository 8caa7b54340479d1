//! [`Collective`] over MPI (rsmpi), for jobs started by `mpirun -np R` or Slurm's `srun`.
//!
//! The rank-order sum is a chain, not `MPI_Allreduce` (whose order of additions is the
//! implementation's choice): rank 0 sends its buffer to rank 1, rank `r` adds its own
//! values to the partial sum it receives from `r - 1` (`partial[i] + mine[i]`) and sends
//! the result on to `r + 1`, and the last rank, which then holds `((g_0 + g_1) + g_2) + ...`,
//! broadcasts it to all. The chain moves the buffer in chunks of [`CHUNK`] elements, each
//! rank receiving the next chunk while it sends the previous one, so a long buffer crosses
//! the `R - 1` links in about the time of one, not `R - 1` times that.
//!
//! MPI's default error handler (`MPI_ERRORS_ARE_FATAL`) is left in place: an MPI error on
//! any rank (a rank gone, a message longer than expected) ends the whole job with MPI's
//! message rather than leaving the other ranks waiting.

use std::marker::PhantomData;
use std::ops::Add;

use mpi::datatype::Equivalence;
use mpi::environment::{Threading, Universe};
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::Root;

use super::Collective;
use crate::error::{Error, Result};

/// Elements per message of the chained sum and per broadcast call: 1 Mi elements (4 MiB of
/// f32). Large enough that MPI's per-message latency is noise, small enough that a
/// 100 MB gradient buffer is pipelined through the chain in some 25 pieces.
pub const CHUNK: usize = 1 << 20;

/// The tag of the chained sum's messages.
const SUM_TAG: i32 = 0x5355;

/// The MPI collective: this process's handle on the job's ranks (`MPI_COMM_WORLD`).
///
/// Only one can exist in a process, and MPI cannot be started again after it is dropped.
/// Dropping it calls `MPI_Finalize`, which waits for every rank to do the same: a rank that
/// fails must call [`Collective::abort`] rather than return (or the others, waiting in an
/// exchange, and it, waiting in `MPI_Finalize`, hang). Dropped while a panic unwinds, it
/// aborts the job itself.
///
/// MPI is initialised at `MPI_THREAD_FUNNELED`: only the thread that called [`Mpi::init`]
/// makes MPI calls, which is why `Mpi` is neither `Send` nor `Sync`.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    /// Keeps `Mpi` on the thread that initialised MPI.
    _not_send: PhantomData<*const ()>,
    /// Dropped last: finalises MPI.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .finish()
    }
}

impl Drop for Mpi {
    /// Aborts the job instead of finalising MPI when dropped by a panic's unwinding: this
    /// rank's `MPI_Finalize` would wait for ranks that wait for it.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abort("panicked; aborting the MPI job");
        }
    }
}

impl Mpi {
    /// Initialises MPI (`MPI_Init_thread`, funneled) and finds this process's rank, the
    /// job's size and this rank's place among the ranks on its node.
    ///
    /// Run outside `mpirun`/`srun`, the process is a job of one rank. Fails when MPI was
    /// already initialised (by another `Mpi` or other code) or has been finalised. If the
    /// MPI library itself fails to start, it ends the process with its own message, as
    /// MPI's default error handler does.
    pub fn init() -> Result<Mpi> {
        if mpi::environment::is_finalized() {
            return Err(Error::invalid(
                "MPI",
                "MPI was already finalised in this process and cannot be initialised again",
            ));
        }
        let (universe, _provided) =
            mpi::environment::initialize_with_threading(Threading::Funneled).ok_or_else(|| {
                Error::invalid(
                    "MPI",
                    "MPI is already initialised in this process (only one Mpi can exist)",
                )
            })?;
        let world = universe.world();
        let rank = to_usize(world.rank());
        let size = to_usize(world.size());
        // The ranks that share memory with this one (those on its node), in world order.
        let node = world.split_shared(world.rank());
        let local_rank = to_usize(node.rank());
        let local_size = to_usize(node.size());
        drop(node);
        Ok(Mpi {
            world,
            rank,
            size,
            local_rank,
            local_size,
            _not_send: PhantomData,
            _universe: universe,
        })
    }

    /// This rank's index among the ranks on the same node (`0..local_size()`, in world rank
    /// order): which of the node's GPUs it should use.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ranks on this rank's node (those that share memory with it).
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// The name MPI gives this rank's node (`MPI_Get_processor_name`, usually the host
    /// name).
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name()
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// The chained, rank-order sum of [`Collective::sum`], for f32 or f64.
    fn chain_sum<T>(&self, buf: &mut [T]) -> Result<()>
    where
        T: Equivalence + Copy + Add<Output = T>,
    {
        if self.size < 2 || buf.is_empty() {
            return Ok(());
        }
        let last = self.size - 1;
        let chunks = buf.len().div_ceil(CHUNK);
        let len = buf.len();
        let range = |k: usize| k * CHUNK..((k + 1) * CHUNK).min(len);
        let prev = (self.rank > 0).then(|| self.world.process_at_rank(to_rank(self.rank - 1)));
        let next = (self.rank < last).then(|| self.world.process_at_rank(to_rank(self.rank + 1)));
        let mut scratch: Vec<T> = Vec::new();
        if let Some(prev) = &prev {
            // The partial sum of the ranks before this one, chunk 0.
            scratch = buf[range(0)].to_vec();
            let status = prev.receive_into_with_tag(&mut scratch[..], SUM_TAG);
            check_count::<T>(&status, scratch.len(), self.rank - 1)?;
            add_into(&mut buf[range(0)], &scratch);
        }
        for k in 0..chunks {
            // Receive chunk k + 1 from the previous rank while sending chunk k (complete:
            // this rank's values added) to the next.
            let want = (prev.is_some() && k + 1 < chunks).then(|| range(k + 1).len());
            let status = mpi::request::scope(|scope| {
                let recv = match (&prev, want) {
                    (Some(prev), Some(len)) => Some(prev.immediate_receive_into_with_tag(
                        scope,
                        &mut scratch[..len],
                        SUM_TAG,
                    )),
                    _ => None,
                };
                let send = next
                    .as_ref()
                    .map(|next| next.immediate_send_with_tag(scope, &buf[range(k)], SUM_TAG));
                let status = recv.map(|r| r.wait());
                if let Some(send) = send {
                    send.wait_without_status();
                }
                status
            });
            if let (Some(status), Some(len)) = (status, want) {
                check_count::<T>(&status, len, self.rank - 1)?;
                add_into(&mut buf[range(k + 1)], &scratch[..len]);
            }
        }
        self.broadcast_chunks(buf, last);
        Ok(())
    }

    /// `MPI_Bcast` of `buf` from `root`, in chunks of [`CHUNK`] elements (each call's count
    /// fits MPI's `int`).
    fn broadcast_chunks<T: Equivalence>(&self, buf: &mut [T], root: usize) {
        let root = self.world.process_at_rank(to_rank(root));
        for chunk in buf.chunks_mut(CHUNK) {
            root.broadcast_into(chunk);
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum(&self, buf: &mut [f32]) -> Result<()> {
        self.chain_sum(buf)
    }

    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.chain_sum(buf)
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(Error::invalid(
                "MPI broadcast root",
                format!("rank {root} does not exist in a job of {} ranks", self.size),
            ));
        }
        if self.size > 1 {
            self.broadcast_chunks(buf, root);
        }
        Ok(())
    }

    fn abort(&self, message: &str) {
        eprintln!("rank {} of {}: {message}", self.rank, self.size);
        self.world.abort(1)
    }
}

/// Adds this rank's values (`mine`, replaced by the result) to the partial sum of the
/// ranks before it, in that order: `mine[i] = partial[i] + mine[i]`.
fn add_into<T: Copy + Add<Output = T>>(mine: &mut [T], partial: &[T]) {
    for (m, &p) in mine.iter_mut().zip(partial) {
        *m = p + *m;
    }
}

/// Fails when `from` sent fewer elements than this rank expected (buffers of different
/// lengths on different ranks; a longer message is MPI's truncation error, fatal).
fn check_count<T: Equivalence>(
    status: &mpi::point_to_point::Status,
    want: usize,
    from: usize,
) -> Result<()> {
    let got = status.count(T::equivalent_datatype());
    if usize::try_from(got) == Ok(want) {
        Ok(())
    } else {
        Err(Error::invalid(
            "MPI sum",
            format!(
                "rank {from} sent {got} elements where {want} were expected: the ranks' \
                 buffers differ in length"
            ),
        ))
    }
}

/// An MPI rank or size (never negative) as an index.
fn to_usize(n: mpi::topology::Rank) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// An index below the job's size (which MPI gave as an `int`) as an MPI rank.
fn to_rank(n: usize) -> mpi::topology::Rank {
    mpi::topology::Rank::try_from(n).unwrap_or(mpi::topology::Rank::MAX)
}
