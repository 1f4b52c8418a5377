//! The audio-thread half of the engine ([`EngineRt`]) and the control half
//! ([`EngineHandle`]), joined by lock-free queues.
//!
//! # One cycle ([`EngineRt::process`])
//! 1. Apply the control messages waiting in the inbox (slot attach/detach, down/up,
//!    parameters): slot joins and leaves happen here, at the cycle boundary only.
//! 2. Pick up a newly published [`Plan`] (router handover): patch changes happen here.
//! 3. Level by level: assemble every step's input and push it to its slot's ring and
//!    ring its doorbell — the whole level — then take each step's output (wait up to
//!    the deadline, or fall back), sanitized, with fades at every change.
//! 4. Mix the device output; drain events; bump heartbeats; record the cycle time.
//!
//! Nothing on this path allocates, frees, locks, logs or blocks except the bounded
//! futex wait for a slot's output; debug builds run it inside `assert_no_alloc`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};
use slotpool_ring::{HostEnd, Monitor, MonoTime, RingFault};
use slotpool_router::{PatchRouter, Publisher, Receiver, Schedule, Workspace, handover};

use super::BlockProcessor;
use super::slot::{CycleAt, OFFLINE_WAIT, SlotError, SlotPort, SlotSpec};
use super::stats::{EngineStats, SlotLink};

/// Index of a slot in the engine's table (stable across restarts of its worker).
pub type SlotId = u16;

/// A step whose slot is not attached.
const NO_SLOT: SlotId = SlotId::MAX;

/// Messages of the control side to the audio thread.
#[derive(Debug)]
pub enum ToEngine {
    /// Put a slot into the table (replacing and returning any slot at that index).
    Attach {
        /// Index.
        slot: SlotId,
        /// The slot's audio-thread half.
        port: Box<SlotPort>,
    },
    /// Take a slot out of the table (answered by `Detached`).
    Detach {
        /// Index.
        slot: SlotId,
    },
    /// Its worker died or was killed and has been reaped: fall back from this cycle,
    /// reset the region, answer `SlotReset`.
    SlotDown {
        /// Index.
        slot: SlotId,
    },
    /// A new worker is attached to the (reset) region and running: re-send the
    /// recorded parameters, use its blocks, fade in.
    SlotUp {
        /// Index.
        slot: SlotId,
    },
    /// Set a parameter (recorded, and forwarded when a worker is attached).
    SetParam {
        /// Index.
        slot: SlotId,
        /// Parameter id.
        id: u32,
        /// Value (the worker validates and clamps it).
        value: f32,
    },
}

/// Messages of the audio thread to the control side.
#[derive(Debug)]
pub enum FromEngine {
    /// The region of `slot` was reset after `SlotDown`: a new worker may be started.
    SlotReset {
        /// Index.
        slot: SlotId,
    },
    /// The slot's worker broke the ring protocol: it is on its fallback; kill its
    /// worker and send `SlotDown` once it is reaped.
    Quarantined {
        /// Index.
        slot: SlotId,
        /// What it did.
        fault: RingFault,
    },
    /// A slot left the table (or an `Attach` was refused: the index is past the
    /// capacity). Dropped here, off the audio thread.
    Detached {
        /// Index.
        slot: SlotId,
        /// The slot.
        port: Box<SlotPort>,
    },
}

/// How the engine is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// A real clock drives `process` once per period: sync slots are waited for up to
    /// the deadline, async slots never.
    RealTime,
    /// As fast as the workers go (render): every slot is waited for, up to
    /// [`OFFLINE_WAIT`], so the result is exact.
    Offline,
}

/// Engine settings, fixed for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineSettings {
    /// Frames per second.
    pub sample_rate: u32,
    /// Frames per block.
    pub block_frames: u32,
    /// Device input channels.
    pub channels_in: u16,
    /// Device output channels.
    pub channels_out: u16,
    /// Share of the period a sync slot may take (0 < deadline <= 1).
    pub deadline: f64,
    /// Clocked or offline.
    pub pacing: Pacing,
    /// Most slots at once.
    pub capacity: u16,
    /// How long the audio thread polls a worker's `done` word before it sleeps on it
    /// (`[engine] wait_spin_us`); see [`slotpool_ring::HostBell::set_spin`].
    pub wait_spin: Duration,
}

impl EngineSettings {
    /// The block period in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        u64::from(self.block_frames) * 1_000_000_000 / u64::from(self.sample_rate.max(1))
    }

    /// The settings of `[engine]` with the given pacing.
    pub fn from_config(e: &crate::config::EngineConfig, pacing: Pacing) -> Self {
        let ch = u16::try_from(e.channels).unwrap_or(u16::MAX);
        Self {
            sample_rate: e.sample_rate,
            block_frames: e.block_frames,
            channels_in: ch,
            channels_out: ch,
            deadline: e.deadline,
            pacing,
            capacity: 256,
            wait_spin: Duration::from_micros(u64::from(e.wait_spin_us)),
        }
    }
}

/// What the audio thread runs: a compiled schedule, its workspace and, per step, the
/// index of the slot it runs on. Built on the control side ([`EngineHandle::publish`]).
#[derive(Debug)]
pub struct Plan {
    schedule: Schedule,
    workspace: Workspace,
    step_slot: Vec<SlotId>,
}

/// Errors of the control side.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// See [`SlotError`].
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// The audio thread has not picked up the plans sent before; try again after a
    /// cycle.
    #[error("the audio thread has not yet taken the previous patch; try again")]
    Busy,
    /// The control queue is full (the audio thread is not running cycles).
    #[error("the engine's control queue is full: is the audio thread running?")]
    QueueFull,
    /// The patch's device channel counts differ from the engine's.
    #[error(
        "the patch has {patch_in}/{patch_out} device channels, the engine {engine_in}/{engine_out}"
    )]
    Channels {
        /// Patch input channels.
        patch_in: u16,
        /// Patch output channels.
        patch_out: u16,
        /// Engine input channels.
        engine_in: u16,
        /// Engine output channels.
        engine_out: u16,
    },
}

/// The audio-thread half. Implements [`BlockProcessor`].
#[derive(Debug)]
pub struct EngineRt {
    settings: EngineSettings,
    period_ns: u64,
    deadline_ns: u64,
    plans: Receiver<Plan>,
    inbox: Consumer<ToEngine>,
    outbox: Producer<FromEngine>,
    slots: Vec<Option<Box<SlotPort>>>,
    stats: Arc<EngineStats>,
    cycle: u64,
}

/// The control half: attach slots, send lifecycle messages, publish patches, read
/// replies and statistics. Lives on the supervisor thread.
#[derive(Debug)]
pub struct EngineHandle {
    settings: EngineSettings,
    to: Producer<ToEngine>,
    from: Consumer<FromEngine>,
    plans: Publisher<Plan>,
    stats: Arc<EngineStats>,
    ids: BTreeMap<String, SlotId>,
}

/// Builds an engine with no slots and an empty patch: the audio half (hand it to
/// the backend) and the control half.
pub fn engine(settings: EngineSettings) -> (EngineRt, EngineHandle) {
    let capacity = usize::from(settings.capacity);
    let queue = capacity * 4 + 16;
    let (to, inbox) = RingBuffer::new(queue);
    let (outbox, from) = RingBuffer::new(queue);
    let empty = PatchRouter::new(settings.channels_in, settings.channels_out)
        .map(|p| p.compile())
        .unwrap_or_else(|_| PatchRouter::new(0, 0).expect("an empty patch").compile());
    let plan = Plan {
        workspace: Workspace::for_schedule(&empty, settings.block_frames as usize),
        step_slot: Vec::new(),
        schedule: empty,
    };
    let (publisher, receiver) = handover(Box::new(plan), 4);
    let period_ns = settings.period_ns();
    let stats = Arc::new(EngineStats::new(capacity, period_ns));
    let deadline_ns = match settings.pacing {
        Pacing::RealTime => (period_ns as f64 * settings.deadline.clamp(0.0, 1.0)) as u64,
        Pacing::Offline => OFFLINE_WAIT.as_nanos() as u64,
    };
    let rt = EngineRt {
        settings,
        period_ns,
        deadline_ns,
        plans: receiver,
        inbox,
        outbox,
        slots: (0..capacity).map(|_| None).collect(),
        stats: Arc::clone(&stats),
        cycle: 0,
    };
    let handle = EngineHandle {
        settings,
        to,
        from,
        plans: publisher,
        stats,
        ids: BTreeMap::new(),
    };
    (rt, handle)
}

impl EngineHandle {
    /// The settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The statistics the audio thread keeps.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The index of slot `name`, if attached.
    pub fn slot_id(&self, name: &str) -> Option<SlotId> {
        self.ids.get(name).copied()
    }

    /// Hands a slot's region (its host end) to the audio thread. The supervisor keeps
    /// the `HostRegion` (the fd, for respawns) and its own `Monitor`. A slot of the
    /// same name is replaced (the old one comes back as `Detached`).
    ///
    /// # Errors
    /// The region does not fit the spec, the table is full or the queue is full.
    pub fn attach(
        &mut self,
        spec: &SlotSpec,
        mut end: HostEnd,
        monitor: Monitor,
    ) -> Result<SlotId, EngineError> {
        end.bell.set_spin(self.settings.wait_spin);
        let port = SlotPort::new(spec, end, monitor, self.settings.block_frames as usize)?;
        self.attach_port(spec, port)
    }

    /// As [`EngineHandle::attach`], for a region whose worker is not started yet: the
    /// slot stays on its fallback (link `Down`) until [`ToEngine::SlotUp`]. This is how
    /// `slotpool run` attaches: the supervisor sends `SlotUp` once the worker runs.
    ///
    /// # Errors
    /// As [`EngineHandle::attach`].
    pub fn attach_waiting(
        &mut self,
        spec: &SlotSpec,
        mut end: HostEnd,
        monitor: Monitor,
    ) -> Result<SlotId, EngineError> {
        end.bell.set_spin(self.settings.wait_spin);
        let port = SlotPort::new(spec, end, monitor, self.settings.block_frames as usize)?;
        self.attach_port(spec, port.waiting())
    }

    fn attach_port(&mut self, spec: &SlotSpec, port: SlotPort) -> Result<SlotId, EngineError> {
        let id = match self.ids.get(&spec.name) {
            Some(&id) => id,
            None => {
                let used: Vec<SlotId> = self.ids.values().copied().collect();
                let id = (0..self.settings.capacity)
                    .find(|i| !used.contains(i))
                    .ok_or_else(|| SlotError::Full {
                        slot: spec.name.clone(),
                        capacity: usize::from(self.settings.capacity),
                    })?;
                self.ids.insert(spec.name.clone(), id);
                id
            }
        };
        self.send(ToEngine::Attach {
            slot: id,
            port: Box::new(port),
        })?;
        Ok(id)
    }

    /// Takes slot `name` out of the engine (its port comes back as `Detached`).
    /// Publish a patch without it first.
    ///
    /// # Errors
    /// The queue is full.
    pub fn detach(&mut self, name: &str) -> Result<(), EngineError> {
        if let Some(id) = self.ids.remove(name) {
            self.send(ToEngine::Detach { slot: id })?;
        }
        Ok(())
    }

    /// Sends one message to the audio thread.
    ///
    /// # Errors
    /// [`EngineError::QueueFull`] (the message is dropped).
    pub fn send(&mut self, msg: ToEngine) -> Result<(), EngineError> {
        self.to.push(msg).map_err(|_| EngineError::QueueFull)
    }

    /// Compiles `patch` against the attached slots and hands it to the audio thread,
    /// which switches to it at its next cycle boundary. Steps whose slot is not
    /// attached output their fallback (silence).
    ///
    /// # Errors
    /// Device channel mismatch, or [`EngineError::Busy`].
    pub fn publish(&mut self, patch: &PatchRouter) -> Result<(), EngineError> {
        let s = &self.settings;
        if patch.input_channels() != s.channels_in || patch.output_channels() != s.channels_out {
            return Err(EngineError::Channels {
                patch_in: patch.input_channels(),
                patch_out: patch.output_channels(),
                engine_in: s.channels_in,
                engine_out: s.channels_out,
            });
        }
        let schedule = patch.compile();
        let step_slot = schedule
            .steps()
            .iter()
            .map(|st| self.ids.get(st.name().as_str()).copied().unwrap_or(NO_SLOT))
            .collect();
        let plan = Plan {
            workspace: Workspace::for_schedule(&schedule, s.block_frames as usize),
            step_slot,
            schedule,
        };
        self.plans
            .publish(Box::new(plan))
            .map_err(|_| EngineError::Busy)
    }

    /// The next reply of the audio thread, if any (also frees replaced plans).
    pub fn poll(&mut self) -> Option<FromEngine> {
        self.plans.collect();
        self.from.pop().ok()
    }
}

impl EngineRt {
    /// The statistics.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The number of the last cycle run (the first is 1).
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    fn handle(&mut self, msg: ToEngine) {
        let slots = &mut self.slots;
        let stats = &self.stats;
        match msg {
            ToEngine::Attach { slot, port } => {
                let Some(entry) = slots.get_mut(usize::from(slot)) else {
                    let _ = self.outbox.push(FromEngine::Detached { slot, port });
                    return;
                };
                if let Some(s) = stats.slot(usize::from(slot)) {
                    s.clear();
                    s.set_link(port.link);
                }
                if let Some(old) = entry.replace(port) {
                    let _ = self.outbox.push(FromEngine::Detached { slot, port: old });
                }
            }
            ToEngine::Detach { slot } => {
                if let Some(port) = slots.get_mut(usize::from(slot)).and_then(Option::take) {
                    if let Some(s) = stats.slot(usize::from(slot)) {
                        s.set_link(SlotLink::Vacant);
                    }
                    let _ = self.outbox.push(FromEngine::Detached { slot, port });
                }
            }
            ToEngine::SlotDown { slot } => {
                if let (Some(Some(port)), Some(s)) = (
                    slots.get_mut(usize::from(slot)),
                    stats.slot(usize::from(slot)),
                ) {
                    port.down(s);
                    let _ = self.outbox.push(FromEngine::SlotReset { slot });
                }
            }
            ToEngine::SlotUp { slot } => {
                if let (Some(Some(port)), Some(s)) = (
                    slots.get_mut(usize::from(slot)),
                    stats.slot(usize::from(slot)),
                ) {
                    port.up(s);
                }
            }
            ToEngine::SetParam { slot, id, value } => {
                if let (Some(Some(port)), Some(s)) = (
                    slots.get_mut(usize::from(slot)),
                    stats.slot(usize::from(slot)),
                ) {
                    port.set_param(id, value, s);
                }
            }
        }
    }

    /// One cycle; see the module docs. `input`/`output` are planar device buffers.
    /// Buffers of the wrong size produce silence (never a panic).
    pub fn run_cycle(&mut self, input: &[f32], output: &mut [f32]) {
        let t0 = MonoTime::now();
        // Only take a message when its reply (if any) has room: the audio thread
        // never has to drop a slot (a free) because the outbox is full.
        while self.outbox.slots() > 0 {
            let Ok(msg) = self.inbox.pop() else { break };
            self.handle(msg);
        }
        self.plans.pickup();
        self.cycle += 1;
        let cycle = self.cycle;
        let offline = self.settings.pacing == Pacing::Offline;
        let deadline = t0.saturating_add(Duration::from_nanos(self.deadline_ns));
        let Plan {
            schedule,
            workspace,
            step_slot,
        } = self.plans.current_mut();
        if workspace.check(schedule, input, output).is_err() {
            output.fill(0.0);
            return;
        }
        workspace.load_device_input(schedule, input);
        let slots = &mut self.slots;
        let stats = &*self.stats;
        let at = CycleAt {
            cycle,
            deadline,
            offline,
            period_ns: self.period_ns,
        };
        for (l, level) in schedule.levels().enumerate() {
            // One clock read per level for every ring's time (the first level's is the
            // cycle's start): a worker predicts its next ring from these.
            let rung_at = if l == 0 { t0 } else { MonoTime::now() };
            for step in level {
                workspace.assemble_input(schedule, step);
                let id = step_slot.get(step.index()).copied().unwrap_or(NO_SLOT);
                if let (Some(Some(port)), Some(s)) =
                    (slots.get_mut(usize::from(id)), stats.slot(usize::from(id)))
                    && let Some(f) = port.send(cycle, rung_at, workspace.input(step), s)
                {
                    let _ = self
                        .outbox
                        .push(FromEngine::Quarantined { slot: id, fault: f });
                }
            }
            for step in level {
                let id = step_slot.get(step.index()).copied().unwrap_or(NO_SLOT);
                let (inp, out) = workspace.io_mut(step);
                match (slots.get_mut(usize::from(id)), stats.slot(usize::from(id))) {
                    (Some(Some(port)), Some(s)) => {
                        if let Some(f) = port.receive(&at, inp, out, s) {
                            let _ = self
                                .outbox
                                .push(FromEngine::Quarantined { slot: id, fault: f });
                        }
                    }
                    _ => out.fill(0.0),
                }
            }
        }
        workspace.mix_device_output(schedule, output);
        for (id, entry) in slots.iter_mut().enumerate() {
            if let (Some(port), Some(s)) = (entry, stats.slot(id)) {
                port.beat();
                if let Some(f) = port.drain_events(s) {
                    let _ = self.outbox.push(FromEngine::Quarantined {
                        slot: id as SlotId,
                        fault: f,
                    });
                }
            }
        }
        stats.cycle_done(MonoTime::now().saturating_duration_since(t0).as_nanos() as u64);
    }
}

impl BlockProcessor for EngineRt {
    // scripts/rtsan.sh: RealtimeSanitizer aborts on any allocation, lock or blocking
    // call made inside (the futex calls are exempted in slotpool-ring's `sys`).
    #[cfg_attr(rtsan, sanitize(realtime = "nonblocking"))]
    fn process(&mut self, input: &[f32], output: &mut [f32]) {
        #[cfg(debug_assertions)]
        assert_no_alloc::assert_no_alloc(|| self.run_cycle(input, output));
        #[cfg(not(debug_assertions))]
        self.run_cycle(input, output);
    }
}
