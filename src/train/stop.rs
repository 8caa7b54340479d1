//! Stopping a run cleanly: a [`StopFlag`] that a [`super::Run`] checks after every step.
//! When it is set, the run finishes the step it is on, writes its checkpoint (atomically)
//! and returns with [`super::RunSummary::interrupted`] set; resuming from that checkpoint
//! gives the same batches, masks and losses as a run that was never stopped.
//!
//! [`StopFlag::on_signals`] sets it from Ctrl-C (SIGINT) and SIGTERM; a second signal
//! exits at once with the conventional status (128 + the signal number) without touching
//! the last checkpoint, which every write replaces atomically.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What [`StopFlag::requested`] holds when the stop was asked for by the program.
const BY_CALLER: usize = usize::MAX;

/// A shared "stop at the next step" request (cheap to clone; clones share the request).
#[derive(Clone, Debug, Default)]
pub struct StopFlag {
    /// 0: no request; a signal number; or [`BY_CALLER`].
    state: Arc<AtomicUsize>,
}

impl StopFlag {
    /// A flag nobody has set.
    pub fn new() -> StopFlag {
        StopFlag::default()
    }

    /// Ask the run to stop after its current step.
    pub fn request(&self) {
        let _ = self
            .state
            .compare_exchange(0, BY_CALLER, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_requested(&self) -> bool {
        self.state.load(Ordering::SeqCst) != 0
    }

    /// The signal that asked for the stop, if it was a signal.
    pub fn signal(&self) -> Option<i32> {
        match self.state.load(Ordering::SeqCst) {
            0 | BY_CALLER => None,
            s => Some(s as i32),
        }
    }

    /// The exit status a program stopped this way should end with: 128 + the signal (130
    /// for Ctrl-C, 143 for SIGTERM), 1 when the program itself asked, 0 with no request.
    pub fn exit_status(&self) -> i32 {
        match self.state.load(Ordering::SeqCst) {
            0 => 0,
            BY_CALLER => 1,
            s => 128 + s as i32,
        }
    }

    /// A flag set by SIGINT (Ctrl-C) and SIGTERM. The first signal only sets it; a second
    /// one exits the process at once with status 128 + the signal. On platforms without
    /// Unix signals this is an error: use [`StopFlag::request`] from your own handler.
    pub fn on_signals() -> Result<StopFlag> {
        let flag = StopFlag::new();
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            use signal_hook::flag;
            let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [SIGINT, SIGTERM] {
                let fail = |e: std::io::Error| Error::Signal {
                    message: format!("cannot install the handler for signal {sig}: {e}"),
                };
                // Order matters: the shutdown hook runs first and sees `armed` only once an
                // earlier signal has set it.
                flag::register_conditional_shutdown(sig, 128 + sig, armed.clone()).map_err(fail)?;
                flag::register(sig, armed.clone()).map_err(fail)?;
                let state = flag.state.clone();
                // SAFETY: the handler only does an atomic compare-exchange, which is
                // async-signal-safe.
                unsafe {
                    signal_hook::low_level::register(sig, move || {
                        let _ = state.compare_exchange(
                            0,
                            sig as usize,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                    })
                }
                .map_err(fail)?;
            }
            Ok(flag)
        }
        #[cfg(not(unix))]
        {
            let _ = flag;
            Err(Error::Signal {
                message: "signal handling is only built on Unix; call StopFlag::request \
                          from your own Ctrl-C handler"
                    .into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_shared_by_clones_and_the_first_one_wins() {
        let a = StopFlag::new();
        let b = a.clone();
        assert!(!a.is_requested());
        assert_eq!(a.exit_status(), 0);
        b.request();
        assert!(a.is_requested());
        assert_eq!((a.signal(), a.exit_status()), (None, 1));
    }
}
