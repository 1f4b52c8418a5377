//! CommandRing record rate against rtrb moving records of the same size (64 bytes).
//!
//! All variants do the same work per record: the producer encodes a `Command` into its
//! 64-byte wire form (`Command::encode`), the consumer decodes its copy
//! (`Command::decode`) and checks it. Only the transport differs: the command ring in a
//! slot region (consumer in another process, or in another thread), or an rtrb ring
//! between two threads, of plain `[u8; 64]` (alignment 1: most records straddle two
//! cache lines) and of a 64-byte-aligned record type (one record per cache line, like
//! the command ring's slots). All rings hold 64 records.
//!
//! Before anything is timed, a mixed sequence of commands (set-param, bypass, reset)
//! goes through every variant and the consumer compares each decoded command with the
//! one sent. During timed runs the consumer checks every record's seq, id and value.

#[allow(dead_code)] // shared by all bench binaries; each uses a subset
mod common;

use std::process::{self, Child};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::control::{self, check_peer, handshake, serve};
use common::{
    Backoff, RunMode, Side, median, paired_ratio, print_machine, print_table, si, spin_until,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use slotpool_ring::{
    Command, HostEnd, HostRegion, Monitor, PushError, RECORD_SIZE, SlotLayout, WorkerEnd,
    WorkerRegion,
};

/// Records per ring, for every variant.
const CAPACITY: u32 = 64;
const ROLE: &str = "command-sink";
const VERIFY_ENV: &str = "SLOTPOOL_BENCH_VERIFY";

/// What an rtrb slot holds: a record's 64 bytes, as a plain array (alignment 1, so a
/// record usually straddles two cache lines) or aligned to its own cache line (the
/// layout the command ring's slots have).
trait Record: Copy + Send + 'static {
    fn wrap(bytes: [u8; RECORD_SIZE]) -> Self;
    fn bytes(&self) -> &[u8; RECORD_SIZE];
}

impl Record for [u8; RECORD_SIZE] {
    fn wrap(bytes: [u8; RECORD_SIZE]) -> Self {
        bytes
    }
    fn bytes(&self) -> &[u8; RECORD_SIZE] {
        self
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct AlignedRecord([u8; RECORD_SIZE]);

impl Record for AlignedRecord {
    fn wrap(bytes: [u8; RECORD_SIZE]) -> Self {
        AlignedRecord(bytes)
    }
    fn bytes(&self) -> &[u8; RECORD_SIZE] {
        &self.0
    }
}

fn layout() -> SlotLayout {
    SlotLayout {
        channels_in: 1,
        channels_out: 1,
        block_frames: 64,
        audio_capacity: 2,
        command_capacity: CAPACITY,
        event_capacity: 64,
    }
}

/// The `i`-th command of the verification sequence: every kind with data, varied.
fn verify_command(i: u64) -> Command {
    match i % 4 {
        0 => Command::SetParam {
            id: i as u32,
            value: i as f32 * 0.5,
        },
        1 => Command::Bypass { on: i % 8 == 1 },
        2 => Command::Reset,
        _ => Command::SetParam {
            id: u32::MAX - i as u32,
            value: -(i as f32),
        },
    }
}

/// The `i`-th command of a timed run.
fn run_command(i: u64) -> Command {
    Command::SetParam {
        id: i as u32,
        value: (i % 1024) as f32,
    }
}

/// What a consumer knows about the run it is checking.
#[derive(Default)]
struct RunCheck {
    /// Records of this run seen so far.
    count: u64,
    /// Seq of the last one.
    last_seq: Option<u64>,
}

impl RunCheck {
    /// Checks the next record of a timed run: consecutive seq, the expected command.
    fn check(&mut self, seq: u64, command: Command) -> Result<(), String> {
        if self.last_seq.is_some_and(|p| p + 1 != seq) {
            return Err(format!("data: record seq {seq} after {:?}", self.last_seq));
        }
        if command != run_command(self.count) {
            return Err(format!(
                "data: record {} of the run is {command:?}, expected {:?}",
                self.count,
                run_command(self.count)
            ));
        }
        self.last_seq = Some(seq);
        self.count += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------- the ring's peer

/// The consumer of the ring variants, in a thread or a child process: checks the
/// verification sequence (`verify` records), then serves timed runs.
fn ring_peer(mut end: WorkerEnd, verify: u64) -> Result<(), String> {
    let mut backoff = Backoff::default();
    let started = Instant::now();
    let mut i = 0;
    while i < verify {
        match end.commands.pop().map_err(|e| e.to_string())? {
            Some((_, command)) if command == verify_command(i) => i += 1,
            Some((seq, command)) => {
                return Err(format!(
                    "data: verification record {i} (seq {seq}) is {command:?}, expected {:?}",
                    verify_command(i)
                ));
            }
            None if started.elapsed() > common::PEER_TIMEOUT => {
                return Err("verification records missing".into());
            }
            None => backoff.snooze(),
        }
    }
    // Tells the host the sequence arrived intact.
    end.bell.signal_done();
    serve(&mut end, |end, _| {
        let mut run = RunCheck::default();
        loop {
            match end.commands.pop().map_err(|e| e.to_string())? {
                Some((
                    _,
                    Command::Ping {
                        token: control::STOP,
                    },
                )) => return Ok(()),
                Some((seq, command)) => run.check(seq, command)?,
                None => backoff.snooze(),
            }
        }
    })
}

fn run_peer_process() -> ! {
    let fd = common::take_inherited_region();
    common::pin(Side::Peer);
    let verify: u64 = std::env::var(VERIFY_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let result = WorkerRegion::open(fd)
        .map_err(|e| e.to_string())
        .and_then(|region| region.worker_end().map_err(|e| e.to_string()))
        .and_then(|end| ring_peer(end, verify));
    match result {
        Ok(()) => process::exit(0),
        Err(e) => {
            eprintln!("ring_command peer: {e}");
            process::exit(1);
        }
    }
}

// ---------------------------------------------------------------- variants

enum Peer {
    Process(Child),
    Thread(JoinHandle<Result<(), String>>),
}

struct RingRig {
    what: String,
    host: HostEnd,
    monitor: Monitor,
    peer: Option<Peer>,
    // Declared last: dropped after the ends that map it.
    _region: HostRegion,
}

impl RingRig {
    fn start(cross_process: bool, verify: u64) -> RingRig {
        let what = format!(
            "command ring {}",
            if cross_process { "xproc" } else { "threads" }
        );
        let region = HostRegion::create("bench:commands", layout())
            .unwrap_or_else(|e| panic!("{what}: creating the region: {e}"));
        let mut host = region
            .host_end()
            .unwrap_or_else(|e| panic!("{what}: host end: {e}"));
        let monitor = region.monitor();
        let peer = if cross_process {
            let child = common::spawn_peer(ROLE, region.fd(), &[(VERIFY_ENV, verify.to_string())])
                .unwrap_or_else(|e| panic!("{what}: starting the peer process: {e}"));
            Peer::Process(child)
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
            Peer::Thread(common::spawn_pinned(Side::Peer, move || {
                let _keep = worker;
                ring_peer(end, verify)
            }))
        };
        // Correctness first: the verification sequence, then the peer's answer.
        let seen = host.bell.done_count();
        for i in 0..verify {
            control::send(&mut host, verify_command(i), &what);
        }
        spin_until(&what, || {
            check_peer(&monitor, &what);
            host.bell.done_count() != seen
        });
        RingRig {
            what,
            host,
            monitor,
            peer: Some(peer),
            _region: region,
        }
    }

    /// Pushes records `first..first + n` of the run and waits until the peer has
    /// consumed them all: the timed part.
    fn transfer(&mut self, first: u64, n: u64) -> Duration {
        let t0 = Instant::now();
        for i in first..first + n {
            let (producer, what) = (&mut self.host.commands, &self.what);
            spin_until(what, || match producer.push(run_command(i)) {
                Ok(_) => true,
                Err(PushError::Full) => false,
                Err(e) => panic!("{what}: push: {e}"),
            });
        }
        let (producer, what) = (&mut self.host.commands, &self.what);
        spin_until(what, || {
            producer
                .free_slots()
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                == CAPACITY
        });
        t0.elapsed()
    }

    /// Wakes the peer, warms up, times `n` records, lets the peer sleep again.
    fn run(&mut self, n: u64) -> Duration {
        handshake(&mut self.host, &self.monitor, control::RUN, &self.what);
        let mut sent = 0;
        common::warm_up(|| {
            sent += CAPACITY as u64;
            self.transfer(sent - CAPACITY as u64, CAPACITY as u64)
        });
        let elapsed = self.transfer(sent, n);
        handshake(&mut self.host, &self.monitor, control::STOP, &self.what);
        elapsed
    }
}

impl Drop for RingRig {
    fn drop(&mut self) {
        if thread::panicking() {
            return;
        }
        control::shutdown(&mut self.host, &self.what);
        match self.peer.take() {
            Some(Peer::Process(child)) => common::reap_peer(child, &self.what),
            Some(Peer::Thread(handle)) => match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{}: peer thread: {e}", self.what),
                Err(_) => panic!("{}: peer thread panicked", self.what),
            },
            None => {}
        }
        check_peer(&self.monitor, &self.what);
    }
}

/// rtrb of 64-byte records between two threads, with the same encode/decode work.
struct RtrbRig<R: Record> {
    producer: rtrb::Producer<R>,
    shared: Arc<RtrbShared>,
    consumer: Option<JoinHandle<Result<(), String>>>,
    /// Records pushed so far (the next record's position; its seq is this + 1).
    pushed: u64,
}

#[derive(Default)]
struct RtrbShared {
    /// Set by the bench for a run; the consumer spins while it is set or data remain.
    running: AtomicBool,
    /// Set by the consumer while it serves a run (the handshake).
    active: AtomicBool,
    /// Set by the consumer once the verification sequence arrived intact.
    verified: AtomicBool,
    shutdown: AtomicBool,
    /// Set by the consumer when it found a damaged record.
    failed: AtomicBool,
}

impl<R: Record> RtrbRig<R> {
    fn start(verify: u64) -> RtrbRig<R> {
        let (mut producer, mut consumer) = rtrb::RingBuffer::<R>::new(CAPACITY as usize);
        let shared = Arc::new(RtrbShared::default());
        let s = Arc::clone(&shared);
        let handle = common::spawn_pinned(Side::Peer, move || {
            let mut backoff = Backoff::default();
            let result = (|| {
                let mut pos = 0u64;
                let mut pop =
                    |consumer: &mut rtrb::Consumer<R>| -> Result<Option<(u64, Command)>, String> {
                        match consumer.pop() {
                            Ok(record) => {
                                let decoded = Command::decode(record.bytes(), pos)
                                    .map_err(|e| format!("data: {e}"))?;
                                pos += 1;
                                Ok(Some(decoded))
                            }
                            Err(_) => Ok(None),
                        }
                    };
                let started = Instant::now();
                let mut i = 0;
                while i < verify {
                    match pop(&mut consumer)? {
                        Some((_, command)) if command == verify_command(i) => i += 1,
                        Some((seq, command)) => {
                            return Err(format!(
                                "data: verification record {i} (seq {seq}) is {command:?}"
                            ));
                        }
                        None if started.elapsed() > common::PEER_TIMEOUT => {
                            return Err("verification records missing".into());
                        }
                        None => backoff.snooze(),
                    }
                }
                s.verified.store(true, Ordering::Release);
                loop {
                    while !s.running.load(Ordering::Acquire) {
                        if s.shutdown.load(Ordering::Acquire) {
                            return Ok(());
                        }
                        thread::park_timeout(Duration::from_millis(200));
                    }
                    s.active.store(true, Ordering::Release);
                    let mut run = RunCheck::default();
                    loop {
                        match pop(&mut consumer)? {
                            Some((seq, command)) => run.check(seq, command)?,
                            None if !s.running.load(Ordering::Acquire) && consumer.is_empty() => {
                                break;
                            }
                            None => backoff.snooze(),
                        }
                    }
                    s.active.store(false, Ordering::Release);
                }
            })();
            if result.is_err() {
                s.failed.store(true, Ordering::Release);
            }
            result
        });
        // Correctness first.
        for i in 0..verify {
            let record = R::wrap(verify_command(i).encode(i + 1));
            spin_until("rtrb verify push", || {
                assert!(
                    !shared.failed.load(Ordering::Acquire),
                    "rtrb: the consumer found bad data"
                );
                producer.push(record).is_ok()
            });
        }
        spin_until("rtrb verify", || {
            assert!(
                !shared.failed.load(Ordering::Acquire),
                "rtrb: the consumer found bad data"
            );
            shared.verified.load(Ordering::Acquire)
        });
        RtrbRig {
            producer,
            shared,
            consumer: Some(handle),
            pushed: verify,
        }
    }

    /// Pushes records `first..first + n` of the run and waits until the consumer has
    /// consumed them all: the timed part.
    fn transfer(&mut self, first: u64, n: u64) -> Duration {
        let t0 = Instant::now();
        for i in first..first + n {
            let seq = self.pushed + 1;
            let (producer, record) = (&mut self.producer, R::wrap(run_command(i).encode(seq)));
            spin_until("rtrb push", || producer.push(record).is_ok());
            self.pushed += 1;
        }
        spin_until("rtrb drain", || self.producer.slots() == CAPACITY as usize);
        t0.elapsed()
    }

    /// Wakes the consumer, warms up, times `n` records, lets the consumer park again.
    fn run(&mut self, n: u64) -> Duration {
        self.shared.running.store(true, Ordering::Release);
        if let Some(h) = &self.consumer {
            h.thread().unpark();
        }
        spin_until("rtrb start", || self.shared.active.load(Ordering::Acquire));
        let mut sent = 0;
        common::warm_up(|| {
            sent += CAPACITY as u64;
            self.transfer(sent - CAPACITY as u64, CAPACITY as u64)
        });
        let elapsed = self.transfer(sent, n);
        self.shared.running.store(false, Ordering::Release);
        spin_until("rtrb stop", || !self.shared.active.load(Ordering::Acquire));
        assert!(
            !self.shared.failed.load(Ordering::Acquire),
            "rtrb: the consumer found bad data"
        );
        elapsed
    }
}

impl<R: Record> Drop for RtrbRig<R> {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        if let Some(h) = self.consumer.take() {
            h.thread().unpark();
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) if !thread::panicking() => panic!("rtrb consumer: {e}"),
                _ => {}
            }
        }
    }
}

struct Rigs {
    xproc: RingRig,
    threads: RingRig,
    rtrb: RtrbRig<[u8; RECORD_SIZE]>,
    rtrb_aligned: RtrbRig<AlignedRecord>,
}

const VARIANTS: [&str; 4] = [
    "command ring xproc",
    "command ring threads",
    "rtrb [u8; 64] threads",
    "rtrb 64-aligned threads",
];

impl Rigs {
    fn run(&mut self, variant: usize, n: u64) -> Duration {
        match variant {
            0 => self.xproc.run(n),
            1 => self.threads.run(n),
            2 => self.rtrb.run(n),
            _ => self.rtrb_aligned.run(n),
        }
    }
}

fn criterion_group(c: &mut Criterion, rigs: &mut Rigs) {
    let mut group = c.benchmark_group("command_ring_64B_records");
    group.throughput(Throughput::Elements(1));
    for (variant, name) in VARIANTS.iter().enumerate() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| rigs.run(variant, iters))
        });
    }
    group.finish();
}

fn main() {
    if let Some(role) = common::peer_role() {
        match role.as_str() {
            ROLE => run_peer_process(),
            other => {
                eprintln!("ring_command: unknown peer role {other:?}");
                process::exit(2);
            }
        }
    }
    let mode = RunMode::from_args();
    common::arm_watchdog(
        mode.pick(Duration::from_secs(180), Duration::from_secs(1800)),
        "ring_command",
    );
    common::pin(Side::Bench);
    let verify = mode.pick(64, 100_000);
    let mut rigs = Rigs {
        xproc: RingRig::start(true, verify),
        threads: RingRig::start(false, verify),
        rtrb: RtrbRig::start(verify),
        rtrb_aligned: RtrbRig::start(verify),
    };
    if mode != RunMode::List {
        println!("ring_command: {verify} mixed commands decoded intact through every variant");
    }
    let mut c = common::criterion();
    if common::with_criterion() {
        criterion_group(&mut c, &mut rigs);
    }
    c.final_summary();
    if mode == RunMode::List {
        return;
    }
    // Every variant moves the same number of records per run: ~2 ms on the cross-process
    // ring (see `common::calibrate`).
    let n = if mode.is_quick() {
        64
    } else {
        common::calibrate(Duration::from_millis(2), |n| rigs.run(0, n))
    };
    let rounds = mode.pick(1, 151);
    let rates = common::interleave(rounds, VARIANTS.len(), |v| {
        n as f64 / rigs.run(v, n).as_secs_f64()
    });
    drop(rigs);

    print_machine();
    let rows: Vec<Vec<String>> = VARIANTS
        .iter()
        .zip(&rates)
        .map(|(name, r)| {
            vec![
                name.to_string(),
                format!("{}rec/s", si(median(r))),
                format!("{}rec/s", si(r.iter().copied().fold(0.0, f64::max))),
                format!("{:.1}", 64.0 * median(r) / 1e9 * 1e3),
                r.len().to_string(),
            ]
        })
        .collect();
    print_table(
        &format!(
            "CommandRing record rate, 64-byte records, {n} per run (medians of interleaved rounds)"
        ),
        &["variant", "records/s", "best", "MB/s", "rounds"],
        &rows,
    );
    print_table(
        "CommandRing ratios (median of per-round ratios)",
        &[
            "xproc/rtrb",
            "xproc/rtrb aligned",
            "threads/rtrb aligned",
            "xproc/threads",
        ],
        &[vec![
            format!("{:.2}", paired_ratio(&rates[0], &rates[2])),
            format!("{:.2}", paired_ratio(&rates[0], &rates[3])),
            format!("{:.2}", paired_ratio(&rates[1], &rates[3])),
            format!("{:.2}", paired_ratio(&rates[0], &rates[1])),
        ]],
    );
}
