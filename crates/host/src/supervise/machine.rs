//! The per-instance state machine: supervisord's states and timing, plus slotpool's
//! crash-loop breaker, FATAL re-probe and hang handling.
//!
//! [`Machine::step`] is a pure function of (state, event, time): it reads no clock, makes
//! no syscall and touches nothing outside the machine. It returns the [`Action`]s the driver
//! must carry out (spawn, signal, kill the group) and the state transitions it made. The
//! driver feeds back what happened ([`Event::Spawned`], [`Event::Exited`] …) and calls
//! [`Event::Tick`] when [`Machine::deadline`] has passed.
//!
//! ```text
//!            Start                 Spawned, startsecs pass
//! STOPPED ─────────> STARTING ─────────────────────────────> RUNNING
//!   ^  ^               │  ^ backoff wait (1 s, 2 s, 3 s …)     │  │
//!   │  │ exit          │  │                                    │  │ exit
//!   │  │      too early│  │                   Stop             │  v
//!   │  └─ STOPPING <───┼──┼────────────────────────────────────┘ EXITED ──> STARTING (autorestart)
//!   │     (stopsignal, v  │                                         │
//!   │     SIGKILL to  BACKOFF ──> FATAL (after startretries;   crash-loop breaker
//!   │     the group       │         re-probed if fatal_retry)      v
//!   └──── Stop ───────────┘                                      FATAL
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{AutoRestart, ProgramConfig};

/// supervisord's process states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Not running and not wanted (initial state, or stopped by request).
    Stopped,
    /// Spawn requested or done; waiting for `startsecs` to pass.
    Starting,
    /// Up for at least `startsecs`.
    Running,
    /// Exited too quickly (or failed to spawn); waiting before the next attempt.
    Backoff,
    /// Stop signal sent; waiting for the exit (SIGKILL to the group after `stopwaitsecs`).
    Stopping,
    /// Exited from RUNNING and not restarted (autorestart said no).
    Exited,
    /// Given up: too many failed starts, or the crash-loop breaker tripped.
    Fatal,
}

impl State {
    /// All states, for exhaustive tests and docs.
    pub const ALL: [State; 7] = [
        State::Stopped,
        State::Starting,
        State::Running,
        State::Backoff,
        State::Stopping,
        State::Exited,
        State::Fatal,
    ];

    /// supervisord's name (`"RUNNING"`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }

    /// Whether the instance is wanted up (supervisord's RUNNING_STATES).
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Backoff)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a reaped child ended, as waitid reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

/// Why an instance's last process ended, as status reports it: exit, crash, hang and
/// quarantine are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Cause {
    /// Exit code listed in `exitcodes`.
    ExpectedExit {
        /// The code.
        code: i32,
    },
    /// Exit code not listed in `exitcodes`.
    UnexpectedExit {
        /// The code.
        code: i32,
    },
    /// Killed by a signal the supervisor did not send to stop it.
    Crash {
        /// The signal.
        signal: i32,
    },
    /// Killed by the hang watchdog.
    Hang,
    /// Killed because its slot was quarantined: the worker broke its region's rings.
    Quarantined,
    /// Ended because the supervisor stopped it.
    Stopped {
        /// How it ended.
        exit: Exit,
    },
}

impl Cause {
    /// Whether this end counts as unexpected for `autorestart = "unexpected"` and the breaker.
    pub fn is_unexpected(self) -> bool {
        matches!(
            self,
            Cause::UnexpectedExit { .. } | Cause::Crash { .. } | Cause::Hang | Cause::Quarantined
        )
    }
}

/// Why the instance is in its current state (for status descriptions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Reason {
    /// Nothing special.
    None,
    /// The process exited before `startsecs` passed.
    ExitedTooQuickly,
    /// The spawn itself failed (the driver keeps the OS error).
    SpawnFailed,
    /// `startretries` used up.
    TooManyRetries,
    /// The crash-loop breaker tripped: `exits` unexpected exits within `window_s`.
    CrashLoop {
        /// Unexpected exits counted.
        exits: u32,
        /// The window in seconds.
        window_s: u64,
    },
}

/// What happened, as the driver tells the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Operator `start` or autostart.
    Start,
    /// Operator `stop` (also shutdown and removal on reload).
    Stop,
    /// Operator `restart`: stop if up, then start.
    Restart,
    /// The spawn the machine asked for succeeded; the child is live from now on.
    Spawned,
    /// The spawn the machine asked for failed (no such file, EACCES, EMFILE …).
    SpawnFailed,
    /// The child was reaped.
    Exited(Exit),
    /// The hang watchdog saw the worker heartbeat stand still for `hang_timeout`.
    Hung,
    /// The engine quarantined the slot: the worker wrote garbage into its region.
    Quarantined,
    /// Time passed; deadlines up to `now` are due.
    Tick,
}

/// What the driver must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Spawn a child (answer with [`Event::Spawned`] or [`Event::SpawnFailed`]).
    Spawn,
    /// Send this signal to the child (pidfd_send_signal).
    Signal(i32),
    /// SIGKILL the child's whole process group.
    KillGroup,
}

/// One state change made by a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Old state.
    pub from: State,
    /// New state.
    pub to: State,
}

/// The result of one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// To carry out, in order.
    pub actions: Vec<Action>,
    /// State changes made, in order (a step may pass through a state, e.g. BACKOFF → FATAL).
    pub transitions: Vec<Transition>,
}

/// The program settings the machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `startsecs`.
    pub startsecs: Duration,
    /// `startretries`.
    pub startretries: u32,
    /// `autorestart`.
    pub autorestart: AutoRestart,
    /// `exitcodes`.
    pub exitcodes: Vec<i32>,
    /// `stopsignal`.
    pub stopsignal: i32,
    /// `stopwaitsecs`.
    pub stopwaitsecs: Duration,
    /// Crash-loop breaker: unexpected exits after RUNNING …
    pub crashloop_exits: u32,
    /// … within this window → FATAL.
    pub crashloop_window: Duration,
    /// First FATAL re-probe interval, doubled after each failed probe.
    pub fatal_retry: Option<Duration>,
}

/// The longest FATAL re-probe interval.
pub const MAX_FATAL_RETRY: Duration = Duration::from_secs(3600);

impl Policy {
    /// The policy of `p`.
    pub fn of(p: &ProgramConfig) -> Policy {
        Policy {
            startsecs: p.startsecs,
            startretries: p.startretries,
            autorestart: p.autorestart,
            exitcodes: p.exitcodes.clone(),
            stopsignal: p.stopsignal,
            stopwaitsecs: p.stopwaitsecs,
            crashloop_exits: p.crashloop_exits,
            crashloop_window: p.crashloop_window,
            fatal_retry: p.fatal_retry,
        }
    }
}

/// Where the instance's child is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildPhase {
    /// No child.
    None,
    /// A spawn was asked for and not yet answered (the driver may be holding it for the
    /// global spawn-rate cap).
    Pending,
    /// A live (unreaped) child, spawned at `since`.
    Live {
        /// When it was spawned.
        since: Instant,
    },
}

/// Counters for status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Children spawned.
    pub spawns: u64,
    /// Spawns after the first one (every restart, automatic or asked for).
    pub restarts: u64,
    /// Ends by a signal the supervisor did not send.
    pub crashes: u64,
    /// Ends by the hang watchdog.
    pub hangs: u64,
    /// Ends by a quarantine kill (the worker broke its rings).
    pub quarantines: u64,
}

/// Why the host itself killed a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostKill {
    Hang,
    Quarantine,
}

/// One instance's supervision state. See the module docs.
#[derive(Clone, Debug)]
pub struct Machine {
    policy: Policy,
    state: State,
    child: ChildPhase,
    /// Failed starts in a row (supervisord's `backoff`).
    backoff: u32,
    /// When the next time-based transition is due.
    deadline: Option<Instant>,
    /// A restart was asked for while stopping: start once the child is reaped.
    start_after_stop: bool,
    /// SIGKILL to the group was sent for the current child.
    kill_sent: bool,
    /// The host killed the current child (hang watchdog or quarantine), and why.
    host_kill: Option<HostKill>,
    /// Times of recent unexpected exits after RUNNING (the breaker's window).
    recent_unexpected: VecDeque<Instant>,
    /// The current FATAL re-probe interval, if re-probing.
    probe_interval: Option<Duration>,
    /// Set while the current start attempt is a FATAL re-probe.
    probing: bool,
    reason: Reason,
    last_cause: Option<Cause>,
    since: Option<Instant>,
    counters: Counters,
}

impl Machine {
    /// A STOPPED machine with `policy`.
    pub fn new(policy: Policy) -> Machine {
        Machine {
            policy,
            state: State::Stopped,
            child: ChildPhase::None,
            backoff: 0,
            deadline: None,
            start_after_stop: false,
            kill_sent: false,
            host_kill: None,
            recent_unexpected: VecDeque::new(),
            probe_interval: None,
            probing: false,
            reason: Reason::None,
            last_cause: None,
            since: None,
            counters: Counters::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// The child's phase.
    pub fn child(&self) -> ChildPhase {
        self.child
    }
    /// Whether a spawn was asked for and not yet answered.
    pub fn wants_spawn(&self) -> bool {
        self.child == ChildPhase::Pending
    }
    /// When [`Event::Tick`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    /// Why the machine is in its state.
    pub fn reason(&self) -> Reason {
        self.reason
    }
    /// How the last child ended.
    pub fn last_cause(&self) -> Option<Cause> {
        self.last_cause
    }
    /// When the current child was spawned.
    pub fn child_since(&self) -> Option<Instant> {
        match self.child {
            ChildPhase::Live { since } => Some(since),
            _ => None,
        }
    }
    /// When the current state was entered (None before the first transition).
    pub fn state_since(&self) -> Option<Instant> {
        self.since
    }
    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// Failed starts in a row.
    pub fn backoff(&self) -> u32 {
        self.backoff
    }
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Whether the hang watchdog should watch this instance now.
    pub fn watch_for_hang(&self) -> bool {
        matches!(self.child, ChildPhase::Live { .. })
            && matches!(self.state, State::Starting | State::Running)
            && self.host_kill.is_none()
    }

    /// Advances the machine by one event at time `now`. Pure: see the module docs.
    pub fn step(&mut self, event: Event, now: Instant) -> Output {
        let mut out = Output::default();
        match event {
            Event::Start => self.on_start(now, &mut out),
            Event::Stop => self.on_stop(now, &mut out),
            Event::Restart => self.on_restart(now, &mut out),
            Event::Spawned => self.on_spawned(now, &mut out),
            Event::SpawnFailed => self.on_spawn_failed(now, &mut out),
            Event::Exited(exit) => self.on_exit(exit, now, &mut out),
            Event::Hung => self.on_host_kill(HostKill::Hang, &mut out),
            Event::Quarantined => self.on_host_kill(HostKill::Quarantine, &mut out),
            Event::Tick => self.on_tick(now, &mut out),
        }
        out
    }

    fn go(&mut self, to: State, now: Instant, out: &mut Output) {
        out.transitions.push(Transition {
            from: self.state,
            to,
        });
        self.state = to;
        self.since = Some(now);
    }

    /// Enter STARTING and ask for a spawn. Only called with no child.
    fn begin_start(&mut self, now: Instant, out: &mut Output) {
        debug_assert_eq!(
            self.child,
            ChildPhase::None,
            "at most one child per instance"
        );
        self.child = ChildPhase::Pending;
        self.deadline = None;
        self.reason = Reason::None;
        self.go(State::Starting, now, out);
        out.actions.push(Action::Spawn);
    }

    /// An operator start: a fresh series of attempts.
    fn fresh_start(&mut self, now: Instant, out: &mut Output) {
        self.backoff = 0;
        self.probing = false;
        self.probe_interval = None;
        self.recent_unexpected.clear();
        self.begin_start(now, out);
    }

    fn on_start(&mut self, now: Instant, out: &mut Output) {
        match self.state {
            State::Stopped | State::Exited | State::Fatal => self.fresh_start(now, out),
            // Already started (supervisord's RUNNING_STATES).
            State::Starting | State::Running | State::Backoff => {}
            // Start once the stop is through.
            State::Stopping => self.start_after_stop = true,
        }
    }

    fn on_stop(&mut self, now: Instant, out: &mut Output) {
        self.start_after_stop = false;
        match (self.state, self.child) {
            (State::Starting | State::Running, ChildPhase::Live { .. }) => {
                self.go(State::Stopping, now, out);
                if self.host_kill.is_some() {
                    // The hang watchdog or a quarantine already sent SIGKILL to the
                    // group; wait for the exit.
                    self.kill_sent = true;
                    self.deadline = None;
                } else {
                    out.actions.push(Action::Signal(self.policy.stopsignal));
                    self.kill_sent = false;
                    self.deadline = Some(now + self.policy.stopwaitsecs);
                    if self.policy.stopwaitsecs.is_zero() {
                        self.escalate(out);
                    }
                }
            }
            (State::Starting, _) => {
                // The spawn was not carried out yet: drop it.
                self.child = ChildPhase::None;
                self.deadline = None;
                self.go(State::Stopped, now, out);
            }
            (State::Backoff | State::Fatal, _) => {
                self.deadline = None;
                self.probe_interval = None;
                self.probing = false;
                self.go(State::Stopped, now, out);
            }
            (State::Stopped | State::Stopping | State::Exited | State::Running, _) => {}
        }
    }

    fn escalate(&mut self, out: &mut Output) {
        out.actions.push(Action::KillGroup);
        self.kill_sent = true;
        self.deadline = None;
    }

    fn on_restart(&mut self, now: Instant, out: &mut Output) {
        match (self.state, self.child) {
            (State::Starting | State::Running, ChildPhase::Live { .. }) => {
                self.on_stop(now, out);
                self.start_after_stop = true;
            }
            (State::Starting, _) => {}
            (State::Stopping, _) => self.start_after_stop = true,
            (State::Backoff, _) => {
                self.on_stop(now, out);
                self.fresh_start(now, out);
            }
            (State::Stopped | State::Exited | State::Fatal | State::Running, _) => {
                self.on_start(now, out)
            }
        }
    }

    fn on_spawned(&mut self, now: Instant, out: &mut Output) {
        if self.state != State::Starting || self.child != ChildPhase::Pending {
            return;
        }
        self.child = ChildPhase::Live { since: now };
        self.kill_sent = false;
        self.host_kill = None;
        if self.counters.spawns > 0 {
            self.counters.restarts += 1;
        }
        self.counters.spawns += 1;
        self.deadline = Some(now + self.policy.startsecs);
        if self.policy.startsecs.is_zero() {
            self.become_running(now, out);
        }
    }

    fn become_running(&mut self, now: Instant, out: &mut Output) {
        self.backoff = 0;
        self.deadline = None;
        self.probing = false;
        self.probe_interval = None;
        self.go(State::Running, now, out);
    }

    fn on_spawn_failed(&mut self, now: Instant, out: &mut Output) {
        if self.state != State::Starting || self.child != ChildPhase::Pending {
            return;
        }
        self.child = ChildPhase::None;
        self.enter_backoff(now, Reason::SpawnFailed, out);
    }

    fn enter_backoff(&mut self, now: Instant, reason: Reason, out: &mut Output) {
        self.backoff += 1;
        self.reason = reason;
        self.go(State::Backoff, now, out);
        if self.backoff > self.policy.startretries {
            self.reason = Reason::TooManyRetries;
            self.enter_fatal(now, out);
        } else {
            self.deadline = Some(now + Duration::from_secs(u64::from(self.backoff)));
        }
    }

    fn enter_fatal(&mut self, now: Instant, out: &mut Output) {
        self.go(State::Fatal, now, out);
        self.deadline = None;
        if let Some(first) = self.policy.fatal_retry {
            let interval = match (self.probing, self.probe_interval) {
                (true, Some(prev)) => (prev * 2).min(MAX_FATAL_RETRY),
                _ => first.min(MAX_FATAL_RETRY),
            };
            self.probe_interval = Some(interval);
            self.deadline = Some(now + interval);
        }
        self.probing = false;
    }

    fn on_exit(&mut self, exit: Exit, now: Instant, out: &mut Output) {
        let ChildPhase::Live { since } = self.child else {
            return;
        };
        self.child = ChildPhase::None;
        let host_kill = self.host_kill.take();
        self.kill_sent = false;
        let cause = if self.state == State::Stopping {
            Cause::Stopped { exit }
        } else if let Some(k) = host_kill {
            match k {
                HostKill::Hang => Cause::Hang,
                HostKill::Quarantine => Cause::Quarantined,
            }
        } else {
            match exit {
                Exit::Signal(signal) => Cause::Crash { signal },
                Exit::Code(code) if self.policy.exitcodes.contains(&code) => {
                    Cause::ExpectedExit { code }
                }
                Exit::Code(code) => Cause::UnexpectedExit { code },
            }
        };
        // A hang or quarantine kill counts as one even when a stop came between the
        // kill and the exit (the cause then says "stopped": what the operator asked for).
        match host_kill {
            Some(HostKill::Hang) => self.counters.hangs += 1,
            Some(HostKill::Quarantine) => self.counters.quarantines += 1,
            None if matches!(cause, Cause::Crash { .. }) => self.counters.crashes += 1,
            None => {}
        }
        self.last_cause = Some(cause);
        match self.state {
            State::Stopping => {
                self.deadline = None;
                self.go(State::Stopped, now, out);
                if std::mem::take(&mut self.start_after_stop) {
                    self.fresh_start(now, out);
                }
            }
            State::Starting if now.saturating_duration_since(since) < self.policy.startsecs => {
                self.enter_backoff(now, Reason::ExitedTooQuickly, out);
            }
            State::Starting | State::Running => {
                if self.state == State::Starting {
                    // startsecs had passed but the tick that says so had not come yet.
                    self.become_running(now, out);
                }
                self.exited_from_running(cause, now, out);
            }
            // A live child exists only in STARTING, RUNNING and STOPPING.
            State::Stopped | State::Backoff | State::Exited | State::Fatal => {}
        }
    }

    fn exited_from_running(&mut self, cause: Cause, now: Instant, out: &mut Output) {
        self.deadline = None;
        self.go(State::Exited, now, out);
        if cause.is_unexpected() {
            let window = self.policy.crashloop_window;
            self.recent_unexpected.push_back(now);
            while let Some(&t) = self.recent_unexpected.front() {
                if now.saturating_duration_since(t) >= window {
                    self.recent_unexpected.pop_front();
                } else {
                    break;
                }
            }
            let exits = self.recent_unexpected.len() as u32;
            if exits >= self.policy.crashloop_exits {
                self.reason = Reason::CrashLoop {
                    exits,
                    window_s: window.as_secs(),
                };
                self.recent_unexpected.clear();
                self.enter_fatal(now, out);
                return;
            }
        }
        let restart = match self.policy.autorestart {
            AutoRestart::Always => true,
            AutoRestart::Unexpected => cause.is_unexpected(),
            AutoRestart::Never => false,
        };
        if restart {
            self.begin_start(now, out);
        }
    }

    /// The hang watchdog or a quarantine: SIGKILL to the group, once per child, while
    /// it is starting or running (a stop in progress keeps its own course).
    fn on_host_kill(&mut self, why: HostKill, out: &mut Output) {
        if self.watch_for_hang() {
            self.host_kill = Some(why);
            self.kill_sent = true;
            out.actions.push(Action::KillGroup);
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Output) {
        let Some(due) = self.deadline else { return };
        if now < due {
            return;
        }
        match (self.state, self.child) {
            (State::Starting, ChildPhase::Live { .. }) => self.become_running(now, out),
            (State::Backoff, _) => self.begin_start(now, out),
            (State::Stopping, ChildPhase::Live { .. }) if !self.kill_sent => self.escalate(out),
            (State::Fatal, _) if self.probe_interval.is_some() => {
                // Re-probe: one attempt; if it fails, FATAL again with a doubled interval.
                self.backoff = self.policy.startretries;
                self.probing = true;
                self.begin_start(now, out);
            }
            _ => self.deadline = None,
        }
    }
}

#[cfg(test)]
mod tests;
