//! The supervisor's half of the engine hand-off (see the lifecycle diagram in
//! [`crate::engine`]): the [`EngineHandle`], the audio backend's counters for status,
//! and each slot's [`Phase`] between "worker reaped" and "worker's blocks in use".
//!
//! Everything here runs on the supervisor thread and talks to the audio thread only
//! through the engine's lock-free queues and plan handover: a full queue or a plan
//! not yet taken is retried at the next loop turn, never waited for.

use std::sync::Arc;
use std::time::Duration;

use crate::audio::AudioStats;
use crate::config::Config;
use crate::engine::patch::build_patch;
use crate::engine::{EngineError, EngineHandle};

/// How often the supervisor loop reads the engine's replies while nothing is pending
/// (a `Quarantined` slot's worker is killed within this).
pub const ENGINE_POLL: Duration = Duration::from_millis(10);
/// How often it looks while a slot waits for its reset or its new worker (a few
/// milliseconds per restart): the reset comes back within a period, so this is a
/// fraction of a short one.
pub const ENGINE_FAST_POLL: Duration = Duration::from_micros(250);

/// Where a slot stands between its worker and the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The region is fresh (never used, or reset): a worker may be spawned.
    Ready,
    /// The worker was reaped; `SlotDown` did not fit the engine's queue yet.
    DownPending,
    /// `SlotDown` sent; waiting for `SlotReset` before a new worker may start.
    Resetting,
    /// A worker was spawned on the fresh region; `SlotUp` goes out once it says RUNNING.
    Starting,
    /// The engine uses the worker's blocks.
    Up,
}

/// The running engine as the supervisor sees it.
#[derive(Debug)]
pub struct EngineLink {
    pub(crate) handle: EngineHandle,
    pub(crate) audio: Option<Arc<AudioStats>>,
    pub(crate) backend: Option<String>,
    /// The patch must be (re)published: a slot joined or left, or the routes changed.
    pub(crate) patch_dirty: bool,
}

impl EngineLink {
    /// Wraps the control half of an engine whose audio half is (or is about to be)
    /// driven by a backend.
    pub fn new(handle: EngineHandle) -> EngineLink {
        EngineLink {
            handle,
            audio: None,
            backend: None,
            patch_dirty: true,
        }
    }

    /// The backend's counters and one line describing it, for `status`.
    pub fn with_audio(mut self, stats: Arc<AudioStats>, backend: String) -> EngineLink {
        self.audio = Some(stats);
        self.backend = Some(backend);
        self
    }

    /// The control half.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    /// Publishes the patch of `config` if it is due. A plan the audio thread has not
    /// taken yet ([`EngineError::Busy`]) is retried at the next call.
    pub(crate) fn publish_if_due(&mut self, config: &Config) {
        if !self.patch_dirty {
            return;
        }
        let patch = match build_patch(config) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("cannot build the patch of {}: {e}", config.path.display());
                self.patch_dirty = false;
                return;
            }
        };
        match self.handle.publish(&patch) {
            Ok(()) => {
                self.patch_dirty = false;
                tracing::debug!("patch published");
            }
            Err(EngineError::Busy) => {}
            Err(e) => {
                tracing::error!(
                    "the patch of {} cannot run on this engine: {e}; [engine] changes apply when the host is restarted",
                    config.path.display()
                );
                self.patch_dirty = false;
            }
        }
    }
}
