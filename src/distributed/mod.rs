//! Data-parallel training: what the ranks of one job exchange, behind [`Collective`].
//!
//! A job of `R` ranks (one process per GPU) trains one model. Every optimizer step, each
//! rank runs its share of the global batch ([`Shard`]), then the ranks sum their parameter
//! gradients with [`Collective::sum`], in rank order (`((g_0 + g_1) + g_2) + ...`, the same
//! order whatever the timing, so every rank gets the same bits), and each applies the same
//! SGD step. Rank 0's batch-norm running statistics are broadcast after each step (as
//! PyTorch's DDP does by default), so every rank holds the same model.
//!
//! [`Solo`] is the one-process collective (nothing to exchange). With the cargo feature
//! `mpi`, `finegrain::distributed::mpi::Mpi` runs over MPI (rsmpi): `mpirun -np R` or
//! Slurm's `srun` start the ranks.

#[cfg(feature = "mpi")]
pub mod mpi;

use crate::error::Result;

/// The exchanges a data-parallel run needs. Every rank calls each method in the same
/// order with buffers of the same length; an implementation fails (rather than hangs)
/// when a rank is gone, where its transport allows.
pub trait Collective: std::fmt::Debug {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Ranks in the job.
    fn size(&self) -> usize;

    /// Every rank's `buf` replaced by the element-wise sum over ranks, added in rank
    /// order (rank 0's plus rank 1's, plus rank 2's, ...): identical bits on every rank.
    fn sum(&self, buf: &mut [f32]) -> Result<()>;

    /// [`Collective::sum`] in f64 (evaluation counts and loss sums).
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Every rank's `buf` replaced by rank `root`'s.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Stop the whole job after this rank failed with `message` (MPI_Abort): the other
    /// ranks do not wait for it forever. The one-process collective does nothing.
    fn abort(&self, message: &str);
}

/// The collective of a one-process run: one rank, nothing to exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
    fn abort(&self, _: &str) {}
}

/// Which micro-batches of each global batch one rank trains on.
///
/// The global batch of a step is `ranks * accumulate` micro-batches of `batch` images, taken
/// in order from one shuffled order of the training set (fixed by the seed and the epoch,
/// the same for every rank and every rank count). Rank `r` trains on micro-batches
/// `r * accumulate .. (r + 1) * accumulate` of it, summing their gradients on its GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub ranks: usize,
    /// Micro-batches per rank per optimizer step.
    pub accumulate: usize,
}

impl Shard {
    /// A one-process run that sums `accumulate` micro-batches per step.
    pub fn solo(accumulate: usize) -> Shard {
        Shard {
            rank: 0,
            ranks: 1,
            accumulate,
        }
    }

    /// Micro-batches in a global batch.
    pub fn micro_batches(&self) -> usize {
        self.ranks * self.accumulate
    }

    /// This rank's first micro-batch within a global batch.
    pub fn first(&self) -> usize {
        self.rank * self.accumulate
    }

    /// The mask seed of micro-batch `i` (of this rank) at optimizer step `step`: the
    /// micro-batch's position in the whole run, so that a micro-batch gets the same masks
    /// on whichever rank, and in whichever accumulation, it runs. With one micro-batch per
    /// step it is the step, as without accumulation.
    pub fn mask_seed(&self, step: u64, i: usize) -> u64 {
        step * self.micro_batches() as u64 + (self.first() + i) as u64
    }
}

/// Bytes each rank sends per optimizer step in the rank-order sum of `gradients` f32
/// values (plus the few statistics values that ride along) and the broadcast of `bn_state`
/// values, for `ranks` ranks: the chain passes every element once through each link
/// (rank `r` sends its partial sum to `r + 1`), then the last rank's result goes out by a
/// broadcast tree. The busiest rank sends about twice the gradients' size.
pub fn bytes_per_step(gradients: usize, bn_state: usize, ranks: usize) -> u64 {
    if ranks < 2 {
        return 0;
    }
    // Chain: one send of the gradients; broadcast of the sum: up to log2(R) sends of it on
    // a binomial tree, but one on average; BN statistics: the same.
    let grads = 4 * gradients as u64;
    let bn = 4 * bn_state as u64;
    2 * grads + bn
}
