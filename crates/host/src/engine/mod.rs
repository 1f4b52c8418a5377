//! The engine: runs the router's [`Schedule`](slotpool_router::Schedule) across the
//! slot workers once per block (DESIGN.md §3).
//!
//! - [`cycle`]: the audio-thread half [`EngineRt`] (a [`BlockProcessor`]) and the
//!   control half [`EngineHandle`], joined by lock-free SPSC queues (rtrb) and the
//!   router's plan handover. Slot joins/leaves, worker down/up and patch changes take
//!   effect at cycle boundaries only.
//! - [`slot`]: one slot on the audio thread: its region's host end, its fallback and
//!   fades, the host's record of its parameters.
//! - [`signal`]: sanitizing untrusted blocks, fallbacks, crossfades.
//! - [`stats`]: per-slot counters and the cycle-time histogram, atomics only.
//! - [`patch`]: the patch and slot specs of a [`Config`](crate::config::Config).
//! - [`reference`]: the in-process reference renderer (modules linked in).
//! - [`render`]: `slotpool render`.
//!
//! # Threads and ownership
//! The audio thread owns [`EngineRt`], and through it every slot's `HostEnd` (audio
//! rings, command and event rings, doorbell). The supervisor thread owns the
//! [`EngineHandle`], each slot's `HostRegion` (the memfd it hands to every new worker)
//! and a `Monitor` (heartbeats, pid, state) for hang detection.
//!
//! # The slot lifecycle between supervisor and engine
//! ```text
//! supervisor                                     audio thread
//! region = HostRegion::create; attach(spec, region.host_end(), region.monitor())
//!                         ── Attach ──▶  slot in the table (Up)
//! worker exits / hangs (SIGKILL) and is reaped
//!                         ── SlotDown ─▶ fallback from this cycle; HostEnd::reset()
//!                         ◀─ SlotReset ─
//! spawn the replacement on the same fd; when it is RUNNING
//!                         ── SlotUp ───▶ re-send recorded params; next good block fades in
//! ring fault seen by the engine
//!                         ◀─ Quarantined ─ (fallback; kill the worker, then SlotDown)
//! ```

pub mod cycle;
pub mod patch;
pub mod reference;
pub mod render;
pub mod signal;
pub mod slot;
pub mod stats;

pub use cycle::{
    EngineError, EngineHandle, EngineRt, EngineSettings, FromEngine, Pacing, Plan, SlotId,
    ToEngine, engine,
};
pub use slot::{SlotError, SlotPort, SlotSpec};
pub use stats::{CycleHistogram, EngineStats, SlotLink, SlotSnapshot, SlotStats};

/// Called once per block by whichever backend drives the clock, on the audio thread.
/// Planar: `input` is `channels_in × frames`, `output` `channels_out × frames`.
/// RT-safe: no allocation, lock, logging or blocking syscall except the bounded
/// futex wait.
pub trait BlockProcessor: Send {
    /// Processes one block.
    fn process(&mut self, input: &[f32], output: &mut [f32]);
}

#[cfg(test)]
mod tests;
