//! The worker main: start-up handshake ([`run`], [`run_with`]) and the process loop
//! ([`Worker`]).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use slotpool_ring::{
    Command, Event, MonoTime, OpenError, PushError, RecordError, RingFault, ShortStr, WorkerEnd,
    WorkerRegion, WorkerState,
};

use crate::fault::{FaultPlan, Sudden, Trigger};
use crate::instance::Instance;
use crate::prewake::Prewake;
use crate::processor::{ParamError, ProcessConfig, Processor};
use crate::sys::{self, StartEnv};

/// Default of [`RunOptions::host_timeout`].
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest single sleep on the doorbell until the host has rung or nudged it once (and
/// the slice of the start-up sleeps). From the first ring or nudge on, the loop sleeps
/// without a timeout ([`slotpool_ring::WorkerBell::wait_doorbell_untimed`]): the host
/// promises to ring or nudge the doorbell at least every slot tick while the worker runs
/// (docs/ABI.md "Idle rings"), and each ring or nudge is when the loop sees SIGTERM,
/// beats, looks at the host heartbeat and takes commands pushed without a ring. Until
/// then (a host that died before the worker armed its death signal never rings), the
/// loop keeps watching the host heartbeat on its own, every slice.
pub const WAIT_SLICE: Duration = Duration::from_millis(20);

/// Codes of `Event::Error` sent in answer to a refused command.
pub mod error_code {
    /// `SetParam` named an id the processor does not have.
    pub const UNKNOWN_PARAM: u32 = 1;
    /// `SetParam` carried NaN or an infinity.
    pub const BAD_VALUE: u32 = 2;
    /// A command record could not be decoded (it was skipped).
    pub const BAD_RECORD: u32 = 3;
}

/// Fault codes the worker writes into the header's `fault_code` word with state `FAULTED`.
pub mod fault_code {
    /// The host broke the ring protocol (a counter out of range); the worker exits 1.
    pub const HOST_RING_FAULT: u32 = 1;
}

/// How the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Exit with status 3 when the host heartbeat has not advanced for this long.
    pub host_timeout: Duration,
    /// Faults to commit on purpose (none by default).
    pub faults: FaultPlan,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            host_timeout: DEFAULT_HOST_TIMEOUT,
            faults: FaultPlan::default(),
        }
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// SIGTERM or SIGINT (the stop flag).
    Stopped,
    /// A `Shutdown` command (acknowledged before returning).
    Shutdown {
        /// Its seq.
        seq: u64,
    },
    /// The host heartbeat did not advance for the host timeout.
    HostGone {
        /// How long it had been still.
        still_for: Duration,
    },
    /// The host broke the ring protocol.
    HostFault(RingFault),
}

/// Exit statuses, decided here and nowhere else.
pub mod exit_status {
    /// Stopped on request.
    pub const CLEAN: u8 = 0;
    /// Region or protocol error.
    pub const ERROR: u8 = 1;
    /// Started wrongly (environment or arguments).
    pub const USAGE: u8 = 2;
    /// The host is gone.
    pub const HOST_GONE: u8 = 3;
}

impl Outcome {
    /// The exit status for this outcome.
    pub fn exit_status(&self) -> u8 {
        match self {
            Outcome::Stopped | Outcome::Shutdown { .. } => exit_status::CLEAN,
            Outcome::HostGone { .. } => exit_status::HOST_GONE,
            Outcome::HostFault(_) => exit_status::ERROR,
        }
    }
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The environment is missing or malformed (exit 2).
    #[error(transparent)]
    Env(#[from] sys::EnvError),
    /// The parent changed before the death signal was armed (exit 3).
    #[error("the host (pid {expected}) is already gone (parent is now pid {found}); nothing to do")]
    ParentGone {
        /// `SLOTPOOL_PARENT_PID`.
        expected: i32,
        /// `getppid()`.
        found: i32,
    },
    /// A system call failed (exit 1).
    #[error("{0}")]
    Sys(String),
    /// The region is not a valid slot region (exit 1).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The region belongs to another slot (exit 1).
    #[error(
        "the region handed over is for slot `{region}`, but {env} says `{slot}`; the host \
         passed the wrong fd"
    )]
    WrongSlot {
        /// Name in the region header.
        region: String,
        /// `SLOTPOOL_SLOT`.
        slot: String,
        /// The variable's name.
        env: &'static str,
    },
    /// The processor's parameter table is malformed (exit 1).
    #[error("parameter {index} (`{name}`) has id {id}; ids must equal their index in params()")]
    BadParamTable {
        /// Index in the table.
        index: usize,
        /// Its name.
        name: &'static str,
        /// Its id.
        id: u32,
    },
    /// The host wrote impossible ring counters before the loop started (exit 1).
    #[error("ring fault during start-up: {0}")]
    Ring(#[from] RingFault),
    /// A standby (`SLOTPOOL_GO_FD`) was released before it was needed: the host closed
    /// the go pipe, or a stop signal came (exit 0).
    #[error("standby released before it was needed ({0}); exiting")]
    Released(&'static str),
}

impl StartError {
    fn exit_status(&self) -> u8 {
        match self {
            StartError::Env(_) => exit_status::USAGE,
            StartError::ParentGone { .. } => exit_status::HOST_GONE,
            StartError::Released(_) => 0,
            _ => exit_status::ERROR,
        }
    }
}

/// The whole worker main: `fn main() -> ExitCode { slotpool_worker::run(MyDsp::new()) }`.
/// Follows the start-up contract of the crate docs, runs the loop, and returns the exit
/// status (0 stopped, 1 error, 2 not started by a host, 3 host gone).
pub fn run<P: Processor>(processor: P) -> ExitCode {
    run_with(processor, RunOptions::default())
}

/// [`run`] with options (host timeout, fault injection).
pub fn run_with<P: Processor>(processor: P, options: RunOptions) -> ExitCode {
    let program = program_name();
    let env = match StartEnv::from_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(exit_status::USAGE);
        }
    };
    let tag = format!("{program}[{}] (pid {})", env.slot, sys::own_pid());
    let stop = match sys::stop_flag(options.faults.ignore_sigterm) {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("{tag}: cannot install the SIGTERM handler: {e}");
            return ExitCode::from(exit_status::ERROR);
        }
    };
    let (mut worker, ready_fd) = match start(processor, &env, &options, &stop) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("{tag}: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let faults = options.faults;
    if faults.fork_child {
        match fork_grandchild() {
            Ok(pid) => eprintln!("{tag}: fault fork-child: grandchild pid {pid}"),
            Err(e) => eprintln!("{tag}: fault fork-child: could not start the grandchild: {e}"),
        }
    }
    if let Some(delay) = faults.slow_start
        && sleep_unless_stopped(delay, &stop)
    {
        return finish(&tag, &worker, Outcome::Stopped);
    }
    let ready = !faults.never_ready;
    if ready {
        worker.mark_running();
        if let Some(fd) = ready_fd
            && let Err(e) = sys::report_ready(fd)
        {
            // The host stopped listening; its supervisor decides what that means.
            eprintln!("{tag}: writing the ready byte failed: {e}");
        }
    }
    worker.set_prewake(env.prewake);
    let outcome = worker.run(&stop, options.host_timeout, ready);
    finish(&tag, &worker, outcome)
}

fn finish<P: Processor>(tag: &str, worker: &Worker<P>, outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Stopped => eprintln!("{tag}: stopping on signal"),
        Outcome::Shutdown { seq } => eprintln!("{tag}: stopping on Shutdown command (seq {seq})"),
        Outcome::HostGone { still_for } => eprintln!(
            "{tag}: the host's heartbeat has not advanced for {:.1} s: the host is gone, exiting",
            still_for.as_secs_f64()
        ),
        Outcome::HostFault(f) => eprintln!("{tag}: the host broke the ring protocol: {f}"),
    }
    worker.mark_finished(&outcome);
    ExitCode::from(outcome.exit_status())
}

fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "slotpool-worker".to_string())
}

/// Steps 1–5 of the start-up contract; returns the worker (state STARTING, parameters
/// announced) and the ready fd to write once it runs.
fn start<P: Processor>(
    processor: P,
    env: &StartEnv,
    options: &RunOptions,
    stop: &AtomicBool,
) -> Result<(Worker<P>, Option<std::os::fd::OwnedFd>), StartError> {
    sys::set_parent_death_kill()
        .map_err(|e| StartError::Sys(format!("prctl(PR_SET_PDEATHSIG) failed: {e}")))?;
    if let Some(expected) = env.parent_pid {
        let found = sys::parent_pid();
        if found != expected {
            return Err(StartError::ParentGone { expected, found });
        }
    }
    let region_fd = sys::take_inherited_fd(env.region_fd, true, false)
        .map_err(|e| StartError::Sys(format!("{}: {e}", sys::ENV_REGION_FD)))?;
    let ready_fd = env
        .ready_fd
        .map(|fd| sys::take_inherited_fd(fd, true, true))
        .transpose()
        .map_err(|e| StartError::Sys(format!("{}: {e}", sys::ENV_READY_FD)))?;
    if let Some(go) = env.go_fd {
        // A standby: everything up to here (exec, loading, the module built by the
        // caller) is done ahead of need; the region belongs to another worker until
        // the host has reset it for us and says go.
        let go = sys::take_inherited_fd(go, false, false)
            .map_err(|e| StartError::Sys(format!("{}: {e}", sys::ENV_GO_FD)))?;
        match sys::wait_go(go, stop) {
            Ok(sys::GoSignal::Go) => {}
            Ok(sys::GoSignal::Released) => return Err(StartError::Released("the go pipe closed")),
            Ok(sys::GoSignal::Stopped) => return Err(StartError::Released("stop signal")),
            Err(e) => return Err(StartError::Sys(format!("{}: {e}", sys::ENV_GO_FD))),
        }
    }
    let region = WorkerRegion::open(region_fd)?;
    if region.slot_name() != env.slot {
        return Err(StartError::WrongSlot {
            region: region.slot_name().to_string(),
            slot: env.slot.clone(),
            env: sys::ENV_SLOT,
        });
    }
    let worker = Worker::new(
        processor,
        region,
        env.sample_rate as f32,
        options.faults,
        options.host_timeout,
    )?;
    Ok((worker, ready_fd))
}

/// Sleeps `d` in slices; returns whether the stop flag was raised meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = MonoTime::now().saturating_add(d);
    loop {
        // Relaxed: a flag set by the signal handler; nothing else is published through it.
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = MonoTime::now();
        if now >= end {
            return false;
        }
        std::thread::sleep(end.saturating_duration_since(now).min(WAIT_SLICE));
    }
}

/// The grandchild of `--fault fork-child`: this executable with `--fault-grandchild`.
fn fork_grandchild() -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .arg("--fault-grandchild")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    // Dropping `Child` neither waits for nor kills it: it stays behind on purpose.
    Ok(child.id())
}

/// Body of the grandchild of `--fault fork-child`: sleeps until killed (at most ten
/// minutes, so that a forgotten one does not live forever).
pub fn grandchild_main() -> ExitCode {
    std::thread::sleep(Duration::from_secs(600));
    ExitCode::SUCCESS
}

/// One worker attached to its region: the processor instance, the worker end of the
/// rings, and the buffers of the loop (allocated here, never in the loop).
#[derive(Debug)]
pub struct Worker<P: Processor> {
    instance: Instance<P>,
    region: WorkerRegion,
    end: WorkerEnd,
    input: Vec<f32>,
    output: Vec<f32>,
    faults: FaultPlan,
    /// The trigger fired: per-block faults are active.
    triggered: bool,
    /// The doorbell as it was when the worker attached, before it reported ready: any
    /// ring or nudge after that, even one made before [`Worker::run`] starts, counts as
    /// the host's first (see the host watch in [`Worker::run`]).
    attach_bell: u32,
    /// Wakes the loop just before the next expected ring (off unless set).
    prewake: Prewake,
}

impl<P: Processor> Worker<P> {
    /// Attaches to `region`: writes the pid and state STARTING, prepares the processor for
    /// the region's layout at `sample_rate`, announces every parameter as `Event::Param`.
    /// If the event ring is full, waits up to `announce_timeout` for the host to drain it.
    pub fn new(
        processor: P,
        region: WorkerRegion,
        sample_rate: f32,
        faults: FaultPlan,
        announce_timeout: Duration,
    ) -> Result<Self, StartError> {
        for (index, p) in processor.params().iter().enumerate() {
            if p.id as usize != index {
                return Err(StartError::BadParamTable {
                    index,
                    name: p.name,
                    id: p.id,
                });
            }
        }
        let mut end = region.worker_end()?;
        end.bell.set_pid(sys::own_pid());
        end.bell.set_state(WorkerState::Starting);
        let layout = region.layout();
        let config = ProcessConfig {
            sample_rate,
            block_frames: layout.block_frames as usize,
            channels_in: layout.channels_in as usize,
            channels_out: layout.channels_out as usize,
        };
        let instance = Instance::new(processor, config);
        let deadline = MonoTime::now().saturating_add(announce_timeout);
        for p in instance.processor().params() {
            let event = Event::Param {
                id: p.id,
                default: p.default,
                name: ShortStr::new(p.name),
            };
            loop {
                match end.events.push(event) {
                    Ok(_) => break,
                    Err(PushError::Full) if MonoTime::now() < deadline => {
                        end.bell.beat();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(PushError::Full) => {
                        return Err(StartError::Sys(format!(
                            "the event ring stayed full for {:.1} s while announcing \
                             parameter `{}`: the host does not read events",
                            announce_timeout.as_secs_f64(),
                            p.name
                        )));
                    }
                    Err(PushError::Fault(f)) => return Err(f.into()),
                    Err(e @ PushError::WrongLength { .. }) => {
                        return Err(StartError::Sys(format!("event push: {e}")));
                    }
                }
            }
        }
        Ok(Self {
            attach_bell: end.bell.doorbell(),
            input: vec![0.0; config.input_samples()],
            output: vec![0.0; config.output_samples()],
            instance,
            region,
            end,
            faults,
            triggered: false,
            prewake: Prewake::new(Duration::ZERO),
        })
    }

    /// Sets the pre-wake window (`SLOTPOOL_PREWAKE_US`; zero, the default, is off): once
    /// the host rings at a steady period, the loop sleeps only until `window` before the
    /// next expected ring and then polls the doorbell until `window` after it, so the ring
    /// finds it awake (see [`crate::prewake`]). Costs up to two windows of CPU per period.
    pub fn set_prewake(&mut self, window: Duration) {
        self.prewake = Prewake::new(window);
    }

    /// Publishes state RUNNING.
    pub fn mark_running(&self) {
        self.end.bell.set_state(WorkerState::Running);
    }

    /// Publishes the final state for `outcome` (STOPPING, or FAULTED with a fault code).
    pub fn mark_finished(&self, outcome: &Outcome) {
        match outcome {
            Outcome::HostFault(_) => {
                self.end.bell.set_fault(fault_code::HOST_RING_FAULT);
                self.end.bell.set_state(WorkerState::Faulted);
            }
            _ => self.end.bell.set_state(WorkerState::Stopping),
        }
    }

    /// The processor instance (for inspection in tests and embedders).
    pub fn instance(&self) -> &Instance<P> {
        &self.instance
    }

    /// The process loop. Returns when `stop` is raised, a `Shutdown` command arrives, the
    /// host heartbeat stalls for `host_timeout`, or the host breaks the protocol. With
    /// `process == false` (the never-ready fault) it only beats and watches.
    ///
    /// Real-time safe: no allocation, lock or logging; the only blocking call is the
    /// doorbell wait, untimed once the host has rung or nudged (see [`WAIT_SLICE`]).
    ///
    /// `stop` is seen at the next ring or nudge: SIGTERM's handler (signal-hook, with
    /// `SA_RESTART`) does not end the untimed sleep, the kernel restarts it; the slotpool
    /// supervisor nudges right after it signals a worker, and every slot tick anyway.
    ///
    /// The host watch: when the loop wakes and the host heartbeat has not advanced for
    /// `host_timeout` while the host kept ringing or nudging, the host is gone
    /// ([`Outcome::HostGone`]). A host that stops ringing altogether is dead (the
    /// parent-death signal kills the worker) or stopped (SIGSTOP, a frozen cgroup): the
    /// worker then sleeps, costing nothing, until the host rings again. A sleep of
    /// `host_timeout` or longer restarts the watch, so a host that resumes after a long
    /// stop and rings before its next beat is not taken for gone.
    pub fn run(&mut self, stop: &AtomicBool, host_timeout: Duration, process: bool) -> Outcome {
        let mut watch = HostWatch {
            beat: self.end.bell.host_heartbeat(),
            since: MonoTime::now(),
            timeout: host_timeout,
            first_bell: Some(self.attach_bell),
        };
        loop {
            // Every iteration runs under the allocation guard (debug builds, with
            // `AllocDisabler` as global allocator): the loop itself never allocates; only
            // deliberate faults are let through with `permit_alloc`.
            let step =
                assert_no_alloc::assert_no_alloc(|| self.iteration(stop, process, &mut watch));
            if let Some(outcome) = step {
                return outcome;
            }
        }
    }

    /// One turn of the loop: commands, blocks, heartbeat, host watch, doorbell wait.
    fn iteration(
        &mut self,
        stop: &AtomicBool,
        process: bool,
        watch: &mut HostWatch,
    ) -> Option<Outcome> {
        // Read before draining: a ring after this read makes the wait below return at
        // once, so no block pushed after the drain is left sleeping.
        let seen = self.end.bell.doorbell();
        // Relaxed: a flag set by the signal handler; nothing is published through it.
        if stop.load(Ordering::Relaxed) {
            return Some(Outcome::Stopped);
        }
        let blocks_before = self.instance.blocks_processed();
        if process && let Some(outcome) = self.pump() {
            return Some(outcome);
        }
        // The host's own time of the ring, not this worker's wake-up: that is later by
        // its wake-up latency and by every worker that ran before it. A host that does
        // not write it gives no prediction.
        if self.instance.blocks_processed() != blocks_before
            && let Some(at) = self.end.bell.ring_time()
        {
            self.prewake.ring_seen(at);
        }
        self.end.bell.beat();
        let now = MonoTime::now();
        let beat = self.end.bell.host_heartbeat();
        if beat != watch.beat {
            watch.beat = beat;
            watch.since = now;
        } else {
            let still_for = now.saturating_duration_since(watch.since);
            if still_for >= watch.timeout {
                return Some(Outcome::HostGone { still_for });
            }
        }
        match watch.first_bell {
            // The host has not rung or nudged yet: a bounded wait, so that the watch
            // above still runs if it never does.
            Some(first) if seen == first => {
                self.end
                    .bell
                    .wait_doorbell(seen, now.saturating_add(WAIT_SLICE));
            }
            _ => {
                watch.first_bell = None;
                if let Some(plan) = self.prewake.plan(now) {
                    // Sleep until just before the expected ring (an earlier ring ends
                    // it), then poll for it: the ring finds this worker awake.
                    if plan.wake_at > now {
                        self.end.bell.wait_doorbell(seen, plan.wake_at);
                    }
                    if self.end.bell.poll_doorbell(seen, plan.poll_until) {
                        return None;
                    }
                    // It did not come: no plan until the rings are steady again.
                    self.prewake.forget();
                }
                // Interrupted (a handler without SA_RESTART) or Signalled: either way the
                // next iteration looks at the stop flag, the rings and the host.
                let _ = self.end.bell.wait_doorbell_untimed(seen);
                let woke = MonoTime::now();
                if woke.saturating_duration_since(now) >= watch.timeout {
                    // Nobody rang for a whole host timeout: the host was stopped, not
                    // gone (gone is the death signal's case). Judge it from now on.
                    watch.since = woke;
                }
            }
        }
        None
    }

    /// Applies pending commands, then processes every pending block, applying commands
    /// again between blocks. `Some` ends the loop.
    fn pump(&mut self) -> Option<Outcome> {
        if let Some(outcome) = self.apply_commands() {
            return Some(outcome);
        }
        loop {
            // Back-pressure: take a block only when its result has somewhere to go.
            match self.end.audio_out.free_slots() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(f) => return Some(Outcome::HostFault(f)),
            }
            let cycle = match self.end.audio_in.pop(&mut self.input) {
                Ok(Some(cycle)) => cycle,
                Ok(None) => return None,
                Err(f) => return Some(Outcome::HostFault(f)),
            };
            self.block_faults();
            let started = MonoTime::now();
            self.instance.process(cycle, &self.input, &mut self.output);
            let took = MonoTime::now().saturating_duration_since(started);
            self.end
                .bell
                .set_process_ns(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            if let (true, Some(us)) = (self.triggered, self.faults.slow_us) {
                std::thread::sleep(Duration::from_micros(u64::from(us)));
            }
            match self.end.audio_out.push(cycle, &self.output) {
                Ok(()) => {}
                Err(PushError::Fault(f)) => return Some(Outcome::HostFault(f)),
                // Room was checked above and only this thread produces: cannot happen;
                // if it did, the block is dropped and the host sees it late.
                Err(PushError::Full | PushError::WrongLength { .. }) => {}
            }
            // Beat before done: a host that saw the block also sees the beat.
            self.end.bell.beat();
            self.end.bell.signal_done();
            if let Some(outcome) = self.apply_commands() {
                return Some(outcome);
            }
        }
    }

    /// Before each block: fire the block-count trigger, then the per-block faults.
    fn block_faults(&mut self) {
        if self.faults.trigger.is_none() {
            return;
        }
        if let Some(Trigger::AfterBlocks(n)) = self.faults.trigger
            && !self.triggered
            && self.instance.blocks_processed() >= n
        {
            self.fire();
        }
        if self.triggered && self.faults.leak_fds {
            // A fault on purpose, so the allocation (the path) is allowed.
            assert_no_alloc::permit_alloc(|| {
                if let Ok(f) = std::fs::File::open("/dev/null") {
                    use std::os::fd::IntoRawFd;
                    // Leaked on purpose: the fd stays open until the process exits.
                    let _leaked = f.into_raw_fd();
                }
            });
        }
    }

    /// The trigger fires: commit the sudden fault, arm the per-block ones.
    fn fire(&mut self) {
        self.triggered = true;
        // Faults on purpose may allocate (exit handlers, say).
        assert_no_alloc::permit_alloc(|| self.commit_sudden());
    }

    fn commit_sudden(&self) {
        match self.faults.sudden {
            None => {}
            Some(Sudden::Segv) => {
                // Resets SIGSEGV to its default action and raises it: death by SIGSEGV.
                let _ =
                    signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGSEGV);
                std::process::abort();
            }
            Some(Sudden::Abort) => std::process::abort(),
            Some(Sudden::Exit(n)) => std::process::exit(i32::from(n)),
            Some(Sudden::Hang) => loop {
                std::hint::spin_loop();
            },
            Some(Sudden::Stop) => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            }
            Some(Sudden::Scribble) => {
                self.region.scribble(u64::from(sys::own_pid()));
            }
            Some(Sudden::ScribbleStop) => {
                self.region.scribble(u64::from(sys::own_pid()));
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            }
        }
    }

    /// Pops and applies commands while there is room to answer them. `Some` ends the loop.
    fn apply_commands(&mut self) -> Option<Outcome> {
        loop {
            // Back-pressure: only take a command when its answer fits.
            match self.end.events.free_slots() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(f) => return Some(Outcome::HostFault(f)),
            }
            let (seq, command) = match self.end.commands.pop() {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                Err(RecordError::Fault(f)) => return Some(Outcome::HostFault(f)),
                Err(RecordError::Decode(e)) => {
                    self.answer(Event::Error {
                        seq: decode_seq(&e),
                        code: error_code::BAD_RECORD,
                        message: ShortStr::new(format_decode(&e)),
                    });
                    continue;
                }
            };
            let answer = match command {
                Command::SetParam { id, value } => match self.instance.set_param(id, value) {
                    Ok(_) => Event::Ack { seq },
                    Err(ParamError::UnknownId(_)) => Event::Error {
                        seq,
                        code: error_code::UNKNOWN_PARAM,
                        message: ShortStr::new("unknown parameter id"),
                    },
                    Err(ParamError::NotFinite) => Event::Error {
                        seq,
                        code: error_code::BAD_VALUE,
                        message: ShortStr::new("value is not finite"),
                    },
                },
                Command::Reset => {
                    self.instance.reset();
                    Event::Ack { seq }
                }
                Command::Bypass { on } => {
                    self.instance.set_bypass(on);
                    Event::Ack { seq }
                }
                Command::Ping { token } => {
                    if self.faults.trigger == Some(Trigger::OnPing(token)) && !self.triggered {
                        self.fire();
                    }
                    Event::Ack { seq }
                }
                Command::Shutdown => {
                    self.answer(Event::Ack { seq });
                    return Some(Outcome::Shutdown { seq });
                }
            };
            self.answer(answer);
        }
    }

    fn answer(&mut self, event: Event) {
        // Room was checked before the command was taken; a fault surfaces on the next
        // free_slots() call.
        let _ = self.end.events.push(event);
    }
}

/// The host heartbeat as last seen, for the "host is gone" verdict.
#[derive(Debug)]
struct HostWatch {
    beat: u64,
    since: MonoTime,
    timeout: Duration,
    /// The doorbell as it was when the worker attached, until the host rings or nudges
    /// (then `None`, and the loop's waits are untimed).
    first_bell: Option<u32>,
}

/// A short description of a decode error for `Event::Error` (no allocation: static text).
fn format_decode(e: &slotpool_ring::DecodeError) -> &'static str {
    use slotpool_ring::DecodeError as D;
    match e {
        D::UnknownKind { .. } => "unknown command kind",
        D::Version { .. } => "unknown record version",
        D::Seq { .. } => "record seq out of order",
        D::BadField { .. } => "invalid command field",
    }
}

/// The seq the undecodable record should have carried (its ring position + 1).
fn decode_seq(e: &slotpool_ring::DecodeError) -> u64 {
    use slotpool_ring::DecodeError as D;
    match *e {
        D::UnknownKind { pos, .. }
        | D::Version { pos, .. }
        | D::Seq { pos, .. }
        | D::BadField { pos, .. } => pos.wrapping_add(1),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use slotpool_ring::{HostRegion, RingId, SlotLayout};

    use super::*;
    use crate::modules::ModuleSpec;
    use crate::processor::{AudioIn, AudioOut, ParamSpec, ProcessContext};

    fn layout() -> SlotLayout {
        SlotLayout {
            channels_in: 1,
            channels_out: 1,
            block_frames: 8,
            audio_capacity: 4,
            command_capacity: 8,
            event_capacity: 16,
        }
    }

    fn gain_worker(region: &HostRegion<slotpool_ring::Heap>) -> Worker<Box<dyn Processor>> {
        let processor = ModuleSpec::new("gain").unwrap().build().unwrap();
        let worker_region = region.open_worker().unwrap();
        Worker::new(
            processor,
            worker_region,
            48_000.0,
            FaultPlan::default(),
            WAIT_SLICE,
        )
        .unwrap()
    }

    /// Runs the loop on a thread until it returns; the host side stays with the caller.
    fn spawn_loop(
        mut worker: Worker<Box<dyn Processor>>,
        timeout: Duration,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<Outcome>) {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        (
            stop,
            std::thread::spawn(move || worker.run(&s, timeout, true)),
        )
    }

    /// Raises the stop flag and nudges the doorbell, as the supervisor does after it
    /// signals a worker: the loop sees the flag at the next ring or nudge.
    fn stop_loop(
        stop: &AtomicBool,
        region: &HostRegion<slotpool_ring::Heap>,
        thread: std::thread::JoinHandle<Outcome>,
    ) -> Outcome {
        stop.store(true, Ordering::Relaxed);
        region.monitor().nudge();
        thread.join().unwrap()
    }

    /// Polls `cond` every millisecond; panics (naming `what`) after 10 s.
    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let end = MonoTime::now().saturating_add(Duration::from_secs(10));
        while !cond() {
            assert!(MonoTime::now() < end, "never happened: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts a loop and takes it past the host's first nudge (from then on its waits are
    /// untimed), beating the host heartbeat meanwhile so its watch stays satisfied.
    fn idle_loop(
        region: &HostRegion<slotpool_ring::Heap>,
        timeout: Duration,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<Outcome>) {
        let mon = region.monitor();
        let (stop, thread) = spawn_loop(gain_worker(region), timeout);
        wait_until("the loop beats", || {
            mon.beat_host();
            mon.worker_heartbeat() > 0
        });
        let beat = mon.worker_heartbeat();
        mon.beat_host();
        mon.nudge();
        wait_until("the loop answers the first nudge", || {
            mon.worker_heartbeat() > beat
        });
        (stop, thread)
    }

    fn answer(host: &mut slotpool_ring::HostEnd, seq: u64) -> Event {
        let end = MonoTime::now().saturating_add(Duration::from_secs(10));
        loop {
            match host.events.pop().unwrap() {
                Some((_, e @ (Event::Ack { seq: s } | Event::Error { seq: s, .. })))
                    if s == seq =>
                {
                    return e;
                }
                Some(_) => {}
                None => {
                    assert!(MonoTime::now() < end, "no answer for seq {seq}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    #[test]
    fn announces_params_in_id_order_and_stays_starting() {
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mut host = region.host_end().unwrap();
        let processor = ModuleSpec::new("delay").unwrap().build().unwrap();
        let _worker = Worker::new(
            processor,
            region.open_worker().unwrap(),
            48_000.0,
            FaultPlan::default(),
            WAIT_SLICE,
        )
        .unwrap();
        let mut names = Vec::new();
        while let Some((_, e)) = host.events.pop().unwrap() {
            let Event::Param { id, name, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(id as usize, names.len());
            names.push(name.as_str().to_string());
        }
        assert_eq!(names, ["time", "feedback", "mix"]);
        assert_eq!(region.monitor().worker_state(), WorkerState::Starting);
        assert_eq!(region.monitor().worker_pid(), std::process::id());
    }

    #[test]
    fn refuses_a_param_table_whose_ids_are_not_indices() {
        #[derive(Debug)]
        struct Bad;
        const P: &[ParamSpec] = &[ParamSpec::continuous(3, "x", "", 0.0, 1.0, 0.0)];
        impl Processor for Bad {
            fn params(&self) -> &[ParamSpec] {
                P
            }
            fn prepare(&mut self, _: &ProcessConfig) {}
            fn process(&mut self, _: &AudioIn<'_>, _: &mut AudioOut<'_>, _: &ProcessContext) {}
            fn set_param(&mut self, _: u32, _: f32) {}
            fn reset(&mut self) {}
        }
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let e = Worker::new(
            Bad,
            region.open_worker().unwrap(),
            48_000.0,
            FaultPlan::default(),
            WAIT_SLICE,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has id 3"), "{e}");
    }

    #[test]
    fn a_malformed_command_is_answered_with_an_error_and_skipped() {
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mut host = region.host_end().unwrap();
        let worker = gain_worker(&region);
        // A valid record, then its kind overwritten with one no ABI version has.
        let seq = host.commands.push(Command::Reset).unwrap();
        let peer = region.peer_access();
        let slots = peer
            .slot_ranges()
            .into_iter()
            .find(|(id, _)| *id == RingId::Commands)
            .unwrap()
            .1;
        peer.write_bytes(slots.start, &0xBEEF_u16.to_le_bytes());
        let next = host.commands.push(Command::Ping { token: 5 }).unwrap();
        region.monitor().beat_host();
        let (stop, thread) = spawn_loop(worker, Duration::from_secs(30));
        host.bell.ring(0);
        match answer(&mut host, seq) {
            Event::Error { code, message, .. } => {
                assert_eq!(code, error_code::BAD_RECORD);
                assert_eq!(message.as_str(), "unknown command kind");
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            answer(&mut host, next),
            Event::Ack { seq: next },
            "the next command still works"
        );
        assert_eq!(stop_loop(&stop, &region, thread), Outcome::Stopped);
    }

    #[test]
    fn a_non_finite_value_is_refused_by_seq_and_later_commands_apply() {
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mut host = region.host_end().unwrap();
        let (stop, thread) = spawn_loop(gain_worker(&region), Duration::from_secs(30));
        let seq = host
            .commands
            .push(Command::SetParam {
                id: 0,
                value: f32::NAN,
            })
            .unwrap();
        let ok = host
            .commands
            .push(Command::SetParam { id: 0, value: -6.0 })
            .unwrap();
        host.bell.ring(0);
        // The ring's decoder refuses the NaN before the processor could see it.
        let refused = answer(&mut host, seq);
        assert!(
            matches!(
                refused,
                Event::Error {
                    code: error_code::BAD_RECORD,
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(answer(&mut host, ok), Event::Ack { seq: ok });
        assert_eq!(stop_loop(&stop, &region, thread), Outcome::Stopped);
    }

    #[test]
    fn an_idle_loop_sleeps_until_a_nudge_or_ring_and_then_beats_and_sees_its_stop_flag() {
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mut host = region.host_end().unwrap();
        let mon = region.monitor();
        let (stop, thread) = idle_loop(&region, Duration::from_secs(30));
        // Untimed from the first nudge on: with nothing rung, the heartbeat stands still
        // (a 100 ms look without a beat; the loop may need one more turn to fall asleep).
        let mut still = false;
        for _ in 0..50 {
            let before = mon.worker_heartbeat();
            std::thread::sleep(Duration::from_millis(100));
            if mon.worker_heartbeat() == before {
                still = true;
                break;
            }
        }
        assert!(still, "an idle loop kept beating without rings or nudges");
        // Each nudge wakes it for one turn: a beat.
        for _ in 0..3 {
            let before = mon.worker_heartbeat();
            mon.beat_host();
            mon.nudge();
            wait_until("a nudge brings a beat", || mon.worker_heartbeat() > before);
        }
        // A command pushed with a ring is answered.
        let seq = host.commands.push(Command::Ping { token: 1 }).unwrap();
        host.bell.ring(0);
        assert_eq!(answer(&mut host, seq), Event::Ack { seq });
        // The stop flag alone does not end the sleep (SIGTERM's handler restarts it);
        // the next nudge does.
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!thread.is_finished(), "woke without a ring or nudge");
        mon.nudge();
        assert_eq!(thread.join().unwrap(), Outcome::Stopped);
    }

    #[test]
    fn a_host_that_stopped_ringing_is_waited_for_but_one_that_rings_without_beating_is_gone() {
        let timeout = Duration::from_millis(200);
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mon = region.monitor();
        let (_stop, thread) = idle_loop(&region, timeout);
        // The host stops entirely (SIGSTOP, say) for more than the host timeout: the
        // loop sleeps and judges nothing.
        std::thread::sleep(timeout * 3);
        assert!(!thread.is_finished(), "a silent host was taken for gone");
        // It resumes and rings before it beats (the audio thread rings first): the long
        // sleep restarted the watch, so that is not a stalled heartbeat. Two nudges, two
        // turns: the second beat proves the first turn judged the host alive.
        let beat = mon.worker_heartbeat();
        for n in 1..=2 {
            mon.nudge();
            wait_until("a nudge brings a beat", || {
                mon.worker_heartbeat() >= beat + n || thread.is_finished()
            });
        }
        assert!(!thread.is_finished(), "a resumed host was taken for gone");
        // But a host that keeps ringing while its heartbeat stands still is gone.
        wait_until("the loop ends", || {
            mon.nudge();
            thread.is_finished()
        });
        match thread.join().unwrap() {
            Outcome::HostGone { still_for } => assert!(still_for >= timeout, "{still_for:?}"),
            o => panic!("{o:?}"),
        }
    }

    /// The host rings right after the worker reports ready, and then stops (SIGSTOP) before
    /// the loop has even started: that ring still counts as the first, so the loop sleeps
    /// untimed instead of judging a stopped host gone. (Reading the first doorbell when
    /// the loop starts, rather than when the worker attaches, made a worker exit 3 here.)
    #[test]
    fn a_ring_between_ready_and_the_loop_start_counts_as_the_hosts_first() {
        let timeout = Duration::from_millis(200);
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let mut host = region.host_end().unwrap();
        let worker = gain_worker(&region);
        host.audio_in.push(1, &[0.5; 8]).unwrap();
        host.bell.ring(1);
        let (stop, thread) = spawn_loop(worker, timeout);
        let mut out = [0.0; 8];
        let deadline = MonoTime::now().saturating_add(Duration::from_secs(10));
        assert_eq!(
            host.wait_output(1, &mut out, deadline).unwrap(),
            slotpool_ring::OutputStatus::Ready
        );
        // The host stands still for three host timeouts: no beat, no ring, no nudge.
        std::thread::sleep(timeout * 3);
        assert!(!thread.is_finished(), "a stopped host was taken for gone");
        assert_eq!(stop_loop(&stop, &region, thread), Outcome::Stopped);
    }

    #[test]
    fn loop_ends_when_the_host_heartbeat_stands_still() {
        let region = HostRegion::create_heap("t:0", layout()).unwrap();
        let (_stop, thread) = spawn_loop(gain_worker(&region), Duration::from_millis(60));
        match thread.join().unwrap() {
            Outcome::HostGone { still_for } => assert!(still_for >= Duration::from_millis(60)),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn outcomes_map_to_the_documented_exit_statuses() {
        assert_eq!(Outcome::Stopped.exit_status(), 0);
        assert_eq!(Outcome::Shutdown { seq: 1 }.exit_status(), 0);
        assert_eq!(
            Outcome::HostGone {
                still_for: Duration::ZERO
            }
            .exit_status(),
            3
        );
    }
}
