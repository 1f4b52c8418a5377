//! Cross-process tests with real processes and real signals.
//!
//! This binary is its own helper: run normally it is the host and runs the tests;
//! run with `SLOTPOOL_RING_PEER=<mode>` and `SLOTPOOL_REGION_FD=<n>` (how the tests
//! re-exec it, with the region fd inherited through a duplicate without close-on-exec)
//! it is the worker peer. `harness = false` so the dispatch is explicit.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command as Proc, ExitStatus};
use std::time::{Duration, Instant};

use common::{Watchdog, block_matches, fill_block, mono16};
use slotpool_ring::{
    Command, HostEnd, HostRegion, Monitor, MonoTime, OutputStatus, PushError, RingFault,
    WaitOutcome, WorkerRegion, WorkerState,
};

const PEER_ENV: &str = "SLOTPOOL_RING_PEER";
const FD_ENV: &str = "SLOTPOOL_REGION_FD";
const BLOCKS: u64 = 1_000_000;

fn main() {
    if let Ok(mode) = std::env::var(PEER_ENV) {
        std::process::exit(peer_main(&mode));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 4] = [
        (
            "echo_one_million_tagged_blocks_across_processes",
            echo_one_million_tagged_blocks_across_processes,
        ),
        (
            "sigkilled_peer_stalls_then_fresh_peer_works_after_reset",
            sigkilled_peer_stalls_then_fresh_peer_works_after_reset,
        ),
        (
            "interrupt_ends_the_wait_for_a_dead_peer_before_the_deadline",
            interrupt_ends_the_wait_for_a_dead_peer_before_the_deadline,
        ),
        (
            "scribbling_peer_yields_faults_or_data_never_worse",
            scribbling_peer_yields_faults_or_data_never_worse,
        ),
    ];
    let mut ran = 0;
    for (name, f) in tests {
        if !filter.is_empty() && !filter.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
        let t = Instant::now();
        print!("test {name} ... ");
        f();
        println!("ok ({:.2?})", t.elapsed());
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed");
}

// ---------------------------------------------------------------- peer side

fn peer_main(mode: &str) -> i32 {
    // Die with the test process, whatever happens to it.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let Some(fd) = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        eprintln!("peer: {FD_ENV} not set");
        return 2;
    };
    // SAFETY: the parent passed this fd number for us to own; nothing else in this
    // process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let region = match WorkerRegion::open(fd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("peer: {e}");
            return 3;
        }
    };
    match mode {
        "echo" => echo(&region, None),
        "scribble" => echo(&region, Some(500)),
        other => {
            eprintln!("peer: unknown mode {other}");
            2
        }
    }
}

/// Echoes every input block to the output with the same tag, until `Shutdown`, until
/// the host heartbeat stops for 20 s, or (scribble mode) after `scribble_after` blocks,
/// when it scribbles the region and exits.
fn echo(region: &WorkerRegion, scribble_after: Option<u64>) -> i32 {
    let mut end = region.worker_end().expect("worker end");
    end.bell.set_pid(std::process::id());
    end.bell.set_state(WorkerState::Running);
    let mut buf = vec![0.0f32; region.layout().input_samples()];
    let mut echoed = 0u64;
    let mut last_host_beat = (end.bell.host_heartbeat(), Instant::now());
    loop {
        end.bell.beat();
        let seen = end.bell.doorbell();
        match end.commands.pop() {
            Ok(Some((_, Command::Shutdown))) => return 0,
            Ok(_) => {}
            Err(e) => {
                eprintln!("peer: command ring: {e}");
                return 4;
            }
        }
        let mut did = false;
        loop {
            match end.audio_out.free_slots() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("peer: {e}");
                    return 4;
                }
            }
            match end.audio_in.pop(&mut buf) {
                Ok(Some(cycle)) => {
                    end.audio_out
                        .push(cycle, &buf)
                        .expect("push after free_slots > 0");
                    echoed += 1;
                    did = true;
                    if scribble_after == Some(echoed) {
                        end.bell.signal_done();
                        region.scribble(echoed);
                        return 0;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("peer: {e}");
                    return 4;
                }
            }
        }
        if did {
            end.bell.signal_done();
        } else {
            end.bell
                .wait_doorbell(seen, MonoTime::now() + Duration::from_millis(100));
        }
        let hb = end.bell.host_heartbeat();
        if hb != last_host_beat.0 {
            last_host_beat = (hb, Instant::now());
        } else if last_host_beat.1.elapsed() > Duration::from_secs(20) {
            eprintln!("peer: host heartbeat stopped; exiting");
            return 5;
        }
    }
}

// ---------------------------------------------------------------- host side

/// Starts this binary as a peer in `mode`, handing it the region through a duplicate
/// of the fd without close-on-exec (`dup` clears the flag).
fn spawn_peer(region: &HostRegion, mode: &str) -> Child {
    let dup = nix::unistd::dup(region.fd()).expect("dup region fd");
    let child = Proc::new(std::env::current_exe().expect("current_exe"))
        .env(PEER_ENV, mode)
        .env(FD_ENV, dup.as_raw_fd().to_string())
        .spawn()
        .expect("spawn peer");
    drop(dup); // the child has its own copy now
    child
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        assert!(
            start.elapsed() < within,
            "peer {} did not exit within {within:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Streams `n` blocks starting at `first` through the peer, keeping up to the ring's
/// capacity in flight; checks every echoed block's tag, order and content.
/// Returns Err(cycle) if no progress was made for `stall` (the next expected cycle).
fn stream(h: &mut HostEnd, first: u64, n: u64, stall: Duration) -> Result<(), u64> {
    let cap = h.audio_in.free_slots().expect("fresh ring") as u64;
    let mut inb = vec![0.0f32; h.audio_in.block_samples()];
    let mut out = vec![0.0f32; h.audio_out.block_samples()];
    let (end, mut next_push, mut next_pop) = (first + n, first, first);
    let mut last_progress = Instant::now();
    while next_pop < end {
        let seen = h.bell.done_count();
        let mut progressed = false;
        while next_push < end && next_push - next_pop < cap {
            fill_block(next_push, &mut inb);
            match h.audio_in.push(next_push, &inb) {
                Ok(()) => next_push += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("push {next_push}: {e}"),
            }
            progressed = true;
        }
        if progressed {
            h.bell.ring(next_push);
        }
        while let Some(c) = h
            .audio_out
            .pop(&mut out)
            .expect("no ring fault from an honest peer")
        {
            assert_eq!(c, next_pop, "blocks out of order");
            assert!(block_matches(c, &out), "block {c} corrupted");
            next_pop += 1;
            progressed = true;
        }
        h.bell.beat();
        if progressed {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > stall {
            return Err(next_pop);
        } else {
            h.bell
                .wait_done(seen, MonoTime::now() + Duration::from_millis(50));
        }
    }
    Ok(())
}

fn shutdown(h: &mut HostEnd, child: &mut Child) {
    h.commands
        .push(Command::Shutdown)
        .expect("command ring has room");
    h.bell.ring(0);
    let st = wait_exit(child, Duration::from_secs(30));
    assert!(st.success(), "peer exited with {st}");
}

fn echo_one_million_tagged_blocks_across_processes() {
    let _wd = Watchdog::arm("echo_one_million", Duration::from_secs(300));
    let region = HostRegion::create("echo:0", mono16(64)).expect("create region");
    let mut h = region.host_end().unwrap();
    let mut child = spawn_peer(&region, "echo");
    if let Err(at) = stream(&mut h, 0, BLOCKS, Duration::from_secs(30)) {
        let _ = child.kill();
        panic!("stream stalled at cycle {at}");
    }
    assert_eq!(region.monitor().worker_state(), WorkerState::Running);
    assert_eq!(region.monitor().worker_pid(), child.id());
    shutdown(&mut h, &mut child);
}

/// Polls for `window`: the host must see no new output and no fault (a stall).
fn assert_stalled(h: &mut HostEnd, mon: &Monitor, window: Duration) {
    let beat = mon.worker_heartbeat();
    let mut out = vec![0.0f32; h.audio_out.block_samples()];
    let start = Instant::now();
    while start.elapsed() < window {
        assert_eq!(
            h.audio_out.available(),
            Ok(0),
            "output appeared from a dead peer"
        );
        assert_eq!(h.audio_out.pop(&mut out), Ok(None));
        let seen = h.bell.done_count();
        assert_eq!(
            h.bell
                .wait_done(seen, MonoTime::now() + Duration::from_millis(20)),
            WaitOutcome::TimedOut
        );
    }
    assert_eq!(
        mon.worker_heartbeat(),
        beat,
        "heartbeat moved after SIGKILL"
    );
}

fn sigkilled_peer_stalls_then_fresh_peer_works_after_reset() {
    let _wd = Watchdog::arm("sigkill", Duration::from_secs(300));
    let layout = mono16(16);
    let region = HostRegion::create("kill:0", layout).expect("create region");
    let mon = region.monitor();
    let mut h = region.host_end().unwrap();
    let mut child = spawn_peer(&region, "echo");
    stream(&mut h, 0, 20_000, Duration::from_secs(30)).expect("first peer streams");

    // Mid-stream: fill the input ring, let the peer start on it, kill it.
    let mut inb = vec![0.0f32; layout.input_samples()];
    let mut next = 20_000u64;
    for _ in 0..layout.audio_capacity {
        fill_block(next, &mut inb);
        h.audio_in.push(next, &inb).unwrap();
        next += 1;
    }
    h.bell.ring(next);
    child.kill().expect("SIGKILL the peer");
    let st = child.wait().expect("reap");
    assert!(!st.success());

    // Whatever made it out before the kill is intact and in order...
    let mut out = vec![0.0f32; layout.output_samples()];
    let mut expect = 20_000u64;
    while let Some(c) = h
        .audio_out
        .pop(&mut out)
        .expect("no fault from a killed peer")
    {
        assert_eq!(c, expect);
        assert!(block_matches(c, &out));
        expect += 1;
    }
    // ...and then nothing moves: a stall, not corruption.
    assert_stalled(&mut h, &mon, Duration::from_millis(300));
    let r = h.wait_output(
        expect,
        &mut out,
        MonoTime::now() + Duration::from_millis(50),
    );
    assert_eq!(r, Ok(OutputStatus::Late));

    // Reset and hand the same region to a fresh peer: it works from where the host is.
    h.reset();
    assert_eq!(mon.worker_state(), WorkerState::Empty);
    let mut child = spawn_peer(&region, "echo");
    stream(&mut h, next, 20_000, Duration::from_secs(30)).expect("fresh peer streams after reset");
    shutdown(&mut h, &mut child);
}

fn interrupt_ends_the_wait_for_a_dead_peer_before_the_deadline() {
    let _wd = Watchdog::arm("interrupt", Duration::from_secs(120));
    let layout = mono16(16);
    let region = HostRegion::create("gone:0", layout).expect("create region");
    let mut h = region.host_end().unwrap();
    let interrupter = h.bell.interrupter();
    let mut child = spawn_peer(&region, "echo");
    stream(&mut h, 0, 1_000, Duration::from_secs(30)).expect("the peer streams");
    assert!(!h.bell.interrupted());

    // The host waits for a block the peer will never send (nothing was pushed for
    // it), with a deadline far away; another thread plays the supervisor: it kills
    // the peer, reaps it, then interrupts. The wait must end then, not at the deadline.
    let far = Duration::from_secs(30);
    let supervisor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        child.kill().expect("SIGKILL the peer");
        let st = child.wait().expect("reap");
        assert!(!st.success());
        let reaped = Instant::now();
        interrupter.interrupt();
        (reaped, interrupter)
    });
    let mut out = vec![0.0f32; layout.output_samples()];
    let started = Instant::now();
    let r = h.wait_output(1_000, &mut out, MonoTime::now() + far);
    let returned = Instant::now();
    let (reaped, interrupter) = supervisor.join().expect("supervisor thread");
    assert_eq!(r, Ok(OutputStatus::Late));
    assert!(h.bell.interrupted(), "the host side sees the interrupt");
    assert!(
        returned >= reaped,
        "the wait ended before the interrupt (spurious Late)"
    );
    // Behaviour, not speed: it returned because of the interrupt, long before the
    // deadline (the bound is a third of it, whatever the load).
    assert!(
        started.elapsed() < far / 3,
        "the interrupted wait took {:?} (deadline {far:?})",
        started.elapsed()
    );
    // Raised before a wait, it makes the wait return at once too.
    let r = h.wait_output(1_000, &mut out, MonoTime::now() + far);
    assert_eq!(r, Ok(OutputStatus::Late));

    // The reset for the next worker takes note of it: a fresh peer is waited for again,
    // and the same interrupter still works for the next death.
    h.reset();
    assert!(!h.bell.interrupted(), "reset acknowledges the interrupt");
    let mut child = spawn_peer(&region, "echo");
    stream(&mut h, 1_000, 1_000, Duration::from_secs(30)).expect("a fresh peer streams");
    interrupter.interrupt();
    assert!(h.bell.interrupted());
    h.reset();
    shutdown(&mut h, &mut child);
}

fn scribbling_peer_yields_faults_or_data_never_worse() {
    let _wd = Watchdog::arm("scribble", Duration::from_secs(300));
    let layout = mono16(8);
    let region = HostRegion::create("scribble:0", layout).expect("create region");
    let mon = region.monitor();
    let mut h = region.host_end().unwrap();
    let mut child = spawn_peer(&region, "scribble");
    // The peer echoes 500 blocks and then scribbles its words and every counter.
    let mut inb = vec![0.0f32; layout.input_samples()];
    let mut out = vec![0.0f32; layout.output_samples()];
    let mut faults = 0u32;
    let mut cycle = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        fill_block(cycle, &mut inb);
        match h.audio_in.push(cycle, &inb) {
            Ok(()) | Err(PushError::Full) => {}
            Err(PushError::Fault(_)) => faults += 1,
            Err(e) => panic!("{e}"),
        }
        h.bell.ring(cycle);
        match h.wait_output(cycle, &mut out, MonoTime::now() + Duration::from_millis(5)) {
            Ok(_) => {}
            Err(
                RingFault::CounterAhead { .. }
                | RingFault::CounterWentBack { .. }
                | RingFault::BadBlock { .. },
            ) => {
                faults += 1;
            }
        }
        let _ = h.events.pop();
        let _ = (
            mon.worker_state(),
            mon.worker_heartbeat(),
            mon.fault_code(),
            mon.process_ns(),
        );
        cycle += 1;
        if child.try_wait().expect("try_wait").is_some() && faults > 0 {
            break;
        }
    }
    let st = wait_exit(&mut child, Duration::from_secs(30));
    assert!(st.success(), "scribbling peer exited with {st}");
    // The garbage counters were noticed: the seed is fixed, and a pseudo-random 64-bit
    // head lands in the ring's valid window with probability ~2^-60.
    assert!(faults > 0, "scribbled counters went unnoticed");
    // The slot recovers: reset, fresh peer, clean streaming.
    h.reset();
    assert_eq!(h.audio_out.fault(), None);
    let mut child = spawn_peer(&region, "echo");
    let from = h.audio_in.position();
    stream(&mut h, from, 5_000, Duration::from_secs(30))
        .expect("fresh peer after scribble + reset");
    shutdown(&mut h, &mut child);
}
