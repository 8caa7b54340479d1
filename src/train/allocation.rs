//! The one allocation of a network: the memory plan's buffers, allocated together
//! ([`super::memory::MemoryPlan::allocate`]) and handed out by label to the parameter
//! table, the layers and the rest of the network, which size nothing themselves.

use crate::error::{Error, Result};
use crate::gpu::Tensor;

/// A plan's buffers on a device ([`super::memory::MemoryPlan::allocate`]), each taken once
/// by its label by the part of the network that uses it.
pub(crate) struct Allocation {
    /// (label, buffer) in plan order; labels planned more than once (a launcher's scratch
    /// in each list) are taken in that order.
    buffers: Vec<(String, Tensor)>,
}

impl Allocation {
    pub(crate) fn new(buffers: Vec<(String, Tensor)>) -> Allocation {
        Allocation { buffers }
    }

    /// The next buffer labelled `label`. An error when the plan has none (left): the plan and
    /// the network disagree, a bug.
    pub(crate) fn take(&mut self, label: &str) -> Result<Tensor> {
        match self.buffers.iter().position(|(l, _)| l == label) {
            Some(i) => Ok(self.buffers.remove(i).1),
            None => Err(Error::invalid(
                "memory plan",
                format!("the network takes a buffer `{label}` the plan does not hold (a bug)"),
            )),
        }
    }

    /// Every buffer was taken; an error names those left (the plan and the network
    /// disagree, a bug).
    pub(crate) fn finish(self) -> Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let left: Vec<&str> = self.buffers.iter().map(|(l, _)| l.as_str()).collect();
        Err(Error::invalid(
            "memory plan",
            format!("buffers planned but not used by the network (a bug): {left:?}"),
        ))
    }
}
