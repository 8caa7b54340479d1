//! The integration tests besides the kernels' (`tests/gpu`), as modules of one test binary:
//! one link of wgpu and naga instead of one per file. Run one group by its module path,
//! e.g. `cargo test --test suite train::` or `cargo test --test suite hostile::`.
//!
//! Tests that count a device's allocations or destroy a device make their own
//! (`alloc`, `memory`, `device_lost`); the injected write failures of `faults` apply to
//! the test's own thread only; `interrupt` runs this binary again as its child, filtered
//! to `interrupt::interrupt_child`.

mod alloc;
mod api;
mod checkpoint;
mod data;
mod device_lost;
mod faults;
mod fuzz;
mod hostile;
mod house;
mod interrupt;
mod memory;
mod parity;
mod portability;
mod readme;
mod train;
mod viz;
