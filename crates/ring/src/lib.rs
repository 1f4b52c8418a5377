//! # slotpool-ring: the slot region shared by the host and one worker process
//!
//! One region per slot instance: a sealed memfd (never a name in /dev/shm) holding a
//! header (identity, layout, heartbeats, futex doorbells, worker status) and four
//! single-producer single-consumer rings. The binary layout is `docs/ABI.md`.
//!
//! ```text
//! host                                   worker (another process, exec'd)
//! HostRegion::create(slot, layout)  ──fd──▶ WorkerRegion::open(fd)
//!   .host_end() -> HostEnd                    .worker_end() -> WorkerEnd
//!     audio_in:  AudioProducer  ─────────────▶  audio_in:  AudioConsumer
//!     audio_out: AudioConsumer  ◀─────────────  audio_out: AudioProducer
//!     commands:  CommandProducer ────────────▶  commands:  CommandConsumer
//!     events:    EventConsumer  ◀────────────   events:    EventProducer
//!     bell:      HostBell   (doorbell ▶, ◀ done)  bell:    WorkerBell
//!   .monitor() -> Monitor (supervisor thread: heartbeats, idle ring, state, pid, fault)
//! ```
//!
//! A cycle on the host: `audio_in.push(cycle, &block)`, `bell.ring(cycle)`, then
//! `wait_output(cycle, &mut out, deadline)`, which is `Ready` or `Late` (use the
//! fallback), never waits past the deadline and discards stale blocks by their tag.
//! The worker: `bell.wait_doorbell_untimed(seen)`, `audio_in.pop(&mut buf)`,
//! process, `audio_out.push(cycle, &out)`, `bell.signal_done()`, `bell.beat()`. While
//! no cycle rings, the supervisor beats the host heartbeat and nudges the doorbell every
//! slot tick (`monitor.beat_host()`, `monitor.nudge()`), so the worker's untimed sleep
//! still ends regularly (docs/ABI.md "Idle rings").
//!
//! ## Which calls are real-time safe
//!
//! RT-safe (no allocation, no lock, no logging, no blocking; wait-free unless noted):
//! every method of [`AudioProducer`], [`AudioConsumer`], [`CommandProducer`],
//! [`CommandConsumer`], [`EventProducer`], [`EventConsumer`], [`HostBell`],
//! [`WorkerBell`] (but `wait_doorbell_untimed`, below), [`Monitor`];
//! [`HostEnd::reset`]; [`MonoTime::now`]. Bounded blocking, allowed on the audio thread: [`HostEnd::wait_output`], [`HostBell::wait_done`] and
//! [`WorkerBell::wait_doorbell`] sleep in `FUTEX_WAIT_BITSET` until an absolute
//! CLOCK_MONOTONIC deadline at most. Wake-ups (`ring`, `signal_done`, `nudge`) make a
//! `FUTEX_WAKE` syscall only when the peer is asleep. Not bounded, for the worker's
//! idle loop only (never the audio thread): [`WorkerBell::wait_doorbell_untimed`]
//! (`FUTEX_WAIT` without a timeout, ended by the next ring or nudge).
//!
//! Setup only (allocate, make syscalls): [`HostRegion::create`],
//! [`HostRegion::create_heap`], [`HostRegion::host_end`], [`HostRegion::monitor`],
//! [`WorkerRegion::open`], [`WorkerRegion::worker_end`].
//!
//! ## The peer is untrusted
//!
//! Each side keeps private copies of the layout, every offset, capacity and mask, and
//! of its own counters; it never reads them back from the region. Every counter the
//! peer writes is loaded once, validated (not behind, not ahead by more than the
//! capacity or past what was produced) and only then used, masked with the private
//! mask. A violation is a [`RingFault`] (small, `Copy`, sticky until
//! [`HostEnd::reset`]). Records are decoded from a private copy by functions that
//! return [`DecodeError`] for anything unexpected. Whatever the peer writes, at any
//! moment, no call of this crate reads or writes out of bounds, panics, loops without
//! bound or waits past its deadline. The worker side validates the host the same way.
//!
//! No Rust reference to plain region bytes is ever formed: bytes move with
//! `ptr::copy_nonoverlapping` through raw pointers, words are atomics.
//!
//! ## Backings and tests
//!
//! [`HostRegion<Memfd>`](HostRegion) (the default) is the real thing;
//! [`HostRegion<Heap>`](HostRegion) is the same header and rings on the heap, for
//! in-process tests and loom. The crate's conformance suite runs over both. The
//! `testing` feature exposes `testing::PeerAccess` (raw hostile writes); the
//! `fault-injection` feature adds `WorkerRegion::scribble`. Under
//! `RUSTFLAGS="--cfg loom"` the atomics come from loom (`scripts/ring-loom.sh`).
//!
//! ## Names beyond RING_API.md
//!
//! The agreed API is implemented as written; additions: [`HostRegion`] is generic over
//! its [`Backing`] (default [`Memfd`], so `HostRegion` means what it did), with
//! `create_heap`/`open_worker` for [`Heap`]; `position()`/`fault()`/`block_samples()`
//! on the ring ends; `available()`/`free_slots()` on the record ends;
//! [`WorkerBell::cycle`]; [`Monitor::done_count`] and [`Monitor::host_heartbeat`];
//! [`RingId`] in every [`RingFault`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(not(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
)))]
compile_error!(
    "slotpool-ring supports 64-bit little-endian Linux only (memfd, futex, ABI byte order)"
);

mod audio;
mod bell;
pub mod denormal;
mod layout;
mod mapping;
mod records;
mod region;
mod ring;
mod sync;
mod sys;
#[cfg(rtsan)]
pub use sys::rtsan;
mod time;

#[cfg(feature = "testing")]
pub mod testing;

pub use audio::{AudioConsumer, AudioProducer, PushError};
pub use bell::{
    HostBell, Interrupter, Monitor, UntimedOutcome, WaitOutcome, WorkerBell, WorkerState,
};
pub use layout::{
    ABI_VERSION, AUDIO_SLOT_HEADER, AUDIO_SLOT_TAG, AUDIO_STRIDE_SKEW, LayoutError,
    MAX_BLOCK_FRAMES, MAX_CAPACITY, MAX_CHANNELS, MAX_REGION_LEN, MAX_SLOT_NAME, MIN_CAPACITY,
    RECORD_SIZE, SECTION_ALIGN, SlotLayout,
};
pub use records::{
    Command, CommandConsumer, CommandProducer, DecodeError, Event, EventConsumer, EventProducer,
    RECORD_VERSION, RecordError, ShortStr,
};
pub use region::{
    Backing, Heap, HostEnd, HostRegion, Memfd, OpenError, OutputStatus, RegionError, WorkerEnd,
    WorkerRegion,
};
pub use ring::{RingFault, RingId};
pub use time::MonoTime;
