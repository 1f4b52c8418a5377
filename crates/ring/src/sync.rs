//! Atomics facade: the ring algorithms use these names, so the same code runs on real
//! atomics in shared memory and, under `RUSTFLAGS="--cfg loom"`, on loom's model atomics
//! (see `tests/loom.rs` and `scripts/ring-loom.sh`).
//!
//! Under loom a region still has its bytes on the heap, but every atomic word of the
//! layout lives in a side table of loom atomics keyed by its offset (loom atomics cannot
//! be placed over raw bytes), and every ring slot has a loom `UnsafeCell<()>` that the
//! copy in / copy out goes through, so loom checks that the Release/Acquire pairs on the
//! counters really order the slot accesses.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
