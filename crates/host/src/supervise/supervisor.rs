//! The driver around the state machines: one [`Instance`] per `program:index`, the
//! syscalls each [`Action`] stands for, reaping, logs, the slot region, the hang
//! watchdog, the global spawn-rate cap, reload and shutdown. It makes no poll(2) call
//! of its own: `crate::host` owns the loop and hands it what became ready.
//!
//! Children are known by pidfd only. The pid is kept next to it solely to signal the
//! process *group* (see [`Supervisor::kill_group`]) and to display, and both uses stop
//! at the reaping.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use slotpool_ring::{HostEnd, HostRegion, Interrupter, Monitor, SlotLayout, WorkerState};

use super::engine_link::{ENGINE_FAST_POLL, ENGINE_POLL, EngineLink, Phase};

use super::limits::{self, CgroupRoot, LimitPlan};
use super::logs::{Drain, LogPipe, RotatingLog};
use super::machine::{Action, Cause, ChildPhase, Event, Exit, Machine, Policy, Reason, State};
use super::sched::{self, WorkerRt};
use super::spawn::{self, SpawnSpec};
use super::sys;
use crate::config::{Config, ProgramConfig, Stream};
use crate::control::ControlHandler;
use crate::control::protocol::{
    ActionResult, ExitStatus, HostStatus, Percentiles, ProgramState, ProgramStatus, Request,
    Response, StateEvent, StatusReport, Target,
};
use crate::engine::patch::slot_specs;
use crate::engine::{FromEngine, SlotId, SlotLink, ToEngine};

/// How often the supervisor checks worker heartbeats, bumps the host heartbeat of every
/// slot region and nudges its doorbell (the idle ring, docs/ABI.md "Idle rings"). Far
/// below the worker's host timeout (2 s: 40 beats and nudges per timeout) and the default
/// `hang_timeout` (500 ms: an idle worker answers 10 nudges per hang timeout); it is also
/// how late an idle worker may see SIGTERM at worst (the supervisor nudges right after it
/// signals, so it usually sees it at once).
pub const SLOT_TICK: Duration = Duration::from_millis(50);
/// How often open fds of children are counted for the growth warning.
pub const FD_SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Consecutive growing samples (above `fd_warn`) that make a warning.
const FD_GROWTH_SAMPLES: usize = 4;

/// Where the built-in worker binary is: `$SLOTPOOL_WORKER_BIN`, else `slotpool-worker`
/// next to the running executable.
pub fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLOTPOOL_WORKER_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("slotpool-worker")))
        .unwrap_or_else(|| PathBuf::from("slotpool-worker"))
}

/// Open fds of a process (`/proc/PID/fd`, or `/proc/self/fd` for `None`).
pub fn count_fds(pid: Option<i32>) -> Option<u32> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/fd"),
        None => "/proc/self/fd".to_string(),
    };
    let n = std::fs::read_dir(dir).ok()?.count() as u32;
    // Reading our own table opens one fd for the listing itself.
    Some(if pid.is_none() {
        n.saturating_sub(1)
    } else {
        n
    })
}

/// A live (unreaped) child.
#[derive(Debug)]
struct Child {
    pidfd: OwnedFd,
    /// Also the process group id. Used only while unreaped.
    pid: i32,
    stdout: Option<LogPipe>,
    stderr: Option<LogPipe>,
    /// Its ready pipe (slots): readable once it says RUNNING (or exits).
    ready: Option<OwnedFd>,
    fd_samples: VecDeque<u32>,
    fd_warned: bool,
    /// Worker heartbeat last seen, when it changed, and whether it ever advanced.
    beat: (u64, Instant, bool),
}

/// A slot's parked second worker (`standby = true`): exec'd and started, waiting on its
/// go pipe before it touches the region. When the slot's worker is gone and the region
/// reset, one byte on the pipe makes it the slot's worker: no fork, no exec, no start-up
/// on the way back to sound.
#[derive(Debug)]
struct Standby {
    child: Child,
    go: OwnedFd,
    /// Killed by us (no longer wanted): its exit is not a failure.
    released: bool,
    /// How it was scheduled at spawn; the slot's once it takes over.
    rt: Option<WorkerRt>,
}

/// A slot's region, kept across restarts of its worker.
///
/// With an engine (`slotpool run`), the audio thread owns the region's [`HostEnd`] and
/// resets it on `SlotDown`; the supervisor keeps the [`HostRegion`] (the fd every new
/// worker gets) and a [`Monitor`]. Without one, the supervisor holds the `HostEnd`
/// itself and resets it before each respawn.
#[derive(Debug)]
struct Slot {
    region: HostRegion,
    /// `Some` only without an engine.
    host_end: Option<HostEnd>,
    monitor: Monitor,
    /// Tells the audio thread the worker exited, so that it stops waiting for its
    /// block at once rather than at the cycle's deadline.
    interrupter: Interrupter,
    /// The slot's index in the engine's table.
    engine_id: Option<SlotId>,
    phase: Phase,
    /// Workers killed because the engine quarantined the slot (a broken ring).
    quarantines: u64,
}

/// One `program:index`.
#[derive(Debug)]
struct Instance {
    id: u64,
    name: String,
    index: u32,
    program: ProgramConfig,
    machine: Machine,
    child: Option<Child>,
    stdout: Option<RotatingLog>,
    stderr: Option<RotatingLog>,
    slot: Option<Slot>,
    /// The parked standby worker of a `standby = true` slot.
    standby: Option<Standby>,
    /// Standbys that died before they were needed, in a row, and when the next may
    /// start (1, 2, 4 … 60 s apart).
    standby_failures: u32,
    standby_next: Instant,
    limits: LimitPlan,
    /// How the last worker of a slot was scheduled (`None` for plain programs).
    rt: Option<WorkerRt>,
    spawn_error: Option<String>,
    /// Being removed by a reload: dropped once down.
    removing: bool,
}

impl Instance {
    /// Not running and nothing pending: STOPPED, EXITED or FATAL without a child.
    fn is_down(&self) -> bool {
        self.child.is_none()
            && self.standby.is_none()
            && !self.machine.wants_spawn()
            && matches!(
                self.machine.state(),
                State::Stopped | State::Exited | State::Fatal
            )
    }
}

/// What became ready in the poll loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The child's pidfd: it exited.
    Exit(u64),
    /// Output on the child's pipe.
    Output(u64, Stream),
    /// The child's ready pipe: it runs (a slot's worker said RUNNING).
    Ready(u64),
    /// The standby's pidfd: the parked worker exited.
    StandbyExit(u64),
}

/// A global cap on spawns: a token bucket of `burst` spawns refilled at `rate` per second.
#[derive(Debug)]
struct SpawnGate {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl SpawnGate {
    fn new(rate: u32, burst: u32, now: Instant) -> SpawnGate {
        SpawnGate {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
    fn next_token(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.at + Duration::from_secs_f64(missing / self.rate)
    }
}

/// Host-level requests made through the control socket, acted on by the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRequest {
    /// Stop everything and exit.
    Shutdown,
}

/// The supervisor. See the module docs.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    log_dir: PathBuf,
    worker_bin: PathBuf,
    instances: Vec<Instance>,
    next_id: u64,
    gate: SpawnGate,
    cgroups: Result<CgroupRoot, String>,
    started: Instant,
    events: Vec<StateEvent>,
    request: Option<HostRequest>,
    shutting_down: bool,
    /// Programs changed by a reload, waiting for their old instances to be down.
    replacements: Vec<ProgramConfig>,
    next_fd_sample: Instant,
    next_slot_tick: Instant,
    /// The engine, in `slotpool run`.
    engine: Option<EngineLink>,
    next_engine_poll: Instant,
}

impl Supervisor {
    /// A supervisor for `config` with every instance STOPPED.
    pub fn new(config: Config, worker_bin: PathBuf, now: Instant) -> Supervisor {
        Supervisor::with_engine(config, worker_bin, now, None)
    }

    /// A supervisor whose slots run in `engine`: each slot's region is attached to the
    /// engine before its first worker starts, the patch of the config is published,
    /// and every worker exit, restart and quarantine goes through the engine's
    /// lifecycle messages (see [`crate::engine`]).
    pub fn with_engine(
        config: Config,
        worker_bin: PathBuf,
        now: Instant,
        engine: Option<EngineLink>,
    ) -> Supervisor {
        let cgroups = if config
            .programs
            .iter()
            .any(|p| p.memory_max.is_some() || p.cpu_max.is_some())
        {
            CgroupRoot::detect()
        } else {
            Err("no program sets memory_max or cpu_max".into())
        };
        if let Err(why) = &cgroups
            && config
                .programs
                .iter()
                .any(|p| p.memory_max.is_some() || p.cpu_max.is_some())
        {
            tracing::info!("no cgroup v2 limits ({why}); memory_max falls back to RLIMIT_AS");
        }
        let mut s = Supervisor {
            log_dir: config.log_dir(),
            gate: SpawnGate::new(
                config.supervisor.spawn_rate,
                config.supervisor.spawn_burst,
                now,
            ),
            config,
            worker_bin,
            instances: Vec::new(),
            next_id: 0,
            cgroups,
            started: now,
            events: Vec::new(),
            request: None,
            shutting_down: false,
            replacements: Vec::new(),
            next_fd_sample: now + FD_SAMPLE_EVERY,
            next_slot_tick: now,
            engine,
            next_engine_poll: now,
        };
        let programs = s.config.programs.clone();
        for p in programs {
            s.add_program(p);
        }
        s
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn add_program(&mut self, program: ProgramConfig) {
        for index in 0..program.numprocs {
            let name = format!("{}:{index}", program.name);
            let log = |stream: Stream| {
                program.log_path(stream, index, &self.log_dir).map(|path| {
                    let l = program.log(stream);
                    RotatingLog::new(path, l.maxbytes, l.backups)
                })
            };
            let limits = limits::plan(&program, &name, &self.cgroups);
            for w in &limits.warnings {
                tracing::warn!("{w}");
            }
            let inst = Instance {
                id: self.next_id,
                stdout: log(Stream::Stdout),
                stderr: log(Stream::Stderr),
                machine: Machine::new(Policy::of(&program)),
                name,
                index,
                program: program.clone(),
                child: None,
                slot: None,
                standby: None,
                standby_failures: 0,
                standby_next: self.started,
                limits,
                rt: None,
                spawn_error: None,
                removing: false,
            };
            self.next_id += 1;
            self.instances.push(inst);
        }
        self.sort_instances();
    }

    /// Start order: priority, then file order, then index. Stop order is the reverse.
    fn sort_instances(&mut self) {
        let order: Vec<String> = self
            .config
            .programs
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let pos = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
        self.instances
            .sort_by_key(|i| (i.program.priority, pos(&i.program.name), i.index));
    }

    /// Starts every `autostart` instance (in start order).
    pub fn start_autostart(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            if self.instances[i].program.autostart {
                self.feed(i, Event::Start, now);
            }
        }
    }

    /// Whether every autostart instance has settled: none is STARTING or BACKOFF (each is
    /// RUNNING, or has given up). READY=1 is sent then.
    pub fn autostart_settled(&self) -> bool {
        self.instances
            .iter()
            .filter(|i| i.program.autostart)
            .all(|i| !matches!(i.machine.state(), State::Starting | State::Backoff))
    }

    /// How many instances are RUNNING, and how many there are.
    pub fn running_count(&self) -> (usize, usize) {
        (
            self.instances
                .iter()
                .filter(|i| i.machine.state() == State::Running)
                .count(),
            self.instances.len(),
        )
    }

    /// State changes since the last call, for the control socket's `events`.
    pub fn take_events(&mut self) -> Vec<StateEvent> {
        std::mem::take(&mut self.events)
    }

    /// A shutdown asked for over the control socket.
    pub fn take_request(&mut self) -> Option<HostRequest> {
        self.request.take()
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.instances.iter().position(|i| i.id == id)
    }

    /// Feeds one event to instance `i`'s machine and carries out what it asks for.
    fn feed(&mut self, i: usize, event: Event, now: Instant) {
        let mut queue = VecDeque::from([event]);
        while let Some(ev) = queue.pop_front() {
            let out = self.instances[i].machine.step(ev, now);
            for t in &out.transitions {
                self.record_transition(i, t.from, t.to);
            }
            for action in out.actions {
                match action {
                    Action::Spawn => {
                        // Else spawned in `pump_spawns`: subject to the global cap, and
                        // a slot's region must have been reset by the engine first. A
                        // standby takes over without a spawn (and without a token).
                        if self.slot_ready(i) {
                            if let Some(ev) = self.promote(i, now) {
                                queue.push_back(ev);
                            } else if self.gate.take(now) {
                                queue.push_back(self.spawn(i, now));
                            }
                        }
                    }
                    Action::Signal(sig) => self.signal(i, sig),
                    Action::KillGroup => self.kill_group(i),
                }
            }
        }
    }

    fn record_transition(&mut self, i: usize, from: State, to: State) {
        let inst = &self.instances[i];
        let name = &inst.name;
        let pid = inst.child.as_ref().map(|c| c.pid as u32);
        let message = describe(inst, to);
        match to {
            State::Running => match from {
                State::Starting => tracing::info!(
                    "success: {name} entered RUNNING state, process has stayed up for > than {} seconds (startsecs)",
                    inst.program.startsecs.as_secs()
                ),
                _ => tracing::info!("{name}: {from} -> RUNNING"),
            },
            State::Backoff => tracing::warn!("{name}: BACKOFF: {message}"),
            State::Fatal => tracing::error!("gave up: {name} entered FATAL state: {message}"),
            State::Exited => tracing::info!("exited: {name} ({message})"),
            State::Stopped if from == State::Stopping => {
                tracing::info!("stopped: {name} ({message})")
            }
            _ => tracing::debug!("{name}: {from} -> {to}"),
        }
        let mut ev = StateEvent::now(name.clone(), protocol_state(from), protocol_state(to));
        ev.pid = pid;
        ev.exit_status = exit_status(inst);
        ev.message = (!message.is_empty()).then_some(message);
        self.events.push(ev);
    }

    /// Spawns instance `i`'s child; returns the event to feed back.
    fn spawn(&mut self, i: usize, now: Instant) -> Event {
        if let Err(e) = self.prepare_slot(i) {
            return self.spawn_failed(i, e);
        }
        let inst = &self.instances[i];
        let rt_plan = inst.program.slot.as_ref().map(|_| self.worker_rt_plan(i));
        let spec = SpawnSpec {
            program: &inst.program,
            instance: &inst.name,
            worker_bin: &self.worker_bin,
            pipe_stdout: inst.stdout.is_some(),
            pipe_stderr: inst.stderr.is_some(),
            limits: &inst.limits,
            region_fd: inst.slot.as_ref().map(|s| s.region.fd().as_raw_fd()),
            sample_rate: inst
                .program
                .slot
                .as_ref()
                .map(|_| self.config.engine.sample_rate),
            standby: false,
            rt: rt_plan.and_then(Result::ok),
            prewake_us: self.config.prewake_us(&inst.program),
        };
        match spawn::spawn(&spec) {
            Ok(c) => {
                let rt = rt_plan.map(|p| sched::outcome(p, c.rt_refused));
                let beat = inst
                    .slot
                    .as_ref()
                    .map(|s| s.monitor.worker_heartbeat())
                    .unwrap_or(0);
                tracing::info!("spawned: '{}' with pid {}{}", inst.name, c.pid, rt_note(rt));
                warn_rt_refusal(inst, rt);
                let inst = &mut self.instances[i];
                inst.rt = rt;
                inst.spawn_error = None;
                if let Some(slot) = &mut inst.slot {
                    slot.phase = Phase::Starting;
                }
                inst.child = Some(Child {
                    pidfd: c.pidfd,
                    pid: c.pid,
                    stdout: c.stdout,
                    stderr: c.stderr,
                    ready: c.ready,
                    fd_samples: VecDeque::new(),
                    fd_warned: false,
                    beat: (beat, now, false),
                });
                Event::Spawned
            }
            Err(e) => self.spawn_failed(i, e),
        }
    }

    /// What to ask for a worker of instance `i` (a slot) spawned now: the slot's own
    /// `realtime`, else `[engine] worker_realtime`, against the audio thread's current
    /// real-time state (before the engine runs: what `realtime` asks for).
    fn worker_rt_plan(&self, i: usize) -> Result<sched::RtRequest, WorkerRt> {
        let e = &self.config.engine;
        let setting = self.instances[i]
            .program
            .slot
            .as_ref()
            .and_then(|s| s.realtime)
            .unwrap_or(e.worker_realtime);
        let audio = self
            .engine
            .as_ref()
            .and_then(|l| l.audio.as_ref())
            .map(|a| a.realtime())
            .unwrap_or(crate::audio::RtState::requested(e.realtime));
        let period = Duration::from_secs_f64(f64::from(e.block_frames) / f64::from(e.sample_rate));
        sched::plan(setting, audio, period, sched::host_rttime_hard())
    }

    fn spawn_failed(&mut self, i: usize, e: String) -> Event {
        tracing::error!("spawnerr: {}: {e}", self.instances[i].name);
        self.instances[i].spawn_error = Some(e);
        Event::SpawnFailed
    }

    /// Creates the slot's region on the first spawn; resets it before every later one.
    fn prepare_slot(&mut self, i: usize) -> Result<(), String> {
        let engine = &self.config.engine;
        let inst = &mut self.instances[i];
        if inst.program.slot.is_none() {
            return Ok(());
        }
        match &mut inst.slot {
            Some(slot) => {
                // The previous worker is reaped (at most one child per instance), so no
                // worker is attached: the reset contract of HostEnd::reset holds. With
                // an engine, the audio thread did the reset (SlotDown → SlotReset).
                if let Some(end) = &mut slot.host_end {
                    end.reset();
                }
            }
            None => {
                let layout = SlotLayout {
                    channels_in: engine.channels,
                    channels_out: engine.channels,
                    block_frames: engine.block_frames,
                    audio_capacity: 4,
                    command_capacity: 64,
                    event_capacity: 64,
                };
                let region = HostRegion::create(&inst.name, layout)
                    .map_err(|e| format!("cannot create the slot region: {e}"))?;
                let host_end = region
                    .host_end()
                    .map_err(|e| format!("cannot take the region's host end: {e}"))?;
                let monitor = region.monitor();
                let interrupter = host_end.bell.interrupter();
                let (host_end, engine_id) = match &mut self.engine {
                    None => (Some(host_end), None),
                    Some(link) => {
                        let spec = slot_specs(&self.config)
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .find(|s| s.name == inst.name)
                            .ok_or_else(|| format!("{} is not a slot of the patch", inst.name))?;
                        let id = link
                            .handle
                            .attach_waiting(&spec, host_end, monitor.clone())
                            .map_err(|e| format!("cannot attach the slot to the engine: {e}"))?;
                        link.patch_dirty = true;
                        (None, Some(id))
                    }
                };
                inst.slot = Some(Slot {
                    region,
                    host_end,
                    monitor,
                    interrupter,
                    engine_id,
                    phase: Phase::Ready,
                    quarantines: 0,
                });
            }
        }
        Ok(())
    }

    fn signal(&mut self, i: usize, sig: i32) {
        let inst = &self.instances[i];
        if let Some(c) = &inst.child
            && let Err(e) = sys::pidfd_send_signal(c.pidfd.as_fd(), sig)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            tracing::warn!(
                "{}: cannot send signal {sig} to pid {}: {e}",
                inst.name,
                c.pid
            );
        }
        // A slot worker sleeping on its doorbell without a timeout sees its stop flag at
        // the next ring or nudge (its SIGTERM handler does not end the sleep): nudge now
        // rather than at the next slot tick. The signal is queued before the nudge, so
        // the woken worker finds the flag set.
        if let Some(slot) = &inst.slot {
            slot.monitor.nudge();
        }
    }

    /// SIGKILL to the child's whole process group.
    ///
    /// pidfd_send_signal reaches one process only, and there is no pidfd for a process
    /// group, so this is `kill(-pgid)`. It is safe from pid reuse because it is only
    /// called while the group leader is unreaped: the leader's pid (= the pgid) stays
    /// allocated, even as a zombie, until our waitid, so `-pgid` cannot name a group of
    /// strangers.
    fn kill_group(&mut self, i: usize) {
        let inst = &self.instances[i];
        if let Some(c) = &inst.child
            && let Err(e) = killpg(Pid::from_raw(c.pid), Signal::SIGKILL)
            && e != nix::errno::Errno::ESRCH
        {
            tracing::warn!("{}: cannot kill process group {}: {e}", inst.name, c.pid);
        }
    }

    /// Spawns what the global cap held back, as far as it allows now.
    fn pump_spawns(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            if self.instances[i].machine.wants_spawn()
                && self.instances[i].child.is_none()
                && self.slot_ready(i)
            {
                if let Some(ev) = self.promote(i, now) {
                    self.feed(i, ev, now);
                    continue;
                }
                if !self.gate.take(now) {
                    return;
                }
                let ev = self.spawn(i, now);
                self.feed(i, ev, now);
            }
        }
    }

    /// Makes instance `i`'s standby its worker, if it has a live one: one byte on its
    /// go pipe. Returns the event to feed (as for a spawn). The region must be fresh
    /// (`slot_ready`).
    fn promote(&mut self, i: usize, now: Instant) -> Option<Event> {
        let inst = &mut self.instances[i];
        let sb = inst.standby.take_if(|sb| !sb.released)?;
        // Exited but not reaped yet: reap it as a standby, spawn instead.
        if fd_readable(sb.child.pidfd.as_fd()) {
            inst.standby = Some(sb);
            self.reap_standby(i, now);
            return None;
        }
        if let Err(e) = nix::unistd::write(&sb.go, b"g") {
            // Its read end is gone: it is exiting; reaped as a standby.
            tracing::warn!(
                "{}: cannot wake the standby (pid {}): {e}; starting a new worker instead",
                inst.name,
                sb.child.pid
            );
            inst.standby = Some(sb);
            return None;
        }
        let Standby {
            mut child, go, rt, ..
        } = sb;
        drop(go);
        let beat = inst
            .slot
            .as_ref()
            .map(|s| s.monitor.worker_heartbeat())
            .unwrap_or(0);
        child.beat = (beat, now, false);
        tracing::info!(
            "spawned: '{}' with pid {} (the standby takes over){}",
            inst.name,
            child.pid,
            rt_note(rt)
        );
        warn_rt_refusal(inst, rt);
        inst.rt = rt;
        inst.spawn_error = None;
        inst.standby_failures = 0;
        if let Some(slot) = &mut inst.slot {
            slot.phase = Phase::Starting;
        }
        inst.child = Some(child);
        Some(Event::Spawned)
    }

    /// Starts a standby for every `standby = true` slot that runs and has none, as the
    /// global cap and the slot's standby back-off allow; releases standbys no longer
    /// wanted (the instance is stopping or stopped, removed, or the host shuts down).
    fn pump_standbys(&mut self, now: Instant) {
        if self.engine.is_none() {
            return;
        }
        for i in 0..self.instances.len() {
            let inst = &mut self.instances[i];
            let wanted = inst.program.slot.as_ref().is_some_and(|s| s.standby)
                && !inst.removing
                && !self.shutting_down
                && matches!(
                    inst.machine.state(),
                    State::Running | State::Starting | State::Backoff
                );
            match &mut inst.standby {
                Some(sb) if !wanted && !sb.released => {
                    sb.released = true;
                    if let Err(e) = sys::pidfd_send_signal(sb.child.pidfd.as_fd(), libc::SIGKILL)
                        && e.raw_os_error() != Some(libc::ESRCH)
                    {
                        tracing::warn!(
                            "{}: cannot release the standby (pid {}): {e}",
                            inst.name,
                            sb.child.pid
                        );
                    }
                }
                Some(_) => {}
                None if wanted
                    && inst.machine.state() == State::Running
                    && inst.child.is_some()
                    && inst.slot.is_some()
                    && now >= inst.standby_next =>
                {
                    if !self.gate.take(now) {
                        return;
                    }
                    self.spawn_standby(i, now);
                }
                None => {}
            }
        }
    }

    fn spawn_standby(&mut self, i: usize, now: Instant) {
        let inst = &self.instances[i];
        let rt_plan = self.worker_rt_plan(i);
        let spec = SpawnSpec {
            program: &inst.program,
            instance: &inst.name,
            worker_bin: &self.worker_bin,
            pipe_stdout: inst.stdout.is_some(),
            pipe_stderr: inst.stderr.is_some(),
            limits: &inst.limits,
            region_fd: inst.slot.as_ref().map(|s| s.region.fd().as_raw_fd()),
            sample_rate: Some(self.config.engine.sample_rate),
            standby: true,
            rt: rt_plan.ok(),
            prewake_us: self.config.prewake_us(&inst.program),
        };
        match spawn::spawn(&spec) {
            Ok(c) => {
                let Some(go) = c.go else {
                    // Cannot happen (a slot program spawned with `standby`); end it.
                    let _ = sys::pidfd_send_signal(c.pidfd.as_fd(), libc::SIGKILL);
                    return;
                };
                tracing::info!("{}: standby started with pid {}", inst.name, c.pid);
                self.instances[i].standby = Some(Standby {
                    child: Child {
                        pidfd: c.pidfd,
                        pid: c.pid,
                        stdout: c.stdout,
                        stderr: c.stderr,
                        ready: c.ready,
                        fd_samples: VecDeque::new(),
                        fd_warned: false,
                        beat: (0, now, false),
                    },
                    go,
                    released: false,
                    rt: Some(sched::outcome(rt_plan, c.rt_refused)),
                });
            }
            Err(e) => {
                tracing::warn!("{}: cannot start a standby: {e}", inst.name);
                self.standby_failed(i, now);
            }
        }
    }

    fn standby_failed(&mut self, i: usize, now: Instant) {
        let inst = &mut self.instances[i];
        inst.standby_failures = inst.standby_failures.saturating_add(1);
        let wait = Duration::from_secs(1u64 << inst.standby_failures.min(6).saturating_sub(1))
            .min(Duration::from_secs(60));
        inst.standby_next = now + wait;
    }

    /// The standby's pidfd is readable: reap it, keep its last words in the logs.
    fn reap_standby(&mut self, i: usize, now: Instant) {
        let Some(sb) = &mut self.instances[i].standby else {
            return;
        };
        let status = match waitid(
            Id::PIDFd(sb.child.pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
            Ok(WaitStatus::Signaled(_, sig, _)) => format!("signal {sig}"),
            Ok(_) => return,
            Err(e) => format!("waitid failed: {e}"),
        };
        let inst = &mut self.instances[i];
        let Some(mut sb) = inst.standby.take() else {
            return;
        };
        for (pipe, log) in [
            (&mut sb.child.stdout, &mut inst.stdout),
            (&mut sb.child.stderr, &mut inst.stderr),
        ] {
            if let Some(p) = pipe {
                let _ = p.drain(|data| {
                    if let Some(log) = log.as_mut() {
                        let _ = log.write(data);
                    }
                });
            }
        }
        if sb.released {
            tracing::debug!(
                "{}: standby pid {} released ({status})",
                inst.name,
                sb.child.pid
            );
        } else {
            tracing::warn!(
                "{}: the standby (pid {}) exited before it was needed ({status}); see the program's log",
                inst.name,
                sb.child.pid
            );
            self.standby_failed(i, now);
        }
    }

    /// The fds to poll, each with what it stands for.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, Token)> {
        let mut fds = Vec::new();
        for inst in &self.instances {
            if let Some(c) = &inst.child {
                fds.push((c.pidfd.as_fd(), Token::Exit(inst.id)));
                if let Some(p) = &c.stdout {
                    fds.push((p.fd(), Token::Output(inst.id, Stream::Stdout)));
                }
                if let Some(p) = &c.stderr {
                    fds.push((p.fd(), Token::Output(inst.id, Stream::Stderr)));
                }
                if let Some(r) = &c.ready {
                    fds.push((r.as_fd(), Token::Ready(inst.id)));
                }
            }
            if let Some(sb) = &inst.standby {
                fds.push((sb.child.pidfd.as_fd(), Token::StandbyExit(inst.id)));
            }
        }
        fds
    }

    /// Handles a ready fd.
    pub fn on_ready(&mut self, token: Token, now: Instant) {
        match token {
            Token::Output(id, stream) => {
                if let Some(i) = self.index_of(id) {
                    self.drain_output(i, stream);
                }
            }
            Token::Exit(id) => {
                if let Some(i) = self.index_of(id) {
                    self.reap(i, now);
                }
            }
            Token::Ready(id) => {
                if let Some(i) = self.index_of(id)
                    && let Some(c) = &mut self.instances[i].child
                {
                    // One byte, or end of file: either way it has nothing more to say.
                    c.ready = None;
                    // It said RUNNING: its blocks go into use at the next cycle.
                    self.engine_tick(now);
                }
            }
            Token::StandbyExit(id) => {
                if let Some(i) = self.index_of(id) {
                    self.reap_standby(i, now);
                }
            }
        }
    }

    fn drain_output(&mut self, i: usize, stream: Stream) {
        let inst = &mut self.instances[i];
        let Some(child) = &mut inst.child else { return };
        let (pipe, log) = match stream {
            Stream::Stdout => (&mut child.stdout, &mut inst.stdout),
            Stream::Stderr => (&mut child.stderr, &mut inst.stderr),
        };
        let Some(p) = pipe else { return };
        let name = &inst.name;
        let state = p.drain(|data| {
            if let Some(log) = log.as_mut()
                && let Err(e) = log.write(data)
            {
                tracing::warn!("{name}: {e}; output is dropped until it works again");
            }
        });
        if state == Drain::Eof {
            *pipe = None;
        }
    }

    /// The child's pidfd is readable: it has exited. Kill what is left of its group if
    /// it was being stopped, drain its output, reap it, and tell the machine.
    fn reap(&mut self, i: usize, now: Instant) {
        if self.instances[i].machine.state() == State::Stopping {
            // A stop ends the whole group; the leader is still unreaped here (see kill_group).
            self.kill_group(i);
        }
        let Some(child) = &self.instances[i].child else {
            return;
        };
        let status = match waitid(
            Id::PIDFd(child.pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Exit::Signal(sig as i32),
            Ok(_) => return, // not exited after all (spurious readiness)
            Err(e) => {
                tracing::error!(
                    "{}: waitid on pidfd failed: {e}; treating the child as gone",
                    self.instances[i].name
                );
                Exit::Signal(libc::SIGKILL)
            }
        };
        // Before anything that takes time (draining its logs): the audio thread may be
        // waiting for this worker's block right now. It has exited, so it writes
        // nothing more; the engine falls back at once instead of at the deadline, and
        // stays there until the SlotDown reset below.
        if let Some(slot) = &self.instances[i].slot
            && slot.engine_id.is_some()
        {
            slot.interrupter.interrupt();
        }
        // Drain what is left in the pipes (one bounded pass), then close them: a
        // descendant that still holds a write end gets EPIPE rather than a host that
        // waits for it.
        self.drain_output(i, Stream::Stdout);
        self.drain_output(i, Stream::Stderr);
        let pid = self.instances[i].child.as_ref().map(|c| c.pid).unwrap_or(0);
        self.instances[i].child = None; // closes the pidfd and pipes: the pid is gone for good
        if let Some(slot) = &mut self.instances[i].slot
            && slot.engine_id.is_some()
        {
            // The engine falls back from its next cycle and resets the region; the
            // replacement waits for SlotReset (see `engine_tick`).
            slot.phase = Phase::DownPending;
        }
        self.engine_tick(now);
        tracing::debug!("reaped: {} pid {pid}: {status:?}", self.instances[i].name);
        self.feed(i, Event::Exited(status), now);
    }

    /// Time-driven work: machine deadlines, held-back spawns, slot heartbeats and the
    /// hang watchdog, fd sampling, reload replacements, removal of dropped programs.
    pub fn tick(&mut self, now: Instant) {
        self.engine_tick(now);
        for i in 0..self.instances.len() {
            if self.instances[i]
                .machine
                .deadline()
                .is_some_and(|d| d <= now)
            {
                self.feed(i, Event::Tick, now);
            }
        }
        self.pump_spawns(now);
        self.pump_standbys(now);
        if now >= self.next_slot_tick {
            self.next_slot_tick = now + SLOT_TICK;
            self.slot_tick(now);
        }
        if now >= self.next_fd_sample {
            self.next_fd_sample = now + FD_SAMPLE_EVERY;
            self.sample_fds();
        }
        self.finish_reload(now);
    }

    /// Whether instance `i` may get a new child now: not a slot, a slot without an
    /// engine, or a slot whose region the engine has reset.
    fn slot_ready(&self, i: usize) -> bool {
        self.instances[i]
            .slot
            .as_ref()
            .is_none_or(|s| s.engine_id.is_none() || s.phase == Phase::Ready)
    }

    fn instance_of_slot(&self, id: SlotId) -> Option<usize> {
        self.instances
            .iter()
            .position(|inst| inst.slot.as_ref().and_then(|s| s.engine_id) == Some(id))
    }

    /// The engine's side of the slot lifecycle, never waiting for the audio thread:
    /// read its replies (SlotReset: a new worker may start; Quarantined: kill the
    /// worker), send SlotDown for reaped workers and SlotUp for workers that report
    /// RUNNING, publish the patch when it changed.
    fn engine_tick(&mut self, now: Instant) {
        let Some(link) = &mut self.engine else { return };
        self.next_engine_poll = now + ENGINE_POLL;
        let mut replies = Vec::new();
        while let Some(msg) = link.handle.poll() {
            replies.push(msg);
        }
        for msg in replies {
            match msg {
                FromEngine::SlotReset { slot } => {
                    if let Some(i) = self.instance_of_slot(slot)
                        && let Some(s) = &mut self.instances[i].slot
                        && s.phase == Phase::Resetting
                    {
                        s.phase = Phase::Ready;
                    }
                }
                FromEngine::Quarantined { slot, fault } => {
                    let Some(i) = self.instance_of_slot(slot) else {
                        continue;
                    };
                    let inst = &mut self.instances[i];
                    let Some(s) = &mut inst.slot else { continue };
                    // Every quarantine counts, also when the worker that broke its ring
                    // exited on its own before this reply was read (it usually does: it
                    // trips over its own garbage at once). The engine reports each one
                    // once: the link stays Quarantined until the SlotDown reset.
                    s.quarantines += 1;
                    // Replies come in order, so one read before our SlotReset belongs to
                    // a reaped worker (DownPending/Resetting): never kill the replacement.
                    let live = matches!(s.phase, Phase::Starting | Phase::Up);
                    match &inst.child {
                        Some(c) if live => {
                            tracing::warn!(
                                "{}: the worker (pid {}) broke its ring ({fault:?}); the slot is on its fallback, killing the worker",
                                inst.name,
                                c.pid
                            );
                            // Through the machine, so the exit counts as a quarantine
                            // (status: "quarantined"), not as a crash by SIGKILL.
                            self.feed(i, Event::Quarantined, now);
                        }
                        _ => tracing::warn!(
                            "{}: the worker broke its ring ({fault:?}) and is gone; the slot is on its fallback until the next worker runs",
                            inst.name
                        ),
                    }
                }
                // Dropped here, off the audio thread.
                FromEngine::Detached { .. } => {}
            }
        }
        let Some(link) = &mut self.engine else { return };
        for inst in &mut self.instances {
            let Some(slot) = &mut inst.slot else { continue };
            let Some(id) = slot.engine_id else { continue };
            let running =
                || inst.child.is_some() && slot.monitor.worker_state() == WorkerState::Running;
            if slot.phase == Phase::DownPending
                && link.handle.send(ToEngine::SlotDown { slot: id }).is_ok()
            {
                slot.phase = Phase::Resetting;
            } else if slot.phase == Phase::Starting
                && running()
                && link.handle.send(ToEngine::SlotUp { slot: id }).is_ok()
            {
                slot.phase = Phase::Up;
                tracing::debug!("{}: worker running; its blocks are in use", inst.name);
            }
        }
        link.publish_if_due(&self.config);
    }

    /// Whether some slot waits for the engine or its worker (the loop then polls fast).
    fn engine_busy(&self) -> bool {
        self.engine.as_ref().is_some_and(|l| l.patch_dirty)
            || self.instances.iter().any(|inst| {
                inst.slot.as_ref().is_some_and(|s| {
                    s.engine_id.is_some()
                        && (matches!(s.phase, Phase::DownPending | Phase::Resetting)
                            || s.phase == Phase::Starting && inst.child.is_some())
                })
            })
    }

    /// Every [`SLOT_TICK`], for every slot: judge the worker heartbeat (the hang
    /// watchdog), then beat the host heartbeat and nudge the doorbell.
    ///
    /// The nudge is the host's half of the idle-ring rule (docs/ABI.md "Idle rings"): a
    /// worker sleeps on its doorbell without a timeout, so while no cycle rings it (no
    /// engine, the audio stopped, the slot not up yet) this nudge is what wakes it to
    /// beat, to watch the host heartbeat and to see SIGTERM. It is a doorbell bump with a
    /// `FUTEX_WAKE` only if the worker sleeps; with the engine cycling, it costs the worker
    /// one extra turn of its loop per tick.
    ///
    /// An idle worker therefore beats once per nudge. Judging before nudging means it has
    /// had the whole time since the previous tick to answer the previous nudge, however
    /// late this tick runs: a healthy idle worker shows a new beat at every tick, and a
    /// supervisor that ran late never blames the worker for the gap. The judgement has
    /// the tick's resolution: a `hang_timeout` below `SLOT_TICK` means "did not answer
    /// within one tick".
    fn slot_tick(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            let inst = &mut self.instances[i];
            let Some(slot) = &inst.slot else { continue };
            let hung = inst.child.as_mut().and_then(|child| {
                let hb = slot.monitor.worker_heartbeat();
                let (last, since, advanced) = &mut child.beat;
                if hb != *last {
                    *last = hb;
                    *since = now;
                    *advanced = true;
                    return None;
                }
                // Judged on the host's monotonic clock, never on anything the worker
                // writes. A worker is judged once it has beaten at least once, or once
                // RUNNING.
                let judged = *advanced || inst.machine.state() == State::Running;
                let timeout = inst
                    .program
                    .slot
                    .as_ref()
                    .map(|s| s.hang_timeout)
                    .unwrap_or(Duration::MAX);
                let stalled_for = now.saturating_duration_since(*since);
                (judged && inst.machine.watch_for_hang() && stalled_for >= timeout).then_some((
                    stalled_for,
                    timeout,
                    child.pid,
                ))
            });
            // Beat first: a worker woken by the nudge sees this beat (docs/ABI.md).
            slot.monitor.beat_host();
            slot.monitor.nudge();
            if let Some((stalled_for, timeout, pid)) = hung {
                tracing::warn!(
                    "{}: worker heartbeat has not advanced for {} ms (hang_timeout {} ms): killing pid {pid}",
                    inst.name,
                    stalled_for.as_millis(),
                    timeout.as_millis(),
                );
                self.feed(i, Event::Hung, now);
            }
        }
    }

    fn sample_fds(&mut self) {
        let warn_at = self.config.supervisor.fd_warn;
        for inst in &mut self.instances {
            let Some(c) = &mut inst.child else { continue };
            let Some(n) = count_fds(Some(c.pid)) else {
                continue;
            };
            c.fd_samples.push_back(n);
            if c.fd_samples.len() > FD_GROWTH_SAMPLES {
                c.fd_samples.pop_front();
            }
            let growing = c.fd_samples.len() == FD_GROWTH_SAMPLES
                && c.fd_samples
                    .iter()
                    .zip(c.fd_samples.iter().skip(1))
                    .all(|(a, b)| b > a);
            if n > warn_at && growing && !c.fd_warned {
                c.fd_warned = true;
                tracing::warn!(
                    "{}: pid {} has {n} open fds and the count keeps growing ({} {}s ago): an fd leak?",
                    inst.name,
                    c.pid,
                    c.fd_samples.front().copied().unwrap_or(0),
                    FD_SAMPLE_EVERY.as_secs() * (FD_GROWTH_SAMPLES as u64 - 1)
                );
            }
        }
    }

    /// When the loop must wake up at the latest for [`Supervisor::tick`].
    pub fn next_wake(&self, now: Instant) -> Instant {
        let mut next = self.next_fd_sample;
        if self.engine.is_some() {
            next = next.min(if self.engine_busy() {
                now + ENGINE_FAST_POLL
            } else {
                self.next_engine_poll
            });
        }
        for inst in &self.instances {
            if let Some(d) = inst.machine.deadline() {
                next = next.min(d);
            }
            if inst.slot.is_some() || inst.program.slot.is_some() && inst.child.is_some() {
                next = next.min(self.next_slot_tick);
            }
            if inst.machine.wants_spawn() && inst.child.is_none() {
                next = next.min(self.gate.next_token());
            }
        }
        if !self.replacements.is_empty() || self.instances.iter().any(|i| i.removing) {
            next = next.min(now + Duration::from_millis(50));
        }
        next.max(now)
    }

    // ---------- verbs ----------

    fn resolve(&self, name: &str) -> Result<Vec<usize>, String> {
        let target = Target::parse(name).map_err(|e| e.to_string())?;
        let hits: Vec<usize> = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.removing)
            .filter(|(_, i)| match target {
                Target::All => true,
                Target::Program(p) => i.program.name == p,
                Target::Instance(p, idx) => i.program.name == p && i.index == idx,
            })
            .map(|(n, _)| n)
            .collect();
        if hits.is_empty() {
            let mut known: Vec<&str> = self
                .config
                .programs
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            known.dedup();
            return Err(format!(
                "no program or instance called '{name}' (known: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        }
        Ok(hits)
    }

    /// `start NAME|NAME:i|all`.
    pub fn start(&mut self, name: &str, now: Instant) -> Result<Vec<ActionResult>, String> {
        let hits = self.resolve(name)?;
        Ok(hits
            .into_iter()
            .map(|i| {
                let state = self.instances[i].machine.state();
                let n = self.instances[i].name.clone();
                if state.is_active() {
                    return ActionResult::failed(n, "ERROR (already started)");
                }
                self.feed(i, Event::Start, now);
                ActionResult::ok(
                    n,
                    if state == State::Stopping {
                        "will start once stopped"
                    } else {
                        "starting"
                    },
                )
            })
            .collect())
    }

    /// `stop NAME|NAME:i|all`.
    pub fn stop(&mut self, name: &str, now: Instant) -> Result<Vec<ActionResult>, String> {
        let hits = self.resolve(name)?;
        Ok(hits
            .into_iter()
            .map(|i| {
                let state = self.instances[i].machine.state();
                let n = self.instances[i].name.clone();
                if matches!(state, State::Stopped | State::Exited) {
                    return ActionResult::failed(n, "ERROR (not running)");
                }
                self.feed(i, Event::Stop, now);
                let msg = if self.instances[i].machine.state() == State::Stopping {
                    "stopping"
                } else {
                    "stopped"
                };
                ActionResult::ok(n, msg)
            })
            .collect())
    }

    /// `restart NAME|NAME:i|all`.
    pub fn restart(&mut self, name: &str, now: Instant) -> Result<Vec<ActionResult>, String> {
        let hits = self.resolve(name)?;
        Ok(hits
            .into_iter()
            .map(|i| {
                self.feed(i, Event::Restart, now);
                ActionResult::ok(self.instances[i].name.clone(), "restarting")
            })
            .collect())
    }

    /// `set SLOT PARAM VALUE`: the engine records the value (a restarted worker gets it
    /// back) and forwards it to the running worker. PARAM is the module's parameter
    /// name, or a numeric id for a custom worker.
    pub fn set_param(
        &mut self,
        name: &str,
        param: &str,
        value: f64,
    ) -> Result<Vec<ActionResult>, String> {
        let hits = self.resolve(name)?;
        let Some(link) = &mut self.engine else {
            return Err(format!(
                "cannot set {param} of {name}: this host runs no audio engine"
            ));
        };
        let mut results = Vec::new();
        for i in hits {
            let inst = &self.instances[i];
            if inst.program.slot.is_none() {
                return Err(format!(
                    "{} is a plain program, not a slot: it has no parameters",
                    inst.name
                ));
            }
            let (id, v) = param_value(&inst.program, param, value)
                .map_err(|e| format!("{}: {e}", inst.name))?;
            let Some(slot) = inst.slot.as_ref().and_then(|s| s.engine_id) else {
                results.push(ActionResult::failed(
                    inst.name.clone(),
                    "ERROR (not started yet: no region in the engine)",
                ));
                continue;
            };
            match link.handle.send(ToEngine::SetParam { slot, id, value: v }) {
                Ok(()) => results.push(ActionResult::ok(
                    inst.name.clone(),
                    format!("{param} = {v}"),
                )),
                Err(e) => results.push(ActionResult::failed(
                    inst.name.clone(),
                    format!("ERROR ({e})"),
                )),
            }
        }
        Ok(results)
    }

    // ---------- shutdown ----------

    /// Starts stopping everything, highest priority value first; each priority group
    /// is stopped only once the one before it is down.
    pub fn begin_shutdown(&mut self, now: Instant) {
        if !self.shutting_down {
            tracing::info!(
                "shutting down: stopping {} instance(s)",
                self.instances.len()
            );
        }
        self.shutting_down = true;
        self.replacements.clear();
        self.advance_shutdown(now);
    }

    /// A second SIGTERM/SIGINT: stop everything at once and SIGKILL every group.
    pub fn force_shutdown(&mut self, now: Instant) {
        tracing::warn!("second stop signal: killing every process group now");
        self.shutting_down = true;
        for i in 0..self.instances.len() {
            self.feed(i, Event::Stop, now);
            self.kill_group(i);
        }
    }

    /// Whether a shutdown is under way.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn advance_shutdown(&mut self, now: Instant) {
        // The highest priority value that still has an instance up.
        let Some(group) = self
            .instances
            .iter()
            .filter(|i| !i.is_down())
            .map(|i| i.program.priority)
            .max()
        else {
            return;
        };
        for i in (0..self.instances.len()).rev() {
            if self.instances[i].program.priority == group && !self.instances[i].is_down() {
                let s = self.instances[i].machine.state();
                if s != State::Stopping {
                    self.feed(i, Event::Stop, now);
                }
            }
        }
    }

    /// Shutdown progress; true once everything is down.
    pub fn shutdown_done(&mut self, now: Instant) -> bool {
        if !self.shutting_down {
            return false;
        }
        self.advance_shutdown(now);
        self.instances.iter().all(Instance::is_down)
    }

    // ---------- reload ----------

    /// Re-reads the config file and applies the difference: added programs start
    /// (autostart), removed ones stop and go, changed ones restart with the new
    /// settings, unchanged ones are not touched. An invalid file changes nothing.
    pub fn reload(&mut self, now: Instant) -> Result<Vec<ActionResult>, String> {
        let path = self.config.path.clone();
        let new =
            Config::load(&path).map_err(|e| format!("reload refused, nothing changed:\n{e}"))?;
        Ok(self.apply_config(new, now))
    }

    /// Applies `new` as [`Supervisor::reload`] does.
    pub fn apply_config(&mut self, new: Config, now: Instant) -> Vec<ActionResult> {
        let mut results = Vec::new();
        let old = std::mem::replace(&mut self.config, new);
        if old.control != self.config.control {
            tracing::warn!(
                "reload: [control] changed; the socket moves at the next start of the host"
            );
        }
        if old.supervisor.log_dir != self.config.supervisor.log_dir {
            tracing::warn!(
                "reload: [supervisor] log_dir changes apply to added and changed programs only"
            );
        }
        self.log_dir = self.config.log_dir();
        self.gate.rate = f64::from(self.config.supervisor.spawn_rate);
        self.gate.burst = f64::from(self.config.supervisor.spawn_burst);
        for p in &old.programs {
            match self.config.program(&p.name) {
                None => {
                    results.push(ActionResult::ok(&p.name, "removed"));
                    for i in 0..self.instances.len() {
                        if self.instances[i].program.name == p.name {
                            self.instances[i].removing = true;
                            self.feed(i, Event::Stop, now);
                        }
                    }
                }
                Some(np) if np != p => {
                    results.push(ActionResult::ok(&p.name, "changed: restarting"));
                    self.replacements.push(np.clone());
                    for i in 0..self.instances.len() {
                        if self.instances[i].program.name == p.name {
                            self.instances[i].removing = true;
                            self.feed(i, Event::Stop, now);
                        }
                    }
                }
                Some(_) => {}
            }
        }
        let added: Vec<ProgramConfig> = self
            .config
            .programs
            .iter()
            .filter(|p| old.program(&p.name).is_none())
            .cloned()
            .collect();
        for p in added {
            results.push(ActionResult::ok(&p.name, "added"));
            self.replacements.push(p);
        }
        if old.routes != self.config.routes {
            results.push(ActionResult::ok("patch", "routes changed"));
        }
        if self.engine.is_some() && old.engine != self.config.engine {
            tracing::warn!(
                "reload: [engine] changed; the audio engine keeps its settings until the host is restarted"
            );
            self.config.engine = old.engine.clone();
        }
        if let Some(link) = &mut self.engine {
            // Swapped in by the audio thread at a cycle boundary.
            link.patch_dirty = true;
        }
        if results.is_empty() {
            results.push(ActionResult::ok("host", "no changes"));
        }
        tracing::info!(
            "reload: {}",
            results
                .iter()
                .map(|r| format!("{} {}", r.name, r.message))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.finish_reload(now);
        results
    }

    /// Drops removed instances once down; brings in added or changed programs once the
    /// instances they replace are down.
    fn finish_reload(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        let before = self.instances.len();
        let (gone, kept): (Vec<Instance>, Vec<Instance>) = std::mem::take(&mut self.instances)
            .into_iter()
            .partition(|i| i.removing && i.is_down());
        self.instances = kept;
        if let Some(link) = &mut self.engine {
            for inst in &gone {
                if inst.slot.as_ref().is_some_and(|s| s.engine_id.is_some()) {
                    // Its steps are gone from the patch published at the reload; the
                    // port comes back as Detached and is dropped in `engine_tick`.
                    if let Err(e) = link.handle.detach(&inst.name) {
                        tracing::warn!("{}: cannot detach from the engine: {e}", inst.name);
                    }
                    link.patch_dirty = true;
                }
            }
        }
        drop(gone);
        let mut removed_any = self.instances.len() != before;
        let pending = std::mem::take(&mut self.replacements);
        for p in pending {
            if self.instances.iter().any(|i| i.program.name == p.name) {
                self.replacements.push(p);
                continue;
            }
            let autostart = p.autostart;
            let name = p.name.clone();
            self.add_program(p);
            removed_any = true;
            if autostart {
                for i in 0..self.instances.len() {
                    if self.instances[i].program.name == name {
                        self.feed(i, Event::Start, now);
                    }
                }
            }
        }
        if removed_any {
            self.sort_instances();
        }
    }

    // ---------- status ----------

    /// The status of every instance and of the host.
    pub fn status(&self, now: Instant) -> StatusReport {
        let block_s =
            f64::from(self.config.engine.block_frames) / f64::from(self.config.engine.sample_rate);
        let programs = self
            .instances
            .iter()
            .map(|inst| {
                let mut s =
                    ProgramStatus::new(inst.name.clone(), protocol_state(inst.machine.state()));
                let c = inst.machine.counters();
                s.restarts = c.restarts;
                s.crashes = c.crashes;
                s.hangs = c.hangs;
                if let Some(child) = &inst.child {
                    s.pid = Some(child.pid as u32);
                    s.fds = count_fds(Some(child.pid));
                    s.uptime_s = inst
                        .machine
                        .child_since()
                        .map(|t| now.saturating_duration_since(t).as_secs());
                    if let Some(slot) = &inst.slot {
                        s.heartbeat_age_ms =
                            Some(now.saturating_duration_since(child.beat.1).as_secs_f64() * 1e3);
                        let ns = slot.monitor.process_ns();
                        s.process_time_us = Some(ns as f64 / 1e3);
                        s.load = Some(ns as f64 / 1e9 / block_s);
                    }
                }
                if let (Some(link), Some(slot)) = (&self.engine, &inst.slot)
                    && let Some(id) = slot.engine_id
                    && let Some(st) = link.handle.stats().slot(usize::from(id))
                {
                    let snap = st.snapshot();
                    s.late_blocks = snap.late;
                    s.fallback_blocks = Some(snap.fallback_blocks);
                    s.rings = Some(snap.rings);
                    s.rings_woke = Some(snap.rings_woke);
                    s.prewake_us = Some(self.config.prewake_us(&inst.program));
                    s.quarantines = Some(slot.quarantines);
                    s.link = Some(
                        match snap.link {
                            SlotLink::Up => "up",
                            SlotLink::Down => "down",
                            SlotLink::Quarantined => "quarantined",
                            SlotLink::Vacant => "vacant",
                        }
                        .to_string(),
                    );
                    if inst.child.is_some() {
                        s.process_time_us = Some(snap.process_ns as f64 / 1e3);
                        s.load = Some(f64::from(snap.load_ppm) / 1e6);
                    }
                }
                s.standby_pid = inst
                    .standby
                    .as_ref()
                    .filter(|sb| !sb.released)
                    .map(|sb| sb.child.pid as u32);
                s.exit_status = exit_status(inst);
                s.limits = inst.limits.status.clone();
                s.description = describe(inst, inst.machine.state());
                if inst.child.is_some()
                    && let Some(rt) = inst.rt
                {
                    s.realtime = Some(rt.to_string());
                    if let Some(problem) = rt.problem() {
                        s.description = format!("{}; {problem}", s.describe());
                    }
                }
                if inst.machine.child() == ChildPhase::Pending {
                    s.description = "waiting for the global spawn-rate cap".into();
                }
                if let Some(d) = inst.machine.deadline()
                    && inst.machine.state() == State::Fatal
                {
                    s.description.push_str(&format!(
                        "; re-probe in {} s",
                        d.saturating_duration_since(now).as_secs()
                    ));
                }
                s
            })
            .collect();
        StatusReport {
            programs,
            host: HostStatus {
                pid: std::process::id(),
                uptime_s: now.saturating_duration_since(self.started).as_secs(),
                fds: count_fds(None),
                config: self.config.path.clone(),
                backend: self.engine.as_ref().and_then(|l| l.backend.clone()),
                cycle_time_us: self.engine.as_ref().and_then(|l| {
                    let h = &l.handle.stats().cycle_time;
                    let us = |q: f64| h.percentile(q).map(|ns| ns as f64 / 1e3);
                    Some(Percentiles {
                        p50: us(0.5)?,
                        p90: us(0.9)?,
                        p99: us(0.99)?,
                        max: h.max() as f64 / 1e3,
                    })
                }),
                device_xruns: self
                    .engine
                    .as_ref()
                    .and_then(|l| l.audio.as_ref())
                    .map(|a| a.device_xruns()),
                realtime: self
                    .engine
                    .as_ref()
                    .and_then(|l| l.audio.as_ref())
                    .map(|a| a.realtime().to_string()),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
        }
    }

    /// The log file of `name` (one instance) for `stream`.
    pub fn log_file(&self, name: &str, stream: Stream) -> Result<PathBuf, String> {
        let hits = self.resolve(name)?;
        let [i] = hits.as_slice() else {
            return Err(format!(
                "'{name}' has several instances; name one, e.g. '{name}:0'"
            ));
        };
        let inst = &self.instances[*i];
        let log = match stream {
            Stream::Stdout => &inst.stdout,
            Stream::Stderr => &inst.stderr,
        };
        log.as_ref()
            .map(|l| l.path().to_path_buf())
            .ok_or_else(|| format!("{} sends its {} to /dev/null", inst.name, stream.as_str()))
    }

    /// The log directory of `AUTO` logs.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

/// The parameter id and wire value of `param = value` for a slot program: looked up
/// (and clamped/rounded) in the module's table, or a numeric id for a custom worker
/// (which validates the value itself).
fn param_value(p: &ProgramConfig, param: &str, value: f64) -> Result<(u32, f32), String> {
    use crate::config::Launch;
    match &p.launch {
        Launch::Module(module) => {
            let info = slotpool_worker::modules::find(module)
                .ok_or_else(|| format!("unknown module {module}"))?;
            let spec = info.param(param).ok_or_else(|| {
                format!(
                    "module {module} has no parameter '{param}' (known: {})",
                    info.params
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let v = spec
                .sanitize(value as f32)
                .map_err(|e| format!("{param}: {e}"))?;
            Ok((spec.id, v))
        }
        Launch::Command { .. } => {
            let id = param.parse::<u32>().map_err(|_| {
                format!(
                    "a custom worker's parameters are set by numeric id (got '{param}'); see the worker's own documentation"
                )
            })?;
            if !value.is_finite() {
                return Err(format!("{value} is not a finite number"));
            }
            Ok((id, value as f32))
        }
    }
}

fn protocol_state(s: State) -> ProgramState {
    match s {
        State::Stopped => ProgramState::Stopped,
        State::Starting => ProgramState::Starting,
        State::Running => ProgramState::Running,
        State::Backoff => ProgramState::Backoff,
        State::Stopping => ProgramState::Stopping,
        State::Exited => ProgramState::Exited,
        State::Fatal => ProgramState::Fatal,
    }
}

/// `, SCHED_FIFO 69` for the spawn log line of a real-time worker.
fn rt_note(rt: Option<WorkerRt>) -> String {
    match rt {
        Some(WorkerRt::Applied(r)) => format!(", SCHED_FIFO {}", r.priority),
        _ => String::new(),
    }
}

/// Warns of a refused real-time request once per slot (again only if the reason
/// changes); `inst.rt` is the previous worker's.
fn warn_rt_refusal(inst: &Instance, rt: Option<WorkerRt>) {
    if let Some(r) = rt
        && matches!(r, WorkerRt::Refused { .. })
        && inst.rt != Some(r)
    {
        tracing::warn!("{}: real-time scheduling {r}", inst.name);
    }
}

fn exit_status(inst: &Instance) -> Option<ExitStatus> {
    if let (Some(e), Reason::SpawnFailed | Reason::TooManyRetries) =
        (&inst.spawn_error, inst.machine.reason())
    {
        return Some(ExitStatus::SpawnFailed { error: e.clone() });
    }
    inst.machine.last_cause().map(|c| match c {
        Cause::ExpectedExit { code } | Cause::UnexpectedExit { code } => {
            ExitStatus::Exited { code }
        }
        Cause::Crash { signal } => ExitStatus::Signaled { signal },
        Cause::Hang => ExitStatus::Hung,
        Cause::Quarantined => ExitStatus::Quarantined,
        Cause::Stopped {
            exit: Exit::Code(code),
        } => ExitStatus::Exited { code },
        Cause::Stopped {
            exit: Exit::Signal(signal),
        } => ExitStatus::Signaled { signal },
    })
}

/// supervisord-like description of why the instance is in its state.
fn describe(inst: &Instance, state: State) -> String {
    use crate::config::values::signal_name;
    let m = &inst.machine;
    let last = |c: Option<Cause>| match c {
        Some(Cause::ExpectedExit { code }) => format!("exit status {code}; expected"),
        Some(Cause::UnexpectedExit { code }) => format!("exit status {code}; not expected"),
        Some(Cause::Crash { signal }) => {
            let why = match (signal, inst.rt) {
                (libc::SIGXCPU, Some(WorkerRt::Applied(r))) => format!(
                    " (RLIMIT_RTTIME: it ran {} ms at real-time priority without blocking)",
                    r.rttime_soft_us / 1000
                ),
                (libc::SIGKILL, Some(WorkerRt::Applied(r))) => format!(
                    " (not by the host: the OOM killer, a kill -9, or RLIMIT_RTTIME's hard \
                     limit of {} ms at real-time priority without blocking)",
                    r.rttime_hard_us / 1000
                ),
                _ => String::new(),
            };
            format!(
                "terminated by SIG{}; not expected{why}",
                signal_name(signal)
            )
        }
        Some(Cause::Hang) => {
            let t = inst
                .program
                .slot
                .as_ref()
                .map(|s| s.hang_timeout.as_millis())
                .unwrap_or(0);
            format!("hung: no heartbeat for {t} ms, killed")
        }
        Some(Cause::Quarantined) => {
            "quarantined: the worker broke its region's rings, killed".to_string()
        }
        Some(Cause::Stopped {
            exit: Exit::Code(c),
        }) => format!("exit status {c}"),
        Some(Cause::Stopped {
            exit: Exit::Signal(s),
        }) => format!("terminated by SIG{}", signal_name(s)),
        None => String::new(),
    };
    let spawnerr = || inst.spawn_error.clone().unwrap_or_default();
    match state {
        State::Backoff => match m.reason() {
            Reason::SpawnFailed => format!("spawn error: {}", spawnerr()),
            _ => "Exited too quickly (process log may have details)".into(),
        },
        State::Fatal => match m.reason() {
            Reason::CrashLoop { exits, window_s } => {
                format!(
                    "crash loop: {exits} unexpected exits within {window_s} s ({})",
                    last(m.last_cause())
                )
            }
            _ if inst.spawn_error.is_some() => {
                format!("too many start retries: spawn error: {}", spawnerr())
            }
            _ => format!(
                "too many start retries too quickly ({} attempts); Exited too quickly (process log may have details)",
                m.policy().startretries + 1
            ),
        },
        State::Exited | State::Stopped => last(m.last_cause()),
        // The status table derives "pid N, uptime H:MM:SS" for these.
        State::Starting | State::Running | State::Stopping => String::new(),
    }
}

impl ControlHandler for Supervisor {
    fn handle(&mut self, req: Request) -> Response {
        let now = Instant::now();
        let done = |r: Result<Vec<ActionResult>, String>| match r {
            Ok(results) => Response::Done { results },
            Err(e) => Response::error(e),
        };
        match req {
            Request::Status => Response::Status(self.status(now)),
            Request::Start { name } if self.shutting_down => {
                Response::error(format!("cannot start {name}: the host is shutting down"))
            }
            Request::Start { name } => done(self.start(&name, now)),
            Request::Stop { name } => done(self.stop(&name, now)),
            Request::Restart { name } => done(self.restart(&name, now)),
            Request::Reload if self.shutting_down => {
                Response::error("cannot reload: the host is shutting down")
            }
            Request::Reload => done(self.reload(now)),
            Request::Shutdown => {
                self.request = Some(HostRequest::Shutdown);
                Response::done("host", "shutting down")
            }
            Request::Set { slot, param, value } => done(self.set_param(&slot, &param, value)),
            Request::Tail { name, stream, .. } => {
                let s = match stream {
                    crate::control::protocol::LogStream::Stdout => Stream::Stdout,
                    crate::control::protocol::LogStream::Stderr => Stream::Stderr,
                };
                match self.log_file(&name, s) {
                    Ok(path) => Response::Log { path },
                    Err(e) => Response::error(e),
                }
            }
            Request::Events => Response::error("events are served by the control server"),
        }
    }
}

/// Whether `fd` polls readable now (no wait).
fn fd_readable(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}
