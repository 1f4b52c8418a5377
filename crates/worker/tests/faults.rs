//! Each fault-injection mode of the real `slotpool-worker` binary does what `--help` says.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use slotpool_ring::{Command as Cmd, Event, OutputStatus, WorkerState};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_slotpool-worker"))
}

fn blocks(host: &mut TestHost, n: u64) {
    let layout = host.layout;
    let mut out = vec![0.0; layout.output_samples()];
    for b in 0..n {
        host.process(&test_input(&layout, b), &mut out)
            .unwrap_or_else(|e| panic!("block {b}: {e}"));
    }
}

/// Pushes one block and waits up to `limit` for it; returns whether it came back.
fn try_block(host: &mut TestHost, limit: Duration) -> bool {
    let layout = host.layout;
    let mut out = vec![0.0; layout.output_samples()];
    matches!(
        host.process_raw(&test_input(&layout, 0), &mut out, limit),
        Ok(OutputStatus::Ready)
    )
}

fn crash_after_three_blocks(fault: &str) -> (std::process::ExitStatus, String) {
    let mut host = TestHost::new("crash:0", stereo(32));
    let mut w = host.spawn_ready(
        exe(),
        &["--module", "sine", "--fault", fault, "--fault-after", "3"],
    );
    blocks(&mut host, 3);
    assert!(
        !try_block(&mut host, Duration::from_millis(500)),
        "block 4 must not come back"
    );
    let status = w.exit_status();
    (status, w.stderr_text())
}

#[test]
fn segv_after_n_blocks_dies_by_sigsegv() {
    let _dog = Watchdog::arm("segv", PATIENCE * 3);
    let (status, err) = crash_after_three_blocks("segv");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "{}: {err}",
        describe(status)
    );
}

#[test]
fn abort_after_n_blocks_dies_by_sigabrt() {
    let _dog = Watchdog::arm("abort", PATIENCE * 3);
    let (status, err) = crash_after_three_blocks("abort");
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{}: {err}",
        describe(status)
    );
}

#[test]
fn exit_n_after_n_blocks_exits_with_that_status() {
    let _dog = Watchdog::arm("exit", PATIENCE * 3);
    let (status, err) = crash_after_three_blocks("exit:42");
    assert_eq!(status.code(), Some(42), "{}: {err}", describe(status));
}

#[test]
fn fault_on_ping_fires_only_for_its_token() {
    let _dog = Watchdog::arm("on_ping", PATIENCE * 3);
    let mut host = TestHost::new("ping:0", stereo(32));
    let mut w = host.spawn_ready(
        exe(),
        &[
            "--module",
            "gain",
            "--fault",
            "exit:7",
            "--fault-on-ping",
            "99",
        ],
    );
    let (a, _) = host.send(Cmd::Ping { token: 1 });
    assert!(matches!(a, Event::Ack { .. }));
    blocks(&mut host, 10);
    host.end.commands.push(Cmd::Ping { token: 99 }).unwrap();
    host.end.bell.ring(host.cycle);
    assert_eq!(w.exit_status().code(), Some(7));
}

#[test]
fn hang_stops_the_heartbeat_and_ignores_sigterm() {
    let _dog = Watchdog::arm("hang", PATIENCE * 3);
    let mut host = TestHost::new("hang:0", stereo(32));
    let mut w = host.spawn_ready(
        exe(),
        &["--module", "sine", "--fault", "hang", "--fault-after", "2"],
    );
    blocks(&mut host, 2);
    assert!(
        !try_block(&mut host, Duration::from_millis(300)),
        "hung worker answered"
    );
    let h0 = host.monitor.worker_heartbeat();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(host.monitor.worker_heartbeat(), h0, "heartbeat stopped");
    w.signal(Signal::SIGTERM);
    assert!(
        w.wait_exit(Duration::from_millis(300)).is_none(),
        "a hung worker does not answer SIGTERM"
    );
    assert_eq!(process_state(w.pid()), Some('R'), "busy-looping");
    w.signal(Signal::SIGKILL);
    assert_eq!(w.exit_status().signal(), Some(libc::SIGKILL));
}

#[test]
fn stop_freezes_the_process_until_sigcont() {
    let _dog = Watchdog::arm("stop", PATIENCE * 3);
    let mut host = TestHost::new("stop:0", stereo(32));
    let mut w = host.spawn_ready(
        exe(),
        &["--module", "sine", "--fault", "stop", "--fault-after", "1"],
    );
    blocks(&mut host, 1);
    assert!(
        !try_block(&mut host, Duration::from_millis(300)),
        "stopped worker answered"
    );
    assert_eq!(process_state(w.pid()), Some('T'), "stopped");
    let h0 = host.monitor.worker_heartbeat();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        host.monitor.worker_heartbeat(),
        h0,
        "no heartbeat while stopped"
    );
    w.signal(Signal::SIGCONT);
    let until = Instant::now() + PATIENCE;
    while host.monitor.worker_heartbeat() == h0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        host.monitor.worker_heartbeat() > h0,
        "beats again after SIGCONT"
    );
    assert!(
        try_block(&mut host, PATIENCE),
        "processes again after SIGCONT"
    );
    w.signal(Signal::SIGTERM);
    assert_eq!(w.exit_status().code(), Some(0));
}

#[test]
fn slow_delays_every_block_by_its_sleep() {
    let _dog = Watchdog::arm("slow", PATIENCE * 3);
    let mut host = TestHost::new("slow:0", stereo(32));
    let _w = host.spawn_ready(exe(), &["--module", "passthrough", "--fault", "slow:60000"]);
    let start = Instant::now();
    blocks(&mut host, 3);
    assert!(
        start.elapsed() >= Duration::from_millis(180),
        "3 blocks took {:?}",
        start.elapsed()
    );
    // with a deadline shorter than the sleep, the block is late
    assert!(!try_block(&mut host, Duration::from_millis(10)));
}

/// Spawns a sine worker with `--fault FAULT --fault-after 2` on a fresh region, lets it
/// process 2 blocks, and asserts that the host then sees a ring fault. Returns the host
/// (it owns the region) and the worker.
fn scribbled(fault: &str) -> (TestHost, WorkerProc) {
    let mut host = TestHost::new(&format!("{fault}:0"), stereo(32));
    let w = host.spawn_ready(
        exe(),
        &["--module", "sine", "--fault", fault, "--fault-after", "2"],
    );
    blocks(&mut host, 2);
    let layout = host.layout;
    let mut out = vec![0.0; layout.output_samples()];
    let mut fault_seen = None;
    for _ in 0..10 {
        if let Err(f) = host.process_raw(
            &test_input(&layout, 0),
            &mut out,
            Duration::from_millis(300),
        ) {
            fault_seen = Some(f);
            break;
        }
    }
    assert!(
        fault_seen.is_some(),
        "the host never saw a ring fault after the {fault}"
    );
    (host, w)
}

#[test]
fn scribble_garbles_the_region_and_the_host_sees_a_ring_fault() {
    let _dog = Watchdog::arm("scribble", PATIENCE * 3);
    let (_host, mut w) = scribbled("scribble");
    // The worker then finds the (garbled) host counters invalid itself and exits 1.
    let status = w.exit_status();
    assert_eq!(
        status.code(),
        Some(1),
        "{}: {}",
        describe(status),
        w.stderr_text()
    );
}

#[test]
fn scribble_stop_garbles_the_region_then_freezes_until_killed() {
    let _dog = Watchdog::arm("scribble-stop", PATIENCE * 3);
    let (_host, mut w) = scribbled("scribble-stop");
    // Unlike `scribble`, it does not get to trip over its garbage: it is stopped, and
    // only a kill ends it.
    let until = Instant::now() + PATIENCE;
    while process_state(w.pid()) != Some('T') && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        process_state(w.pid()),
        Some('T'),
        "stopped after the scribble"
    );
    assert!(
        w.wait_exit(Duration::from_millis(300)).is_none(),
        "no exit of its own"
    );
    w.signal(Signal::SIGKILL);
    assert_eq!(w.exit_status().signal(), Some(libc::SIGKILL));
}

#[test]
fn leak_fds_opens_one_more_fd_per_block() {
    let _dog = Watchdog::arm("leak", PATIENCE * 3);
    let mut host = TestHost::new("leak:0", stereo(32));
    let w = host.spawn_ready(exe(), &["--module", "gain", "--fault", "leak-fds"]);
    blocks(&mut host, 1);
    let before = fd_count(w.pid());
    blocks(&mut host, 10);
    assert_eq!(fd_count(w.pid()), before + 10);
}

#[test]
fn ignore_sigterm_keeps_running_until_sigkill() {
    let _dog = Watchdog::arm("ignore_term", PATIENCE * 3);
    let mut host = TestHost::new("stubborn:0", stereo(32));
    let mut w = host.spawn_ready(exe(), &["--module", "sine", "--fault", "ignore-sigterm"]);
    w.signal(Signal::SIGTERM);
    assert!(
        w.wait_exit(Duration::from_millis(400)).is_none(),
        "exited on SIGTERM"
    );
    blocks(&mut host, 2);
    w.signal(Signal::SIGKILL);
    assert_eq!(w.exit_status().signal(), Some(libc::SIGKILL));
}

#[test]
fn fork_child_leaves_a_grandchild_in_the_process_group() {
    let _dog = Watchdog::arm("fork_child", PATIENCE * 3);
    let mut host = TestHost::new("parent:0", stereo(32));
    let mut w = host.spawn_ready(exe(), &["--module", "sine", "--fault", "fork-child"]);
    let text = w
        .wait_stderr("grandchild pid ", PATIENCE)
        .expect("grandchild pid printed");
    let grandchild: i32 = text
        .split("grandchild pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("pid");
    let worker = w.pid();
    w.signal(Signal::SIGKILL);
    w.exit_status();
    std::thread::sleep(Duration::from_millis(100));
    let stat =
        std::fs::read_to_string(format!("/proc/{grandchild}/stat")).expect("grandchild alive");
    let pgid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pgid, worker, "grandchild is in the worker's process group");
    assert!(!process_dead(grandchild), "grandchild outlived the worker");
    // A stop that reaches the process group cleans it up.
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(worker), Signal::SIGKILL).unwrap();
    let until = Instant::now() + PATIENCE;
    while !process_dead(grandchild) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(process_dead(grandchild));
}

#[test]
fn slow_start_reports_ready_only_after_its_sleep() {
    let _dog = Watchdog::arm("slow_start", PATIENCE * 3);
    let host = TestHost::new("sleepy:0", stereo(32));
    let started = Instant::now();
    let mut w = host.spawn_with(
        exe(),
        &["--module", "sine", "--fault", "slow-start:500"],
        &Spawn::default(),
    );
    assert!(!w.wait_ready(Duration::from_millis(200)), "ready too early");
    assert_ne!(
        host.monitor.worker_state(),
        WorkerState::Running,
        "RUNNING before ready"
    );
    assert!(w.wait_ready(PATIENCE), "{}", w.stderr_text());
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(host.monitor.worker_state(), WorkerState::Running);
}

#[test]
fn never_ready_keeps_starting_and_beating_but_stops_on_sigterm() {
    let _dog = Watchdog::arm("never_ready", PATIENCE * 3);
    let host = TestHost::new("shy:0", stereo(32));
    let mut w = host.spawn_with(
        exe(),
        &["--module", "sine", "--fault", "never-ready"],
        &Spawn::default(),
    );
    let until = Instant::now() + PATIENCE;
    while host.monitor.worker_state() == WorkerState::Empty && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !w.wait_ready(Duration::from_millis(700)),
        "never-ready reported ready"
    );
    assert_eq!(host.monitor.worker_state(), WorkerState::Starting);
    let h0 = host.monitor.worker_heartbeat();
    std::thread::sleep(Duration::from_millis(100));
    assert!(host.monitor.worker_heartbeat() > h0, "still beating");
    w.signal(Signal::SIGTERM);
    assert_eq!(w.exit_status().code(), Some(0));
}
