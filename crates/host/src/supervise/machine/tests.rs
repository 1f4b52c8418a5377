use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

const TERM: i32 = libc::SIGTERM;
const SEGV: i32 = libc::SIGSEGV;

fn policy() -> Policy {
    Policy {
        startsecs: Duration::from_secs(1),
        startretries: 3,
        autorestart: AutoRestart::Unexpected,
        exitcodes: vec![0],
        stopsignal: TERM,
        stopwaitsecs: Duration::from_secs(10),
        crashloop_exits: 10,
        crashloop_window: Duration::from_secs(60),
        fatal_retry: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A fake clock: a fixed base plus offsets.
struct Clock(Instant);
impl Clock {
    fn at(&self, offset: Duration) -> Instant {
        self.0 + offset
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Stopped,
    StartingPending,
    StartingLive,
    Running,
    Backoff,
    Stopping,
    Exited,
    Fatal,
}

/// Drives a fresh machine into `s`; returns it and the time of its last event.
fn machine_in(s: Start, c: &Clock) -> (Machine, Instant) {
    let mut p = policy();
    if s == Start::Fatal {
        p.startretries = 0;
    }
    let mut m = Machine::new(p);
    let t0 = c.at(Duration::ZERO);
    let mut t = t0;
    let ev = |m: &mut Machine, e: Event, at: Instant| {
        m.step(e, at);
    };
    match s {
        Start::Stopped => {}
        Start::StartingPending => ev(&mut m, Event::Start, t0),
        Start::StartingLive => {
            ev(&mut m, Event::Start, t0);
            ev(&mut m, Event::Spawned, t0);
        }
        Start::Running | Start::Stopping | Start::Exited => {
            ev(&mut m, Event::Start, t0);
            ev(&mut m, Event::Spawned, t0);
            t = c.at(Duration::from_secs(1));
            ev(&mut m, Event::Tick, t);
            if s == Start::Stopping {
                ev(&mut m, Event::Stop, t);
            }
            if s == Start::Exited {
                ev(&mut m, Event::Exited(Exit::Code(0)), t);
            }
        }
        Start::Backoff | Start::Fatal => {
            ev(&mut m, Event::Start, t0);
            ev(&mut m, Event::Spawned, t0);
            ev(&mut m, Event::Exited(Exit::Code(1)), t0);
        }
    }
    (m, t)
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    Start,
    Stop,
    Restart,
    Spawned,
    SpawnFailed,
    Exit0,
    Exit1,
    Segv,
    Hung,
    Quarantined,
    TickEarly,
    TickLate,
}

const EVENTS: [Ev; 12] = [
    Ev::Start,
    Ev::Stop,
    Ev::Restart,
    Ev::Spawned,
    Ev::SpawnFailed,
    Ev::Exit0,
    Ev::Exit1,
    Ev::Segv,
    Ev::Hung,
    Ev::Quarantined,
    Ev::TickEarly,
    Ev::TickLate,
];

fn apply(m: &mut Machine, e: Ev, t: Instant) -> Output {
    // Events other than the late tick come 100 ms after the state was reached, before any
    // deadline (startsecs 1 s, backoff 1 s, stopwaitsecs 10 s).
    let soon = t + ms(100);
    match e {
        Ev::Start => m.step(Event::Start, soon),
        Ev::Stop => m.step(Event::Stop, soon),
        Ev::Restart => m.step(Event::Restart, soon),
        Ev::Spawned => m.step(Event::Spawned, soon),
        Ev::SpawnFailed => m.step(Event::SpawnFailed, soon),
        Ev::Exit0 => m.step(Event::Exited(Exit::Code(0)), soon),
        Ev::Exit1 => m.step(Event::Exited(Exit::Code(1)), soon),
        Ev::Segv => m.step(Event::Exited(Exit::Signal(SEGV)), soon),
        Ev::Hung => m.step(Event::Hung, soon),
        Ev::Quarantined => m.step(Event::Quarantined, soon),
        Ev::TickEarly => m.step(Event::Tick, soon),
        Ev::TickLate => m.step(Event::Tick, t + Duration::from_secs(3600)),
    }
}

use Action::{KillGroup, Signal, Spawn};
use State::{
    Backoff as B, Exited as E, Fatal as F, Running as R, Starting as SG, Stopped as S,
    Stopping as SP,
};

/// The expected (state, actions) after each event of [`EVENTS`], in that order.
fn expected(s: Start) -> [(State, &'static [Action]); 12] {
    const N: &[Action] = &[];
    match s {
        //                 Start          Stop     Restart        Spawned  SpawnFailed Exit0  Exit1  Segv   Hung   Quarantined TickEarly TickLate
        Start::Stopped => [
            (SG, &[Spawn]),
            (S, N),
            (SG, &[Spawn]),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
            (S, N),
        ],
        Start::StartingPending => [
            (SG, N),
            (S, N),
            (SG, N),
            (SG, N),
            (B, N),
            (SG, N),
            (SG, N),
            (SG, N),
            (SG, N),
            (SG, N),
            (SG, N),
            (SG, N),
        ],
        Start::StartingLive => [
            (SG, N),
            (SP, &[Signal(TERM)]),
            (SP, &[Signal(TERM)]),
            (SG, N),
            (SG, N),
            (B, N),
            (B, N),
            (B, N),
            (SG, &[KillGroup]),
            (SG, &[KillGroup]),
            (SG, N),
            (R, N),
        ],
        Start::Running => [
            (R, N),
            (SP, &[Signal(TERM)]),
            (SP, &[Signal(TERM)]),
            (R, N),
            (R, N),
            (E, N),
            (SG, &[Spawn]),
            (SG, &[Spawn]),
            (R, &[KillGroup]),
            (R, &[KillGroup]),
            (R, N),
            (R, N),
        ],
        Start::Backoff => [
            (B, N),
            (S, N),
            (SG, &[Spawn]),
            (B, N),
            (B, N),
            (B, N),
            (B, N),
            (B, N),
            (B, N),
            (B, N),
            (B, N),
            (SG, &[Spawn]),
        ],
        Start::Stopping => [
            (SP, N),
            (SP, N),
            (SP, N),
            (SP, N),
            (SP, N),
            (S, N),
            (S, N),
            (S, N),
            (SP, N),
            (SP, N),
            (SP, N),
            (SP, &[KillGroup]),
        ],
        Start::Exited => [
            (SG, &[Spawn]),
            (E, N),
            (SG, &[Spawn]),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
            (E, N),
        ],
        Start::Fatal => [
            (SG, &[Spawn]),
            (S, N),
            (SG, &[Spawn]),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
            (F, N),
        ],
    }
}

#[test]
fn every_state_event_pair_has_the_specified_outcome() {
    let c = Clock(Instant::now());
    let starts = [
        Start::Stopped,
        Start::StartingPending,
        Start::StartingLive,
        Start::Running,
        Start::Backoff,
        Start::Stopping,
        Start::Exited,
        Start::Fatal,
    ];
    let mut checked = 0;
    for s in starts {
        for (e, (want_state, want_actions)) in EVENTS.iter().zip(expected(s)) {
            let (mut m, t) = machine_in(s, &c);
            let out = apply(&mut m, *e, t);
            assert_eq!(
                (m.state(), out.actions.as_slice()),
                (want_state, want_actions),
                "from {s:?} on {e:?}"
            );
            // Every reported transition chains from the old state to the new one.
            let mut cur = None;
            for tr in &out.transitions {
                if let Some(prev) = cur {
                    assert_eq!(tr.from, prev, "from {s:?} on {e:?}: {:?}", out.transitions);
                }
                cur = Some(tr.to);
            }
            if let Some(last) = cur {
                assert_eq!(last, m.state());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 12);
}

#[test]
fn setup_states_are_what_they_claim() {
    let c = Clock(Instant::now());
    assert_eq!(machine_in(Start::Stopped, &c).0.state(), S);
    assert_eq!(
        machine_in(Start::StartingPending, &c).0.child(),
        ChildPhase::Pending
    );
    assert!(matches!(
        machine_in(Start::StartingLive, &c).0.child(),
        ChildPhase::Live { .. }
    ));
    assert_eq!(machine_in(Start::Running, &c).0.state(), R);
    assert_eq!(machine_in(Start::Backoff, &c).0.state(), B);
    assert_eq!(machine_in(Start::Stopping, &c).0.state(), SP);
    assert_eq!(machine_in(Start::Exited, &c).0.state(), E);
    assert_eq!(machine_in(Start::Fatal, &c).0.state(), F);
}

/// `false` as a program: spawns at 0, 1, 3 and 6 s, then FATAL at 6 s.
#[test]
fn false_spawns_four_times_then_is_fatal_after_six_seconds() {
    let c = Clock(Instant::now());
    let mut m = Machine::new(policy());
    let mut now = c.at(Duration::ZERO);
    let mut spawn_times = Vec::new();
    let mut out = m.step(Event::Start, now);
    for _ in 0..100 {
        if out.actions.contains(&Spawn) {
            spawn_times.push(now - c.0);
            m.step(Event::Spawned, now);
            now += ms(5);
            out = m.step(Event::Exited(Exit::Code(1)), now);
            continue;
        }
        match m.deadline() {
            Some(d) => {
                now = d;
                out = m.step(Event::Tick, now);
            }
            None => break,
        }
    }
    let secs: Vec<u64> = spawn_times.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, vec![0, 1, 3, 6]);
    assert_eq!(m.state(), F);
    assert_eq!(m.reason(), Reason::TooManyRetries);
    assert_eq!(now - c.0, Duration::from_secs(6) + ms(5 * 4));
    assert_eq!(m.counters().spawns, 4);
}

#[test]
fn running_only_after_startsecs_and_backoff_resets() {
    let c = Clock(Instant::now());
    let mut m = Machine::new(policy());
    m.step(Event::Start, c.at(Duration::ZERO));
    m.step(Event::Spawned, c.at(Duration::ZERO));
    m.step(Event::Tick, c.at(ms(999)));
    assert_eq!(m.state(), SG);
    m.step(Event::Exited(Exit::Code(0)), c.at(ms(999)));
    assert_eq!(
        (m.state(), m.reason(), m.backoff()),
        (B, Reason::ExitedTooQuickly, 1)
    );
    m.step(Event::Tick, c.at(ms(1999)));
    m.step(Event::Spawned, c.at(ms(2000)));
    let out = m.step(Event::Tick, c.at(ms(3000)));
    assert_eq!(out.transitions, vec![Transition { from: SG, to: R }]);
    assert_eq!(m.backoff(), 0);
}

#[test]
fn stop_escalates_to_sigkill_of_the_group_after_stopwaitsecs() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    let out = m.step(Event::Stop, t);
    assert_eq!(out.actions, vec![Signal(TERM)]);
    assert_eq!(m.deadline(), Some(t + Duration::from_secs(10)));
    assert!(m.step(Event::Tick, t + ms(9999)).actions.is_empty());
    assert_eq!(
        m.step(Event::Tick, t + Duration::from_secs(10)).actions,
        vec![KillGroup]
    );
    // No second SIGKILL, and the exit finishes the stop.
    assert!(
        m.step(Event::Tick, t + Duration::from_secs(20))
            .actions
            .is_empty()
    );
    m.step(
        Event::Exited(Exit::Signal(libc::SIGKILL)),
        t + Duration::from_secs(20),
    );
    assert_eq!((m.state(), m.child()), (S, ChildPhase::None));
    assert_eq!(
        m.last_cause(),
        Some(Cause::Stopped {
            exit: Exit::Signal(libc::SIGKILL)
        })
    );
    assert_eq!(m.counters().crashes, 0, "a stop is not a crash");
}

#[test]
fn restart_stops_then_starts_a_fresh_series() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    assert_eq!(m.step(Event::Restart, t).actions, vec![Signal(TERM)]);
    let out = m.step(Event::Exited(Exit::Signal(TERM)), t + ms(10));
    assert_eq!(out.actions, vec![Spawn]);
    assert_eq!(
        out.transitions,
        vec![
            Transition { from: SP, to: S },
            Transition { from: S, to: SG }
        ]
    );
}

#[test]
fn stop_cancels_an_earlier_restart() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    m.step(Event::Restart, t);
    m.step(Event::Stop, t);
    let out = m.step(Event::Exited(Exit::Signal(TERM)), t + ms(10));
    assert!(out.actions.is_empty());
    assert_eq!(m.state(), S);
}

#[test]
fn crash_loop_breaker_trips_after_ten_unexpected_exits_in_a_minute() {
    let c = Clock(Instant::now());
    let mut m = Machine::new(policy());
    let mut now = c.at(Duration::ZERO);
    m.step(Event::Start, now);
    for i in 0..10 {
        m.step(Event::Spawned, now);
        now += Duration::from_secs(2); // past startsecs: each run reaches RUNNING
        m.step(Event::Tick, now);
        assert_eq!(m.state(), R, "run {i}");
        let out = m.step(Event::Exited(Exit::Signal(SEGV)), now);
        if i < 9 {
            assert_eq!(out.actions, vec![Spawn], "run {i}");
        } else {
            assert_eq!(out.transitions.last().map(|t| (t.from, t.to)), Some((E, F)));
        }
    }
    assert_eq!(
        m.reason(),
        Reason::CrashLoop {
            exits: 10,
            window_s: 60
        }
    );
    assert_eq!(m.counters().crashes, 10);
}

#[test]
fn crashes_spread_wider_than_the_window_do_not_trip_the_breaker() {
    let c = Clock(Instant::now());
    let mut m = Machine::new(policy());
    let mut now = c.at(Duration::ZERO);
    m.step(Event::Start, now);
    for _ in 0..30 {
        m.step(Event::Spawned, now);
        now += Duration::from_secs(7); // 9 exits per 63 s
        m.step(Event::Tick, now);
        m.step(Event::Exited(Exit::Code(3)), now);
        assert_eq!(m.state(), SG);
    }
}

#[test]
fn expected_exits_with_autorestart_always_restart_without_tripping_anything() {
    let c = Clock(Instant::now());
    let mut p = policy();
    p.autorestart = AutoRestart::Always;
    p.startsecs = Duration::ZERO;
    let mut m = Machine::new(p);
    let mut now = c.at(Duration::ZERO);
    m.step(Event::Start, now);
    for _ in 0..1000 {
        let out = m.step(Event::Spawned, now);
        assert_eq!(out.transitions, vec![Transition { from: SG, to: R }]);
        now += ms(1);
        assert_eq!(
            m.step(Event::Exited(Exit::Code(0)), now).actions,
            vec![Spawn]
        );
    }
    assert_eq!(m.counters().restarts, 999);
}

#[test]
fn hang_kills_the_group_and_counts_as_a_hang_then_restarts() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    assert!(m.watch_for_hang());
    assert_eq!(m.step(Event::Hung, t).actions, vec![KillGroup]);
    assert!(!m.watch_for_hang());
    assert!(
        m.step(Event::Hung, t).actions.is_empty(),
        "one kill per hang"
    );
    let out = m.step(Event::Exited(Exit::Signal(libc::SIGKILL)), t + ms(5));
    assert_eq!(out.actions, vec![Spawn]);
    assert_eq!(m.last_cause(), Some(Cause::Hang));
    assert_eq!((m.counters().hangs, m.counters().crashes), (1, 0));
}

#[test]
fn a_quarantine_kills_the_group_and_counts_as_a_quarantine_not_a_crash() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    assert_eq!(m.step(Event::Quarantined, t).actions, vec![KillGroup]);
    assert!(
        m.step(Event::Quarantined, t).actions.is_empty(),
        "one kill per child"
    );
    assert!(
        m.step(Event::Hung, t).actions.is_empty(),
        "a hang after the quarantine kill sends no second kill"
    );
    let out = m.step(Event::Exited(Exit::Signal(libc::SIGKILL)), t + ms(5));
    assert_eq!(out.actions, vec![Spawn], "restarted like a crash");
    assert_eq!(m.last_cause(), Some(Cause::Quarantined));
    let k = m.counters();
    assert_eq!((k.quarantines, k.crashes, k.hangs), (1, 0, 0));
    // The next child starts with a clean slate: its own SIGKILL from outside is a crash.
    m.step(Event::Spawned, t + ms(6));
    m.step(Event::Exited(Exit::Signal(libc::SIGKILL)), t + ms(7));
    assert_eq!(
        m.last_cause(),
        Some(Cause::Crash {
            signal: libc::SIGKILL
        })
    );
    assert_eq!((m.counters().quarantines, m.counters().crashes), (1, 1));
}

#[test]
fn a_hang_kill_counts_as_a_hang_even_if_a_stop_comes_before_the_exit() {
    let c = Clock(Instant::now());
    let (mut m, t) = machine_in(Start::Running, &c);
    assert_eq!(m.step(Event::Hung, t).actions, vec![KillGroup]);
    // The group already got SIGKILL: the stop only waits for the exit.
    assert!(m.step(Event::Stop, t + ms(1)).actions.is_empty());
    assert_eq!(m.state(), State::Stopping);
    m.step(Event::Exited(Exit::Signal(libc::SIGKILL)), t + ms(5));
    assert_eq!(m.state(), State::Stopped);
    assert_eq!((m.counters().hangs, m.counters().crashes), (1, 0));
}

#[test]
fn fatal_is_reprobed_on_a_doubling_timer_when_configured() {
    let c = Clock(Instant::now());
    let mut p = policy();
    p.startretries = 0;
    p.fatal_retry = Some(Duration::from_secs(60));
    let mut m = Machine::new(p);
    let t0 = c.at(Duration::ZERO);
    m.step(Event::Start, t0);
    m.step(Event::Spawned, t0);
    m.step(Event::Exited(Exit::Code(1)), t0);
    assert_eq!(m.state(), F);
    assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(60)));
    let mut now = t0;
    let mut intervals = Vec::new();
    for _ in 0..8 {
        let due = m.deadline().expect("re-probe armed");
        intervals.push((due - now).as_secs());
        now = due;
        assert_eq!(m.step(Event::Tick, now).actions, vec![Spawn]);
        m.step(Event::Spawned, now);
        m.step(Event::Exited(Exit::Code(1)), now);
        assert_eq!(m.state(), F, "a failed probe is FATAL again at once");
    }
    assert_eq!(intervals, vec![60, 120, 240, 480, 960, 1920, 3600, 3600]);
    // A probe that reaches RUNNING ends the re-probing.
    now = m.deadline().unwrap();
    m.step(Event::Tick, now);
    m.step(Event::Spawned, now);
    m.step(Event::Tick, now + Duration::from_secs(1));
    assert_eq!((m.state(), m.deadline()), (R, None));
}

#[test]
fn stop_in_fatal_cancels_the_reprobe() {
    let c = Clock(Instant::now());
    let mut p = policy();
    p.startretries = 0;
    p.fatal_retry = Some(Duration::from_secs(5));
    let mut m = Machine::new(p);
    let t0 = c.at(Duration::ZERO);
    m.step(Event::Start, t0);
    m.step(Event::SpawnFailed, t0);
    assert_eq!((m.state(), m.reason()), (F, Reason::TooManyRetries));
    m.step(Event::Stop, t0);
    assert_eq!((m.state(), m.deadline()), (S, None));
}

#[test]
fn zero_stopwaitsecs_kills_at_once() {
    let c = Clock(Instant::now());
    let mut p = policy();
    p.stopwaitsecs = Duration::ZERO;
    let mut m = Machine::new(p);
    let t0 = c.at(Duration::ZERO);
    m.step(Event::Start, t0);
    m.step(Event::Spawned, t0);
    assert_eq!(
        m.step(Event::Stop, t0).actions,
        vec![Signal(TERM), KillGroup]
    );
}

// ---------- property tests against a fake OS ----------

#[derive(Clone, Debug)]
enum Op {
    Start,
    Stop,
    Restart,
    Advance(u64),
    ChildExits(i32),
    ChildCrashes,
    Hang,
    Quarantine,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Start),
        1 => Just(Op::Stop),
        1 => Just(Op::Restart),
        6 => (0u64..4000).prop_map(Op::Advance),
        3 => (0i32..3).prop_map(Op::ChildExits),
        1 => Just(Op::ChildCrashes),
        1 => Just(Op::Hang),
        1 => Just(Op::Quarantine),
    ]
}

fn any_policy() -> impl Strategy<Value = Policy> {
    (
        0u64..3,
        0u32..5,
        0u8..3,
        0u64..4,
        1u32..5,
        proptest::option::of(1u64..30),
    )
        .prop_map(
            |(startsecs, startretries, ar, stopwait, crash_exits, retry)| Policy {
                startsecs: Duration::from_secs(startsecs),
                startretries,
                autorestart: [
                    AutoRestart::Unexpected,
                    AutoRestart::Always,
                    AutoRestart::Never,
                ][usize::from(ar)],
                exitcodes: vec![0],
                stopsignal: TERM,
                stopwaitsecs: Duration::from_secs(stopwait),
                crashloop_exits: crash_exits,
                crashloop_window: Duration::from_secs(60),
                fatal_retry: retry.map(Duration::from_secs),
            },
        )
}

/// The fake OS: at most one process, which may ignore the stop signal. `live` means
/// unreaped (a dead child stays signalable until the driver reaps it, as a zombie does).
struct FakeOs {
    live: bool,
    dead: bool,
    ignores_term: bool,
    spawn_results: Vec<bool>,
    spawn_no: usize,
}

struct Harness {
    m: Machine,
    os: FakeOs,
    now: Instant,
    spawns_without_running: u32,
}

impl Harness {
    /// Sends `event`, carries out the actions like a driver would, and checks invariants
    /// on every transition.
    fn send(&mut self, event: Event) {
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            if let Event::Exited(_) = e {
                self.os.live = false; // reaped
                self.os.dead = false;
            }
            let before = self.m.state();
            let out = self.m.step(e, self.now);
            let mut from = before;
            for tr in &out.transitions {
                assert_eq!(tr.from, from);
                from = tr.to;
                if tr.to == State::Running {
                    let since = self.m.child_since().expect("RUNNING has a child");
                    assert!(
                        self.now - since >= self.m.policy().startsecs,
                        "RUNNING before startsecs"
                    );
                    self.spawns_without_running = 0;
                }
                if tr.to == State::Fatal {
                    let breaker = matches!(self.m.reason(), Reason::CrashLoop { .. })
                        && tr.from == State::Exited;
                    assert!(
                        tr.from == State::Backoff || breaker,
                        "FATAL from {:?}",
                        tr.from
                    );
                }
                if tr.from == State::Fatal && tr.to == State::Starting {
                    self.spawns_without_running = 0; // a re-probe starts a new series
                }
            }
            for a in out.actions {
                match a {
                    Action::Spawn => {
                        assert!(!self.os.live, "a second live child");
                        assert!(self.m.wants_spawn());
                        let ok =
                            self.os.spawn_results[self.os.spawn_no % self.os.spawn_results.len()];
                        self.os.spawn_no += 1;
                        if ok {
                            self.os.live = true;
                            self.os.dead = false;
                            self.spawns_without_running += 1;
                            assert!(
                                self.spawns_without_running <= self.m.policy().startretries + 1,
                                "more than startretries+1 spawns without RUNNING"
                            );
                            queue.push_back(Event::Spawned);
                        } else {
                            queue.push_back(Event::SpawnFailed);
                        }
                    }
                    Action::Signal(sig) => {
                        assert!(self.os.live, "signal to no child");
                        if !self.os.ignores_term && !self.os.dead {
                            self.os.dead = true;
                            queue.push_back(Event::Exited(Exit::Signal(sig)));
                        }
                    }
                    Action::KillGroup => {
                        assert!(self.os.live, "kill with no child");
                        if !self.os.dead {
                            self.os.dead = true;
                            queue.push_back(Event::Exited(Exit::Signal(libc::SIGKILL)));
                        }
                    }
                }
            }
        }
        assert_eq!(
            self.os.live,
            matches!(self.m.child(), ChildPhase::Live { .. })
        );
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Start => {
                self.spawns_without_running = 0;
                self.send(Event::Start);
            }
            Op::Restart => {
                self.spawns_without_running = 0;
                self.send(Event::Restart);
            }
            Op::Stop => self.send(Event::Stop),
            Op::Advance(d) => {
                self.now += ms(*d);
                self.send(Event::Tick);
            }
            Op::ChildExits(code) if self.os.live => {
                self.send(Event::Exited(Exit::Code(*code)));
            }
            Op::ChildCrashes if self.os.live => {
                self.send(Event::Exited(Exit::Signal(SEGV)));
            }
            Op::Hang if self.m.watch_for_hang() => self.send(Event::Hung),
            // The supervisor sends it whenever the engine reports one; the machine
            // decides whether it kills.
            Op::Quarantine => self.send(Event::Quarantined),
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_and_every_stop_ends_with_a_reaped_child(
        policy in any_policy(),
        ignores_term in any::<bool>(),
        spawn_results in proptest::collection::vec(prop_oneof![4 => Just(true), 1 => Just(false)], 1..8),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let stopwait = policy.stopwaitsecs;
        let mut h = Harness {
            m: Machine::new(policy),
            os: FakeOs { live: false, dead: false, ignores_term, spawn_results, spawn_no: 0 },
            now: Instant::now(),
            spawns_without_running: 0,
        };
        for op in &ops {
            h.run(op);
        }
        // Stop, then let time pass: the child is gone and reaped, nothing is left running.
        h.send(Event::Stop);
        for _ in 0..3 {
            h.now += stopwait + Duration::from_secs(1);
            h.send(Event::Tick);
        }
        prop_assert!(!h.os.live);
        prop_assert_eq!(h.m.child(), ChildPhase::None);
        prop_assert!(matches!(h.m.state(), State::Stopped | State::Exited), "ended in {:?}", h.m.state());
        prop_assert_eq!(h.m.deadline(), None);
    }
}
