//! Helpers shared by the ring benches: run mode, A/B interleaving, statistics, tables,
//! a watchdog, and starting a peer role by re-executing the bench binary itself.
//!
//! Every bench binary has its own `main` (`harness = false`): it first asks
//! [`peer_role`] whether it was started as somebody's peer, and only otherwise runs
//! criterion and its own interleaved measurements.

pub mod control;

use std::env;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{Ordering as AtomicOrdering, compiler_fence};
use std::thread;
use std::time::{Duration, Instant};

use criterion::Criterion;

/// Names the role a re-executed bench binary plays (unset in the benchmarking parent).
pub const PEER_ENV: &str = "SLOTPOOL_BENCH_PEER";
/// The region fd handed to a peer, as in the worker start-up contract (docs/ABI.md).
pub const REGION_FD_ENV: &str = "SLOTPOOL_REGION_FD";
/// The parent's pid, re-checked by the peer after `PR_SET_PDEATHSIG` (docs/ABI.md).
pub const PARENT_PID_ENV: &str = "SLOTPOOL_PARENT_PID";

/// How long anything in a bench may wait for its peer before the bench gives up loudly.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(20);

/// How thoroughly to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// `cargo test --benches` or `cargo bench -- --test`: every measurement once, tiny.
    Quick,
    /// `cargo bench`: the real measurement.
    Full,
    /// `cargo bench -- --list`: criterion lists its benchmarks; our tables stay silent.
    List,
}

impl RunMode {
    /// The same rule criterion 0.5 applies: `--bench` without `--test` benchmarks,
    /// anything else (notably `cargo test --benches`, which passes no `--bench`) tests.
    pub fn from_args() -> RunMode {
        let args: Vec<String> = env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        if has("--list") {
            RunMode::List
        } else if has("--test") || !has("--bench") {
            RunMode::Quick
        } else {
            RunMode::Full
        }
    }

    pub fn is_quick(self) -> bool {
        self == RunMode::Quick
    }

    /// Picks the quick or the full value of a measurement parameter.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.is_quick() { quick } else { full }
    }
}

/// Set to anything to skip the criterion part and print only the interleaved tables
/// (`scripts/bench-ring.sh --tables-only`).
pub const TABLES_ONLY_ENV: &str = "SLOTPOOL_BENCH_TABLES_ONLY";

/// Whether to run the criterion part (see [`TABLES_ONLY_ENV`]).
pub fn with_criterion() -> bool {
    env::var_os(TABLES_ONLY_ENV).is_none()
}

/// Criterion with short, fixed budgets: the interleaved tables carry the ratios, criterion
/// contributes its usual per-function mean and confidence interval.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

/// Aborts the whole process (and so, through `PR_SET_PDEATHSIG`, its peers) if the bench
/// has not finished after `limit`: a wedged peer fails `cargo test --benches` instead of
/// hanging it.
pub fn arm_watchdog(limit: Duration, what: &'static str) {
    thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            thread::sleep(limit);
            eprintln!("{what}: watchdog: not finished after {limit:?}, aborting");
            process::abort();
        })
        .expect("spawning the watchdog thread");
}

/// Which end of a producer/consumer pair a thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The bench's own thread (producer, host side).
    Bench,
    /// The peer thread or process (consumer, worker side).
    Peer,
}

/// Set to anything to leave threads unpinned.
pub const NO_PIN_ENV: &str = "SLOTPOOL_BENCH_NO_PIN";

/// Pins the calling thread to the first (bench) or second (peer) CPU it may run on, so
/// a producer and its consumer always run on different cores, whichever process they
/// live in. Without this, on a 2-core machine shared with other work both spinners
/// land on one core now and then, and a run measures the scheduler's time slice instead
/// of the ring. Returns the CPU, or `None` with fewer than two CPUs or `NO_PIN_ENV` set.
pub fn pin(side: Side) -> Option<usize> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let (bench, peer) = pin_plan()?;
    let cpu = if side == Side::Bench { bench } else { peer };
    let mut set = CpuSet::new();
    set.set(cpu).ok()?;
    sched_setaffinity(Pid::from_raw(0), &set).ok()?;
    PINNED.set(true);
    Some(cpu)
}

thread_local! {
    /// Whether [`pin`] pinned the calling thread.
    static PINNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Hands the pinning plan to a peer process (which inherits the bench thread's mask).
const PIN_PLAN_ENV: &str = "SLOTPOOL_BENCH_PIN";

/// The CPUs [`pin`] uses for the bench and the peer, if it pins at all: the first two
/// CPUs the process may use, decided once before anything is pinned (a peer process
/// gets the plan from its parent).
pub fn pin_plan() -> Option<(usize, usize)> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    static PLAN: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *PLAN.get_or_init(|| {
        if env::var_os(NO_PIN_ENV).is_some() {
            return None;
        }
        if let Ok(plan) = env::var(PIN_PLAN_ENV) {
            let (a, b) = plan.split_once(',')?;
            return Some((a.parse().ok()?, b.parse().ok()?));
        }
        let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
        let mut cpus = (0..CpuSet::count()).filter(|&c| allowed.is_set(c).unwrap_or(false));
        Some((cpus.next()?, cpus.next()?))
    })
}

/// A thread pinned to `side`'s CPU, started with the full affinity mask of the process
/// (a spawned thread inherits its creator's pinning otherwise).
pub fn spawn_pinned<T: Send + 'static>(
    side: Side,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        pin(side);
        f()
    })
}

/// How a spinning side waits for its peer: it polls again at once; and, only when the sides
/// are not pinned to different CPUs, now and then a `yield_now`, so that a peer which
/// shares our core gets to run instead of waiting for our time slice to end. Pinned, a
/// yield would only hand our CPU to unrelated work. Every variant of a bench uses this
/// same policy on both sides.
#[derive(Debug)]
pub struct Backoff {
    spins: u32,
    may_yield: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            spins: 0,
            may_yield: !PINNED.get(),
        }
    }
}

impl Backoff {
    pub fn snooze(&mut self) {
        self.spins = self.spins.wrapping_add(1);
        if self.may_yield && self.spins.is_multiple_of(1024) {
            thread::yield_now();
        } else {
            // Deliberately no `spin_loop()` (PAUSE): with it, the medians of every variant
            // sat far below their best runs in this KVM guest (likely pause-loop exiting:
            // the host deschedules a vCPU spinning on PAUSE). The fence only keeps the
            // compiler from merging polls.
            compiler_fence(AtomicOrdering::SeqCst);
        }
    }
}

/// Spins (with [`Backoff`]) until `done` returns true. Panics with `what` if that takes longer than
/// [`PEER_TIMEOUT`]: a dead or wedged peer ends the bench, it never hangs it.
pub fn spin_until(what: &str, mut done: impl FnMut() -> bool) {
    let mut backoff = Backoff::default();
    let mut started: Option<Instant> = None;
    while !done() {
        backoff.snooze();
        if backoff.spins.is_multiple_of(256) {
            let t0 = *started.get_or_insert_with(Instant::now);
            assert!(
                t0.elapsed() < PEER_TIMEOUT,
                "{what}: no progress for {PEER_TIMEOUT:?}; is the peer alive?"
            );
        }
    }
}

/// The layout of the audio benches: `channels` in and out, `capacity` blocks of
/// `frames`, 64 records each way.
pub fn audio_layout(channels: u32, frames: u32, capacity: u32) -> slotpool_ring::SlotLayout {
    slotpool_ring::SlotLayout {
        channels_in: channels,
        channels_out: channels,
        block_frames: frames,
        audio_capacity: capacity,
        command_capacity: 64,
        event_capacity: 64,
    }
}

/// The failed tries of a hot producer loop (a full ring), for the timed part of a run.
///
/// A try costs a counter and a compiler fence; the clock is read once in 65536 tries in
/// a row, so a dead peer still ends the bench after [`PEER_TIMEOUT`]. [`spin_until`] builds a
/// backoff, a clock slot and a closure for every wait: per pushed block that slowed
/// `ring_handoff`'s ring by 26 % and rtrb by 10 % at 256 frames (docs/PERFORMANCE.md), so
/// the per-block loops that are timed use this instead, for every variant alike.
#[derive(Default)]
pub struct Tries {
    failed: u32,
    deadline: Option<Instant>,
}

impl Tries {
    /// One more failed try.
    #[inline]
    pub fn again(&mut self, what: &str) {
        self.failed = self.failed.wrapping_add(1);
        if self.failed.is_multiple_of(1 << 16) {
            self.check(what);
        }
        compiler_fence(AtomicOrdering::SeqCst);
    }

    /// The try succeeded: the next wait starts afresh.
    #[inline]
    pub fn done(&mut self) {
        self.failed = 0;
        self.deadline = None;
    }

    #[cold]
    fn check(&mut self, what: &str) {
        let now = Instant::now();
        let deadline = *self.deadline.get_or_insert(now + PEER_TIMEOUT);
        assert!(
            now < deadline,
            "{what}: no progress for {PEER_TIMEOUT:?}; is the peer alive?"
        );
    }
}

/// Measures every one of `variants` once per round, `rounds` times, alternating the
/// order (A B C, then C B A, ...) so that neither slow drift of the machine nor going
/// first favours one of them. `measure(v)` returns one value of variant `v`; the result
/// holds them per variant, in round order.
pub fn interleave(
    rounds: usize,
    variants: usize,
    mut measure: impl FnMut(usize) -> f64,
) -> Vec<Vec<f64>> {
    let mut results = vec![Vec::with_capacity(rounds); variants];
    for round in 0..rounds {
        for k in 0..variants {
            let v = if round.is_multiple_of(2) {
                k
            } else {
                variants - 1 - k
            };
            results[v].push(measure(v));
        }
    }
    results
}

/// Length of one timed run, in the unit `run` counts: about `target` when undisturbed.
///
/// Runs are kept short on purpose: on a shared machine, other work preempts a spinning
/// side every few milliseconds; short runs are mostly either clean or disturbed, and the
/// median over many interleaved rounds then reflects the clean ones. The probe takes the
/// fastest of several tries so that one disturbed probe does not shrink every run.
pub fn calibrate(target: Duration, mut run: impl FnMut(u64) -> Duration) -> u64 {
    let probe = 500;
    let best = (0..7).map(|_| run(probe)).min().expect("probes");
    let n = probe as f64 * target.as_secs_f64() / best.as_secs_f64().max(1e-9);
    (n as u64).clamp(probe, 10_000_000)
}

/// Calls `transfer` (untimed) until it has moved data for `WARM_UP`, before a timed
/// run. The peer slept until the run started; on this VM adding the warm-up moved the
/// medians of 2 ms runs close to the best runs (not in every run: the machine has slow
/// phases it does not remove).
pub fn warm_up(mut transfer: impl FnMut() -> Duration) {
    let mut spent = Duration::ZERO;
    while spent < WARM_UP {
        spent += transfer();
    }
}

pub const WARM_UP: Duration = Duration::from_micros(500);

/// Median of a non-empty sample.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    assert!(n > 0, "median of an empty sample");
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Median of the per-round ratios `a[i] / b[i]`: the two were measured back to back in
/// the same round, so their ratio cancels most of what the machine did meanwhile.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&ratios)
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending sorted, non-empty sample.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    assert!(!sorted.is_empty(), "percentile of an empty sample");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Prints a plain-text table with right-aligned columns (the first column left-aligned).
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == 0 {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("  {cell:>w$}"));
            }
        }
        out
    };
    println!("\n## {title}\n");
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    println!("{}", line(&header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("{}", line(&rule));
    for row in rows {
        println!("{}", line(row));
    }
}

/// One line naming the machine and its load, printed above every table.
pub fn print_machine() {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    // Counted from /proc/cpuinfo: available_parallelism() would see the pinned thread.
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let pinning = match pin_plan() {
        Some((bench, peer)) => format!("bench side on cpu {bench}, peer side on cpu {peer}"),
        None => "threads not pinned".into(),
    };
    println!(
        "machine: {cpus} cpus, {} (family {} model {}), loadavg {}; {pinning}",
        field("model name"),
        field("cpu family"),
        field("model"),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Formats a count per second with an SI prefix (`12.3 M`).
pub fn si(per_second: f64) -> String {
    if per_second >= 1e9 {
        format!("{:.2} G", per_second / 1e9)
    } else if per_second >= 1e6 {
        format!("{:.2} M", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k", per_second / 1e3)
    } else {
        format!("{per_second:.1} ")
    }
}

/// Starts this very bench binary again as `role`, handing it `region` as an inherited fd.
///
/// The region fd is close-on-exec (as the ring creates it); a `dup` of it is not, so the
/// dup survives the exec and the child finds its number in [`REGION_FD_ENV`]. The dup is
/// closed here right after the spawn. The benches spawn from their main thread only, so
/// no other child can inherit the dup by accident.
pub fn spawn_peer(
    role: &str,
    region: BorrowedFd<'_>,
    extra_env: &[(&str, String)],
) -> io::Result<Child> {
    // dup(2) never sets FD_CLOEXEC on the new descriptor.
    let inherited = nix::unistd::dup(region)?;
    let flags = nix::fcntl::fcntl(&inherited, nix::fcntl::FcntlArg::F_GETFD)?;
    debug_assert_eq!(flags & libc::FD_CLOEXEC, 0, "dup must clear close-on-exec");
    let child = Command::new(env::current_exe()?)
        .env(PEER_ENV, role)
        .env(REGION_FD_ENV, inherited.as_raw_fd().to_string())
        .env(PARENT_PID_ENV, process::id().to_string())
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .envs(pin_plan().map(|(a, b)| (PIN_PLAN_ENV, format!("{a},{b}"))))
        .stdin(Stdio::null())
        .spawn()?;
    drop(inherited);
    Ok(child)
}

/// The role this process was started for, if it is a peer (see [`spawn_peer`]).
pub fn peer_role() -> Option<String> {
    env::var(PEER_ENV).ok()
}

/// In a peer: dies with the parent, then takes ownership of the inherited region fd.
/// Exits with status 2 and a message if started any other way.
pub fn take_inherited_region() -> OwnedFd {
    let fail = |why: String| -> ! {
        eprintln!("bench peer: {why} (this role is started by the bench itself)");
        process::exit(2);
    };
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        fail(format!("PR_SET_PDEATHSIG failed: {e}"));
    }
    let parent: i32 = env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fail(format!("{PARENT_PID_ENV} is not set")));
    if nix::unistd::getppid().as_raw() != parent {
        fail("the parent exited before the peer started".into());
    }
    let fd: RawFd = env::var(REGION_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .unwrap_or_else(|| fail(format!("{REGION_FD_ENV} is not a file descriptor number")));
    // SAFETY: `spawn_peer` dup'd the region into this fd number for us alone and wrote the
    // number into the environment; nothing else in this freshly exec'd process owns it, so
    // taking ownership once is sound. `fcntl` below rejects a number that is not open.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = nix::fcntl::fcntl(owned.as_fd(), nix::fcntl::FcntlArg::F_GETFD) {
        // Forget the number without closing it: it was not ours to close.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(owned);
        fail(format!("{REGION_FD_ENV}={fd} is not open: {e}"));
    }
    owned
}

/// Waits for a peer process and fails loudly if it did not exit cleanly.
pub fn reap_peer(mut child: Child, what: &str) {
    let deadline = Instant::now() + PEER_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(status.success(), "{what}: peer exited with {status}");
                return;
            }
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                panic!("{what}: peer did not exit within {PEER_TIMEOUT:?} after shutdown");
            }
            Err(e) => panic!("{what}: waiting for the peer: {e}"),
        }
    }
}
