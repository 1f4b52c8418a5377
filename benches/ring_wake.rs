//! Wake round trip host -> worker -> host through the region's doorbell and done futexes,
//! against an in-process futex round trip between two threads.
//!
//! * `ring bells xproc`: `HostBell::ring`, the worker process sleeping in
//!   `WorkerBell::wait_doorbell_untimed` (the worker loop's wait: `FUTEX_WAIT`, no timeout,
//!   see docs/ABI.md "Idle rings") wakes and answers with `signal_done`, the host sleeping
//!   in `HostBell::wait_done` (an absolute CLOCK_MONOTONIC deadline, as on the audio
//!   thread) wakes. Shared futexes on the memfd region, the waiting-flag protocol of
//!   docs/ABI.md.
//! * `ring bells threads`: the same calls with the worker side on a thread of this
//!   process (splits the cost of the process boundary from the cost of the protocol).
//! * `futex threads (libc, private)`: the textbook in-process ping-pong written with libc
//!   directly: two `AtomicU32` words, `FUTEX_WAIT_PRIVATE` without timeout, an
//!   unconditional `FUTEX_WAKE_PRIVATE` after each bump. The target's reference.
//! * `futex threads (libc, shared + deadline)`: the same ping-pong with non-private
//!   futexes and `FUTEX_WAIT_BITSET` with an absolute deadline on both sides (the ring's
//!   calls before the worker's wait lost its timeout); `shared` (non-private, no timeout
//!   on either side) and `private + deadline` split that cost further. The ring now sits
//!   between `shared` (its worker side) and `shared + deadline` (its host side).
//!
//! Each runs in two placements: the peer pinned to the other CPU (cross-core) and to the
//! bench's own CPU (same-core).
//!
//! Every round trip is checked: the worker sees the cycle the host rang for (in order)
//! and the host sees exactly one `done` per ring. The first rounds are a verification
//! pass; the checks stay on while timing. A custom loop measures batches of round trips
//! per variant, interleaved, and prints p50/p99/p99.9/max of all of them; criterion
//! measures the mean.

#[allow(dead_code)] // shared by all bench binaries; each uses a subset
mod common;

use std::process::{self, Child};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::control::check_peer;
use common::{PEER_TIMEOUT, RunMode, Side, median, percentile, print_machine, print_table};
use criterion::{BenchmarkId, Criterion};
use slotpool_ring::{
    HostBell, HostRegion, Monitor, MonoTime, SlotLayout, WaitOutcome, WorkerBell, WorkerRegion,
};

const ROLE: &str = "wake-echo";
/// Tells the peer process to pin itself to the bench's CPU (the same-core placement).
const SAME_CPU_ENV: &str = "SLOTPOOL_BENCH_SAME_CPU";
/// The cycle value that tells the worker side to exit.
const STOP_CYCLE: u64 = u64::MAX;
/// Fault code the worker stores when it sees a cycle out of order.
const FAULT_CYCLE: u32 = 0xbad0_c1c1;

fn layout() -> SlotLayout {
    SlotLayout {
        channels_in: 1,
        channels_out: 1,
        block_frames: 64,
        audio_capacity: 2,
        command_capacity: 2,
        event_capacity: 2,
    }
}

// ---------------------------------------------------------------- ring bells

/// The worker side: answers every ring with `signal_done`, after checking that the host
/// rang for the next cycle. Exits when rung for `STOP_CYCLE`. Sleeps untimed, as the
/// worker loop does: the host rings for every round trip and for the stop, and a peer
/// process whose host dies is killed by its death signal.
///
/// It compares the host's cycle word with the last cycle it answered instead of trusting
/// its first look at the doorbell: the host may ring before this side starts.
fn bell_echo(bell: &WorkerBell) -> Result<(), String> {
    let mut answered = 0u64;
    loop {
        // Doorbell first (Acquire), then the cycle stored before that bump: if the cycle
        // still looks old, a later ring changes the doorbell and the wait returns at once.
        let seen = bell.doorbell();
        let cycle = bell.cycle();
        if cycle == STOP_CYCLE {
            return Ok(());
        }
        if cycle != answered {
            if cycle != answered + 1 {
                bell.set_fault(FAULT_CYCLE);
                return Err(format!("rung for cycle {cycle} after {answered}"));
            }
            answered = cycle;
            bell.signal_done();
            continue;
        }
        let _ = bell.wait_doorbell_untimed(seen);
    }
}

fn run_peer_process() -> ! {
    let fd = common::take_inherited_region();
    common::pin(if std::env::var_os(SAME_CPU_ENV).is_some() {
        Side::Bench
    } else {
        Side::Peer
    });
    let result = WorkerRegion::open(fd)
        .map_err(|e| e.to_string())
        .and_then(|region| region.worker_end().map_err(|e| e.to_string()))
        .and_then(|end| bell_echo(&end.bell));
    match result {
        Ok(()) => process::exit(0),
        Err(e) => {
            eprintln!("ring_wake peer: {e}");
            process::exit(1);
        }
    }
}

enum Peer {
    Process(Child),
    Thread(JoinHandle<Result<(), String>>),
}

struct BellRig {
    what: &'static str,
    bell: HostBell,
    monitor: Monitor,
    cycle: u64,
    peer: Option<Peer>,
    // Declared last: dropped after the bell that maps it.
    _region: HostRegion,
}

impl BellRig {
    fn start(cross_process: bool, peer_side: Side, verify: usize) -> BellRig {
        let what = if cross_process {
            "ring bells xproc"
        } else {
            "ring bells threads"
        };
        let region = HostRegion::create("bench:wake", layout())
            .unwrap_or_else(|e| panic!("{what}: creating the region: {e}"));
        let host = region
            .host_end()
            .unwrap_or_else(|e| panic!("{what}: host end: {e}"));
        let monitor = region.monitor();
        let peer = if cross_process {
            Peer::Process(
                common::spawn_peer(ROLE, region.fd(), &same_cpu_env(peer_side))
                    .unwrap_or_else(|e| panic!("{what}: starting the peer process: {e}")),
            )
        } else {
            let fd = region
                .fd()
                .try_clone_to_owned()
                .expect("dup of the region fd");
            let worker = WorkerRegion::open(fd)
                .unwrap_or_else(|e| panic!("{what}: opening the region: {e}"));
            let end = worker
                .worker_end()
                .unwrap_or_else(|e| panic!("{what}: worker end: {e}"));
            Peer::Thread(common::spawn_pinned(peer_side, move || {
                let _keep = worker;
                bell_echo(&end.bell)
            }))
        };
        let mut rig = BellRig {
            what,
            bell: host.bell,
            monitor,
            cycle: 0,
            peer: Some(peer),
            _region: region,
        };
        // Correctness first: every ring answered exactly once (checked in round_trip).
        for _ in 0..verify {
            rig.round_trip();
        }
        rig
    }

    /// One ring and the wait for its answer; returns its duration.
    fn round_trip(&mut self) -> Duration {
        self.cycle += 1;
        let t0 = Instant::now();
        let seen = self.bell.done_count();
        self.bell.ring(self.cycle);
        let deadline = MonoTime::now() + PEER_TIMEOUT;
        while self.bell.done_count() == seen {
            if self.bell.wait_done(seen, deadline) == WaitOutcome::TimedOut {
                check_peer(&self.monitor, self.what);
                panic!(
                    "{}: no answer to cycle {} within {PEER_TIMEOUT:?}",
                    self.what, self.cycle
                );
            }
        }
        let elapsed = t0.elapsed();
        let done = self.bell.done_count();
        assert_eq!(
            done,
            seen.wrapping_add(1),
            "{}: one ring must bring exactly one done",
            self.what
        );
        elapsed
    }
}

impl Drop for BellRig {
    fn drop(&mut self) {
        self.bell.ring(STOP_CYCLE);
        if thread::panicking() {
            return;
        }
        match self.peer.take() {
            Some(Peer::Process(child)) => common::reap_peer(child, self.what),
            Some(Peer::Thread(h)) => match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{}: peer thread: {e}", self.what),
                Err(_) => panic!("{}: peer thread panicked", self.what),
            },
            None => {}
        }
        check_peer(&self.monitor, self.what);
    }
}

// ---------------------------------------------------------------- libc futex baseline

/// Which futex calls the libc ping-pong makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// The textbook in-process futex: `FUTEX_WAIT_PRIVATE` without a timeout,
    /// `FUTEX_WAKE_PRIVATE`. The target's reference.
    Private,
    /// Private, but waits with `FUTEX_WAIT_BITSET_PRIVATE` and an absolute deadline.
    PrivateDeadline,
    /// Non-private (`FUTEX_WAIT`/`FUTEX_WAKE`), no timeout.
    Shared,
    /// The calls the ring makes: non-private (its words are shared between processes)
    /// and `FUTEX_WAIT_BITSET` with an absolute CLOCK_MONOTONIC deadline (the host never
    /// waits past its deadline).
    SharedDeadline,
}

impl Flavor {
    fn private(self) -> bool {
        matches!(self, Flavor::Private | Flavor::PrivateDeadline)
    }

    fn deadline(self) -> bool {
        matches!(self, Flavor::PrivateDeadline | Flavor::SharedDeadline)
    }
}

/// The diagnostic flavours are plain libc ping-pongs on heap words of this process, with
/// the same unconditional wake as `Private`; only the futex calls differ.
fn futex_wait(flavor: Flavor, word: &AtomicU32, expected: u32) {
    let private = if flavor.private() {
        libc::FUTEX_PRIVATE_FLAG
    } else {
        0
    };
    if flavor.deadline() {
        let deadline = (MonoTime::now() + Duration::from_millis(200)).as_nanos();
        let ts = libc::timespec {
            tv_sec: (deadline / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `word` is a live, aligned u32 for the whole call (an AtomicU32 kept
        // alive by the Arc of its owner), only read by the kernel; `ts` is a valid
        // timespec the kernel only reads, an absolute CLOCK_MONOTONIC time
        // (FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME). Any result (woken, EAGAIN,
        // EINTR, ETIMEDOUT) is fine: the caller re-checks the word in a loop.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | private,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            );
        }
    } else {
        // SAFETY: as above for `word`; a null timeout means none (the bench's watchdog
        // covers a peer that never answers).
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | private,
                expected,
                std::ptr::null::<libc::timespec>(),
            );
        }
    }
}

fn futex_wake(flavor: Flavor, word: &AtomicU32) {
    let private = if flavor.private() {
        libc::FUTEX_PRIVATE_FLAG
    } else {
        0
    };
    // SAFETY: `word` is a live, aligned u32 for the call; FUTEX_WAKE touches no memory,
    // it only wakes threads queued on the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | private,
            1,
        );
    }
}

#[derive(Default)]
struct PingPong {
    ping: AtomicU32,
    pong: AtomicU32,
    stop: AtomicBool,
}

struct FutexRig {
    flavor: Flavor,
    shared: Arc<PingPong>,
    peer: Option<JoinHandle<()>>,
}

impl FutexRig {
    fn start(flavor: Flavor, peer_side: Side, verify: usize) -> FutexRig {
        let shared = Arc::new(PingPong::default());
        let s = Arc::clone(&shared);
        let peer = common::spawn_pinned(peer_side, move || {
            // Starts from the initial value, not from a first look: the bench may ping
            // before this thread runs. Acquire loads pair with the Release RMW of `ping`
            // in `round_trip`.
            let mut seen = 0;
            loop {
                while s.ping.load(Ordering::Acquire) == seen {
                    futex_wait(flavor, &s.ping, seen);
                }
                seen = s.ping.load(Ordering::Acquire);
                if s.stop.load(Ordering::Acquire) {
                    return;
                }
                // Release pairs with the Acquire loads of `pong` in `round_trip`.
                s.pong.fetch_add(1, Ordering::Release);
                futex_wake(flavor, &s.pong);
            }
        });
        let mut rig = FutexRig {
            flavor,
            shared,
            peer: Some(peer),
        };
        for _ in 0..verify {
            rig.round_trip();
        }
        rig
    }

    fn round_trip(&mut self) -> Duration {
        let s = &*self.shared;
        let t0 = Instant::now();
        let seen = s.pong.load(Ordering::Acquire);
        // Release pairs with the Acquire loads of `ping` in the peer.
        s.ping.fetch_add(1, Ordering::Release);
        futex_wake(self.flavor, &s.ping);
        while s.pong.load(Ordering::Acquire) == seen {
            futex_wait(self.flavor, &s.pong, seen);
        }
        let elapsed = t0.elapsed();
        assert_eq!(
            s.pong.load(Ordering::Acquire),
            seen.wrapping_add(1),
            "futex: one ping must bring exactly one pong"
        );
        elapsed
    }
}

impl Drop for FutexRig {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ping.fetch_add(1, Ordering::Release);
        futex_wake(self.flavor, &self.shared.ping);
        if let Some(h) = self.peer.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------- measurement

struct Rigs {
    xproc: BellRig,
    threads: BellRig,
    futex: [FutexRig; 4],
}

const VARIANTS: [&str; 6] = [
    "ring bells xproc",
    "ring bells threads",
    "futex threads (libc, private)",
    "futex threads (libc, shared + deadline)",
    "futex threads (libc, shared)",
    "futex threads (libc, private + deadline)",
];
/// The futex flavour of each `futex threads` variant, in `VARIANTS` order from index 2.
const FLAVORS: [Flavor; 4] = [
    Flavor::Private,
    Flavor::SharedDeadline,
    Flavor::Shared,
    Flavor::PrivateDeadline,
];

impl Rigs {
    fn round_trip(&mut self, variant: usize) -> Duration {
        match variant {
            0 => self.xproc.round_trip(),
            1 => self.threads.round_trip(),
            v => self.futex[v - 2].round_trip(),
        }
    }
}

fn same_cpu_env(peer_side: Side) -> Vec<(&'static str, String)> {
    if peer_side == Side::Bench {
        vec![(SAME_CPU_ENV, "1".into())]
    } else {
        Vec::new()
    }
}

fn criterion_group(c: &mut Criterion, placement: &str, rigs: &mut Rigs) {
    let mut group = c.benchmark_group(format!("wake_round_trip/{placement}"));
    for (variant, name) in VARIANTS.iter().enumerate() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| rigs.round_trip(variant)).sum())
        });
    }
    group.finish();
}

fn main() {
    if let Some(role) = common::peer_role() {
        match role.as_str() {
            ROLE => run_peer_process(),
            other => {
                eprintln!("ring_wake: unknown peer role {other:?}");
                process::exit(2);
            }
        }
    }
    let mode = RunMode::from_args();
    common::arm_watchdog(
        mode.pick(Duration::from_secs(180), Duration::from_secs(1800)),
        "ring_wake",
    );
    common::pin(Side::Bench);
    // Both placements when pinning is possible: the peer on the other CPU (a wake needs an
    // inter-processor interrupt; on a VM, waking an idle vCPU) and on the bench's own CPU
    // (a wake is a context switch on one CPU).
    let placements: Vec<(&str, Side)> = if common::pin_plan().is_some() {
        vec![("cross-core", Side::Peer), ("same-core", Side::Bench)]
    } else {
        vec![("unpinned", Side::Peer)]
    };
    let mut c = common::criterion();
    let mut reports = Vec::new();
    for (placement, peer_side) in placements {
        reports.push(measure(&mut c, placement, peer_side, mode));
    }
    c.final_summary();
    if mode == RunMode::List {
        return;
    }
    print_machine();
    for report in reports {
        report();
    }
}

/// Verifies and measures one placement; returns the printing of its tables.
fn measure(
    c: &mut Criterion,
    placement: &'static str,
    peer_side: Side,
    mode: RunMode,
) -> Box<dyn FnOnce()> {
    let verify = mode.pick(16, 2000);
    let mut rigs = Rigs {
        xproc: BellRig::start(true, peer_side, verify),
        threads: BellRig::start(false, peer_side, verify),
        futex: FLAVORS.map(|flavor| FutexRig::start(flavor, peer_side, verify)),
    };
    if mode != RunMode::List {
        println!(
            "ring_wake {placement}: {verify} round trips verified (cycle in order, one done per ring) for every variant"
        );
    }
    if common::with_criterion() {
        criterion_group(c, placement, &mut rigs);
    }
    if mode == RunMode::List {
        return Box::new(|| {});
    }

    let batch = mode.pick(16, 10_000);
    let rounds = mode.pick(1, 21);
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(batch * rounds); VARIANTS.len()];
    let batch_medians = common::interleave(rounds, VARIANTS.len(), |v| {
        let start = samples[v].len();
        for _ in 0..batch {
            let ns = rigs.round_trip(v).as_nanos() as u64;
            samples[v].push(ns);
        }
        let batch: Vec<f64> = samples[v][start..].iter().map(|&ns| ns as f64).collect();
        median(&batch)
    });
    drop(rigs);

    Box::new(move || print_wake_tables(placement, rounds, batch, samples, &batch_medians))
}

fn print_wake_tables(
    placement: &str,
    rounds: usize,
    batch: usize,
    mut samples: Vec<Vec<u64>>,
    batch_medians: &[Vec<f64>],
) {
    let mut rows = Vec::new();
    let mut stats = Vec::new();
    for (name, s) in VARIANTS.iter().zip(samples.iter_mut()) {
        s.sort_unstable();
        let p = [
            percentile(s, 50.0),
            percentile(s, 99.0),
            percentile(s, 99.9),
            *s.last().expect("samples"),
        ];
        let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
        rows.push(vec![
            name.to_string(),
            format!("{:.1}", p[0] as f64 / 1e3),
            format!("{:.1}", p[1] as f64 / 1e3),
            format!("{:.1}", p[2] as f64 / 1e3),
            format!("{:.1}", p[3] as f64 / 1e3),
            format!("{:.1}", mean / 1e3),
            s.len().to_string(),
        ]);
        stats.push(p);
    }
    print_table(
        &format!(
            "wake round trip host -> worker -> host, {placement} (us; {rounds} interleaved batches of {batch}, pooled)"
        ),
        &["variant", "p50", "p99", "p99.9", "max", "mean", "samples"],
        &rows,
    );
    let ratio_row = |a: usize, b: usize, label: &str| {
        vec![
            label.to_string(),
            format!("{:.2}", stats[a][0] as f64 / stats[b][0] as f64),
            format!("{:.2}", stats[a][1] as f64 / stats[b][1] as f64),
            format!("{:.2}", stats[a][2] as f64 / stats[b][2] as f64),
            format!("{:.2}", stats[a][3] as f64 / stats[b][3] as f64),
            format!(
                "{:.2}",
                common::paired_ratio(&batch_medians[a], &batch_medians[b])
            ),
        ]
    };
    print_table(
        &format!("wake ratios, {placement} (target: xproc / futex threads <= 1.2)"),
        &[
            "ratio",
            "p50",
            "p99",
            "p99.9",
            "max",
            "median of per-batch p50 ratios",
        ],
        &[
            ratio_row(0, 2, "xproc / futex threads"),
            ratio_row(1, 2, "ring threads / futex threads"),
            ratio_row(0, 1, "xproc / ring threads"),
            ratio_row(3, 2, "futex shared+deadline / futex private"),
            ratio_row(4, 2, "futex shared / futex private"),
            ratio_row(5, 2, "futex private+deadline / futex private"),
            ratio_row(0, 3, "xproc / futex shared+deadline"),
        ],
    );
}
