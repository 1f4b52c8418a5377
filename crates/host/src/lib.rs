//! slotpool-host: the `slotpool` host process — configuration ([`config`]), the
//! supervisor ([`supervise`]), the control interface ([`control`]) and the command
//! line ([`cli`]).
//!
//! Unsafe code is confined to the spawner's few syscalls in `supervise::sys` and the two
//! scheduler calls in `audio::sys`.

#![deny(unsafe_op_in_unsafe_fn)]
// scripts/rtsan.sh: RealtimeSanitizer checks `EngineRt::process` (nonblocking).
#![cfg_attr(rtsan, feature(sanitize))]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod audio;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod host;
pub mod supervise;

// The library's tests run with the allocation guard armed, as the binary does in debug
// builds: an allocation inside the engine's cycle aborts the test.
#[cfg(all(test, debug_assertions))]
#[global_allocator]
static TEST_ALLOC: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;
