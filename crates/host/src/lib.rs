//! slotpool-host: the `slotpool` host process — configuration ([`config`]), the
//! supervisor ([`supervise`]), the control interface ([`control`]) and the command
//! line ([`cli`]).
//!
//! Unsafe code is confined to the spawner's few syscalls in `supervise::sys` and the two
//! scheduler calls in `audio::sys`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod audio;
pub mod config;
pub mod control;
pub mod supervise;
