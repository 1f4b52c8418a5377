//! One slot as the audio thread holds it: the ring ends of its region, its buffers,
//! its fallback state and the host's record of its parameters.

use std::time::Duration;

use slotpool_ring::{Command, HostEnd, Monitor, MonoTime, OutputStatus, PushError, RingFault};

use super::signal::{crossfade_from, fill_fallback, sanitize};
use super::stats::{SlotLink, SlotStats};
use crate::config::{Fallback, SlotMode};

/// The most parameters the host records per slot (the rest are still forwarded).
pub const MAX_PARAMS: usize = 64;

/// Most events drained from one slot per cycle (a flooding worker cannot make the
/// audio thread loop; the rest wait for the next cycle).
const EVENTS_PER_CYCLE: usize = 64;

/// What a slot is, as far as the engine cares.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotSpec {
    /// `<program>:<index>`.
    pub name: String,
    /// `sync` or `async`.
    pub mode: SlotMode,
    /// What it outputs when it has no good block.
    pub fallback: Fallback,
    /// Input channels.
    pub channels_in: u32,
    /// Output channels.
    pub channels_out: u32,
    /// The parameter values the worker was started with, as `(id, value)`: the start
    /// of the host's record, re-sent to every replacement worker.
    pub params: Vec<(u32, f32)>,
}

/// Why a slot could not be attached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    /// The region's block size differs from what the engine and the spec say.
    #[error(
        "slot {slot}: the region holds blocks of {region} samples {dir}, the engine needs {engine} (channels × block_frames)"
    )]
    Layout {
        /// Slot name.
        slot: String,
        /// "in" or "out".
        dir: &'static str,
        /// Samples per block in the region.
        region: usize,
        /// Samples per block the engine needs.
        engine: usize,
    },
    /// More slots than the engine was built for.
    #[error("slot {slot}: the engine holds at most {capacity} slots")]
    Full {
        /// Slot name.
        slot: String,
        /// The capacity.
        capacity: usize,
    },
}

/// Where the cycle stands, for [`SlotPort::receive`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct CycleAt {
    /// The cycle number (the first is 1).
    pub(crate) cycle: u64,
    /// Absolute deadline of sync waits.
    pub(crate) deadline: MonoTime,
    /// Offline pacing: async slots are waited for too.
    pub(crate) offline: bool,
    /// The block period.
    pub(crate) period_ns: u64,
}

/// A slot's audio-thread half. Built off the audio thread (it allocates its buffers
/// here), then moved to the audio thread by `ToEngine::Attach`.
#[derive(Debug)]
pub struct SlotPort {
    name: String,
    end: HostEnd,
    monitor: Monitor,
    mode: SlotMode,
    fallback: Fallback,
    frames: usize,
    /// The host's record: `(id, value)`, never more than [`MAX_PARAMS`] entries
    /// (capacity reserved up front, so recording never allocates).
    params: Vec<(u32, f32)>,
    /// The worker's block of this cycle.
    out: Vec<f32>,
    /// The last good (sanitized) block.
    last_good: Vec<f32>,
    /// Scratch for the fallback block a fade-in starts from.
    fade: Vec<f32>,
    pub(crate) link: SlotLink,
    /// The last emitted block was the worker's.
    producing: bool,
    /// Fallback blocks emitted since the last good one.
    held: u32,
    /// The last two cycles whose input reached the ring (0: none).
    pushed: [u64; 2],
}

impl SlotPort {
    /// Wraps the host end of a slot's region. `end` must come from a region whose
    /// layout has `spec.channels_in/out` channels of `frames` frames.
    ///
    /// # Errors
    /// [`SlotError::Layout`] when the region does not match.
    pub fn new(
        spec: &SlotSpec,
        end: HostEnd,
        monitor: Monitor,
        frames: usize,
    ) -> Result<Self, SlotError> {
        let need_in = spec.channels_in as usize * frames;
        let need_out = spec.channels_out as usize * frames;
        for (dir, region, engine) in [
            ("in", end.audio_in.block_samples(), need_in),
            ("out", end.audio_out.block_samples(), need_out),
        ] {
            if region != engine {
                return Err(SlotError::Layout {
                    slot: spec.name.clone(),
                    dir,
                    region,
                    engine,
                });
            }
        }
        let mut params = Vec::with_capacity(MAX_PARAMS);
        params.extend(spec.params.iter().take(MAX_PARAMS).copied());
        Ok(Self {
            name: spec.name.clone(),
            end,
            monitor,
            mode: spec.mode,
            fallback: spec.fallback,
            frames,
            params,
            out: vec![0.0; need_out],
            last_good: vec![0.0; need_out],
            fade: vec![0.0; need_out],
            link: SlotLink::Up,
            producing: true,
            held: 0,
            pushed: [0, 0],
        })
    }

    /// The same slot, but waiting for its first worker: on its fallback (link
    /// `Down`) until `SlotUp`. For a region no worker has touched yet, so no reset is
    /// needed first; the supervisor attaches this way before the first spawn.
    pub fn waiting(mut self) -> Self {
        self.link = SlotLink::Down;
        self.producing = false;
        self
    }

    /// The slot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the region's host end back (after `Detached`).
    pub fn into_end(self) -> HostEnd {
        self.end
    }

    /// The host's record of the parameters.
    pub fn params(&self) -> &[(u32, f32)] {
        &self.params
    }

    fn quarantine(&mut self, fault: RingFault, stats: &SlotStats) -> Option<RingFault> {
        if self.link == SlotLink::Quarantined {
            return None;
        }
        self.link = SlotLink::Quarantined;
        stats.set_link(self.link);
        stats.ring_fault();
        Some(fault)
    }

    /// Pushes this cycle's input and rings the doorbell (only when up), stamping the
    /// ring with `at` (the level's ring time). Returns a ring fault the first time one
    /// quarantines the slot. RT-safe.
    pub(crate) fn send(
        &mut self,
        cycle: u64,
        at: MonoTime,
        input: &[f32],
        stats: &SlotStats,
    ) -> Option<RingFault> {
        if self.link != SlotLink::Up {
            return None;
        }
        if self.end.bell.interrupted() {
            // The supervisor saw the worker exit: on the fallback from this cycle,
            // without waiting for it; SlotDown resets the region.
            self.link = SlotLink::Down;
            stats.set_link(self.link);
            return None;
        }
        match self.end.audio_in.push(cycle, input) {
            Ok(()) => {
                stats.rang(self.end.bell.ring_at(cycle, at));
                self.pushed = [self.pushed[1], cycle];
                None
            }
            // Full: the worker is behind; this cycle will be late. WrongLength cannot
            // happen (checked in `new`, the workspace gives the step's exact input).
            Err(PushError::Full | PushError::WrongLength { .. }) => None,
            Err(PushError::Fault(f)) => self.quarantine(f, stats),
        }
    }

    /// Produces the slot's output block of this cycle into `output`: the worker's
    /// block if it came in time, else the fallback, with a one-block crossfade at
    /// every change between the two. `deadline` bounds a sync wait; `offline` makes
    /// an async slot wait for its block too (renders must be exact). RT-safe: the only
    /// blocking call is the bounded futex wait inside `wait_output`.
    pub(crate) fn receive(
        &mut self,
        at: &CycleAt,
        input: &[f32],
        output: &mut [f32],
        stats: &SlotStats,
    ) -> Option<RingFault> {
        let CycleAt {
            cycle,
            deadline,
            offline,
            period_ns,
        } = *at;
        let mut fault = None;
        let mut got = false;
        if self.link == SlotLink::Up {
            let (want, wait_until) = match self.mode {
                SlotMode::Sync => (cycle, deadline),
                SlotMode::Async if offline => (cycle.wrapping_sub(1), deadline),
                // Never waits: the block had a whole period to arrive.
                SlotMode::Async => (cycle.wrapping_sub(1), MonoTime::from_nanos(0)),
            };
            if want != 0 && self.pushed.contains(&want) {
                match self.end.wait_output(want, &mut self.out, wait_until) {
                    Ok(OutputStatus::Ready) => got = true,
                    // Not late but gone: the worker exited while we waited (the
                    // supervisor interrupted the wait); on the fallback until SlotDown.
                    Ok(OutputStatus::Late) if self.end.bell.interrupted() => {
                        self.link = SlotLink::Down;
                        stats.set_link(self.link);
                    }
                    Ok(OutputStatus::Late) => stats.late(),
                    Err(f) => fault = self.quarantine(f, stats),
                }
            } else if self.mode == SlotMode::Async && self.pushed == [0, cycle] && self.producing {
                // The first block of an async slot: one block of latency, silence.
                self.out.fill(0.0);
                got = true;
            } else if self.mode == SlotMode::Sync && self.link == SlotLink::Up {
                // Its input did not fit the ring: the worker is behind.
                stats.late();
            }
        }
        if got {
            let repaired = sanitize(&mut self.out);
            if !self.producing {
                // Fade in from what the fallback would have been.
                fill_fallback(
                    self.fallback,
                    input,
                    &self.last_good,
                    self.held,
                    self.frames,
                    &mut self.fade,
                );
                crossfade_from(&self.fade, &mut self.out, self.frames);
            }
            output.copy_from_slice(&self.out);
            self.last_good.copy_from_slice(&self.out);
            self.producing = true;
            self.held = 0;
            stats.good(self.monitor.process_ns(), period_ns, repaired);
        } else {
            fill_fallback(
                self.fallback,
                input,
                &self.last_good,
                self.held,
                self.frames,
                output,
            );
            if self.producing {
                crossfade_from(&self.last_good, output, self.frames);
            }
            self.producing = false;
            self.held = self.held.saturating_add(1);
            stats.fallback();
        }
        fault
    }

    /// Drains the worker's events (bounded); returns a ring fault that quarantined
    /// the slot. RT-safe.
    pub(crate) fn drain_events(&mut self, stats: &SlotStats) -> Option<RingFault> {
        if self.link == SlotLink::Quarantined {
            return None;
        }
        for _ in 0..EVENTS_PER_CYCLE {
            match self.end.events.pop() {
                Ok(Some(_)) | Err(slotpool_ring::RecordError::Decode(_)) => {}
                Ok(None) => break,
                Err(slotpool_ring::RecordError::Fault(f)) => return self.quarantine(f, stats),
            }
        }
        None
    }

    /// Bumps the host heartbeat of the region. RT-safe.
    pub(crate) fn beat(&self) {
        self.end.bell.beat();
    }

    /// Records a parameter and forwards it to the worker when one is attached.
    pub(crate) fn set_param(&mut self, id: u32, value: f32, stats: &SlotStats) {
        if let Some(entry) = self.params.iter_mut().find(|(i, _)| *i == id) {
            entry.1 = value;
        } else if self.params.len() < MAX_PARAMS {
            // Within the reserved capacity: no allocation.
            self.params.push((id, value));
        }
        if self.link == SlotLink::Up
            && self
                .end
                .commands
                .push(Command::SetParam { id, value })
                .is_err()
        {
            stats.dropped_command();
        }
    }

    /// The worker is gone (reaped): reset the region for the next one and stay on the
    /// fallback. RT-safe (stores only).
    pub(crate) fn down(&mut self, stats: &SlotStats) {
        self.end.reset();
        self.link = SlotLink::Down;
        self.pushed = [0, 0];
        stats.set_link(self.link);
        stats.reset();
    }

    /// A new worker is attached and running: re-send the recorded parameters; the
    /// next good block is faded in.
    pub(crate) fn up(&mut self, stats: &SlotStats) {
        if self.link == SlotLink::Quarantined {
            // Never hand a faulted ring to a new worker: the supervisor must send
            // SlotDown (reset) first. Stay on the fallback.
            return;
        }
        self.link = SlotLink::Up;
        self.pushed = [0, 0];
        stats.set_link(self.link);
        for k in 0..self.params.len() {
            let (id, value) = self.params[k];
            if self
                .end
                .commands
                .push(Command::SetParam { id, value })
                .is_err()
            {
                stats.dropped_command();
            }
        }
    }
}

/// Offline renders wait this long for one block before calling it late (a worker
/// that takes longer is broken; the render reports it).
pub const OFFLINE_WAIT: Duration = Duration::from_secs(10);
