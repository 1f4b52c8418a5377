//! One conformance suite, instantiated over a heap-backed region and over a real
//! sealed memfd region (opened on the worker side through `WorkerRegion::open` of a
//! duplicated fd, i.e. a second mapping, as in a worker process).

#![cfg(not(loom))]

mod common;

use std::time::Duration;

#[cfg(debug_assertions)]
use assert_no_alloc::AllocDisabler;
use assert_no_alloc::assert_no_alloc;
use common::{Watchdog, block_matches, fill_block, mono16, odd_shape};
use slotpool_ring::{
    Backing, Command, Event, Heap, HostEnd, HostRegion, Memfd, MonoTime, OutputStatus, PushError,
    RecordError, ShortStr, SlotLayout, UntimedOutcome, WaitOutcome, WorkerEnd, WorkerRegion,
    WorkerState,
};

// The allocation guard: assert_no_alloc's default `disable_release` feature makes it a
// no-op in release builds, so it is installed in debug builds only.
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOC: AllocDisabler = AllocDisabler;

/// How to build a region pair over one backing.
trait Fixture {
    type B: Backing;
    fn create(slot: &str, layout: SlotLayout) -> HostRegion<Self::B>;
    fn open(host: &HostRegion<Self::B>) -> WorkerRegion;
}

struct HeapFx;
impl Fixture for HeapFx {
    type B = Heap;
    fn create(slot: &str, layout: SlotLayout) -> HostRegion<Heap> {
        HostRegion::create_heap(slot, layout).expect("create heap region")
    }
    fn open(host: &HostRegion<Heap>) -> WorkerRegion {
        host.open_worker().expect("open heap region")
    }
}

struct MemfdFx;
impl Fixture for MemfdFx {
    type B = Memfd;
    fn create(slot: &str, layout: SlotLayout) -> HostRegion<Memfd> {
        HostRegion::create(slot, layout).expect("create memfd region")
    }
    fn open(host: &HostRegion<Memfd>) -> WorkerRegion {
        let fd = host.fd().try_clone_to_owned().expect("dup region fd");
        WorkerRegion::open(fd).expect("open memfd region")
    }
}

fn worker_sees_name_and_layout<F: Fixture>() {
    let host = F::create("synth:3", odd_shape());
    let w = F::open(&host);
    assert_eq!(w.slot_name(), "synth:3");
    assert_eq!(w.layout(), odd_shape());
    assert_eq!(host.layout(), odd_shape());
    assert_eq!(host.slot_name(), "synth:3");
}

fn ends_are_taken_once<F: Fixture>() {
    let host = F::create("p:0", mono16(4));
    let _h = host.host_end().unwrap();
    let e = host.host_end().unwrap_err();
    assert!(e.to_string().contains("already taken"), "{e}");
    let w = F::open(&host);
    let _we = w.worker_end().unwrap();
    assert!(w.worker_end().is_err());
}

fn audio_blocks_arrive_in_order_across_wrap_around<F: Fixture>() {
    let layout = odd_shape();
    let host = F::create("p:0", layout);
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    let mut inb = vec![0.0f32; layout.input_samples()];
    let mut got = vec![0.0f32; layout.input_samples()];
    let mut outb = vec![0.0f32; layout.output_samples()];
    let mut back = vec![0.0f32; layout.output_samples()];
    for cycle in 0..(layout.audio_capacity as u64 * 5 + 3) {
        fill_block(cycle, &mut inb);
        assert_no_alloc(|| h.audio_in.push(cycle, &inb)).unwrap();
        assert_eq!(we.audio_in.peek_cycle().unwrap(), Some(cycle));
        assert_eq!(
            assert_no_alloc(|| we.audio_in.pop(&mut got)).unwrap(),
            Some(cycle)
        );
        assert!(block_matches(cycle, &got));
        fill_block(cycle + 7, &mut outb);
        assert_no_alloc(|| we.audio_out.push(cycle, &outb)).unwrap();
        assert_eq!(
            assert_no_alloc(|| h.audio_out.pop(&mut back)).unwrap(),
            Some(cycle)
        );
        assert!(block_matches(cycle + 7, &back));
    }
    assert_eq!(we.audio_in.pop(&mut got).unwrap(), None);
    assert_eq!(h.audio_out.pop(&mut back).unwrap(), None);
}

fn push_fails_when_full_and_pop_when_empty<F: Fixture>() {
    let layout = mono16(4);
    let host = F::create("p:0", layout);
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    let block = vec![0.5f32; 16];
    let mut out = vec![0.0f32; 16];
    assert_eq!(we.audio_in.pop(&mut out).unwrap(), None);
    assert!(!we.audio_in.skip().unwrap());
    assert_eq!(h.audio_in.free_slots().unwrap(), 4);
    for c in 0..4 {
        h.audio_in.push(c, &block).unwrap();
    }
    assert_eq!(h.audio_in.push(4, &block), Err(PushError::Full));
    assert_eq!(h.audio_in.free_slots().unwrap(), 0);
    assert_eq!(we.audio_in.available().unwrap(), 4);
    assert!(we.audio_in.skip().unwrap());
    assert_eq!(h.audio_in.free_slots().unwrap(), 1);
    h.audio_in.push(4, &block).unwrap();
    for c in 1..5 {
        assert_eq!(we.audio_in.pop(&mut out).unwrap(), Some(c));
    }
    assert_eq!(we.audio_in.available().unwrap(), 0);
    assert_eq!(
        h.audio_in.push(9, &block[..15]),
        Err(PushError::WrongLength {
            expected: 16,
            found: 15
        })
    );
}

fn commands_and_events_carry_seq_numbers<F: Fixture>() {
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    let cmds = [
        Command::SetParam { id: 2, value: 0.75 },
        Command::Bypass { on: true },
        Command::Ping { token: 99 },
        Command::Reset,
        Command::Shutdown,
    ];
    for round in 0..3u64 {
        for (i, c) in cmds.iter().enumerate() {
            let seq = assert_no_alloc(|| h.commands.push(*c)).unwrap();
            assert_eq!(seq, round * 5 + i as u64 + 1);
            let (s, got) = assert_no_alloc(|| we.commands.pop()).unwrap().unwrap();
            assert_eq!((s, got), (seq, *c));
            let e = Event::Ack { seq: s };
            let es = assert_no_alloc(|| we.events.push(e)).unwrap();
            assert_eq!(assert_no_alloc(|| h.events.pop()).unwrap(), Some((es, e)));
        }
    }
    // Fill the 8-record command ring.
    for _ in 0..8 {
        h.commands.push(Command::Reset).unwrap();
    }
    assert_eq!(h.commands.push(Command::Reset), Err(PushError::Full));
    let err = Event::Error {
        seq: 3,
        code: 7,
        message: ShortStr::new("bad coefficient"),
    };
    let p = Event::Param {
        id: 1,
        default: -6.0,
        name: ShortStr::new("gain_db"),
    };
    let t = Event::Telemetry {
        cycle: 12,
        process_ns: 3456,
        late: 1,
    };
    for e in [err, p, t] {
        we.events.push(e).unwrap();
    }
    for e in [err, p, t] {
        assert_eq!(h.events.pop().unwrap().map(|(_, e)| e), Some(e));
    }
    assert_eq!(h.events.pop(), Ok(None));
}

fn bell_wakes_and_times_out<F: Fixture>() {
    let _wd = Watchdog::arm("bell_wakes_and_times_out", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let h = host.host_end().unwrap();
    let we = w.worker_end().unwrap();
    // Timeouts end at (not before) the deadline.
    let seen = we.bell.doorbell();
    let deadline = MonoTime::now() + Duration::from_millis(20);
    assert_eq!(we.bell.wait_doorbell(seen, deadline), WaitOutcome::TimedOut);
    assert!(MonoTime::now() >= deadline);
    let seen_done = h.bell.done_count();
    let deadline = MonoTime::now() + Duration::from_millis(20);
    assert_eq!(h.bell.wait_done(seen_done, deadline), WaitOutcome::TimedOut);
    assert!(MonoTime::now() >= deadline);
    // A ring before the wait is seen at once; the cycle travels with it.
    h.bell.ring(41);
    assert_eq!(
        we.bell
            .wait_doorbell(seen, MonoTime::now() + Duration::from_secs(30)),
        WaitOutcome::Signalled
    );
    assert_eq!(we.bell.cycle(), 41);
    // Ping-pong across threads: every wait is woken by the peer, none times out.
    ping_pong(&h, &we, 200, || {});
}

/// `rounds` round trips: the host rings and waits for `done`, a worker thread waits for
/// the doorbell and signals `done`; every wait must end Signalled. `host_side` runs on
/// the host's thread: once before the first ring and once after the last wait.
fn ping_pong(h: &HostEnd, we: &WorkerEnd, rounds: u64, mut host_side: impl FnMut()) {
    let mut seen = we.bell.doorbell();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                let r = we
                    .bell
                    .wait_doorbell(seen, MonoTime::now() + Duration::from_secs(30));
                assert_eq!(r, WaitOutcome::Signalled);
                seen = we.bell.doorbell();
                we.bell.signal_done();
            }
        });
        host_side();
        for i in 0..rounds {
            let seen = h.bell.done_count();
            h.bell.ring(i);
            let r = h
                .bell
                .wait_done(seen, MonoTime::now() + Duration::from_secs(30));
            assert_eq!(r, WaitOutcome::Signalled);
        }
        host_side();
    });
}

/// Polls until thread `tid` of this process sleeps (state `S`): the thread under test
/// does nothing between announcing its tid and its futex wait, so `S` is that wait.
fn wait_until_asleep(tid: i32) {
    loop {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .expect("the thread under test is alive");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('S') {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What an untimed wait saw: how it ended, how far the doorbell moved, the cycle word,
/// how far the host heartbeat moved.
type UntimedSeen = (UntimedOutcome, u32, u64, u64);

/// Runs `wait_doorbell_untimed` on a thread, lets `act` run once that thread sleeps
/// (`act` gets its pthread id and tid), and returns what the sleeper saw.
fn sleep_untimed_then(
    we: &slotpool_ring::WorkerEnd,
    act: impl FnOnce(libc::pthread_t, i32),
) -> UntimedSeen {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = s.spawn(move || {
            let seen = we.bell.doorbell();
            let beat = we.bell.host_heartbeat();
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() };
            tx.send((me, nix::unistd::gettid().as_raw())).unwrap();
            let r = we.bell.wait_doorbell_untimed(seen);
            (
                r,
                we.bell.doorbell().wrapping_sub(seen),
                we.bell.cycle(),
                we.bell.host_heartbeat() - beat,
            )
        });
        let (thread, tid) = rx.recv().unwrap();
        wait_until_asleep(tid);
        act(thread, tid);
        sleeper.join().unwrap()
    })
}

fn untimed_wait_is_ended_by_a_nudge_or_a_ring<F: Fixture>() {
    let _wd = Watchdog::arm("untimed_wait_nudge_ring", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let h = host.host_end().unwrap();
    let mon = host.monitor();
    let we = w.worker_end().unwrap();
    // A doorbell that already moved returns at once.
    let seen = we.bell.doorbell();
    mon.nudge();
    assert_eq!(
        we.bell.wait_doorbell_untimed(seen),
        UntimedOutcome::Signalled
    );
    // Asleep, woken by the supervisor's idle ring: the doorbell moved by one, no cycle
    // came with it, and the beat made before the nudge is visible.
    let got = sleep_untimed_then(&we, |_, _| {
        mon.beat_host();
        mon.nudge();
    });
    assert_eq!(got, (UntimedOutcome::Signalled, 1, 0, 1));
    // Asleep, woken by the audio thread's ring: the cycle travels with it.
    let got = sleep_untimed_then(&we, |_, _| {
        assert!(h.bell.ring(7), "the worker slept: the ring had to wake it");
    });
    assert_eq!(got, (UntimedOutcome::Signalled, 1, 7, 0));
}

fn a_ring_says_whether_it_woke_the_worker_and_when_it_rang<F: Fixture>() {
    let _wd = Watchdog::arm("ring_woke_and_time", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let h = host.host_end().unwrap();
    let we = w.worker_end().unwrap();
    assert_eq!(we.bell.ring_time(), None, "never rung: no ring time");
    // Nobody sleeps on the doorbell: no wake, no syscall.
    let before = MonoTime::now();
    assert!(!h.bell.ring(3));
    let after = MonoTime::now();
    let at = we.bell.ring_time().expect("rung: a ring time");
    assert!(
        before <= at && at <= after,
        "{before:?} <= {at:?} <= {after:?}"
    );
    assert_eq!(we.bell.cycle(), 3);
    // A worker polling for the ring (pre-wake) sees it without sleeping.
    let seen = we.bell.doorbell();
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            we.bell.poll_doorbell(
                seen,
                MonoTime::now().saturating_add(Duration::from_secs(30)),
            )
        });
        std::thread::sleep(Duration::from_millis(5));
        assert!(!h.bell.ring(4), "a polling worker is not asleep");
        assert!(poller.join().unwrap(), "the poll saw the ring");
    });
    // A poll that nobody rings for ends at its bound.
    let seen = we.bell.doorbell();
    let t0 = MonoTime::now();
    assert!(
        !we.bell
            .poll_doorbell(seen, t0.saturating_add(Duration::from_millis(2)))
    );
    assert!(MonoTime::now().saturating_duration_since(t0) >= Duration::from_millis(2));
}

static HANDLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn count_signal(_: libc::c_int) {
    // Relaxed: a counter polled by the test; async-signal-safe (one atomic RMW).
    HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Installs `count_signal` for `sig`, with or without `SA_RESTART`.
fn install_counter(sig: nix::sys::signal::Signal, restart: bool) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let flags = if restart {
        SaFlags::SA_RESTART
    } else {
        SaFlags::empty()
    };
    let action = SigAction::new(SigHandler::Handler(count_signal), flags, SigSet::empty());
    // SAFETY: the handler only does an atomic add (async-signal-safe); only this test
    // sends these signals, to its own threads.
    unsafe { sigaction(sig, &action) }.expect("sigaction");
}

/// How a signal meets the untimed wait (the worker's SIGTERM flag, crates/worker): with
/// `SA_RESTART` (signal-hook's flags) the kernel restarts the sleep after the handler, so
/// only the next ring or nudge ends it; without, the wait returns `Interrupted`.
fn untimed_wait_and_signal_handlers<F: Fixture>() {
    use nix::sys::signal::Signal;
    let _wd = Watchdog::arm("untimed_wait_signals", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mon = host.monitor();
    let we = w.worker_end().unwrap();
    let send = |thread: libc::pthread_t, sig: Signal| {
        // SAFETY: `thread` is a live thread of this process (joined only after this).
        let rc = unsafe { libc::pthread_kill(thread, sig as libc::c_int) };
        assert_eq!(rc, 0);
    };
    install_counter(Signal::SIGUSR1, true);
    let got = sleep_untimed_then(&we, |thread, tid| {
        // Relaxed: a counter; the handler runs on the sleeper before the wait resumes.
        let before = HANDLED.load(std::sync::atomic::Ordering::Relaxed);
        send(thread, Signal::SIGUSR1);
        while HANDLED.load(std::sync::atomic::Ordering::Relaxed) == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The handler ran and the thread is asleep again: the kernel restarted the wait.
        wait_until_asleep(tid);
        mon.nudge();
    });
    assert_eq!(got, (UntimedOutcome::Signalled, 1, 0, 0));
    install_counter(Signal::SIGUSR2, false);
    let got = sleep_untimed_then(&we, |thread, _| send(thread, Signal::SIGUSR2));
    assert_eq!(got, (UntimedOutcome::Interrupted, 0, 0, 0));
}

fn monitor_reads_worker_words<F: Fixture>() {
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mon = host.monitor();
    let we = w.worker_end().unwrap();
    assert_eq!(mon.worker_state(), WorkerState::Empty);
    we.bell.set_pid(4242);
    we.bell.set_state(WorkerState::Running);
    we.bell.set_process_ns(1234);
    we.bell.set_fault(0);
    we.bell.beat();
    we.bell.beat();
    assert_eq!(mon.worker_pid(), 4242);
    assert_eq!(mon.worker_state(), WorkerState::Running);
    assert_eq!(mon.process_ns(), 1234);
    assert_eq!(mon.worker_heartbeat(), 2);
    we.bell.set_fault(17);
    we.bell.set_state(WorkerState::Faulted);
    assert_eq!(
        (mon.worker_state(), mon.fault_code()),
        (WorkerState::Faulted, 17)
    );
    we.bell.set_state(WorkerState::Invalid(77));
    assert_eq!(mon.worker_state(), WorkerState::Invalid(77));
    let before = we.bell.host_heartbeat();
    mon.beat_host();
    host.host_end().unwrap().bell.beat();
    assert_eq!(we.bell.host_heartbeat(), before + 2);
}

fn wait_output_discards_stale_blocks_and_respects_deadline<F: Fixture>() {
    let _wd = Watchdog::arm("wait_output", Duration::from_secs(60));
    let host = F::create("p:0", mono16(8));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    let mut block = vec![0.0f32; 16];
    let mut out = vec![0.0f32; 16];
    // Late answers to cycles 0..3, then the one we want.
    for c in 0..4 {
        fill_block(c, &mut block);
        we.audio_out.push(c, &block).unwrap();
    }
    fill_block(4, &mut block);
    we.audio_out.push(4, &block).unwrap();
    let r =
        assert_no_alloc(|| h.wait_output(4, &mut out, MonoTime::now() + Duration::from_secs(30)));
    assert_eq!(r, Ok(OutputStatus::Ready));
    assert!(block_matches(4, &out));
    // Nothing arrives: Late, not before the deadline.
    let deadline = MonoTime::now() + Duration::from_millis(15);
    assert_eq!(h.wait_output(5, &mut out, deadline), Ok(OutputStatus::Late));
    assert!(MonoTime::now() >= deadline);
    // A block from the future at the front: Late at once, block kept.
    we.audio_out.push(9, &block).unwrap();
    assert_eq!(
        h.wait_output(6, &mut out, MonoTime::now() + Duration::from_secs(30)),
        Ok(OutputStatus::Late)
    );
    assert_eq!(h.audio_out.peek_cycle().unwrap(), Some(9));
    // The block arrives from another thread while the host sleeps.
    std::thread::scope(|s| {
        let (we, block) = (&mut we, &block);
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            we.audio_out.push(10, block).unwrap();
            we.bell.signal_done();
        });
        let r = h.wait_output(10, &mut out, MonoTime::now() + Duration::from_secs(30));
        assert_eq!(r, Ok(OutputStatus::Ready));
    });
}

fn done_spam_cannot_hold_wait_output_past_its_deadline<F: Fixture>() {
    let _wd = Watchdog::arm("done_spam", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let we = w.worker_end().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // A worker that signals `done` as fast as it can but never delivers a block.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                we.bell.signal_done();
            }
        });
        let mut out = vec![0.0f32; 16];
        for cycle in 0..20 {
            let deadline = MonoTime::now() + Duration::from_millis(5);
            assert_eq!(
                h.wait_output(cycle, &mut out, deadline),
                Ok(OutputStatus::Late)
            );
            assert!(MonoTime::now() >= deadline);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// This thread's voluntary context switches (each is a sleep: a futex wait here).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

fn spinning_wait_is_bounded_by_its_deadline_and_never_sleeps_for_a_quick_peer<F: Fixture>() {
    let _wd = Watchdog::arm("spinning_wait", Duration::from_secs(60));
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let we = w.worker_end().unwrap();
    // A spin far longer than the deadline still ends at the deadline.
    h.bell.set_spin(Duration::from_secs(10));
    let seen = h.bell.done_count();
    let t0 = MonoTime::now();
    let deadline = t0 + Duration::from_millis(20);
    assert_eq!(h.bell.wait_done(seen, deadline), WaitOutcome::TimedOut);
    let took = MonoTime::now().saturating_duration_since(t0);
    assert!(MonoTime::now() >= deadline);
    assert!(
        took < Duration::from_secs(5),
        "the spin ran past the deadline: {took:?}"
    );
    // A peer that answers within the spin is seen without the host ever sleeping.
    let mut switches = Vec::new();
    ping_pong(&h, &we, 200, || switches.push(voluntary_switches()));
    let slept = switches[1] - switches[0];
    assert!(
        slept <= 2,
        "the host slept {slept} times in 200 spinning waits"
    );
}

fn reset_lets_a_fresh_worker_continue<F: Fixture>() {
    let host = F::create("p:0", mono16(4));
    let mut h = host.host_end().unwrap();
    let block = vec![1.0f32; 16];
    let mut out = vec![0.0f32; 16];
    {
        let w = F::open(&host);
        let mut we = w.worker_end().unwrap();
        we.bell.set_state(WorkerState::Running);
        we.bell.set_pid(77);
        for c in 0..3 {
            h.audio_in.push(c, &block).unwrap();
            h.commands.push(Command::Ping { token: c }).unwrap();
        }
        // The worker consumed one block and one command, produced two outputs, then died.
        we.audio_in.pop(&mut out).unwrap();
        we.commands.pop().unwrap();
        we.audio_out.push(0, &block).unwrap();
        we.audio_out.push(1, &block).unwrap();
        we.events.push(Event::Ack { seq: 1 }).unwrap();
    }
    assert_no_alloc(|| h.reset());
    let mon = host.monitor();
    assert_eq!(mon.worker_state(), WorkerState::Empty);
    assert_eq!(mon.worker_pid(), 0);
    // Everything pending was dropped on both sides.
    assert_eq!(h.audio_out.pop(&mut out).unwrap(), None);
    assert_eq!(h.events.pop().unwrap(), None);
    assert_eq!(h.audio_in.free_slots().unwrap(), 4);
    let w = F::open(&host);
    let mut we = w.worker_end().unwrap();
    assert_eq!(we.audio_in.pop(&mut out).unwrap(), None);
    assert_eq!(we.commands.pop().unwrap(), None);
    // And the rings work from where the host is.
    for c in 3..20 {
        h.audio_in.push(c, &block).unwrap();
        assert_eq!(we.audio_in.pop(&mut out).unwrap(), Some(c));
        we.audio_out.push(c, &block).unwrap();
        assert_eq!(h.audio_out.pop(&mut out).unwrap(), Some(c));
    }
    let seq = h.commands.push(Command::Reset).unwrap();
    assert_eq!(seq, 4, "seq continues across the reset");
    assert_eq!(we.commands.pop().unwrap(), Some((4, Command::Reset)));
}

fn streaming_between_threads_keeps_every_block<F: Fixture>() {
    let _wd = Watchdog::arm("streaming_between_threads", Duration::from_secs(120));
    const N: u64 = 20_000;
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut buf = vec![0.0f32; 16];
            let mut seen = we.bell.doorbell();
            let mut next = 0u64;
            while next < N {
                match we.audio_in.pop(&mut buf).unwrap() {
                    Some(c) => {
                        assert_eq!(c, next);
                        assert!(block_matches(c, &buf));
                        while we.audio_out.push(c, &buf) == Err(PushError::Full) {
                            std::thread::yield_now();
                        }
                        we.bell.signal_done();
                        next += 1;
                    }
                    None => {
                        we.bell
                            .wait_doorbell(seen, MonoTime::now() + Duration::from_millis(50));
                        seen = we.bell.doorbell();
                    }
                }
            }
        });
        let mut buf = vec![0.0f32; 16];
        let mut out = vec![0.0f32; 16];
        for c in 0..N {
            fill_block(c, &mut buf);
            while h.audio_in.push(c, &buf) == Err(PushError::Full) {
                std::thread::yield_now();
            }
            h.bell.ring(c);
            let r = h
                .wait_output(c, &mut out, MonoTime::now() + Duration::from_secs(30))
                .unwrap();
            assert_eq!(r, OutputStatus::Ready, "cycle {c}");
            assert!(block_matches(c, &out));
        }
    });
}

fn bad_records_are_errors_and_consumed<F: Fixture>() {
    let host = F::create("p:0", mono16(4));
    let w = F::open(&host);
    let mut h = host.host_end().unwrap();
    let mut we = w.worker_end().unwrap();
    let peer = w.peer_access();
    we.events.push(Event::Ack { seq: 1 }).unwrap();
    we.events.push(Event::Ack { seq: 2 }).unwrap();
    // The worker corrupts the first record's kind after publishing it.
    let (_, range) = peer.slot_ranges()[3].clone();
    peer.write_bytes(range.start, &[0xEE, 0xEE]);
    assert!(matches!(h.events.pop(), Err(RecordError::Decode(_))));
    assert_eq!(h.events.pop(), Ok(Some((2, Event::Ack { seq: 2 }))));
}

macro_rules! conformance {
    ($name:ident, $fx:ty) => {
        mod $name {
            use super::*;
            #[test]
            fn worker_sees_name_and_layout() {
                super::worker_sees_name_and_layout::<$fx>();
            }
            #[test]
            fn ends_are_taken_once() {
                super::ends_are_taken_once::<$fx>();
            }
            #[test]
            fn audio_blocks_arrive_in_order_across_wrap_around() {
                super::audio_blocks_arrive_in_order_across_wrap_around::<$fx>();
            }
            #[test]
            fn push_fails_when_full_and_pop_when_empty() {
                super::push_fails_when_full_and_pop_when_empty::<$fx>();
            }
            #[test]
            fn commands_and_events_carry_seq_numbers() {
                super::commands_and_events_carry_seq_numbers::<$fx>();
            }
            #[test]
            fn bell_wakes_and_times_out() {
                super::bell_wakes_and_times_out::<$fx>();
            }
            #[test]
            fn untimed_wait_is_ended_by_a_nudge_or_a_ring() {
                super::untimed_wait_is_ended_by_a_nudge_or_a_ring::<$fx>();
            }
            #[test]
            fn a_ring_says_whether_it_woke_the_worker_and_when_it_rang() {
                super::a_ring_says_whether_it_woke_the_worker_and_when_it_rang::<$fx>();
            }
            #[test]
            fn untimed_wait_and_signal_handlers() {
                super::untimed_wait_and_signal_handlers::<$fx>();
            }
            #[test]
            fn monitor_reads_worker_words() {
                super::monitor_reads_worker_words::<$fx>();
            }
            #[test]
            fn wait_output_discards_stale_blocks_and_respects_deadline() {
                super::wait_output_discards_stale_blocks_and_respects_deadline::<$fx>();
            }
            #[test]
            fn spinning_wait_is_bounded_by_its_deadline_and_never_sleeps_for_a_quick_peer() {
                super::spinning_wait_is_bounded_by_its_deadline_and_never_sleeps_for_a_quick_peer::<
                    $fx,
                >();
            }
            #[test]
            fn done_spam_cannot_hold_wait_output_past_its_deadline() {
                super::done_spam_cannot_hold_wait_output_past_its_deadline::<$fx>();
            }
            #[test]
            fn reset_lets_a_fresh_worker_continue() {
                super::reset_lets_a_fresh_worker_continue::<$fx>();
            }
            #[test]
            fn streaming_between_threads_keeps_every_block() {
                super::streaming_between_threads_keeps_every_block::<$fx>();
            }
            #[test]
            fn bad_records_are_errors_and_consumed() {
                super::bad_records_are_errors_and_consumed::<$fx>();
            }
        }
    };
}

conformance!(heap, HeapFx);
conformance!(memfd, MemfdFx);
