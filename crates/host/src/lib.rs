//! slotpool-host: the `slotpool` binary's library — configuration ([`config`]), the
//! supervisor ([`supervise`]) and the command line ([`cli`]).
//!
//! Unsafe code is confined to the spawner's few syscalls in `supervise::sys`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod supervise;
